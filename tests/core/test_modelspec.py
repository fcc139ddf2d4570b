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


# ---------------------------------------------------------------- the thumbnail inside the file


def _decode(url: str):
    import base64
    import io

    import numpy as np
    from PIL import Image

    head, data = url.split(",", 1)
    picture = Image.open(io.BytesIO(base64.b64decode(data)))
    return head, picture.format, picture.size, np.asarray(picture.convert("RGB"), dtype=np.float32) / 255


def test_thumbnail_is_a_small_picture_of_the_preview():
    import numpy as np

    from tokensmith.modelspec import thumbnail_data_url

    pixels = np.zeros((512, 384, 3), dtype=np.float32)
    pixels[:, :192, 0] = 1.0  # left half red, right half black
    head, fmt, size, back = _decode(thumbnail_data_url(pixels))
    assert head == "data:image/jpeg;base64" and fmt == "JPEG"
    assert size == (192, 256)  # at most 256 a side, the aspect ratio kept
    assert back[:, :90, 0].mean() > 0.95 and back[:, 102:, 0].mean() < 0.05
    head, fmt, size, back = _decode(thumbnail_data_url(pixels[:64, :64], kind="png"))
    assert (head, fmt, size) == ("data:image/png;base64", "PNG", (64, 64))
    assert np.array_equal(back, pixels[:64, :64])  # PNG is lossless, values clipped to 0..1 as they are


def test_only_picture_data_urls_count_as_thumbnails():
    from tokensmith.modelspec import THUMBNAIL_KEY, thumbnail_of

    assert thumbnail_of({THUMBNAIL_KEY: "data:image/jpeg;base64,AAAA"}) == "data:image/jpeg;base64,AAAA"
    assert thumbnail_of({THUMBNAIL_KEY: "data:image/png;base64,AAAA"}) == "data:image/png;base64,AAAA"
    for bad in ("javascript:alert(1)", "https://example.com/x.png", "data:text/html;base64,AAAA", ""):
        assert thumbnail_of({THUMBNAIL_KEY: bad}) is None
    assert thumbnail_of({}) is None
