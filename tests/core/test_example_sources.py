"""Every model file an example workflow names says where it comes from, in the loader node's
`models` property that the front end's missing-models dialog reads (as ComfyUI's own templates do)."""

from __future__ import annotations

import pytest

from devkit.workflows import MODEL_SOURCES, examples, load_example

LOADERS = {"CheckpointLoaderSimple": "checkpoints", "VAELoader": "vae", "CLIPLoader": "text_encoders",
           "UNETLoader": "diffusion_models"}


@pytest.mark.parametrize("example", examples(), ids=lambda ex: ex.name)
def test_loader_nodes_name_their_model_source(example):
    saved = load_example(example.name)
    loaders = [n for n in saved["nodes"] if n["type"] in LOADERS]
    for node in loaders:
        files = [v for v in node["widgets_values"] if isinstance(v, str) and "." in v]
        models = node.get("properties", {}).get("models")
        assert models, f"{example.name}: {node['type']} names {files} but not where to get them"
        assert sorted(m["name"] for m in models) == sorted(files)
        for m in models:
            assert m["directory"] == LOADERS[node["type"]]
            assert m["url"].startswith("https://") and m["name"] in m["url"]
            assert MODEL_SOURCES[m["name"]]["url"] == m["url"]
