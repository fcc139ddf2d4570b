"""Exact behaviour of training_math: refusal messages word for word, boundaries, defaults, dtypes,
and the optimizer-state format's less travelled parts (scalar state, tensors in parameter groups)."""

import json
import re

import pytest
import torch

from tests.core.refusals import refused
from tokensmith.errors import TrainingError
from tokensmith.training_math import (
    NaNGuard,
    NormControl,
    diffusion_loss,
    load_optimizer_state,
    loss_weights,
    make_optimizer,
    optimizer_state_to_tensors,
    smooth,
    spread_init_vectors,
    tensors_to_optimizer_state,
)

# ---------------------------------------------------------------- loss


def test_unknown_prediction_names_the_choices():
    with refused("unknown prediction type 'flow'; use one of eps, v, x0"):
        loss_weights(torch.tensor([1.0]), "flow")


def test_sigmas_with_more_than_one_value_per_sample_are_refused_with_their_shape():
    with refused("sigmas must hold one value per sample, got shape [2, 2]"):
        loss_weights(torch.ones(2, 2))


def test_a_zero_sigma_is_refused_with_the_reason():
    with refused("every sigma must be a finite number > 0 (sigma 0 means no noise and no loss signal)"):
        loss_weights(torch.tensor([1.0, 0.0]))


def test_a_single_sigma_without_a_batch_axis_gives_one_weight():
    w = loss_weights(torch.tensor(0.5))
    assert w.shape == (1,) and w.tolist() == [4.0]


def test_weights_are_fp32_for_fp64_sigmas():
    w = loss_weights(torch.tensor([0.5, 2.0], dtype=torch.float64), "v")
    assert w.dtype == torch.float32
    assert w.tolist() == [5.0, 1.25]


def test_min_snr_gamma_zero_is_refused_and_a_gamma_below_one_is_used():
    with refused("min_snr_gamma must be a finite number > 0 (5 is common), got 0"):
        loss_weights(torch.tensor([1.0]), "eps", 0)
    # sigma 0.5 has SNR 4: clipped to 0.5, the x0 weight is 0.5
    assert loss_weights(torch.tensor([0.5]), "x0", 0.5).tolist() == [0.5]


def test_a_wrong_sigma_count_names_both_counts():
    x = torch.zeros(4, 3, 2, 2)
    with refused("got 2 sigmas for a batch of 4"):
        diffusion_loss(x, x, torch.ones(2))


def test_masked_loss_stays_fp32_for_an_fp64_mask():
    x0, pred = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    loss = diffusion_loss(pred, x0, torch.ones(2), mask=torch.ones(2, 1, 2, 2, dtype=torch.float64))
    assert loss.dtype == torch.float32 and loss.item() == 1.0


def test_a_mask_whose_weights_sum_below_one_still_averages_by_its_sum():
    x0 = torch.zeros(1, 1, 2, 2)
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.full((1, 1, 2, 2), 0.1)  # sums to 0.4
    got = diffusion_loss(pred, x0, torch.ones(1), "x0", mask=mask)
    assert got.item() == pytest.approx((1 + 4 + 9 + 16) / 4)


# ---------------------------------------------------------------- norms


def test_norm_control_is_off_by_default():
    t = torch.tensor([[3.0, 4.0]])
    assert torch.equal(NormControl().apply(t), torch.tensor([[3.0, 4.0]]))


def test_norm_control_refusals_word_for_word():
    with refused("unknown norm control 'shrink'; use one of none, clamp, median"):
        NormControl("shrink", 1.0)
    for bad in (0, -1.0):
        with refused(f"norm control 'clamp' needs a target norm > 0, got {bad!r}"):
            NormControl("clamp", bad)


# ---------------------------------------------------------------- NaN guard


def _guard(**kwargs):
    p = torch.nn.Parameter(torch.ones(2, 3))
    opt = make_optimizer([p], lr=0.1)
    return p, opt, NaNGuard([p], opt, **kwargs)


NAN = torch.tensor(float("nan"))


