"""What a training run shows while it runs: progress events (throttled), preview pictures sampled
with the current vectors through ComfyUI's own sampler, and the out-of-memory advice."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import comfy_adapter as adapter
from .tokensmith.train_config import TrainConfig
from .tokensmith.training_math import vector_norms

PREVIEW_CFG = 6.0


@dataclass
class TrainProgress:
    step: int
    total: int
    loss: float
    lr: float
    norms: dict[str, float]
    val_loss: float | None = None
    eta_s: float | None = None
    preview: torch.Tensor | None = None
    event: dict | None = None


def mean_norms(params: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(vector_norms(p).mean()) for k, p in params.items()}


class Reporter:
    """Progress events for one run: a step's at most every `every_s` seconds, and always with a
    validation loss and at the last step; events and previews always."""

    def __init__(self, on_progress: Callable[[TrainProgress], None], total: int, start_step: int, every_s: float):
        self.on_progress, self.total, self.start_step, self.every_s = on_progress, total, start_step, every_s
        self.started = time.monotonic()
        self.last = 0.0

    def report(self, step, loss, lr, params, val_loss=None, preview=None, event=None) -> None:
        done = step - self.start_step
        eta = (time.monotonic() - self.started) / done * (self.total - step) if done > 0 else None
        self.on_progress(TrainProgress(step, self.total, float(loss), float(lr), mean_norms(params), val_loss, eta,
                                       preview, event))

    def step_done(self, step, loss, lr, params, val_loss) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s or val_loss is not None or step == self.total:
            self.last = now
            self.report(step, loss, lr, params, val_loss)


class Previewer:
    """Preview pictures with the current vectors: cfg.preview_prompt, a fixed seed, the main bucket's size."""

    def __init__(self, model, clip, vae, rows, encoders, cfg: TrainConfig, size: tuple[int, int]):
        self.model, self.clip, self.vae, self.rows, self.encoders = model, clip, vae, rows, encoders
        self.cfg, self.size = cfg, size

    def __call__(self, params) -> torch.Tensor:
        with torch.inference_mode():
            vectors = {k: v.detach().clone() for k, v in params.items()}
            tokens = adapter.fill_slots(self.rows.tokens(self.cfg.preview_prompt), vectors, self.encoders)
            negative = self.rows.tokens(self.cfg.preview_negative)
            h, w = self.size
            # guidance-distilled models (Flux.1) sample at CFG 1, dev with its guidance input, as their workflows do
            cfg = self.cfg.preview_cfg or (1.0 if adapter.guidance_distilled(self.model) else PREVIEW_CFG)
            guidance = self.cfg.guidance if adapter.takes_guidance(self.model) else None
            return adapter.sample_preview(self.model, self.clip, self.vae, tokens, negative, self.cfg.preview_seed,
                                          self.cfg.preview_steps, cfg, h, w, guidance=guidance)


def out_of_memory_advice(cfg: TrainConfig, size: tuple[int, int], device: torch.device | None) -> str:
    """What to change after running out of memory, from what the run does not already use."""
    h, w = size
    tips = []
    if not cfg.gradient_checkpointing:
        tips.append("turn on gradient_checkpointing (it keeps a small part of the activations for a "
                    "slower step)")
    if cfg.batch_size > 1:
        tips.append(f"lower batch_size ({cfg.batch_size}; gradient_accumulation keeps the effective batch)")
    tips.append("train on smaller images (or a lower resolution)")
    if cfg.precision == "fp32":
        tips.append("use precision auto (bf16 or fp16)")
    where = "the GPU" if device is None or device.type == "cuda" else f"the {device.type} device"
    return (f"{where} ran out of memory while training (batch {cfg.batch_size}, {w}x{h} px, precision "
            f"{cfg.precision}): " + "; ".join(tips) + f". The model is unchanged and {cfg.name} was not saved.")
