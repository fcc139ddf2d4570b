"""The training data: pictures (or latents), masks and captions, checked once, grouped in buckets.

Pictures as people have them: a folder of photos has many sizes and aspect ratios. With
`resolution` N (pixels; 0 = auto) every picture is scaled to about N x N pixels of area at its own
aspect ratio, to the nearest bucket whose sides are multiples of 64 (BUCKET_STEP), centre-cropped
to it; a picture already at its bucket's size is left as it is. Batches are drawn within one bucket,
masks follow their picture, latents are encoded and kept per picture (one VAE batch per bucket).

Auto (0): pictures of one size train at that size, exactly as given (a multiple of 8, or cropped to
one with crop_to_multiple_of_8), unless they are far larger than the family's size (OVERSIZE: phone
photos); those, and pictures of different sizes, are scaled to the family's resolution
(FAMILY_RESOLUTION: 512 SD1, 768 SD2, 1024 SDXL and the flow-matching families). Given latents are
never rescaled: latents of different sizes are grouped by size.

Flow: TrainingData (checked inputs, cheap, before any model runs) -> .prepared(encode, ...) ->
TrainingSet (latents per bucket, captions, the run's batches) for one run; the inputs stay as given.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import TrainingError
from .templates import split_captions

LATENT_SCALE = 8  # pixels per latent along each side (the VAE of every family trained here)
BUCKET_STEP = 64  # bucket sides are multiples of this (the UNet halves a latent three times)
MAX_ASPECT = 4.0  # the longest bucket side is at most this many times the shortest
# the size each family was trained at (the flow-matching ones: SD3, Flux.1, Chroma, Z-Image, Qwen-Image)
FAMILY_RESOLUTION = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "flux": 1024, "chroma": 1024,
                     "zimage": 1024, "qwen_image": 1024}

Size = tuple[int, int]  # (height, width) in pixels


# ---------------------------------------------------------------- buckets


# In auto mode, one-size pictures larger than this many times the family's side (by area) are not
# trained as given (phone photos would train, and preview, at full size) but scaled into buckets
OVERSIZE = 1.5


def oversized(size: Size, family: str) -> bool:
    """Whether one-size pictures of this size are too large to train as given (auto resolution)."""
    side = target_resolution(0, family) * OVERSIZE
    return size[0] * size[1] > side * side


def target_resolution(resolution: int, family: str) -> int:
    """The side of the target area: the given one, or the family's for auto (0)."""
    return int(resolution) or FAMILY_RESOLUTION.get(family, 512)


