"""Every training setting in one validated object (checked before any expensive work starts)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from .embedding import MAX_VECTORS
from .errors import TrainingError
from .names import validate_name
from .training_math import TIMESTEP_SAMPLING, NormControl

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LATENT_SAMPLING = ("deterministic", "once", "random")
NORM_MODES = NormControl.MODES
CLIP_MODES = ("none", "norm", "value")
LR_SHAPES = ("auto", "steps", "cosine", "constant")
STOP_RULES = ("steps", "plateau")  # all the steps; or until the validation loss levels off, steps as the cap


@dataclass
class TrainConfig:
    name: str = "my-embedding"
    init_text: str = "*"
    num_vectors: int = 4
    template: str = "object"  # object / style / negative / custom
    custom_template: str = ""
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    steps: int = 500
    # "PEAK -> FLOOR" decays along a half cosine; A1111's "0.005:100, 1e-3:1000, 1e-5" steps as written.
    # The default starts at A1111's 5e-3 and decays (the measurements behind it: docs/performance.md).
    learning_rate: str = "5e-3 -> 5e-4"
    lr_warmup_steps: int = 0
    lr_shape: str = "auto"  # auto (cosine for "A -> B", else as written) / steps / cosine / constant
    batch_size: int = 1
    gradient_accumulation: int = 1
    seed: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    latent_sampling: str = "deterministic"
    timestep_sampling: str = "uniform"  # uniform / stratified (tokensmith.training_math)
    flip: bool = False
    clip_mode: str = "norm"
    clip_value: float = 1.0
    norm_mode: str = "none"
    max_norm: float = 0.0  # for norm_mode "clamp"; 0 = the vocabulary's largest norm
    min_snr_gamma: float = 0.0  # 0 = off
    validate_every: int = 25
    validation_samples: int = 8
    validation_split: float = 0.0  # share of the pictures kept out of training to validate on; 0 = none
    early_stop_patience: int = 0  # validations without improvement before stopping; 0 = never stop early
    # train until learned: stop when the validation loss levels off, steps being the cap (the rule's
    # window and threshold were chosen with bench.concept: docs/performance.md)
    stop_rule: str = "plateau"
    plateau_window: int = 4  # validations per window of the plateau rule (tokensmith.stopping)
    plateau_threshold: float = 0.005  # stop when a window's mean is at most this share below the one before
    save_every: int = 0
    preview_every: int = 0
    preview_prompt: str = "a photo of [name]"
    preview_seed: int = 0
    preview_steps: int = 12
    preview_cfg: float = 0.0  # 0 = the family's usual: 6, or 1 for the guidance-distilled Flux.1
    preview_negative: str = ""
    crop_to_multiple_of_8: bool = False
    # pixels of each side of the target area (pictures keep their aspect ratio, in buckets of 64);
    # 0 = auto: one-size pictures as they are, mixed sizes at the family's (training_data.FAMILY_RESOLUTION)
    resolution: int = 0
    # Flux.1 dev's guidance input while training and in previews (other models have no such input);
    # ComfyUI's default, which a prompt sampled without a FluxGuidance node gets
    guidance: float = 3.5

    def validate(self) -> TrainConfig:
        validate_name(self.name)
        if not 1 <= self.num_vectors <= MAX_VECTORS:
            raise TrainingError(f"num_vectors must be 1..{MAX_VECTORS} (one CLIP chunk), got {self.num_vectors}")
        if self.steps < 1:
            raise TrainingError("steps must be at least 1: a run of 0 steps would save the untrained init vectors")
        if self.batch_size < 1 or self.gradient_accumulation < 1:
            raise TrainingError("batch_size and gradient_accumulation must be at least 1")
        if not 0.0 <= self.tag_dropout < 1.0:
            raise TrainingError("tag_dropout must be in [0, 1)")
        for field_name, allowed in (("precision", PRECISIONS), ("latent_sampling", LATENT_SAMPLING),
                                    ("norm_mode", NORM_MODES), ("clip_mode", CLIP_MODES),
                                    ("lr_shape", LR_SHAPES), ("stop_rule", STOP_RULES),
                                    ("timestep_sampling", TIMESTEP_SAMPLING)):
            value = getattr(self, field_name)
            if value not in allowed:
                raise TrainingError(f"{field_name} must be one of {list(allowed)}, got {value!r}")
        for field_name in ("clip_value", "max_norm", "min_snr_gamma", "guidance", "preview_cfg", "plateau_threshold"):
            value = getattr(self, field_name)
            if not math.isfinite(value) or value < 0:
                raise TrainingError(f"{field_name} must be a finite number >= 0, got {value}")
        if self.validate_every < 0 or self.save_every < 0 or self.preview_every < 0 or self.early_stop_patience < 0:
            raise TrainingError("validate_every, save_every, preview_every and early_stop_patience cannot be negative")
        if self.early_stop_patience and not self.validate_every:
            raise TrainingError("early stopping needs validation: set validate_every above 0")
        if not 1 <= self.plateau_window <= 100:
            raise TrainingError(f"plateau_window must be 1..100 validations, got {self.plateau_window}")
        if self.resolution != 0 and not 64 <= self.resolution <= 4096:
            raise TrainingError(f"resolution must be 0 (auto) or 64..4096 pixels, got {self.resolution}")
        self._validate_checks_and_previews()
        return self

    def _validate_checks_and_previews(self) -> None:
        if not 1 <= self.preview_steps <= 200:
            raise TrainingError(f"preview_steps must be 1..200, got {self.preview_steps}")
        if not 1 <= self.validation_samples <= 256:
            raise TrainingError("validation_samples must be 1..256")
        if not 0.0 <= self.validation_split <= 0.5:
            raise TrainingError(f"validation_split must be 0..0.5 (a share of the pictures), got {self.validation_split}")
        if self.validation_split and not self.validate_every:
            raise TrainingError("validation_split keeps pictures out of training for validation: set validate_every "
                                "above 0, or validation_split to 0")

    @property
    def stops_at_plateau(self) -> bool:
        """The plateau rule watches the validation loss, so it is on only with validation."""
        return self.stop_rule == "plateau" and self.validate_every > 0

    def stop_rule_note(self) -> str | None:
        """What to tell the user when the stop rule asked for cannot work."""
        if self.stop_rule == "plateau" and not self.validate_every:
            return ("stop_rule 'plateau' watches the validation loss, which validate_every 0 turns off: this run "
                    "takes all its steps (set validate_every above 0 to train until learned)")
        return None

    def schedule_shape(self) -> str:
        """The schedule shape to parse learning_rate with ('auto' resolved from the text)."""
        if self.lr_shape != "auto":
            return self.lr_shape
        return "cosine" if "->" in self.learning_rate else "steps"

    def to_metadata(self) -> dict[str, str]:
        return {"tokensmith.training": json.dumps(asdict(self), sort_keys=True)}
