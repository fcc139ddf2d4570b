"""Stratified timestep draws (tokensmith.training_math.stratified_timesteps): a seeded golden-ratio
sequence, checked against its definition, for how evenly it covers [0, 1) next to independent
draws, and for continuing where a resumed run left off."""

from __future__ import annotations

import math

import pytest
import torch

from tokensmith.errors import TrainingError
from tokensmith.train_config import TrainConfig
from tokensmith.training_math import stratified_timesteps


def _largest_gap(u: torch.Tensor) -> float:
    """The widest stretch of [0, 1) (read as a circle) with no draw in it."""
    s = sorted(float(x) for x in u)
    return max([b - a for a, b in zip(s, s[1:], strict=False)] + [1 - s[-1] + s[0]])


def test_draws_are_the_seeded_golden_ratio_sequence():
    offset = float(torch.rand(1, generator=torch.Generator().manual_seed(7)))
    step = (math.sqrt(5) - 1) / 2
    expected = [(offset + k * step) % 1.0 for k in range(3, 11)]
    got = stratified_timesteps(3, 8, seed=7)
    assert got.dtype == torch.float32 and got.shape == (8,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-6)
    assert bool(((got >= 0) & (got < 1)).all())


def test_the_seed_moves_the_sequence_and_the_same_seed_repeats_it():
    torch.testing.assert_close(stratified_timesteps(0, 16, 1), stratified_timesteps(0, 16, 1), rtol=0, atol=0)
    assert not torch.allclose(stratified_timesteps(0, 16, 1), stratified_timesteps(0, 16, 2))


def test_a_later_start_continues_the_same_sequence():
    whole = stratified_timesteps(0, 40, seed=3)
    torch.testing.assert_close(torch.cat([stratified_timesteps(0, 25, 3), stratified_timesteps(25, 15, 3)]), whole,
                               rtol=0, atol=0)


@pytest.mark.parametrize("count", [8, 32, 100])
def test_every_run_of_draws_covers_the_interval_more_evenly_than_independent_draws(count):
    # the three-gap theorem keeps the golden-ratio sequence's widest gap under 2/n wherever a run of
    # n draws starts; independent uniform draws leave gaps of about log(n)/n
    for first in range(0, 500, 7):
        assert _largest_gap(stratified_timesteps(first, count, seed=0)) < 2.0 / count
    if count >= 32:
        gaps = [_largest_gap(torch.rand(count, generator=torch.Generator().manual_seed(s))) for s in range(6)]
        assert min(gaps) > 2.0 / count


def test_negative_start_or_count_is_refused():
    with pytest.raises(TrainingError, match=r"non-negative start and count \(got -1, 4\)"):
        stratified_timesteps(-1, 4, 0)
    with pytest.raises(TrainingError, match=r"\(got 0, -2\)"):
        stratified_timesteps(0, -2, 0)


def test_the_config_accepts_the_two_rules_and_names_them_when_refusing():
    assert TrainConfig().timestep_sampling == "uniform"
    TrainConfig(timestep_sampling="stratified").validate()
    with pytest.raises(TrainingError, match=r"timestep_sampling must be one of \['uniform', 'stratified'\], got 'sobol'"):
        TrainConfig(timestep_sampling="sobol").validate()


def test_far_into_a_long_run_the_draws_keep_full_precision():
    # the index is multiplied in float64: float32 would be off by thousandths a million draws in
    offset = float(torch.rand(1, generator=torch.Generator().manual_seed(0)))
    first = 3_000_001
    expected = [math.fmod(offset + k * ((math.sqrt(5) - 1) / 2), 1.0) for k in range(first, first + 4)]
    torch.testing.assert_close(stratified_timesteps(first, 4, 0), torch.tensor(expected, dtype=torch.float32),
                               rtol=0, atol=1e-6)


def test_no_draws_asked_gives_none():
    assert stratified_timesteps(5, 0, 0).shape == (0,)
