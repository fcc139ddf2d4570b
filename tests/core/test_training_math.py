import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from tokensmith.errors import TrainingError
from tokensmith.schedule import parse_schedule
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
    vector_norms,
)

# ---------------------------------------------------------------- loss


def _batch(seed=0, b=4):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 4, 6, 6, generator=g)
    noise = torch.randn(b, 4, 6, 6, generator=g)
    sigmas = torch.tensor([0.05, 0.7, 3.0, 14.0][:b])
    x0_pred = x0 + 0.3 * torch.randn(b, 4, 6, 6, generator=g)
    return x0, noise, sigmas, x0_pred


def _bc(s):
    return s.view(-1, 1, 1, 1)


def _explicit_eps(x0, noise, sigmas, x0_pred):
    xt = x0 + _bc(sigmas) * noise
    eps_pred = (xt - x0_pred) / _bc(sigmas)
    return (eps_pred - noise).pow(2)


def _explicit_v(x0, noise, sigmas, x0_pred):
    # true v in variance-preserving terms: v = alpha * eps - sigma_vp * x0
    s = _bc(sigmas)
    alpha = 1 / torch.sqrt(1 + s**2)
    sigma_vp = s / torch.sqrt(1 + s**2)
    v_true = alpha * noise - sigma_vp * x0
    # the model's v from its x0 prediction, inverting ComfyUI's V_PREDICTION.calculate_denoised
    xt = x0 + s * noise
    v_pred = (xt / (s**2 + 1) - x0_pred) * torch.sqrt(s**2 + 1) / s
    return (v_pred - v_true).pow(2)


def test_eps_loss_matches_explicit_eps_mse():
    x0, noise, sigmas, x0_pred = _batch()
    expected = _explicit_eps(x0, noise, sigmas, x0_pred).mean()
    got = diffusion_loss(x0_pred, x0, sigmas, "eps")
    assert torch.allclose(got, expected, rtol=1e-4)


def test_v_loss_matches_explicit_v_mse():
    x0, noise, sigmas, x0_pred = _batch(1)
    expected = _explicit_v(x0, noise, sigmas, x0_pred).mean()
    got = diffusion_loss(x0_pred, x0, sigmas.view(-1, 1, 1, 1), "v_prediction")
    assert torch.allclose(got, expected, rtol=1e-4)


def test_min_snr_weights():
    x0, noise, sigmas, x0_pred = _batch(2)
    gamma = 5.0
    snr = 1 / sigmas**2
    eps_w = torch.clamp(snr, max=gamma) / snr
    expected = (_explicit_eps(x0, noise, sigmas, x0_pred).mean(dim=(1, 2, 3)) * eps_w).mean()
    assert torch.allclose(diffusion_loss(x0_pred, x0, sigmas, "eps", min_snr_gamma=gamma), expected, rtol=1e-4)
    v_w = torch.clamp(snr, max=gamma) / (snr + 1)
    expected_v = (_explicit_v(x0, noise, sigmas, x0_pred).mean(dim=(1, 2, 3)) * v_w).mean()
    assert torch.allclose(diffusion_loss(x0_pred, x0, sigmas, "v", min_snr_gamma=gamma), expected_v, rtol=1e-4)
    # with min-SNR every prediction type weighs the x0 error by min(SNR, gamma)
    ws = [loss_weights(sigmas, p, gamma) for p in ("eps", "v", "x0")]
    assert torch.allclose(ws[0], torch.clamp(snr, max=gamma), rtol=1e-5)
    assert torch.allclose(ws[0], ws[1], rtol=1e-5) and torch.allclose(ws[1], ws[2], rtol=1e-5)


def test_masked_loss_normalises_by_mask_sum():
    x0, noise, sigmas, x0_pred = _batch(3)
    mask = torch.zeros(4, 1, 6, 6)
    mask[:, :, :3] = 1.0
    mask[0, :, 3:] = 0.5
    err = _explicit_eps(x0, noise, sigmas, x0_pred)
    full = mask.expand_as(err)
    expected = (err * full).sum() / full.sum()
    assert torch.allclose(diffusion_loss(x0_pred, x0, sigmas, "eps", mask=mask), expected, rtol=1e-4)
    ones = torch.ones(4, 1, 6, 6)
    assert torch.allclose(diffusion_loss(x0_pred, x0, sigmas, "eps", mask=ones), diffusion_loss(x0_pred, x0, sigmas))


