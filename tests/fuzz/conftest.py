"""One fuzz run per session, in child processes (a fresh interpreter gives honest memory figures).

TOKENSMITH_FUZZ_EXAMPLES sets the total number of inputs (`make fuzz`: 100,000); unset, a fixed
few thousand run (`make test`). The same seed gives the same inputs, so every run is repeatable.
Large budgets are split over several processes (one per CPU, at most 8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from devkit.comfy_host import REPO_ROOT
from devkit.fuzzing import runner
from tests.core import golden
from tokensmith.embedding import Embedding
from tokensmith.formats.png_fmt import write_png_card
from tokensmith.writer import write_embedding_file

_REPORT: dict = {}


def _extra_seeds(folder) -> None:
    """Layouts beyond the golden set: TokenSmith's own files and cards, fp16 on cuda:0, SD2, many tokens."""
    emb = Embedding({"clip_l": golden.vectors(3, 768, 21), "clip_g": golden.vectors(3, 1280, 22)}, name="own", step=40,
                    metadata={"note": "seed"})
    write_embedding_file(emb, folder / "own_sdxl.safetensors")
    write_embedding_file(Embedding({"clip_h": golden.vectors(2, 1024, 23)}, name="own2"), folder / "own_sd2.safetensors")
    write_png_card(Embedding({"clip_l": golden.vectors(1, 768, 24)}, name="card", step=3), folder / "own_card.png",
                   image=golden.picture(16, 24))
    golden.a1111_pt(folder / "half_cuda.pt", golden.vectors(2, 768, 25, torch.float16), legacy=True, location="cuda:0")
    golden.torch_file(folder / "multi_token.bin", {"<a>": golden.vectors(1, 768, 26)[0], "<b>": golden.vectors(2, 768, 27)})
    golden.lora_bundle(folder / "two_bundles.safetensors",
                       {"first": golden.vectors(2, 768, 28), "second": {"clip_l": golden.vectors(1, 768, 29),
                                                                       "clip_g": golden.vectors(1, 1280, 30)}})
    golden.png_text(folder / "sd2_card.png", golden.a1111_dict(golden.vectors(2, 1024, 31)), chunk="iTXt")


def _merge(reports: list[dict]) -> dict:
    merged = {"total_budget": reports[0]["total_budget"], "processes": len(reports),
              "baseline_rss_mb": max(r["baseline_rss_mb"] for r in reports), "targets": {}}
    for target in reports[0]["targets"]:
        parts = [r["targets"][target] for r in reports]
        outcomes: dict[str, int] = {}
        for p in parts:
            for k, v in p["outcomes"].items():
                outcomes[k] = outcomes.get(k, 0) + v
        best_mem = max(parts, key=lambda p: p["max_growth_mb"])
        best_time = max(parts, key=lambda p: p["max_case_s"])
        merged["targets"][target] = {
            "count": sum(p["count"] for p in parts), "wall_s": max(p["wall_s"] for p in parts),
            "outcomes": outcomes, "distinct_outcomes": max(p["distinct_outcomes"] for p in parts),
            "escape_count": sum(p["escape_count"] for p in parts), "escapes": [e for p in parts for e in p["escapes"]],
            "over_memory": [e for p in parts for e in p["over_memory"]], "slow": [e for p in parts for e in p["slow"]],
            "max_growth_mb": best_mem["max_growth_mb"], "max_growth_index": best_mem["max_growth_index"],
            "max_case_s": best_time["max_case_s"], "max_case_index": best_time["max_case_index"],
            "per_case_memory": all(p["per_case_memory"] for p in parts), "seed": parts[0]["seed"],
        }
    merged["inputs"] = sum(t["count"] for t in merged["targets"].values())
    return merged


@pytest.fixture(scope="session")
def fuzz_run(tmp_path_factory):
    """The merged report of one fuzz run over every target, plus the folders it used."""
    total = runner.examples_from_env()
    root = tmp_path_factory.mktemp("fuzz")
    seeds = root / "seeds"
    seeds.mkdir()
    golden.all_goldens(seeds)
    _extra_seeds(seeds)
    markers = root / "markers"
    markers.mkdir()
    processes = 1 if total <= 20_000 else max(1, min(8, os.cpu_count() or 1))
    timeout = 120 + total * 0.05 / processes
    started = time.monotonic()
    children = []
    for shard in range(processes):
        work = root / f"work{shard}"
        work.mkdir()
        cmd = [sys.executable, "-m", "devkit.fuzzing", "run", "--count", str(total), "--seed", "0",
               "--seeds", str(seeds), "--workdir", str(work), "--markers", str(markers),
               "--report", str(work / "report.json"), "--shard", str(shard), "--shards", str(processes)]
        log = open(work / "child.log", "wb")
        children.append((subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT), work, log))
    reports = []
    for proc, work, log in children:
        try:
            rc = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
        log.close()
        progress = (work / "progress").read_text().strip() if (work / "progress").exists() else "?"
        if rc != 0:
            tail = (work / "child.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"fuzz child ended with {rc} while running case '{progress}' (target seed index; replay with "
                        f"python -m devkit.fuzzing repro TARGET --seed SEED --index INDEX --seeds DIR):\n{tail}")
        reports.append(json.loads((work / "report.json").read_text()))
    report = _merge(reports)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    _REPORT.update(report)
    return {"report": report, "markers": markers, "seeds": seeds}


def pytest_terminal_summary(terminalreporter):
    if not _REPORT:
        return
    r = _REPORT
    tr = terminalreporter
    tr.section("TokenSmith fuzz run")
    tr.write_line(f"{r['inputs']} inputs in {r['elapsed_s']} s over {r['processes']} process(es) "
                  f"(budget {r['total_budget']}; process baseline {r['baseline_rss_mb']} MB resident)")
    for name, t in r["targets"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(t["outcomes"].items()))
        tr.write_line(f"  {name:<10} {t['count']:>7} inputs  {t['wall_s']:>7.1f} s  peak +{t['max_growth_mb']} MB  "
                      f"slowest {t['max_case_s']} s  [{outcomes}]  {t['distinct_outcomes']} distinct outcomes")
