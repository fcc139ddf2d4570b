"""Pure pieces of the textual-inversion training loop (torch only, no ComfyUI).

- :func:`loss_weights` / :func:`diffusion_loss`: turn an x0-space error into eps- or v-MSE, with an
  optional min-SNR-gamma weight. Parametrisation (ComfyUI's, sigma_data = 1):
  ``x_t = x0 + sigma * eps``, ``eps_pred = (x_t - x0_pred) / sigma``, so
  ``|eps_pred - eps|^2 = |x0_pred - x0|^2 / sigma^2`` and
  ``|v_pred - v|^2 = |x0_pred - x0|^2 * (sigma^2 + 1) / sigma^2``; ``SNR = 1 / sigma^2``.
- :class:`NormControl` and :func:`vector_norms`: keep vector norms in range after each step.
- :class:`NaNGuard`: roll back to the last good vectors and optimizer state on NaN/inf.
- :func:`spread_init_vectors`: A1111's way of spreading init-text tokens over n vectors.
- :func:`make_optimizer`, :func:`optimizer_state_to_tensors`, :func:`tensors_to_optimizer_state`:
  AdamW and a pickle-free form of its state (tensors for safetensors + a JSON string).
- :func:`smooth`: an exponential moving average for loss curves.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import torch

from .errors import TrainingError

PREDICTIONS = ("eps", "v", "x0")
_PREDICTION_ALIASES = {"epsilon": "eps", "v_prediction": "v", "eps": "eps", "v": "v", "x0": "x0"}


# ---------------------------------------------------------------- loss


def _prediction(prediction: str) -> str:
    key = _PREDICTION_ALIASES.get(str(prediction).lower())
    if key is None:
        raise TrainingError(f"unknown prediction type {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    return key


def loss_weights(sigmas: torch.Tensor, prediction: str = "eps", min_snr_gamma: float | None = None) -> torch.Tensor:
    """Per-sample weights ``w`` such that ``w * |x0_pred - x0|^2`` is the chosen training loss.

    ``prediction``: "eps" (eps-MSE, weight 1/sigma^2), "v" (v-MSE, (sigma^2+1)/sigma^2) or "x0" (1).
    ``min_snr_gamma``: multiply by min(SNR, gamma)/SNR for eps, min(SNR, gamma)/(SNR+1) for v and
    min(SNR, gamma) for x0; all three then equal ``min(SNR, gamma) * |x0_pred - x0|^2``.
    Returns fp32 weights of shape [batch] (sigmas of shape [batch] or [batch, 1, ...]).
    """
    kind = _prediction(prediction)
    s = sigmas.detach().to(torch.float32).reshape(sigmas.shape[0] if sigmas.dim() else 1, -1)
    if s.shape[1] != 1:
        raise TrainingError(f"sigmas must hold one value per sample, got shape {list(sigmas.shape)}")
    s = s[:, 0]
    if not bool(torch.isfinite(s).all() and (s > 0).all()):
        raise TrainingError("every sigma must be a finite number > 0 (sigma 0 means no noise and no loss signal)")
    s2 = s * s
    snr = 1.0 / s2
    if kind == "eps":
        w = snr
    elif kind == "v":
        w = (s2 + 1.0) / s2
    else:
        w = torch.ones_like(s)
    if min_snr_gamma is not None:
        gamma = float(min_snr_gamma)
        if not math.isfinite(gamma) or gamma <= 0:
            raise TrainingError(f"min_snr_gamma must be a finite number > 0 (5 is common), got {min_snr_gamma!r}")
        clipped = torch.clamp(snr, max=gamma)
        if kind == "eps":
            w = w * clipped / snr
        elif kind == "v":
            w = w * clipped / (snr + 1.0)
        else:
            w = w * clipped
    return w


def diffusion_loss(
    x0_pred: torch.Tensor,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    prediction: str = "eps",
    mask: torch.Tensor | None = None,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """Scalar loss: weighted squared error, averaged over elements (or over the mask's weight).

    Without a mask this is ``mean_b(w_b * mean_i (x0_pred - x0)^2)``. With ``mask`` (per-element
    weights broadcast to the latents, e.g. [B, 1, H, W]) it is
    ``sum_b,i w_b * m_bi * err_bi / sum_b,i m_bi``; an all-zero mask gives 0 (the dataset stage
    should refuse such masks).
    """
    if x0_pred.shape != x0.shape:
        raise TrainingError(f"prediction shape {list(x0_pred.shape)} does not match target {list(x0.shape)}")
    err = (x0_pred.float() - x0.float()).pow(2)
    w = loss_weights(sigmas, prediction, min_snr_gamma).to(err.device)
    w = w.reshape(-1, *([1] * (err.dim() - 1)))
    if w.shape[0] != err.shape[0]:
        raise TrainingError(f"got {w.shape[0]} sigmas for a batch of {err.shape[0]}")
    if mask is None:
        return (err * w).mean()
    try:
        m = torch.broadcast_to(mask.to(device=err.device, dtype=torch.float32), err.shape)
    except RuntimeError:
        raise TrainingError(f"mask shape {list(mask.shape)} cannot be broadcast to latents {list(err.shape)}") from None
    return (err * w * m).sum() / m.sum().clamp_min(1e-12)


# ---------------------------------------------------------------- timesteps

TIMESTEP_SAMPLING = ("uniform", "stratified")
_GOLDEN = (math.sqrt(5) - 1) / 2  # the additive step that spreads a sequence most evenly over [0, 1)


def stratified_timesteps(first: int, count: int, seed: int) -> torch.Tensor:
    """Draws first .. first+count-1 of a seeded golden-ratio sequence in [0, 1): any run of n
    consecutive draws covers the interval about evenly, where independent draws leave gaps and
    clumps, so the noise levels a run trains on change less from step to step."""
    if first < 0 or count < 0:
        raise TrainingError(f"timestep draws need a non-negative start and count (got {first}, {count})")
    start = torch.Generator().manual_seed(seed)
    offset = float(torch.rand(1, generator=start))
    index = torch.arange(first, first + count, dtype=torch.float64)
    return torch.frac(offset + index * _GOLDEN).to(torch.float32)


# ---------------------------------------------------------------- norms


def vector_norms(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row of a [n, d] tensor."""
    return t.detach().float().norm(dim=-1)


class NormControl:
    """Keeps vector norms in check after each optimizer step (in place, no grad).

    ``mode``: "none"; "clamp" (rows longer than ``value`` are shortened to ``value``); "median"
    (every non-zero row is rescaled to ``value``, e.g. the vocabulary's median token norm, as
    OneTrainer does).
    """

    MODES = ("none", "clamp", "median")

    def __init__(self, mode: str = "none", value: float | None = None):
        if mode not in self.MODES:
            raise TrainingError(f"unknown norm control {mode!r}; use one of {', '.join(self.MODES)}")
        if mode != "none":
            if value is None or not math.isfinite(float(value)) or float(value) <= 0:
                raise TrainingError(f"norm control {mode!r} needs a target norm > 0, got {value!r}")
            value = float(value)
        self.mode = mode
        self.value = value

    @torch.no_grad()
    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """Apply to ``t`` [n, d] in place and return it."""
        if self.mode == "none":
            return t
        norms = t.float().norm(dim=-1, keepdim=True)
        if self.mode == "clamp":
            factor = torch.where(norms > self.value, self.value / norms.clamp_min(1e-30), torch.ones_like(norms))
        else:
            factor = torch.where(norms > 0, self.value / norms.clamp_min(1e-30), torch.ones_like(norms))
        t.mul_(factor.to(t.dtype))
        return t

    __call__ = apply


# ---------------------------------------------------------------- NaN guard


class NaNGuard:
    """Rolls training back to the last good state when the loss or gradients are not finite.

    Call ``check(loss)`` after ``backward()`` and before ``optimizer.step()``. When everything is
    finite it saves the current vectors and optimizer state as the last good state and returns
    ``"ok"``. Otherwise it restores that state: the vectors that last gave a finite loss, from before
    the optimizer step that followed (the vectors that step produced are the ones that just failed,
    or had NaN themselves), clears the gradients, multiplies :attr:`lr_factor` by ``backoff`` and returns
    ``"rolled_back"``; skip the optimizer step then and scale the scheduled rate by ``lr_factor``.
    After ``max_consecutive`` bad checks in a row it raises :class:`TrainingError`.

    :meth:`snapshot` and :meth:`restore` are that last good state's public handles: a caller that
    loads vectors and optimizer state from elsewhere (a resume) takes a snapshot of them, so a
    rollback returns there and not to the state the guard was made with.
    """

    OK = "ok"
    ROLLED_BACK = "rolled_back"
    OVERFLOW = "overflow"
    # A loss scale that starts at 2**16 reaches 2**-8 after this many halvings: past that the
    # gradients themselves are infinite, not the scaling.
    MAX_OVERFLOWS_IN_ROW = 24

    def __init__(self, params: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer,
                 max_consecutive: int = 3, backoff: float = 0.5):
        if max_consecutive < 1:
            raise TrainingError(f"max_consecutive must be at least 1, got {max_consecutive}")
        if not 0 < backoff <= 1:
            raise TrainingError(f"backoff must be in (0, 1], got {backoff}")
        self.params = list(params)
        self.optimizer = optimizer
        self.max_consecutive = max_consecutive
        self.backoff = backoff
        self.lr_factor = 1.0
        self.consecutive = 0
        self.rollbacks = 0
        self.overflows = 0
        self.overflows_in_row = 0
        self.snapshot()

    def snapshot(self) -> None:
        """Keep the current vectors and optimizer state as the last good state."""
        self._vectors = [p.detach().clone() for p in self.params]
        self._opt_state = copy.deepcopy(self.optimizer.state_dict())

    def restore(self) -> None:
        """Put the last good vectors and optimizer state back, gradients cleared."""
        with torch.no_grad():
            for p, saved in zip(self.params, self._vectors, strict=True):
                p.copy_(saved)
                p.grad = None
        self.optimizer.load_state_dict(copy.deepcopy(self._opt_state))

    def check(self, loss: torch.Tensor | float, grads: Iterable[torch.Tensor | None] | None = None,
              loss_scaled: bool = False) -> str:
        """``"ok"``, ``"rolled_back"`` (see the class docstring) or ``"overflow"``.

        ``grads`` default to the params' .grad. With ``loss_scaled`` (fp16 with a GradScaler, grads
        already unscaled) a finite loss with infinite gradients is the scale overflowing, which the
        scaler handles by skipping the step and lowering the scale: that returns ``"overflow"``, and
        neither rolls back nor lowers the learning rate.
        """
        if grads is None:
            grads = [p.grad for p in self.params]
        loss_ok = torch.isfinite(torch.as_tensor(loss)).all().cpu()
        grads_ok = [torch.isfinite(g).all().cpu() for g in grads if g is not None]
        params_ok = [torch.isfinite(p).all().cpu() for p in self.params]
        finite = torch.stack([loss_ok, *grads_ok, *params_ok]).tolist()
        if all(finite):
            self.consecutive = 0
            self.overflows_in_row = 0
            self.snapshot()
            return self.OK
        loss_and_params_ok = finite[0] and all(finite[1 + len(grads_ok):])
        if loss_scaled and loss_and_params_ok:
            self.overflows += 1
            self.overflows_in_row += 1
            if self.overflows_in_row > self.MAX_OVERFLOWS_IN_ROW:
                raise TrainingError(
                    f"fp16 gradients overflowed {self.overflows_in_row} steps in a row even at a tiny loss scale; "
                    "train in bf16 or fp32 instead (precision input)"
                )
            return self.OVERFLOW
        self.consecutive += 1
        self.rollbacks += 1
        self.lr_factor *= self.backoff
        self.restore()
        if self.consecutive >= self.max_consecutive:
            raise TrainingError(
                f"training produced NaN or infinite values {self.consecutive} steps in a row (rolled back each "
                f"time, learning rate now x{self.lr_factor:g}). Try a lower learning rate, gradient clipping "
                "(e.g. max norm 1.0), fp32 instead of fp16, norm control 'clamp', or check the images and masks"
            )
        return self.ROLLED_BACK


# ---------------------------------------------------------------- init vectors


def spread_init_vectors(token_vectors: torch.Tensor, n: int) -> torch.Tensor:
    """Spread init-text token vectors [k, d] over ``n`` vectors the way A1111's create_embedding does.

    A1111 tokenizes the init text with ``max_length=n`` (so at most the first n tokens are kept) and
    sets ``vec[i] = tokens[i * k // n]``: each token is repeated over a run of consecutive slots
    (``k=2, n=5`` gives tokens 0,0,0,1,1), not cycled. No tokens (empty init text) gives zeros.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TrainingError(f"the number of vectors must be a whole number >= 1, got {n!r}")
    if token_vectors.dim() != 2:
        raise TrainingError(f"init token vectors must be [k, width], got shape {list(token_vectors.shape)}")
    tokens = token_vectors.detach()[:n]
    k = tokens.shape[0]
    if k == 0:
        return torch.zeros(n, token_vectors.shape[1], dtype=token_vectors.dtype, device=token_vectors.device)
    index = torch.tensor([i * k // n for i in range(n)], device=tokens.device)
    return tokens.index_select(0, index).clone()


# ---------------------------------------------------------------- optimizer


def make_optimizer(params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """torch's AdamW over the trainable vectors (weight decay 0 by default, as A1111)."""
    lr = float(lr)
    if not math.isfinite(lr) or lr < 0:
        raise TrainingError(f"learning rate must be a finite number >= 0, got {lr!r}")
    if not math.isfinite(float(weight_decay)) or weight_decay < 0:
        raise TrainingError(f"weight decay must be >= 0, got {weight_decay!r}")
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=float(weight_decay))


