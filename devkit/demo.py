"""`make demo`: train an embedding end to end in a real, headless ComfyUI and show what it learned.

    make demo                                   # the mini-world checkpoint, pre-trained here
    make demo ARGS="--checkpoint /path/to/model.safetensors --size 512 --steps 1500"
    COMFYUI_PATH=/path/to/ComfyUI make demo ARGS="--checkpoint v1-5-pruned-emaonly.safetensors"

Steps: start ComfyUI on a free loopback port with the pack (base folder .demo/), put a checkpoint in
.demo/models/checkpoints, write the training pictures into .demo/input/tokensmith_demo, queue the
example workflow "Train an embedding from images" through the HTTP API with a progress bar fed by
the websocket, then print the saved embedding's inspect report and copy the pictures to .demo/previews/.

By default the checkpoint is the mini-world (devkit/miniworld: a small SD1.5 checkpoint pre-trained
on this machine, once, to draw coloured shapes from captions) and the pictures are a concept it has
no word for (a yellow ring with a purple star inside). After training, the same seeds are sampled
with the embedding in the prompt and without it; .demo/side_by_side.png shows the training pictures
and both rows, and .demo/result.json holds the validation loss at the start and end and how far each
row is from the training pictures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .comfy_host import REPO_ROOT, host_path
from .workflows import DEMO_FOLDER, TRAIN, load_example, set_inputs, ui_to_api

DEMO_BASE = REPO_ROOT / ".demo"
DEMO_NAME = "tokensmith-ring"
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".sft")


def say(text: str = "") -> None:
    print(text, flush=True)


def write_negative_dataset(folder: Path, count: int = 6, size: int = 64, seed: int = 1) -> Path:
    """Blurred, noisy versions of the demo pictures: what a negative embedding learns to avoid."""
    import random

    from PIL import ImageFilter

    from .dataset import make_images

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i, (img, _caption) in enumerate(make_images(count, size, seed)):
        blurred = img.filter(ImageFilter.GaussianBlur(radius=max(1.0, size / 24)))
        px = blurred.load()
        for _ in range(size * size // 6):
            x, y = rng.randrange(size), rng.randrange(size)
            v = rng.randrange(256)
            px[x, y] = (v, v, v)
        blurred.save(folder / f"bad_{i:02d}.png")
        (folder / f"bad_{i:02d}.txt").write_text("blurry, noisy, low quality")
    return folder


GENERATED = ("tokensmith-miniworld", "tokensmith-sd15-random")  # checkpoints this project makes


def find_checkpoint(arg: str | None, world_build: str | None, base: Path) -> tuple[Path, bool]:
    """(checkpoint file, is it the mini-world). `arg` may be a path or a file name in the ComfyUI
    host's models/checkpoints; without it, a checkpoint of the user's in .demo/models/checkpoints, else
    the mini-world (world_build, or the cached build, made first when missing)."""
    from .miniworld import ensure_checkpoint

    if arg:
        path = Path(arg).expanduser()
        if not path.is_file():
            path = host_path() / "models" / "checkpoints" / arg
        if not path.is_file():
            raise SystemExit(f"--checkpoint {arg}: no such file (give a path, or a file name in "
                             f"{host_path() / 'models' / 'checkpoints'})")
        return path.resolve(), False
    folder = base / "models" / "checkpoints"
    mine = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in CHECKPOINT_EXTENSIONS] if folder.is_dir() else []
    others = [p for p in mine if not p.name.startswith(GENERATED)]
    if others:
        return others[0], False
    if world_build:
        return Path(world_build).resolve(), True
    say("No checkpoint of yours in .demo/models/checkpoints: using the mini-world checkpoint (pre-trained on")
    say("this machine the first time, a few minutes of CPU, then kept in .cache/miniworld).")
    return ensure_checkpoint(), True


def pick_threads() -> int | None:
    """Torch threads for the server: the cores that are idle now. Two threads fighting other work for
    two cores run a training step about twice as slowly as one thread (measured here), so a busy
    machine gets fewer. None when the user chose (OMP_NUM_THREADS set) or the load is unknown."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cpus = os.cpu_count() or 1
    return max(1, min(cpus, round(cpus - load)))


def link_checkpoint(path: Path, base: Path, world: bool = False) -> str:
    """The checkpoint in .demo/models/checkpoints (a link); a mini-world build under a name the next
    run recognises as generated, not as the user's."""
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = path.name if not world or path.name.startswith(GENERATED) else f"{GENERATED[0]}-{path.name}"
    link = folder / name
    if link.resolve() != path.resolve():
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(path, link)
    return name


