"""Exact behaviour of one run's data: the latents per bucket with their mirror images (the width
flipped, for latents and pictures, batches and lists), masks scaled to the latents, one latent drawn
per picture with sample_once, draws and validation noise that depend on the run's generator alone,
the held-out share at its edges, the bucket report's wording, and the sizes auto resolution picks."""

from __future__ import annotations

import pytest
import torch

from tests.core.refusals import refused
from tokensmith.training_data import TrainingData, describe_buckets, oversized, target_resolution


def _latents(n, h, w, start=0.0):
    return torch.arange(start, start + n * 4 * h * w, dtype=torch.float32).reshape(n, 4, h, w)


def _encode_recorder(std=0.5):
    """An encoder for the tests: latent [k, 4, H/8, W/8] from the pixels (their red channel, every 8th
    pixel), a spread of `std` when asked for; it records what it was given."""
    seen = []

    def encode(pixels, spread):
        seen.append((pixels.clone(), spread))
        mean = pixels[..., 0][:, None, ::8, ::8].repeat(1, 4, 1, 1)
        return mean, torch.full_like(mean, std if spread else 0.0)

    return encode, seen


def test_a_latent_batch_and_its_mirror_images_flip_the_width():
    batch = _latents(2, 3, 5)
    data = TrainingData.from_latents(batch, None, "a")
    plain = data.prepared(None, flip=False, spread=False)
    assert torch.equal(plain.buckets[0].mean, batch) and plain.captions == ["a", "a"]
    flipped = data.prepared(None, flip=True, spread=False)
    assert torch.equal(flipped.buckets[0].mean, torch.cat([batch, batch.flip(3)]))
    assert flipped.captions == ["a"] * 4 and flipped.buckets[0].pictures == [0, 1, 2, 3]


def test_latents_one_by_one_and_their_mirror_images_flip_the_width():
    a, b = _latents(1, 2, 2), _latents(1, 3, 2, start=100.0)
    data = TrainingData.from_latents([a, b], None, "")
    run = data.prepared(None, flip=True, spread=False)
    by_size = {tuple(bk.mean.shape[-2:]): bk for bk in run.buckets}
    assert torch.equal(by_size[(2, 2)].mean, torch.cat([a, a.flip(3)]))
    assert torch.equal(by_size[(3, 2)].mean, torch.cat([b, b.flip(3)]))


def test_a_picture_batch_and_its_mirror_images_flip_the_width_before_encoding():
    pictures = torch.rand(2, 16, 24, 3, generator=torch.Generator().manual_seed(0))
    encode, seen = _encode_recorder()
    TrainingData.from_images(pictures, None, "", resolution=0, family="sd1",
                             crop_to_multiple_of_8=False).prepared(encode, flip=True, spread=True)
    [(given, spread)] = seen
    assert spread is True and torch.equal(given, torch.cat([pictures, pictures.flip(2)]))
    encode, seen = _encode_recorder()
    TrainingData.from_images(pictures, None, "", resolution=0, family="sd1",
                             crop_to_multiple_of_8=False).prepared(encode, flip=False, spread=False)
    assert seen[0][1] is False and torch.equal(seen[0][0], pictures)


def test_pictures_one_by_one_and_their_mirror_images_flip_the_width_before_encoding():
    a = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(1))
    b = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(2))
    encode, seen = _encode_recorder()
    data = TrainingData.from_images([a, b], None, "", resolution=64, family="sd1", crop_to_multiple_of_8=False)
    data.prepared(encode, flip=True, spread=False)
    [(given, _)] = seen
    assert torch.equal(given, torch.stack([a, b, a.flip(1), b.flip(1)]))


def test_masks_follow_their_mirror_images_and_are_scaled_to_the_latents_by_area():
    masks = torch.rand(2, 16, 24, generator=torch.Generator().manual_seed(3)) + 0.1
    data = TrainingData.from_images(torch.rand(2, 16, 24, 3), masks, "", resolution=0, family="sd1",
                                    crop_to_multiple_of_8=False)
    encode, _ = _encode_recorder()
    run = data.prepared(encode, flip=True, spread=False)
    expected = torch.nn.functional.interpolate(torch.cat([masks, masks.flip(2)]).unsqueeze(1), size=(2, 3),
                                               mode="area")
    assert run.buckets[0].masks.shape == (4, 1, 2, 3) and torch.equal(run.buckets[0].masks, expected)
    plain = data.prepared(encode, flip=False, spread=False)
    assert torch.equal(plain.buckets[0].masks,
                       torch.nn.functional.interpolate(masks.unsqueeze(1), size=(2, 3), mode="area"))


def test_without_sample_once_the_latents_are_the_encoders_means():
    encode, _ = _encode_recorder(std=0.5)
    pictures = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(4))
    data = TrainingData.from_images(pictures, None, "", resolution=0, family="sd1", crop_to_multiple_of_8=False)
    bucket = data.prepared(encode, flip=False, spread=True).buckets[0]
    mean, std = encode(pictures, True)
    assert torch.equal(bucket.mean, mean) and torch.equal(bucket.std, std)
    assert not bucket.mean.is_inference() and not bucket.std.is_inference()


