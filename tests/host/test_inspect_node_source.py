"""Inspect Embedding's source section and options: a file that changed or vanished since Load read it
gets no hash but a note saying so (with what Load saw kept), top_k 0 lists no nearest tokens, the JSON
keeps non-ASCII text as written, and the node is an output node (it runs with nothing connected after)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import torch

CHANGED = "the file changed or vanished since it was loaded; run Load Embedding again"


def run(cls, **inputs):
    with torch.inference_mode():
        return cls.execute(**inputs)


@pytest.fixture
def saved(pack, node_classes, embeddings_dir):
    """A saved SD1 embedding with a non-ASCII note, loaded by Load Embedding: (path, loaded embedding)."""
    Embedding = pack("tokensmith.embedding").Embedding
    name = f"insp-src-{uuid.uuid4().hex[:8]}"
    emb = Embedding(vectors={"clip_l": torch.full((2, 768), 0.01)})
    run(node_classes["TokenSmithSaveEmbedding"], embedding=emb, name=name, overwrite=False, notes="café crème")
    path = Path(embeddings_dir) / f"{name}.safetensors"
    loaded = run(node_classes["TokenSmithLoadEmbedding"], file=path.name).result[0]
    yield path, loaded
    path.unlink(missing_ok=True)


def report(node_classes, **inputs) -> dict:
    return json.loads(run(node_classes["TokenSmithInspectEmbedding"], **inputs).result[1])


def test_an_unchanged_file_has_its_source_and_hashes(node_classes, saved):
    path, loaded = saved
    source = report(node_classes, embedding=loaded)["source"]
    assert (source["path"], source["size"], source["container"]) == (str(path), path.stat().st_size, "safetensors")
    assert source["stored_dtypes"] == {"clip_l": "float32"} and len(source["sha256"]) == 64
    assert "note" not in source


@pytest.mark.parametrize("change", ["touched", "removed"])
def test_a_changed_or_vanished_file_gets_a_note_and_no_hash(node_classes, saved, change):
    path, loaded = saved
    size = path.stat().st_size
    if change == "touched":
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    else:
        path.unlink()
    source = report(node_classes, embedding=loaded)["source"]
    assert (source["sha256"], source["autov2"], source["note"]) == (None, None, CHANGED)
    assert (source["path"], source["size"], source["stored_dtypes"]) == (str(path), size, {"clip_l": "float32"})


def test_top_k_0_lists_no_nearest_tokens_and_1_or_2_that_many_rounded_to_4_places(pack, node_classes, saved,
                                                                                   sd1):
    _path, loaded = saved
    none = report(node_classes, embedding=loaded, clip=sd1.clip, top_k=0)["clip"]["per_encoder"]["clip_l"]
    assert "nearest" not in none and len(none["norm_vs_median"]) == 2
    adapter = pack("comfy_adapter")
    (enc,) = [e for e in adapter.text_encoders(sd1.clip) if e.key == "clip_l"]
    for k in (1, 2):
        got = report(node_classes, embedding=loaded, clip=sd1.clip, top_k=k)["clip"]["per_encoder"]["clip_l"]
        with torch.inference_mode():
            want = [[[tok, round(sim, 4)] for tok, sim in row]
                    for row in adapter.nearest_tokens(enc, loaded.vectors["clip_l"], k=k)]
        assert got["nearest"] == want and [len(row) for row in want] == [k, k]
        assert any(sim not in (0, 1, -1) for row in want for _tok, sim in row)


def test_the_json_keeps_non_ascii_text_and_the_node_is_an_output_node(node_classes, saved):
    _path, loaded = saved
    text = run(node_classes["TokenSmithInspectEmbedding"], embedding=loaded).result[1]
    assert "café crème" in text and "\\u00e9" not in text
    schema = node_classes["TokenSmithInspectEmbedding"].define_schema()
    assert schema.is_output_node is True
    assert [(i.id, i.optional) for i in schema.inputs] == [("embedding", False), ("clip", True), ("top_k", True)]
    top_k = next(i for i in schema.inputs if i.id == "top_k")
    assert (top_k.default, top_k.min, top_k.max, top_k.optional) == (5, 0, 50, True)


def test_an_embedding_not_read_from_a_file_has_only_the_note(pack, node_classes):
    emb = pack("tokensmith.embedding").Embedding(vectors={"clip_l": torch.ones(1, 768)})
    data = report(node_classes, embedding=emb)
    assert data["source"] == {
        "path": None, "sha256": None, "autov2": None,
        "note": "not read from a file here (trained, merged or converted): save it to get a hash"}
    assert data["stats"]["clip_l"]["stored_dtype"] == data["stats"]["clip_l"]["dtype"] == "float32"
