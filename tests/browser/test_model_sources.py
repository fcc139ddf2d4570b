"""Opening an example on a server that lacks its checkpoint: the front end offers the model with the
source the example names (node property `models`), as it does for ComfyUI's own templates."""

from __future__ import annotations

import pytest

from devkit.workflows import (
    MISSING_MODELS_JS,
    MODEL_SOURCES,
    SD15_NAME,
    TRAIN,
    close_missing_models_dialog,
    load_example,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_missing_checkpoint_is_offered_with_its_source(page, browser_server):
    assert SD15_NAME not in browser_server.get("/models/checkpoints"), "the test server must lack the checkpoint"
    page.evaluate("(wf) => window.app.loadGraphData(wf)", load_example(TRAIN))
    offered = None
    for _ in range(40):
        offered = page.evaluate(MISSING_MODELS_JS)
        if offered["source"] != "none" and (offered.get("models") or offered.get("text")):
            break
        page.wait_for_timeout(250)
    try:
        if offered["source"] == "store":  # newer front ends
            models = {m["name"]: m for m in offered["models"]}
            assert SD15_NAME in models, offered
            assert models[SD15_NAME]["directory"] == "checkpoints"
            assert models[SD15_NAME]["url"] == MODEL_SOURCES[SD15_NAME]["url"]
        else:  # older front ends: the Missing Models dialog with a download button
            assert offered["source"] == "dialog", offered
            assert f"checkpoints / {SD15_NAME}" in offered["text"] and "Download" in offered["text"], offered["text"]
    finally:
        close_missing_models_dialog(page)