def test_nan_guard_gives_up_on_the_third_bad_check_by_default():
    _, _, guard = _guard()
    assert [guard.check(NAN) for _ in range(2)] == ["rolled_back", "rolled_back"]
    with refused("training produced NaN or infinite values 3 steps in a row (rolled back each time, learning rate "
                 "now x0.125). Try a lower learning rate, gradient clipping (e.g. max norm 1.0), fp32 instead of "
                 "fp16, norm control 'clamp', or check the images and masks"):
        guard.check(NAN)


def test_nan_guard_with_max_consecutive_one_gives_up_at_once():
    _, _, guard = _guard(max_consecutive=1)
    with pytest.raises(TrainingError, match=re.escape("values 1 steps in a row")):
        guard.check(NAN)


def test_nan_guard_refuses_bad_settings_word_for_word():
    with refused("max_consecutive must be at least 1, got 0"):
        _guard(max_consecutive=0)
    for bad in (0, 1.5):
        with refused(f"backoff must be in (0, 1], got {bad}"):
            _guard(backoff=bad)


def test_backoff_one_keeps_the_learning_rate():
    _, _, guard = _guard(backoff=1)
    assert guard.check(NAN) == "rolled_back" and guard.lr_factor == 1.0


def test_a_good_check_restarts_the_overflow_count():
    p, _, guard = _guard()
    inf = [torch.full((2, 3), float("inf"))]
    for _ in range(2):
        for _ in range(NaNGuard.MAX_OVERFLOWS_IN_ROW):
            assert guard.check(torch.tensor(1.0), grads=inf, loss_scaled=True) == "overflow"
        assert guard.check(torch.tensor(1.0), grads=[torch.ones(2, 3)]) == "ok"
    with refused(f"fp16 gradients overflowed {NaNGuard.MAX_OVERFLOWS_IN_ROW + 1} steps in a row even at a tiny "
                 "loss scale; train in bf16 or fp32 instead (precision input)"):
        for _ in range(NaNGuard.MAX_OVERFLOWS_IN_ROW + 1):
            guard.check(torch.tensor(1.0), grads=inf, loss_scaled=True)


def test_infinite_vectors_are_a_bad_step_even_with_a_loss_scale():
    p, _, guard = _guard()
    with torch.no_grad():
        p.fill_(float("inf"))
    assert guard.check(torch.tensor(1.0), grads=[torch.full((2, 3), float("inf"))], loss_scaled=True) == "rolled_back"
    assert torch.equal(p.detach(), torch.ones(2, 3))


def test_restore_returns_to_the_snapshot_every_time():
    p, opt, guard = _guard()
    (p**2).sum().backward()
    opt.step()
    guard.snapshot()
    saved = {k: v.clone() for k, v in opt.state[p].items()}
    for _ in range(2):
        guard.restore()
        (p**2).sum().backward()
        opt.step()  # steps after a restore must not change the saved state
    guard.restore()
    for k, v in saved.items():
        assert torch.equal(opt.state[p][k], v)


# ---------------------------------------------------------------- init vectors


