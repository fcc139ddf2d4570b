"""The training attention (comfy_adapter.training_attention, PyTorch's SDPA, chosen per call inside
trainable_graph): the loss and the vectors' gradients equal ComfyUI's configured attention's within
float tolerance, it is really what training calls, and nothing of it outlives the block: ComfyUI's
own sampling in the same process afterwards is bitwise what it was before, and no global changed."""

from __future__ import annotations

import contextlib

import pytest
import torch

PROMPTS = ["a photo of [name] on a wooden table", "a close-up of a [name]"]


class CountSDPA(torch.overrides.TorchFunctionMode):
    """Counts calls of torch's scaled_dot_product_attention while active."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_attention_modules(ms):
    """Calls of every attention module of the UNet (CrossAttention) and the text encoders (CLIPAttention)."""
    import comfy.clip_model
    import comfy.ldm.modules.attention

    kinds = (comfy.ldm.modules.attention.CrossAttention, comfy.clip_model.CLIPAttention)
    counts = {"unet": 0, "clip": 0}
    hooks = []
    for part, root in (("unet", ms.model.model.diffusion_model), ("clip", ms.clip.cond_stage_model)):
        for m in root.modules():
            if isinstance(m, kinds):
                hooks.append(m.register_forward_hook(lambda *a, part=part: counts.__setitem__(part, counts[part] + 1)))
    try:
        yield counts
    finally:
        for h in hooks:
            h.remove()


def configured_is_sdpa() -> bool:
    """Whether ComfyUI here is configured for PyTorch attention anyway (then both paths call SDPA)."""
    import comfy.ldm.modules.attention as attention
    import comfy.model_management

    return attention.optimized_attention is attention.attention_pytorch or comfy.model_management.pytorch_attention_enabled()


def loss_and_grads(adapter, ms, checkpointing: bool = False):
    """One training forward + backward the way the trainer does it: prompt rows with vector slots, the
    text encoders, the UNet's prediction, an x0 loss. Returns the loss, the vectors' gradients, and
    the SDPA calls and attention-module calls it made."""
    gen = torch.Generator().manual_seed(0)
    encoders = adapter.encoders_of(ms.clip)
    params = {e.key: (0.3 * torch.randn(2, e.width, generator=gen)).requires_grad_() for e in encoders}
    x0 = torch.randn(2, 4, 8, 8, generator=gen)
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    u = torch.tensor([0.3, 0.8])
    ckpt = adapter.checkpointed_unet(ms.model) if checkpointing else contextlib.nullcontext()
    with adapter.PromptRows(ms.clip, 2) as rows, adapter.trainable_graph(ms.model.model, ms.clip.cond_stage_model), \
            ckpt, count_attention_modules(ms) as modules, CountSDPA() as sdpa:
        token_sets = [adapter.fill_slots(rows.tokens(p), params, encoders) for p in PROMPTS]
        cond, pooled = adapter.encode_batch(ms.clip, token_sets)
        sigmas = adapter.sample_sigmas(ms.model, u)
        xt = adapter.noisy_latents(ms.model, sigmas, noise, x0)
        pred = adapter.denoise(ms.model, xt, sigmas, cond, pooled, (64, 64))
        loss = ((pred.float() - x0) ** 2).mean()
        loss.backward()
    return float(loss.detach()), {k: v.grad.clone() for k, v in params.items()}, sdpa.calls, dict(modules)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_fast_path_equals_the_plain_path(pack, models, family, monkeypatch):
    adapter = pack("comfy_adapter")
    ms = models[family]
    fast_loss, fast_grads, fast_sdpa, modules = loss_and_grads(adapter, ms)
    with monkeypatch.context() as m:
        m.setattr(adapter, "training_attention", lambda device: None)
        plain_loss, plain_grads, plain_sdpa, plain_modules = loss_and_grads(adapter, ms)
    assert modules == plain_modules and modules["unet"] > 0 and modules["clip"] > 0
    # the fast path really runs: every attention call of the step (UNet and text encoders) is SDPA
    assert fast_sdpa == modules["unet"] + modules["clip"], (fast_sdpa, modules)
    if not configured_is_sdpa():
        assert plain_sdpa == 0, "the plain path called SDPA: the comparison would prove nothing"
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    for key, g in plain_grads.items():
        assert g.abs().sum() > 0, key
        # float rounding only: measured relative difference ~4e-6 of the gradient's norm
        assert float((fast_grads[key] - g).norm() / g.norm()) < 1e-4, key
        torch.testing.assert_close(fast_grads[key], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=key)


def test_fast_path_with_gradient_checkpointing(pack, sd1, monkeypatch):
    """Checkpointed UNet blocks train through the same attention and give the same gradients."""
    adapter = pack("comfy_adapter")
    loss, grads, sdpa, modules = loss_and_grads(adapter, sd1, checkpointing=True)
    with monkeypatch.context() as m:
        m.setattr(adapter, "training_attention", lambda device: None)
        plain_loss, plain_grads, _, _ = loss_and_grads(adapter, sd1, checkpointing=True)
    # the module hooks also see each UNet block run again in the backward pass; the function mode does
    # not see that recomputation, but torch's checkpoint checks that it saves the same tensors as the
    # forward did (an attention other than the forward's would fail that check)
    assert sdpa == modules["unet"] // 2 + modules["clip"], (sdpa, modules)
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    torch.testing.assert_close(grads["clip_l"], plain_grads["clip_l"], rtol=1e-4,
                               atol=1e-5 * float(plain_grads["clip_l"].abs().max()))


def test_training_uses_sdpa_on_this_device(pack, sd1):
    import comfy.ldm.modules.attention as attention

    adapter = pack("comfy_adapter")
    assert adapter.training_attention(adapter.training_device(sd1.model)) is attention.attention_pytorch
    assert adapter.check_host() == []


def host_globals():
    """Every plain value among ComfyUI's model-management and attention module globals."""
    import comfy.ldm.modules.attention as attention
    import comfy.model_management as mm

    def plain(mod):
        return {k: v for k, v in vars(mod).items()
                if not k.startswith("__") and (callable(v) or isinstance(v, (bool, int, float, str, type(None), torch.dtype,
                                                                               torch.device)))}

    return {"mm": plain(mm), "attention": plain(attention),
            "registered": dict(attention.REGISTERED_ATTENTION_FUNCTIONS)}


