"""What the training loss is for a model's sampling: one small piece per prediction kind.

The trainer asks the model (through comfy_adapter.training_objective, which reads the model's own
model_sampling) for its Objective and hands it the diffusion model's x0 prediction, the clean latents,
the noise levels and the loss mask; the Objective turns that into the scalar loss. eps- and
v-prediction are here. A flow-matching family plugs in with one more class (its loss on the same
inputs: the x0 prediction, x0, sigma) registered in OBJECTIVES under the kind the adapter reports
for its model_sampling; nothing else in the trainer changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .errors import TrainingError
from .training_math import diffusion_loss


class Objective(Protocol):
    kind: str  # the prediction kind the adapter reports for the model ("eps", "v", ...)

    def loss(self, x0_pred: torch.Tensor, x0: torch.Tensor, sigmas: torch.Tensor, *,
             mask: torch.Tensor | None = None, min_snr_gamma: float | None = None) -> torch.Tensor:
        """The scalar training loss for one batch (min_snr_gamma None: unweighted)."""
        ...


@dataclass(frozen=True)
class NoisePrediction:
    """eps- (SD1.x, SDXL) or v-prediction (SD2.x 768-v) models: the MSE of the model's own target,
    written in x0 space (training_math.loss_weights holds the weights and min-SNR)."""

    kind: str

    def loss(self, x0_pred, x0, sigmas, *, mask=None, min_snr_gamma=None):
        return diffusion_loss(x0_pred.float(), x0.float(), sigmas, self.kind, mask=mask, min_snr_gamma=min_snr_gamma)


OBJECTIVES: dict[str, Objective] = {"eps": NoisePrediction("eps"), "v": NoisePrediction("v")}


def objective_for(kind: str) -> Objective:
    """The Objective for a prediction kind, or a TrainingError naming the kinds trained here."""
    objective = OBJECTIVES.get(kind)
    if objective is None:
        raise TrainingError(f"no training objective for {kind!r} models; TokenSmith trains {', '.join(OBJECTIVES)}")
    return objective