class ProgressBar:
    """One terminal line: bar, step/total, loss, validation loss, lr, ETA (plain lines when not a tty)."""

    def __init__(self, width: int = 28):
        self.width = width
        self.tty = sys.stdout.isatty()
        self.last_printed = -1
        self.val = None

    def update(self, d: dict) -> None:
        step, total = d.get("step"), d.get("total") or 0
        if step is None or not total:
            return
        if d.get("val_loss") is not None:
            self.val = d["val_loss"]
        filled = int(self.width * step / total)
        bar = "#" * filled + "." * (self.width - filled)
        eta = d.get("eta_s")
        parts = [f"[{bar}] {step:>5}/{total}", f"loss {d.get('loss', 0):.4f}"]
        if self.val is not None:
            parts.append(f"val {self.val:.4f}")
        parts += [f"lr {d.get('lr', 0):.2g}", f"ETA {int(eta)}s" if eta is not None else "ETA -"]
        line = "  ".join(parts)
        if self.tty:
            print("\r" + line + " " * 4, end="", flush=True)
        elif step == total or step * 10 // total != self.last_printed:
            self.last_printed = step * 10 // total
            say(line)

    def note(self, text: str) -> None:
        if self.tty:
            print()
        say(f"  {text}")

    def done(self) -> None:
        if self.tty:
            print(flush=True)


