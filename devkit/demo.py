"""`make demo`: train an embedding end to end in a real, headless ComfyUI and show what came out.

    make demo                                   # the small SD1.5-architecture checkpoint (random weights)
    make demo ARGS="--checkpoint /path/to/model.safetensors --size 512 --steps 1500"
    COMFYUI_PATH=/path/to/ComfyUI make demo ARGS="--checkpoint v1-5-pruned-emaonly.safetensors"

Steps: start ComfyUI on a free loopback port with the pack (base folder .demo/), put a checkpoint in
.demo/models/checkpoints (yours, or the generated one), write the demo pictures into
.demo/input/tokensmith_demo, queue the example workflow "Train an embedding from images" through the
HTTP API with a progress bar fed by the websocket, then print the saved embedding's inspect report
and copy the preview images to .demo/previews/.
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


def find_checkpoint(arg: str | None, base: Path) -> tuple[Path, bool]:
    """(checkpoint file, is it the generated random one). `arg` may be a path or a file name in the
    ComfyUI host's models/checkpoints."""
    from .make_checkpoint import ensure_checkpoint

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
    generated = [p for p in mine if p.name.startswith("tokensmith-sd15-random")]
    others = [p for p in mine if p not in generated]
    if others:
        return others[0], False
    if not generated:
        say("No checkpoint in .demo/models/checkpoints: using the small SD1.5-architecture checkpoint that "
            "this")
        say("project generates (created once, ~400 MB, in .cache/checkpoints).")
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


def link_checkpoint(path: Path, base: Path) -> str:
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / path.name
    if link.resolve() != path.resolve():
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(path, link)
    return path.name


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint file (or a name in the host's models/checkpoints); "
                                             "default: the generated SD1.5-architecture one (random weights)")
    parser.add_argument("--steps", type=int, default=80, help="training steps (default 80)")
    parser.add_argument("--size", type=int, default=64, help="picture size in pixels (default 64; 512 for a real model)")
    parser.add_argument("--images", type=int, default=6, help="how many demo pictures (default 6)")
    parser.add_argument("--name", default=DEMO_NAME, help="the embedding's name")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before giving up")
    args = parser.parse_args(argv)
    if args.size % 8:
        parser.error("--size must be a multiple of 8")

    started = time.monotonic()
    import signal

    from .server import ComfyServer, error_message

    # `kill` as well as Ctrl-C stops the ComfyUI child through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    base = DEMO_BASE
    for sub in ("models/checkpoints", "models/embeddings", "input", "output"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    checkpoint, generated = find_checkpoint(args.checkpoint, base)
    ckpt_name = link_checkpoint(checkpoint, base)
    if generated:
        say("")
        say("NOTE: this checkpoint has the real SD1.5 architecture but RANDOM weights. The demo shows the whole")
        say("      pipeline (training, saving, using the embedding); its pictures are noise, not a ring.")
        say('      For real results: make demo ARGS="--checkpoint /path/to/sd15-model.safetensors --size 512"')
        say("      (or COMFYUI_PATH=/path/to/ComfyUI and --checkpoint NAME from its models/checkpoints).")
        say("")
    from .dataset import write_dataset

    dataset = write_dataset(base / "input" / DEMO_FOLDER, count=args.images, size=args.size)
    say(f"checkpoint : {checkpoint}")
    say(f"pictures   : {dataset.relative_to(REPO_ROOT)} ({args.images} x {args.size}px, captions in .txt)")

    threads = pick_threads()
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the ComfyUI child process
    server = ComfyServer(base, log_path=base / "server.log")
    say(f"ComfyUI    : starting {host_path()} on {server.url} (log: .demo/server.log"
        + (f", {threads} torch thread(s) for {os.cpu_count()} cores" if threads else "") + ") ...")
    server.start(timeout=180)
    try:
        say(f"ComfyUI    : up after {time.monotonic() - started:.0f}s")
        api = ui_to_api(load_example(TRAIN), server.get("/object_info"))
        preview_every = max(1, args.steps // 2)
        api = set_inputs(api, "CheckpointLoaderSimple", ckpt_name=ckpt_name)
        api = set_inputs(api, "TokenSmithTrainEmbedding", name=args.name, steps=args.steps,
                         validate_every=max(5, args.steps // 4), early_stop_patience=0,
                         preview_every=preview_every, overwrite=True)
        api = set_inputs(api, "EmptyLatentImage", width=args.size, height=args.size)
        api = set_inputs(api, "KSampler", steps=12)
        say(f"workflow   : example_workflows/{TRAIN}.json -> /prompt ({args.steps} steps, a preview every "
            f"{preview_every})")
        say("")
        entry = asyncio.run(run_with_progress(server, api, args.timeout))
        err = error_message(entry)
        if err or entry.get("status", {}).get("status_str") != "success":
            say(f"\nthe workflow failed: {err or entry.get('status')}\n--- server log ---\n{server.log_tail()}")
            return 1
        previews = copy_previews(entry, base, base / "previews")
    finally:
        server.stop()

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
    say("")
    say(f"done in {time.monotonic() - started:.0f}s. `make serve` opens this ComfyUI in your browser.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
