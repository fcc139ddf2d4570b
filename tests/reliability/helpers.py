"""Helpers for the reliability suite: run nodes as ComfyUI does, count model runs with torch forward
hooks, snapshot the file system, start servers, read a server's memory and threads."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from devkit import comfy_host
from devkit.dataset import write_dataset
from devkit.make_checkpoint import CHECKPOINT_NAME
from devkit.server import ComfyServer

# Every hostile name carries this, so a file it might create anywhere can be found by name.
MARK = "tsmark"


def run_node(cls, **inputs):
    """Execute a V3 node the way ComfyUI does (under inference mode); returns io.NodeOutput."""
    with torch.inference_mode():
        return cls.execute(**inputs)


def train_inputs(models, images=..., **overrides) -> dict:
    """TokenSmithTrainEmbedding inputs as ComfyUI hands them over (is_input_list: every input a list).
    ``images=None`` leaves the input unconnected; left out, two seeded 64 px pictures."""
    if images is ...:
        images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    inputs = {"model": models.model, "clip": models.clip, "vae": models.vae, "images": images,
              "name": "reliability-ok", "init_text": "ring", "num_vectors": 1, "template": "object", "steps": 2,
              "learning_rate": "5e-3", "batch_size": 1, "seed": 0, "overwrite": True, "validate_every": 0}
    inputs.update(overrides)
    return {k: (v if isinstance(v, list) else [v]) for k, v in inputs.items() if v is not None}


class ModelRuns:
    """Counts forward calls of the VAE's encoder and decoder, the diffusion model and each text
    encoder's token embedding (torch forward hooks: nothing of ComfyUI is replaced). These are the
    modules whose forward runs however ComfyUI's wrappers call them (VAE.encode calls
    first_stage_model.encode, not its forward)."""

    def __init__(self, *model_sets):
        self.counts = {"vae": 0, "unet": 0, "text": 0}
        self._handles = []
        for ms in model_sets:
            watched = [("vae", ms.vae.first_stage_model.encoder), ("vae", ms.vae.first_stage_model.decoder),
                       ("unet", ms.model.model.diffusion_model)]
            watched += [("text", m) for name, m in ms.clip.cond_stage_model.named_modules()
                        if name.endswith("embeddings.token_embedding")]
            assert len(watched) > 3, "no text encoder found to watch"
            for key, module in watched:
                self._handles.append(module.register_forward_pre_hook(self._hook(key)))

    def _hook(self, key):
        def hook(module, args):
            self.counts[key] += 1

        return hook

    def close(self):
        for h in self._handles:
            h.remove()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def tree(root: Path) -> dict[str, tuple]:
    """{relative path: (kind, size, mtime_ns)} of everything under root (symlinks not followed)."""
    out = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            try:
                st = full.lstat()
            except FileNotFoundError:
                continue
            kind = "link" if full.is_symlink() else ("dir" if full.is_dir() else "file")
            out[str(full.relative_to(root))] = (kind, st.st_size if kind == "file" else 0,
                                                st.st_mtime_ns if kind == "file" else 0)
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return out


def marked_paths(*roots) -> list[str]:
    """Every path whose name carries MARK under the given roots (one level for /tmp, all below the rest)."""
    found = []
    for root in roots:
        root = Path(root)
        if str(root) == "/tmp":
            found += [str(p) for p in root.iterdir() if MARK in p.name]
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            found += [os.path.join(dirpath, n) for n in dirnames + filenames if MARK in n]
    return found


class FsWatch:
    """Snapshots of a base folder (everything) and of /tmp (names), to prove where writes went."""

    def __init__(self, base: Path, allowed=("models/embeddings", "output", "temp")):
        self.base = Path(base)
        self.allowed = tuple(allowed)
        self.before = tree(self.base)
        self.parent_before = set(os.listdir(self.base.parent))
        self.tmp_before = set(os.listdir("/tmp"))

    def changes(self) -> list[str]:
        after = tree(self.base)
        changed = [p for p in set(self.before) | set(after) if self.before.get(p) != after.get(p)]
        return sorted(changed)

    def assert_only_allowed_writes(self):
        bad = [p for p in self.changes()
               if not any(p == a or p.startswith(a + os.sep) for a in self.allowed)
               and not any(a.startswith(p + os.sep) for a in self.allowed)]
        assert not bad, f"written outside {self.allowed}: {bad[:20]}"
        new_siblings = set(os.listdir(self.base.parent)) - self.parent_before
        assert not new_siblings, f"written next to the base folder: {sorted(new_siblings)}"
        new_tmp = [n for n in set(os.listdir("/tmp")) - self.tmp_before if MARK in n]
        assert not new_tmp, f"written into /tmp: {new_tmp}"
        assert not marked_paths("/tmp", self.base.parent, Path.cwd()), marked_paths("/tmp", self.base.parent)


# ----------------------------------------------------------------------------- servers


def server_base(tmp_path_factory, checkpoint_file, label: str, dataset: bool = True) -> Path:
    base = tmp_path_factory.mktemp(label)
    (base / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(checkpoint_file, base / "models" / "checkpoints" / CHECKPOINT_NAME)
    if dataset:
        write_dataset(base / "input" / "ts_rings", count=3, size=64)
    return base


@contextlib.contextmanager
def running_server(base: Path, **kwargs):
    srv = ComfyServer(base, **kwargs).start()
    try:
        yield srv
    finally:
        srv.stop()
        assert srv.proc.poll() is not None, "the server process is still running"


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")


def process_stats(pid: int) -> dict:
    import psutil

    proc = psutil.Process(pid)
    return {"rss_mb": proc.memory_info().rss / 2**20, "threads": proc.num_threads(),
            "children": len(proc.children(recursive=True))}


def log_size(server) -> int:
    return server.log_path.stat().st_size if server.log_path.exists() else 0


def log_since(server, offset: int) -> str:
    """What the server logged after ``offset`` (ComfyUI's own start-up tracebacks, e.g. for a missing
    torchaudio, come before)."""
    with open(server.log_path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def pack_tracebacks(log: str) -> list[str]:
    """Tracebacks in a server log that pass through TokenSmith's code (ComfyUI logs others of its own,
    e.g. from its database pool)."""
    blocks = log.split("Traceback (most recent call last):")[1:]

    # judged by the frames' resolved file paths only (tqdm's "TokenSmith:" bar can land inside a block)
    return [b[:2000] for b in blocks if comfy_host.frames_in_pack(b.split("\n\n")[0])]
