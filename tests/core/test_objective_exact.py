"""Exact behaviour of objective: the flow-matching loss's value with and without a mask, its
refusals word for word, the eps/v objectives handing their kind and options to diffusion_loss,
and the registry's look-up."""


import pytest
import torch

from tests.core.refusals import refused
from tokensmith.objective import OBJECTIVES, FlowMatching, NoisePrediction, objective_for
from tokensmith.training_math import diffusion_loss


def batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, generator=g)
    pred = torch.randn(2, 3, 4, 4, generator=g)
    return pred, x0, torch.tensor([0.5, 2.0])


# ---------------------------------------------------------------- registry


def test_each_kind_maps_to_its_objective():
    assert objective_for("eps") == NoisePrediction("eps")
    assert objective_for("v") == NoisePrediction("v")
    assert objective_for("flow") == FlowMatching()
    assert FlowMatching().kind == "flow"
    assert list(OBJECTIVES) == ["eps", "v", "flow"]


def test_an_unknown_kind_is_refused_naming_the_kinds_trained():
    with refused("no training objective for 'x0' models; TokenSmith trains eps, v, flow"):
        objective_for("x0")


# ---------------------------------------------------------------- eps / v


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_noise_prediction_is_diffusion_loss_of_its_kind_with_mask_and_min_snr(kind):
    pred, x0, sigmas = batch()
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    got = NoisePrediction(kind).loss(pred.double(), x0.double(), sigmas, mask=mask, min_snr_gamma=5.0)
    want = diffusion_loss(pred, x0, sigmas, kind, mask=mask, min_snr_gamma=5.0)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)
    plain = NoisePrediction(kind).loss(pred, x0, sigmas)
    assert torch.equal(plain, diffusion_loss(pred, x0, sigmas, kind))
    assert not torch.equal(plain, got)


def test_eps_and_v_give_different_losses():
    pred, x0, sigmas = batch()
    assert not torch.equal(NoisePrediction("eps").loss(pred, x0, sigmas), NoisePrediction("v").loss(pred, x0, sigmas))


# ---------------------------------------------------------------- flow


def test_flow_loss_is_the_velocity_error_mean():
    """|x0_pred - x0|^2 / sigma^2, each sample by its own sigma, averaged over everything."""
    pred, x0, sigmas = batch()
    want = (((pred - x0) / sigmas.view(2, 1, 1, 1)) ** 2).mean()
    got = FlowMatching().loss(pred, x0, sigmas)
    assert torch.allclose(got, want, rtol=1e-6, atol=0)
    assert got.dim() == 0


def test_flow_loss_ignores_min_snr():
    pred, x0, sigmas = batch()
    assert torch.equal(FlowMatching().loss(pred, x0, sigmas, min_snr_gamma=1.0), FlowMatching().loss(pred, x0, sigmas))


def test_flow_loss_with_a_mask_averages_over_the_masked_elements_only():
    pred, x0, sigmas = batch()
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 0, 0] = 1
    mask[1, 0, 3, 3] = 1
    err = ((pred - x0) / sigmas.view(2, 1, 1, 1)) ** 2
    want = (err[0, :, 0, 0].sum() + err[1, :, 3, 3].sum()) / 6
    assert torch.allclose(FlowMatching().loss(pred, x0, sigmas, mask=mask), want, rtol=1e-6, atol=0)


def test_flow_loss_with_a_weighted_mask_weights_each_element():
    pred, x0, sigmas = batch()
    mask = torch.full((2, 1, 4, 4), 0.5, dtype=torch.float64)
    mask[1] = 2.0
    err = ((pred - x0) / sigmas.view(2, 1, 1, 1)) ** 2
    want = (err[0].sum() * 0.5 + err[1].sum() * 2.0) / (0.5 * 48 + 2.0 * 48)
    assert torch.allclose(FlowMatching().loss(pred, x0, sigmas, mask=mask), want, rtol=1e-6, atol=0)


def test_flow_loss_with_an_all_zero_mask_is_zero_not_nan():
    pred, x0, sigmas = batch()
    assert FlowMatching().loss(pred, x0, sigmas, mask=torch.zeros(2, 1, 4, 4)).item() == 0.0


def test_flow_loss_is_computed_in_fp32_for_half_inputs():
    pred, x0, sigmas = batch()
    got = FlowMatching().loss(pred.bfloat16(), x0.bfloat16(), sigmas.double())
    assert got.dtype == torch.float32
    want = (((pred.bfloat16().float() - x0.bfloat16().float()) / sigmas.view(2, 1, 1, 1)) ** 2).mean()
    assert torch.allclose(got, want, rtol=1e-6, atol=0)


def test_flow_loss_refuses_mismatched_shapes_with_both():
    pred, x0, sigmas = batch()
    with refused("prediction shape [2, 3, 4, 3] does not match target [2, 3, 4, 4]"):
        FlowMatching().loss(pred[..., :3], x0, sigmas)


def test_flow_loss_refuses_a_sigma_count_other_than_the_batch():
    pred, x0, _ = batch()
    with refused("got 3 sigmas for a batch of 2"):
        FlowMatching().loss(pred, x0, torch.tensor([0.5, 1.0, 2.0]))


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_flow_loss_refuses_a_sigma_that_is_not_finite_and_positive(bad):
    pred, x0, _ = batch()
    with refused("every sigma must be a finite number > 0 (sigma 0 means no noise and no loss signal)"):
        FlowMatching().loss(pred, x0, torch.tensor([1.0, bad]))


def test_flow_loss_accepts_a_tiny_positive_sigma():
    pred, x0, _ = batch()
    assert torch.isfinite(FlowMatching().loss(pred, x0, torch.tensor([1e-3, 1.0])))


def test_flow_loss_with_a_mask_summing_below_one_divides_by_that_sum():
    """The clamp only guards an all-zero mask: one element of weight 0.25 gives that element's error."""
    pred, x0, sigmas = batch()
    mask = torch.zeros(2, 3, 4, 4)
    mask[1, 2, 1, 1] = 0.25
    err = ((pred[1, 2, 1, 1] - x0[1, 2, 1, 1]) / sigmas[1]) ** 2
    assert torch.allclose(FlowMatching().loss(pred, x0, sigmas, mask=mask), err, rtol=1e-6, atol=0)
