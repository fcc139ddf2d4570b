"""File operations per second: listing embeddings, inspecting with nearest tokens, merging by expression.

    python -m bench.files [--count 1000] [--json OUT]

- list: read_header over a folder of `count` embeddings (bench.embedding_folder makes them: kohya
  `emb_params`, TokenSmith SDXL files, sizes 1..8 vectors; with --mix one in ten is an A1111 .pt),
  as a browser refresh does; the folder is read once first so the OS cache is warm. Best of 3.
- nearest: comfy_adapter.nearest_tokens for a 4-vector embedding against the tiny SD1 CLIP's full
  49,408-token vocabulary (top 5), and the Inspect node's whole report (nodes.inspection.build_report).
- merge: tokensmith.expression.evaluate on an embedding-merge expression with quoted text (turned
  into vectors by the CLIP's vocabulary) and named embeddings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from devkit import comfy_host

from .child import add_common_args, emit, run_in_host
from .embedding_folder import list_folder, make_files

MERGE_EXPRESSION = "('a photo of'/2 + style_a*0.75 =:4), (style_b:2)"


def rate(fn, min_s: float = 1.0, min_runs: int = 5) -> dict:
    """Runs fn repeatedly for about min_s seconds; operations per second from the median run."""
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"runs": len(times), "median_s": med, "ops_per_s": 1.0 / med}


def bench_list(count: int, mix: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="tokensmith-bench-files-") as tmp:
        folder = Path(tmp)
        make_files(folder, count, mix)
        list_folder(folder)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            listed = list_folder(folder)
            times.append(time.perf_counter() - t0)
        if len(listed) != count:
            raise RuntimeError(f"listed {len(listed)} of {count} files")
    best = min(times)
    return {"case": "files-list" + ("-mixed" if mix else ""), "files": count, "mix": mix, "best_s": best,
            "files_per_s": count / best, "per_file_ms": best / count * 1000}


def measure(count: int) -> list[dict]:
    from devkit.model_factory import build_tiny

    adapter = comfy_host.pack_import("comfy_adapter")
    inspect_node = comfy_host.pack_import("nodes.inspection")
    Embedding = comfy_host.pack_import("tokensmith.embedding").Embedding
    evaluate = comfy_host.pack_import("tokensmith.expression").evaluate
    out = [bench_list(count, False), bench_list(count, True)]

    ms = build_tiny("sd1", seed=0)
    enc = adapter.encoders_of(ms.clip)[0]
    gen = torch.Generator().manual_seed(0)
    emb = Embedding({"clip_l": torch.randn(4, enc.width, generator=gen) * 0.02}, name="bench")
    with torch.inference_mode():
        near = rate(lambda: adapter.nearest_tokens(enc, emb.vectors["clip_l"], k=5))
        report = rate(lambda: inspect_node.build_report(emb, ms.clip, top_k=5))
    out.append({"case": "files-nearest", "vectors": 4, "vocabulary": int(adapter.token_table(enc).shape[0]),
                "top_k": 5, **near, "inspect_report_ops_per_s": report["ops_per_s"],
                "inspect_report_median_s": report["median_s"]})

    names = {"style_a": Embedding({"clip_l": torch.randn(6, enc.width, generator=gen) * 0.02}),
             "style_b": Embedding({"clip_l": torch.randn(3, enc.width, generator=gen) * 0.02})}

    def merge():
        return evaluate(MERGE_EXPRESSION, lambda text: adapter.text_to_vectors(ms.clip, text), names.__getitem__)

    with torch.inference_mode():
        result = merge()
        timing = rate(merge)
    out.append({"case": "files-merge", "expression": MERGE_EXPRESSION, "result_vectors": result.num_vectors,
                **timing})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    add_common_args(parser)
    args = parser.parse_args(argv)
    out = run_in_host(args.threads, lambda: measure(args.count))
    emit(out, args.json)
    for r in out:
        print(f"{r['case']}: {r.get('files_per_s', r.get('ops_per_s')):.1f} per second", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
