"""Merge maths at its edges: rows whose unit dot product rounds past +-1, exactly parallel rows,
zero targets and zero rows under a large target, the row helpers' defaults and dtypes, a single
operand, and fp32 results whatever torch's default dtype is."""

from __future__ import annotations

import pytest
import torch

from tokensmith.embedding import Embedding
from tokensmith.merge import add_rows, concat, match_norm, pad_rows, slerp, weighted_sum


def one(*row):
    return Embedding({"clip_l": torch.tensor([row], dtype=torch.float32)})


def _unit_dot(a, b):
    a, b = torch.tensor(a), torch.tensor(b)
    return float((a / a.norm() * (b / b.norm())).sum())


@pytest.mark.parametrize(("b", "t", "lerp"), [
    ((4.0, 6.0), 0.25, (2.5, 3.75)),     # same direction, twice as long
    ((-2.0, -3.0), 0.25, (1.0, 1.5)),    # opposite direction
])
def test_slerp_of_rows_whose_cosine_rounds_past_one_is_their_lerp(b, t, lerp):
    a = (2.0, 3.0)
    # in fp32 these unit vectors' dot product lands just outside [-1, 1]; acos of it would be NaN
    assert abs(_unit_dot(a, b)) > 1.0
    out = slerp(one(*a), one(*b), t).vectors["clip_l"]
    assert torch.allclose(out, torch.tensor([lerp]), atol=1e-6)


def test_slerp_of_exactly_parallel_rows_is_their_lerp():
    # cosine exactly 1, sine exactly 0: the slerp formula would divide zero by zero
    out = slerp(one(1.0, 0.0), one(2.0, 0.0), 0.5).vectors["clip_l"]
    assert torch.equal(out, torch.tensor([[1.5, 0.0]]))


def test_match_norm_to_zero_gives_zero_vectors():
    out = match_norm(one(3.0, 4.0), 0.0).vectors["clip_l"]
    assert torch.equal(out, torch.zeros(1, 2))


def test_a_zero_row_stays_zero_under_a_large_target():
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = match_norm(Embedding({"clip_l": rows}), 1e9).vectors["clip_l"]
    assert out[0].norm().item() == pytest.approx(1e9, rel=1e-6)
    assert torch.equal(out[1], torch.zeros(2))


def test_add_rows_adds_by_default_and_pads_the_shorter_side():
    a = {"clip_l": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    b = {"clip_l": torch.tensor([[10.0, 20.0]])}
    assert torch.equal(add_rows(a, b)["clip_l"], torch.tensor([[11.0, 22.0], [3.0, 4.0]]))
    assert torch.equal(add_rows(a, b, -1.0)["clip_l"], torch.tensor([[-9.0, -18.0], [3.0, 4.0]]))


def test_pad_rows_keeps_the_dtype():
    rows = {"clip_l": torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16)}
    out = pad_rows(rows, 3)["clip_l"]
    assert out.dtype == torch.bfloat16
    assert out.float().tolist() == [[1.5, -2.0], [0.0, 0.0], [0.0, 0.0]]


def test_concat_of_one_embedding_is_that_embedding_in_the_first_operands_order():
    lone = Embedding({"clip_l": torch.tensor([[1.0, 2.0]]), "clip_g": torch.tensor([[3.0, 4.0, 5.0]])})
    out = concat([lone])
    assert list(out.vectors) == ["clip_l", "clip_g"]
    assert torch.equal(out.vectors["clip_g"], torch.tensor([[3.0, 4.0, 5.0]]))
    flipped = Embedding({"clip_g": torch.ones(1, 3), "clip_l": torch.ones(1, 2)})
    assert list(concat([lone, flipped]).vectors) == ["clip_l", "clip_g"]


def test_weighted_sum_is_fp32_even_when_torch_defaults_to_float64(float64_default):
    # the module promises fp32 results; a host process may have changed torch's default dtype
    out = weighted_sum([one(1.0, 2.0), one(3.0, 4.0)], [0.5, 0.5]).vectors["clip_l"]
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[2.0, 3.0]], dtype=torch.float32))
