"""Autograd pieces that keep less for the backward pass than PyTorch's own, with the same results.

Textual inversion trains a few input vectors through a frozen model: no weight takes a gradient,
so the backward pass only needs what carries the gradient back to the inputs. PyTorch's generic
formulas keep more than that (a convolution keeps its input for the weight's gradient, a GEGLU
keeps the gate's activation beside the projection it came from). Each function here runs the same
forward ops and computes the input's gradient with the same kernels PyTorch's backward uses; the
adapter routes the frozen modules of a training call through them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Conv2dInputGrad(torch.autograd.Function):
    """F.conv2d that keeps only the (frozen) weight: the input's gradient needs the input's shape,
    not its values. The weight and bias take no gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.geometry = (x.shape, stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.geometry
        grad_input = torch.nn.grad.conv2d_input(shape, weight, grad, stride, padding, dilation, groups)
        return grad_input, None, None, None, None, None, None


class GegluProduct(torch.autograd.Function):
    """The GEGLU product value * gelu(gate) of a projection h = [value, gate] that keeps only h:
    gelu(gate) is made again in the backward pass instead of being kept from the forward."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        value, gate = h.chunk(2, dim=-1)
        return value * F.gelu(gate)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        value, gate = h.chunk(2, dim=-1)
        grad_value = grad * F.gelu(gate)
        grad_gate = torch.ops.aten.gelu_backward(grad * value, gate)
        return torch.cat([grad_value, grad_gate], dim=-1)


class GroupNormSiLU(torch.autograd.Function):
    """silu(group_norm(x)) that keeps only x: the normalized values are made again in the backward
    pass (cheap, elementwise) instead of being kept for SiLU's backward. The weight and bias take
    no gradient."""

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps):
        ctx.save_for_backward(x, weight, bias)
        ctx.settings = (groups, eps)
        return F.silu(F.group_norm(x, groups, weight, bias, eps))

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        groups, eps = ctx.settings
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            out = F.silu(F.group_norm(x, groups, weight, bias, eps))
            (grad_input,) = torch.autograd.grad(out, x, grad)
        return grad_input, None, None, None, None
