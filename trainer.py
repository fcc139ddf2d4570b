"""Textual-inversion training on the MODEL / CLIP / VAE that ComfyUI loaded.

Data path (one direction): IMAGE batch -> checks -> VAE latents once per image -> prompt rows
with vector slots -> text encoder + diffusion loss through the adapter -> AdamW on the vectors
only -> schedule, clipping, NaN rollback, norm control -> validation / early stop, snapshots,
previews, progress -> Embedding (best or last vectors) -> atomic safetensors in models/embeddings.

Only the vectors are learned; the shared model is never written (see comfy_adapter.trainable_graph).
Every reach into ComfyUI goes through comfy_adapter.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import comfy_adapter as adapter
from .tokensmith.embedding import Embedding
from .tokensmith.errors import EmbeddingFileError, FamilyMismatchError, TrainingError
from .tokensmith.formats import read_embedding
from .tokensmith.history import TrainingHistory
from .tokensmith.names import safe_join, validate_name
from .tokensmith.schedule import parse_schedule
from .tokensmith.templates import render, shape_caption, split_captions, template_lines
from .tokensmith.train_config import TrainConfig
from .tokensmith.training_math import (
    EarlyStopper,
    NaNGuard,
    NormControl,
    diffusion_loss,
    load_optimizer_state,
    make_optimizer,
    optimizer_state_to_tensors,
    spread_init_vectors,
    vector_norms,
)
from .tokensmith.writer import atomic_write_bytes, save_embedding

STATE_SUBFOLDER = "tokensmith_state"  # resume state lives in ComfyUI's output folder, never next to embeddings
PROGRESS_EVERY_S = 0.5
MAX_LEARNING_RATE = 1000.0  # beyond this AdamW's step size overflows float32 within a few steps
LATENT_SCALE = 8  # pixels per latent along each side (the VAE of every family trained here)
VALIDATION_BATCHES = 4  # validation runs this many training batches per forward pass (no gradients kept)
# torch.OutOfMemoryError (any device) is torch 2.5+; older hosts raise the CUDA one
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


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


@dataclass
class TrainResult:
    embedding: Embedding
    history: TrainingHistory
    path: str
    previews: list[torch.Tensor] = field(default_factory=list)
    best_step: int | None = None
    stopped_early: bool = False
    steps_done: int = 0


def state_path(name: str) -> str:
    """Where the optimizer state for `name` is kept (ComfyUI's output folder)."""
    return str(safe_join(os.path.join(adapter.output_folder(), STATE_SUBFOLDER), validate_name(name) + ".state.safetensors"))


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    # Each step draws from its own seeded generator, so a resumed run sees the same data and noise.
    return (seed * 1_000_003 + step * 7_919 + salt) % (2**63)


class Trainer:
    def __init__(self, model, clip, vae, images: torch.Tensor | None, config: TrainConfig, *,
                 masks: torch.Tensor | None = None, latents: torch.Tensor | None = None, captions: str = "",
                 resume_from: str = "", overwrite: bool = False,
                 on_progress: Callable[[TrainProgress], None] | None = None):
        self.model, self.clip, self.vae = model, clip, vae
        self.cfg = config.validate()
        self.overwrite = overwrite
        self.on_progress = on_progress or (lambda p: None)
        self.given_latents = None
        self.images = None
        if latents is not None:
            # Precomputed latents (e.g. from VAEEncode) replace the images; the VAE is not needed.
            self.given_latents = self._check_latents(latents)
            count, _, h, w = self.given_latents.shape
            self.pixel_size = (int(h) * LATENT_SCALE, int(w) * LATENT_SCALE)
        elif vae is None:
            raise TrainingError("connect a VAE (it encodes the images once), or give latents instead of images")
        else:
            self.images, masks = self._check_images(images, masks)
            count = self.images.shape[0]
            self.pixel_size = (int(self.images.shape[1]), int(self.images.shape[2]))
        self.masks = self._check_masks(masks, count, self.pixel_size)
        self.captions = split_captions(captions, count)
        self.templates = template_lines(self.cfg.template, self.cfg.custom_template)
        self.schedule = parse_schedule(self.cfg.learning_rate, self.cfg.steps, self.cfg.lr_warmup_steps,
                                       self.cfg.schedule_shape())
        top_rate = max([r for r, _ in self.schedule.points] + [self.schedule.floor])
        if top_rate > MAX_LEARNING_RATE:
            raise TrainingError(
                f"learning rate {top_rate:g} is far too large (textual inversion works around 1e-3 .. 5e-2; "
                f"the limit is {MAX_LEARNING_RATE:g})"
            )
        self.family = self._check_family()
        self.prediction = adapter.prediction_type(model)
        self.encoders = adapter.encoders_of(clip)
        self.resume_from = resume_from.strip()
        self.resume_name: str | None = None  # the resumed embedding's name, without extension
        self.resume_path = self._check_resume() if self.resume_from else None
        self._check_targets()

    # ---------------------------------------------------------------- checks (cheap, before any work)

    def _check_images(self, images, masks):
        """The images, checked and (with crop_to_multiple_of_8) centre-cropped, and the masks cropped alike."""
        if images is None or not torch.is_tensor(images) or images.dim() != 4 or images.shape[0] == 0:
            raise TrainingError("no images: connect an IMAGE batch with at least one picture (e.g. from Load Image or a dataset loader)")
        if images.shape[-1] < 3:
            raise TrainingError(f"images need 3 colour channels, got {images.shape[-1]}")
        if not torch.isfinite(images).all():
            raise TrainingError("the images contain NaN or infinite values: check the nodes that produce them")
        h, w = images.shape[1], images.shape[2]
        if h % 8 or w % 8:
            if not self.cfg.crop_to_multiple_of_8:
                raise TrainingError(
                    f"image size {w}x{h} is not a multiple of 8 (the VAE's scale): resize or crop the images, "
                    "or turn on crop_to_multiple_of_8"
                )
            h, w = h - h % 8, w - w % 8
            if h == 0 or w == 0:
                raise TrainingError("images are smaller than 8 pixels")
            top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
            if masks is not None and tuple(masks.shape[-2:]) == tuple(images.shape[1:3]):
                masks = masks[..., top:top + h, left:left + w]  # the same crop, so masks stay aligned
            images = images[:, top:top + h, left:left + w]
        return images, masks

    @staticmethod
    def _check_masks(masks, count: int, pixel_size: tuple[int, int]):
        """One mask per picture at the pictures' pixel size (one mask for all is repeated), or None."""
        if masks is None:
            return None
        if masks.dim() == 2:
            masks = masks.unsqueeze(0)
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != tuple(pixel_size) or masks.shape[0] not in (1, count):
            raise TrainingError(
                f"mask shape {list(masks.shape)} does not fit images {[count, *pixel_size]}: give one mask per "
                "image (or one for all) of the same height and width"
            )
        if not torch.isfinite(masks).all() or (masks < 0).any():
            raise TrainingError("masks must be finite and non-negative (they weight the loss per pixel)")
        if masks.shape[0] == 1:
            masks = masks.expand(count, -1, -1)
        if (masks.flatten(1).sum(1) == 0).any():
            raise TrainingError("a mask is all zero: that image would teach nothing; fix or remove it")
        return masks

    def _check_latents(self, latents) -> torch.Tensor:
        samples = latents["samples"] if isinstance(latents, dict) else latents
        if not torch.is_tensor(samples) or samples.dim() != 4 or samples.shape[0] == 0:
            raise TrainingError("latents must be a LATENT batch [B, C, H, W] with at least one item")
        if not torch.isfinite(samples).all():
            raise TrainingError("the latents contain NaN or infinite values")
        return samples

    def _check_family(self) -> str:
        model_fam = adapter.model_family(self.model)
        clip_fam = adapter.clip_family(self.clip)
        if model_fam == "unknown" or clip_fam not in ("sd1", "sd2", "sdxl"):
            raise FamilyMismatchError(
                f"TokenSmith trains SD1.x, SD2.x and SDXL embeddings; this MODEL is {model_fam!r} and its CLIP {clip_fam!r}"
            )
        if model_fam != clip_fam:
            raise FamilyMismatchError(
                f"MODEL is {model_fam} but CLIP is {clip_fam}: connect the MODEL and CLIP from the same checkpoint loader"
            )
        return model_fam

    def _check_resume(self) -> str:
        """Find and check the embedding to resume from (header only), before any expensive work."""
        from .tokensmith.formats import read_header

        stem, ext = os.path.splitext(self.resume_from)
        if ext.lower() not in (".safetensors", ".pt", ".bin"):
            stem, ext = self.resume_from, ""
        self.resume_name = validate_name(stem)
        candidates = [self.resume_from] if ext else [stem + e for e in (".safetensors", ".pt", ".bin")]
        path = next((p for c in candidates if (p := adapter.embedding_path(c, refuse_outside=True)) is not None), None)
        if path is None:
            raise TrainingError(f"resume_from: no embedding named {self.resume_from!r} in the embeddings folders")
        # the only check of the file's shapes: _load_resume copies its vectors as they are
        header = read_header(path)
        wanted = {e.key: (self.cfg.num_vectors, e.width) for e in self.encoders}
        shapes = header.get("encoders", {})
        if {k: tuple(v) for k, v in shapes.items()} != wanted:
            raise FamilyMismatchError(
                f"resume_from {self.resume_from!r} holds {shapes} (family {header.get('family')}), but this run "
                f"trains {sorted(wanted)} with num_vectors={self.cfg.num_vectors}: match num_vectors and the model family"
            )
        return path

    def _check_targets(self) -> None:
        folder = adapter.primary_embedding_folder()
        target = safe_join(folder, validate_name(self.cfg.name) + ".safetensors")
        if target.exists() and not self.overwrite and self.resume_name != self.cfg.name:
            raise EmbeddingFileError(target, "an embedding with this name exists: turn on overwrite, or choose another name")

    # ---------------------------------------------------------------- data

    def _prepare_latents(self) -> None:
        """The run's training data, from the checked inputs (which stay as given: a second run sees the same)."""
        images, masks, captions = self.images, self.masks, self.captions
        if self.cfg.flip:
            images = None if images is None else torch.cat([images, images.flip(2)])
            masks = None if masks is None else torch.cat([masks, masks.flip(2)])
            captions = captions * 2
        self.train_captions = captions
        if self.given_latents is not None:
            mean = self.given_latents
            if self.cfg.flip:
                mean = torch.cat([mean, mean.flip(3)])
            std = torch.zeros_like(mean)
        else:
            mean, std = adapter.encode_distribution(self.vae, images,
                                                    spread=self.cfg.latent_sampling != "deterministic")
        with torch.inference_mode(False):
            self.latent_mean = mean.clone().float()
            self.latent_std = std.clone().float()
            if self.cfg.latent_sampling == "once":
                gen = torch.Generator().manual_seed(_step_seed(self.cfg.seed, 0, 1))
                self.latent_mean = self.latent_mean + self.latent_std * torch.randn(mean.shape, generator=gen)
            self.latent_masks = None
            if masks is not None:
                m = masks.clone().float().unsqueeze(1)
                self.latent_masks = torch.nn.functional.interpolate(m, size=mean.shape[-2:], mode="area")

    def _latents(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = self.latent_mean[idx]
        if self.cfg.latent_sampling == "random":
            x = x + self.latent_std[idx] * torch.randn(x.shape, generator=gen)
        return adapter.process_latents_in(self.model, x.to(self.device))

    def _prompt(self, image_index: int, rng: random.Random, shaped: bool = True) -> str:
        template = self.templates[rng.randrange(len(self.templates))]
        caption = self.train_captions[image_index]
        if shaped:
            caption = shape_caption(caption, rng, self.cfg.shuffle_tags, self.cfg.tag_dropout)
        return render(template, caption)

    # ---------------------------------------------------------------- vectors

    def _init_vectors(self) -> dict[str, torch.Tensor]:
        tokens = adapter.text_to_vectors(self.clip, self.cfg.init_text)
        return {k: spread_init_vectors(v, self.cfg.num_vectors) for k, v in tokens.items()}

    def _norm_control(self) -> dict[str, NormControl]:
        out = {}
        for enc in self.encoders:
            if self.cfg.norm_mode == "none":
                out[enc.key] = NormControl("none")
                continue
            norms = vector_norms(adapter.token_table(enc))
            if self.cfg.norm_mode == "median":
                out[enc.key] = NormControl("median", float(norms.median()))
            else:
                out[enc.key] = NormControl("clamp", self.cfg.max_norm or float(norms.max()))
        return out

    # ---------------------------------------------------------------- maths

    def _autocast(self):
        precision = self.cfg.precision
        device_type = self.device.type
        if precision == "auto":
            precision = "fp32" if device_type == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        if precision == "fp32":
            return contextlib.nullcontext(), None
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        # fp16's narrow range needs loss scaling on any device (torch has a CPU GradScaler too)
        scaler = torch.amp.GradScaler(device_type) if dtype == torch.float16 else None
        return torch.autocast(device_type=device_type, dtype=dtype), scaler

    def _loss(self, params, prompts: list[str], idx: torch.Tensor, gen: torch.Generator,
              u: torch.Tensor | None = None, noise: torch.Tensor | None = None, weighted: bool = True) -> torch.Tensor:
        token_sets = [adapter.fill_slots(self.rows.tokens(prompt), params, self.encoders) for prompt in prompts]
        cond, pooled = adapter.encode_batch(self.clip, token_sets)
        cond = cond.to(self.device)
        pooled = None if pooled is None else pooled.to(self.device)
        x0 = self._latents(idx, gen)
        if u is None:
            u = torch.rand(len(idx), generator=gen)
        if noise is None:
            noise = torch.randn(x0.shape, generator=gen)
        sigmas = adapter.sample_sigmas(self.model, u).to(self.device)
        xt = adapter.noisy_latents(self.model, sigmas, noise.to(self.device), x0)

        x0_pred = adapter.denoise(self.model, xt, sigmas, cond, pooled, self.pixel_size)
        mask = None if self.latent_masks is None else self.latent_masks[idx].to(self.device)
        return diffusion_loss(x0_pred.float(), x0.float(), sigmas, self.prediction, mask=mask,
                              min_snr_gamma=(self.cfg.min_snr_gamma or None) if weighted else None)

    def _validation_set(self):
        gen = torch.Generator().manual_seed(_step_seed(self.cfg.seed, 0, 2))
        rng = random.Random(_step_seed(self.cfg.seed, 0, 3))
        count = self.cfg.validation_samples
        n_images = self.latent_mean.shape[0]
        idx = torch.arange(count) % n_images
        prompts = [self._prompt(int(i), rng, shaped=False) for i in idx]
        u = (torch.arange(count, dtype=torch.float32) + 0.5) / count  # spread evenly over the noise levels
        noise = torch.randn((count, *self.latent_mean.shape[1:]), generator=gen)
        return idx, prompts, u, noise

    def validation_loss(self, params) -> float:
        idx, prompts, u, noise = self.val_set
        total = 0.0
        # no activations are kept without gradients, so validation runs a few training batches at once
        bs = max(1, self.cfg.batch_size) * VALIDATION_BATCHES
        with torch.no_grad():
            for start in range(0, len(idx), bs):
                sl = slice(start, start + bs)
                # unweighted (no min-SNR): the score must not depend on how the training loss is weighted
                loss = self._loss(params, prompts[sl], idx[sl], torch.Generator(), u=u[sl], noise=noise[sl],
                                  weighted=False)
                total += float(loss) * len(idx[sl])
        return total / len(idx)

    # ---------------------------------------------------------------- saving

    def _embedding(self, vectors: dict[str, torch.Tensor], step: int, name: str) -> Embedding:
        meta = {**self.cfg.to_metadata(), "tokensmith.family": self.family, "tokensmith.prediction": self.prediction,
                "tokensmith.comfyui": adapter.host_version()}
        vecs = {k: v.detach().float().cpu().clone() for k, v in vectors.items()}
        return Embedding(vecs, name=name, metadata=meta, source_format="tokensmith", step=step)

    def _save(self, vectors, step: int, name: str) -> str:
        emb = self._embedding(vectors, step, name)
        path = save_embedding(emb, adapter.primary_embedding_folder(), name, overwrite=True if name != self.cfg.name
                              else (self.overwrite or self.resume_name == self.cfg.name),
                              extra_metadata={"step": str(step)})
        return str(path)

    def _save_state(self, params, optimizer, step: int, guard: NaNGuard, stopper, history: TrainingHistory) -> None:
        import safetensors.torch

        tensors, meta_json = optimizer_state_to_tensors(optimizer)
        out = {f"optimizer.{k}": v.contiguous() for k, v in tensors.items()}
        out.update({f"vectors.{k}": v.detach().float().cpu().contiguous() for k, v in params.items()})
        if stopper is not None and stopper.best_vectors is not None:
            out.update({f"best.{k}": v.float().cpu().contiguous() for k, v in stopper.best_vectors.items()})
        info = {
            "step": step, "lr_factor": guard.lr_factor, "rollbacks": guard.rollbacks,
            "best_loss": None if stopper is None or not math.isfinite(stopper.best_loss) else stopper.best_loss,
            "best_step": None if stopper is None else stopper.best_step,
            "bad_evaluations": 0 if stopper is None else stopper.bad_evaluations,
        }
        data = safetensors.torch.save(out, metadata={"optimizer": meta_json, "state": json.dumps(info),
                                                     "history": history.to_json(), "family": self.family})
        path = state_path(self.cfg.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, data, overwrite=True)

    def _load_resume(self, params, optimizer, guard: NaNGuard, stopper, history: TrainingHistory) -> int:
        """Continue from an embedding (and its optimizer state when present); returns the step reached."""
        from safetensors import safe_open

        emb = read_embedding(self.resume_path)  # its shapes were checked in _check_resume
        state_file = state_path(self.resume_name)
        step = int(emb.step or 0)
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(emb.vectors[k].to(p.device, p.dtype))
        if not os.path.isfile(state_file):
            history.event(step, "resumed", optimizer_state=False)
            return step
        with safe_open(state_file, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(meta.get("state", "{}"))
        step = int(info.get("step", step))
        with torch.no_grad():
            for k, p in params.items():
                if f"vectors.{k}" in tensors:
                    p.copy_(tensors[f"vectors.{k}"].to(p.device, p.dtype))
        opt_tensors = {k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")}
        load_optimizer_state(optimizer, opt_tensors, meta["optimizer"])
        guard.lr_factor = float(info.get("lr_factor", 1.0))
        guard.snapshot()
        if stopper is not None and info.get("best_loss") is not None:
            stopper.best_loss = float(info["best_loss"])
            stopper.best_step = info.get("best_step")
            stopper.bad_evaluations = int(info.get("bad_evaluations", 0))
            best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
            stopper.best_vectors = best or None
        if meta.get("history"):
            old = TrainingHistory.from_json(meta["history"])
            for name in TrainingHistory.__dataclass_fields__:
                getattr(history, name).extend(getattr(old, name))
        history.event(step, "resumed", optimizer_state=True)
        return step

    # ---------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        try:
            return self._run()
        except OUT_OF_MEMORY:
            pass  # the error's traceback holds the step's tensors: they are freed once this block is left
        adapter.free_device_memory()
        raise TrainingError(self._out_of_memory_advice())

    def _out_of_memory_advice(self) -> str:
        cfg = self.cfg
        h, w = self.pixel_size
        device = getattr(self, "device", None)
        tips = []
        if not cfg.gradient_checkpointing:
            tips.append("turn on gradient_checkpointing (it keeps a small part of the activations for a "
                        "slower step)")
        if cfg.batch_size > 1:
            tips.append(f"lower batch_size ({cfg.batch_size}; gradient_accumulation keeps the effective batch)")
        tips.append("train on smaller images")
        if cfg.precision == "fp32":
            tips.append("use precision auto (bf16 or fp16)")
        where = "the GPU" if device is None or device.type == "cuda" else f"the {device.type} device"
        return (f"{where} ran out of memory while training (batch {cfg.batch_size}, {w}x{h} px, precision "
                f"{cfg.precision}): " + "; ".join(tips) + f". The model is unchanged and {cfg.name} was not saved.")

    def _run(self) -> TrainResult:
        cfg = self.cfg
        self.device = adapter.training_device(self.model)
        self._prepare_latents()
        self.val_set = self._validation_set() if cfg.validate_every else None
        history = TrainingHistory()
        previews: list[torch.Tensor] = []
        autocast, scaler = self._autocast()
        norm_controls = self._norm_control()
        self.rows = adapter.PromptRows(self.clip, cfg.num_vectors)
        try:
            with torch.inference_mode(False):
                init = self._init_vectors()
                params = {k: torch.nn.Parameter(v.to(self.device, torch.float32).clone()) for k, v in init.items()}
                optimizer = make_optimizer(list(params.values()), self.schedule.value(1))
                guard = NaNGuard(list(params.values()), optimizer, max_consecutive=5)
                stopper = EarlyStopper(cfg.early_stop_patience) if cfg.early_stop_patience else None
                start_step = self._load_resume(params, optimizer, guard, stopper, history) if self.resume_from else 0
            if start_step >= cfg.steps:
                raise TrainingError(f"resume_from is already at step {start_step}; set steps above that to train further")
            result = self._loop(params, optimizer, guard, stopper, norm_controls, history, previews, autocast, scaler,
                                start_step)
        finally:
            self.rows.close()
        return result

    def _loop(self, params, optimizer, guard, stopper, norm_controls, history, previews, autocast, scaler, start_step):
        cfg = self.cfg
        n_images = self.latent_mean.shape[0]
        step = start_step
        started = time.monotonic()
        last_report = 0.0
        stopped_early = False
        val_loss = None
        attempt = 0
        adapter.load_for_training(self.model, self.clip)
        if self.val_set is not None and start_step == 0:
            with torch.inference_mode(False), adapter.trainable_graph(self.model.model, self.clip.cond_stage_model):
                val_loss = self.validation_loss(params)
            history.record_validation(0, val_loss)
            if stopper is not None:
                stopper.update(0, val_loss, params)
        while step < cfg.steps:
            segment_end = cfg.steps
            if cfg.preview_every:
                segment_end = min(segment_end, (step // cfg.preview_every + 1) * cfg.preview_every)
            adapter.load_for_training(self.model, self.clip)
            checkpointing = adapter.checkpointed_unet(self.model) if cfg.gradient_checkpointing else contextlib.nullcontext()
            with torch.inference_mode(False), adapter.trainable_graph(self.model.model, self.clip.cond_stage_model), \
                    checkpointing:
                while step < segment_end:
                    next_step = step + 1
                    # a step retried after a rollback draws other data (the same batch would fail again)
                    gen = torch.Generator().manual_seed(_step_seed(cfg.seed, next_step, 101 * attempt))
                    rng = random.Random(_step_seed(cfg.seed, next_step, 5 + 101 * attempt))
                    lr = self.schedule.value(next_step) * guard.lr_factor
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    total = 0.0
                    for _ in range(cfg.gradient_accumulation):
                        adapter.throw_if_interrupted()
                        idx = torch.randint(0, n_images, (cfg.batch_size,), generator=gen)
                        prompts = [self._prompt(int(i), rng) for i in idx]
                        with autocast:
                            loss = self._loss(params, prompts, idx, gen) / cfg.gradient_accumulation
                        (scaler.scale(loss) if scaler else loss).backward()
                        total += float(loss.detach())
                    if scaler:
                        scaler.unscale_(optimizer)
                    status = guard.check(total, loss_scaled=scaler is not None)
                    if status == NaNGuard.OVERFLOW:
                        # fp16 loss-scale overflow: the scaler skips this step and halves its scale;
                        # the same batch is tried again at the lower scale
                        scaler.step(optimizer)
                        scaler.update()
                        history.event(next_step, "fp16_overflow", scale=float(scaler.get_scale()))
                        continue
                    if status != NaNGuard.OK:
                        attempt += 1
                        history.event(next_step, "rollback", lr_factor=guard.lr_factor)
                        self._report(next_step, total, lr, params, None, started, start_step, event=history.events[-1])
                        if scaler:
                            scaler.update()
                        continue  # the same step is tried again from the last good vectors
                    if cfg.clip_mode == "norm" and cfg.clip_value > 0:
                        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.clip_value)
                    elif cfg.clip_mode == "value" and cfg.clip_value > 0:
                        torch.nn.utils.clip_grad_value_(list(params.values()), cfg.clip_value)
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    for key, p in params.items():
                        norm_controls[key].apply(p.data)
                    step = next_step
                    attempt = 0
                    norms = {k: float(vector_norms(p).mean()) for k, p in params.items()}
                    history.record(step, total, lr, sum(norms.values()) / len(norms))
                    val_loss = None
                    if self.val_set is not None and (step % cfg.validate_every == 0 or step == cfg.steps):
                        val_loss = self.validation_loss(params)
                        history.record_validation(step, val_loss)
                        if stopper is not None:
                            stopper.update(step, val_loss, params)
                    if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                        snap = f"{cfg.name}-step{step:05d}"
                        self._save(params, step, snap)
                        history.event(step, "snapshot", name=snap)
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_EVERY_S or val_loss is not None or step == cfg.steps:
                        last_report = now
                        self._report(step, total, lr, params, val_loss, started, start_step)
                    if stopper is not None and stopper.should_stop:
                        stopped_early = True
                        history.event(step, "early_stop", best_step=stopper.best_step)
                        self._report(step, total, lr, params, val_loss, started, start_step, event=history.events[-1])
                        break
            if stopped_early:
                break
            if cfg.preview_every and step % cfg.preview_every == 0 and step < cfg.steps:
                image = self._preview(params)
                previews.append(image)
                self._report(step, history.loss[-1], history.learning_rate[-1], params, None, started, start_step,
                             preview=image)
        # the state that a resume continues from is the last step's, not the best one's
        self._save_state(params, optimizer, step, guard, stopper, history)
        final = params
        best_step = step
        if stopper is not None and stopper.best_vectors is not None:
            final = stopper.best_vectors
            best_step = stopper.best_step
        path = self._save(final, step, cfg.name)
        history.event(step, "saved", name=cfg.name, best_step=best_step)
        if cfg.preview_every:
            previews.append(self._preview(final))
        emb = self._embedding(final, step, cfg.name)
        return TrainResult(emb, history, path, previews, best_step, stopped_early, step - start_step)

    def _preview(self, params) -> torch.Tensor:
        with torch.inference_mode():
            vectors = {k: v.detach().clone() for k, v in params.items()}
            tokens = adapter.fill_slots(self.rows.tokens(self.cfg.preview_prompt), vectors, self.encoders)
            negative = self.rows.tokens("")
            h, w = self.pixel_size
            return adapter.sample_preview(self.model, self.clip, self.vae, tokens, negative, self.cfg.preview_seed,
                                          self.cfg.preview_steps, 6.0, h, w)

    def _report(self, step, loss, lr, params, val_loss, started, start_step, preview=None, event=None):
        done = step - start_step
        elapsed = time.monotonic() - started
        eta = elapsed / done * (self.cfg.steps - step) if done > 0 else None
        norms = {k: float(vector_norms(p).mean()) for k, p in params.items()}
        self.on_progress(TrainProgress(step, self.cfg.steps, float(loss), float(lr), norms, val_loss, eta, preview, event))
