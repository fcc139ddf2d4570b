"""What the training loss is for a model's sampling: one small piece per prediction kind.

The trainer asks the model (through comfy_adapter.training_objective, which reads the model's own
model_sampling) for its Objective and hands it the diffusion model's x0 prediction, the clean latents,
the noise levels and the loss mask; the Objective turns that into the scalar loss. eps-, v-prediction
and flow matching are here. How the x0 prediction is made (the model's noise scaling and
conditioning inputs) is the adapter's; a new kind of sampling is one more class registered in
OBJECTIVES under the kind the adapter reports for its model_sampling.
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


@dataclass(frozen=True)
class FlowMatching:
    """The flow-matching objective (kind "flow": models whose sampling is ComfyUI's CONST: SD3, Flux.1, Chroma, Z-Image), on the same inputs as
    the eps/v objectives: the model's x0 prediction, x0 and sigma.

    With xt = noise_scaling(sigma, noise, x0) = sigma * noise + (1 - sigma) * x0, the model's output is a
    velocity v and its x0 prediction xt - sigma * v; the target velocity is (xt - x0) / sigma = noise - x0.
    The loss is the velocity's mean squared error, |x0_pred - x0|^2 / sigma^2: the rectified-flow target
    SD3's and Flux's trainers use (core's TrainLoraNode takes the same error in x0 space, i.e. weighted by
    sigma^2). min-SNR weighting is an eps/v notion and is not applied here.
    """

    kind: str = "flow"

    def loss(self, x0_pred, x0, sigmas, *, mask=None, min_snr_gamma=None):
        if x0_pred.shape != x0.shape:
            raise TrainingError(f"prediction shape {list(x0_pred.shape)} does not match target {list(x0.shape)}")
        s = sigmas.to(x0.device, torch.float32).reshape(-1, *([1] * (x0.dim() - 1)))
        if s.shape[0] != x0.shape[0]:
            raise TrainingError(f"got {s.shape[0]} sigmas for a batch of {x0.shape[0]}")
        if not bool(torch.isfinite(s).all() and (s > 0).all()):
            raise TrainingError("every sigma must be a finite number > 0 (sigma 0 means no noise and no loss signal)")
        err = ((x0_pred.float() - x0.float()) / s).pow(2)
        if mask is None:
            return err.mean()
        m = torch.broadcast_to(mask.to(err.device, torch.float32), err.shape)
        return (err * m).sum() / m.sum().clamp_min(1e-12)



OBJECTIVES: dict[str, Objective] = {"eps": NoisePrediction("eps"), "v": NoisePrediction("v"), "flow": FlowMatching()}


def objective_for(kind: str) -> Objective:
    """The Objective for a prediction kind, or a TrainingError naming the kinds trained here."""
    objective = OBJECTIVES.get(kind)
    if objective is None:
        raise TrainingError(f"no training objective for {kind!r} models; TokenSmith trains {', '.join(OBJECTIVES)}")
    return objective
