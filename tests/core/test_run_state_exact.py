"""Exact behaviour of the run state file: every counter written and read back under its own name,
the defaults of a file that lacks them (a state written by an older TokenSmith, or by hand), a best
loss that is not finite stored as none, a state written over the last one, and what restore puts
into the guard, the early stopper and the history (and leaves alone without a stopper)."""

import math

import safetensors.torch
import torch

from tokensmith.history import TrainingHistory
from tokensmith.run_state import RunState, capture, read_run_state, restore, write_run_state
from tokensmith.stopping import EarlyStopper
from tokensmith.training_math import NaNGuard, make_optimizer, optimizer_state_to_tensors


def _run():
    params = {"clip_l": torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))}
    optimizer = make_optimizer(list(params.values()), 1e-2)
    guard = NaNGuard(list(params.values()), optimizer)
    return params, optimizer, guard


def test_every_counter_is_written_and_read_back_under_its_name(tmp_path):
    params, optimizer, guard = _run()
    tensors, meta = optimizer_state_to_tensors(optimizer)
    state = RunState(step=7, vectors=dict(params), optimizer_tensors=tensors, optimizer_meta=meta, lr_factor=0.25,
                     rollbacks=2, best_loss=0.5, best_step=6, bad_evaluations=3, family="sd1")
    path = str(tmp_path / "s" / "run.state.safetensors")
    write_run_state(path, state)
    back = read_run_state(path)
    assert (back.step, back.lr_factor, back.rollbacks, back.best_loss, back.best_step, back.bad_evaluations,
            back.family) == (7, 0.25, 2, 0.5, 6, 3, "sd1")
    assert back.history == TrainingHistory()


def test_a_state_is_written_over_the_last_one(tmp_path):
    params, optimizer, guard = _run()
    tensors, meta = optimizer_state_to_tensors(optimizer)
    path = str(tmp_path / "run.state.safetensors")
    write_run_state(path, RunState(step=1, vectors=dict(params), optimizer_tensors=tensors, optimizer_meta=meta))
    write_run_state(path, RunState(step=2, vectors=dict(params), optimizer_tensors=tensors, optimizer_meta=meta))
    assert read_run_state(path).step == 2


def test_a_best_loss_that_is_not_finite_is_stored_as_none(tmp_path):
    """A stopper that never saw a finite validation keeps best_loss infinite: the file says none."""
    params, optimizer, guard = _run()
    stopper = EarlyStopper(3)
    assert stopper.best_loss == math.inf
    path = str(tmp_path / "run.state.safetensors")
    write_run_state(path, capture(1, params, optimizer, guard, stopper, TrainingHistory(), "sd1"))
    assert read_run_state(path).best_loss is None


def test_a_file_without_counters_history_or_family_reads_with_the_defaults(tmp_path):
    params, optimizer, guard = _run()
    tensors, meta = optimizer_state_to_tensors(optimizer)
    path = str(tmp_path / "old.state.safetensors")
    safetensors.torch.save_file({"vectors.clip_l": params["clip_l"].detach().clone()}, path,
                                metadata={"optimizer": meta})
    back = read_run_state(path)
    assert (back.step, back.lr_factor, back.rollbacks, back.best_loss, back.best_step, back.bad_evaluations,
            back.history, back.family) == (0, 1.0, 0, None, None, 0, None, "")
    assert type(back.lr_factor) is float and read_run_state(path, default_step=12).step == 12


def test_a_file_whose_counters_are_empty_reads_with_the_defaults(tmp_path):
    params, optimizer, guard = _run()
    tensors, meta = optimizer_state_to_tensors(optimizer)
    path = str(tmp_path / "empty.state.safetensors")
    safetensors.torch.save_file({"vectors.clip_l": params["clip_l"].detach().clone()}, path,
                                metadata={"optimizer": meta, "state": "{}", "history": ""})
    back = read_run_state(path, default_step=4)
    assert (back.step, back.lr_factor, back.rollbacks, back.bad_evaluations, back.history) == (4, 1.0, 0, 0, None)


def test_capture_takes_the_guards_rollbacks_and_the_stoppers_bad_evaluations():
    params, optimizer, guard = _run()
    guard.rollbacks = 2
    stopper = EarlyStopper(5)
    stopper.update(1, 1.0, params)
    stopper.update(2, 2.0, params)
    stopper.update(3, 3.0, params)
    state = capture(3, params, optimizer, guard, stopper, TrainingHistory(), "sd1")
    assert (state.rollbacks, state.bad_evaluations, state.best_loss, state.best_step) == (2, 2, 1.0, 1)
    alone = capture(3, params, optimizer, guard, None, TrainingHistory(), "sd1")
    assert (alone.rollbacks, alone.bad_evaluations, alone.best_loss, alone.best_step) == (2, 0, None, None)


def _state_with_best(params, optimizer):
    tensors, meta = optimizer_state_to_tensors(optimizer)
    history = TrainingHistory(val_steps=[2, 4], val_loss=[0.75, 0.5])
    return RunState(step=4, vectors={k: v.detach() + 1 for k, v in params.items()}, optimizer_tensors=tensors,
                    optimizer_meta=meta, lr_factor=0.5, best_loss=0.5, best_step=4, bad_evaluations=1,
                    best_vectors={}, history=history)


def test_restore_gives_the_stopper_its_best_its_count_and_the_validation_window():
    params, optimizer, guard = _run()
    state = _state_with_best(params, optimizer)
    stopper, history = EarlyStopper(3), TrainingHistory()
    assert restore(state, params, optimizer, guard, stopper, history) == 4
    assert (stopper.best_loss, stopper.best_step, stopper.bad_evaluations, stopper.best_vectors) == (0.5, 4, 1, None)
    assert type(stopper.best_loss) is float and stopper.losses == [0.75, 0.5]
    assert history.val_loss == [0.75, 0.5] and guard.lr_factor == 0.5


def test_restore_without_a_stopper_restores_the_rest():
    params, optimizer, guard = _run()
    state = _state_with_best(params, optimizer)
    history = TrainingHistory()
    assert restore(state, params, optimizer, guard, None, history) == 4
    assert torch.equal(params["clip_l"].detach(), torch.arange(6.0).reshape(2, 3) + 1)
    assert history.val_steps == [2, 4]


def test_restore_of_a_state_without_best_or_history_leaves_the_stopper_fresh():
    params, optimizer, guard = _run()
    tensors, meta = optimizer_state_to_tensors(optimizer)
    state = RunState(step=2, vectors={}, optimizer_tensors=tensors, optimizer_meta=meta)
    stopper, history = EarlyStopper(3), TrainingHistory()
    assert restore(state, params, optimizer, guard, stopper, history) == 2
    assert (stopper.best_loss, stopper.best_step, stopper.bad_evaluations, stopper.losses) == (math.inf, None, 0, [])
    assert history == TrainingHistory()
