"""What `make demo` shows after training: pictures with and without the embedding, side by side,
and how far each set is from the training pictures (runs in the demo's process, not ComfyUI's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

NEGATIVE = ""


def compare_workflow(ckpt_name: str, with_prompt: str, without_prompt: str, size: int, count: int,
                     seed: int = 0, steps: int = 12, cfg: float = 5.0) -> dict:
    """An API-format graph: the same seeds sampled with each prompt, both saved."""
    def sampler(positive: str) -> dict:
        return {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": [positive, 0], "negative": ["4", 0], "latent_image": ["5", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}

    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": with_prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": without_prompt, "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": count}},
        "6": sampler("2"),
        "7": sampler("3"),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "tokensmith_demo/with"}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "tokensmith_demo/without"}},
    }


def saved_images(entry: dict, node_id: str, base: Path) -> list[Image.Image]:
    out = []
    for img in (entry.get("outputs") or {}).get(node_id, {}).get("images", []):
        path = base / img.get("type", "output") / img.get("subfolder", "") / img["filename"]
        out.append(Image.open(path).convert("RGB"))
    return out


def distance(pictures: list[Image.Image], training: list[Image.Image]) -> float:
    """Mean over `pictures` of the mean absolute pixel difference (0-255) to the nearest training picture."""
    train = [np.asarray(t, dtype=np.float32) for t in training]
    return float(np.mean([min(np.abs(np.asarray(p, dtype=np.float32) - t).mean() for t in train) for p in pictures]))


def side_by_side(rows: list[tuple[str, list[Image.Image]]], scale: int = 3) -> Image.Image:
    """One row per (label, pictures), each picture enlarged `scale` times, the label on the left."""
    cell = max(p.width for _, ps in rows for p in ps) * scale
    label_w, pad = 190, 4
    cols = max(len(ps) for _, ps in rows)
    sheet = Image.new("RGB", (label_w + cols * (cell + pad), len(rows) * (cell + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, pictures) in enumerate(rows):
        y = r * (cell + pad)
        draw.multiline_text((6, y + cell // 2 - 12), label, fill=(0, 0, 0))
        for c, p in enumerate(pictures):
            sheet.paste(p.resize((cell, cell), Image.NEAREST), (label_w + c * (cell + pad), y))
    return sheet


def validation_losses(state_file: Path) -> list[float]:
    """The run's validation losses in order (step 0 first), from the trainer's resume-state file."""
    from safetensors import safe_open

    with safe_open(str(state_file), framework="pt") as f:
        meta = f.metadata() or {}
    return [float(v) for v in json.loads(meta.get("history", "{}")).get("val_loss", [])]


# ---- the demo's task on the mini-world ----

# the world's captions read "a {size} {colour} {shape} on a {background} background": with two vectors
# this template puts them where a colour and a shape word stand, and the caption names the background
TEMPLATE = "a big [name] on a [filewords] background"
PREVIEW = "a big [name] on a gray background"


def write_concept_folder(folder: Path, count: int = 8, seed: int = 0) -> Path:
    """The concept's pictures (world.CONCEPT, on each background in turn) with their background word
    as the same-name caption; earlier files of the folder are removed first."""
    from . import world

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    for i, (picture, background) in enumerate(world.concept_pictures(count, seed)):
        picture.save(folder / f"concept_{i:02d}.png")
        (folder / f"concept_{i:02d}.txt").write_text(background)
    return folder


def prompts(name: str, background: str = "gray") -> tuple[str, str]:
    """(with the embedding, without it): the same sentence, the keyword left out of the second."""
    with_it = TEMPLATE.replace("[name]", f"embedding:{name}").replace("[filewords]", background)
    return with_it, TEMPLATE.replace("[name] ", "").replace("[filewords]", background)


def concept_colour_share(pictures: list[Image.Image]) -> float:
    """The mean share of pixels nearest (in the world's palette) to the concept's colours, yellow and
    purple: what a person sees first in the training pictures, whatever the background."""
    from . import world

    palette = np.array([*world.COLOURS.values(), *world.BACKGROUNDS.values()], dtype=np.float32)
    concept = [list(world.COLOURS).index(c) for c in ("yellow", "purple")]
    shares = []
    for p in pictures:
        a = np.asarray(p, dtype=np.float32).reshape(-1, 1, 3)
        nearest = ((a - palette[None]) ** 2).sum(-1).argmin(1)
        shares.append(float(np.isin(nearest, concept).mean()))
    return float(np.mean(shares))


def measure(entry: dict, base: Path, training: list[Image.Image], val_losses: list[float]) -> dict:
    """The demo's result: the validation loss at the start and end, and how far the pictures sampled
    with and without the embedding are from the training pictures (mean absolute difference, 0-255)."""
    with_pics, without_pics = saved_images(entry, "10", base), saved_images(entry, "11", base)
    return {"val_loss_start": val_losses[0] if val_losses else None,
            "val_loss_end": val_losses[-1] if val_losses else None,
            "distance_with": distance(with_pics, training), "distance_without": distance(without_pics, training),
            "concept_colours_training": concept_colour_share(training),
            "concept_colours_with": concept_colour_share(with_pics),
            "concept_colours_without": concept_colour_share(without_pics),
            "pictures": len(with_pics)}
