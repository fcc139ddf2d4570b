"""Exact behaviour of the training data checks: every refusal word for word (pictures, channels, empty
sides, non-finite values, latents, masks of each wrong shape, non-finite, negative or all-zero masks),
the masks returned per case (one for all repeated, a batch as given, a list per picture), the crop to
a multiple of 8 index for index with its masks, and what from_latents and from_images keep."""

from __future__ import annotations

import math

import pytest
import torch

from tests.core.refusals import refused
from tokensmith.training_data import (
    TrainingData,
    bucket_for,
    bucket_sizes,
    check_latents,
    check_masks,
    check_pictures,
    crop_to_8,
    fit,
    fit_picture,
)

NO_IMAGES = ("no images: connect an IMAGE batch with at least one picture (e.g. from Load Image or a dataset "
             "loader)")
FIT = "give one mask per image (or one for all) of the same height and width"


# ---------------------------------------------------------------- pictures


@pytest.mark.parametrize("images", [None, torch.zeros(4, 4, 3), torch.zeros(0, 4, 4, 3), [], ["x"],
                                    [torch.zeros(4, 3)], torch.zeros(1, 1, 4, 4, 3)])
def test_no_pictures_is_refused_word_for_word(images):
    with refused(NO_IMAGES):
        check_pictures(images)


def test_a_list_of_pictures_and_batches_is_taken_picture_by_picture():
    a, b = torch.zeros(4, 6, 3), torch.ones(2, 8, 8, 3)
    out = check_pictures([a, b])
    assert [tuple(p.shape) for p in out] == [(4, 6, 3), (8, 8, 3), (8, 8, 3)]
    assert torch.equal(out[0], a) and torch.equal(out[2], b[1])


def test_fewer_than_three_channels_are_refused_with_the_count():
    with refused("images need 3 colour channels, got 2"):
        check_pictures(torch.zeros(1, 4, 5, 2))


@pytest.mark.parametrize("shape, says", [((1, 0, 8, 3), "8x0"), ((1, 8, 0, 3), "0x8")])
def test_a_picture_without_rows_or_columns_is_refused(shape, says):
    with refused(f"images need at least one pixel a side, got {says}"):
        check_pictures(torch.zeros(shape))


def test_one_pixel_a_side_is_the_smallest_picture():
    assert len(check_pictures(torch.zeros(1, 1, 1, 3))) == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_pictures_are_refused_word_for_word(bad):
    images = torch.zeros(1, 4, 4, 3)
    images[0, 1, 2, 0] = bad
    with refused("the images contain NaN or infinite values: check the nodes that produce them"):
        check_pictures(images)


# ---------------------------------------------------------------- latents


@pytest.mark.parametrize("latents", [torch.zeros(4, 2, 2), torch.zeros(0, 4, 2, 2), {"samples": torch.zeros(4, 2, 2)},
                                     "x", [torch.zeros(1, 4, 2, 2), None]])
def test_latents_that_are_not_a_batch_are_refused_word_for_word(latents):
    with refused("latents must be a LATENT batch [B, C, H, W] with at least one item"):
        check_latents(latents)


def test_a_latent_dict_a_batch_and_a_list_are_all_taken():
    a, b = torch.zeros(2, 4, 3, 5), torch.ones(1, 4, 2, 2)
    assert [t is a for t in check_latents({"samples": a})] == [True]
    assert [t is a for t in check_latents(a)] == [True]
    out = check_latents([{"samples": a}, b])
    assert len(out) == 2 and out[0] is a and out[1] is b


def test_non_finite_latents_are_refused_word_for_word():
    with refused("the latents contain NaN or infinite values"):
        check_latents({"samples": torch.full((1, 4, 2, 2), math.nan)})


def test_from_latents_keeps_one_batch_as_given_with_pixel_sizes_and_captions():
    batch = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).reshape(2, 4, 3, 5)
    masks = torch.ones(2, 24, 40)
    data = TrainingData.from_latents({"samples": batch}, masks, "a dog\na cat")
    assert data.latent_input is True and data.batch is batch and data.items is None
    assert data.sizes == [(24, 40), (24, 40)] and data.captions == ["a dog", "a cat"]
    assert torch.equal(data.masks, masks)


