"""The runner: the input budget per target, the per-case memory meter, the loop over one target's
cases (counts, escapes, memory and time) and the ``run`` / ``repro`` command lines (see the package
docstring)."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
import traceback
from collections import Counter
from pathlib import Path

import devkit.fuzzing
from devkit.fuzzing.expression import make_expression_case, run_expression_case
from devkit.fuzzing.formats import Seeds, make_format_case, run_format_case
from devkit.fuzzing.names import make_names_case, run_names_case
from devkit.fuzzing.pickles import hostile_files, make_pickles_case
from devkit.fuzzing.schedule import make_schedule_case, run_schedule_case
from devkit.fuzzing.shared import case_rng
from devkit.fuzzing.templates import make_templates_case, run_templates_case

TARGETS = ("formats", "pickles", "expression", "schedule", "templates", "names")
# Share of the total input budget per target (file formats cost the most per input and matter most).
WEIGHTS = {"formats": 0.35, "pickles": 0.08, "expression": 0.25, "schedule": 0.12, "templates": 0.10, "names": 0.10}
DEFAULT_EXAMPLES = 3000  # `make test`; `make fuzz` sets TOKENSMITH_FUZZ_EXAMPLES=100000
MEMORY_BOUND_MB = 256
SLOW_CASE_S = 10.0  # inputs slower than this are listed in the report (a figure; tests assert no duration)


def budget(total: int) -> dict[str, int]:
    """Inputs per target for a total budget (the shares add up to at least ``total``)."""
    return {t: max(1, math.ceil(total * WEIGHTS[t])) for t in TARGETS}


def examples_from_env() -> int:
    raw = os.environ.get("TOKENSMITH_FUZZ_EXAMPLES", "").strip()
    return int(raw) if raw else DEFAULT_EXAMPLES


# ============================================================================ memory

class PeakMeter:
    """Peak resident memory of one piece of work, in MB above the resident size before it."""

    def __init__(self):
        self.per_case = self._can_reset()

    @staticmethod
    def _status() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])  # kB
        return out

    def _can_reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._status()
            return True
        except OSError:
            return False

    def start(self) -> float:
        if self.per_case:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident size
            return self._status()["VmRSS"] / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def growth(self, start: float) -> float:
        if self.per_case:
            return self._status()["VmHWM"] / 1024 - start
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start


# ============================================================================ runner

class Context:
    def __init__(self, seeds_dir, workdir, marker_dir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.marker_dir = Path(marker_dir) if marker_dir else self.workdir / "markers"
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.seeds = Seeds(seeds_dir) if seeds_dir else None
        self._hostile = None
        self.names_root = self.workdir / "names_root"
        self.names_root.mkdir(exist_ok=True)
        # What the hostile pickles would delete: both must still be there after a run.
        (self.marker_dir / "canary").touch()
        (self.marker_dir / "canary_dir").mkdir(exist_ok=True)

    @property
    def hostile(self):
        if self._hostile is None:
            self._hostile = [body for _, body in hostile_files(self.marker_dir)]
        return self._hostile


def make_case(target: str, rng, ctx: Context):
    if target == "formats":
        return make_format_case(rng, ctx.seeds)
    if target == "pickles":
        return make_pickles_case(rng, ctx.hostile)
    if target == "expression":
        return make_expression_case(rng)
    if target == "schedule":
        return make_schedule_case(rng)
    if target == "templates":
        return make_templates_case(rng)
    if target == "names":
        return make_names_case(rng)
    raise ValueError(target)


def run_case(target: str, case, rng, ctx: Context) -> tuple[str, str]:
    if target in ("formats", "pickles"):
        return run_format_case(case, ctx.workdir, rng)
    if target == "expression":
        return run_expression_case(case)
    if target == "schedule":
        return run_schedule_case(case)
    if target == "templates":
        return run_templates_case(case)
    return run_names_case(case, ctx.names_root)


def run_target(target: str, seed: int, count: int, ctx: Context, progress_fd: int | None = None,
               shard: int = 0, shards: int = 1) -> dict:
    """Run cases ``shard, shard + shards, ...`` below ``count``; returns counts, escapes (anything but a
    TokenSmithError, or a broken property), the largest per-case memory growth and time."""
    import warnings

    meter = PeakMeter()
    outcomes: Counter = Counter()
    distinct: set[str] = set()  # how many different ways the cases ended: a rough view of coverage
    escapes, over_memory, slow = [], [], []
    max_growth, max_growth_index = 0.0, None
    max_time, max_time_index = 0.0, None
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in range(shard, count, shards):
            if progress_fd is not None:
                os.pwrite(progress_fd, f"{target} {seed} {index}\n".ljust(64).encode(), 0)
            rng = case_rng(target, seed, index)
            case = make_case(target, rng, ctx)
            mem0 = meter.start()
            t0 = time.perf_counter()
            try:
                category, detail = run_case(target, case, rng, ctx)
            except Exception as exc:  # collected and reported, never swallowed
                category, detail = "ESCAPE", type(exc).__name__
                if len(escapes) < 20:
                    escapes.append({"index": index, "type": type(exc).__name__, "message": str(exc)[:300],
                                    "traceback": traceback.format_exc(limit=-4)[-1500:], "input": _describe_case(case)})
            elapsed = time.perf_counter() - t0
            growth = meter.growth(mem0)
            outcomes[category] += 1
            distinct.add(f"{category} {detail}"[:120])
            if growth > max_growth:
                max_growth, max_growth_index = growth, index
            if growth > MEMORY_BOUND_MB and len(over_memory) < 20:
                over_memory.append({"index": index, "growth_mb": round(growth, 1), "input": _describe_case(case)})
            if elapsed > max_time:
                max_time, max_time_index = elapsed, index
            if elapsed > SLOW_CASE_S and len(slow) < 20:
                slow.append({"index": index, "seconds": round(elapsed, 2), "input": _describe_case(case)})
    return {
        "target": target, "seed": seed, "count": len(range(shard, count, shards)),
        "wall_s": round(time.perf_counter() - started, 3),
        "outcomes": dict(outcomes), "distinct_outcomes": len(distinct), "escapes": escapes,
        "escape_count": outcomes.get("ESCAPE", 0),
        "over_memory": over_memory, "max_growth_mb": round(max_growth, 1), "max_growth_index": max_growth_index,
        "slow": slow, "max_case_s": round(max_time, 3), "max_case_index": max_time_index,
        "per_case_memory": meter.per_case,
    }


def _describe_case(case) -> str:
    if isinstance(case, (bytes, bytearray)):
        return f"{len(case)} bytes: {bytes(case[:80])!r}..."
    return repr(case)[:300]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.fuzzing", description=devkit.fuzzing.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run targets and write a JSON report")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--count", type=int, default=None, help="total inputs (split by WEIGHTS); default from env")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="folder of seed files (needed by the formats target)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--markers", help="folder the hostile pickles would write into")
    p.add_argument("--report", required=True)
    p.add_argument("--shard", type=int, default=0, help="this process runs case indices shard, shard + shards, ...")
    p.add_argument("--shards", type=int, default=1)
    r = sub.add_parser("repro", help="rebuild and run one case, showing any exception")
    r.add_argument("target", choices=TARGETS)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--index", type=int, required=True)
    r.add_argument("--seeds")
    r.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    if args.command == "repro":
        import tempfile

        ctx = Context(args.seeds, args.workdir or tempfile.mkdtemp(prefix="tokensmith-fuzz-"), None)
        rng = case_rng(args.target, args.seed, args.index)
        case = make_case(args.target, rng, ctx)
        print("input:", _describe_case(case))
        print("outcome:", *run_case(args.target, case, rng, ctx))
        return 0

    total = args.count if args.count is not None else examples_from_env()
    shares = budget(total)
    targets = [t for t in args.targets.split(",") if t]
    ctx = Context(args.seeds, args.workdir, args.markers)
    progress = os.open(os.path.join(args.workdir, "progress"), os.O_RDWR | os.O_CREAT, 0o644)
    # Warm-up: imports and first-use allocations must not count as a case's memory.
    for target in targets:
        run_target(target, args.seed + 10_000, 3, ctx)
    report = {"total_budget": total, "baseline_rss_mb": round(PeakMeter._status()["VmRSS"] / 1024, 1), "targets": {}}
    started = time.perf_counter()
    for target in targets:
        report["targets"][target] = run_target(target, args.seed, shares[target], ctx, progress, args.shard, args.shards)
        with open(args.report, "w") as fh:  # written after every target, so a crash leaves what was done
            json.dump(report, fh, indent=1)
    report["wall_s"] = round(time.perf_counter() - started, 2)
    report["inputs"] = sum(t["count"] for t in report["targets"].values())
    with open(args.report, "w") as fh:
        json.dump(report, fh, indent=1)
    os.close(progress)
    return 0
