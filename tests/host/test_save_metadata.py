"""Save Embedding's sharing metadata, read back from the safetensors header the way other tools read it
(safetensors' own safe_open and the raw JSON header): the SAI model spec keys, the trigger word and
notes, the base checkpoint's file name and SHA-256 (also in kohya's keys) beside TokenSmith's own."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid

import pytest
import torch
from safetensors import safe_open


def raw_header(path) -> dict:
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(length))


@pytest.fixture
def base_checkpoint(comfy_base):
    import folder_paths

    folder = folder_paths.get_folder_paths("checkpoints")[0]
    os.makedirs(folder, exist_ok=True)
    name = f"base-{uuid.uuid4().hex[:8]}.safetensors"
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one hashing chunk
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(data)
    return name, hashlib.sha256(data).hexdigest()


def save(node_classes, emb, name, **inputs):
    with torch.inference_mode():
        return node_classes["TokenSmithSaveEmbedding"].execute(embedding=emb, name=name, overwrite=False, **inputs)


def test_trigger_notes_and_base_checkpoint_in_the_header(pack, node_classes, embeddings_dir, base_checkpoint):
    Embedding = pack("tokensmith.embedding").Embedding
    ckpt, digest = base_checkpoint
    options = next(i for i in node_classes["TokenSmithSaveEmbedding"].define_schema().inputs
                   if i.id == "base_checkpoint").options
    assert options[0] == "none" and ckpt in options
    name = f"meta-{uuid.uuid4().hex[:8]}"
    emb = Embedding(vectors={"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)})
    save(node_classes, emb, name, trigger_word=" my-dog ", notes="12 photos of Rex.\nUse at 0.8.", base_checkpoint=ckpt)
    path = os.path.join(embeddings_dir, name + ".safetensors")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == ["clip_g", "clip_l"]
    assert meta == raw_header(path)["__metadata__"]
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base-textual-inversion"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["modelspec.title"] == name == meta["name"]
    assert meta["modelspec.resolution"] == "1024x1024"
    assert meta["modelspec.trigger_phrase"] == "my-dog" == meta["tokensmith.trigger_word"]
    assert meta["modelspec.description"] == "12 photos of Rex.\nUse at 0.8." == meta["tokensmith.notes"]
    assert meta["modelspec.date"] == meta["created"]
    assert meta["tokensmith.base_checkpoint"] == ckpt == meta["ss_sd_model_name"]
    assert meta["tokensmith.base_checkpoint_sha256"] == digest == meta["ss_new_sd_model_hash"]
    assert meta["family"] == "sdxl"


def test_defaults_and_refusals(pack, node_classes, embeddings_dir):
    Embedding = pack("tokensmith.embedding").Embedding
    errors = pack("tokensmith.errors")
    name = f"plain-{uuid.uuid4().hex[:8]}"
    save(node_classes, Embedding(vectors={"clip_l": torch.randn(1, 768)}), name)
    meta = raw_header(os.path.join(embeddings_dir, name + ".safetensors"))["__metadata__"]
    assert meta["modelspec.architecture"] == "stable-diffusion-v1-textual-inversion"
    assert meta["modelspec.resolution"] == "512x512" and meta["modelspec.trigger_phrase"] == name
    assert not {"modelspec.description", "tokensmith.notes", "tokensmith.base_checkpoint", "ss_sd_model_name"} & set(meta)
    with pytest.raises(errors.EmbeddingFileError, match="not a checkpoint"):
        save(node_classes, Embedding(vectors={"clip_l": torch.randn(1, 768)}), name + "-x",
             base_checkpoint="../../etc/passwd")
    assert not os.path.exists(os.path.join(embeddings_dir, name + "-x.safetensors"))
