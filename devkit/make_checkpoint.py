"""python -m devkit.make_checkpoint [PATH] [--family sd15|sd3] [--seed N]: write a real-architecture test
checkpoint (random weights): SD1.5 by default, or SD3 (CLIP-L + CLIP-G, no T5)."""

import argparse
import sys
import tempfile
from pathlib import Path

from .comfy_host import REPO_ROOT, import_comfy
from .model_factory import write_sd3_checkpoint, write_sd15_checkpoint

# Where the demo, the server tests and the benchmarks keep the generated checkpoints (git-ignored).
CHECKPOINT_NAME = "tokensmith-sd15-random.safetensors"
DEFAULT_CHECKPOINT = REPO_ROOT / ".cache" / "checkpoints" / CHECKPOINT_NAME
SD3_CHECKPOINT_NAME = "tokensmith-sd3-random.safetensors"
DEFAULT_SD3_CHECKPOINT = REPO_ROOT / ".cache" / "checkpoints" / SD3_CHECKPOINT_NAME
DEFAULT_PATHS = {"sd15": DEFAULT_CHECKPOINT, "sd3": DEFAULT_SD3_CHECKPOINT}


def ensure_checkpoint(path: Path = DEFAULT_CHECKPOINT, family: str = "sd15") -> Path:
    """The checkpoint at path, generated first when missing (in a child process, so the caller's
    own ComfyUI folders are left alone)."""
    import subprocess

    if not path.exists():
        subprocess.run([sys.executable, "-m", "devkit.make_checkpoint", str(path), "--family", family],
                       cwd=REPO_ROOT, check=True)
    return path


def ensure_sd3_checkpoint(path: Path = DEFAULT_SD3_CHECKPOINT) -> Path:
    """The SD3-architecture checkpoint (full CLIP-L and CLIP-G, no T5) at path, generated first when missing."""
    return ensure_checkpoint(path, family="sd3")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, nargs="?", default=None)
    parser.add_argument("--family", choices=sorted(DEFAULT_PATHS), default="sd15")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = args.path or DEFAULT_PATHS[args.family]
    if path.exists():
        print(f"{path} exists; leaving it as it is")
        return 0
    import_comfy(tempfile.mkdtemp(prefix="tokensmith-ckpt-"))
    write = {"sd15": write_sd15_checkpoint, "sd3": write_sd3_checkpoint}[args.family]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    write(partial, seed=args.seed)
    partial.rename(path)  # never leave a half-written checkpoint under the real name
    print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB, random weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
