"""python -m devkit.make_checkpoint PATH [--seed N]: write the real-architecture SD1.5 test checkpoint."""

import argparse
import sys
import tempfile
from pathlib import Path

from .comfy_host import REPO_ROOT, import_comfy
from .model_factory import write_sd15_checkpoint

# Where the demo, the server tests and the benchmarks keep the generated checkpoint (git-ignored).
CHECKPOINT_NAME = "tokensmith-sd15-random.safetensors"
DEFAULT_CHECKPOINT = REPO_ROOT / ".cache" / "checkpoints" / CHECKPOINT_NAME


def ensure_checkpoint(path: Path = DEFAULT_CHECKPOINT) -> Path:
    """The checkpoint at path, generated first when missing (in a child process, so the caller's
    own ComfyUI folders are left alone)."""
    import subprocess

    if not path.exists():
        subprocess.run([sys.executable, "-m", "devkit.make_checkpoint", str(path)], cwd=REPO_ROOT, check=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, nargs="?", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.path.exists():
        print(f"{args.path} exists; leaving it as it is")
        return 0
    import_comfy(tempfile.mkdtemp(prefix="tokensmith-ckpt-"))
    args.path.parent.mkdir(parents=True, exist_ok=True)
    partial = args.path.with_name(args.path.name + ".partial")
    write_sd15_checkpoint(partial, seed=args.seed)
    partial.rename(args.path)  # never leave a half-written checkpoint under the real name
    print(f"wrote {args.path} ({args.path.stat().st_size / 1e6:.0f} MB, random weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