def test_loss_is_differentiable_through_prediction():
    x0, _, sigmas, x0_pred = _batch(4)
    x0_pred.requires_grad_(True)
    diffusion_loss(x0_pred, x0, sigmas, "v").backward()
    assert x0_pred.grad is not None and torch.isfinite(x0_pred.grad).all()


def test_loss_errors():
    x0, _, sigmas, x0_pred = _batch()
    with pytest.raises(TrainingError, match="sigma"):
        loss_weights(torch.tensor([0.0, 1.0]))
    with pytest.raises(TrainingError, match="unknown prediction"):
        loss_weights(sigmas, "flow")
    with pytest.raises(TrainingError, match="min_snr_gamma"):
        loss_weights(sigmas, "eps", -1)
    with pytest.raises(TrainingError, match="does not match"):
        diffusion_loss(x0_pred[:, :2], x0, sigmas)
    with pytest.raises(TrainingError, match="broadcast"):
        diffusion_loss(x0_pred, x0, sigmas, mask=torch.ones(3, 1, 6, 6))
    with pytest.raises(TrainingError, match="sigmas for a batch"):
        diffusion_loss(x0_pred, x0, sigmas[:2])


# ---------------------------------------------------------------- norms


def test_norm_control_modes():
    t = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    storage = t.data_ptr()
    NormControl("clamp", 1.0).apply(t)
    assert t.data_ptr() == storage
    assert vector_norms(t).tolist() == pytest.approx([1.0, 0.5, 0.0])
    NormControl("median", 2.0)(t)
    assert vector_norms(t).tolist() == pytest.approx([2.0, 2.0, 0.0])
    before = t.clone()
    NormControl("none").apply(t)
    assert torch.equal(t, before)
    leaf = torch.randn(3, 5, requires_grad=True)
    NormControl("median", 1.0).apply(leaf)  # in place on a trainable leaf: works under no_grad
    assert vector_norms(leaf).tolist() == pytest.approx([1.0] * 3)
    with pytest.raises(TrainingError):
        NormControl("clamp")
    with pytest.raises(TrainingError):
        NormControl("shrink", 1.0)


# ---------------------------------------------------------------- NaN guard


def _setup(seed=0):
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(2, 4))
    opt = make_optimizer([p], lr=0.1)
    return p, opt


def _good_step(p, opt, guard):
    opt.zero_grad()
    loss = (p**2).sum()
    loss.backward()
    assert guard.check(loss) == "ok"
    opt.step()


def test_nan_guard_rolls_back_vectors_and_optimizer_state():
    p, opt = _setup()
    guard = NaNGuard([p], opt, max_consecutive=3)
    for _ in range(2):
        _good_step(p, opt, guard)
    # the last state verified by a finite loss is the one checked before the latest optimizer step
    opt.zero_grad()
    loss = (p**2).sum()
    loss.backward()
    assert guard.check(loss) == "ok"
    vectors_before = p.detach().clone()
    state_before = {k: v.clone() for k, v in opt.state[p].items()}
    opt.step()
    assert not torch.equal(p.detach(), vectors_before)
    # a NaN step: back to the verified state, vectors and optimizer moments alike
    opt.zero_grad()
    loss = (p * float("nan")).sum()
    loss.backward()
    assert guard.check(loss) == "rolled_back"
    assert p.grad is None
    assert torch.equal(p.detach(), vectors_before)
    for k, v in state_before.items():
        assert torch.equal(opt.state[p][k], v)
    assert guard.lr_factor == 0.5
    # an optimizer step that produced NaN vectors is undone at the next check
    _good_step(p, opt, guard)
    good = p.detach().clone()
    opt.zero_grad()
    loss = (p**2).sum()
    loss.backward()
    guard.check(loss)
    with torch.no_grad():
        p.fill_(float("inf"))
    opt.zero_grad()
    loss = (p**2).sum()
    loss.backward()
    assert guard.check(loss) == "rolled_back"
    assert torch.equal(p.detach(), good)
    assert guard.rollbacks == 2


