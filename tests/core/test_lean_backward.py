"""tokensmith.lean_backward: the same forward and input gradient as PyTorch's own ops, with less kept
for the backward pass (only the frozen weight for a convolution, only the projection for a GEGLU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokensmith.lean_backward import Conv2dInputGrad, GegluProduct, GroupNormSiLU


def saved_storages(fn):
    """fn()'s result and the storages autograd saved while it ran (each once, by address)."""
    kept = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, kept


CONV_CASES = [  # (in channels, out channels, kernel, stride, padding, dilation, groups, size)
    (4, 6, 3, (1, 1), (1, 1), (1, 1), 1, 9),
    (6, 6, 3, (2, 2), (1, 1), (1, 1), 1, 10),
    (4, 8, 1, (1, 1), (0, 0), (1, 1), 1, 7),
    (4, 8, 3, (1, 1), (2, 2), (2, 2), 2, 8),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_and_input_gradient_equal_torchs(case):
    cin, cout, k, stride, padding, dilation, groups, size = case
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(cout, cin // groups, k, k, generator=gen)
    bias = torch.randn(cout, generator=gen)
    x = torch.randn(2, cin, size, size, generator=gen)
    upstream = None
    results = []
    for lean in (False, True):
        xi = x.clone().requires_grad_()
        if lean:
            out = Conv2dInputGrad.apply(xi, weight, bias, stride, padding, dilation, groups)
        else:
            out = F.conv2d(xi, weight, bias, stride, padding, dilation, groups)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(4)) if upstream is None else upstream
        (out * upstream).sum().backward()
        results.append((out.detach(), xi.grad))
    (plain_out, plain_grad), (lean_out, lean_grad) = results
    assert torch.equal(lean_out, plain_out)
    assert torch.equal(lean_grad, plain_grad)  # the same backward kernel


def test_conv_gradient_is_exact_in_float64():
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: Conv2dInputGrad.apply(t, weight, None, (1, 1), (1, 1), (1, 1), 1), (x,))


def test_conv_keeps_only_its_weight():
    gen = torch.Generator().manual_seed(6)
    weight = torch.randn(5, 4, 3, 3, generator=gen)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    x_lean = (x * 1.0).requires_grad_()
    _, lean = saved_storages(lambda: Conv2dInputGrad.apply(x_lean, weight, None, (1, 1), (1, 1), (1, 1), 1))
    x_plain = (x * 1.0).requires_grad_()
    _, plain = saved_storages(lambda: F.conv2d(x_plain, weight, None, 1, 1))
    assert set(lean) == {weight.untyped_storage().data_ptr()}
    assert x_plain.untyped_storage().data_ptr() in plain  # torch keeps the input: what the lean one drops


def test_conv_gives_no_gradient_to_weight_or_bias():
    weight = torch.randn(2, 2, 1, 1, requires_grad=True)
    bias = torch.randn(2, requires_grad=True)
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    Conv2dInputGrad.apply(x, weight, bias, (1, 1), (0, 0), (1, 1), 1).sum().backward()
    assert x.grad is not None and weight.grad is None and bias.grad is None


def plain_geglu(h):
    value, gate = h.chunk(2, dim=-1)
    return value * F.gelu(gate)


@pytest.mark.parametrize("shape", [(2, 7, 12), (3, 10), (1, 64, 4, 40)])
def test_geglu_forward_and_gradient_equal_torchs_bitwise(shape):
    gen = torch.Generator().manual_seed(7)
    h = torch.randn(shape, generator=gen) * 3
    upstream = torch.randn(shape[:-1] + (shape[-1] // 2,), generator=gen)
    results = []
    for fn in (plain_geglu, GegluProduct.apply):
        hi = h.clone().requires_grad_()
        out = fn(hi)
        (out * upstream).sum().backward()
        results.append((out.detach(), hi.grad))
    (plain_out, plain_grad), (lean_out, lean_grad) = results
    assert torch.equal(lean_out, plain_out)
    assert torch.equal(lean_grad, plain_grad)  # the same kernels in the same order


def test_geglu_gradient_is_exact_in_float64():
    h = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    assert torch.autograd.gradcheck(GegluProduct.apply, (h,))


def test_geglu_keeps_only_the_projection():
    h = torch.randn(4, 16, generator=torch.Generator().manual_seed(9))
    h_lean = (h * 1.0).requires_grad_()
    _, lean = saved_storages(lambda: GegluProduct.apply(h_lean))
    h_plain = (h * 1.0).requires_grad_()
    _, plain = saved_storages(lambda: plain_geglu(h_plain))
    assert set(lean) == {h_lean.untyped_storage().data_ptr()}
    assert len(plain) == 2 and h_plain.untyped_storage().data_ptr() in plain  # torch keeps gelu(gate) too


def plain_norm_silu(x, groups, weight, bias, eps):
    return F.silu(F.group_norm(x, groups, weight, bias, eps))


@pytest.mark.parametrize("groups, eps", [(2, 1e-5), (4, 1e-6), (1, 0.1)])
def test_group_norm_silu_forward_and_gradient_equal_torchs_bitwise(groups, eps):
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(2, 8, 5, 6, generator=gen) * 2 + 0.5
    weight = torch.randn(8, generator=gen)
    bias = torch.randn(8, generator=gen)
    upstream = torch.randn(x.shape, generator=gen)
    results = []
    for fn in (plain_norm_silu, GroupNormSiLU.apply):
        xi = x.clone().requires_grad_()
        out = fn(xi, groups, weight, bias, eps)
        (out * upstream).sum().backward()
        results.append((out.detach(), xi.grad))
    (plain_out, plain_grad), (lean_out, lean_grad) = results
    assert torch.equal(lean_out, plain_out)
    assert torch.equal(lean_grad, plain_grad)


def test_group_norm_silu_without_affine_and_in_float64():
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: GroupNormSiLU.apply(t, 2, None, None, 1e-5), (x,))
    assert torch.equal(GroupNormSiLU.apply(x, 2, None, None, 1e-5), plain_norm_silu(x, 2, None, None, 1e-5))


def test_group_norm_silu_keeps_only_its_input_and_the_frozen_affine():
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    weight, bias = torch.randn(4, generator=gen), torch.randn(4, generator=gen)
    x_lean = (x * 1.0).requires_grad_()
    _, lean = saved_storages(lambda: GroupNormSiLU.apply(x_lean, 2, weight, bias, 1e-5))
    x_plain = (x * 1.0).requires_grad_()
    out, plain = saved_storages(lambda: plain_norm_silu(x_plain, 2, weight, bias, 1e-5))
    assert set(lean) == {t.untyped_storage().data_ptr() for t in (x_lean, weight, bias)}
    assert len([p for p in plain if p not in lean]) >= 2  # torch also keeps the norm's output (and its statistics)


def test_group_norm_silu_gives_no_gradient_to_weight_or_bias():
    weight = torch.randn(4, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    x = torch.randn(1, 4, 2, 2, requires_grad=True)
    GroupNormSiLU.apply(x, 2, weight, bias, 1e-5).sum().backward()
    assert x.grad is not None and weight.grad is None and bias.grad is None
