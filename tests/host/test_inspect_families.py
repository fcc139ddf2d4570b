"""Inspect and the Prompt node's warnings on the flow-matching families' tiny real CLIPs
(devkit.model_factory.build_tiny_flow): what each encoder reads, checked against ComfyUI's own
tokenization of `embedding:NAME`, and nearest tokens in T5's and the Qwen LLMs' vocabularies."""

from __future__ import annotations

import json
import uuid

import pytest
import torch

FAMILIES = ["chroma", "zimage", "qwen_image", "flux"]
WORDS = "cat dog"

def _build(family):
    from devkit.model_factory import build_tiny_flow

    return build_tiny_flow(family, seed=0)


@pytest.fixture(scope="module", params=FAMILIES)
def flow(request, comfy_base):
    """(family, its tiny ModelSet), built once per family for this module."""
    return request.param, _build(request.param)


@pytest.fixture(scope="module", params=["chroma", "flux"])
def t5_flow(request, comfy_base):
    return request.param, _build(request.param)


def _run(node, **kwargs):
    with torch.inference_mode():
        return node.execute(**kwargs)


def _word_rows(adapter, enc, text):
    """The encoder's own token rows for text (a vector that is exactly one vocabulary token each)."""
    ids = adapter.token_ids(enc, text)
    table = adapter.token_table(enc)
    return ids, table[torch.tensor(ids, device=table.device)].detach().float().cpu().clone()


def test_inspect_reads_what_comfyui_splices_and_finds_the_nearest_tokens(flow, pack, node_classes, embeddings_dir):
    adapter = pack("comfy_adapter")
    family, models = flow
    clip = models.clip
    # an embedding for the family's last encoder (T5 or the LLM): its own token rows for WORDS
    enc = adapter.text_encoders(clip)[-1]
    ids, rows = _word_rows(adapter, enc, WORDS)
    emb = pack("tokensmith.embedding").Embedding({enc.key: rows}, name="words")
    out = _run(node_classes["TokenSmithInspectEmbedding"], embedding=emb, clip=clip, top_k=2)
    data = json.loads(out.result[1])
    slots = {s.key: s for s in adapter.embedding_slots(clip)}
    assert set(data["clip"]["per_encoder"]) == set(slots)

    name = f"fam-{family}-{uuid.uuid4().hex[:6]}"
    pack("tokensmith.writer").save_embedding(emb, embeddings_dir, name)
    with torch.inference_mode():
        tokens = clip.tokenize(f"a photo of embedding:{name}")
    for key, reading in data["clip"]["per_encoder"].items():
        token_key = next(e.token_key for e in adapter.text_encoders(clip) if e.key == key)
        spliced = [t for row in tokens[token_key] for t, *_ in row if torch.is_tensor(t)]
        if reading["reads"] is None:  # this tokenizer never looks embedding: names up (on this host)
            assert not slots[key].looks_up and spliced == []
            continue
        assert torch.equal(torch.stack(spliced).float(), emb.vectors[reading["reads"]])
        assert reading["used"] == (spliced[0].shape[-1] == slots[key].width)
        if reading["used"]:
            nearest = reading["nearest"]
            assert [row[0][0] for row in nearest] == adapter.token_strings(enc, ids)
            assert all(row[0][1] == pytest.approx(1.0, abs=1e-4) for row in nearest)
    verdict = data["clip"]["verdict"]
    if slots[enc.key].looks_up:
        assert ("works on this" in verdict) == (len(slots) == 1), verdict
    else:
        assert verdict.startswith("will not be read") and "does not look up embedding: names" in verdict


def test_prompt_warnings_on_t5_clips(t5_flow, pack, node_classes, embeddings_dir):
    adapter = pack("comfy_adapter")
    family, models = t5_flow
    clip = models.clip
    writer, Embedding = pack("tokensmith.writer"), pack("tokensmith.embedding").Embedding
    t5 = next(e for e in adapter.text_encoders(clip) if e.key == "t5xxl")
    own = f"own-{family}-{uuid.uuid4().hex[:6]}"
    vectors = {e.key: torch.randn(2, e.width) for e in adapter.text_encoders(clip)}
    writer.save_embedding(Embedding(vectors), embeddings_dir, own)
    xl = f"xl-{family}-{uuid.uuid4().hex[:6]}"
    writer.save_embedding(Embedding({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}),
                          embeddings_dir, xl)
    with torch.inference_mode():
        warnings = node_classes["TokenSmithPrompt"].execute(text=f"embedding:{own} and embedding:{xl}",
                                                            convert_keywords=False, clip=clip).result[1]
    assert f"embedding:{own} is" not in warnings, warnings  # the family's own file: every encoder gets its key
    # the SDXL file: T5 has no key of its own in it and gets the first tensor, clip_g, of another width
    assert f"mismatch: embedding:{xl}" in warnings and "no t5xxl key, falls back to the first tensor (clip_g)" in warnings
    assert f"width 1280 vs {t5.width}" in warnings
