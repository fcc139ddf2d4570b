"""TokenSmithMergeEmbeddings: every operation against hand-computed values, and expressions on a real CLIP."""

import math
import uuid

import pytest
import torch


def run(cls, **inputs):
    with torch.inference_mode():
        return cls.execute(**inputs)


@pytest.fixture(scope="module")
def mods(pack):
    class M:
        embedding = pack("tokensmith.embedding")
        errors = pack("tokensmith.errors")
        writer = pack("tokensmith.writer")

    return M


@pytest.fixture(scope="module")
def merge(node_classes):
    return node_classes["TokenSmithMergeEmbeddings"]


def rows(width: int, *values_per_row) -> torch.Tensor:
    """[n, width] with the first entries of each row given, the rest zero."""
    t = torch.zeros(len(values_per_row), width)
    for i, values in enumerate(values_per_row):
        t[i, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return t


def l_emb(mods, *values_per_row, name="x"):
    return mods.embedding.Embedding(vectors={"clip_l": rows(768, *values_per_row)}, name=name)


def xl_emb(mods, l_rows, g_rows, name="xl"):
    return mods.embedding.Embedding(vectors={"clip_l": rows(768, *l_rows), "clip_g": rows(1280, *g_rows)}, name=name)


def op(merge, operation, **inputs):
    out = run(merge, operation=operation, **inputs)
    emb, summary = out.result
    assert out.ui.as_dict()["text"][0] == summary
    return emb, summary


def vocab_row(clip, key: str, token_id: int) -> torch.Tensor:
    return getattr(clip.cond_stage_model, key).transformer.get_input_embeddings().weight[token_id].float()


def ids(clip, key: str, text: str) -> list[int]:
    return getattr(clip.tokenizer, key).tokenizer(text)["input_ids"][1:-1]


# --------------------------------------------------------------------------- structured operations


def test_weighted_sum_pads_the_shorter_operand(mods, merge):
    a = l_emb(mods, [1, 0], [0, 2], name="alpha")
    b = l_emb(mods, [3, 0])
    out, summary = op(merge, "weighted sum", a=a, b=b, weight_a=0.5, weight_b=2.0)
    assert torch.equal(out.vectors["clip_l"], rows(768, [6.5, 0], [0, 1]))
    assert "0.5*a=alpha + 2*b=x" in summary
    assert out.metadata["merge"] == "0.5*a=alpha + 2*b=x"
    # Unconnected inputs take no part, whatever their weight.
    only_c, _ = op(merge, "weighted sum", c=b, weight_a=100.0, weight_c=-1.0)
    assert torch.equal(only_c.vectors["clip_l"], rows(768, [-3, 0]))


def test_mean_and_concat(mods, merge):
    a, b = l_emb(mods, [1, 0], [0, 2]), l_emb(mods, [3, 0])
    mean, _ = op(merge, "mean", a=a, b=b)
    assert torch.equal(mean.vectors["clip_l"], rows(768, [2, 0], [0, 1]))
    c = l_emb(mods, [0, 0, 9])
    cat, _ = op(merge, "concat", a=a, b=b, d=c)
    assert torch.equal(cat.vectors["clip_l"], rows(768, [1, 0], [0, 2], [3, 0], [0, 0, 9]))


def test_slerp(mods, merge):
    a, b = l_emb(mods, [2, 0]), l_emb(mods, [0, 4])
    half, _ = op(merge, "slerp", a=a, b=b, t=0.5)
    # Direction halfway along the arc, norm halfway between 2 and 4.
    expected = rows(768, [3 / math.sqrt(2), 3 / math.sqrt(2)])
    assert torch.allclose(half.vectors["clip_l"], expected, atol=1e-6)
    start, _ = op(merge, "slerp", a=a, b=b, t=0.0)
    assert torch.allclose(start.vectors["clip_l"], a.vectors["clip_l"], atol=1e-7)
    with pytest.raises(mods.errors.TokenSmithError, match="connect both"):
        run(merge, operation="slerp", a=a)


def test_scale_per_encoder_scale_roll_crop_collapse(mods, merge):
    a = l_emb(mods, [1, 2], [3, 4], name="src")
    scaled, _ = op(merge, "scale", a=a, factor=-2.0)
    assert torch.equal(scaled.vectors["clip_l"], rows(768, [-2, -4], [-6, -8]))
    assert scaled.name == "src"

    rolled, _ = op(merge, "roll", a=a, shift=1)
    assert torch.equal(rolled.vectors["clip_l"], rows(768, [3, 4], [1, 2]))

    padded, _ = op(merge, "crop/pad", a=a, n=4)
    assert torch.equal(padded.vectors["clip_l"], rows(768, [1, 2], [3, 4], [], []))
    cropped, _ = op(merge, "crop/pad", a=a, n=1)
    assert torch.equal(cropped.vectors["clip_l"], rows(768, [1, 2]))

    c = l_emb(mods, [3, 0], [0, 4])
    collapsed, _ = op(merge, "collapse", a=c)
    # Sum (3, 4) has norm 5; the mean norm is 3.5, so the result is (3, 4) * 0.7.
    assert torch.allclose(collapsed.vectors["clip_l"], rows(768, [2.1, 2.8]), atol=1e-6)

    xl = xl_emb(mods, [[1, 1]], [[2, 2]])
    g_only, summary = op(merge, "per-encoder scale", a=xl, factor=0.5, encoder="clip_g")
    assert torch.equal(g_only.vectors["clip_l"], rows(768, [1, 1]))
    assert torch.equal(g_only.vectors["clip_g"], rows(1280, [1, 1]))
    assert "on clip_g" in summary
    with pytest.raises(mods.errors.TokenSmithError, match="clip_g"):
        run(merge, operation="per-encoder scale", a=a, factor=0.5, encoder="clip_g")


def test_match_norm_to_a_value_and_to_the_vocabulary_median(mods, merge, sd1, sdxl):
    a = l_emb(mods, [3, 4], [0, 0, 2], [])
    fixed, _ = op(merge, "match norm", a=a, norm=10.0)
    assert torch.allclose(fixed.vectors["clip_l"], rows(768, [6, 8], [0, 0, 10], []), atol=1e-6)  # zero stays zero

    with pytest.raises(mods.errors.TokenSmithError, match="connect the CLIP"):
        run(merge, operation="match norm", a=a, norm=0.0)

    for model in (sd1, sdxl):
        encoders = ("clip_l",) if model is sd1 else ("clip_l", "clip_g")
        emb = a if model is sd1 else xl_emb(mods, [[3, 4], [1]], [[0, 5], [2, 2]])
        out, summary = op(merge, "match norm", a=emb, norm=0.0, clip=model.clip)
        for key in encoders:
            table = getattr(model.clip.cond_stage_model, key).transformer.get_input_embeddings().weight.float()
            median = float(table.norm(dim=-1).median())
            norms = out.vectors[key].norm(dim=-1)
            nonzero = emb.vectors[key].norm(dim=-1) > 0
            assert torch.allclose(norms[nonzero], torch.full_like(norms[nonzero], median), rtol=1e-5)
            assert f"{key} {median:.4g}" in summary
    with pytest.raises(mods.errors.FamilyMismatchError, match="clip_g"):
        run(merge, operation="match norm", a=xl_emb(mods, [[1]], [[1]]), norm=0.0, clip=sd1.clip)


def test_mixed_families_and_missing_inputs_are_refused(mods, merge):
    a = l_emb(mods, [1])
    b = xl_emb(mods, [[1]], [[1]])
    with pytest.raises(mods.errors.FamilyMismatchError, match="different families"):
        run(merge, operation="weighted sum", a=a, b=b)
    with pytest.raises(mods.errors.FamilyMismatchError):
        run(merge, operation="concat", a=a, b=b)
    with pytest.raises(mods.errors.TokenSmithError, match="different families"):
        run(merge, operation="mean", a=a, expression="a + b", b=b)
    with pytest.raises(mods.errors.TokenSmithError, match="nothing to merge"):
        run(merge, operation="mean")
    with pytest.raises(mods.errors.TokenSmithError, match="input a"):
        run(merge, operation="scale", b=a)


# --------------------------------------------------------------------------- expressions


def test_expression_wins_over_the_operation(mods, merge):
    a, b = l_emb(mods, [1, 0]), l_emb(mods, [0, 4])
    out, summary = op(merge, "mean", a=a, b=b, expression="a*3 + b/2")
    assert torch.equal(out.vectors["clip_l"], rows(768, [3, 2]))
    assert out.metadata["merge"] == "a*3 + b/2"
    assert summary.startswith("a*3 + b/2")


def test_expression_with_quoted_text_names_and_files_on_a_real_clip(mods, merge, sd1, embeddings_dir):
    clip = sd1.clip
    cat, dog = (vocab_row(clip, "clip_l", i) for i in (ids(clip, "clip_l", "cat")[0], ids(clip, "clip_l", "dog")[0]))
    a = l_emb(mods, [1, 2], [3])
    out, _ = op(merge, "weighted sum", a=a, clip=clip, expression="'cat' + a*2")
    expected = torch.stack([cat + 2 * a.vectors["clip_l"][0], 2 * a.vectors["clip_l"][1]])
    assert torch.allclose(out.vectors["clip_l"], expected, atol=1e-7)

    fname = f"exprfile_{uuid.uuid4().hex[:6]}"
    stored = l_emb(mods, [5], [0, 6])
    mods.writer.save_embedding(stored, embeddings_dir, fname)
    file_rows = stored.vectors["clip_l"]
    # "," joins the term it follows: 'dog','cat' is one two-vector operand of the sum.
    out, _ = op(merge, "weighted sum", clip=clip, expression=f"{fname}/2 + 'dog', 'cat'")
    expected = torch.stack([file_rows[0] / 2 + dog, file_rows[1] / 2 + cat])
    assert torch.allclose(out.vectors["clip_l"], expected, atol=1e-7)
    out, _ = op(merge, "weighted sum", clip=clip, expression=f"({fname}/2 + 'dog'), 'cat'")
    expected = torch.stack([file_rows[0] / 2 + dog, file_rows[1] / 2, cat])
    assert torch.allclose(out.vectors["clip_l"], expected, atol=1e-7)

    # A connected input named like a file wins over the file.
    shadow = l_emb(mods, [7])
    out, _ = op(merge, "weighted sum", a=shadow, clip=clip, expression="a")
    assert torch.equal(out.vectors["clip_l"], shadow.vectors["clip_l"])


def test_expression_token_numbers_use_each_tokenizers_own_special_tokens(mods, merge, sdxl):
    clip = sdxl.clip
    out, _ = op(merge, "weighted sum", clip=clip, expression="'cat',00,000,0000,320")
    cat = ids(clip, "clip_l", "cat")[0]
    l_end = clip.tokenizer.clip_l.tokenizer("")["input_ids"][-1]
    l_start = clip.tokenizer.clip_l.tokenizer("")["input_ids"][0]
    # ComfyUI pads clip_l with its end token and clip_g with 0.
    expected_l = [cat, l_end, l_end, l_start, 320]
    expected_g = [cat, 0, l_end, l_start, 320]
    for key, token_ids in (("clip_l", expected_l), ("clip_g", expected_g)):
        expected = torch.stack([vocab_row(clip, key, i) for i in token_ids])
        assert torch.equal(out.vectors[key], expected), key


def test_expression_errors_are_clear(mods, merge, sd1):
    a = l_emb(mods, [1])
    with pytest.raises(mods.errors.TokenSmithError, match="needs a CLIP"):
        run(merge, operation="mean", a=a, expression="a + 'cat'")
    with pytest.raises(mods.errors.TokenSmithError, match="no embedding of this name"):
        run(merge, operation="mean", a=a, expression="a + nosuchembedding_zz")
    with pytest.raises(mods.errors.TokenSmithError, match="column"):
        run(merge, operation="mean", a=a, expression="a + * 2")
    with pytest.raises(mods.errors.TokenSmithError, match="outside the clip_l vocabulary"):
        run(merge, operation="mean", a=a, clip=sd1.clip, expression="a,99999")
