"""The run state on disk: what `resume_from` continues from (NAME.state.safetensors).

One safetensors file: the vectors (`vectors.KEY`), AdamW's state (`optimizer.*`, from
training_math.optimizer_state_to_tensors), the early stopper's best vectors (`best.KEY`), and in the
metadata the optimizer layout (`optimizer`), the counters (`state`: step, lr_factor, rollbacks,
best_loss, best_step, bad_evaluations), the history so far (`history`) and the model family.
Written atomically (writer.atomic_write_bytes); the embedding file itself stays the public artefact.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import torch

from .history import TrainingHistory
from .stopping import EarlyStopper
from .training_math import NaNGuard, load_optimizer_state, optimizer_state_to_tensors
from .writer import atomic_write_bytes


@dataclass
class RunState:
    step: int
    vectors: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]
    optimizer_meta: str
    lr_factor: float = 1.0
    rollbacks: int = 0
    best_loss: float | None = None
    best_step: int | None = None
    bad_evaluations: int = 0
    best_vectors: dict[str, torch.Tensor] = field(default_factory=dict)
    history: TrainingHistory | None = None
    family: str = ""


def encode_run_state(state: RunState) -> bytes:
    import safetensors.torch

    out = {f"optimizer.{k}": v.contiguous() for k, v in state.optimizer_tensors.items()}
    out.update({f"vectors.{k}": v.detach().float().cpu().contiguous() for k, v in state.vectors.items()})
    out.update({f"best.{k}": v.float().cpu().contiguous() for k, v in state.best_vectors.items()})
    best_loss = state.best_loss if state.best_loss is not None and math.isfinite(state.best_loss) else None
    info = {"step": state.step, "lr_factor": state.lr_factor, "rollbacks": state.rollbacks, "best_loss": best_loss,
            "best_step": state.best_step, "bad_evaluations": state.bad_evaluations}
    history = (state.history or TrainingHistory()).to_json()
    return safetensors.torch.save(out, metadata={"optimizer": state.optimizer_meta, "state": json.dumps(info),
                                                 "history": history, "family": state.family})


def write_run_state(path: str, state: RunState) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_bytes(path, encode_run_state(state), overwrite=True)


def read_run_state(path: str, default_step: int = 0) -> RunState:
    """The state in a file written by write_run_state (missing counters take their defaults)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta.get("state", "{}"))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    return RunState(
        step=int(info.get("step", default_step)), vectors=part("vectors."), optimizer_tensors=part("optimizer."),
        optimizer_meta=meta["optimizer"], lr_factor=float(info.get("lr_factor", 1.0)),
        rollbacks=int(info.get("rollbacks", 0)), best_loss=info.get("best_loss"), best_step=info.get("best_step"),
        bad_evaluations=int(info.get("bad_evaluations", 0)), best_vectors=part("best."),
        history=TrainingHistory.from_json(meta["history"]) if meta.get("history") else None,
        family=meta.get("family", ""),
    )


def capture(step: int, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, guard: NaNGuard,
            stopper: EarlyStopper | None, history: TrainingHistory, family: str) -> RunState:
    """The state of a run at `step`, to write (the last step's vectors, not the best ones)."""
    tensors, meta_json = optimizer_state_to_tensors(optimizer)
    return RunState(
        step=step, vectors=params, optimizer_tensors=tensors, optimizer_meta=meta_json,
        lr_factor=guard.lr_factor, rollbacks=guard.rollbacks,
        best_loss=None if stopper is None else stopper.best_loss,
        best_step=None if stopper is None else stopper.best_step,
        bad_evaluations=0 if stopper is None else stopper.bad_evaluations,
        best_vectors=(stopper.best_vectors or {}) if stopper is not None else {},
        history=history, family=family)


def copy_vectors(params: dict[str, torch.Tensor], vectors: dict[str, torch.Tensor]) -> None:
    """Stored vectors into the trained parameters, in place (keys the file lacks are left)."""
    with torch.no_grad():
        for k, p in params.items():
            if k in vectors:
                p.copy_(vectors[k].to(p.device, p.dtype))


def restore(state: RunState, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, guard: NaNGuard,
            stopper: EarlyStopper | None, history: TrainingHistory) -> int:
    """Continue a run from a read state: vectors, optimizer, the guard's rate factor (as its last good
    snapshot), the early stopper's best and the history so far; returns the step reached."""
    copy_vectors(params, state.vectors)
    load_optimizer_state(optimizer, state.optimizer_tensors, state.optimizer_meta)
    guard.lr_factor = state.lr_factor
    guard.snapshot()
    if stopper is not None and state.best_loss is not None:
        stopper.best_loss = float(state.best_loss)
        stopper.best_step = state.best_step
        stopper.bad_evaluations = state.bad_evaluations
        stopper.best_vectors = state.best_vectors or None
    if stopper is not None and state.history is not None:
        stopper.losses = list(state.history.val_loss)  # the plateau rule's window goes on where it was
    if state.history is not None:
        for name in TrainingHistory.__dataclass_fields__:
            getattr(history, name).extend(getattr(state.history, name))
    return state.step
