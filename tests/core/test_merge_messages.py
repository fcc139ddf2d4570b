"""Merge operations' refusals word for word (which operand, which weight, which limit), the vector
count limits at their edges, and the results' shapes that a wrong axis or a wrong operand would break."""

from __future__ import annotations

import pytest
import torch

from tokensmith.embedding import MAX_VECTORS, Embedding
from tokensmith.errors import FamilyMismatchError, TokenSmithError
from tokensmith.merge import (
    check_same_family,
    collapse,
    concat,
    crop_or_pad,
    match_norm,
    mean,
    roll,
    scale,
    scale_rows,
    slerp,
    weighted_sum,
)


def emb(n=2, value=1.0, name=""):
    return Embedding({"clip_l": torch.full((n, 768), value)}, name=name)


def _message(fn, *args):
    with pytest.raises(TokenSmithError) as info:
        fn(*args)
    return str(info.value)


def test_vector_count_refusals_and_edges():
    assert _message(crop_or_pad, emb(), True) == "vector count must be a whole number, got True"
    assert _message(crop_or_pad, emb(), 0) == (
        "vector count must be at least 1, got 0: an embedding needs at least one vector")
    assert _message(crop_or_pad, emb(), MAX_VECTORS + 1) == (
        f"vector count {MAX_VECTORS + 1} is over the limit of {MAX_VECTORS} vectors (one prompt chunk)")
    assert crop_or_pad(emb(), 1).num_vectors == 1
    assert crop_or_pad(emb(), MAX_VECTORS).num_vectors == MAX_VECTORS


def test_concat_allows_exactly_the_limit_and_keeps_the_order():
    half = MAX_VECTORS // 2
    out = concat([emb(half, 1.0), emb(MAX_VECTORS - half, 2.0)])
    assert out.vectors["clip_l"].shape == (MAX_VECTORS, 768)
    assert out.vectors["clip_l"][0, 0] == 1.0 and out.vectors["clip_l"][-1, 0] == 2.0


def test_weights_are_named_by_their_place():
    assert _message(weighted_sum, [emb(), emb()], [1.0, float("nan")]) == "weight 2 must be a finite number, got nan"
    assert _message(weighted_sum, [emb()], ["x"]) == "weight 1 must be a number, got 'x'"
    assert _message(mean, []) == "nothing to average: give at least one embedding"
    assert weighted_sum([emb()], [2]).vectors["clip_l"].dtype == torch.float32


def test_family_mismatch_describes_both_sides():
    sdxl = Embedding({"clip_l": torch.ones(3, 768), "clip_g": torch.ones(3, 1280)}, name="x")
    with pytest.raises(FamilyMismatchError) as info:
        concat([emb(2, name="a"), sdxl])
    assert "clip_l[2x768] vs clip_l[3x768] + clip_g[3x1280]" in str(info.value)


def test_slerp_scale_norm_and_roll_refusals():
    assert _message(slerp, emb(), emb(), float("inf")) == "slerp t must be a finite number, got inf"
    assert _message(scale, emb(name="cat"), 2.0, "clip_g") == (
        "cannot scale only 'clip_g': cat has clip_l; pass encoder=None to scale all of it")
    assert _message(scale, emb(), 2.0, "clip_g") == (
        "cannot scale only 'clip_g': this embedding has clip_l; pass encoder=None to scale all of it")
    two = Embedding({"clip_l": torch.ones(1, 768), "clip_g": torch.ones(1, 1280)})
    assert _message(scale, two, 2.0, "t5xxl") == (
        "cannot scale only 't5xxl': this embedding has clip_l, clip_g; pass encoder=None to scale all of it")
    assert _message(match_norm, emb(), "big") == "target norm must be a number, got 'big'"
    assert _message(match_norm, emb(), {"clip_l": "big"}) == "target norm for clip_l must be a number, got 'big'"
    assert _message(match_norm, emb(), -0.5) == "target norm for clip_l must be >= 0, got -0.5"
    assert _message(roll, emb(), 1.0) == "roll shift must be a whole number, got 1.0"
    assert _message(roll, emb(), True) == "roll shift must be a whole number, got True"


