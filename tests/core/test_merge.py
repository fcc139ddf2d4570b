import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensmith import merge
from tokensmith.embedding import MAX_VECTORS, Embedding
from tokensmith.errors import FamilyMismatchError, TokenSmithError


def sd1(*rows, name="a"):
    return Embedding(vectors={"clip_l": torch.tensor(rows, dtype=torch.float32)}, name=name)


def sdxl(l_rows, g_rows, name="x"):
    return Embedding(
        vectors={"clip_l": torch.tensor(l_rows, dtype=torch.float32), "clip_g": torch.tensor(g_rows, dtype=torch.float32)},
        name=name,
    )


def test_weighted_sum_pads_shorter_with_zeros():
    a = sd1([1.0, 2.0], [3.0, 4.0])
    b = sd1([10.0, 20.0])
    out = merge.weighted_sum([a, b], [2.0, 0.5])
    assert torch.equal(out.vectors["clip_l"], torch.tensor([[7.0, 14.0], [6.0, 8.0]]))


def test_inputs_are_not_mutated():
    a = sd1([1.0, 2.0])
    before = a.vectors["clip_l"].clone()
    merge.scale(a, 3.0)
    merge.weighted_sum([a, a], [1.0, 1.0])
    merge.match_norm(a, 1.0)
    merge.roll(a, 1)
    assert torch.equal(a.vectors["clip_l"], before)