def test_from_latents_keeps_latents_of_several_batches_one_by_one():
    a, b = torch.zeros(1, 4, 2, 2), torch.ones(2, 4, 3, 2)
    masks = [torch.ones(16, 16), torch.ones(24, 16), torch.ones(24, 16)]
    data = TrainingData.from_latents([a, b], masks, "x")
    assert data.latent_input is True and data.batch is None and len(data.items) == 3
    assert torch.equal(data.items[0], a[0]) and torch.equal(data.items[2], b[1])
    assert data.sizes == [(16, 16), (24, 16), (24, 16)] and data.captions == ["x", "x", "x"]
    assert isinstance(data.masks, list) and [tuple(m.shape) for m in data.masks] == [(16, 16), (24, 16), (24, 16)]


# ---------------------------------------------------------------- masks


def test_no_masks_is_none():
    assert check_masks(None, [(4, 6)]) is None


def test_one_mask_for_pictures_of_one_size_is_repeated():
    m = torch.arange(1.0, 25.0).reshape(4, 6)
    for given in (m, m[None], [m]):
        out = check_masks(given, [(4, 6)] * 3)
        assert torch.is_tensor(out) and tuple(out.shape) == (3, 4, 6)
        assert all(torch.equal(out[i], m) for i in range(3))


def test_a_mask_per_picture_is_kept_as_given():
    m = torch.arange(1.0, 49.0).reshape(2, 4, 6)
    out = check_masks(m, [(4, 6)] * 2)
    assert torch.is_tensor(out) and torch.equal(out, m)
    stacked = check_masks([m[0], m[1]], [(4, 6)] * 2)
    assert torch.is_tensor(stacked) and torch.equal(stacked, m)
    from_a_batch = check_masks([m], [(4, 6)] * 2)
    assert torch.is_tensor(from_a_batch) and torch.equal(from_a_batch, m)


def test_pictures_of_several_sizes_get_a_list_of_masks():
    a, b = torch.ones(4, 6), torch.full((6, 4), 2.0)
    out = check_masks([a, b], [(4, 6), (6, 4)])
    assert isinstance(out, list) and len(out) == 2 and torch.equal(out[0], a) and torch.equal(out[1], b)


@pytest.mark.parametrize("masks, shape", [
    (torch.ones(3, 4, 6), "[3, 4, 6]"), (torch.ones(2, 4, 5), "[2, 4, 5]"), (torch.ones(2, 5, 6), "[2, 5, 6]"),
    (torch.ones(1, 2, 4, 6), "[1, 2, 4, 6]"), (torch.ones(4, 6, 2), "[4, 6, 2]"), (torch.ones(6), "[6]"),
    ([torch.ones(4, 6), torch.ones(4, 5)], "[2]"),
])
def test_masks_that_do_not_fit_one_size_pictures_are_refused_word_for_word(masks, shape):
    with refused(f"mask shape {shape} does not fit images [2, 4, 6]: {FIT}"):
        check_masks(masks, [(4, 6)] * 2)


@pytest.mark.parametrize("masks, shape", [
    (torch.ones(4, 6), "[1, 4, 6]"), (torch.ones(2, 4, 6), "[2, 4, 6]"),
    ([torch.ones(4, 6), torch.ones(4, 6)], "[2]"), ([torch.ones(4, 6)], "[1]"),
    ([torch.ones(6, 4), torch.ones(4, 6)], "[2]"),
])
def test_masks_that_do_not_fit_pictures_of_several_sizes_are_refused_word_for_word(masks, shape):
    with refused(f"mask shape {shape} does not fit images 2 pictures of sizes [(4, 6), (6, 4)]: {FIT}"):
        check_masks(masks, [(4, 6), (6, 4)])


def test_the_refusal_lists_at_most_four_sizes_in_order():
    sizes = [(8, 8), (1, 1), (5, 5), (3, 3), (2, 2)]
    with refused(f"mask shape [1] does not fit images 5 pictures of sizes [(1, 1), (2, 2), (3, 3), (5, 5)]: {FIT}"):
        check_masks([torch.ones(8, 8)], sizes)


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_a_mask_that_is_not_finite_or_is_negative_is_refused_word_for_word(value):
    m = torch.ones(2, 4, 6)
    m[1, 2, 3] = value
    with refused("masks must be finite and non-negative (they weight the loss per pixel)"):
        check_masks(m, [(4, 6)] * 2)


