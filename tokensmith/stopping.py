"""When to stop training: the best validation's vectors, and two stop rules over the validation loss.

- patience: stop after ``patience`` validations without a new best (``loss < best - min_delta``), the
  classic rule; one lucky low value resets it, and a slowly improving run never stops.
- plateau ("train until learned"): stop when the mean validation loss of the last ``window``
  validations is at most ``threshold`` (a share) below the mean of the ``window`` before them.
  Comparing means of windows asks whether the curve as a whole still goes down, not whether one
  value happened to be a new best, in the spirit of DVAR (Voronov et al., 2023, "Is This Loss
  Informative?"), which stops textual inversion once a fixed-noise loss stops moving.

Either rule is off at 0; with both on, the first to fire stops the run. The validation loss is
computed with fixed noise, noise levels and pictures, so values compare across steps. A NaN or
infinite value never improves and counts as the worst value seen in a plateau window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .errors import TrainingError


def _clone_vectors(vectors):
    if isinstance(vectors, torch.Tensor):
        return vectors.detach().clone()
    if isinstance(vectors, Mapping):
        return {k: v.detach().clone() for k, v in vectors.items()}
    return [v.detach().clone() for v in vectors]


def _whole(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TrainingError(f"{name} must be a whole number >= {low}, got {value!r}")
    return value


def plateau_improvement(losses: list[float], window: int) -> float | None:
    """How much lower (as a share) the mean of the last `window` losses is than the mean of the
    `window` before them; None until there are 2 x window values. Non-finite values count as the
    worst finite value seen, so a NaN never looks like progress."""
    if len(losses) < 2 * window:
        return None
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        return 0.0
    worst = max(finite)
    recent = [v if math.isfinite(v) else worst for v in losses[-2 * window:]]
    before, last = sum(recent[:window]) / window, sum(recent[window:]) / window
    if before == 0:
        return 0.0
    return (before - last) / abs(before)


class EarlyStopper:
    """Tracks the best validation loss (its step and a clone of its vectors) and says when to stop."""

    def __init__(self, patience: int = 0, min_delta: float = 0.0, plateau_window: int = 0,
                 plateau_threshold: float = 0.01):
        self.patience = _whole(patience, "early-stopping patience", 0)
        self.plateau_window = _whole(plateau_window, "plateau window", 0)
        if not self.patience and not self.plateau_window:
            raise TrainingError("early stopping needs a rule: patience >= 1 or a plateau window >= 1")
        for name, value in (("early-stopping min_delta", min_delta), ("plateau threshold", plateau_threshold)):
            if not math.isfinite(float(value)) or value < 0:
                raise TrainingError(f"{name} must be a finite number >= 0, got {value!r}")
        self.min_delta = float(min_delta)
        self.plateau_threshold = float(plateau_threshold)
        self.best_loss = math.inf
        self.best_step: int | None = None
        self.best_vectors = None
        self.bad_evaluations = 0
        self.losses: list[float] = []

    def update(self, step: int, val_loss: float, vectors) -> bool:
        """Record one evaluation; returns True when it is the new best."""
        loss = float(val_loss)
        self.losses.append(loss)
        if math.isfinite(loss) and loss < self.best_loss - self.min_delta:
            self.best_loss = loss
            self.best_step = step
            self.best_vectors = _clone_vectors(vectors)
            self.bad_evaluations = 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def improvement(self) -> float | None:
        """The plateau rule's current measure (None while the window is not full or the rule is off)."""
        return plateau_improvement(self.losses, self.plateau_window) if self.plateau_window else None

    @property
    def reason(self) -> str | None:
        """Why to stop now, in words; None to go on."""
        if self.patience and self.bad_evaluations >= self.patience:
            return f"no new best validation loss in {self.bad_evaluations} validations (patience {self.patience})"
        gain = self.improvement
        if gain is not None and gain <= self.plateau_threshold:
            return (f"plateau: the mean of the last {self.plateau_window} validations is {gain:.2%} lower than "
                    f"that of the {self.plateau_window} before them (the rule stops at {self.plateau_threshold:.2%} "
                    "or less)")
        return None

    @property
    def should_stop(self) -> bool:
        return self.reason is not None
