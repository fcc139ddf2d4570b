"""TokenSmith's front end in a real browser against a real server: the extensions load cleanly, every
example workflow opens from the template browser and runs on the small checkpoint, the live chart
follows a training run (also across a page reload and a cancel), and the embedding browser and the
autocomplete offer the freshly trained embedding."""

from __future__ import annotations

import json
import re
import time

import pytest

from devkit.make_checkpoint import CHECKPOINT_NAME, SD3_CHECKPOINT_NAME
from devkit.workflows import (
    COMPARE,
    CONVERT,
    MASKS,
    MERGE,
    NEGATIVE,
    RECORD_EVENTS,
    RESUME,
    SD3,
    SDXL,
    STYLE,
    TRAIN,
    USE,
    close_missing_models_dialog,
    examples,
    load_example,
    ui_to_api,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RING = "tokensmith-ring"
TRAIN_STEPS = 8
# Small enough for a CPU: 64 px, a few sampler steps, a short training run.
SMALL = {
    "CheckpointLoaderSimple": {"ckpt_name": CHECKPOINT_NAME},
    "EmptyLatentImage": {"width": 64, "height": 64},
    "KSampler": {"steps": 2},
}


def wait_until(fn, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def open_template(page, name: str) -> None:
    """Open one of our examples the way a person does: Templates -> Extensions/TokenSmith -> card."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text("TokenSmith", exact=True).first.click(timeout=20_000)
    page.locator(f'[data-testid="template-workflow-{name}"]').first.click(timeout=20_000)
    # the example names a checkpoint the test server lacks: older front ends say so in a dialog
    wait_until(lambda: page.evaluate("() => (window.app.graph._nodes || []).length > 0"), 60, f"{name!r} to load")
    page.wait_for_timeout(300)
    close_missing_models_dialog(page)
    # on a busy machine the dialog can open later than that: close it whenever it shows
    wait_until(lambda: close_missing_models_dialog(page) or
               page.evaluate("(n) => (window.app.graph._nodes || []).length > 0 && "
                             "!document.querySelector('.p-dialog-mask')", name),
               60, f"the template {name!r} to load and the dialog to close")
    page.wait_for_timeout(300)


def graph_types(page) -> list[str]:
    return page.evaluate("() => window.app.graph._nodes.map((n) => n.type)")


def set_widgets(page, overrides: dict) -> None:
    missing = page.evaluate("""(overrides) => {
      const missing = [];
      for (const [type, values] of Object.entries(overrides)) {
        const nodes = window.app.graph._nodes.filter((n) => n.type === type);
        if (!nodes.length) continue;
        for (const node of nodes) for (const [name, value] of Object.entries(values)) {
          const w = node.widgets?.find((x) => x.name === name);
          if (w) w.value = value; else missing.push(type + "." + name);
        }
      }
      return missing;
    }""", overrides)
    assert not missing, f"widgets not found: {missing}"


def queue_and_wait(page, timeout: float) -> dict:
    """Queue the open graph as the Run button does; returns the final execution event."""
    page.evaluate("() => { window.__tsRecorder.length = 0; }")
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    return wait_for_execution(page, timeout)


def wait_for_execution(page, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = page.evaluate("() => window.__tsRecorder.filter((e) => e.type.startsWith('execution_') && "
                               "e.type !== 'execution_start')")
        if events:
            return events[-1]
        errors = page.evaluate("() => JSON.stringify(window.app.lastNodeErrors || null)")
        assert errors in ("null", "{}"), f"ComfyUI refused the workflow: {errors}"
        time.sleep(0.3)
    raise AssertionError(f"the workflow did not finish in {timeout:.0f}s")


def live_state(page) -> dict:
    return page.evaluate("""() => {
      const node = window.app.graph._nodes.find((n) => n.type === 'TokenSmithTrainEmbedding');
      const root = node?.tokensmithLiveView?.root;
      if (!root) return null;
      const canvas = root.querySelector('canvas');
      const ctx = canvas.getContext('2d');
      const px = canvas.width && canvas.height ? ctx.getImageData(0, 0, canvas.width, canvas.height).data : [];
      let ink = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink++;
      return { points: Number(root.dataset.points), step: root.dataset.step, status: root.dataset.status,
               text: root.innerText, ink, preview: !!root.querySelector('img')?.src?.startsWith('data:image'),
               visible: root.getBoundingClientRect().height > 50 };
    }""")


def focus_node(page, node_type: str, zoom: float = 1.0, bottom: bool = False) -> None:
    page.evaluate("""([type, zoom, bottom]) => {
      const node = window.app.graph._nodes.find((n) => n.type === type);
      const c = window.app.canvas;
      c.ds.scale = zoom;
      const [w, h] = [c.canvas.clientWidth, c.canvas.clientHeight];
      const y = bottom ? node.pos[1] + node.size[1] - h / zoom + 40 : node.pos[1] - 60;
      c.ds.offset = [-node.pos[0] + (w / zoom - node.size[0]) / 2, -y];
      c.setDirty(true, true);
    }""", [node_type, zoom, bottom])
    page.wait_for_timeout(400)


def test_extensions_load_without_errors(page, browser_server):
    names = page.evaluate("() => window.app.extensions.map((e) => e.name).filter((n) => n.startsWith('tokensmith.'))")
    assert {"tokensmith.trainingView", "tokensmith.embeddingBrowser", "tokensmith.autocomplete",
            "tokensmith.nodeText"} <= set(names), names
    settings = page.evaluate("() => window.app.extensionManager.setting.get('TokenSmith.Autocomplete.Enabled')")
    assert settings is True
    assert not page.tokensmith_console.tokensmith_errors(), page.tokensmith_console.tokensmith_errors()
    templates = browser_server.get("/workflow_templates")
    assert sorted(templates.get("TokenSmith", [])) == sorted(ex.name for ex in examples())


@pytest.mark.parametrize("name", [TRAIN, NEGATIVE, MERGE, CONVERT, STYLE, SDXL, SD3, RESUME, MASKS, COMPARE,
                                  USE])
def test_example_opens_from_the_template_browser(page, browser_server, artifacts, name):
    open_template(page, name)
    saved = load_example(name)
    want = sorted(n["type"] for n in saved["nodes"])
    assert sorted(graph_types(page)) == want
    registered = page.evaluate("(types) => types.filter((t) => !window.LiteGraph.registered_node_types[t])", want)
    assert not registered, f"missing node types: {registered}"
    assert page.locator("text=Missing Node Types").count() == 0
    toasts = page.evaluate("() => [...document.querySelectorAll('.p-toast-detail')].map((e) => e.innerText)")
    assert not [t for t in toasts if "Invalid workflow" in t], toasts
    # our UI -> API conversion (used by `make demo`) must equal the front end's own
    front = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    ours = ui_to_api(saved, browser_server.get("/object_info"))
    strip = lambda api: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}  # noqa: E731
    assert strip(ours) == strip(front)
    page.screenshot(path=str(artifacts / f"template-{name.replace(' ', '_')}.png"))


@pytest.fixture(scope="module")
def training_run(page, browser_server, artifacts):
    """Run the training example on the small checkpoint while watching its chart."""
    open_template(page, TRAIN)
    set_widgets(page, {**SMALL, "TokenSmithTrainEmbedding": {
        "steps": TRAIN_STEPS, "validate_every": TRAIN_STEPS // 2, "early_stop_patience": 0,
        "preview_every": TRAIN_STEPS // 2,
        "num_vectors": 2}})
    page.evaluate("() => { window.__tsRecorder.length = 0; window.app.queuePrompt(0, 1); }")
    focus_node(page, "TokenSmithTrainEmbedding", zoom=1.1, bottom=True)
    first = wait_until(lambda: (s := live_state(page)) and s["points"] >= 1 and s, 600, "the first training points")
    running = [first]  # what the chart showed while the run was going
    deadline = time.monotonic() + 900
    while (state := live_state(page))["status"] == "running" and time.monotonic() < deadline:
        if state["points"] != running[-1]["points"]:
            running.append(state)
            if len(running) == 2:
                page.screenshot(path=str(artifacts / "live-chart-running.png"))
        time.sleep(0.2)
    final = wait_until(lambda: (s := live_state(page)) and s["status"] != "running" and s, 10, "the run to finish")
    focus_node(page, "TokenSmithTrainEmbedding", zoom=1.1, bottom=True)
    page.screenshot(path=str(artifacts / "live-chart-finished.png"))
    done = wait_for_execution(page, 600)  # the sampler runs after the trainer
    entry = browser_server.get(f"/history/{done['detail']['prompt_id']}")[done["detail"]["prompt_id"]]
    return {"running": running, "final": final, "history": entry, "done": done}


def test_live_chart_follows_training(training_run):
    running = training_run["running"]
    first = running[0]
    assert first["visible"] and first["ink"] > 200, first  # the chart is drawn
    assert "loss" in first["text"] and "ETA" in first["text"]
    assert len(running) >= 2, "the chart did not change while the run was going"
    assert [s["points"] for s in running] == sorted({s["points"] for s in running}), running
    final = training_run["final"]
    assert final["status"] == "finished", final
    assert final["step"] == str(TRAIN_STEPS) and final["preview"], final
    assert f"saved as embedding:{RING}" in final["text"]


def test_training_example_runs_to_completion(training_run, browser_server):
    entry = training_run["history"]
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert (browser_server.base / "models" / "embeddings" / f"{RING}.safetensors").is_file()
    assert any(out.get("images") for out in entry["outputs"].values())
    assert f"embedding:{RING} does not exist" not in browser_server.log_tail(200_000)


def test_reload_mid_run_then_cancel(page, training_run, artifacts):
    open_template(page, NEGATIVE)
    set_widgets(page, {**SMALL, "TokenSmithTrainEmbedding": {"steps": 5000, "validate_every": 0,
                                                             "early_stop_patience": 0, "preview_every": 0}})
    page.evaluate("() => { window.__tsRecorder.length = 0; window.app.queuePrompt(0, 1); }")
    before = wait_until(lambda: (s := live_state(page)) and s["points"] >= 2 and s, 600, "the negative run to start")
    # reload: the chart comes back from GET /tokensmith/runs and keeps following the run
    page.reload()
    page.wait_for_function("!!(window.app && window.app.graph && window.comfyAPI && "
                           "window.app.graph._nodes.some((n) => n.type === 'TokenSmithTrainEmbedding'))",
                           timeout=90_000)
    page.evaluate(RECORD_EVENTS)
    back = wait_until(lambda: (s := live_state(page)) and s["points"] > 0 and s, 30, "the chart after the reload")
    assert back["status"] == "running" and int(back["step"]) >= int(before["step"]), (before, back)
    wait_until(lambda: (s := live_state(page)) and int(s["step"] or 0) > int(back["step"]), 300,
               "live steps after the reload")
    page.evaluate("() => window.comfyAPI.api.api.interrupt()")
    state = wait_until(lambda: (s := live_state(page)) and s["status"] == "cancelled" and s, 120,
                       "the chart to show the cancel")
    assert "cancelled at step" in state["text"]


def test_a_real_rollback_shows_on_the_chart(page, browser_server, artifacts):
    """Not replayed events: one of the latents fed to the trainer (core's Load Latent, from a file in
    input/) overflows the loss, so the step that draws it gives a non-finite loss; the server rolls it
    back, the run goes on to its end, and the chart marks the rollback."""
    import safetensors.torch
    import torch

    latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    latents[-1] = 3e38  # a broken picture: its loss overflows
    # the version key tells Load Latent that the values are stored as they are (no rescaling)
    safetensors.torch.save_file({"latent_tensor": latents, "latent_format_version_0": torch.tensor([])},
                                str(browser_server.base / "input" / "corrupt.latent"))
    api = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "2": {"class_type": "LoadLatent", "inputs": {"latent": "corrupt.latent"}},
        "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "latents": ["2", 0], "name": "tokensmith-rollback",
            "init_text": "*", "num_vectors": 1, "template": "object", "steps": 12, "learning_rate": "5e-3",
            "batch_size": 1, "seed": 3, "overwrite": True, "validate_every": 0, "preview_every": 0}},
    }
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.RefreshNodeDefinitions')")
    page.wait_for_timeout(1000)
    page.evaluate("(api) => window.app.loadApiJson(api, 'rollback')", api)
    wait_until(lambda: page.evaluate("() => window.app.graph._nodes.length === 3"), 20, "the graph to load")
    event = queue_and_wait(page, 600)
    assert event["type"] == "execution_success", json.dumps(event)[:2000]
    state = wait_until(lambda: (s := live_state(page)) and s["status"] == "finished" and s, 60, "the run's end")
    assert "rolled back" in state["text"], state["text"]
    runs = [r for r in browser_server.get("/tokensmith/runs") if r["name"] == "tokensmith-rollback"]
    kinds = [e["event"]["kind"] for e in runs[-1]["events"] if e.get("event")]
    assert "rollback" in kinds and max(e.get("step", 0) for e in runs[-1]["events"]) == 12, kinds
    focus_node(page, "TokenSmithTrainEmbedding", zoom=1.1, bottom=True)
    page.screenshot(path=str(artifacts / "live-chart-rollback.png"))


def test_a_real_early_stop_shows_on_the_chart(page, browser_server):
    """Not replayed events: a run whose rate is far too high gets worse at every validation, the server
    stops it early and the chart says so, with the step whose vectors were kept."""
    open_template(page, NEGATIVE)
    set_widgets(page, {**SMALL, "TokenSmithTrainEmbedding": {"steps": 30, "learning_rate": "50", "validate_every": 1,
                                                             "early_stop_patience": 2, "preview_every": 0}})
    event = queue_and_wait(page, 600)
    assert event["type"] == "execution_success", json.dumps(event)[:2000]
    state = wait_until(lambda: (s := live_state(page)) and s["status"] == "early_stop" and s, 60, "the early stop")
    assert "stopped early" in state["text"] and re.search(r"kept step \d+", state["text"]), state["text"]
    runs = [r for r in browser_server.get("/tokensmith/runs") if r["name"] == "tokensmith-negative"]
    kinds = [e["event"]["kind"] for e in runs[-1]["events"] if e.get("event")]
    assert "early_stop" in kinds and max(e.get("step", 0) for e in runs[-1]["events"]) < 30, kinds


def test_negative_merge_and_convert_examples_run(page, training_run, browser_server):
    results = {}
    for name, extra in ((NEGATIVE, {"TokenSmithTrainEmbedding": {"steps": 3, "validate_every": 0,
                                                                 "early_stop_patience": 0, "preview_every": 0}}),
                        (MERGE, {}), (CONVERT, {})):
        open_template(page, name)
        set_widgets(page, {**SMALL, **extra})
        event = queue_and_wait(page, 300)
        results[name] = event
        assert event["type"] == "execution_success", (name, json.dumps(event)[:2000])
    folder = browser_server.base / "models" / "embeddings"
    for made in ("tokensmith-negative", "tokensmith-ring-merged", "tokensmith-old-converted"):
        assert (folder / f"{made}.safetensors").is_file(), made
    # the Convert example's inspect report of tokensmith-old.pt (2 x 768 vectors saved at step 500 by the
    # fixture) reached its node: the file, its step, family and shape, not just some text on the page
    text = page.evaluate("() => [...document.querySelectorAll('textarea.tokensmith-text')].map((t) => t.value).join('\\n')")
    assert "models/embeddings/tokensmith-old.pt" in text, text[:500]
    for fact in (r"\bstep:?\s+500\b", r"\bfamily:?\s+sd1\b", r"\bclip_l: 2 x 768\b"):
        assert re.search(fact, text), (fact, text[:500])


def set_widget_by_title(page, title: str, name: str, value) -> None:
    found = page.evaluate("""([title, name, value]) => {
      const node = window.app.graph._nodes.find((n) => n.title === title);
      const w = node?.widgets?.find((x) => x.name === name);
      if (w) w.value = value;
      return !!w;
    }""", [title, name, value])
    assert found, f"no widget {name!r} on a node titled {title!r}"


QUICK_TRAIN = {"steps": 3, "validate_every": 0, "early_stop_patience": 0, "preview_every": 0}


def test_new_examples_run(page, training_run, browser_server):
    """Style, SDXL (wired to the small SD1 checkpoint at 64 px), resume (from the training run's
    tokensmith-ring), masks, the snapshot comparison and the use of embeddings in prompts (Pick, and an
    unsaved merge) run to the end as they open, with only sizes and step counts made small."""
    folder = browser_server.base / "models" / "embeddings"
    runs = [
        (STYLE, {}, "tokensmith-style"),
        (SDXL, {"ResizeImagesByShorterEdge": {"shorter_edge": 64},
                "CenterCropImages": {"width": 64, "height": 64}}, "tokensmith-ring-sdxl"),
        # the training run made it with 2 vectors (the example's 4 match the training example's)
        (RESUME, {"TokenSmithTrainEmbedding": {**QUICK_TRAIN, "steps": TRAIN_STEPS + 2, "num_vectors": 2}}, RING),
        (MASKS, {}, "tokensmith-ring-masked"),
        (COMPARE, {"TokenSmithTrainEmbedding": {**QUICK_TRAIN, "steps": 2, "save_every": 1}},
         "tokensmith-ring-steps-step00001"),
        (USE, {}, RING),
    ]
    for name, extra, made in runs:
        open_template(page, name)
        set_widgets(page, {**SMALL, "TokenSmithTrainEmbedding": QUICK_TRAIN, **extra})
        if name == COMPARE:  # the snapshots of a 2-step run: step 1, then the file itself
            for title in ("step 100: prompt", "step 200: prompt"):
                set_widget_by_title(page, title, "string_b", "-step00001 on a wooden table")
        event = queue_and_wait(page, 600)
        assert event["type"] == "execution_success", (name, event["detail"].get("exception_message"))
        assert (folder / f"{made}.safetensors").is_file(), (name, made)
        entry = browser_server.get(f"/history/{event['detail']['prompt_id']}")[event["detail"]["prompt_id"]]
        assert any(out.get("images") for out in entry["outputs"].values()), name
    log = browser_server.log_tail(400_000)
    assert "embedding:tokensmith-ring-steps-step00001 does not exist" not in log
    from safetensors import safe_open

    with safe_open(str(folder / f"{RING}.safetensors"), "pt") as f:  # resumed from step 8, not retrained
        assert f.metadata()["step"] == str(TRAIN_STEPS + 2)


def test_sd3_example_runs(page, browser_server):
    """The SD3 example as it opens, on the SD3-architecture checkpoint (its CLIP-L and CLIP-G, no T5) with
    only sizes and step counts made small: it trains, saves both CLIPs' vectors and samples."""
    from safetensors import safe_open

    open_template(page, SD3)
    set_widgets(page, {**SMALL, "TokenSmithTrainEmbedding": QUICK_TRAIN,
                       "CheckpointLoaderSimple": {"ckpt_name": SD3_CHECKPOINT_NAME},
                       "EmptySD3LatentImage": {"width": 64, "height": 64},
                       "ResizeImagesByShorterEdge": {"shorter_edge": 64},
                       "CenterCropImages": {"width": 64, "height": 64}})
    event = queue_and_wait(page, 900)
    assert event["type"] == "execution_success", (SD3, event["detail"].get("exception_message"))
    entry = browser_server.get(f"/history/{event['detail']['prompt_id']}")[event["detail"]["prompt_id"]]
    assert any(out.get("images") for out in entry["outputs"].values())
    saved = browser_server.base / "models" / "embeddings" / "tokensmith-ring-sd3.safetensors"
    with safe_open(str(saved), "pt") as f:
        assert {"clip_l", "clip_g"} <= set(f.keys()), sorted(f.keys())
    assert "embedding:tokensmith-ring-sd3 does not exist" not in browser_server.log_tail(400_000)


def prompt_textarea(page):
    """The negative prompt box of the training example (a CLIPTextEncode with a text widget)."""
    open_template(page, TRAIN)
    focus_node(page, "TokenSmithTrainEmbedding", zoom=1.0)
    handle = page.evaluate_handle("""() => {
      const node = window.app.graph._nodes.find((n) => n.type === 'CLIPTextEncode' &&
        n.widgets?.[0]?.value === 'blurry, low quality');
      const c = window.app.canvas;
      c.ds.scale = 1; c.ds.offset = [-node.pos[0] + 200, -node.pos[1] + 150]; c.setDirty(true, true);
      return node.widgets[0].element || node.widgets[0].inputEl;
    }""")
    page.wait_for_timeout(500)
    return handle.as_element()


def test_embedding_browser_lists_and_inserts(page, training_run, artifacts):
    area = prompt_textarea(page)
    area.click()
    page.keyboard.press("End")
    page.keyboard.type(", ")
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.tokensmith-embeddings')")
    panel = page.locator("#tokensmith-embedding-browser")
    panel.wait_for(timeout=10_000)
    page.locator(".tokensmith-search").fill("ring")
    item = panel.locator(f'.tokensmith-item[data-name="{RING}"]')
    item.wait_for(timeout=10_000)
    assert "SD1" in item.inner_text() and "L 2×768" in item.inner_text()
    page.screenshot(path=str(artifacts / "embedding-browser.png"))
    item.click()
    value = page.evaluate("""() => window.app.graph._nodes.find((n) => n.type === 'CLIPTextEncode' &&
        String(n.widgets?.[0]?.value).startsWith('blurry')).widgets[0].value""")
    assert value == f"blurry, low quality, embedding:{RING}", value
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.tokensmith-embeddings')")


def test_embedding_browser_shows_the_thumbnail_inside_a_file(page, browser_server, artifacts):
    """A file whose header holds the model spec's thumbnail (what the trainer writes with previews on)
    is listed with that picture; a file without one has no picture."""
    import numpy as np
    import torch

    from tokensmith.embedding import Embedding
    from tokensmith.modelspec import THUMBNAIL_KEY, thumbnail_data_url
    from tokensmith.writer import write_embedding_file

    pixels = np.zeros((64, 64, 3), dtype=np.float32)
    pixels[:, :, 2] = 1.0
    url = thumbnail_data_url(pixels)
    folder = browser_server.base / "models" / "embeddings"
    write_embedding_file(Embedding({"clip_l": torch.ones(1, 768)}, name="tokensmith-thumb",
                                   metadata={THUMBNAIL_KEY: url}), folder / "tokensmith-thumb.safetensors")
    write_embedding_file(Embedding({"clip_l": torch.ones(1, 768)}, name="tokensmith-nothumb"),
                         folder / "tokensmith-nothumb.safetensors")
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.tokensmith-embeddings')")
    panel = page.locator("#tokensmith-embedding-browser")
    panel.wait_for(timeout=10_000)
    panel.locator("button", has_text="Refresh").click()
    page.locator(".tokensmith-search").fill("thumb")
    item = panel.locator('.tokensmith-item[data-name="tokensmith-thumb"]')
    item.wait_for(timeout=10_000)
    thumb = item.locator("img.ts-thumb")
    assert thumb.count() == 1, item.evaluate("(row) => row.outerHTML.slice(0, 600)")
    assert thumb.evaluate("(img) => img.complete && img.naturalWidth > 0") and thumb.get_attribute("src") == url
    assert panel.locator('.tokensmith-item[data-name="tokensmith-nothumb"] img.ts-thumb').count() == 0
    page.screenshot(path=str(artifacts / "embedding-browser-thumbnail.png"))
    page.evaluate("() => window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.tokensmith-embeddings')")


def test_autocomplete_offers_the_new_embedding(page, training_run, artifacts):
    area = prompt_textarea(page)
    area.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(" embedding:tokensmith-ri")
    popup = page.locator(".tokensmith-complete")
    popup.wait_for(timeout=10_000)
    assert RING in popup.inner_text()
    page.screenshot(path=str(artifacts / "autocomplete.png"))
    page.keyboard.press("Enter")
    assert popup.count() == 0
    value = area.input_value()
    assert value.endswith(f"embedding:{RING} "), value
    # turned off in the settings: no list
    page.evaluate("() => window.app.extensionManager.setting.set('TokenSmith.Autocomplete.Enabled', false)")
    page.keyboard.type("embedding:tok")
    page.wait_for_timeout(800)
    assert page.locator(".tokensmith-complete").count() == 0
    page.evaluate("() => window.app.extensionManager.setting.set('TokenSmith.Autocomplete.Enabled', true)")


def test_no_tokensmith_errors_in_the_console(page):
    assert not page.tokensmith_console.tokensmith_errors(), page.tokensmith_console.tokensmith_errors()
