"""Textual-inversion training on the MODEL / CLIP / VAE that ComfyUI loaded.

Data path (one direction): pictures -> checks and buckets (tokensmith.training_data) -> VAE latents
once per picture -> prompt rows with vector slots -> text encoder + diffusion model through the
adapter -> the model's objective (tokensmith.objective: eps or v) -> AdamW on the vectors only ->
schedule, clipping, NaN rollback, norm control -> validation / early stop, snapshots, previews,
progress (trainer_report) -> Embedding (best or last vectors) -> atomic safetensors in
models/embeddings; the optimizer state for resume_from in the run-state file (tokensmith.run_state).

The parts: Trainer checks everything cheap up front (__init__), then run() sets a Session up (the
run's data, prompt rows, precision, norm controls, reporting) and advances a Run (the vectors,
optimizer, guards, history, step) one `_step` at a time. Only the vectors are learned; the shared
model is never written (see comfy_adapter.trainable_graph). Every reach into ComfyUI goes through
comfy_adapter.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import comfy_adapter as adapter
from .tokensmith import run_state
from .tokensmith.embedding import Embedding
from .tokensmith.errors import EmbeddingFileError, FamilyMismatchError, TrainingError
from .tokensmith.formats import read_embedding
from .tokensmith.history import TrainingHistory
from .tokensmith.modelspec import THUMBNAIL_KEY, thumbnail_data_url
from .tokensmith.names import safe_join, validate_name
from .tokensmith.objective import Objective
from .tokensmith.run_state import read_run_state, write_run_state
from .tokensmith.schedule import parse_schedule
from .tokensmith.stopping import EarlyStopper
from .tokensmith.templates import render, shape_caption, template_lines
from .tokensmith.train_config import TrainConfig
from .tokensmith.training_data import Bucket, TrainingData, TrainingSet, ValidationBatch
from .tokensmith.training_math import (
    NaNGuard,
    NormControl,
    make_optimizer,
    spread_init_vectors,
    stratified_timesteps,
    vector_norms,
)
from .tokensmith.writer import save_embedding
from .trainer_report import Previewer, Reporter, TrainProgress, mean_norms, out_of_memory_advice

__all__ = ["TrainProgress", "TrainResult", "Trainer", "TrainingError", "state_path"]

STATE_SUBFOLDER = "tokensmith_state"  # resume state lives in ComfyUI's output folder, never next to embeddings
PROGRESS_EVERY_S = 0.5
MAX_LEARNING_RATE = 1000.0  # beyond this AdamW's step size overflows float32 within a few steps
VALIDATION_BATCHES = 4  # validation runs this many training batches per forward pass (no gradients kept)
# torch.OutOfMemoryError (any device) is torch 2.5+; older hosts raise the CUDA one
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class TrainResult:
    embedding: Embedding
    history: TrainingHistory
    path: str
    previews: list[torch.Tensor] = field(default_factory=list)
    best_step: int | None = None
    stopped_early: bool = False
    steps_done: int = 0
    stop_reason: str | None = None  # why it stopped before its steps, in words


def state_path(name: str) -> str:
    """Where the optimizer state for `name` is kept (ComfyUI's output folder)."""
    return str(safe_join(os.path.join(adapter.output_folder(), STATE_SUBFOLDER), validate_name(name) + ".state.safetensors"))


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    # Each step draws from its own seeded generator, so a resumed run sees the same data and noise.
    return (seed * 1_000_003 + step * 7_919 + salt) % (2**63)


# ---------------------------------------------------------------- checks (cheap, before any work)


def check_schedule(cfg: TrainConfig):
    """The learning-rate schedule, parsed, with a sane top rate."""
    schedule = parse_schedule(cfg.learning_rate, cfg.steps, cfg.lr_warmup_steps, cfg.schedule_shape())
    top_rate = max([r for r, _ in schedule.points] + [schedule.floor])
    if top_rate > MAX_LEARNING_RATE:
        raise TrainingError(
            f"learning rate {top_rate:g} is far too large (textual inversion works around 1e-3 .. 5e-2; "
            f"the limit is {MAX_LEARNING_RATE:g})"
        )
    return schedule


def check_family(model, clip) -> str:
    """The family MODEL and CLIP share (sd1 / sd2 / sdxl, or a flow-matching one the adapter checks: sd3,
    flux, chroma, zimage), or a FamilyMismatchError."""
    flow = adapter.flow_family(model, clip)
    if flow is not None:
        return flow
    model_fam = adapter.model_family(model)
    clip_fam = adapter.clip_family(clip)
    if model_fam == "unknown" or clip_fam not in ("sd1", "sd2", "sdxl"):
        raise FamilyMismatchError(
            f"TokenSmith trains SD1.x, SD2.x and SDXL embeddings; this MODEL is {model_fam!r} and its CLIP {clip_fam!r}"
        )
    if model_fam != clip_fam:
        raise FamilyMismatchError(
            f"MODEL is {model_fam} but CLIP is {clip_fam}: connect the MODEL and CLIP from the same checkpoint loader"
        )
    return model_fam


def find_resume(resume_from: str, cfg: TrainConfig, encoders) -> tuple[str, str]:
    """The embedding to resume from, found and checked (header only): its name and path."""
    from .tokensmith.formats import read_header

    stem, ext = os.path.splitext(resume_from)
    if ext.lower() not in (".safetensors", ".pt", ".bin"):
        stem, ext = resume_from, ""
    name = validate_name(stem)
    candidates = [resume_from] if ext else [stem + e for e in (".safetensors", ".pt", ".bin")]
    # a name leading out of the folders (a symlinked subfolder) is the name error, not "no embedding"
    path = next((p for c in candidates if (p := adapter.embedding_path(c, refuse_outside=True)) is not None), None)
    if path is None:
        raise TrainingError(f"resume_from: no embedding named {resume_from!r} in the embeddings folders")
    # the only check of the file's shapes: a resumed run copies its vectors as they are
    header = read_header(path)
    wanted = {e.key: (cfg.num_vectors, e.width) for e in encoders}
    shapes = header.get("encoders", {})
    if {k: tuple(v) for k, v in shapes.items()} != wanted:
        raise FamilyMismatchError(
            f"resume_from {resume_from!r} holds {shapes} (family {header.get('family')}), but this run "
            f"trains {sorted(wanted)} with num_vectors={cfg.num_vectors}: match num_vectors and the model family"
        )
    return name, path


def check_target(cfg: TrainConfig, overwrite: bool, resume_name: str | None) -> None:
    """A taken name is refused unless overwrite is on (or the run resumes that embedding)."""
    target = safe_join(adapter.primary_embedding_folder(), validate_name(cfg.name) + ".safetensors")
    if target.exists() and not overwrite and resume_name != cfg.name:
        raise EmbeddingFileError(target, "an embedding with this name exists: turn on overwrite, or choose another name")


class BatchLoss:
    """The loss of one batch: its prompts through the text encoder with the vectors in their slots,
    its latents noised to the drawn levels, the diffusion model's prediction, the model's Objective."""

    def __init__(self, model, clip, encoders, objective: Objective, rows, cfg: TrainConfig, device: torch.device):
        self.model, self.clip, self.encoders, self.objective = model, clip, encoders, objective
        self.rows, self.cfg, self.device = rows, cfg, device

    def latents(self, bucket: Bucket, positions: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = bucket.mean[positions]
        if self.cfg.latent_sampling == "random":
            x = x + bucket.std[positions] * torch.randn(x.shape, generator=gen)
        return adapter.process_latents_in(self.model, x.to(self.device))

    def __call__(self, params, prompts: list[str], bucket: Bucket, positions: torch.Tensor, gen: torch.Generator,
                 u: torch.Tensor | None = None, noise: torch.Tensor | None = None, weighted: bool = True) -> torch.Tensor:
        if self.objective.kind == "flow":  # SD3, Flux, Chroma, Z-Image: their own conditioning inputs
            token_sets = [adapter.fill_slots(self.rows.tokens(prompt), params, self.encoders) for prompt in prompts]
            return self._flow_loss(token_sets, bucket, positions, gen, u, noise)
        # each distinct prompt goes through the text encoder once (a validation's samples share a few)
        row_of = {prompt: row for row, prompt in enumerate(dict.fromkeys(prompts))}
        distinct, rows = list(row_of), torch.tensor([row_of[prompt] for prompt in prompts])
        token_sets = [adapter.fill_slots(self.rows.tokens(prompt), params, self.encoders) for prompt in distinct]
        cond, pooled = adapter.encode_batch(self.clip, token_sets)
        cond = cond[rows.to(cond.device)].to(self.device)
        pooled = None if pooled is None else pooled[rows.to(pooled.device)].to(self.device)
        x0 = self.latents(bucket, positions, gen)
        if u is None:
            u = torch.rand(len(positions), generator=gen)
        if noise is None:
            noise = torch.randn(x0.shape, generator=gen)
        sigmas = adapter.sample_sigmas(self.model, u).to(self.device)
        xt = adapter.noisy_latents(self.model, sigmas, noise.to(self.device), x0)
        x0_pred = adapter.denoise(self.model, xt, sigmas, cond, pooled, bucket.size)
        mask = None if bucket.masks is None else bucket.masks[positions].to(self.device)
        return self.objective.loss(x0_pred, x0, sigmas, mask=mask,
                                   min_snr_gamma=(self.cfg.min_snr_gamma or None) if weighted else None)

    def _flow_loss(self, token_sets, bucket: Bucket, positions, gen, u, noise) -> torch.Tensor:
        # the same draws in the same order as the eps/v path; prompts encode one by one (T5 and the LLM
        # encoders give prompts different lengths), each through the model's own conditioning inputs
        x0 = adapter.latents_for_model(self.model, self.latents(bucket, positions, gen))
        if u is None:
            u = torch.rand(len(positions), generator=gen)
        if noise is None:
            noise = torch.randn(x0.shape, generator=gen)
        mask = None if bucket.masks is None else bucket.masks[positions].to(self.device)
        conditioning = adapter.encode_prompts(self.clip, token_sets)
        guidance = self.cfg.guidance if adapter.takes_guidance(self.model) else None
        sigmas = adapter.flow_sigmas(self.model, u).to(self.device)
        x0_pred = adapter.flow_prediction(self.model, x0, conditioning, sigmas, noise.reshape(x0.shape).to(self.device),
                                          guidance)
        return self.objective.loss(x0_pred, x0, sigmas, mask=mask)

    def validation(self, params, batches: list[ValidationBatch]) -> float:
        """The mean loss over a fixed validation set, without gradients."""
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                # unweighted (no min-SNR): the score must not depend on how the training loss is weighted
                loss = self(params, batch.prompts, batch.bucket, batch.positions, torch.Generator(),
                            u=batch.u, noise=batch.noise, weighted=False)
                total += float(loss) * len(batch.positions)
                count += len(batch.positions)
        return total / count


@dataclass
class Session:
    """What one run works with, set up once by run(): the data, prompt rows, precision, controls."""

    data: TrainingSet
    rows: adapter.PromptRows
    loss: BatchLoss
    autocast: contextlib.AbstractContextManager
    scaler: torch.amp.GradScaler | None
    norm_controls: dict[str, NormControl]
    reporter: Reporter
    preview: Previewer
    validation: list[ValidationBatch] | None


@dataclass
class Run:
    """The state a step advances: the vectors, their optimizer and guards, the history, the step."""

    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    guard: NaNGuard
    stopper: EarlyStopper | None
    history: TrainingHistory
    start_step: int = 0
    step: int = 0
    attempt: int = 0  # retries of the current step after a rollback (each draws other data)
    stopped_early: bool = False
    previews: list[torch.Tensor] = field(default_factory=list)


class Trainer:
    def __init__(self, model, clip, vae, images, config: TrainConfig, *, masks=None, latents=None,
                 captions: str = "", resume_from: str = "", overwrite: bool = False,
                 on_progress: Callable[[TrainProgress], None] | None = None):
        self.model, self.clip, self.vae = model, clip, vae
        self.cfg = config.validate()
        self.overwrite = overwrite
        self.on_progress = on_progress or (lambda p: None)
        if latents is not None:
            # Precomputed latents (e.g. from VAEEncode) replace the images; the VAE is not needed.
            self.data = TrainingData.from_latents(latents, masks, captions)
        elif vae is None:
            raise TrainingError("connect a VAE (it encodes the images once), or give latents instead of images")
        else:
            self.data = TrainingData.from_images(images, masks, captions, resolution=self.cfg.resolution,
                                                 family=adapter.model_family(model),
                                                 crop_to_multiple_of_8=self.cfg.crop_to_multiple_of_8)
        self.data.held_out(self.cfg.validation_split, 0)  # enough pictures to hold some out, checked early
        self.templates = template_lines(self.cfg.template, self.cfg.custom_template)
        self.schedule = check_schedule(self.cfg)
        self.family = check_family(model, clip)
        self.objective = adapter.training_objective(model)
        self.prediction = self.objective.kind
        self.encoders = adapter.encoders_of(clip)
        self.device = adapter.training_device(model)
        self.resume_from = resume_from.strip()
        # the resumed embedding's name (without extension) and file
        self.resume_name, self.resume_path = find_resume(self.resume_from, self.cfg, self.encoders) \
            if self.resume_from else (None, None)
        check_target(self.cfg, overwrite, self.resume_name)
        self.session: Session | None = None  # the last run's (validation_loss uses it afterwards)

    # ---------------------------------------------------------------- the checked inputs

    @property
    def pixel_size(self) -> tuple[int, int]:
        """The main bucket's size (previews are sampled at it)."""
        return self.data.pixel_size

    @property
    def captions(self) -> list[str]:
        return self.data.captions

    @property
    def masks(self):
        return self.data.masks

    def _one_bucket(self) -> Bucket:
        buckets = self.session.data.buckets
        if len(buckets) != 1:
            raise TrainingError(f"this run has {len(buckets)} buckets: read session.data.buckets")
        return buckets[0]

    @property
    def latent_mean(self) -> torch.Tensor:
        return self._one_bucket().mean

    @property
    def latent_std(self) -> torch.Tensor:
        return self._one_bucket().std

    @property
    def latent_masks(self) -> torch.Tensor | None:
        return self._one_bucket().masks

    # ---------------------------------------------------------------- setting a run up

    def _training_set(self) -> TrainingSet:
        """The run's data from the checked inputs (which stay as given: a second run sees the same)."""
        cfg = self.cfg
        once = torch.Generator().manual_seed(_step_seed(cfg.seed, 0, 1)) if cfg.latent_sampling == "once" else None

        def encode(pixels, spread):
            return adapter.encode_distribution(self.vae, pixels, spread=spread)

        return self.data.prepared(None if self.data.latent_input else encode, flip=cfg.flip,
                                  spread=cfg.latent_sampling != "deterministic", sample_once=once,
                                  held_out=self.data.held_out(cfg.validation_split, _step_seed(cfg.seed, 0, 4)))

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

    def _init_vectors(self) -> dict[str, torch.Tensor]:
        tokens = adapter.text_to_vectors(self.clip, self.cfg.init_text)
        return {k: spread_init_vectors(v, self.cfg.num_vectors) for k, v in tokens.items()}

    def _prompt(self, data: TrainingSet, picture: int, rng: random.Random, shaped: bool = True) -> str:
        template = self.templates[rng.randrange(len(self.templates))]
        caption = data.captions[picture]
        if shaped:
            caption = shape_caption(caption, rng, self.cfg.shuffle_tags, self.cfg.tag_dropout)
        return render(template, caption)

    def _validation_set(self, data: TrainingSet) -> list[ValidationBatch]:
        gen = torch.Generator().manual_seed(_step_seed(self.cfg.seed, 0, 2))
        rng = random.Random(_step_seed(self.cfg.seed, 0, 3))
        # no activations are kept without gradients, so validation runs a few training batches at once
        per_pass = max(1, self.cfg.batch_size) * VALIDATION_BATCHES
        return data.validation_batches(self.cfg.validation_samples, per_pass, gen,
                                       lambda n: self._prompt(data, n, rng, shaped=False))

    def _session(self, start_step: int) -> Session:
        data = self._training_set()
        rows = adapter.PromptRows(self.clip, self.cfg.num_vectors)
        autocast, scaler = self._autocast()
        reporter = Reporter(self.on_progress, self.cfg.steps, start_step, PROGRESS_EVERY_S)
        preview = Previewer(self.model, self.clip, self.vae, rows, self.encoders, self.cfg, self.pixel_size)
        validation = self._validation_set(data) if self.cfg.validate_every else None
        loss = BatchLoss(self.model, self.clip, self.encoders, self.objective, rows, self.cfg, self.device)
        return Session(data, rows, loss, autocast, scaler, self._norm_control(), reporter, preview, validation)

    def _stopper(self) -> EarlyStopper | None:
        """The stop rules asked for (patience, plateau), or None when the run takes all its steps."""
        window = self.cfg.plateau_window if self.cfg.stops_at_plateau else 0
        if not self.cfg.early_stop_patience and not window:
            return None
        return EarlyStopper(self.cfg.early_stop_patience, plateau_window=window,
                            plateau_threshold=self.cfg.plateau_threshold)

    def _new_run(self) -> Run:
        with torch.inference_mode(False):
            init = self._init_vectors()
            params = {k: torch.nn.Parameter(v.to(self.device, torch.float32).clone()) for k, v in init.items()}
            optimizer = make_optimizer(list(params.values()), self.schedule.value(1))
            guard = NaNGuard(list(params.values()), optimizer, max_consecutive=5)
            run = Run(params, optimizer, guard, self._stopper(), TrainingHistory())
            if self.resume_from:
                run.start_step = run.step = self._load_resume(run)
        if run.start_step >= self.cfg.steps:
            raise TrainingError(f"resume_from is already at step {run.start_step}; set steps above that to train further")
        return run

    def validation_loss(self, params) -> float:
        """The fixed validation set's loss for these vectors (after run() has set it up)."""
        return self.session.loss.validation(params, self.session.validation)

    # ---------------------------------------------------------------- saving

    def _embedding(self, vectors: dict[str, torch.Tensor], step: int, name: str, preview=None) -> Embedding:
        meta = {**self.cfg.to_metadata(), "tokensmith.family": self.family, "tokensmith.prediction": self.prediction,
                "tokensmith.comfyui": adapter.host_version()}
        if preview is not None:  # the last preview, as the spec's thumbnail inside the file
            meta[THUMBNAIL_KEY] = thumbnail_data_url(preview[0].detach().float().cpu().numpy())
        vecs = {k: v.detach().float().cpu().clone() for k, v in vectors.items()}
        return Embedding(vecs, name=name, metadata=meta, source_format="tokensmith", step=step)

    def _save(self, vectors, step: int, name: str, preview=None) -> str:
        emb = self._embedding(vectors, step, name, preview)
        path = save_embedding(emb, adapter.primary_embedding_folder(), name, overwrite=True if name != self.cfg.name
                              else (self.overwrite or self.resume_name == self.cfg.name),
                              extra_metadata={"step": str(step)})
        return str(path)

    def _save_state(self, run: Run) -> None:
        write_run_state(state_path(self.cfg.name), run_state.capture(run.step, run.params, run.optimizer, run.guard,
                                                                     run.stopper, run.history, self.family))

    def _load_resume(self, run: Run) -> int:
        """Continue from an embedding (and its optimizer state when present); returns the step reached."""
        emb = read_embedding(self.resume_path)  # its shapes were checked in find_resume
        state_file = state_path(self.resume_name)
        step = int(emb.step or 0)
        run_state.copy_vectors(run.params, emb.vectors)
        if not os.path.isfile(state_file):
            run.history.event(step, "resumed", optimizer_state=False)
            return step
        step = run_state.restore(read_run_state(state_file, default_step=step), run.params, run.optimizer, run.guard,
                                 run.stopper, run.history)
        run.history.event(step, "resumed", optimizer_state=True)
        return step

    # ---------------------------------------------------------------- the run

    def run(self) -> TrainResult:
        try:
            return self._run()
        except OUT_OF_MEMORY:
            pass  # the error's traceback holds the step's tensors: they are freed once this block is left
        adapter.free_device_memory()
        raise TrainingError(self._out_of_memory_advice())

    def _out_of_memory_advice(self) -> str:
        return out_of_memory_advice(self.cfg, self.pixel_size, self.device)

    def _run(self) -> TrainResult:
        run = None
        self.session = None
        try:
            run = self._new_run()
            self.session = self._session(run.start_step)
            self._train(self.session, run)
            return self._finish(self.session, run)  # its final preview still needs the prompt rows
        finally:
            if self.session is not None:
                self.session.rows.close()

    def _train(self, s: Session, run: Run) -> None:
        adapter.load_for_training(self.model, self.clip)
        if s.validation is not None and run.start_step == 0:
            with torch.inference_mode(False), adapter.training_graph(self.model, self.clip):
                self._validate(run, 0)
        while run.step < self.cfg.steps and not run.stopped_early:
            self._segment(s, run)
            if run.stopped_early:
                break
            if self.cfg.preview_every and run.step % self.cfg.preview_every == 0 and run.step < self.cfg.steps:
                image = s.preview(run.params)
                run.previews.append(image)
                s.reporter.report(run.step, run.history.loss[-1], run.history.learning_rate[-1], run.params,
                                  preview=image)

    def _segment(self, s: Session, run: Run) -> None:
        """Steps up to the next preview (or the end), in one training graph."""
        cfg = self.cfg
        end = cfg.steps
        if cfg.preview_every:
            end = min(end, (run.step // cfg.preview_every + 1) * cfg.preview_every)
        adapter.load_for_training(self.model, self.clip)
        checkpointing = adapter.checkpointed_unet(self.model, self.clip) if cfg.gradient_checkpointing \
            else contextlib.nullcontext()
        with torch.inference_mode(False), adapter.training_graph(self.model, self.clip), checkpointing:
            while run.step < end and not run.stopped_early:
                self._step(s, run)

    def _step(self, s: Session, run: Run) -> bool:
        """One optimizer step over gradient_accumulation batches; False when it must be tried again
        (fp16 overflow: the same batch at a lower scale; NaN: other data from the last good vectors)."""
        next_step = run.step + 1
        # a step retried after a rollback draws other data (the same batch would fail again)
        gen = torch.Generator().manual_seed(_step_seed(self.cfg.seed, next_step, 101 * run.attempt))
        rng = random.Random(_step_seed(self.cfg.seed, next_step, 5 + 101 * run.attempt))
        lr = self.schedule.value(next_step) * run.guard.lr_factor
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.optimizer.zero_grad(set_to_none=True)
        total = sum(self._backward(s, run, gen, rng, micro) for micro in range(self.cfg.gradient_accumulation))
        if not self._accepted(s, run, next_step, total, lr):
            return False
        self._apply(s, run)
        run.step, run.attempt = next_step, 0
        self._after_step(s, run, total, lr)
        return True

    def _backward(self, s: Session, run: Run, gen: torch.Generator, rng: random.Random, micro: int = 0) -> float:
        adapter.throw_if_interrupted()
        bucket, positions, pictures = s.data.draw(gen, self.cfg.batch_size)
        prompts = [self._prompt(s.data, n, rng) for n in pictures]
        with s.autocast:
            loss = s.loss(run.params, prompts, bucket, positions, gen,
                          u=self._timesteps(run.step, micro, len(positions))) / self.cfg.gradient_accumulation
        (s.scaler.scale(loss) if s.scaler else loss).backward()
        return float(loss.detach())

    def _timesteps(self, done_steps: int, micro: int, count: int) -> torch.Tensor | None:
        """The batch's timestep draws in [0, 1) for stratified sampling, indexed by the run's step so a
        resumed run continues the sequence; None for uniform (the loss draws from the step's generator)."""
        if self.cfg.timestep_sampling != "stratified":
            return None
        per_step = self.cfg.gradient_accumulation * self.cfg.batch_size
        return stratified_timesteps(done_steps * per_step + micro * self.cfg.batch_size, count, self.cfg.seed)

    def _accepted(self, s: Session, run: Run, next_step: int, total: float, lr: float) -> bool:
        if s.scaler:
            s.scaler.unscale_(run.optimizer)
        status = run.guard.check(total, loss_scaled=s.scaler is not None)
        if status == NaNGuard.OVERFLOW:
            # fp16 loss-scale overflow: the scaler skips this step and halves its scale;
            # the same batch is tried again at the lower scale
            s.scaler.step(run.optimizer)
            s.scaler.update()
            run.history.event(next_step, "fp16_overflow", scale=float(s.scaler.get_scale()))
            return False
        if status != NaNGuard.OK:
            run.attempt += 1
            run.history.event(next_step, "rollback", lr_factor=run.guard.lr_factor)
            s.reporter.report(next_step, total, lr, run.params, event=run.history.events[-1])
            if s.scaler:
                s.scaler.update()
            return False  # the same step is tried again from the last good vectors
        return True

    def _apply(self, s: Session, run: Run) -> None:
        """Clip the gradients, step the optimizer, keep the norms in check."""
        cfg, params = self.cfg, list(run.params.values())
        if cfg.clip_mode == "norm" and cfg.clip_value > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_value)
        elif cfg.clip_mode == "value" and cfg.clip_value > 0:
            torch.nn.utils.clip_grad_value_(params, cfg.clip_value)
        if s.scaler:
            s.scaler.step(run.optimizer)
            s.scaler.update()
        else:
            run.optimizer.step()
        for key, p in run.params.items():
            s.norm_controls[key].apply(p.data)

    def _validate(self, run: Run, step: int) -> float:
        val_loss = self.validation_loss(run.params)
        run.history.record_validation(step, val_loss)
        if run.stopper is not None:
            run.stopper.update(step, val_loss, run.params)
        return val_loss

    def _after_step(self, s: Session, run: Run, total: float, lr: float) -> None:
        """Record the step; validate, snapshot, report and stop early when due."""
        cfg, step = self.cfg, run.step
        norms = mean_norms(run.params)
        run.history.record(step, total, lr, sum(norms.values()) / len(norms))
        val_loss = None
        if s.validation is not None and (step % cfg.validate_every == 0 or step == cfg.steps):
            val_loss = self._validate(run, step)
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            snap = f"{cfg.name}-step{step:05d}"
            self._save(run.params, step, snap)
            run.history.event(step, "snapshot", name=snap)
        s.reporter.step_done(step, total, lr, run.params, val_loss)
        if run.stopper is not None and run.stopper.should_stop:
            run.stopped_early = True
            run.history.event(step, "early_stop", best_step=run.stopper.best_step, reason=run.stopper.reason)
            s.reporter.report(step, total, lr, run.params, val_loss, event=run.history.events[-1])

    def _finish(self, s: Session, run: Run) -> TrainResult:
        # the state that a resume continues from is the last step's, not the best one's
        self._save_state(run)
        final, best_step = run.params, run.step
        if run.stopper is not None and run.stopper.best_vectors is not None:
            final, best_step = run.stopper.best_vectors, run.stopper.best_step
        preview = s.preview(final) if self.cfg.preview_every else None
        if preview is not None:
            run.previews.append(preview)
        path = self._save(final, run.step, self.cfg.name, preview)
        run.history.event(run.step, "saved", name=self.cfg.name, best_step=best_step)
        emb = self._embedding(final, run.step, self.cfg.name, preview)
        reason = run.stopper.reason if run.stopped_early else None
        return TrainResult(emb, run.history, path, run.previews, best_step, run.stopped_early,
                           run.step - run.start_step, reason)
