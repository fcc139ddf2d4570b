"""One training forward + backward through the adapter, as the trainer makes it, for the tests that
look at what autograd keeps (test_lean_backward, test_weight_cast_memory)."""

from __future__ import annotations

import torch

PROMPTS = ["a photo of [name] on a wooden table", "a close-up of a [name]"]


def training_step(adapter, ms, pack, before_backward=lambda: None):
    """Runs the step with `pack` as autograd's saved-tensor hook (it must return its tensor) and
    calls `before_backward` inside the training block just before backward. Returns the loss and
    the vectors' gradients."""
    gen = torch.Generator().manual_seed(0)
    encoders = adapter.encoders_of(ms.clip)
    params = {e.key: (0.3 * torch.randn(2, e.width, generator=gen)).requires_grad_() for e in encoders}
    x0 = torch.randn(2, 4, 8, 8, generator=gen)
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    with adapter.PromptRows(ms.clip, 2) as rows, adapter.trainable_graph(ms.model.model, ms.clip.cond_stage_model):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            token_sets = [adapter.fill_slots(rows.tokens(p), params, encoders) for p in PROMPTS]
            cond, pooled = adapter.encode_batch(ms.clip, token_sets)
            sigmas = adapter.sample_sigmas(ms.model, torch.tensor([0.3, 0.8]))
            xt = adapter.noisy_latents(ms.model, sigmas, noise, x0)
            pred = adapter.denoise(ms.model, xt, sigmas, cond, pooled, (64, 64))
            loss = ((pred.float() - x0) ** 2).mean()
        before_backward()
        loss.backward()
    return float(loss.detach()), {k: v.grad.clone() for k, v in params.items()}
