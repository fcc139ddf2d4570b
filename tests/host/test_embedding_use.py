"""The key proof: a file written by TokenSmithSaveEmbedding means, through ComfyUI's own `embedding:NAME`
in core's CLIPTextEncode, exactly the vectors it holds (conditioning and pooled output bit-identical to
splicing those vectors into the prompt directly)."""

import uuid

import pytest
import torch

PROMPT = "a photo of [name] on a wooden table"
WIDTHS = {"sd1": {"clip_l": 768}, "sd2": {"clip_h": 1024}, "sdxl": {"clip_l": 768, "clip_g": 1280}}


def token_like_vectors(clip, family: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Random vectors with the norm of the CLIP's own token rows, so they steer the encoder like real ones."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, width in WIDTHS[family].items():
        table = getattr(clip.cond_stage_model, key).transformer.get_input_embeddings().weight.float()
        v = torch.randn(n, width, generator=gen)
        out[key] = v / v.norm(dim=-1, keepdim=True) * float(table.norm(dim=-1).median())
    return out


def encode_with_core_node(clip, text: str):
    import nodes

    with torch.inference_mode():
        (conditioning,) = nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]().encode(clip, text)
    cond, extra = conditioning[0]
    return cond, extra.get("pooled_output")


def encode_spliced(adapter, clip, vectors: dict[str, torch.Tensor], n: int):
    with torch.inference_mode(), adapter.PromptRows(clip, n) as rows:
        tokens = adapter.fill_slots(rows.tokens(PROMPT), vectors, rows.encoders)
        return adapter.encode_tokens(clip, tokens)


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sd2"])
def test_saved_file_used_by_name_equals_direct_splice(family, pack, models, node_classes):
    adapter = pack("comfy_adapter")
    Embedding = pack("tokensmith.embedding").Embedding
    clip = models[family].clip
    n = 3
    vectors = token_like_vectors(clip, family, n, seed=11)
    name = f"use-{family}-{uuid.uuid4().hex[:8]}"
    with torch.inference_mode():
        out = node_classes["TokenSmithSaveEmbedding"].execute(
            embedding=Embedding(vectors=vectors, name=name), name=name, overwrite=False)
    (prompt_word,) = out.result
    assert prompt_word == f"embedding:{name}"

    cond_file, pooled_file = encode_with_core_node(clip, PROMPT.replace("[name]", prompt_word))
    cond_direct, pooled_direct = encode_spliced(adapter, clip, vectors, n)

    assert cond_file.shape == cond_direct.shape
    assert (cond_file - cond_direct).abs().max().item() == 0.0
    if family == "sdxl":
        assert pooled_file is not None and pooled_direct is not None
        assert (pooled_file - pooled_direct).abs().max().item() == 0.0

    # The comparison can fail: other vectors, or the keyword dropped, change the conditioning.
    other = {k: v * 1.01 for k, v in vectors.items()}
    cond_other, _ = encode_spliced(adapter, clip, other, n)
    assert (cond_other - cond_file).abs().max().item() > 0
    cond_without, _ = encode_with_core_node(clip, PROMPT.replace("[name]", ""))
    assert cond_without.shape != cond_file.shape or (cond_without - cond_file).abs().max().item() > 0
    if family == "sdxl":
        # Both sides of the SDXL file are read: dropping the G vectors changes the result.
        zero_g = {"clip_l": vectors["clip_l"], "clip_g": torch.zeros_like(vectors["clip_g"])}
        cond_zero_g, pooled_zero_g = encode_spliced(adapter, clip, zero_g, n)
        assert (cond_zero_g - cond_file).abs().max().item() > 0
        assert (pooled_zero_g - pooled_file).abs().max().item() > 0


def test_loaded_then_resaved_file_keeps_its_meaning(pack, sdxl, node_classes):
    """Load -> Save under a new name (e.g. to turn any format into safetensors) changes nothing in use."""
    Embedding = pack("tokensmith.embedding").Embedding
    clip = sdxl.clip
    vectors = token_like_vectors(clip, "sdxl", 2, seed=12)
    first, second = (f"resave-{uuid.uuid4().hex[:8]}" for _ in range(2))
    save, load = node_classes["TokenSmithSaveEmbedding"], node_classes["TokenSmithLoadEmbedding"]
    with torch.inference_mode():
        save.execute(embedding=Embedding(vectors=vectors), name=first, overwrite=False)
        loaded = load.execute(file=f"{first}.safetensors").result[0]
        save.execute(embedding=loaded, name=second, overwrite=False)
    a = encode_with_core_node(clip, f"a photo of embedding:{first} on a wooden table")
    b = encode_with_core_node(clip, f"a photo of embedding:{second} on a wooden table")
    assert (a[0] - b[0]).abs().max().item() == 0.0
    assert (a[1] - b[1]).abs().max().item() == 0.0
