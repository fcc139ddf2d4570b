"""`make bench`: every CPU benchmark, one child process per measurement; writes bench/results/latest.json.

    python -m bench.run [--quick] [--only step,memory,concept,files] [--cases sd1-tiny,sdxl-tiny,sd15-64]
                        [--threads 1] [--out bench/results/latest.json]

Parts (each module's docstring explains its method):
- step    bench.step_floor: TokenSmith's training step against a bare forward + backward, interleaved in
          one process; per case: the machine floor (SDPA, weights in the compute dtype; step_floor_ratio)
          and ComfyUI's configured floor (comfy_floor_ratio).
- memory  bench.memory: peak resident memory of training and of the floor, each in its own process,
          against the model's size; the TI state for 8 vectors.
- concept bench.concept: steps, seconds and UNet passes to a learned concept on the mini-world checkpoint,
  TokenSmith's defaults against A1111's and diffusers' settings, and where "train until learned" stops.
- files   bench.files: listing, nearest-token inspection and merge expressions per second.

The result file holds {"run": facts about this run, "cases": [one object per case]}; the table
printed at the end is the same data. Children run with one torch thread by default: on a shared,
oversubscribed CPU torch's thread pool stalls (a tiny-model step measured 2-8 s with 2 threads
against 0.4 s with 1 on this 2-core machine under load) and the figures become noise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit.comfy_host import REPO_ROOT, host_path

from .step_floor import CASES

RESULTS = REPO_ROOT / "bench" / "results"
PARTS = ("step", "memory", "concept", "files")
# glibc returns blocks above this size to the OS on free, so a peak reflects live tensors rather than
# how much freed memory the heap happened to keep (which differed by 200 MB between identical runs).
MMAP_THRESHOLD = "131072"


def _child(module: str, args: list[str], threads: int, extra_env: dict | None = None) -> tuple[object, float, str]:
    """Run `python -m bench.<module> ... --json F`; returns (parsed JSON or None, seconds, error text)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or os.cpu_count() or 1), "TQDM_DISABLE": "1",
           **(extra_env or {})}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out_path = fh.name
    cmd = [sys.executable, "-m", f"bench.{module}", *args, "--threads", str(threads), "--json", out_path]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    try:
        if proc.returncode != 0:
            return None, wall, (proc.stderr or proc.stdout)[-2000:]
        with open(out_path) as fh:
            return json.load(fh), wall, ""
    finally:
        os.unlink(out_path)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _comfy_version() -> str:
    try:
        text = (host_path() / "comfyui_version.py").read_text()
        return text.split("=", 1)[1].strip().strip("\"'")
    except (OSError, IndexError):
        return "unknown"


def run_facts(threads: int) -> dict:
    import torch

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "memory_gb": _mem_total_gb(),
        "python": platform.python_version(), "torch": torch.__version__, "comfyui": _comfy_version(),
        "commit": _git_commit(), "torch_threads": threads,
    }


def _ms(x):
    return "-" if x is None else f"{x * 1000:.0f}"


