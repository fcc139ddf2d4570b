"""The run state on disk (tokensmith.run_state): what resume_from continues from, written and read
back without a ComfyUI, continues a run exactly as if it had not stopped."""

from __future__ import annotations

import torch

from tokensmith.history import TrainingHistory
from tokensmith.run_state import capture, read_run_state, restore, write_run_state
from tokensmith.stopping import EarlyStopper
from tokensmith.training_math import NaNGuard, make_optimizer


def new_run(seed=0):
    params = {"clip_l": torch.nn.Parameter(torch.randn(2, 8, generator=torch.Generator().manual_seed(seed))),
              "clip_g": torch.nn.Parameter(torch.randn(2, 12, generator=torch.Generator().manual_seed(seed + 1)))}
    optimizer = make_optimizer(list(params.values()), 1e-2)
    guard = NaNGuard(list(params.values()), optimizer, max_consecutive=5)
    return params, optimizer, guard, EarlyStopper(3), TrainingHistory()


def step(params, optimizer, k):
    optimizer.zero_grad()
    sum((p * (k + 1)).pow(2).sum() for p in params.values()).backward()
    optimizer.step()


def test_a_written_state_continues_the_run_bitwise(tmp_path):
    params, optimizer, guard, stopper, history = new_run()
    for k in range(3):
        step(params, optimizer, k)
        history.record(k + 1, float(k), 1e-2, 0.5)
    guard.lr_factor = 0.5
    stopper.update(3, 0.25, params)
    path = str(tmp_path / "state" / "run.state.safetensors")
    write_run_state(path, capture(3, params, optimizer, guard, stopper, history, "sdxl"))

    state = read_run_state(path)
    assert state.step == 3 and state.family == "sdxl" and state.best_step == 3 and state.best_loss == 0.25
    again, opt2, guard2, stopper2, history2 = new_run(seed=5)  # other vectors, fresh optimizer
    assert restore(state, again, opt2, guard2, stopper2, history2) == 3
    assert guard2.lr_factor == 0.5 and stopper2.best_step == 3 and history2.loss == history.loss
    for key in params:
        assert torch.equal(again[key], params[key]) and torch.equal(stopper2.best_vectors[key], stopper.best_vectors[key])
    step(params, optimizer, 3)
    step(again, opt2, 3)
    for key in params:
        assert torch.equal(again[key], params[key]), "the resumed optimizer steps as the uninterrupted one"


def test_a_state_without_early_stopping_has_no_best(tmp_path):
    params, optimizer, guard, _, history = new_run()
    step(params, optimizer, 0)
    path = str(tmp_path / "run.state.safetensors")
    write_run_state(path, capture(1, params, optimizer, guard, None, history, "sd1"))
    state = read_run_state(path)
    assert state.best_loss is None and state.best_step is None and not state.best_vectors
    assert set(state.vectors) == {"clip_l", "clip_g"} and state.optimizer_tensors
