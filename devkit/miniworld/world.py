"""The mini-world: coloured shapes on plain backgrounds, drawn with PIL, with captions.

A scene is one shape (circle, square, triangle, star, ring) of one colour and size, at a position
near the middle, on a background colour; its caption names all four words in one fixed template,
"a small red circle on a black background", so every word sits in the same place of the prompt.
`classify` reads a picture back into those words (background from the border, colour from the
pixels that differ from it, size from their extent, shape by the best-matching drawn outline), which
is how tests check that a model draws what its prompt says.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
TEMPLATE = "a {size} {colour} {shape} on a {background} background"
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235), "yellow": (240, 215, 40),
           "purple": (150, 50, 205)}
BACKGROUNDS = {"black": (20, 20, 20), "white": (235, 235, 235), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "star", "ring")
SIZES = {"small": 0.16, "big": 0.30}  # radius as a fraction of the picture's side
JITTER = 0.06  # the centre moves up to this fraction of the side each way


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    background: str
    dx: float = 0.0  # offset of the centre, in fractions of the side
    dy: float = 0.0
    turn: float = 0.0  # rotation of triangles and stars, radians

    @property
    def caption(self) -> str:
        return TEMPLATE.format(size=self.size, colour=self.colour, shape=self.shape, background=self.background)

    @property
    def words(self) -> tuple[str, str, str, str]:
        return self.shape, self.colour, self.size, self.background


def all_captions() -> list[tuple[str, str, str, str]]:
    """Every (shape, colour, size, background) the world has words for."""
    return list(itertools.product(SHAPES, COLOURS, SIZES, BACKGROUNDS))


def random_scene(rng: random.Random, shape=None, colour=None, size=None, background=None) -> Scene:
    return Scene(shape or rng.choice(SHAPES), colour or rng.choice(list(COLOURS)), size or rng.choice(list(SIZES)),
                 background or rng.choice(list(BACKGROUNDS)), rng.uniform(-JITTER, JITTER),
                 rng.uniform(-JITTER, JITTER), rng.uniform(-0.15, 0.15))


def _polygon(cx, cy, r, corners, turn, inner=None):
    points = []
    steps = corners * (2 if inner else 1)
    for i in range(steps):
        a = turn - math.pi / 2 + 2 * math.pi * i / steps
        rr = r * inner if inner and i % 2 else r
        points.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return points


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, turn: float = 0.0,
               background=None) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy + r * 0.2, r * 1.1, 3, turn), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r * 1.1, 5, turn, inner=0.45), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        h = r * 0.55
        draw.ellipse((cx - h, cy - h, cx + h, cy + h), fill=background if background is not None else 0)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw(scene: Scene, size: int = SIZE) -> Image.Image:
    bg = BACKGROUNDS[scene.background]
    img = Image.new("RGB", (size, size), bg)
    cx, cy = size * (0.5 + scene.dx), size * (0.5 + scene.dy)
    draw_shape(ImageDraw.Draw(img), scene.shape, cx, cy, size * SIZES[scene.size], COLOURS[scene.colour], scene.turn,
               background=bg)
    return img


def scenes(count: int, seed: int = 0, **fixed) -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng, **fixed) for _ in range(count)]


# ---- reading a picture back into words ----

def _nearest(rgb: np.ndarray, palette: dict) -> str:
    names = list(palette)
    d = [float(np.sum((rgb - np.array(palette[n], dtype=np.float32)) ** 2)) for n in names]
    return names[int(np.argmin(d))]


def _mask_of(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, 255, background=0)
    return np.asarray(img) > 127


def classify(img) -> dict[str, str]:
    """The words a picture shows: {'background', 'colour', 'shape', 'size'} (PIL image or HxWx3 uint8/float)."""
    a = np.asarray(img, dtype=np.float32)
    if a.max() <= 1.0:
        a = a * 255.0
    a = a[..., :3]
    size = a.shape[0]
    border = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3),
                             a[:, -2:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    dist = np.sqrt(((a - bg_rgb) ** 2).sum(-1))
    mask = dist > 60.0
    out = {"background": background}
    if mask.sum() < 4:
        return {**out, "colour": None, "shape": None, "size": None}
    out["colour"] = _nearest(np.median(a[mask], axis=0), COLOURS)
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    # the outline that fits best, over a few centres and radii around the measured ones
    best, best_iou = None, -1.0
    for shape in SHAPES:
        for r in np.linspace(0.35, 0.65, 7) * extent:
            for ox, oy in ((0, 0), (0, r * 0.15), (0, -r * 0.15)):
                m = _mask_of(shape, cx + ox, cy + oy, r, size)
                iou = (m & mask).sum() / max(1, (m | mask).sum())
                if iou > best_iou:
                    best, best_iou, best_r = shape, iou, r
    out["shape"] = best
    sizes = list(SIZES)
    out["size"] = min(sizes, key=lambda s: abs(SIZES[s] * size - best_r))
    return out


# ---- a concept the world has no word for ----

CONCEPT = "a yellow ring with a small purple star inside"  # said in no caption the model was trained on


def draw_concept(background: str, dx: float = 0.0, dy: float = 0.0, turn: float = 0.0,
                 size: int = SIZE) -> Image.Image:
    """A big yellow ring with a small purple star in its hole."""
    bg = BACKGROUNDS[background]
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    cx, cy = size * (0.5 + dx), size * (0.5 + dy)
    draw_shape(d, "ring", cx, cy, size * SIZES["big"], COLOURS["yellow"], background=bg)
    draw_shape(d, "star", cx, cy, size * 0.085, COLOURS["purple"], turn)
    return img


def concept_pictures(count: int = 8, seed: int = 0, size: int = SIZE) -> list[tuple[Image.Image, str]]:
    """(picture, background word) pairs: the concept on every background in turn, moved a little."""
    rng = random.Random(seed)
    names = list(BACKGROUNDS)
    return [(draw_concept(names[i % len(names)], rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER),
                          rng.uniform(-0.3, 0.3), size), names[i % len(names)]) for i in range(count)]