def sample(ms, text: str = "a photo of a red ring on a table"):
    """ComfyUI's own KSampler path, under inference mode as ComfyUI runs nodes."""
    import nodes

    with torch.inference_mode():
        (pos,) = nodes.CLIPTextEncode().encode(ms.clip, text)
        (neg,) = nodes.CLIPTextEncode().encode(ms.clip, "blurry")
        latent = {"samples": torch.zeros(2, 4, 8, 8)}
        (out,) = nodes.common_ksampler(ms.model, 1234, 3, 6.0, "euler", "normal", pos, neg, latent)
        return out["samples"].clone()


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_sampling_after_training_is_bitwise_as_before(pack, models, family, embeddings_dir):
    ms = models[family]
    adapter = pack("comfy_adapter")
    TrainConfig = pack("tokensmith.train_config").TrainConfig
    Trainer = pack("trainer").Trainer
    unet = ms.model.model.diffusion_model
    before_globals = host_globals()
    before_hooks = dict(unet._forward_pre_hooks)
    before_options = repr(ms.model.model_options)
    before = sample(ms)
    with CountSDPA() as sdpa:
        sample(ms)
    sampling_sdpa = sdpa.calls

    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(name=f"fast-attention-{family}", init_text="*", num_vectors=2, steps=3, validate_every=2)
    with CountSDPA() as sdpa, torch.inference_mode():
        Trainer(ms.model, ms.clip, ms.vae, images, cfg, overwrite=True).run()
    assert sdpa.calls > sampling_sdpa, "training did not use the training attention"

    # inside the block, a sampler run (inference mode, as ComfyUI runs it) keeps ComfyUI's attention
    with adapter.trainable_graph(ms.model.model, ms.clip.cond_stage_model):
        inside = sample(ms)
    after = sample(ms)
    with CountSDPA() as sdpa:
        sample(ms)
    assert torch.equal(inside, before), float((inside - before).abs().max())
    assert torch.equal(after, before), float((after - before).abs().max())
    assert sdpa.calls == sampling_sdpa, "sampling after training calls another attention"
    assert host_globals() == before_globals
    assert dict(unet._forward_pre_hooks) == before_hooks
    assert repr(ms.model.model_options) == before_options
    import comfy.clip_model

    layers = [m for m in ms.clip.cond_stage_model.modules() if isinstance(m, comfy.clip_model.CLIPLayer)]
    assert layers and not any("forward" in m.__dict__ for m in layers)


def test_other_threads_keep_the_configured_attention(pack, sd1):
    """A forward from another thread while a training block is open (not inference mode) is not
    switched: the choice belongs to the training call, not to the shared modules."""
    import threading

    adapter = pack("comfy_adapter")
    seen = {}

    def other():
        with torch.inference_mode(False), torch.no_grad(), CountSDPA() as sdpa:
            xt = torch.randn(1, 4, 8, 8)
            cond = torch.randn(1, 77, 768)
            adapter.denoise(sd1.model, xt, torch.tensor([2.0]), cond, None, (64, 64))
        seen["calls"] = sdpa.calls

    with adapter.trainable_graph(sd1.model.model, sd1.clip.cond_stage_model):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    if not configured_is_sdpa():
        assert seen["calls"] == 0