def print_table(cases: list[dict], run: dict) -> None:
    step = [c for c in cases if c.get("step_s") is not None and "floor_s" in c]
    if step:
        print("\nTraining step against the machine floor (SDPA, weights in the compute dtype) and ComfyUI's configured"
              " floor (median over the timed steps; ratio p10-p90 per interleaved pair)")
        print(f"{'case':<11} {'step ms':>9} {'floor ms':>9} {'ratio':>6} {'p10-p90':>11} {'comfy ms':>9} {'ratio':>6} {'val ms':>7}"
              f" {'peak MB':>8} {'floor MB':>9} {'+train':>7} {'+floor':>7} {'model MB':>9} {'TI state':>9}")
        for c in step:
            def num(key, fmt="{:.0f}", row=c):
                v = row.get(key)
                return "-" if v is None else fmt.format(v)

            print(f"{c['case']:<11} {_ms(c['step_s']):>9} {_ms(c['floor_s']):>9} {c['step_floor_ratio']:>6.2f} "
                  f"{c['step_floor_ratio_p10']:>5.2f}-{c['step_floor_ratio_p90']:<5.2f} {_ms(c.get('comfy_floor_s')):>9} "
                  f"{num('comfy_floor_ratio', '{:.2f}'):>6} {_ms(c.get('validation_s')):>7}"
                  f" {num('peak_rss_mb'):>8} {num('floor_peak_rss_mb'):>9} {num('train_growth_mb'):>7}"
                  f" {num('floor_growth_mb'):>7} {num('model_mb'):>9} {num('ti_state_bytes', '{:.0f} B'):>9}")
    concept = [c for c in cases if c.get("case") == "concept"]
    if concept:
        print("\nTime to a learned concept (95% of the init -> best validation-loss gap closed)")
        print(f"{'setting':<11} {'seed':>4} {'steps':>6} {'seconds':>8} {'UNet passes':>11} {'auto stop':>9} "
              f"{'kept':>5} {'quality':>8}")
        for c in concept:
            def cell(key, fmt="{}", row=c):
                return "-" if row.get(key) is None else fmt.format(row[key])
            print(f"{c['setting']:<11} {c['seed']:>4} {cell('steps_to_95'):>6} {cell('seconds_to_95', '{:.1f}'):>8} "
                  f"{cell('unet_passes_to_95'):>11} {cell('stop_step'):>9} {cell('kept_step'):>5} "
                  f"{cell('quality_at_stop', '{:.3f}'):>8}")
        summary = next((c for c in cases if c.get("case") == "concept-summary"), None)
        if summary:
            speed = summary.get("speedup_vs_a1111")
            print(f"A1111 seconds / TokenSmith seconds to 95%, mean over seeds: "
                  f"{speed if speed is None else round(speed, 2)} (goal >= 2: "
                  f"{'met' if summary.get('goal_2x_vs_a1111') else 'not met'}); auto stops after 95% in every "
                  f"seed: {summary.get('auto_stops_after_95_every_seed')}, within 1.5x: "
                  f"{summary.get('auto_within_1_5x_every_seed')}")
    files = [c for c in cases if c.get("case", "").startswith("files-")]
    if files:
        print("\nFiles")
        for c in files:
            per_s = c.get("files_per_s", c.get("ops_per_s"))
            extra = f"  (Inspect node report: {c['inspect_report_ops_per_s']:.1f}/s)" if "inspect_report_ops_per_s" in c else ""
            print(f"{c['case']:<18} {per_s:>10.1f} per second{extra}")
    errors = [c for c in cases if "error" in c]
    for c in errors:
        print(f"\nFAILED {c['case']}: {c['error']}")
    print(f"\n{run['cpu']} ({run['cpu_count']} cores), torch {run['torch']} with {run['torch_threads']} thread(s), "
          f"ComfyUI {run['comfyui']}; load average {run['load_before']} before, {run['load_after']} after; "
          f"wall {run['wall_s']:.0f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    parser.add_argument("--cases", default=",".join(CASES), help="step/memory cases: " + ", ".join(CASES))
    parser.add_argument("--quick", action="store_true", help="fewer steps everywhere (a smoke run, not for figures)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every child (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [p for p in parts if p not in PARTS] + [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown part or case: {', '.join(unknown)}")

    started = time.perf_counter()
    run = run_facts(args.threads)
    run["load_before"] = [round(x, 2) for x in os.getloadavg()]
    run["parts"] = parts
    run["quick"] = args.quick
    results: list[dict] = []
    by_case: dict[str, dict] = {}

    def note(name: str, wall: float, err: str):
        print(f"  {name}: {wall:.0f} s" + (" FAILED" if err else ""), file=sys.stderr, flush=True)

    for case in cases if ("step" in parts or "memory" in parts) else []:
        row = {"case": case}
        by_case[case] = row
        results.append(row)
        if "step" in parts:
            step_args = ["--case", case, "--budget-s", "15" if args.quick else "75"]
            if args.quick:
                step_args += ["--warmup", "2", "--steps", "4"]
            data, wall, err = _child("step_floor", step_args, args.threads)
            note(f"step {case}", wall, err)
            if err:
                row["error"] = err
            else:
                row.update(data)
        if "memory" in parts:
            steps = "2" if args.quick else "4"
            for mode in ("train", "floor"):
                data, wall, err = _child("memory", ["--case", case, "--mode", mode, "--steps", steps],
                                         args.threads, {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD})
                note(f"memory {case} {mode}", wall, err)
                if err:
                    row["error"] = row.get("error", "") + f"\nmemory {mode}: {err}"
                    continue
                if mode == "train":
                    row.update({"peak_rss_mb": data["peak_rss_mb"], "rss_loaded_mb": data["rss_loaded_mb"],
                                "train_growth_mb": data["growth_mb"], "model_mb": data["model_mb"],
                                "weights_shared": data["weights_shared"], "memory_num_vectors": data["num_vectors"],
                                "ti_vectors_bytes": data["ti_vectors_bytes"],
                                "ti_optimizer_bytes": data["ti_optimizer_bytes"],
                                "ti_state_bytes": data["ti_state_bytes"], "peak_method": data["peak_method"],
                                "unet_bytes": data["unet_bytes"], "text_encoder_bytes": data["text_encoder_bytes"],
                                "vae_bytes": data["vae_bytes"]})
                else:
                    row.update({"floor_peak_rss_mb": data["peak_rss_mb"], "floor_rss_loaded_mb": data["rss_loaded_mb"],
                                "floor_growth_mb": data["growth_mb"]})
            if "peak_rss_mb" in row and "floor_peak_rss_mb" in row:
                row["peak_vs_floor"] = row["peak_rss_mb"] / row["floor_peak_rss_mb"]
                row["no_second_copy"] = bool(row["weights_shared"] and row["train_growth_mb"]
                                             < row["floor_growth_mb"] + 0.5 * row["model_mb"])
                row["ti_state_under_1mb"] = row["ti_state_bytes"] < 2**20
    if "concept" in parts:
        # the mini-world task (built once, about five minutes, the first time); --quick: the latent toy
        concept_args = (["--task", "latent", "--seeds", "0", "--cap", "30", "--no-real-check"] if args.quick
                        else ["--task", "miniworld", "--seeds", "0,1,2", "--cap", "80"])
        data, wall, err = _child("concept", concept_args, args.threads)
        note("concept", wall, err)
        results.extend(data if not err else [{"case": "concept", "error": err}])
    if "files" in parts:
        data, wall, err = _child("files", ["--count", "200" if args.quick else "1000"], args.threads)
        note("files", wall, err)
        results.extend(data if not err else [{"case": "files", "error": err}])

    run["load_after"] = [round(x, 2) for x in os.getloadavg()]
    run["wall_s"] = time.perf_counter() - started
    payload = {"run": run, "cases": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(args.out)
    print_table(results, run)
    print(f"wrote {args.out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
