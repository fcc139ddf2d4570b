"""Training step time and peak memory with the training attention (comfy_adapter.training_attention:
PyTorch's SDPA) against ComfyUI's configured attention, on the same model in one process.

    python -m bench.attention [--sizes 64 256 512] [--pairs 6] [--warmup 2] [--compare attention|weight-casts] [--json OUT]

Model: the real-architecture SD1.5 checkpoint (devkit.make_checkpoint: full CLIP-L, 320-channel
UNet, random weights) loaded by load_checkpoint_guess_config, as CheckpointLoaderSimple does.
Each size runs TokenSmith's Trainer (batch 1, TrainConfig's defaults, no validation, previews or
snapshots) once with plain and fast steps in turn: the adapter looks training_attention() up on
every attention call, and the bench swaps that function on the adapter module from the progress
callback (one report after every step), so step k+1 runs the other variant from step k and a slow
phase of a shared machine hits both. "plain" is training_attention() answering None: ComfyUI's
configured attention everywhere (on a CPU, sub-quadratic attention in the UNet and basic attention
in CLIP); "fast" is the adapter as shipped. A step is the time between two progress reports; the
first `warmup` steps are left out; `speedup` is the median of plain / fast over adjacent pairs.

Memory: a short run of each variant alone, plain first; the peak resident size of the process
during the run (kernel high-water mark reset before it, after handing freed heap back with
malloc_trim; see bench.memory.PeakRSS) and the first step's loss of both (same seed and data: they
differ only by float rounding).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time

import torch

from devkit import comfy_host

from .child import add_common_args, emit, run_in_host
from .memory import PeakRSS, _status_kb
from .step_floor import bench_latents, load_case


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Variant:
    """Which attention the adapter's training calls get: the training attention ("fast") or none,
    i.e. ComfyUI's configured function ("plain"). The adapter looks training_attention() up on every
    attention call, so the bench can switch between two steps of one run.

    With compare="weight-casts" the switch is the stored-weight backward instead
    (comfy_adapter._casts_stored_weight, looked up on every Linear call): "fast" is the adapter as
    shipped (fp16 weights saved, cast again in backward), "plain" is ComfyUI's cast kept by autograd."""

    SWITCHES = {"attention": ("training_attention", lambda device: None),
                "weight-casts": ("_casts_stored_weight", lambda module, x: False)}

    def __init__(self, adapter, compare: str = "attention"):
        self.adapter = adapter
        self.attr, self.plain = self.SWITCHES[compare]
        self.chosen = getattr(adapter, self.attr)

    def set(self, variant: str) -> None:
        setattr(self.adapter, self.attr, self.chosen if variant == "fast" else self.plain)

    def restore(self) -> None:
        setattr(self.adapter, self.attr, self.chosen)


def run_trainer(trainer_mod, loaded, cfg, size: int, on_progress) -> None:
    with torch.inference_mode():
        trainer = trainer_mod.Trainer(loaded.model, loaded.clip, None, None, cfg, latents=bench_latents(4, size),
                                      overwrite=True, on_progress=on_progress)
        trainer.run()


def alternating(trainer_mod, TrainConfig, loaded, variant: Variant, size: int, pairs: int, warmup: int) -> dict:
    """One run, plain and fast steps in turn (plain, fast, plain, ...) after `warmup` fast steps."""
    cfg = TrainConfig(name=f"bench-attention-{size}", steps=warmup + 2 * pairs, validate_every=0, preview_every=0)
    times = {"plain": [], "fast": []}
    state = {"t": None, "now": "fast"}

    def on_progress(p):
        now = time.perf_counter()
        if p.event is not None:
            return
        if p.step > warmup:
            times[state["now"]].append(now - state["t"])
        state["now"] = "plain" if (p.step - warmup) % 2 == 0 else "fast"
        variant.set(state["now"])
        state["t"] = time.perf_counter()

    variant.set("fast")
    try:
        state["t"] = time.perf_counter()
        run_trainer(trainer_mod, loaded, cfg, size, on_progress)
    finally:
        variant.restore()
    ratios = [p / f for p, f in zip(times["plain"], times["fast"], strict=False)]
    return {"plain_steps_s": times["plain"], "fast_steps_s": times["fast"], "ratios": ratios}


def memory_run(trainer_mod, TrainConfig, loaded, variant: Variant, size: int, which: str, steps: int) -> dict:
    """A short run of one variant alone: the process's peak resident size during it, and its first loss."""
    cfg = TrainConfig(name=f"bench-attention-{size}", steps=steps, validate_every=0, preview_every=0)
    losses = []
    _trim_heap()
    rss_before = _status_kb("VmRSS") / 1024
    peak = PeakRSS()
    variant.set(which)
    try:
        run_trainer(trainer_mod, loaded, cfg, size, lambda p: losses.append(float(p.loss)) if p.event is None else None)
    finally:
        variant.restore()
    return {"rss_before_mb": rss_before, "peak_rss_mb": peak.peak_mb(), "first_loss": losses[0]}


