"""The training data in the core (tokensmith.training_data): aspect-ratio buckets, pictures and
masks scaled alike, batches within one bucket, and one-size inputs left exactly as given."""

from __future__ import annotations

import math

import pytest
import torch

from tokensmith.errors import TrainingError
from tokensmith.objective import objective_for
from tokensmith.training_data import (
    BUCKET_STEP,
    FAMILY_RESOLUTION,
    TrainingData,
    bucket_for,
    bucket_sizes,
    fit_mask,
    fit_picture,
    target_resolution,
)
from tokensmith.training_math import diffusion_loss


def picture(h, w, seed=0):
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("resolution", [192, 512, 768, 1024])
def test_buckets_are_multiples_of_64_within_the_area(resolution):
    sizes = bucket_sizes(resolution)
    assert (resolution // 64 * 64, resolution // 64 * 64) in sizes
    for h, w in sizes:
        assert h % BUCKET_STEP == 0 and w % BUCKET_STEP == 0
        assert h * w <= resolution * resolution
        assert max(h, w) <= 4 * min(h, w)


@pytest.mark.parametrize("size,expected", [
    ((3000, 4500), (384, 640)),  # a 3:2 landscape photo at 512
    ((4500, 3000), (640, 384)),
    ((1000, 1000), (512, 512)),
    ((500, 4000), (256, 1024)),  # wider than 4:1 gets the widest bucket
])
def test_each_picture_gets_the_bucket_nearest_its_aspect_ratio(size, expected):
    assert bucket_for(size, 512) == expected
    got = bucket_for(size, 512)
    for other in bucket_sizes(512):
        assert abs(math.log(got[1] / got[0]) - math.log(size[1] / size[0])) <= \
            abs(math.log(other[1] / other[0]) - math.log(size[1] / size[0])) + 1e-12


def test_auto_resolution_is_the_familys():
    assert FAMILY_RESOLUTION == {"sd1": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "flux": 1024,
                                 "chroma": 1024, "zimage": 1024, "qwen_image": 1024}
    assert [target_resolution(0, f) for f in ("sd1", "sd2", "sdxl", "flux")] == [512, 768, 1024, 1024]
    assert target_resolution(320, "sdxl") == 320


def test_a_mask_is_scaled_and_cropped_as_its_picture():
    img = picture(150, 100)
    mask = img[..., 0].clone()
    for size in [(256, 128), (192, 192), (128, 256)]:
        assert torch.allclose(fit_mask(mask, size), fit_picture(img, size)[..., 0], atol=1e-6)
        assert tuple(fit_picture(img, size).shape) == (*size, 3)
    assert fit_picture(img, (150, 100)) is img  # already at its bucket's size: untouched


def test_one_size_pictures_are_kept_as_given():
    batch = torch.rand(3, 64, 64, 3)
    data = TrainingData.from_images(batch, None, "", resolution=0, family="sd1", crop_to_multiple_of_8=False)
    assert data.batch is batch and data.report() is None and data.pixel_size == (64, 64)
    with pytest.raises(TrainingError, match="not a multiple of 8"):
        TrainingData.from_images(torch.rand(2, 60, 64, 3), None, "", resolution=0, family="sd1",
                                 crop_to_multiple_of_8=False)


def test_one_size_photos_far_above_the_family_size_are_scaled_to_it():
    # phone photos of one size (here 4:3 at 1.6x SD1's side by area) are not trained, and previewed, at full size
    batch = torch.rand(2, 816, 1088, 3)
    data = TrainingData.from_images(batch, None, "", resolution=0, family="sd1", crop_to_multiple_of_8=False)
    assert data.batch is None and data.pixel_size == bucket_for((816, 1088), 512)
    assert "2 of 2 pictures scaled" in data.report()
    # the same pictures are the right size for SDXL, and just under the limit for SD1 they stay as given
    assert TrainingData.from_images(batch, None, "", resolution=0, family="sdxl",
                                    crop_to_multiple_of_8=False).batch is batch
    under = torch.rand(1, 576, 768, 3)
    assert TrainingData.from_images(under, None, "", resolution=0, family="sd1",
                                    crop_to_multiple_of_8=False).batch is under


def mixed(resolution=192):
    pics = [picture(150, 100, 1), picture(120, 200, 2), picture(90, 90, 3), picture(133, 77, 4), picture(100, 100, 5)]
    masks = [torch.ones(p.shape[:2]) for p in pics]
    for m in masks:
        m[:, : m.shape[1] // 2] = 0  # the left half of every picture is ignored
    data = TrainingData.from_images(pics, masks, "a\nb\nc\nd\ne", resolution=resolution, family="sd1",
                                    crop_to_multiple_of_8=False)
    return pics, masks, data


def fake_encode(pixels, spread):
    # a stand-in for the VAE with its scale: one latent cell per 8x8 pixels, the mean colour
    x = pixels.movedim(-1, 1)[:, :3]
    mean = torch.nn.functional.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4]
    return mean, torch.full_like(mean, 0.5) if spread else torch.zeros_like(mean)


def test_mixed_sizes_go_into_buckets_with_their_masks():
    pics, masks, data = mixed()
    assert data.sizes == [(256, 128), (128, 256), (192, 192), (256, 128), (192, 192)]
    assert data.report().startswith("3 buckets: 128x256 (2 pictures), 192x192 (2 pictures), 256x128 (1 picture)")
    run = data.prepared(fake_encode, flip=True, spread=False)
    assert run.count == 10 and run.captions == list("abcde") * 2
    for bucket in run.buckets:
        assert tuple(bucket.mean.shape[-2:]) == (bucket.size[0] // 8, bucket.size[1] // 8)
        assert bucket.masks.shape[-2:] == bucket.mean.shape[-2:] and len(bucket.masks) == len(bucket.pictures)
        for pos, n in enumerate(bucket.pictures):
            expected, _ = fake_encode(fit_picture(pics[n % 5], bucket.size)[None], False)
            if n >= 5:
                expected = expected.flip(3)
            assert torch.allclose(bucket.mean[pos], expected[0], atol=1e-6), (n, bucket.size)
            half = bucket.masks.shape[-1] // 2
            left, right = bucket.masks[pos, 0, :, :half], bucket.masks[pos, 0, :, half:]
            if n >= 5:  # the mirror image's mask is mirrored too
                left, right = right, left
            assert left.max() < 0.2 and right.min() > 0.8, (n, bucket.size)


def test_batches_are_drawn_within_one_bucket():
    _, _, data = mixed()
    run = data.prepared(fake_encode, flip=False, spread=False)
    seen = set()
    for step in range(40):
        bucket, positions, pictures = run.draw(torch.Generator().manual_seed(step), 3)
        assert [bucket.pictures[int(p)] for p in positions] == pictures
        assert all(data.sizes[n] == bucket.size for n in pictures)
        seen.add(bucket.size)
    assert len(seen) == 3, "every bucket is drawn from"


def test_one_bucket_draws_exactly_as_a_plain_batch():
    data = TrainingData.from_images(torch.rand(4, 64, 64, 3), None, "", resolution=0, family="sd1",
                                    crop_to_multiple_of_8=False)
    run = data.prepared(fake_encode, flip=True, spread=False)
    _, positions, pictures = run.draw(torch.Generator().manual_seed(7), 5)
    assert torch.equal(positions, torch.randint(0, 8, (5,), generator=torch.Generator().manual_seed(7)))
    assert pictures == positions.tolist()


def test_validation_covers_every_item_once_within_buckets():
    _, _, data = mixed()
    run = data.prepared(fake_encode, flip=False, spread=False)
    batches = run.validation_batches(7, 2, torch.Generator().manual_seed(0), lambda n: f"p{n}")
    assert sum(len(b.positions) for b in batches) == 7
    assert sorted(float(u) for b in batches for u in b.u) == pytest.approx([(i + 0.5) / 7 for i in range(7)])
    for b in batches:
        assert len(b.positions) <= 2 and b.noise.shape[1:] == b.bucket.mean.shape[1:]
        assert b.prompts == [f"p{b.bucket.pictures[int(p)]}" for p in b.positions]


def test_masks_must_fit_their_pictures_when_sizes_differ():
    pics = [picture(64, 64), picture(64, 128)]
    with pytest.raises(TrainingError, match="does not fit images 2 pictures"):
        TrainingData.from_images(pics, [torch.ones(64, 64), torch.ones(64, 64)], "", resolution=0, family="sd1",
                                 crop_to_multiple_of_8=False)
    with pytest.raises(TrainingError, match="all zero"):
        TrainingData.from_images(pics, [torch.ones(64, 64), torch.zeros(64, 128)], "", resolution=0, family="sd1",
                                 crop_to_multiple_of_8=False)


def test_latents_of_different_sizes_are_grouped_not_rescaled():
    a, b = torch.randn(2, 4, 8, 8), torch.randn(1, 4, 8, 16)
    data = TrainingData.from_latents([a, b], None, "")
    assert data.sizes == [(64, 64), (64, 64), (64, 128)]
    run = data.prepared(None, flip=False, spread=True)
    assert [tuple(x.mean.shape) for x in run.buckets] == [(2, 4, 8, 8), (1, 4, 8, 16)]
    assert torch.equal(run.buckets[1].mean[0], b[0]) and not run.buckets[0].std.any()


def test_the_objective_is_the_models_loss():
    x0_pred, x0 = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    sigmas = torch.tensor([0.5, 2.0])
    for kind in ("eps", "v"):
        assert torch.equal(objective_for(kind).loss(x0_pred, x0, sigmas), diffusion_loss(x0_pred, x0, sigmas, kind))
    with pytest.raises(TrainingError, match="no training objective for 'edm'"):
        objective_for("edm")


def test_resolution_is_auto_or_a_real_size():
    from tokensmith.train_config import TrainConfig

    assert TrainConfig().resolution == 0 and TrainConfig(resolution=512).validate().resolution == 512
    for bad in (32, -64, 5000):
        with pytest.raises(TrainingError, match="resolution must be 0"):
            TrainConfig(resolution=bad).validate()


def test_held_out_pictures_are_a_seeded_share_never_all():
    data = TrainingData.from_images(torch.rand(10, 64, 64, 3), None, "", resolution=0, family="sd1",
                                    crop_to_multiple_of_8=False)
    assert data.held_out(0.0, 1) == []
    assert len(data.held_out(0.2, 1)) == 2 and len(data.held_out(0.01, 1)) == 1
    assert data.held_out(0.2, 1) == data.held_out(0.2, 1)
    assert {tuple(data.held_out(0.2, s)) for s in range(6)} != {tuple(data.held_out(0.2, 1))}, "the seed decides"
    two = TrainingData.from_images(torch.rand(2, 64, 64, 3), None, "", resolution=0, family="sd1",
                                   crop_to_multiple_of_8=False)
    assert len(two.held_out(0.5, 0)) == 1  # one is always left to train on
    one = TrainingData.from_images(torch.rand(1, 64, 64, 3), None, "", resolution=0, family="sd1",
                                   crop_to_multiple_of_8=False)
    with pytest.raises(TrainingError, match="at least 2 pictures"):
        one.held_out(0.2, 0)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("kind", ["one size", "mixed"])
def test_held_out_pictures_are_never_trained_on_and_are_all_validation_sees(kind, flip):
    if kind == "mixed":
        _, _, data = mixed()
    else:
        data = TrainingData.from_images(torch.rand(5, 64, 64, 3), None, "", resolution=0, family="sd1",
                                        crop_to_multiple_of_8=False)
    held = data.held_out(0.4, 3)
    run = data.prepared(fake_encode, flip=flip, spread=False, held_out=held)
    held_run = set(held) | ({n + data.count for n in held} if flip else set())
    assert set(run.held_out) == held_run
    drawn = set()
    for step in range(60):
        bucket, positions, pictures = run.draw(torch.Generator().manual_seed(step), 2)
        assert [bucket.pictures[int(p)] for p in positions] == pictures
        drawn.update(pictures)
    assert not drawn & held_run, "a held-out picture was drawn for training"
    assert drawn == set(range(run.count)) - held_run, "every other picture is trained on"
    batches = run.validation_batches(8, 4, torch.Generator().manual_seed(0), lambda n: f"p{n}")
    validated = {b.bucket.pictures[int(p)] for b in batches for p in b.positions}
    assert validated == held_run and sum(len(b.positions) for b in batches) == 8


def test_flow_objective_is_the_velocity_error():
    # x_t = s*noise + (1-s)*x0; the velocity target is noise - x0 and the model's velocity is (x_t - x0_pred)/s,
    # so the velocity error is (x0_pred - x0)/s
    gen = torch.Generator().manual_seed(0)
    x0, noise, v_pred = (torch.randn(2, 4, 3, 3, generator=gen) for _ in range(3))
    s = torch.tensor([0.3, 0.8])
    xt = s.view(-1, 1, 1, 1) * noise + (1 - s.view(-1, 1, 1, 1)) * x0
    x0_pred = xt - s.view(-1, 1, 1, 1) * v_pred
    flow = objective_for("flow")
    assert flow.kind == "flow"
    torch.testing.assert_close(flow.loss(x0_pred, x0, s), (v_pred - (noise - x0)).pow(2).mean())
    mask = torch.zeros(2, 1, 3, 3)
    mask[0] = 1.0
    torch.testing.assert_close(flow.loss(x0_pred, x0, s, mask=mask), (v_pred[0] - (noise[0] - x0[0])).pow(2).mean())
    with pytest.raises(TrainingError, match="finite number > 0"):
        flow.loss(x0_pred, x0, torch.tensor([0.0, 0.5]))
