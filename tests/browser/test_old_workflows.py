"""A workflow saved when the embedding socket type was "EMBEDDING" (now "TOKENSMITH_EMBEDDING") opens
in the real front end with every link in place, takes the node definitions' types, accepts a new
connection from an old node to a new one, and runs: the front end keeps a saved node's slot types from
its definition (litegraphService's configure), links carry no checked type, and the server checks the
node classes' own types (execution.validate_inputs). Its own small server: no checkpoint is needed."""

from __future__ import annotations

import json

import pytest

from devkit.workflows import CONVERT, RECORD_EVENTS, load_example, new_comfy_page, skip_first_visit
from tests.browser.conftest import write_old_pt
from tests.browser.test_front_end import queue_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.slow]

OLD, NEW = "EMBEDDING", "TOKENSMITH_EMBEDDING"


def old_format(workflow: dict) -> dict:
    """The workflow as it was saved before the rename (the examples may since have been rebuilt)."""
    return json.loads(json.dumps(workflow).replace(f'"{NEW}"', f'"{OLD}"'))


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    from devkit.server import ComfyServer

    base = tmp_path_factory.mktemp("old_workflows")
    (base / "models" / "embeddings").mkdir(parents=True)
    write_old_pt(base / "models" / "embeddings" / "tokensmith-old.pt")
    skip_first_visit(base)
    server = ComfyServer(base).start()
    yield server
    server.stop()


def test_a_workflow_saved_with_the_old_type_loads_connects_and_runs(browser_context, small_server):
    saved = old_format(load_example(CONVERT))
    assert sum(link[5] == OLD for link in saved["links"]) == 3, saved["links"]
    page = new_comfy_page(browser_context, small_server.url)
    try:
        page.evaluate(RECORD_EVENTS)
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", saved)
        links = page.evaluate("""() => {
          const g = window.app.graph;
          return [...g.links.values()].map((l) => ({
            id: l.id, from: g.getNodeById(l.origin_id).outputs[l.origin_slot].type,
            to: g.getNodeById(l.target_id).inputs[l.target_slot].type }));
        }""")
        assert sorted(x["id"] for x in links) == sorted(link[0] for link in saved["links"]), links
        assert all(x["from"] == NEW and x["to"] == NEW for x in links), links
        # had the old types stayed on the slots, no new node could be wired to them
        assert not page.evaluate("([a, b]) => window.LiteGraph.isValidConnection(a, b)", [OLD, NEW])
        # a person wires an old node to a new one: the front end's own type check must accept it
        connected = page.evaluate("""() => {
          const g = window.app.graph;
          const load = g._nodes.find((n) => n.type === 'TokenSmithLoadEmbedding');
          const fresh = window.LiteGraph.createNode('TokenSmithInspectEmbedding');
          g.add(fresh);
          const ok = !!load.connect(0, fresh, 0);
          g.remove(fresh);
          return ok;
        }""")
        assert connected
        event = queue_and_wait(page, 120)
        assert event["type"] == "execution_success", json.dumps(event)[:2000]
        assert (small_server.base / "models" / "embeddings" / "tokensmith-old-converted.safetensors").is_file()
    finally:
        page.close()
