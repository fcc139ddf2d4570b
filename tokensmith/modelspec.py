"""Sharing metadata in a form other tools read: the SAI model spec (`modelspec.*` keys, what model
browsers, kohya's scripts and Civitai read from a safetensors header) derived from TokenSmith's own
metadata, and the base checkpoint in kohya's keys. Pure: no ComfyUI."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np

from .hashing import sha256_file

SPEC_VERSION = "1.0.0"
TRIGGER_KEY = "tokensmith.trigger_word"
NOTES_KEY = "tokensmith.notes"
BASE_KEY = "tokensmith.base_checkpoint"
BASE_SHA256_KEY = "tokensmith.base_checkpoint_sha256"
# the spec's preview picture, a data URL inside the header: the file stays one safetensors file, and
# tools that read the spec (model browsers, SwarmUI) show it where A1111 would look for NAME.preview.png
THUMBNAIL_KEY = "modelspec.thumbnail"
THUMBNAIL_SIDE = 256

_STABILITY = "https://github.com/Stability-AI/generative-models"
# family -> (the spec's architecture id of the model the vectors are for, implementation, resolution)
_ARCHITECTURES = {
    "sd1": ("stable-diffusion-v1", _STABILITY, 512),
    "sdxl": ("stable-diffusion-xl-v1-base", _STABILITY, 1024),
    "sd3": ("stable-diffusion-3-medium", _STABILITY, 1024),
    "flux": ("flux-1-dev", "https://github.com/black-forest-labs/flux", 1024),
}
# SD2 comes as 512 px eps and 768 px v-prediction models: the spec tells them apart
_SD2 = {"v": ("stable-diffusion-v2-768-v", _STABILITY, 768), "eps": ("stable-diffusion-v2-512", _STABILITY, 512)}
_PREDICTION = {"eps": "epsilon", "v": "v"}


def _architecture(family: str | None, prediction: str | None):
    if family == "sd2":
        return _SD2.get(prediction or "")
    return _ARCHITECTURES.get(family or "")


def _training_resolution(meta: dict[str, str]) -> int:
    try:
        value = json.loads(meta.get("tokensmith.training") or "{}").get("resolution")
    except (ValueError, AttributeError):
        return 0
    return value if isinstance(value, int) and value > 0 else 0


def modelspec_keys(meta: dict[str, str]) -> dict[str, str]:
    """The `modelspec.*` keys for a file whose TokenSmith metadata is ``meta`` (name, family, created,
    and when trained tokensmith.prediction / tokensmith.training; tokensmith.trigger_word and
    tokensmith.notes when given). Empty for a family the spec has no architecture id for (and for SD2
    when its prediction type is unknown): a wrong id would make a tool load the file for another model."""
    found = _architecture(meta.get("family"), meta.get("tokensmith.prediction"))
    if found is None:
        return {}
    arch, implementation, resolution = found
    name = meta.get("name") or ""
    size = _training_resolution(meta) or resolution
    out = {
        "modelspec.sai_model_spec": SPEC_VERSION,
        "modelspec.architecture": f"{arch}-textual-inversion",
        "modelspec.implementation": implementation,
        "modelspec.title": name,
        "modelspec.resolution": f"{size}x{size}",
        "modelspec.trigger_phrase": meta.get(TRIGGER_KEY) or name,
        "modelspec.usage_hint": f"write embedding:{name} in a ComfyUI prompt",
    }
    if meta.get("created"):
        out["modelspec.date"] = meta["created"]
    prediction = _PREDICTION.get(meta.get("tokensmith.prediction") or "")
    if prediction:
        out["modelspec.prediction_type"] = prediction
    if meta.get(NOTES_KEY):
        out["modelspec.description"] = meta[NOTES_KEY]
    return out


# Derived from the vectors and TokenSmith's keys: never carried over from a file the embedding was read from.
DERIVED_KEYS = ("modelspec.sai_model_spec", "modelspec.architecture", "modelspec.implementation", "modelspec.title",
                "modelspec.resolution", "modelspec.trigger_phrase", "modelspec.usage_hint", "modelspec.date",
                "modelspec.prediction_type")


def with_modelspec(meta: dict[str, str]) -> dict[str, str]:
    """``meta`` with the derived modelspec keys made anew (a converted or renamed embedding's old ones
    dropped); a description carried over from the source file is kept unless notes replace it."""
    out = {k: v for k, v in meta.items() if k not in DERIVED_KEYS}
    out.update(modelspec_keys(out))
    return out


def sharing_metadata(trigger_word: str = "", notes: str = "", base_checkpoint: str = "",
                     base_sha256: str = "") -> dict[str, str]:
    """What a user adds when saving: trigger word, notes and the base checkpoint (file name and sha256,
    also in kohya's ss_sd_model_name / ss_new_sd_model_hash). Empty values are left out."""
    out = {}
    if trigger_word.strip():
        out[TRIGGER_KEY] = trigger_word.strip()
    if notes.strip():
        out[NOTES_KEY] = notes.strip()
    if base_checkpoint:
        out[BASE_KEY] = out["ss_sd_model_name"] = base_checkpoint
    if base_sha256:
        out[BASE_SHA256_KEY] = out["ss_new_sd_model_hash"] = base_sha256
    return out


_HASHES: dict[tuple, str] = {}


def checkpoint_sha256(path: str) -> str:
    """SHA-256 of a base checkpoint, hashed once per path, size and modification time (gigabytes)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def thumbnail_data_url(pixels, max_side: int = THUMBNAIL_SIDE, kind: str = "jpeg") -> str:
    """A picture ([H, W, 3] in 0..1, a numpy array or anything numpy reads) as a small data URL:
    scaled to at most max_side pixels a side, as JPEG (the spec's thumbnail) or PNG (lossless)."""
    from PIL import Image

    arr = (np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    picture = Image.fromarray(arr)
    picture.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    picture.save(buf, format="JPEG" if kind == "jpeg" else "PNG", quality=85)
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_of(meta: dict[str, str]) -> str | None:
    """The file's spec thumbnail when it is a picture's data URL (anything else is not shown)."""
    value = meta.get(THUMBNAIL_KEY) or ""
    return value if value.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) else None
