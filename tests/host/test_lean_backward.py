"""Inside trainable_graph, the diffusion model's frozen convolutions, GEGLUs and ResBlock GroupNorm +
SiLU pairs keep only what the vectors' gradient needs (tokensmith.lean_backward): a training step
keeps none of the convolutions' inputs, one tensor per GEGLU instead of two and nothing for SiLU,
while the loss is the same and the vectors' gradients equal ComfyUI's own modules' (the control
routes none of them). Calls without gradients, as ComfyUI's sampler makes them, are ComfyUI's own."""

from __future__ import annotations

import pytest
import torch

from tests.host.training_step import training_step

ROUTES = ("_plain_conv2d", "_plain_geglu", "_starts_with_norm_then_silu")


def step(adapter, ms):
    """One training forward + backward as the trainer makes it. Returns the loss, the vectors'
    gradients, each saved storage (other than the model's weights) with the class of the innermost
    diffusion-model module that saved it and the tensor's number of dimensions, and the storages of the convolutions' inputs."""
    import comfy.ops

    unet = ms.model.model.diffusion_model
    stack, saved, conv_inputs, hooks = [], {}, set(), []
    for module in unet.modules():
        name = type(module).__name__
        hooks.append(module.register_forward_pre_hook(lambda m, a, name=name: stack.append(name) and None))
        hooks.append(module.register_forward_hook(lambda m, a, o: stack.pop() and None))
        if isinstance(module, comfy.ops.disable_weight_init.Conv2d):
            hooks.append(module.register_forward_pre_hook(
                lambda m, a: conv_inputs.add(a[0].untyped_storage().data_ptr()) if a[0].requires_grad else None))

    weights = {t.untyped_storage().data_ptr() for t in list(unet.parameters()) + list(unet.buffers())}

    def pack(t):  # the model's own storages (the frozen weights' aliases) cost nothing: left out
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            saved.setdefault(ptr, (stack[-1] if stack else "", t.dim()))
        return t

    try:
        loss, grads = training_step(adapter, ms, pack)
    finally:
        for h in hooks:
            h.remove()
    return loss, grads, saved, conv_inputs


def saved_by(saved: dict, kind: str, dims: int | None = None) -> int:
    return sum(1 for k, d in saved.values() if k == kind and dims in (None, d))


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_step_keeps_less_with_the_same_loss_and_gradients(pack, models, family, monkeypatch):
    adapter = pack("comfy_adapter")
    ms = models[family]
    loss, grads, saved, conv_inputs = step(adapter, ms)
    with monkeypatch.context() as m:
        for route in ROUTES:  # the control: every module on ComfyUI's own forward
            m.setattr(adapter, route, lambda module: False)
        plain_loss, plain_grads, plain_saved, plain_conv_inputs = step(adapter, ms)

    assert conv_inputs and plain_conv_inputs
    assert saved_by(plain_saved, "Conv2d") > 0  # torch keeps convolution inputs (those no other op keeps)...
    assert saved_by(saved, "Conv2d") == 0  # ...the lean path none
    # a GEGLU keeps its projection (torch also keeps gelu(gate))
    assert 0 < saved_by(saved, "GEGLU") < saved_by(plain_saved, "GEGLU")
    # SiLU keeps nothing of the feature maps (SDXL's timestep embedding, 2-D, goes through SiLU outside a ResBlock's layers)
    assert saved_by(plain_saved, "SiLU", dims=4) > 0 and saved_by(saved, "SiLU", dims=4) == 0
    assert saved_by(saved, "GroupNorm") < saved_by(plain_saved, "GroupNorm")  # a pair keeps only the norm's input
    assert len(saved) < len(plain_saved)

    assert loss == plain_loss
    for key, g in plain_grads.items():
        assert g.abs().sum() > 0, key
        torch.testing.assert_close(grads[key], g, rtol=1e-5, atol=1e-7 * float(g.abs().max()), msg=key)


def test_calls_without_gradients_are_comfyuis_own_and_nothing_is_left(pack, sd1, monkeypatch):
    adapter = pack("comfy_adapter")
    unet = sd1.model.model.diffusion_model
    routed = [m for m in unet.modules() if any(getattr(adapter, r)(m) for r in ROUTES)]
    kinds = {type(m).__name__ for m in routed}
    assert {"Conv2d", "GEGLU", "Sequential"} <= kinds
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    context = torch.randn(1, 77, sd1.clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding.weight.shape[1],
                          generator=gen)
    t = torch.tensor([500.0])
    with torch.inference_mode():
        before = unet(x, t, context=context)
    with adapter.trainable_graph(sd1.model.model, sd1.clip.cond_stage_model):
        assert all("forward" in m.__dict__ for m in routed)
        with torch.no_grad():
            no_grad = unet(x, t, context=context)
        with torch.inference_mode():
            inference = unet(x, t, context=context)
    assert not any("forward" in m.__dict__ for m in routed)
    assert torch.equal(inference, before)  # ComfyUI's sampler runs under inference mode
    with monkeypatch.context() as m:
        for route in ROUTES:
            m.setattr(adapter, route, lambda module: False)
        with adapter.trainable_graph(sd1.model.model, sd1.clip.cond_stage_model), torch.no_grad():
            no_grad_plain = unet(x, t, context=context)
    # a no-grad call in the training block (validation) is the same with or without the lean routes
    # (both use the training attention, so neither need equal the sampler's)
    assert torch.equal(no_grad, no_grad_plain)
