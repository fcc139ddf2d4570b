"""Gradient checkpointing (comfy_adapter.checkpointed_unet) keeps fewer activations for the backward
pass and gives the same gradients; the UNet is left as it was."""

import pytest
import torch


def saved_bytes_and_grad(adapter, ms, checkpointing: bool):
    """Bytes autograd keeps for the backward pass of one denoise, and the gradient to the conditioning."""
    model = ms.model
    gen = torch.Generator().manual_seed(0)
    xt = torch.randn(2, 4, 8, 8, generator=gen)
    sigmas = torch.tensor([1.0, 5.0])
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    context = adapter.checkpointed_unet(model) if checkpointing else torch.autograd.graph.saved_tensors_hooks(
        lambda t: t, lambda t: t)
    with adapter.trainable_graph(model.model):
        dim = sum(e.width for e in adapter.encoders_of(ms.clip))  # SDXL's context is CLIP-L and CLIP-G side by side
        cond = torch.randn(2, 77, dim, generator=gen).requires_grad_()
        pooled = torch.randn(2, 1280, generator=gen)
        with context, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = adapter.denoise(model, xt, sigmas, cond, pooled, (64, 64))
        (out.float() ** 2).mean().backward()
    return sum(saved), cond.grad


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_checkpointing_keeps_less_and_changes_no_gradient(pack, models, family):
    adapter = pack("comfy_adapter")
    ms = models[family]
    plain_bytes, plain_grad = saved_bytes_and_grad(adapter, ms, checkpointing=False)
    ckpt_bytes, ckpt_grad = saved_bytes_and_grad(adapter, ms, checkpointing=True)
    print(f"{family}: activations kept {plain_bytes / 1e6:.2f} MB -> {ckpt_bytes / 1e6:.2f} MB with checkpointing")
    assert ckpt_bytes < 0.5 * plain_bytes
    assert plain_grad.abs().sum() > 0
    torch.testing.assert_close(ckpt_grad, plain_grad, rtol=1e-4, atol=1e-6)
    unet = ms.model.model.diffusion_model
    assert not any("forward" in m.__dict__ for m in unet.modules()), "a wrapped forward was left on the UNet"
