"""Concept recovery: latents that a hidden embedding explains, for tests and benchmarks.

A hidden embedding is put in the prompt and ComfyUI's own sampler denoises latents with it; a run
that starts from other vectors is then scored by how much of the validation-loss gap between its
init vectors and the hidden ones it closes (1.0 = as good as the hidden embedding).
"""

from __future__ import annotations

import torch

from .comfy_host import pack_import

PROMPT = "a photo of [name]"


def hidden_vectors(model_set, num_vectors: int = 2, seed: int = 123) -> dict[str, torch.Tensor]:
    """Random vectors with the vocabulary's typical norm, per encoder of the CLIP."""
    adapter = pack_import("comfy_adapter")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for enc in adapter.encoders_of(model_set.clip):
        norm = adapter.vocabulary_norms(enc)["median"]
        v = torch.randn(num_vectors, enc.width, generator=gen)
        out[enc.key] = v / v.norm(dim=-1, keepdim=True) * norm
    return out


def concept_latents(model_set, vectors: dict[str, torch.Tensor], count: int = 8, size: int = 64, steps: int = 12,
                    cfg: float = 6.0, seed: int = 0) -> torch.Tensor:
    """`count` latents sampled with the hidden vectors in PROMPT (one seed each)."""
    adapter = pack_import("comfy_adapter")
    with torch.inference_mode(), adapter.PromptRows(model_set.clip, next(iter(vectors.values())).shape[0]) as rows:
        tokens = adapter.fill_slots(rows.tokens(PROMPT), vectors, rows.encoders)
        negative = rows.tokens("")
        return torch.cat([adapter.sample_latents(model_set.model, model_set.clip, tokens, negative, seed + i, steps, cfg,
                                                 size, size) for i in range(count)])


def validation_loss_of(trainer, vectors: dict[str, torch.Tensor]) -> float:
    """A trainer's fixed validation loss for given vectors (trainer.run() must have prepared it)."""
    adapter = pack_import("comfy_adapter")
    with torch.inference_mode(False), adapter.trainable_graph(trainer.model.model, trainer.clip.cond_stage_model):
        params = {k: v.clone().to(trainer.device) for k, v in vectors.items()}
        return trainer.validation_loss(params)