def test_spread_init_vectors_refusals_word_for_word():
    for bad in (True, 2.5, 0):
        with refused(f"the number of vectors must be a whole number >= 1, got {bad!r}"):
            spread_init_vectors(torch.zeros(2, 3), bad)
    with refused("init token vectors must be [k, width], got shape [3]"):
        spread_init_vectors(torch.zeros(3), 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_spread_init_vectors_keep_the_dtype_with_and_without_tokens(dtype):
    assert spread_init_vectors(torch.zeros(0, 4, dtype=dtype), 3).dtype == dtype
    assert spread_init_vectors(torch.ones(2, 4, dtype=dtype), 3).dtype == dtype


# ---------------------------------------------------------------- optimizer


def test_make_optimizer_uses_the_given_rate_and_accepts_zero():
    p = torch.nn.Parameter(torch.zeros(1, 2))
    assert make_optimizer([p], 0.25).param_groups[0]["lr"] == 0.25
    assert make_optimizer([p], 0).param_groups[0]["lr"] == 0.0


def test_make_optimizer_refusals_word_for_word():
    p = torch.nn.Parameter(torch.zeros(1, 2))
    with refused("learning rate must be a finite number >= 0, got -1.0"):
        make_optimizer([p], -1)
    with refused("weight decay must be >= 0, got -0.5"):
        make_optimizer([p], 0.1, weight_decay=-0.5)


def _opt(*shapes):
    ps = [torch.nn.Parameter(torch.ones(*s)) for s in shapes]
    opt = make_optimizer(ps, lr=0.1)
    sum((p**2).sum() for p in ps).backward()
    opt.step()
    return ps, opt


def test_scalar_state_round_trips_under_its_parameter_index():
    ps, opt = _opt((2, 3), (2, 3))
    opt.state[ps[1]]["count"] = 7
    opt.state[ps[1]]["pair"] = (1, [2.5, None])
    tensors, meta = optimizer_state_to_tensors(opt)
    assert "state.1.count" not in tensors
    sd = tensors_to_optimizer_state(tensors, meta)
    assert sd["state"][1]["count"] == 7 and sd["state"][1]["pair"] == (1, [2.5, None])
    assert "count" not in sd["state"][0]


def test_scalar_state_of_a_parameter_without_tensor_state_round_trips():
    a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(2, 3))
    opt = make_optimizer([a, b], lr=0.1)
    opt.state[b]["count"] = 3  # b has no moments, only this scalar
    sd = tensors_to_optimizer_state(*optimizer_state_to_tensors(opt))
    assert sd["state"] == {1: {"count": 3}}


def test_a_tensor_in_a_parameter_group_round_trips():
    ps, opt = _opt((2, 3))
    opt.param_groups[0]["extra"] = torch.tensor([1.0, 2.0])
    tensors, meta = optimizer_state_to_tensors(opt)
    assert torch.equal(tensors["group.0.extra"], torch.tensor([1.0, 2.0]))
    assert json.loads(meta)["param_groups"][0]["extra"] == {"__tensor__": True}
    sd = tensors_to_optimizer_state(tensors, meta)
    assert torch.equal(sd["param_groups"][0]["extra"], torch.tensor([1.0, 2.0]))
    load_optimizer_state(opt, tensors, meta)
    assert torch.equal(opt.param_groups[0]["extra"], torch.tensor([1.0, 2.0]))


def test_settings_that_cannot_be_stored_are_named():
    ps, opt = _opt((2, 3))
    opt.param_groups[0]["custom"] = (0.5, [1.0, float("inf")])
    with refused("optimizer setting param group 0 custom is inf, which cannot be stored"):
        optimizer_state_to_tensors(opt)
    opt.param_groups[0]["custom"] = object()
    with refused("optimizer setting param group 0 custom has type object, which cannot be stored"):
        optimizer_state_to_tensors(opt)
    del opt.param_groups[0]["custom"]
    opt.state[ps[0]]["bad"] = float("nan")
    with refused("optimizer setting state.0.bad is nan, which cannot be stored"):
        optimizer_state_to_tensors(opt)


def test_the_metadata_does_not_depend_on_the_order_of_settings():
    _, opt = _opt((2, 3))
    _, meta = optimizer_state_to_tensors(opt)
    group = opt.param_groups[0]
    items = list(group.items())
    group.clear()
    group.update(reversed(items))
    assert optimizer_state_to_tensors(opt)[1] == meta


def _parts():
    _, opt = _opt((2, 3))
    tensors, meta = optimizer_state_to_tensors(opt)
    return tensors, json.loads(meta)


def test_metadata_refusals_word_for_word():
    tensors, meta = _parts()
    with refused("optimizer state metadata is missing or too large"):
        tensors_to_optimizer_state(tensors, None)
    with refused("optimizer state metadata is missing its parameter groups"):
        tensors_to_optimizer_state(tensors, json.dumps({**meta, "scalars": []}))
    with refused("optimizer state refers to parameters that no parameter group lists"):
        tensors_to_optimizer_state({**tensors, "state.5.exp_avg": torch.zeros(2, 3)}, json.dumps(meta))