def test_mean_and_concat():
    a = sd1([2.0, 0.0], [0.0, 2.0])
    b = sd1([4.0, 4.0])
    assert torch.equal(merge.mean([a, b]).vectors["clip_l"], torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
    c = merge.concat([a, b])
    assert torch.equal(c.vectors["clip_l"], torch.tensor([[2.0, 0.0], [0.0, 2.0], [4.0, 4.0]]))


def test_concat_over_limit_is_refused():
    big = Embedding(vectors={"clip_l": torch.ones(MAX_VECTORS - 1, 4)})
    with pytest.raises(TokenSmithError, match="over the limit"):
        merge.concat([big, sd1([1.0, 1.0, 1.0, 1.0]), sd1([1.0, 1.0, 1.0, 1.0])])


def test_family_mismatch_is_reported():
    a = sd1([1.0, 2.0])
    x = sdxl([[1.0, 2.0]], [[1.0, 2.0, 3.0]])
    for call in (lambda: merge.mean([a, x]), lambda: merge.concat([a, x]), lambda: merge.slerp(a, x, 0.5)):
        with pytest.raises(FamilyMismatchError, match="different families"):
            call()
    wide = sd1([1.0, 2.0, 3.0])
    with pytest.raises(FamilyMismatchError):
        merge.weighted_sum([a, wide], [1, 1])


def test_weights_count_and_finiteness():
    a = sd1([1.0])
    with pytest.raises(TokenSmithError, match="weights"):
        merge.weighted_sum([a, a], [1.0])
    with pytest.raises(TokenSmithError, match="finite"):
        merge.weighted_sum([a], [math.nan])
    with pytest.raises(TokenSmithError, match="at least one"):
        merge.mean([])


def test_slerp_endpoints_and_midpoint():
    a = sd1([1.0, 0.0])
    b = sd1([0.0, 2.0])
    assert torch.allclose(merge.slerp(a, b, 0.0).vectors["clip_l"], a.vectors["clip_l"])
    assert torch.allclose(merge.slerp(a, b, 1.0).vectors["clip_l"], b.vectors["clip_l"], atol=1e-6)
    mid = merge.slerp(a, b, 0.5).vectors["clip_l"][0]
    # direction at 45 degrees, norm halfway between 1 and 2
    expected = torch.tensor([1.0, 1.0]) / math.sqrt(2) * 1.5
    assert torch.allclose(mid, expected, atol=1e-6)


def test_slerp_parallel_and_padded_rows_fall_back_to_lerp():
    a = sd1([1.0, 1.0], [1.0, 0.0])
    b = sd1([2.0, 2.0])  # row 0 parallel to a's, row 1 padded with zeros
    out = merge.slerp(a, b, 0.25).vectors["clip_l"]
    assert torch.allclose(out, torch.tensor([[1.25, 1.25], [0.75, 0.0]]))
    anti = merge.slerp(sd1([1.0, 0.0]), sd1([-1.0, 0.0]), 0.5).vectors["clip_l"]
    assert torch.isfinite(anti).all() and torch.allclose(anti, torch.zeros(1, 2))


def test_scale_one_side():
    x = sdxl([[1.0, 2.0]], [[1.0, 1.0, 1.0]])
    out = merge.scale(x, 2.0, encoder="clip_g")
    assert torch.equal(out.vectors["clip_l"], torch.tensor([[1.0, 2.0]]))
    assert torch.equal(out.vectors["clip_g"], torch.tensor([[2.0, 2.0, 2.0]]))
    both = merge.scale(x, -1.0)
    assert torch.equal(both.vectors["clip_l"], torch.tensor([[-1.0, -2.0]]))
    with pytest.raises(TokenSmithError, match="clip_g"):
        merge.scale(sd1([1.0]), 2.0, encoder="clip_g")
    assert out.name == "x"


def test_match_norm_float_and_dict():
    x = sdxl([[3.0, 4.0], [0.0, 0.0]], [[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    out = merge.match_norm(x, 10.0)
    assert merge.norms(out)["clip_l"] == pytest.approx([10.0, 0.0])  # zero row stays zero
    assert merge.norms(out)["clip_g"] == pytest.approx([10.0, 10.0])
    part = merge.match_norm(x, {"clip_g": 1.0})
    assert torch.equal(part.vectors["clip_l"], x.vectors["clip_l"])
    assert merge.norms(part)["clip_g"] == pytest.approx([1.0, 1.0])
    with pytest.raises(TokenSmithError, match="clip_h"):
        merge.match_norm(x, {"clip_h": 1.0})
    with pytest.raises(TokenSmithError):
        merge.match_norm(x, -1.0)


def test_crop_pad_roll():
    a = sd1([1.0], [2.0], [3.0])
    assert merge.crop_or_pad(a, 2).vectors["clip_l"].flatten().tolist() == [1.0, 2.0]
    assert merge.crop_or_pad(a, 5).vectors["clip_l"].flatten().tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]
    assert merge.roll(a, 1).vectors["clip_l"].flatten().tolist() == [3.0, 1.0, 2.0]
    assert merge.roll(a, -1).vectors["clip_l"].flatten().tolist() == [2.0, 3.0, 1.0]
    for bad in (0, -1, MAX_VECTORS + 1):
        with pytest.raises(TokenSmithError):
            merge.crop_or_pad(a, bad)


def test_collapse_is_mean_direction_at_mean_norm():
    a = sd1([3.0, 0.0], [0.0, 1.0])
    out = merge.collapse(a).vectors["clip_l"]
    assert out.shape == (1, 2)
    assert out.norm().item() == pytest.approx(2.0)  # mean of norms 3 and 1
    direction = torch.tensor([3.0, 1.0]) / math.sqrt(10)
    assert torch.allclose(out[0] / out.norm(), direction)
    cancelled = merge.collapse(sd1([1.0, 0.0], [-1.0, 0.0])).vectors["clip_l"]
    assert torch.equal(cancelled, torch.zeros(1, 2))


def test_fp32_output_from_fp16_input():
    a = Embedding(vectors={"clip_l": torch.ones(2, 4, dtype=torch.float16)})
    assert merge.scale(a, 0.5).vectors["clip_l"].dtype == torch.float32


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=4),
    st.lists(st.floats(-3, 3, allow_nan=False), min_size=4, max_size=4),
    st.integers(0, 1000),
)
def test_weighted_sum_matches_reference(counts, weights, seed):
    g = torch.Generator().manual_seed(seed)
    embs = [Embedding(vectors={"clip_l": torch.randn(c, 3, generator=g)}) for c in counts]
    ws = weights[: len(embs)]
    out = merge.weighted_sum(embs, ws).vectors["clip_l"]
    n = max(counts)
    ref = torch.zeros(n, 3)
    for e, w in zip(embs, ws, strict=True):
        t = e.vectors["clip_l"]
        ref[: t.shape[0]] += w * t
    assert out.shape == (n, 3)
    assert torch.allclose(out, ref, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.floats(0, 1), st.integers(0, 1000))
def test_slerp_norm_is_interpolated(n, t, seed):
    g = torch.Generator().manual_seed(seed)
    a = Embedding(vectors={"clip_l": torch.randn(n, 5, generator=g)})
    b = Embedding(vectors={"clip_l": torch.randn(n, 5, generator=g) * 3})
    out = merge.slerp(a, b, t).vectors["clip_l"]
    expected = (1 - t) * a.vectors["clip_l"].norm(dim=1) + t * b.vectors["clip_l"].norm(dim=1)
    assert torch.allclose(out.norm(dim=1), expected, rtol=1e-4, atol=1e-5)
