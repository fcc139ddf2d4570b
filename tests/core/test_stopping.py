"""The stop rules: patience (no new best for N validations) and plateau (window means stop falling)."""

import math

import pytest
import torch

from tokensmith.errors import TrainingError
from tokensmith.stopping import EarlyStopper, plateau_improvement


def feed(stopper: EarlyStopper, losses, every: int = 10):
    """Validations at steps every, 2*every, ...; returns the step of the first stop, or None."""
    v = torch.zeros(2, 3)
    for i, loss in enumerate(losses, start=1):
        v += 1
        stopper.update(i * every, loss, v)
        if stopper.should_stop:
            return i * every
    return None


# ---------------------------------------------------------------- patience


def test_patience_counts_validations_without_a_new_best():
    es = EarlyStopper(patience=3, min_delta=0.0)
    v = torch.zeros(2, 3)
    improved = []
    for step, loss in enumerate([1.0, 0.9, 0.95, float("nan"), 0.91], start=1):
        v += 1
        improved.append(es.update(step * 10, loss, v))
        if step < 5:
            assert not es.should_stop
    assert improved == [True, True, False, False, False]
    assert es.should_stop and "patience 3" in es.reason
    assert es.best_step == 20 and es.best_loss == 0.9
    assert torch.equal(es.best_vectors, torch.full((2, 3), 2.0))  # a clone, not the live tensor


def test_min_delta_and_dict_vectors():
    es = EarlyStopper(patience=1, min_delta=0.05)
    es.update(1, 1.0, {"clip_l": torch.ones(1, 2)})
    assert not es.update(2, 0.96, {"clip_l": torch.zeros(1, 2)})
    assert es.should_stop
    assert torch.equal(es.best_vectors["clip_l"], torch.ones(1, 2))


@pytest.mark.parametrize("kwargs, words", [
    ({}, "needs a rule"),
    ({"patience": 0}, "needs a rule"),
    ({"patience": -1}, "patience must be a whole number >= 0"),
    ({"patience": True}, "patience must be a whole number"),
    ({"patience": 2.0}, "patience must be a whole number"),
    ({"plateau_window": -2}, "plateau window must be a whole number >= 0"),
    ({"patience": 1, "min_delta": -0.1}, "min_delta must be a finite number >= 0"),
    ({"plateau_window": 3, "plateau_threshold": float("nan")}, "plateau threshold must be a finite number"),
    ({"plateau_window": 3, "plateau_threshold": -0.01}, "plateau threshold must be a finite number >= 0"),
])
def test_refused_settings_say_what_is_wrong(kwargs, words):
    with pytest.raises(TrainingError, match=words):
        EarlyStopper(**kwargs)


# ---------------------------------------------------------------- plateau


def test_plateau_improvement_compares_the_means_of_two_windows():
    assert plateau_improvement([1.0, 0.9, 0.8], 2) is None  # not two full windows yet
    # before = (0.8 + 0.6) / 2 = 0.7, last = (0.5 + 0.55) / 2 = 0.525: 25% lower
    assert plateau_improvement([9.0, 0.8, 0.6, 0.5, 0.55], 2) == pytest.approx(0.25)
    assert plateau_improvement([1.0, 1.0, 1.1, 1.2], 2) == pytest.approx(-0.15)  # worse: negative
    assert plateau_improvement([0.0, 0.0], 1) == 0.0


def test_a_nan_counts_as_the_worst_value_not_as_progress():
    # without the rule a NaN would be dropped or compare false; as the worst value (2.0) it raises the mean
    assert plateau_improvement([2.0, 1.0, 1.0, float("nan")], 2) == pytest.approx((1.5 - 1.5) / 1.5)
    assert plateau_improvement([float("nan")] * 4, 2) == 0.0


def test_plateau_stops_when_the_curve_flattens_not_before():
    losses = [1.0 * 0.8**i for i in range(8)] + [0.8**8] * 8  # falls 20% per validation, then flat
    es = EarlyStopper(plateau_window=3, plateau_threshold=0.01)
    stop = feed(es, losses)
    # the lowest value first comes at validation 9; the window means differ by < 1% first at validation 14
    assert stop == 140
    assert es.reason.startswith("plateau: the mean of the last 3 validations is 0.00% lower")
    assert es.best_step == 90  # equal values are not a new best: the vectors of the first low one


def test_plateau_does_not_stop_a_slow_steady_descent_that_patience_would_not_either():
    slow = [1.0 - 0.02 * i for i in range(30)]  # 2% or more per validation, never flat
    assert feed(EarlyStopper(plateau_window=4, plateau_threshold=0.01), slow) is None
    assert feed(EarlyStopper(patience=2), slow) is None


def test_one_lucky_value_resets_patience_but_not_the_plateau_rule():
    # flat with noise, and one low outlier late: patience waits again, the window means do not care
    noisy = [1.0, 0.7, 0.55, 0.5, 0.51, 0.49, 0.5, 0.51, 0.5, 0.45, 0.5, 0.51, 0.5, 0.5, 0.51, 0.5]
    plateau = feed(EarlyStopper(plateau_window=3, plateau_threshold=0.02), noisy)
    patience = feed(EarlyStopper(patience=5), noisy)
    assert plateau == 90
    assert patience is None or patience > plateau


def test_with_both_rules_the_first_to_fire_stops():
    losses = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    both = EarlyStopper(patience=6, plateau_window=2, plateau_threshold=0.01)
    assert feed(both, losses) == 50 and both.reason.startswith("plateau")
    both = EarlyStopper(patience=2, plateau_window=2, plateau_threshold=0.01)
    assert feed(both, losses) == 40 and "patience 2" in both.reason


def test_plateau_threshold_zero_stops_only_when_no_longer_falling():
    falling = [1.0 / (i + 1) for i in range(20)]
    assert feed(EarlyStopper(plateau_window=3, plateau_threshold=0.0), falling) is None
    assert feed(EarlyStopper(plateau_window=3, plateau_threshold=0.0), falling[:6] + [falling[5]] * 6) == 110


def test_improvement_is_none_without_the_rule():
    es = EarlyStopper(patience=2)
    feed(es, [1.0, 0.5, 0.25, 0.125])
    assert es.improvement is None
    assert math.isfinite(es.best_loss)


# ---------------------------------------------------------------- exact wording and defaults


def test_no_rule_is_refused_word_for_word():
    with pytest.raises(TrainingError) as e:
        EarlyStopper()
    assert str(e.value) == "early stopping needs a rule: patience >= 1 or a plateau window >= 1"


def test_the_default_plateau_threshold_is_one_percent():
    es = EarlyStopper(plateau_window=2)
    assert feed(es, [1.0, 1.0, 0.98, 0.98]) is None  # 2% lower: still learning
    es = EarlyStopper(plateau_window=2)
    assert feed(es, [1.0, 1.0, 0.995, 0.995]) == 40
    assert es.reason.endswith("(the rule stops at 1.00% or less)")


def test_before_any_finite_validation_there_is_no_best():
    es = EarlyStopper(patience=3)
    es.update(10, float("nan"), torch.ones(1, 2))
    assert es.best_step is None and es.best_vectors is None and es.best_loss == math.inf


def test_patience_counts_from_zero_bad_validations():
    es = EarlyStopper(patience=2)
    assert not es.should_stop  # nothing seen yet
    assert feed(es, [float("nan"), float("nan"), float("nan")]) == 20
    assert es.reason == "no new best validation loss in 2 validations (patience 2)"
