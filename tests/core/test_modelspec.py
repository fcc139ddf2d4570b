"""tokensmith.modelspec: the SAI model spec keys derived from TokenSmith's metadata."""

from __future__ import annotations

import json

import pytest

from tokensmith.modelspec import modelspec_keys, sharing_metadata, with_modelspec


@pytest.mark.parametrize("family, prediction, arch, size", [
    ("sd1", "eps", "stable-diffusion-v1", 512), ("sdxl", None, "stable-diffusion-xl-v1-base", 1024),
    ("sd2", "v", "stable-diffusion-v2-768-v", 768), ("sd2", "eps", "stable-diffusion-v2-512", 512),
    ("sd3", None, "stable-diffusion-3-medium", 1024), ("flux", "flow", "flux-1-dev", 1024),
])
def test_architecture_per_family(family, prediction, arch, size):
    meta = {"name": "x", "family": family, **({"tokensmith.prediction": prediction} if prediction else {})}
    keys = modelspec_keys(meta)
    assert keys["modelspec.architecture"] == f"{arch}-textual-inversion"
    assert keys["modelspec.resolution"] == f"{size}x{size}"
    assert keys.get("modelspec.prediction_type") == {"eps": "epsilon", "v": "v"}.get(prediction)


@pytest.mark.parametrize("family, prediction", [("sd2", None), ("chroma", None), ("zimage", "flow"), ("unknown", None)])
def test_no_guessed_architecture(family, prediction):
    assert modelspec_keys({"name": "x", "family": family, "tokensmith.prediction": prediction or ""}) == {}


def test_training_resolution_and_stale_keys():
    meta = {"name": "new", "family": "sdxl", "tokensmith.training": json.dumps({"resolution": 832}),
            "modelspec.architecture": "stable-diffusion-v1-textual-inversion", "modelspec.title": "old",
            "modelspec.description": "kept"}
    out = with_modelspec(meta)
    assert out["modelspec.architecture"] == "stable-diffusion-xl-v1-base-textual-inversion"
    assert out["modelspec.title"] == "new" and out["modelspec.resolution"] == "832x832"
    assert out["modelspec.description"] == "kept"
    # a family the spec has no id for loses the source file's derived keys instead of keeping wrong ones
    gone = with_modelspec({**meta, "family": "chroma"})
    assert not [k for k in gone if k.startswith("modelspec.") and k != "modelspec.description"]


def test_sharing_metadata_leaves_out_empty_values():
    assert sharing_metadata() == {}
    assert sharing_metadata(" w ", "", "a.safetensors", "ab") == {
        "tokensmith.trigger_word": "w", "tokensmith.base_checkpoint": "a.safetensors",
        "ss_sd_model_name": "a.safetensors", "tokensmith.base_checkpoint_sha256": "ab", "ss_new_sd_model_hash": "ab"}