def test_nan_guard_gives_up_with_advice():
    p, opt = _setup(1)
    guard = NaNGuard([p], opt, max_consecutive=2, backoff=0.5)
    assert guard.check(torch.tensor(float("nan"))) == "rolled_back"
    with pytest.raises(TrainingError, match="lower learning rate"):
        guard.check(torch.tensor(float("inf")))
    assert guard.lr_factor == 0.25


def test_nan_guard_counts_consecutive_only():
    p, opt = _setup(2)
    guard = NaNGuard([p], opt, max_consecutive=2)
    for _ in range(4):
        assert guard.check(torch.tensor(float("nan"))) == "rolled_back"
        _good_step(p, opt, guard)
    assert guard.rollbacks == 4


def test_nan_guard_leaves_fp16_scale_overflow_to_the_scaler():
    p, opt = _setup(3)
    guard = NaNGuard([p], opt, max_consecutive=3)
    _good_step(p, opt, guard)
    before = p.detach().clone()
    opt.zero_grad()
    loss = (p**2).sum()
    loss.backward()
    p.grad.fill_(float("inf"))  # what an overflowing loss scale leaves after unscale_
    # with a loss scale: no rollback, no lower learning rate, the vectors stay as they are
    for _ in range(4):  # more than max_consecutive: overflows are not rollbacks
        assert guard.check(loss, loss_scaled=True) == "overflow"
    assert guard.lr_factor == 1.0 and guard.rollbacks == 0 and guard.overflows == 4
    assert torch.equal(p.detach(), before)
    # without one, infinite gradients are a bad step
    assert guard.check(loss) == "rolled_back"
    # a non-finite loss is a bad step even with a loss scale
    assert guard.check(torch.tensor(float("nan")), loss_scaled=True) != "overflow"


def test_nan_guard_gives_up_on_endless_overflow():
    p, opt = _setup(4)
    guard = NaNGuard([p], opt)
    loss = (p**2).sum()
    loss.backward()
    p.grad.fill_(float("inf"))
    for _ in range(NaNGuard.MAX_OVERFLOWS_IN_ROW):
        assert guard.check(loss, loss_scaled=True) == "overflow"
    with pytest.raises(TrainingError, match="bf16 or fp32"):
        guard.check(loss, loss_scaled=True)


# ---------------------------------------------------------------- init vectors


def test_spread_init_vectors_like_a1111():
    tokens = torch.arange(2).float().unsqueeze(1).repeat(1, 3)  # rows 0, 1
    out = spread_init_vectors(tokens, 5)
    assert out[:, 0].tolist() == [0, 0, 0, 1, 1]
    five = torch.arange(5).float().unsqueeze(1)
    assert spread_init_vectors(five, 3)[:, 0].tolist() == [0, 1, 2]  # tokenizer keeps the first n
    assert spread_init_vectors(five, 1)[:, 0].tolist() == [0]
    assert torch.equal(spread_init_vectors(torch.zeros(0, 4), 3), torch.zeros(3, 4))
    with pytest.raises(TrainingError):
        spread_init_vectors(five, 0)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 12), st.integers(1, 12))
