"""The node schemas ComfyUI loads say what the help pages (js/docs/<node_id>.md) say: each page's title
is its node's display name, each Outputs table gives the node's outputs in order with their socket
types (a list output as 'TYPE list'), and the nodes sit in their menus: those for prompts at the top,
the others under TokenSmith/train, /files and /merge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "js" / "docs"

# the menu: the nodes for use at the top, the others in TokenSmith/train, /files and /merge
MENU = {
    "TokenSmith": {"TokenSmithPrompt", "TokenSmithPickEmbedding", "TokenSmithEncodeWithEmbedding"},
    "TokenSmith/train": {"TokenSmithTrainEmbedding", "TokenSmithLossGraph", "TokenSmithLoadTrainingPictures"},
    "TokenSmith/files": {"TokenSmithLoadEmbedding", "TokenSmithSaveEmbedding", "TokenSmithEmbeddingFromText",
                         "TokenSmithConvertEmbedding", "TokenSmithInspectEmbedding"},
    "TokenSmith/merge": {"TokenSmithMergeEmbeddings"},
}


@pytest.fixture(scope="module")
def schemas(node_classes):
    return {node_id: cls.define_schema() for node_id, cls in node_classes.items()}


def doc(node_id: str) -> str:
    return (DOCS / f"{node_id}.md").read_text(encoding="utf-8")


def outputs_table(text: str) -> list[tuple[str, str]] | None:
    """(name, type) of each row of the table under '## Outputs'; None where the page has no such table."""
    if "\n## Outputs" not in text:
        return None
    section = text.split("\n## Outputs", 1)[1].split("\n## ", 1)[0]
    rows = [re.match(r"\|\s*`([a-z0-9_]+)`\s*\|\s*([^|]+?)\s*\|", line) for line in section.splitlines()]
    return [(m.group(1), m.group(2)) for m in rows if m] or None


def test_each_page_is_titled_with_its_nodes_display_name(schemas):
    wrong = {node_id: (s.display_name, doc(node_id).splitlines()[0]) for node_id, s in schemas.items()
             if doc(node_id).splitlines()[0] != f"# {s.display_name}"}
    assert not wrong, wrong


def test_each_outputs_table_gives_the_outputs_in_order_with_their_types(schemas):
    checked, wrong = 0, {}
    for node_id, s in schemas.items():
        table = outputs_table(doc(node_id))
        if table is None:
            continue
        checked += 1
        got = [(o.id, o.io_type + (" list" if o.is_output_list else "")) for o in s.outputs]
        if got != table:
            wrong[node_id] = {"schema": got, "page": table}
    assert not wrong, wrong
    assert checked == 9  # every node but Train Embedding, Embedding Prompt (prose) and Loss Graph (none)


def test_the_outputs_of_the_pages_without_a_table(schemas):
    assert [o.id for o in schemas["TokenSmithTrainEmbedding"].outputs] == ["embedding", "prompt", "loss", "previews"]
    assert [o.id for o in schemas["TokenSmithPrompt"].outputs] == ["prompt", "warnings"]
    assert [(o.id, o.io_type) for o in schemas["TokenSmithLossGraph"].outputs] == [("image", "IMAGE")]


def test_every_node_has_a_description_and_every_output_a_tooltip(schemas):
    assert not [node_id for node_id, s in schemas.items() if not (s.description or "").strip()]
    missing = [f"{node_id}.{o.id}" for node_id, s in schemas.items() for o in s.outputs if not (o.tooltip or "").strip()]
    assert not missing, f"outputs without a tooltip: {missing}"


def test_the_nodes_sit_in_their_menus(schemas):
    menus: dict[str, set[str]] = {}
    for node_id, s in schemas.items():
        menus.setdefault(s.category, set()).add(node_id)
    assert menus == MENU


def test_the_table_reader_can_fail():
    page = "# X\n\n## Outputs\n\n| name | type | what |\n|---|---|---|\n| `a` | IMAGE list | one |\n| `b` | INT | n |\n"
    assert outputs_table(page) == [("a", "IMAGE list"), ("b", "INT")]
    assert outputs_table("# X\n\n## Inputs\n\n| `a` | INT | n |\n") is None