def test_sample_once_draws_one_latent_per_picture_from_its_generator_alone():
    encode, _ = _encode_recorder(std=0.5)
    pictures = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(5))
    data = TrainingData.from_images(pictures, None, "", resolution=0, family="sd1", crop_to_multiple_of_8=False)
    mean, std = encode(pictures, True)
    torch.manual_seed(123)
    bucket = data.prepared(encode, flip=False, spread=True, sample_once=torch.Generator().manual_seed(9)).buckets[0]
    expected = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(9))
    assert torch.equal(bucket.mean, expected)


def test_prepared_inside_inference_mode_still_gives_tensors_autograd_can_use():
    with torch.inference_mode():
        run = TrainingData.from_latents(_latents(1, 2, 2), torch.ones(1, 16, 16), "").prepared(
            None, flip=False, spread=False)
    b = run.buckets[0]
    assert not b.mean.is_inference() and not b.std.is_inference() and not b.masks.is_inference()


# ---------------------------------------------------------------- draws and validation


def _two_buckets(flip=False, held_out=None):
    latents = [_latents(1, 2, 2), _latents(3, 2, 3, start=50.0)]
    return TrainingData.from_latents(latents, None, "").prepared(None, flip=flip, spread=False, held_out=held_out)


@pytest.mark.parametrize("held_out", [None, [2]])
def test_draws_depend_on_the_runs_generator_alone(held_out):
    run = _two_buckets(held_out=held_out)
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        gen = torch.Generator().manual_seed(7)
        draws.append([(tuple(b.mean.shape), p.tolist(), n) for b, p, n in (run.draw(gen, 2) for _ in range(20))])
    assert draws[0] == draws[1]


def test_a_one_bucket_set_draws_from_its_generator_alone():
    run = TrainingData.from_latents(_latents(3, 2, 2), None, "").prepared(None, flip=False, spread=False)
    out = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        gen = torch.Generator().manual_seed(3)
        out.append([run.draw(gen, 4)[2] for _ in range(5)])
    assert out[0] == out[1]


def test_every_bucket_can_be_drawn_including_the_first_pictures():
    """Picture 0 alone is in its bucket (2 x 2 latents): the picture that picks the bucket is drawn
    from every picture, 0 included."""
    run = _two_buckets()
    gen = torch.Generator().manual_seed(0)
    shapes = {tuple(run.draw(gen, 1)[0].mean.shape[-2:]) for _ in range(200)}
    assert shapes == {(2, 2), (2, 3)}


def test_validation_noise_depends_on_the_runs_generator_alone_and_levels_are_float32(float64_default):
    run = _two_buckets()
    noises = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        batches = run.validation_batches(4, 2, torch.Generator().manual_seed(5), lambda n: f"p{n}")
        noises.append(torch.cat([v.noise.flatten() for v in batches]))
        assert all(v.u.dtype == torch.float32 for v in batches)
    assert torch.equal(noises[0], noises[1])


# ---------------------------------------------------------------- held out, report, sizes


def test_held_out_of_a_single_picture_is_refused_word_for_word():
    data = TrainingData.from_latents(_latents(1, 2, 2), None, "")
    with refused("validation_split needs at least 2 pictures (got 1): one to train on and one to validate on; set "
                 "validation_split to 0"):
        data.held_out(0.5, 0)


def test_a_split_of_everything_still_leaves_one_picture_to_train_on():
    data = TrainingData.from_latents(_latents(3, 2, 2), None, "")
    assert len(data.held_out(1.0, 0)) == 2 and data.held_out(0.0, 0) == []


def test_latents_of_two_sizes_are_reported_as_two_buckets_without_scaling():
    data = TrainingData.from_latents([_latents(1, 2, 2), _latents(2, 2, 3)], None, "")
    assert data.report() == "2 buckets: 24x16 (2 pictures), 16x16 (1 picture)"


def test_scaled_pictures_are_counted_in_the_report():
    data = TrainingData.from_images([torch.zeros(64, 64, 3), torch.zeros(70, 64, 3)], None, "", resolution=64,
                                    family="sd1", crop_to_multiple_of_8=False)
    assert data.report() == "1 bucket: 64x64 (2 pictures); 1 of 2 pictures scaled to their bucket"


@pytest.mark.parametrize("buckets, text", [
    ([((64, 128), 1)], "1 bucket: 128x64 (1 picture)"),
    ([((64, 64), 2), ((128, 64), 1)], "2 buckets: 64x64 (2 pictures), 64x128 (1 picture)"),
    ([((8, 8), 3), ((16, 8), 2), ((8, 16), 1)], "3 buckets: 8x8 (3 pictures), 8x16 (2 pictures), 16x8 (1 picture)"),
])
def test_buckets_are_described_with_singular_and_plural(buckets, text):
    assert describe_buckets(buckets) == text


def test_an_unknown_family_trains_at_512_and_a_given_resolution_wins():
    assert target_resolution(0, "unknown") == 512 and target_resolution(640, "sdxl") == 640


def test_oversized_is_by_area_past_one_and_a_half_sides():
    """SD1: 512 x 1.5 = 768, so past 768 x 768 pixels of area."""
    assert not oversized((768, 768), "sd1") and oversized((768, 769), "sd1")
    assert oversized((1200, 512), "sd1") and not oversized((1100, 512), "sd1")
