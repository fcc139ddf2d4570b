"""A small, licence-clean training set made on the spot: a 'concept' (a coloured ring on a
patterned ground) photographed in a few variations, with kohya-style caption files."""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw


def make_images(count: int = 6, size: int = 64, seed: int = 0) -> list[tuple[Image.Image, str]]:
    rng = random.Random(seed)
    out = []
    for _i in range(count):
        bg = tuple(rng.randrange(150, 256) for _ in range(3))
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        for _ in range(6):  # ground texture
            x, y = rng.randrange(size), rng.randrange(size)
            r = rng.randrange(2, max(3, size // 8))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(max(0, c - 40) for c in bg))
        cx = size / 2 + rng.uniform(-size / 8, size / 8)
        cy = size / 2 + rng.uniform(-size / 8, size / 8)
        radius = size * rng.uniform(0.22, 0.32)
        width = max(2, int(size * 0.08))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=(200, 30, 40), width=width)
        angle = rng.uniform(0, 2 * math.pi)  # a blue dot on the ring: the detail to learn
        dx, dy = cx + radius * math.cos(angle), cy + radius * math.sin(angle)
        draw.ellipse((dx - width, dy - width, dx + width, dy + width), fill=(30, 60, 200))
        caption = rng.choice(["red ring, blue dot", "ring, plain background", "red circle, dot, light background"])
        out.append((img, caption))
    return out


def write_dataset(folder: Path, count: int = 6, size: int = 64, seed: int = 0) -> Path:
    """PNG files with same-name .txt captions (the layout core's dataset loaders read)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, caption) in enumerate(make_images(count, size, seed)):
        img.save(folder / f"ring_{i:02d}.png")
        (folder / f"ring_{i:02d}.txt").write_text(caption)
    return folder