def test_spread_init_vectors_reference(k, n):
    tokens = torch.arange(k).float().unsqueeze(1)
    out = spread_init_vectors(tokens, n)
    kept = min(k, n)
    expected = [float(i * kept // n) for i in range(n)] if kept else [0.0] * n
    assert out[:, 0].tolist() == expected


# ---------------------------------------------------------------- optimizer state


def _train(p, opt, start, steps, target, sched):
    for i in range(start, start + steps):
        for group in opt.param_groups:
            group["lr"] = sched.value(i + 1)
        opt.zero_grad()
        loss = ((p - target) ** 2).sum() + 0.1 * p.abs().sum()
        loss.backward()
        opt.step()


def _fresh(init):
    p = torch.nn.Parameter(init.clone())
    return p, make_optimizer([p], lr=1e-2, weight_decay=0.01)


def _round_trip(tensors, meta):
    # through real safetensors bytes, with the JSON as string metadata
    blob = st_save(tensors, metadata={"optimizer": meta})
    return st_load(blob), meta


def test_resume_is_bitwise_identical():
    torch.manual_seed(0)
    init, target = torch.randn(3, 8), torch.randn(3, 8)
    sched = parse_schedule("0.05:3, 0.02:7, 0.01", total_steps=10, warmup_steps=2)

    p_full, opt_full = _fresh(init)
    _train(p_full, opt_full, 0, 10, target, sched)

    p_half, opt_half = _fresh(init)
    _train(p_half, opt_half, 0, 5, target, sched)
    tensors, meta = optimizer_state_to_tensors(opt_half)
    json.loads(meta)
    saved_vectors = st_load(st_save({"v": p_half.detach().contiguous()}))["v"]
    tensors, meta = _round_trip(tensors, meta)

    p_resumed, opt_resumed = _fresh(saved_vectors)
    load_optimizer_state(opt_resumed, tensors, meta)
    _train(p_resumed, opt_resumed, 5, 5, target, sched)
    assert torch.equal(p_resumed.detach(), p_full.detach())

    # without the optimizer state the run differs, so the check above has teeth
    p_cold, opt_cold = _fresh(saved_vectors)
    _train(p_cold, opt_cold, 5, 5, target, sched)
    assert not torch.equal(p_cold.detach(), p_full.detach())


def test_optimizer_state_format():
    p, opt = _fresh(torch.randn(2, 3))
    _train(p, opt, 0, 2, torch.zeros(2, 3), parse_schedule("0.1", 2))
    tensors, meta = optimizer_state_to_tensors(opt)
    assert set(tensors) == {"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq"}
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())
    parsed = json.loads(meta)
    assert parsed["optimizer"] == "AdamW" and parsed["param_groups"][0]["params"] == [0]
    sd = tensors_to_optimizer_state(tensors, meta)
    assert sd["param_groups"][0]["betas"] == opt.param_groups[0]["betas"]
    assert isinstance(sd["param_groups"][0]["betas"], tuple)


def test_optimizer_state_rejects_bad_input():
    p, opt = _fresh(torch.randn(2, 3))
    _train(p, opt, 0, 1, torch.zeros(2, 3), parse_schedule("0.1", 1))
    tensors, meta = optimizer_state_to_tensors(opt)
    with pytest.raises(TrainingError, match="JSON"):
        tensors_to_optimizer_state(tensors, "{not json")
    with pytest.raises(TrainingError, match="format"):
        tensors_to_optimizer_state(tensors, json.dumps({"format": "pickle"}))
    with pytest.raises(TrainingError, match="unexpected entry"):
        tensors_to_optimizer_state({**tensors, "../../x": torch.zeros(1)}, meta)
    other, other_opt = _fresh(torch.randn(4, 3))
    with pytest.raises(TrainingError, match="shape"):
        load_optimizer_state(other_opt, tensors, meta)
    a, b = torch.nn.Parameter(torch.randn(2, 3)), torch.nn.Parameter(torch.randn(2, 3))
    with pytest.raises(TrainingError, match="trains 2"):
        load_optimizer_state(make_optimizer([a, b], 0.1), tensors, meta)


def test_make_optimizer_checks():
    p = torch.nn.Parameter(torch.zeros(1, 2))
    assert isinstance(make_optimizer([p], 5e-3), torch.optim.AdamW)
    assert make_optimizer([p], 5e-3).param_groups[0]["weight_decay"] == 0.0
    with pytest.raises(TrainingError):
        make_optimizer([p], math.nan)


# ---------------------------------------------------------------- smoothing


def test_smooth():
    assert smooth([1.0, 2.0, 3.0], 0.5) == [1.0, 1.5, 2.25]
    assert smooth([4.0, 1.0], 0.0) == [4.0, 1.0]
    assert smooth([1.0, float("nan"), 3.0], 0.5) == [1.0, 1.0, 2.0]
    assert smooth([], 0.9) == []
    with pytest.raises(TrainingError):
        smooth([1.0], 1.0)