OPTIM_FORMAT = "tokensmith.optimizer/1"
_MAX_JSON = 1_000_000
_KEY = re.compile(r"(state|group)\.(\d{1,6})\.([A-Za-z_][A-Za-z0-9_]{0,63})")


def _to_json(value, where: str):
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, where) for v in value]}
    if isinstance(value, list):
        return [_to_json(v, where) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TrainingError(f"optimizer setting {where} is {value}, which cannot be stored")
        return value
    raise TrainingError(f"optimizer setting {where} has type {type(value).__name__}, which cannot be stored")


def _from_json(value):
    if isinstance(value, dict):
        if set(value) != {"__tuple__"} or not isinstance(value["__tuple__"], list):
            raise TrainingError("optimizer state JSON has an unexpected object")
        return tuple(_from_json(v) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def optimizer_state_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """The optimizer's state as ``{"state.<i>.<name>": tensor}`` (CPU, contiguous) plus a JSON string.

    Tensors go into a safetensors file and the JSON into its metadata: no pickle anywhere.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, object] = {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            key = f"state.{int(index)}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().to("cpu").clone().contiguous()
            else:
                scalars[key] = _to_json(value, key)
    groups = []
    for gi, group in enumerate(sd["param_groups"]):
        out = {}
        for name, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[f"group.{gi}.{name}"] = value.detach().to("cpu").clone().contiguous()
                out[name] = {"__tensor__": True}
            else:
                out[name] = _to_json(value, f"param group {gi} {name}")
        groups.append(out)
    meta = {
        "format": OPTIM_FORMAT,
        "optimizer": type(optimizer).__name__,
        "param_groups": groups,
        "scalars": scalars,
    }
    return tensors, json.dumps(meta, allow_nan=False, sort_keys=True)


def tensors_to_optimizer_state(tensors: Mapping[str, torch.Tensor], meta_json: str) -> dict:
    """Rebuild a ``state_dict`` for ``optimizer.load_state_dict`` from the two parts (validated)."""
    if not isinstance(meta_json, str) or len(meta_json) > _MAX_JSON:
        raise TrainingError("optimizer state metadata is missing or too large")
    try:
        meta = json.loads(meta_json)
    except ValueError as e:
        raise TrainingError(f"optimizer state metadata is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != OPTIM_FORMAT:
        raise TrainingError(f"optimizer state has an unknown format (expected {OPTIM_FORMAT}); start without it")
    groups_in = meta.get("param_groups")
    scalars = meta.get("scalars", {})
    if not isinstance(groups_in, list) or not isinstance(scalars, dict):
        raise TrainingError("optimizer state metadata is missing its parameter groups")
    state: dict[int, dict] = {}
    group_tensors: dict[tuple[int, str], torch.Tensor] = {}
    for key, value in tensors.items():
        m = _KEY.fullmatch(key)
        if not m or not isinstance(value, torch.Tensor):
            raise TrainingError(f"unexpected entry {key!r} in optimizer state")
        kind, index, name = m.group(1), int(m.group(2)), m.group(3)
        if kind == "state":
            state.setdefault(index, {})[name] = value.clone()
        else:
            group_tensors[(index, name)] = value.clone()
    for key, value in scalars.items():
        m = _KEY.fullmatch(str(key))
        if not m or m.group(1) != "state":
            raise TrainingError(f"unexpected entry {key!r} in optimizer state metadata")
        state.setdefault(int(m.group(2)), {})[m.group(3)] = _from_json(value)
    groups = [_param_group(gi, group, group_tensors) for gi, group in enumerate(groups_in)]
    known = {i for g in groups for i in g["params"]}
    if not set(state) <= known:
        raise TrainingError("optimizer state refers to parameters that no parameter group lists")
    return {"state": state, "param_groups": groups}


def _param_group(gi: int, group, group_tensors: Mapping[tuple[int, str], torch.Tensor]) -> dict:
    # one stored parameter group: its JSON values and the tensors stored beside them
    params = group.get("params") if isinstance(group, dict) else None
    if not isinstance(params, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in params):
        raise TrainingError(f"optimizer parameter group {gi} is malformed")
    out = {}
    for name, value in group.items():
        if isinstance(value, dict) and value.get("__tensor__") is True:
            if (gi, name) not in group_tensors:
                raise TrainingError(f"optimizer parameter group {gi} is missing tensor {name!r}")
            out[name] = group_tensors[(gi, name)]
        else:
            out[name] = _from_json(value)
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta_json: str) -> None:
    """Load stored state into ``optimizer``, checking that it fits the parameters being trained."""
    sd = tensors_to_optimizer_state(tensors, meta_json)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    stored = [i for g in sd["param_groups"] for i in g["params"]]
    if len(stored) != len(params):
        raise TrainingError(
            f"stored optimizer state is for {len(stored)} tensors but this run trains {len(params)}; "
            "resume without the optimizer state"
        )
    for order, index in enumerate(stored):
        for name, value in sd["state"].get(index, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[order].shape:
                raise TrainingError(
                    f"stored optimizer state {name!r} has shape {list(value.shape)} but the vectors are "
                    f"{list(params[order].shape)}; resume without the optimizer state"
                )
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError, TypeError) as e:
        raise TrainingError(f"stored optimizer state does not fit this optimizer ({e}); resume without it") from None


# ---------------------------------------------------------------- curves


def smooth(values: Sequence[float], alpha: float = 0.9) -> list[float]:
    """Exponential moving average: ``s_i = alpha * s_{i-1} + (1 - alpha) * v_i``, ``s_0 = v_0``.

    ``alpha`` (0 <= alpha < 1) is the weight kept from the past, like TensorBoard's smoothing slider;
    0 returns the values unchanged. Non-finite values are skipped (the previous smoothed value repeats;
    before the first finite value they pass through).
    """
    alpha = float(alpha)
    if not 0 <= alpha < 1:
        raise TrainingError(f"smoothing alpha must be in [0, 1), got {alpha}")
    out: list[float] = []
    current: float | None = None
    for v in values:
        v = float(v)
        if math.isfinite(v):
            current = v if current is None else alpha * current + (1 - alpha) * v
        out.append(current if current is not None else v)
    return out