def test_an_all_zero_mask_is_refused_and_one_lit_pixel_is_enough():
    m = torch.zeros(2, 4, 6)
    m[0, 0, 0] = 1.0
    with refused("a mask is all zero: that image would teach nothing; fix or remove it"):
        check_masks(m, [(4, 6)] * 2)
    m[1, 3, 5] = 1e-6
    assert torch.equal(check_masks(m, [(4, 6)] * 2), m)


# ---------------------------------------------------------------- the crop to a multiple of 8


def _numbered(h, w):
    return torch.arange(h * w * 3, dtype=torch.float32).reshape(1, h, w, 3)


def test_a_multiple_of_8_is_kept_as_given():
    images, masks = _numbered(16, 24), torch.ones(1, 16, 24)
    out, out_masks = crop_to_8(images, masks, False)
    assert out is images and out_masks is masks


def test_another_size_is_refused_without_crop_word_for_word():
    with refused("image size 21x23 is not a multiple of 8 (the VAE's scale): resize or crop the images, or turn on "
                 "crop_to_multiple_of_8 (or set a resolution)"):
        crop_to_8(_numbered(23, 21), None, False)


def test_the_crop_is_centred_and_the_masks_are_cropped_alike():
    """23 x 21 -> 16 x 16: 7 rows off (3 above, 4 below), 5 columns off (2 left, 3 right)."""
    images = _numbered(23, 21)
    masks = torch.arange(23 * 21, dtype=torch.float32).reshape(1, 23, 21)
    out, out_masks = crop_to_8(images, masks, True)
    assert torch.equal(out, images[:, 3:19, 2:18]) and torch.equal(out_masks, masks[:, 3:19, 2:18])
    one, one_mask = crop_to_8(images, masks[0], True)
    assert torch.equal(one_mask, masks[0, 3:19, 2:18])
    _, no_masks = crop_to_8(images, None, True)
    assert no_masks is None


def test_masks_of_another_size_are_left_for_the_mask_check():
    other = torch.ones(1, 16, 16)
    assert crop_to_8(_numbered(23, 21), other, True)[1] is other
    listed = [torch.ones(23, 21)]
    assert crop_to_8(_numbered(23, 21), listed, True)[1] is listed


@pytest.mark.parametrize("h, w", [(7, 9), (9, 7), (7, 7)])
def test_a_side_under_8_pixels_is_refused_with_crop(h, w):
    with refused("images are smaller than 8 pixels"):
        crop_to_8(_numbered(h, w), None, True)


def test_from_images_crops_a_one_size_list_and_its_masks():
    pictures = [_numbered(23, 21)[0], _numbered(23, 21)[0] + 1]
    masks = torch.ones(2, 23, 21)
    data = TrainingData.from_images(pictures, masks, "a", resolution=0, family="sd1", crop_to_multiple_of_8=True)
    assert data.latent_input is False and data.items is None and tuple(data.batch.shape) == (2, 16, 16, 3)
    assert torch.equal(data.batch[1], pictures[1][3:19, 2:18]) and data.sizes == [(16, 16), (16, 16)]
    assert tuple(data.masks.shape) == (2, 16, 16) and data.captions == ["a", "a"]


def test_from_images_into_buckets_keeps_the_pictures_and_their_masks():
    pictures = [torch.zeros(64, 128, 3), torch.zeros(128, 64, 3)]
    masks = [torch.ones(64, 128), torch.ones(128, 64)]
    data = TrainingData.from_images(pictures, masks, "a\nb", resolution=64, family="sd1", crop_to_multiple_of_8=False)
    assert data.latent_input is False and data.batch is None and len(data.items) == 2
    assert data.original_sizes == [(64, 128), (128, 64)] and data.captions == ["a", "b"]
    assert [tuple(m.shape) for m in data.masks] == [(64, 128), (128, 64)]