def test_metadata_of_exactly_the_size_limit_is_read():
    tensors, meta = _parts()
    text = json.dumps(meta)
    padded = text + " " * (1_000_000 - len(text))
    assert tensors_to_optimizer_state(tensors, padded)["param_groups"][0]["params"] == [0]
    with refused("optimizer state metadata is missing or too large"):
        tensors_to_optimizer_state(tensors, padded + " ")


def test_metadata_without_scalars_is_read():
    tensors, meta = _parts()
    del meta["scalars"]
    sd = tensors_to_optimizer_state(tensors, json.dumps(meta))
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("key", ["group.0.lr", "bogus"])
def test_scalar_entries_must_be_state_keys(key):
    tensors, meta = _parts()
    meta["scalars"] = {key: 1}
    with refused(f"unexpected entry {key!r} in optimizer state metadata"):
        tensors_to_optimizer_state(tensors, json.dumps(meta))


@pytest.mark.parametrize("group", [[0], {"lr": 0.1}, {"params": ["0"]}, {"params": [True]}])
def test_malformed_parameter_groups_are_refused(group):
    tensors, meta = _parts()
    meta["param_groups"] = [meta["param_groups"][0], group]
    with refused("optimizer parameter group 1 is malformed"):
        tensors_to_optimizer_state(tensors, json.dumps(meta))


def test_a_group_tensor_missing_from_the_tensors_is_named():
    tensors, meta = _parts()
    meta["param_groups"][0]["extra"] = {"__tensor__": True}
    with refused("optimizer parameter group 0 is missing tensor 'extra'"):
        tensors_to_optimizer_state(tensors, json.dumps(meta))


@pytest.mark.parametrize("value", [{"a": 1}, {"__tuple__": 5}])
def test_unexpected_json_objects_are_refused(value):
    tensors, meta = _parts()
    meta["param_groups"][0]["betas"] = value
    with refused("optimizer state JSON has an unexpected object"):
        tensors_to_optimizer_state(tensors, json.dumps(meta))


def test_load_refuses_a_different_parameter_count_word_for_word():
    tensors, meta = optimizer_state_to_tensors(_opt((2, 3))[1])
    _, two = _opt((2, 3), (2, 3))
    with refused("stored optimizer state is for 1 tensors but this run trains 2; resume without the optimizer state"):
        load_optimizer_state(two, tensors, meta)


def test_load_accepts_parameters_without_state():
    a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(2, 3))
    opt = make_optimizer([a, b], lr=0.1)
    (a**2).sum().backward()  # b gets no gradient, so no state
    opt.step()
    tensors, meta = optimizer_state_to_tensors(opt)
    load_optimizer_state(opt, tensors, meta)
    assert set(opt.state[a]) == {"step", "exp_avg", "exp_avg_sq"} and not opt.state[b]


def test_load_refuses_one_dimensional_state_of_another_length():
    tensors, meta = optimizer_state_to_tensors(_opt((4,))[1])
    _, other = _opt((3,))
    with refused("stored optimizer state 'exp_avg' has shape [4] but the vectors are [3]; "
                 "resume without the optimizer state"):
        load_optimizer_state(other, tensors, meta)


def test_load_wraps_the_optimizers_own_refusal():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    two_groups = torch.optim.AdamW([{"params": [a]}, {"params": [b]}], lr=0.1)
    tensors, meta = optimizer_state_to_tensors(two_groups)
    _, one_group = _opt((2,), (2,))
    with pytest.raises(TrainingError) as e:
        load_optimizer_state(one_group, tensors, meta)
    assert str(e.value) == ("stored optimizer state does not fit this optimizer (loaded state dict has a different "
                            "number of parameter groups); resume without it")


# ---------------------------------------------------------------- smoothing


def test_smooth_keeps_nine_tenths_of_the_past_by_default():
    assert smooth([1.0, 2.0]) == pytest.approx([1.0, 1.1])


def test_smooth_passes_non_finite_values_through_before_the_first_finite_one():
    out = smooth([float("nan"), 1.0, float("inf")], 0.5)
    assert out[0] != out[0] and out[1:] == [1.0, 1.0]


def test_smooth_refuses_alpha_one_word_for_word():
    with refused("smoothing alpha must be in [0, 1), got 1.0"):
        smooth([1.0], 1)
