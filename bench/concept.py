"""Time to a concept, and where "train until learned" stops: TokenSmith, A1111-style and diffusers-style settings.

    python -m bench.concept [--seeds 0,1,2] [--cap 120] [--validate-every 5] [--json OUT]

Task (devkit/conditioned.py): a tiny SD1-like UNet pre-trained to draw
one latent pattern per word; the training latents are the word "cat"'s, training starts from the
vector of "dog" (one vector). Quality is the trainer's fixed-noise validation loss (16 samples).

Settings, each with every seed, all in one run:
- `tokensmith`: TrainConfig()'s defaults (stop_rule "plateau": train until learned);
- `a1111`: AdamW at a constant 5e-3, batch 1, no clipping, no stopping (A1111's defaults);
- `diffusers`: examples/textual_inversion.py's 5e-4 with --scale_lr over 4 accumulation steps
  (2e-3 constant), no clipping, no stopping. Its random flip is left off: on this task a mirrored
  latent pattern is another picture, not the word's, and it would change the validation set.

Each run validates after every step up to --cap steps (a validation reads the vectors and changes
nothing in training), which gives its whole curve. `best` is the lowest validation loss any setting
reached with that seed; `steps_to_95` is the first step with 95% of the init -> best gap closed;
seconds and UNet passes follow from the steps (seconds by each setting's own median plain step,
measured in a short run without validation; passes = steps x batch x accumulation).
Where the plateau rule stops is found by feeding tokensmith.stopping.EarlyStopper the validations a
user's run would have made (every --validate-every steps, from step 0), which are the same numbers;
one real run per seed with stop_rule "plateau" checks that the trainer stops at that step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from devkit import comfy_host

from .child import add_common_args, emit, run_in_host

WORD, INIT_WORD = "cat", "dog"
TARGET = 0.95
SETTINGS = {
    "tokensmith": {},
    "a1111": {"learning_rate": "5e-3", "lr_shape": "constant", "lr_warmup_steps": 0, "clip_mode": "none",
              "norm_mode": "none", "min_snr_gamma": 0.0, "batch_size": 1, "gradient_accumulation": 1,
              "stop_rule": "steps"},
    "diffusers": {"learning_rate": "2e-3", "lr_shape": "constant", "lr_warmup_steps": 0, "clip_mode": "none",
                  "norm_mode": "none", "min_snr_gamma": 0.0, "batch_size": 1, "gradient_accumulation": 4,
                  "stop_rule": "steps"},
}


class _Ended(Exception):
    """Raised from the progress callback to end a run early."""


def _train(ms, latents, cfg, trainer_mod, stop_when=None, stop_at: int | None = None):
    """One run; returns (trainer, result or None when the bench ended it, plain step times, validations).

    The bench ends a run from the progress callback (at the target, or at stop_at steps) rather than
    by shortening it, so the learning-rate schedule is the one the full run would have."""
    times, vals, state = [], [], {"t": None}

    def on_progress(p):
        now = time.perf_counter()
        if state["t"] is not None and p.val_loss is None and p.event is None:
            times.append(now - state["t"])
        if p.val_loss is not None:
            vals.append((p.step, p.val_loss))
            if stop_when is not None and stop_when(p.val_loss):
                raise _Ended
        if stop_at is not None and p.step >= stop_at and p.event is None:
            raise _Ended
        state["t"] = time.perf_counter()

    trainer_mod.PROGRESS_EVERY_S = 0.0  # a timestamp after every step
    result = None
    with torch.inference_mode():
        trainer = trainer_mod.Trainer(ms.model, ms.clip, None, None, cfg, latents=latents, overwrite=True,
                                      on_progress=on_progress)
        try:
            result = trainer.run()
        except _Ended:
            pass
    return trainer, result, times, vals


def _step_seconds(ms, latents, make_cfg, trainer_mod) -> float:
    """Median seconds of a plain step (no validation) over a short run."""
    _, _, times, _ = _train(ms, latents, make_cfg(validate_every=0, stop_rule="steps"), trainer_mod, stop_at=12)
    return statistics.median(times[2:]) if len(times) > 2 else float("nan")


def plateau_stop(curve: list[tuple[int, float]], every: int, cfg, stopping) -> tuple[int | None, int | None]:
    """(stop step, best step) of the plateau rule fed the validations at steps 0, every, 2 x every..."""
    stopper = stopping.EarlyStopper(cfg.early_stop_patience, plateau_window=cfg.plateau_window,
                                    plateau_threshold=cfg.plateau_threshold)
    for step, loss in curve:
        if step % every == 0:
            stopper.update(step, loss, torch.zeros(1))
            if stopper.should_stop:
                return step, stopper.best_step
    return None, stopper.best_step


def _seed_runs(seed, ms, latents, task, cap, trainer_mod, TrainConfig) -> dict[str, dict]:
    runs = {}
    for label, overrides in SETTINGS.items():
        def make_cfg(label=label, overrides=overrides, **extra):
            return TrainConfig(**{**task, "seed": seed, **overrides, "name": f"bench-ttc-{label}-s{seed}", **extra})
        t0 = time.perf_counter()
        fine = make_cfg(validate_every=1, stop_rule="steps", early_stop_patience=0)
        _, _, _, vals = _train(ms, latents, fine, trainer_mod, stop_at=cap)
        # the trainer's step-0 validation (the init vectors) comes without a progress report
        _, first, _, _ = _train(ms, latents, make_cfg(validate_every=1, stop_rule="steps", steps=1), trainer_mod)
        vals = [(0, first.history.val_loss[0]), *vals]
        runs[label] = {"cfg": make_cfg(), "curve": vals, "wall_s": time.perf_counter() - t0,
                       "step_s": _step_seconds(ms, latents, make_cfg, trainer_mod)}
    return runs


def rows_for_seed(seed, ms, latents, task, cap, every, trainer_mod, TrainConfig, stopping) -> list[dict]:
    runs = _seed_runs(seed, ms, latents, task, cap, trainer_mod, TrainConfig)
    v0 = runs["tokensmith"]["curve"][0][1]  # the init vectors' loss (step 0), the same for every setting
    best = min(v for r in runs.values() for _, v in r["curve"])
    rows = []
    for label, r in runs.items():
        cfg, curve = r["cfg"], r["curve"]
        reached = next((s for s, v in curve if (v0 - v) / (v0 - best) >= TARGET), None)
        passes = cfg.batch_size * cfg.gradient_accumulation
        stop, kept = plateau_stop(curve, every, cfg, stopping) if cfg.stop_rule == "plateau" else (None, None)
        vals = dict(curve)
        rows.append({
            "case": "concept", "setting": label, "seed": seed, "steps_to_95": reached,
            "seconds_to_95": None if reached is None else reached * r["step_s"],
            "unet_passes_to_95": None if reached is None else reached * passes,
            "stop_step": stop, "kept_step": kept,
            "quality_at_stop": None if kept is None else (v0 - vals[kept]) / (v0 - best),
            "best": best, "val_init": v0, "step_s": r["step_s"], "cap": cap, "validate_every": every,
            "stop_within_1_5x": None if stop is None or reached is None else stop <= 1.5 * max(reached, every),
            "curve": [[s, round(v, 6)] for s, v in curve], "wall_s": r["wall_s"],
        })
        print(f"seed {seed} {label}: 95% at step {reached}, stop {stop} (kept {kept})", file=sys.stderr)
    return rows


def check_real_stop(seed, ms, latents, task, every, cap, predicted, trainer_mod, TrainConfig) -> dict:
    """One real run with stop_rule plateau at the user's cadence: does the trainer stop where predicted?"""
    cfg = TrainConfig(**{**task, "seed": seed, **SETTINGS["tokensmith"], "name": f"bench-ttc-real-s{seed}",
                         "validate_every": every})
    _, result, _, _ = _train(ms, latents, cfg, trainer_mod, stop_at=cap)
    stopped = result.steps_done if result is not None and result.stopped_early else None
    return {"case": "concept-real-stop", "seed": seed, "predicted_stop": predicted, "trainer_stop": stopped,
            "agrees": stopped == predicted, "reason": None if result is None else result.stop_reason}