def measure(sizes: list[int], pairs: int, warmup: int, memory_steps: int, compare: str = "attention") -> dict:
    trainer_mod = comfy_host.pack_import("trainer")
    TrainConfig = comfy_host.pack_import("tokensmith.train_config").TrainConfig
    adapter = comfy_host.pack_import("comfy_adapter")
    import comfy.ldm.modules.attention as attention

    trainer_mod.PROGRESS_EVERY_S = 0.0  # a report (and so a timestamp) after every step
    t0 = time.perf_counter()
    loaded = load_case("sd15-64")
    load_s = time.perf_counter() - t0
    device = adapter.training_device(loaded.model)
    fast_fn = adapter.training_attention(device)
    variant = Variant(adapter, compare)
    out = {"model": "real-architecture SD1.5 checkpoint (random weights)", "load_s": load_s, "compare": compare,
           "device": str(device), "configured_attention": attention.optimized_attention.__name__,
           "training_attention": getattr(fast_fn, "__name__", None), "cases": []}
    for size in sizes:
        t0 = time.perf_counter()
        timing = alternating(trainer_mod, TrainConfig, loaded, variant, size, pairs, warmup)
        # memory: each variant alone, plain first (a later run can reuse the heap an earlier one left)
        mem = {which: memory_run(trainer_mod, TrainConfig, loaded, variant, size, which, memory_steps)
               for which in ("plain", "fast")}
        plain_s, fast_s = statistics.median(timing["plain_steps_s"]), statistics.median(timing["fast_steps_s"])
        first = mem["plain"]["first_loss"], mem["fast"]["first_loss"]
        case = {
            "pixels": size, "batch_size": 1, "pairs": len(timing["ratios"]),
            "plain_step_s": plain_s, "fast_step_s": fast_s,
            "speedup": statistics.median(timing["ratios"]),
            "speedup_p10": quantile(timing["ratios"], 0.1), "speedup_p90": quantile(timing["ratios"], 0.9),
            "rss_before_mb": mem["plain"]["rss_before_mb"],
            "plain_peak_rss_mb": mem["plain"]["peak_rss_mb"], "fast_peak_rss_mb": mem["fast"]["peak_rss_mb"],
            "first_loss_plain": first[0], "first_loss_fast": first[1],
            "first_loss_rel_diff": abs(first[0] - first[1]) / max(abs(first[0]), 1e-12),
            "wall_s": time.perf_counter() - t0, **timing,
        }
        out["cases"].append(case)
        print(f"  {size}px: plain {plain_s:.3f} s, fast {fast_s:.3f} s, speed-up {case['speedup']:.2f}x "
              f"(p10-p90 {case['speedup_p10']:.2f}-{case['speedup_p90']:.2f}); peak RSS {case['plain_peak_rss_mb']:.0f} / "
              f"{case['fast_peak_rss_mb']:.0f} MB; {case['wall_s']:.0f} s", file=sys.stderr)
    return out


def quantile(values: list[float], q: float) -> float:
    vs = sorted(values)
    i = (len(vs) - 1) * q
    lo, hi = int(i), min(int(i) + 1, len(vs) - 1)
    return vs[lo] + (vs[hi] - vs[lo]) * (i - lo)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--pairs", type=int, default=6, help="timed plain + fast step pairs per size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=2, help="steps of each memory run")
    parser.add_argument("--compare", choices=sorted(Variant.SWITCHES), default="attention",
                        help="what plain and fast differ in (weight-casts: the stored-weight backward)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    out = run_in_host(args.threads, lambda: measure(args.sizes, args.pairs, args.warmup, args.memory_steps,
                                                    args.compare))
    out["torch_threads"] = torch.get_num_threads()
    out["torch"] = torch.__version__
    out["load_average_start"] = load
    out["load_average_end"] = os.getloadavg()
    emit(out, args.json)
    for c in out["cases"]:
        print(f"{c['pixels']}px: plain {c['plain_step_s']:.3f} s, fast {c['fast_step_s']:.3f} s, "
              f"speed-up {c['speedup']:.2f}x; peak RSS {c['plain_peak_rss_mb']:.0f} / {c['fast_peak_rss_mb']:.0f} MB; "
              f"first loss rel. diff {c['first_loss_rel_diff']:.1e}", file=sys.stderr)
    print(f"load average {load[0]:.2f} -> {out['load_average_end'][0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
