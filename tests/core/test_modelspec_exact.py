"""Exact behaviour of modelspec: every derived key by name and value, what a missing or unreadable
training resolution falls back to (and its edge at 1), the notes in the sharing metadata, the base
checkpoint's hash cached per path, size and modification time, and the thumbnail's clipping, float32
rounding and JPEG quality."""

import base64
import hashlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tokensmith import modelspec
from tokensmith.modelspec import NOTES_KEY, checkpoint_sha256, modelspec_keys, sharing_metadata, thumbnail_data_url


def test_every_key_of_a_trained_sd1_file_with_trigger_notes_and_date():
    meta = {"name": "dog", "family": "sd1", "created": "2026-01-02T03:04:05", "tokensmith.prediction": "eps",
            "tokensmith.training": json.dumps({"resolution": 640}), "tokensmith.trigger_word": "a dog",
            "tokensmith.notes": "my dog"}
    assert modelspec_keys(meta) == {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1-textual-inversion",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": "dog",
        "modelspec.resolution": "640x640",
        "modelspec.trigger_phrase": "a dog",
        "modelspec.usage_hint": "write embedding:dog in a ComfyUI prompt",
        "modelspec.date": "2026-01-02T03:04:05",
        "modelspec.prediction_type": "epsilon",
        "modelspec.description": "my dog",
    }


def test_without_name_trigger_date_prediction_or_notes_only_the_fixed_keys_are_written():
    assert modelspec_keys({"family": "flux"}) == {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "flux-1-dev-textual-inversion",
        "modelspec.implementation": "https://github.com/black-forest-labs/flux",
        "modelspec.title": "",
        "modelspec.resolution": "1024x1024",
        "modelspec.trigger_phrase": "",
        "modelspec.usage_hint": "write embedding: in a ComfyUI prompt",
    }


def test_the_trigger_phrase_is_the_name_when_no_trigger_word_is_given():
    assert modelspec_keys({"name": "cat", "family": "sdxl"})["modelspec.trigger_phrase"] == "cat"


@pytest.mark.parametrize("training", ["not json", "[640]", json.dumps({"resolution": "640"}),
                                      json.dumps({"resolution": 0}), json.dumps({"resolution": -64}),
                                      json.dumps({"resolution": 640.0}), json.dumps({})])
def test_an_unreadable_or_unusable_training_resolution_falls_back_to_the_familys(training):
    meta = {"name": "x", "family": "sdxl", "tokensmith.training": training}
    assert modelspec_keys(meta)["modelspec.resolution"] == "1024x1024"


def test_a_training_resolution_of_one_pixel_is_the_smallest_taken():
    meta = {"name": "x", "family": "sd1", "tokensmith.training": json.dumps({"resolution": 1})}
    assert modelspec_keys(meta)["modelspec.resolution"] == "1x1"


def test_notes_are_stored_stripped():
    assert sharing_metadata(notes="  kept for later \n") == {NOTES_KEY: "kept for later"}


# ---------------------------------------------------------------- the base checkpoint's hash


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setattr(modelspec, "_HASHES", {})


def test_the_checkpoint_hash_is_the_files_sha256(tmp_path, no_cache):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"first model")
    b.write_bytes(b"other model")
    assert checkpoint_sha256(str(a)) == hashlib.sha256(b"first model").hexdigest()
    assert checkpoint_sha256(str(b)) == hashlib.sha256(b"other model").hexdigest()
    assert checkpoint_sha256(str(a)) == hashlib.sha256(b"first model").hexdigest()


def test_the_hash_is_kept_while_path_size_and_time_stay_and_made_anew_when_the_time_changes(tmp_path, no_cache):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"aaaa")
    st = os.stat(f)
    first = checkpoint_sha256(str(f))
    f.write_bytes(b"bbbb")  # same size; the same modification time put back: not read again
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert checkpoint_sha256(str(f)) == first == hashlib.sha256(b"aaaa").hexdigest()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert checkpoint_sha256(str(f)) == hashlib.sha256(b"bbbb").hexdigest()


# ---------------------------------------------------------------- the thumbnail


def _png_pixels(url):
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def test_values_outside_0_to_1_are_clipped_before_they_become_bytes():
    pixels = np.array([[[-0.5, 1.5, 2.0], [0.0, 1.0, -3.0]]], dtype=np.float32)
    assert _png_pixels(thumbnail_data_url(pixels, kind="png")).tolist() == [[[0, 255, 255], [0, 255, 0]]]


def test_pixels_are_rounded_as_float32():
    """A float64 value just under 0.5/255 that float32 rounds up to it: the byte is 1, as for the
    float32 images ComfyUI passes."""
    v = 0.00196078411372549
    assert int(np.float64(v) * 255 + 0.5) == 0 and int(np.float32(v) * np.float32(255) + np.float32(0.5)) == 1
    pixels = np.full((1, 1, 3), v, dtype=np.float64)
    assert _png_pixels(thumbnail_data_url(pixels, kind="png")).tolist() == [[[1, 1, 1]]]


def test_the_jpeg_is_saved_at_quality_85():
    """The quantization tables are quality's fingerprint: those of any picture PIL saves at 85."""
    rng = np.random.default_rng(0)
    url = thumbnail_data_url(rng.random((32, 32, 3)))
    jpeg = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, format="JPEG", quality=85)
    assert jpeg.quantization == Image.open(reference).quantization