def test_match_norm_to_a_small_target_and_zero_rows():
    rows = torch.zeros(2, 768)
    rows[0, 0] = 3.0
    out = match_norm(Embedding({"clip_l": rows}), 0.5).vectors["clip_l"]
    assert out[0].norm().item() == pytest.approx(0.5) and torch.equal(out[1], torch.zeros(768))
    tiny = torch.full((1, 768), 1e-3)
    assert match_norm(Embedding({"clip_l": tiny}), 2.0).vectors["clip_l"].norm().item() == pytest.approx(2.0)


def test_collapse_gives_one_vector_also_for_one_small_vector():
    small = Embedding({"clip_l": torch.full((1, 768), 0.01)})
    out = collapse(small).vectors["clip_l"]
    assert out.shape == (1, 768) and torch.allclose(out, small.vectors["clip_l"])
    assert collapse(emb(3)).vectors["clip_l"].shape == (1, 768)


def test_slerp_of_nearly_opposite_and_tiny_rows():
    a = torch.zeros(1, 768)
    a[0, 0] = 1e-3
    b = torch.zeros(1, 768)
    b[0, 1] = 1e-3
    mid = slerp(Embedding({"clip_l": a}), Embedding({"clip_l": b}), 0.5).vectors["clip_l"]
    # a quarter circle: the midpoint keeps the norm (a lerp would shrink it by 1/sqrt(2))
    assert mid.norm().item() == pytest.approx(1e-3, rel=1e-4)


def test_nothing_to_merge_is_refused_in_words():
    assert _message(concat, []) == "nothing to merge: give at least one embedding"
    assert _message(weighted_sum, [], []) == "nothing to merge: give at least one embedding"


def _sdxl(name=""):
    return Embedding({"clip_l": torch.ones(1, 768), "clip_g": torch.ones(1, 1280)}, name=name)


def test_family_mismatch_names_both_embeddings_by_place_and_name():
    tail = "use embeddings made for the same model family (convert one first if needed)"
    # the third operand is the odd one: its place and name, not the second's, are in the message
    assert _message(concat, [emb(2), emb(1, name="b"), _sdxl("x")]) == (
        "cannot combine embedding 1 (unnamed) and embedding 3 (x) of different families: "
        f"clip_l[2x768] vs clip_l[1x768] + clip_g[1x1280]; {tail}")
    assert _message(mean, [emb(1, name="a"), _sdxl()]) == (
        "cannot combine embedding 1 (a) and embedding 2 (unnamed) of different families: "
        f"clip_l[1x768] vs clip_l[1x768] + clip_g[1x1280]; {tail}")


def test_row_helpers_refuse_in_words():
    tail = "use embeddings made for the same model family (convert one first if needed)"
    narrow, wide = {"clip_l": torch.ones(1, 768)}, {"clip_l": torch.ones(2, 1024)}
    with pytest.raises(FamilyMismatchError) as info:
        check_same_family(narrow, wide)
    assert str(info.value) == f"cannot combine operands of different families: clip_l[1x768] vs clip_l[2x1024]; {tail}"
    # scale_rows is reached by the expression evaluator, which names sides by key
    assert _message(scale_rows, {"clip_l": torch.ones(1, 4), "t5xxl": torch.ones(1, 8)}, 2.0, "clip_g") == (
        "cannot scale only 'clip_g': this embedding has clip_l, t5xxl; "
        "one-sided scaling needs an embedding with that encoder (e.g. SDXL for clip_l/clip_g)")


def test_scale_factor_is_named():
    assert _message(scale, emb(), float("nan")) == "scale factor must be a finite number, got nan"
    assert _message(scale, emb(), "twice") == "scale factor must be a number, got 'twice'"
