"""Using embeddings in prompts: Text Encode with Embedding gives, for an unsaved EMBEDDING, exactly the
conditioning core's CLIPTextEncode gives once that embedding is saved (max difference 0, SD1 and SDXL),
through ComfyUI's own tokenizer, weights included; Pick Embedding writes the `embedding:` text of a
listed file."""

from __future__ import annotations

import os
import uuid

import pytest
import torch

from tests.host.test_embedding_use import token_like_vectors as token_like

TEXTS = [
    "a photo of embedding:{k} on a wooden table",
    "(embedding:{k}:1.2), a red ring, sharp focus",
    "embedding:{k} and embedding:{k}\nside by side, (blurry:0.7)",
]


def core_encode(clip, text: str):
    import nodes

    with torch.inference_mode():
        (conditioning,) = nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]().encode(clip, text)
    return conditioning


def ours(node_classes, clip, emb, keyword: str, text: str):
    with torch.inference_mode():
        out = node_classes["TokenSmithEncodeWithEmbedding"].execute(clip=clip, embedding=emb, keyword=keyword,
                                                                    text=text)
    (conditioning,) = out.result
    return conditioning, out.ui


def max_diff(a, b) -> float:
    """The largest difference between two CONDITIONING lists (cond and pooled); same shape and keys asserted."""
    assert len(a) == len(b)
    worst = 0.0
    for (ca, da), (cb, db) in zip(a, b, strict=True):
        assert ca.shape == cb.shape
        assert set(da) == set(db)
        worst = max(worst, (ca - cb).abs().max().item())
        if da.get("pooled_output") is not None:
            worst = max(worst, (da["pooled_output"] - db["pooled_output"]).abs().max().item())
    return worst


def save(node_classes, emb, name: str) -> None:
    with torch.inference_mode():
        node_classes["TokenSmithSaveEmbedding"].execute(embedding=emb, name=name, overwrite=False)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_unsaved_embedding_encodes_as_the_saved_file(family, pack, models, node_classes):
    Embedding = pack("tokensmith.embedding").Embedding
    clip = models[family].clip
    emb = Embedding(vectors=token_like(clip, family, 3, seed=21), name="merged")
    saved = f"use-{family}-{uuid.uuid4().hex[:8]}"
    save(node_classes, emb, saved)
    for text in TEXTS:
        want = core_encode(clip, text.format(k=saved))
        got, shown = ours(node_classes, clip, emb, "draft", text.format(k="draft"))
        assert max_diff(got, want) == 0.0, text
        if family == "sdxl":
            assert got[0][1]["pooled_output"] is not None
    assert "3 vector(s)" in shown.as_dict()["text"][0] and "in 2 place(s)" in shown.as_dict()["text"][0]

    # the comparison can fail: other vectors, or the keyword left out, change the conditioning
    other = Embedding(vectors={k: v * 1.01 for k, v in emb.vectors.items()})
    got_other, _ = ours(node_classes, clip, other, "draft", TEXTS[0].format(k="draft"))
    assert max_diff(got_other, core_encode(clip, TEXTS[0].format(k=saved))) > 0
    without = core_encode(clip, TEXTS[0].format(k="").replace("of  on", "of on"))
    assert without[0][0].shape != got_other[0][0].shape or max_diff(without, got_other) > 0