@functools.cache
def bucket_sizes(resolution: int) -> tuple[Size, ...]:
    """Every bucket for a resolution: sides multiples of BUCKET_STEP, area at most resolution^2,
    each the largest height for its width, aspect ratio within MAX_ASPECT."""
    area = resolution * resolution
    out = []
    for width in range(BUCKET_STEP, area // BUCKET_STEP + 1, BUCKET_STEP):
        height = (area // width) // BUCKET_STEP * BUCKET_STEP
        if height >= BUCKET_STEP and max(width, height) <= MAX_ASPECT * min(width, height):
            out.append((height, width))
    if not out:
        raise TrainingError(f"resolution {resolution} is below the smallest bucket ({BUCKET_STEP} pixels)")
    return tuple(out)


def bucket_for(size: Size, resolution: int) -> Size:
    """The bucket whose aspect ratio is nearest the picture's (the larger one on a tie)."""
    aspect = math.log(size[1] / size[0])
    return min(bucket_sizes(resolution), key=lambda hw: (abs(math.log(hw[1] / hw[0]) - aspect), -hw[0] * hw[1]))


def fit(x: torch.Tensor, size: Size) -> torch.Tensor:
    """[N, C, H, W] scaled (antialiased bilinear) to cover `size` and centre-cropped to it."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    scale = max(size[0] / h, size[1] / w)
    scaled = (max(size[0], round(h * scale)), max(size[1], round(w * scale)))
    x = torch.nn.functional.interpolate(x.float(), size=scaled, mode="bilinear", antialias=True, align_corners=False)
    top, left = (scaled[0] - size[0]) // 2, (scaled[1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def fit_picture(picture: torch.Tensor, size: Size) -> torch.Tensor:
    """One IMAGE picture [H, W, C] at a bucket's size."""
    if tuple(picture.shape[:2]) == tuple(size):
        return picture
    return fit(picture.movedim(-1, 0).unsqueeze(0), size)[0].movedim(0, -1).clamp(0.0, 1.0)


def fit_mask(mask: torch.Tensor, size: Size) -> torch.Tensor:
    """One mask [H, W] at a bucket's size (the picture's transform, so it stays aligned)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    return fit(mask[None, None], size)[0, 0].clamp_min(0.0)


def describe_buckets(buckets: list[tuple[Size, int]]) -> str:
    """'2 buckets: 512x512 (4 pictures), 384x640 (2 pictures)' (width x height)."""
    parts = [f"{w}x{h} ({n} picture{'s' if n != 1 else ''})" for (h, w), n in buckets]
    return f"{len(buckets)} bucket{'s' if len(buckets) != 1 else ''}: " + ", ".join(parts)


# ---------------------------------------------------------------- checks


def _pictures(images) -> list[torch.Tensor]:
    # an IMAGE batch [B, H, W, C], or a list of batches / single pictures of any sizes
    items = images if isinstance(images, (list, tuple)) else [images]
    out = []
    for item in items:
        if not torch.is_tensor(item) or item.dim() not in (3, 4):
            raise TrainingError("no images: connect an IMAGE batch with at least one picture (e.g. from Load Image "
                                "or a dataset loader)")
        out.extend(item if item.dim() == 4 else [item])
    if not out:
        raise TrainingError("no images: connect an IMAGE batch with at least one picture (e.g. from Load Image or a "
                            "dataset loader)")
    return out


def check_pictures(images) -> list[torch.Tensor]:
    """The pictures [H, W, C] of an IMAGE batch or list, checked: colour, finite values."""
    if images is None or (torch.is_tensor(images) and (images.dim() != 4 or images.shape[0] == 0)):
        raise TrainingError("no images: connect an IMAGE batch with at least one picture (e.g. from Load Image or a "
                            "dataset loader)")
    pictures = _pictures(images)
    for p in pictures:
        if p.shape[-1] < 3:
            raise TrainingError(f"images need 3 colour channels, got {p.shape[-1]}")
        if p.shape[0] == 0 or p.shape[1] == 0:  # a crop to nothing: no bucket or latent can be made of it
            raise TrainingError(f"images need at least one pixel a side, got {p.shape[1]}x{p.shape[0]}")
        if not torch.isfinite(p).all():
            raise TrainingError("the images contain NaN or infinite values: check the nodes that produce them")
    return pictures


def crop_to_8(images: torch.Tensor, masks, crop: bool):
    """One-size pictures at their own size: a multiple of 8, or centre-cropped to one (masks alike)."""
    h, w = images.shape[1], images.shape[2]
    if not (h % 8 or w % 8):
        return images, masks
    if not crop:
        raise TrainingError(f"image size {w}x{h} is not a multiple of 8 (the VAE's scale): resize or crop the images, "
                            "or turn on crop_to_multiple_of_8 (or set a resolution)")
    h, w = h - h % 8, w - w % 8
    if h == 0 or w == 0:
        raise TrainingError("images are smaller than 8 pixels")
    top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
    if torch.is_tensor(masks) and tuple(masks.shape[-2:]) == tuple(images.shape[1:3]):
        masks = masks[..., top:top + h, left:left + w]  # the same crop, so masks stay aligned
    return images[:, top:top + h, left:left + w], masks


def _mask_error(masks_shape, count: int, sizes: list[Size]) -> TrainingError:
    what = [count, *sizes[0]] if len(set(sizes)) == 1 else f"{count} pictures of sizes {sorted(set(sizes))[:4]}"
    return TrainingError(f"mask shape {masks_shape} does not fit images {what}: give one mask per image (or one for "
                         "all) of the same height and width")


def check_masks(masks, sizes: list[Size]) -> list[torch.Tensor] | torch.Tensor | None:
    """One mask per picture at its pixel size (one mask for pictures of one size is repeated): a
    [count, H, W] tensor for pictures of one size, else a list of [H, W] masks; None without masks."""
    if masks is None:
        return None
    count = len(sizes)
    if isinstance(masks, (list, tuple)):
        items = [m for t in masks for m in (t if t.dim() == 3 else [t])]
        shape = [len(items)]
        if len(set(sizes)) == 1 and len({tuple(m.shape) for m in items}) == 1:
            masks, items = torch.stack(items), None
    else:
        items, shape = None, list(masks.shape)
    if items is None:
        masks = masks.unsqueeze(0) if masks.dim() == 2 else masks
        if masks.dim() != 3 or len(set(sizes)) != 1 or tuple(masks.shape[-2:]) != sizes[0] \
                or masks.shape[0] not in (1, count):
            raise _mask_error(list(masks.shape), count, sizes)
        masks = masks.expand(count, -1, -1) if masks.shape[0] == 1 else masks
        items = list(masks)
    elif len(items) != count or any(tuple(m.shape) != s for m, s in zip(items, sizes, strict=False)):
        raise _mask_error(shape, count, sizes)
    for m in items:
        if not torch.isfinite(m).all() or (m < 0).any():
            raise TrainingError("masks must be finite and non-negative (they weight the loss per pixel)")
        if m.sum() == 0:
            raise TrainingError("a mask is all zero: that image would teach nothing; fix or remove it")
    return masks if torch.is_tensor(masks) else items


def check_latents(latents) -> list[torch.Tensor]:
    """Given latents (a LATENT dict, a [B, C, H, W] batch, or a list of them), checked as latents."""
    items = latents if isinstance(latents, (list, tuple)) else [latents]
    out = []
    for item in items:
        samples = item["samples"] if isinstance(item, dict) else item
        if not torch.is_tensor(samples) or samples.dim() != 4 or samples.shape[0] == 0:
            raise TrainingError("latents must be a LATENT batch [B, C, H, W] with at least one item")
        if not torch.isfinite(samples).all():
            raise TrainingError("the latents contain NaN or infinite values")
        out.append(samples)
    return out


# ---------------------------------------------------------------- the checked inputs


@dataclass
class Bucket:
    size: Size  # pixels (height, width)
    pictures: list[int]  # the run's picture numbers in this bucket (originals, then mirror images)
    mean: torch.Tensor | None = None  # latents [k, C, h, w], one per picture, encoded once
    std: torch.Tensor | None = None
    masks: torch.Tensor | None = None  # latent-size masks [k, 1, h, w]


@dataclass
class ValidationBatch:
    bucket: Bucket
    positions: torch.Tensor  # in the bucket
    prompts: list[str]
    u: torch.Tensor  # noise levels in [0, 1)
    noise: torch.Tensor


# (pixels [k, H, W, C], spread) -> latent mean and spread [k, C, h, w]: the VAE, through the adapter
Encode = Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]


class TrainingData:
    """The checked training inputs, kept as given (a second run sees the same): pictures or latents,
    masks, captions, and each picture's training size (its bucket). `batch` holds one-size inputs as
    the batch they came in (trained as they are); `items` holds pictures [H, W, C] or latents
    [C, h, w] one by one otherwise."""

    def __init__(self, captions: list[str], sizes: list[Size], *, latent_input: bool, batch=None, items=None,
                 masks=None, original_sizes: list[Size] | None = None):
        self.captions, self.sizes, self.masks, self.latent_input = captions, sizes, masks, latent_input
        self.batch, self.items = batch, items
        self.original_sizes = original_sizes or sizes

    @classmethod
    def from_images(cls, images, masks, captions: str, *, resolution: int, family: str,
                    crop_to_multiple_of_8: bool) -> TrainingData:
        pictures = check_pictures(images)
        sizes = [(int(p.shape[0]), int(p.shape[1])) for p in pictures]
        if resolution == 0 and len(set(sizes)) == 1 and not oversized(sizes[0], family):
            batch = images if torch.is_tensor(images) else torch.stack(pictures)
            batch, masks = crop_to_8(batch, masks, crop_to_multiple_of_8)
            size = (int(batch.shape[1]), int(batch.shape[2]))
            return cls(split_captions(captions, len(sizes)), [size] * len(sizes), latent_input=False, batch=batch,
                       masks=check_masks(masks, [size] * len(sizes)))
        side = target_resolution(resolution, family)
        return cls(split_captions(captions, len(sizes)), [bucket_for(s, side) for s in sizes], latent_input=False,
                   items=pictures, masks=check_masks(masks, sizes), original_sizes=sizes)

    @classmethod
    def from_latents(cls, latents, masks, captions: str) -> TrainingData:
        batches = check_latents(latents)
        sizes = [(int(t.shape[2]) * LATENT_SCALE, int(t.shape[3]) * LATENT_SCALE) for t in batches for _ in t]
        if len(batches) == 1:
            return cls(split_captions(captions, len(sizes)), sizes, latent_input=True, batch=batches[0],
                       masks=check_masks(masks, sizes))
        return cls(split_captions(captions, len(sizes)), sizes, latent_input=True, items=[x for t in batches for x in t],
                   masks=check_masks(masks, sizes))

    @property
    def count(self) -> int:
        return len(self.sizes)

    def buckets(self) -> list[tuple[Size, int]]:
        """(size, pictures) per bucket, the most pictures first (the first is the main one: previews)."""
        counts: dict[Size, int] = {}
        for s in self.sizes:
            counts[s] = counts.get(s, 0) + 1
        return sorted(counts.items(), key=lambda kv: -kv[1])

    @property
    def pixel_size(self) -> Size:
        return self.buckets()[0][0]

    def report(self) -> str | None:
        """What the node and the console say about the buckets: only when pictures were scaled or
        sorted into more than one bucket (one-size pictures at their size train as they are)."""
        scaled = sum(a != b for a, b in zip(self.sizes, self.original_sizes, strict=True))
        if not scaled and len(self.buckets()) == 1:
            return None
        text = describe_buckets(self.buckets())
        return text + (f"; {scaled} of {self.count} pictures scaled to their bucket" if scaled else "")

    # ------------------------------------------------------------ one run's data

    def _stacked(self, numbers: list[int], size: Size) -> torch.Tensor:
        # the bucket's pictures [k, H, W, C] (or latents [k, C, h, w]); mirror images are numbers >= count
        if self.batch is not None:  # one size, as given: the batch itself (and its mirror images)
            mirrored = self.batch.flip(3 if self.latent_input else 2)
            return self.batch if len(numbers) == self.count else torch.cat([self.batch, mirrored])
        out = []
        for n in numbers:
            item = self.items[n % self.count]
            if not self.latent_input:
                item = fit_picture(item, size)
            out.append(item.flip(2 if self.latent_input else 1) if n >= self.count else item)
        return torch.stack(out)

    def _stacked_masks(self, numbers: list[int], size: Size) -> torch.Tensor | None:
        if self.masks is None:
            return None
        if self.batch is not None:  # one size, as given: a [count, H, W] tensor
            return self.masks if len(numbers) == self.count else torch.cat([self.masks, self.masks.flip(2)])
        out = []
        for n in numbers:
            mask = fit_mask(self.masks[n % self.count], size)
            out.append(mask.flip(1) if n >= self.count else mask)
        return torch.stack(out)

    def held_out(self, split: float, seed: int) -> list[int]:
        """The pictures kept out of training for validation: round(split x count) of them (at least one
        when split > 0, never all), chosen by the seed."""
        if split <= 0:
            return []
        if self.count < 2:
            raise TrainingError(f"validation_split needs at least 2 pictures (got {self.count}): one to train "
                                "on and one to validate on; set validation_split to 0")
        count = min(self.count - 1, max(1, round(split * self.count)))
        order = torch.randperm(self.count, generator=torch.Generator().manual_seed(seed)).tolist()
        return sorted(order[:count])

    def prepared(self, encode: Encode | None, *, flip: bool, spread: bool,
                 sample_once: torch.Generator | None = None, held_out: list[int] | None = None) -> TrainingSet:
        """The run's data: latents once per picture (and its mirror image with flip), per bucket;
        with sample_once, one latent drawn from each picture's distribution; held_out pictures (and
        their mirror images) only for validation."""
        sizes = self.sizes * 2 if flip else list(self.sizes)
        order = [size for size, _ in self.buckets()]
        buckets = [Bucket(size, [n for n, s in enumerate(sizes) if s == size]) for size in order]
        for bucket in buckets:
            pixels = self._stacked(bucket.pictures, bucket.size)
            if self.latent_input:
                mean, std = pixels, torch.zeros_like(pixels)
            else:
                mean, std = encode(pixels, spread)
            masks = self._stacked_masks(bucket.pictures, bucket.size)
            with torch.inference_mode(False):
                bucket.mean, bucket.std = mean.clone().float(), std.clone().float()
                if sample_once is not None:
                    bucket.mean = bucket.mean + bucket.std * torch.randn(mean.shape, generator=sample_once)
                if masks is not None:
                    m = masks.clone().float().unsqueeze(1)
                    bucket.masks = torch.nn.functional.interpolate(m, size=mean.shape[-2:], mode="area")
        held = [n + k * self.count for n in (held_out or []) for k in range(2 if flip else 1)]
        return TrainingSet(buckets, self.captions * 2 if flip else list(self.captions), held_out=held)


class TrainingSet:
    """One run's data: the buckets with their latents, the captions per picture, and the batches
    drawn from them (always within one bucket). Pictures in held_out are never drawn for training;
    when there are any, the validation set is made of them alone."""

    def __init__(self, buckets: list[Bucket], captions: list[str], held_out: list[int] | None = None):
        self.buckets, self.captions = buckets, captions
        self.count = sum(len(b.pictures) for b in buckets)
        self._bucket_of = {n: b for b in buckets for n in b.pictures}
        self.held_out = sorted(held_out or [])
        held = set(self.held_out)
        self._training = [n for b in buckets for n in b.pictures if n not in held]
        # per bucket, the pictures a training batch may draw (made once, not per step)
        self._pools = {id(b): [n for n in b.pictures if n not in held] for b in buckets}

    def draw(self, gen: torch.Generator, batch_size: int) -> tuple[Bucket, torch.Tensor, list[int]]:
        """A batch: its bucket, the positions in it and the picture numbers. One bucket: batch_size
        pictures drawn at random; several: a picture at random, then the batch from its bucket."""
        if self.held_out:
            return self._draw_training(gen, batch_size)
        if len(self.buckets) == 1:
            positions = torch.randint(0, self.count, (batch_size,), generator=gen)
            bucket = self.buckets[0]
        else:
            bucket = self._bucket_of[int(torch.randint(0, self.count, (1,), generator=gen))]
            positions = torch.randint(0, len(bucket.pictures), (batch_size,), generator=gen)
        return bucket, positions, [bucket.pictures[int(p)] for p in positions]

    def _draw_training(self, gen: torch.Generator, batch_size: int) -> tuple[Bucket, torch.Tensor, list[int]]:
        # as draw, from the pictures that are not held out
        first = self._training[int(torch.randint(0, len(self._training), (1,), generator=gen))]
        bucket = self._bucket_of[first]
        pool = self._pools[id(bucket)]
        numbers = [pool[int(i)] for i in torch.randint(0, len(pool), (batch_size,), generator=gen)]
        positions = torch.tensor([bucket.pictures.index(n) for n in numbers], dtype=torch.long)
        return bucket, positions, numbers

    def validation_batches(self, count: int, batch_size: int, gen: torch.Generator,
                           prompt: Callable[[int], str]) -> list[ValidationBatch]:
        """A fixed validation set: `count` items over the pictures in turn (the held-out ones when
        there are some), noise levels spread evenly, noise drawn once; in batches of at most
        batch_size within each bucket."""
        chosen = self.held_out or list(range(self.count))
        pictures = [chosen[i % len(chosen)] for i in range(count)]
        prompts = [prompt(n) for n in pictures]
        u = (torch.arange(count, dtype=torch.float32) + 0.5) / count  # spread evenly over the noise levels
        out = []
        for bucket in self.buckets:
            items = [i for i, n in enumerate(pictures) if self._bucket_of[n] is bucket]
            if not items:
                continue
            noise = torch.randn((len(items), *bucket.mean.shape[1:]), generator=gen)
            positions = torch.tensor([bucket.pictures.index(pictures[i]) for i in items], dtype=torch.long)
            for start in range(0, len(items), batch_size):
                sl = slice(start, start + batch_size)
                out.append(ValidationBatch(bucket, positions[sl], [prompts[i] for i in items[sl]],
                                           u[torch.tensor(items[sl], dtype=torch.long)], noise[sl]))
        return out
