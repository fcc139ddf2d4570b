"""python -m devkit.miniworld.check [--prompts 12] [--out grid.png]: does the checkpoint draw its prompts?

Loads the cached mini-world checkpoint (building it first when missing) with ComfyUI's
CheckpointLoaderSimple, draws each prompt with CLIPTextEncode, KSampler (euler, 12 steps, CFG 5,
negative ""), VAEDecode, reads each picture back into words with world.classify and prints how
often each word agrees with the prompt, beside chance (1/5 colour and shape, 1/3 background, 1/2 size).
The grid (sampled pictures above, the drawn scene below) goes to --out.

Measured here (2026-12-02, 20 prompts, CFG 5; chance colour 0.20, shape 0.20, background 0.33; CPU s
with a second job on the other core):
  220 UNet steps, uniform timesteps (the old default), 666 CPU s:  colour 0.75, shape 0.20, background 0.45
  350 UNet steps, uniform timesteps, 911 CPU s:                    colour 0.60, shape 0.05, background 0.55
  350 UNet steps, timesteps leaning to high noise (t_power 2, the default), 918 CPU s:
                                                                   colour 0.75, shape 0.20, background 1.00
Shape is held back by the VAE: classify(decode(encode(picture))) reads the shape right on 0.46 of 100
pictures (stars and rings come back as circles, triangles as squares), and the untrained starting
point gives the same, so its 120 training steps buy almost nothing for shape.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import world

CHANCE = {"colour": 1 / len(world.COLOURS), "shape": 1 / len(world.SHAPES), "background": 1 / len(world.BACKGROUNDS),
          "size": 1 / len(world.SIZES)}


def measure(path: Path, prompts: int = 12, steps: int = 12, cfg: float = 5.0, out: Path | None = None) -> dict:
    """Import ComfyUI in a fresh base folder, load the checkpoint with its loader node, then agreement()."""
    from devkit.comfy_host import import_comfy

    base = Path(tempfile.mkdtemp(prefix="tokensmith-miniworld-check-"))
    import_comfy(base)
    import folder_paths
    import nodes

    link = base / "models" / "checkpoints" / path.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        os.symlink(path.resolve(), link)
    folder_paths.filename_list_cache.clear()
    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(path.name)[:3]
    return agreement(model, clip, vae, prompts, steps, cfg, out)


def agreement(model, clip, vae, prompts: int = 12, steps: int = 12, cfg: float = 5.0, out: Path | None = None,
              verbose: bool = True) -> dict:
    """Sample `prompts` random captions through core's nodes and read each picture back into words:
    the share of pictures whose colour, shape, background and size agree with their caption."""
    import nodes
    from PIL import Image

    rng = random.Random(7)
    agree = dict.fromkeys(CHANCE, 0)
    grid = Image.new("RGB", (world.SIZE * prompts, world.SIZE * 2))
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        negative = nodes.CLIPTextEncode().encode(clip, "")[0]
        for i in range(prompts):
            scene = world.random_scene(rng, shape=world.SHAPES[i % len(world.SHAPES)])
            positive = nodes.CLIPTextEncode().encode(clip, scene.caption)[0]
            latent = nodes.EmptyLatentImage().generate(world.SIZE, world.SIZE, 1)[0]
            sampled = nodes.KSampler().sample(model, i, steps, cfg, "euler", "normal", positive, negative, latent)[0]
            picture = nodes.VAEDecode().decode(vae, sampled)[0][0].cpu().numpy()
            got = world.classify(picture)
            for k in agree:
                agree[k] += got[k] == getattr(scene, k)
            if verbose:
                print(f"  {scene.caption:45s} -> {got}", flush=True)
            grid.paste(Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8)), (world.SIZE * i, 0))
            grid.paste(world.draw(scene), (world.SIZE * i, world.SIZE))
    rates = {k: v / prompts for k, v in agree.items()}
    if out is not None:
        grid.save(out)
    return {"agreement": rates, "chance": CHANCE, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0}


def main(argv=None) -> int:
    from . import ensure_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the cached mini-world checkpoint")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="where to save the picture grid")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = measure(args.checkpoint or ensure_checkpoint(), args.prompts, args.steps, args.cfg, out=args.out)
    for k, v in result["agreement"].items():
        print(f"{k:10s} agrees {v:.2f} (chance {result['chance'][k]:.2f})")
    print(f"sampling: {result['wall_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