def test_a_keyword_that_names_a_saved_file_is_refused_and_other_names_still_read(pack, sdxl, node_classes):
    Embedding = pack("tokensmith.embedding").Embedding
    errors = pack("tokensmith.errors")
    clip = sdxl.clip
    first = Embedding(vectors=token_like(clip, "sdxl", 2, seed=1))
    second = Embedding(vectors=token_like(clip, "sdxl", 4, seed=2))
    a, b, c = (f"kw-{uuid.uuid4().hex[:8]}" for _ in range(3))
    save(node_classes, first, a)
    save(node_classes, second, b)
    save(node_classes, first, f"deep/{c}")
    # ComfyUI's look-up searches its folders in no fixed order: a keyword that is also a file is ambiguous
    for taken in (a, c):  # c: ComfyUI also finds bare names in subfolders
        with pytest.raises(errors.EmbeddingNameError, match="already names"):
            ours(node_classes, clip, second, taken, f"embedding:{taken} beside embedding:{b}")
    # keyword `mine` stands for `second`, while embedding:b is read from its file
    got, _ = ours(node_classes, clip, second, "mine", f"embedding:mine beside embedding:{b}")
    assert max_diff(got, core_encode(clip, f"embedding:{b} beside embedding:{b}")) == 0.0
    assert max_diff(got, core_encode(clip, f"embedding:{a} beside embedding:{b}")) > 0


def test_refusals_and_nothing_left_behind(pack, models, node_classes):
    import folder_paths

    Embedding = pack("tokensmith.embedding").Embedding
    errors = pack("tokensmith.errors")
    sd1_emb = Embedding(vectors=token_like(models["sd1"].clip, "sd1", 2, seed=3))
    temp = folder_paths.get_temp_directory()
    before = set(os.listdir(temp)) if os.path.isdir(temp) else set()
    with pytest.raises(errors.TokenSmithError, match="does not use embedding:draft"):
        ours(node_classes, models["sd1"].clip, sd1_emb, "draft", "a photo of a draft")
    with pytest.raises(errors.FamilyMismatchError, match="clip_g"):
        ours(node_classes, models["sdxl"].clip, sd1_emb, "draft", "a photo of embedding:draft")
    for bad in ("../draft", "my draft", "/tmp/draft", ""):
        with pytest.raises(errors.EmbeddingNameError):
            ours(node_classes, models["sd1"].clip, sd1_emb, bad, f"a photo of embedding:{bad}")
    # a subfolder keyword works, and the placeholder files are gone after every run
    ours(node_classes, models["sd1"].clip, sd1_emb, "styles/draft", "a photo of embedding:styles/draft")
    after = set(os.listdir(temp)) if os.path.isdir(temp) else set()
    assert not [n for n in after - before if n.startswith("tokensmith-slot-")], after - before


def test_pick_embedding_writes_the_prompt_text(pack, sd1, node_classes):
    Embedding = pack("tokensmith.embedding").Embedding
    errors = pack("tokensmith.errors")
    pick = node_classes["TokenSmithPickEmbedding"]
    name = f"picked-{uuid.uuid4().hex[:8]}"
    save(node_classes, Embedding(vectors=token_like(sd1.clip, "sd1", 1, seed=4)), f"sub/{name}")
    options = next(i for i in pick.define_schema().inputs if i.id == "embedding").options
    file = f"sub/{name}.safetensors"
    assert file in options
    assert pick.validate_inputs(embedding=file) is True
    assert pick.execute(embedding=file, weight=1.0).result == (f"embedding:sub/{name}",)
    assert pick.execute(embedding=file, weight=1.2).result == (f"(embedding:sub/{name}:1.2)",)
    assert pick.execute(embedding=file, weight=0.85).result == (f"(embedding:sub/{name}:0.85)",)
    # what it writes is what ComfyUI reads: the file's vectors, not a dropped word
    with_file = core_encode(sd1.clip, f"a photo of {pick.execute(embedding=file, weight=1.0).result[0]}")
    assert max_diff(with_file, core_encode(sd1.clip, f"a photo of embedding:sub/{name}")) == 0.0
    assert with_file[0][0].shape != core_encode(sd1.clip, "a photo of")[0][0].shape or \
        max_diff(with_file, core_encode(sd1.clip, "a photo of")) > 0
    assert "not found" in pick.validate_inputs(embedding="nope-missing.safetensors")
    assert "rename" in pick.validate_inputs(embedding="has space.safetensors")
    with pytest.raises(errors.TokenSmithError):
        pick.execute(embedding=file, weight=float("nan"))