def summary(rows: list[dict]) -> dict:
    by = {label: [r for r in rows if r.get("setting") == label] for label in SETTINGS}
    mean = {label: statistics.mean(r["seconds_to_95"] for r in rs) if all(r["seconds_to_95"] for r in rs) else None
            for label, rs in by.items()}
    out = {"case": "concept-summary", "target": TARGET, "mean_seconds_to_95": mean,
           "mean_steps_to_95": {label: statistics.mean(r["steps_to_95"] for r in rs) if all(r["steps_to_95"] for r in rs)
                                else None for label, rs in by.items()}}
    if mean["tokensmith"] and mean["a1111"]:
        out["speedup_vs_a1111"] = mean["a1111"] / mean["tokensmith"]
        out["goal_2x_vs_a1111"] = out["speedup_vs_a1111"] >= 2
    if mean["tokensmith"] and mean["diffusers"]:
        out["speedup_vs_diffusers"] = mean["diffusers"] / mean["tokensmith"]
    ts = by["tokensmith"]
    out["auto_stops_after_95_every_seed"] = all(r["stop_step"] is not None and r["steps_to_95"] is not None
                                               and r["stop_step"] >= r["steps_to_95"] for r in ts)
    out["auto_within_1_5x_every_seed"] = all(bool(r["stop_within_1_5x"]) for r in ts)
    return out


def measure(seeds, cap: int, every: int, check_real: bool = True) -> list[dict]:
    from devkit import conditioned

    trainer_mod = comfy_host.pack_import("trainer")
    TrainConfig = comfy_host.pack_import("tokensmith.train_config").TrainConfig
    stopping = comfy_host.pack_import("tokensmith.stopping")
    ms = conditioned.build_conditioned("sd1")
    latents = conditioned.concept_latents(WORD)
    task = {"init_text": INIT_WORD, "num_vectors": 1, "template": "custom", "custom_template": conditioned.PROMPT,
            "validation_samples": 16}
    rows = []
    for seed in seeds:
        seed_rows = rows_for_seed(seed, ms, latents, task, cap, every, trainer_mod, TrainConfig, stopping)
        rows.extend(seed_rows)
        if check_real:
            predicted = next(r["stop_step"] for r in seed_rows if r["setting"] == "tokensmith")
            rows.append(check_real_stop(seed, ms, latents, task, every, cap, predicted, trainer_mod, TrainConfig))
    rows.append(summary([r for r in rows if r["case"] == "concept"]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cap", type=int, default=120, help="steps of each validate-every-step run")
    parser.add_argument("--validate-every", type=int, default=5,
                        help="the cadence of the user's run that the plateau rule sees (validate_every)")
    parser.add_argument("--no-real-check", action="store_true", help="skip the real plateau runs")
    add_common_args(parser)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    emit(run_in_host(args.threads, lambda: measure(seeds, args.cap, args.validate_every, not args.no_real_check)),
         args.json)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
