"""The mini-world: a small SD1.5 checkpoint, pre-trained here, meant to draw what its prompt says
(not there yet: `python -m devkit.miniworld.check` measures how often it does, see check.py).

`ensure_checkpoint()` gives the checkpoint file, building it first when the cache has none for the
current code: the file's name carries a hash of the files it is made from, so a change to the
world or to the pre-training makes a new one (world.py draws and reads the pictures, pretrain.py
trains the VAE and the UNet).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from devkit.comfy_host import REPO_ROOT

HERE = Path(__file__).resolve().parent
CACHE_DIR = REPO_ROOT / ".cache" / "miniworld"
NAME = "tokensmith-miniworld"


SOURCES = ("world.py", "pretrain.py")  # what the checkpoint is made from


def source_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    return h.hexdigest()[:12]


def checkpoint_path() -> Path:
    return CACHE_DIR / f"{NAME}-{source_hash()}.safetensors"


def ensure_checkpoint() -> Path:
    """The cached checkpoint for this code, pre-trained first when missing (in a child process, a
    few minutes of CPU; other builds of the cache are removed)."""
    path = checkpoint_path()
    if not path.exists():
        subprocess.run([sys.executable, "-m", "devkit.miniworld.pretrain", str(path)], cwd=REPO_ROOT, check=True)
        for old in CACHE_DIR.glob(f"{NAME}-*"):
            if old.stem != path.stem and not old.name.startswith(path.stem):
                old.unlink()
    return path