async def run_with_progress(server, workflow: dict, timeout: float) -> dict:
    """Queue the workflow with our client id, draw the progress from the websocket, return /history."""
    import aiohttp

    bar = ProgressBar()
    url = f"ws://127.0.0.1:{server.port}/ws?clientId={server.client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, heartbeat=30) as ws:
        prompt_id = await asyncio.get_running_loop().run_in_executor(None, server.queue, workflow)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await ws.receive(timeout=max(1.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.BINARY:
                continue  # sampler preview frames
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            kind, body = data.get("type"), data.get("data") or {}
            if kind == "tokensmith.train":
                bar.update(body)
                event = (body.get("event") or {}).get("kind")
                if event in ("rollback", "early_stop", "snapshot"):
                    bar.note(f"{event} at step {body.get('step')}")
            elif kind == "executing" and body.get("prompt_id") == prompt_id and body.get("node") is None:
                break
            elif kind in ("execution_error", "execution_interrupted") and body.get("prompt_id") == prompt_id:
                break
        bar.done()
    return server.wait(prompt_id, timeout=60)


def copy_previews(entry: dict, base: Path, dest: Path) -> list[Path]:
    """Every image the prompt showed or saved, copied out of ComfyUI's temp/output folders."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for node_id, out in (entry.get("outputs") or {}).items():
        for img in out.get("images", []):
            folder = {"temp": "temp", "output": "output"}.get(img.get("type"), "output")
            src = base / folder / img.get("subfolder", "") / img["filename"]
            if src.is_file():
                target = dest / f"node{node_id}_{img['filename']}"
                shutil.copy2(src, target)
                copied.append(target)
    return copied


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint file (or a name in the host's models/checkpoints); "
                                             "default: the mini-world checkpoint")
    parser.add_argument("--world-build", help="a mini-world build to use instead of the cached one "
                                              "(python -m devkit.miniworld.pretrain PATH writes one)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps (default {WORLD_STEPS} on the mini-world, {OWN_STEPS} otherwise)")
    parser.add_argument("--size", type=int, default=64, help="picture size in pixels with your checkpoint "
                                                              "(default 64; 512 for SD1.5); the mini-world is 64")
    parser.add_argument("--images", type=int, default=8, help="how many training pictures (default 8)")
    parser.add_argument("--name", default=None, help="the embedding's name")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before giving up")
    args = parser.parse_args(argv)
    if args.size % 8:
        parser.error("--size must be a multiple of 8")
    return args


WORLD_STEPS, OWN_STEPS = 150, 80
WORLD_NAME = "tokensmith-concept"


def training_inputs(args, world: bool) -> dict:
    """What the demo changes in the example's Train Embedding node."""
    steps = args.steps
    common = {"name": args.name, "steps": steps, "validate_every": max(5, steps // 10), "early_stop_patience": 0,
              "preview_every": max(1, steps // 3), "overwrite": True}
    if not world:
        return common
    from .miniworld import showcase

    return {**common, "template": "custom", "custom_template": showcase.TEMPLATE, "num_vectors": 2,
            "init_text": "*", "preview_prompt": showcase.PREVIEW, "preview_cfg": 5.0}


def write_pictures(args, world: bool, base: Path) -> Path:
    folder = base / "input" / DEMO_FOLDER
    if world:
        from .miniworld import showcase

        return showcase.write_concept_folder(folder, count=args.images)
    from .dataset import write_dataset

    return write_dataset(folder, count=args.images, size=args.size)


def train(server, ckpt_name: str, args, world: bool) -> dict:
    api = ui_to_api(load_example(TRAIN), server.get("/object_info"))
    api = set_inputs(api, "CheckpointLoaderSimple", ckpt_name=ckpt_name)
    api = set_inputs(api, "TokenSmithTrainEmbedding", **training_inputs(args, world))
    api = set_inputs(api, "EmptyLatentImage", width=args.size, height=args.size)
    api = set_inputs(api, "KSampler", steps=12)
    say(f"workflow   : example_workflows/{TRAIN}.json -> /prompt ({args.steps} steps, a preview every "
        f"{training_inputs(args, world)['preview_every']})")
    say("")
    return asyncio.run(run_with_progress(server, api, args.timeout))


def compare(server, ckpt_name: str, args, base: Path, folder: Path) -> dict:
    """Sample the same seeds with and without the embedding; the side-by-side sheet and result.json."""
    from PIL import Image

    from .miniworld import showcase

    with_prompt, without_prompt = showcase.prompts(args.name)
    entry = server.wait(server.queue(showcase.compare_workflow(ckpt_name, with_prompt, without_prompt, args.size, 4)),
                        timeout=args.timeout)
    training = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]
    state = base / "output" / "tokensmith_state" / f"{args.name}.state.safetensors"
    result = showcase.measure(entry, base, training, showcase.validation_losses(state) if state.is_file() else [])
    result.update({"prompt_with": with_prompt, "prompt_without": without_prompt})
    sheet = showcase.side_by_side([("training pictures", training[:4]), (f"with\nembedding:{args.name}",
                                   showcase.saved_images(entry, "10", base)),
                                   ("without", showcase.saved_images(entry, "11", base))])
    sheet.save(base / "side_by_side.png")
    (base / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def report_comparison(result: dict) -> None:
    w, wo = result["distance_with"], result["distance_without"]
    say(f"with/without: '{result['prompt_with']}' against '{result['prompt_without']}', same seeds")
    say("             distance to the training pictures (mean |pixel difference|, 0-255, lower is closer):")
    say(f"             with the embedding {w:.1f}, without {wo:.1f}: "
        + (f"{(1 - w / wo) * 100:.0f}% closer with it" if w < wo else "NOT closer with it"))
    say(f"             share of the concept's colours (yellow, purple): training {result['concept_colours_training']:.2f}, "
        f"with {result['concept_colours_with']:.2f}, without {result['concept_colours_without']:.2f}")
    if result.get("val_loss_start") is not None:
        say(f"             validation loss {result['val_loss_start']:.4f} -> {result['val_loss_end']:.4f}")
    say("             pictures: .demo/side_by_side.png (training, with, without); figures: .demo/result.json")


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    import signal

    from .server import ComfyServer, error_message

    # `kill` as well as Ctrl-C stops the ComfyUI child through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    base = DEMO_BASE
    for sub in ("models/checkpoints", "models/embeddings", "input", "output"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    checkpoint, world = find_checkpoint(args.checkpoint, args.world_build, base)
    ckpt_name = link_checkpoint(checkpoint, base, world)
    if world:
        from .miniworld import world as mini

        args.size = mini.SIZE
    args.steps = args.steps or (WORLD_STEPS if world else OWN_STEPS)
    args.name = args.name or (WORLD_NAME if world else DEMO_NAME)
    folder = write_pictures(args, world, base)
    say(f"checkpoint : {checkpoint}")
    say(f"pictures   : {folder.relative_to(REPO_ROOT)} ({args.images} x {args.size}px, captions in .txt)")

    threads = pick_threads()
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the ComfyUI child process
    server = ComfyServer(base, log_path=base / "server.log")
    say(f"ComfyUI    : starting {host_path()} on {server.url} (log: .demo/server.log"
        + (f", {threads} torch thread(s) for {os.cpu_count()} cores" if threads else "") + ") ...")
    server.start(timeout=180)
    try:
        say(f"ComfyUI    : up after {time.monotonic() - started:.0f}s")
        entry = train(server, ckpt_name, args, world)
        err = error_message(entry)
        if err or entry.get("status", {}).get("status_str") != "success":
            say(f"\nthe workflow failed: {err or entry.get('status')}\n--- server log ---\n{server.log_tail()}")
            return 1
        previews = copy_previews(entry, base, base / "previews")
        result = compare(server, ckpt_name, args, base, folder) if world else None
    finally:
        server.stop()
    return finish(args, base, previews, result, started)


def finish(args, base: Path, previews: list[Path], result: dict | None, started: float) -> int:
    path = base / "models" / "embeddings" / f"{args.name}.safetensors"
    if not path.is_file():
        say(f"the workflow finished but {path} is missing")
        return 1
    say("")
    say(f"embedding  : {path.relative_to(REPO_ROOT)}  (use it in a prompt as embedding:{args.name})")
    say("")
    report = subprocess.run([sys.executable, "-m", "tokensmith", "inspect", str(path)], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    say(report.stdout.rstrip() or report.stderr.rstrip())
    say("")
    say(f"previews   : {base.relative_to(REPO_ROOT) / 'previews'}/ ({len(previews)} images: training previews, "
        "the loss graph, the KSampler picture)")
    for p in previews:
        say(f"             {p.relative_to(REPO_ROOT)}")
    if result is not None:
        say("")
        report_comparison(result)
    say("")
    say(f"done in {time.monotonic() - started:.0f}s. `make serve` opens this ComfyUI in your browser.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
