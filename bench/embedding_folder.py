"""How fast can a folder of embeddings be listed? Creates N files in a temp folder and times
``read_header`` over all of them (target: 1,000 files in under a second).

    python -m bench.embedding_folder [--count 1000] [--mix] [--json OUT]

By default every file is safetensors (kohya/TokenSmith layouts, SD1 and SDXL), where only the
JSON header is read. ``--mix`` makes one file in ten an A1111 .pt, which needs a bounded full read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokensmith.embedding import Embedding  # noqa: E402
from tokensmith.formats import read_header  # noqa: E402
from tokensmith.writer import save_embedding  # noqa: E402


def make_files(folder: Path, count: int, mix: bool) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        n = 1 + i % 8
        if mix and i % 10 == 9:
            vec = torch.randn(n, 768, generator=g)
            torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": f"e{i}", "step": i},
                       folder / f"a1111_{i:04d}.pt")
        elif i % 3 == 0:
            emb = Embedding({"clip_l": torch.randn(n, 768, generator=g), "clip_g": torch.randn(n, 1280, generator=g)})
            save_embedding(emb, folder, f"xl_{i:04d}")
        else:
            save_file({"emb_params": torch.randn(n, 768, generator=g)}, str(folder / f"kohya_{i:04d}.safetensors"))


def list_folder(folder: Path) -> list[dict]:
    out = []
    for dirpath, _, filenames in os.walk(folder):
        for fn in sorted(filenames):
            out.append(read_header(Path(dirpath) / fn))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--mix", action="store_true", help="one file in ten is an A1111 .pt")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--json", help="also write the result as JSON to this path")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_files(folder, args.count, args.mix)
        list_folder(folder)  # warm the OS file cache and imports once, as a UI refresh would
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            listed = list_folder(folder)
            times.append(time.perf_counter() - start)
        assert len(listed) == args.count
    best = min(times)
    result = {
        "benchmark": "list embeddings with read_header",
        "files": args.count,
        "mix": args.mix,
        "best_seconds": round(best, 4),
        "per_file_ms": round(best / args.count * 1000, 4),
        "runs_seconds": [round(t, 4) for t in times],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"listed {args.count} files{' (mixed)' if args.mix else ''} in {best:.3f} s "
          f"({result['per_file_ms']:.3f} ms per file; best of {args.repeat})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