def test_auto_resolution_buckets_take_the_familys_side():
    pictures = [torch.zeros(512, 1024, 3), torch.zeros(1024, 512, 3)]
    data = TrainingData.from_images(pictures, None, "", resolution=0, family="sdxl", crop_to_multiple_of_8=False)
    side = {"sd1": 512, "sdxl": 1024}
    assert all(h * w <= side["sdxl"] ** 2 and h * w > side["sd1"] ** 2 for h, w in data.sizes)


# ---------------------------------------------------------------- scaling


def test_fit_scales_to_cover_antialiased_and_crops_the_centre():
    x = torch.arange(2 * 10 * 30, dtype=torch.float32).reshape(1, 2, 10, 30)
    # to 8 x 8: the scale that covers is 8 / 10 (rows), so 8 x 24, then the middle 8 columns
    expected = torch.nn.functional.interpolate(x, size=(8, 24), mode="bilinear", antialias=True,
                                               align_corners=False)[..., :, 8:16]
    assert torch.equal(fit(x, (8, 8)), expected)


def test_fit_scales_by_the_larger_ratio_of_the_two_sides():
    x = torch.arange(40 * 10, dtype=torch.float32).reshape(1, 1, 40, 10)
    # to 6 x 9: 9 / 10 (columns) covers; 40 rows become 36, of which the middle 6 (rows 15..20)
    expected = torch.nn.functional.interpolate(x, size=(36, 9), mode="bilinear", antialias=True,
                                               align_corners=False)[..., 15:21, :]
    assert torch.equal(fit(x, (6, 9)), expected)


def test_a_fitted_picture_is_clamped_to_0_1():
    picture = torch.full((8, 8, 3), -1.0)
    picture[4:] = 2.0  # scaled to 4 x 4 the top row stays -1 and the bottom row 2: both clamp
    out = fit_picture(picture, (4, 4))
    assert out[0].eq(0.0).all() and out[3].eq(1.0).all() and out.min() == 0.0 and out.max() == 1.0


def test_a_mask_that_does_not_fit_a_single_picture_is_refused_with_its_size():
    with refused(f"mask shape [1, 4, 5] does not fit images [1, 4, 6]: {FIT}"):
        check_masks(torch.ones(1, 4, 5), [(4, 6)])


def test_a_batch_of_masks_in_a_list_for_pictures_of_several_sizes_is_taken_mask_by_mask():
    pair, single = torch.ones(2, 4, 6), torch.ones(6, 4)
    out = check_masks([pair, single], [(4, 6), (4, 6), (6, 4)])
    assert isinstance(out, list) and [tuple(m.shape) for m in out] == [(4, 6), (4, 6), (6, 4)]


def test_fit_covers_by_rows_when_rows_need_the_larger_scale():
    x = torch.arange(10 * 30, dtype=torch.float32).reshape(1, 1, 10, 30)
    # to 8 x 4: rows need 8 / 10, columns 4 / 30; 8 / 10 wins: 8 x 24, the middle 4 columns (10..13)
    expected = torch.nn.functional.interpolate(x, size=(8, 24), mode="bilinear", antialias=True,
                                               align_corners=False)[..., :, 10:14]
    assert torch.equal(fit(x, (8, 4)), expected)


def test_fit_keeps_each_scaled_side_at_least_the_buckets_own():
    x = torch.arange(10 * 40, dtype=torch.float32).reshape(1, 1, 10, 40)
    # to 4 x 8: 4 / 10 wins, so 4 x 16 (no side below the bucket's), the middle 8 columns (4..11)
    expected = torch.nn.functional.interpolate(x, size=(4, 16), mode="bilinear", antialias=True,
                                               align_corners=False)[..., :, 4:12]
    assert torch.equal(fit(x, (4, 8)), expected)


def test_one_size_pictures_keep_their_height_and_width():
    data = TrainingData.from_images(torch.zeros(2, 24, 16, 3), None, "", resolution=0, family="sd1",
                                    crop_to_multiple_of_8=False)
    assert data.sizes == [(24, 16), (24, 16)]


def test_a_square_picture_between_two_transposed_buckets_takes_the_first_listed():
    """At resolution 100 the buckets are 128 x 64 and 64 x 128 (height, width), equally far from a
    square picture and of equal area: the first listed (the narrower) is taken."""
    assert bucket_sizes(100) == ((128, 64), (64, 128))
    assert bucket_for((50, 50), 100) == (128, 64)
