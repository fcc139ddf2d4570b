"""Time to a concept, and where "train until learned" stops: TokenSmith, A1111-style and diffusers-style settings.

    python -m bench.concept [--task miniworld|latent] [--seeds 0,1,2] [--cap 120] [--validate-every 5]
                            [--settings tokensmith,a1111,diffusers] [--json OUT]

Tasks:
- `miniworld` (default): the mini-world checkpoint (devkit/miniworld, built once into .cache/miniworld),
  loaded as CheckpointLoaderSimple loads it, and the demo's concept, a yellow ring with a purple star
  inside that no caption of the world names: 12 pictures through the VAE, each captioned with its
  background word, the demo's template "a big [name] on a [filewords] background", 2 vectors from "*".
  A quarter of the pictures is held out (validation_split 0.25): quality is the fixed-noise
  validation loss on pictures the run never trained on (16 samples). After each real plateau run the
  saved file is used in a prompt: pictures sampled with and without the keyword, and the share of
  the concept's colours in each (the demo's measure).
- `latent` (devkit/conditioned.py): a tiny SD1-like UNet pre-trained to draw one latent pattern per
  word; the training latents are the word "cat"'s, training starts from the vector of "dog" (one
  vector), validation on the training latents.

Settings, each with every seed, all in one run:
- `tokensmith`: TrainConfig()'s defaults (stop_rule "plateau": train until learned);
- `a1111`: AdamW at a constant 5e-3, batch 1, no clipping, no stopping (A1111's defaults);
- `diffusers`: examples/textual_inversion.py's 5e-4 with --scale_lr over 4 accumulation steps
  (2e-3 constant), no clipping, no stopping. Its random flip is left off (on the latent task a
  mirrored pattern is another picture, and both sides keep the same pictures).
- `stratified` (not in the default list): the defaults with timestep_sampling "stratified".

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    "stratified": {"timestep_sampling": "stratified"},
}
DEFAULT_SETTINGS = ("tokensmith", "a1111", "diffusers")


class _Ended(Exception):
    """Raised from the progress callback to end a run early."""


@dataclass
class Task:
    """What every run of a task trains on: the model, its inputs and the settings all runs share."""

    model: object
    clip: object
    config: dict
    vae: object = None
    images: object = None
    latents: object = None
    captions: str = ""
    about: str = ""
    check_pictures: Callable | None = None  # (embedding name) -> the pixel measure of a saved file


def _train(task: Task, cfg, trainer_mod, stop_when=None, stop_at: int | None = None):
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
        trainer = trainer_mod.Trainer(task.model, task.clip, task.vae, task.images, cfg, latents=task.latents,
                                      captions=task.captions, overwrite=True, on_progress=on_progress)
        try:
            result = trainer.run()
        except _Ended:
            pass
    return trainer, result, times, vals


def _step_seconds(task: Task, make_cfg, trainer_mod) -> float:
    """Median seconds of a plain step (no validation) over a short run."""
    # validations far apart (a held-out split needs some): the timed steps are plain steps
    _, _, times, _ = _train(task, make_cfg(validate_every=10**6, stop_rule="steps"), trainer_mod, stop_at=12)
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


def _seed_runs(seed, task: Task, settings, cap, trainer_mod, TrainConfig) -> dict[str, dict]:
    runs = {}
    for label in settings:
        def make_cfg(label=label, **extra):
            return TrainConfig(**{**task.config, "seed": seed, **SETTINGS[label], "name": f"bench-ttc-{label}-s{seed}",
                                  **extra})
        t0 = time.perf_counter()
        fine = make_cfg(validate_every=1, stop_rule="steps", early_stop_patience=0)
        _, _, _, vals = _train(task, fine, trainer_mod, stop_at=cap)
        # the trainer's step-0 validation (the init vectors) comes without a progress report
        _, first, _, _ = _train(task, make_cfg(validate_every=1, stop_rule="steps", steps=1), trainer_mod)
        vals = [(0, first.history.val_loss[0]), *vals]
        runs[label] = {"cfg": make_cfg(), "curve": vals, "wall_s": time.perf_counter() - t0,
                       "step_s": _step_seconds(task, make_cfg, trainer_mod)}
    return runs


def rows_for_seed(seed, task: Task, settings, cap, every, trainer_mod, TrainConfig, stopping) -> list[dict]:
    runs = _seed_runs(seed, task, settings, cap, trainer_mod, TrainConfig)
    v0 = next(iter(runs.values()))["curve"][0][1]  # the init vectors' loss (step 0), the same for every setting
    best = min(v for r in runs.values() for _, v in r["curve"])
    rows = []
    for label, r in runs.items():
        cfg, curve = r["cfg"], r["curve"]
        reached = next((s for s, v in curve if (v0 - v) / (v0 - best) >= TARGET), None)
        passes = cfg.batch_size * cfg.gradient_accumulation
        stop, kept = plateau_stop(curve, every, cfg, stopping) if cfg.stop_rule == "plateau" else (None, None)
        vals = dict(curve)
        rows.append({
            "case": "concept", "task": task.about, "setting": label, "seed": seed, "steps_to_95": reached,
            "seconds_to_95": None if reached is None else reached * r["step_s"],
            "unet_passes_to_95": None if reached is None else reached * passes,
            "stop_step": stop, "kept_step": kept,
            "quality_at_stop": None if kept is None else (v0 - vals[kept]) / (v0 - best),
            "best": best, "val_init": v0, "step_s": r["step_s"], "cap": cap, "validate_every": every,
            "stop_within_1_5x": None if stop is None or reached is None else stop <= 1.5 * max(reached, every),
            "curve": [[s, round(v, 6)] for s, v in curve], "wall_s": r["wall_s"],
        })
        print(f"seed {seed} {label}: 95% at step {reached}, stop {stop} (kept {kept})", file=sys.stderr, flush=True)
    return rows


def check_real_stop(seed, task: Task, every, cap, predicted, trainer_mod, TrainConfig) -> dict:
    """One real run with stop_rule plateau at the user's cadence: does the trainer stop where predicted?
    On the mini-world its saved file is then used in a prompt (the demo's pixel measure)."""
    name = f"bench-ttc-real-s{seed}"
    cfg = TrainConfig(**{**task.config, "seed": seed, **SETTINGS["tokensmith"], "name": name, "validate_every": every})
    _, result, _, _ = _train(task, cfg, trainer_mod, stop_at=cap)
    stopped = result.steps_done if result is not None and result.stopped_early else None
    row = {"case": "concept-real-stop", "task": task.about, "seed": seed, "predicted_stop": predicted,
           "trainer_stop": stopped, "agrees": stopped == predicted,
           "reason": None if result is None else result.stop_reason}
    if task.check_pictures is not None and result is not None:
        row["pictures"] = task.check_pictures(name)
    return row


def summary(rows: list[dict], settings) -> dict:
    by = {label: [r for r in rows if r.get("setting") == label] for label in settings}
    mean = {label: statistics.mean(r["seconds_to_95"] for r in rs) if all(r["seconds_to_95"] for r in rs) else None
            for label, rs in by.items()}
    out = {"case": "concept-summary", "task": rows[0]["task"] if rows else None, "target": TARGET,
           "mean_seconds_to_95": mean,
           "mean_steps_to_95": {label: statistics.mean(r["steps_to_95"] for r in rs) if all(r["steps_to_95"] for r in rs)
                                else None for label, rs in by.items()}}
    for other in ("a1111", "diffusers"):
        if mean.get("tokensmith") and mean.get(other):
            out[f"speedup_vs_{other}"] = mean[other] / mean["tokensmith"]
    if "speedup_vs_a1111" in out:
        out["goal_2x_vs_a1111"] = out["speedup_vs_a1111"] >= 2
    ts = by.get("tokensmith", [])
    out["auto_stops_after_95_every_seed"] = all(r["stop_step"] is not None and r["steps_to_95"] is not None
                                               and r["stop_step"] >= r["steps_to_95"] for r in ts)
    out["auto_within_1_5x_every_seed"] = all(bool(r["stop_within_1_5x"]) for r in ts)
    return out


def latent_task() -> Task:
    from devkit import conditioned

    ms = conditioned.build_conditioned("sd1")
    return Task(ms.model, ms.clip, latents=conditioned.concept_latents(WORD), about="latent",
                config={"init_text": INIT_WORD, "num_vectors": 1, "template": "custom",
                        "custom_template": conditioned.PROMPT, "validation_samples": 16})


def miniworld_task(pictures: int = 12) -> Task:
    """The demo's concept on the mini-world checkpoint, loaded by core's checkpoint loader."""
    import folder_paths
    import nodes
    import numpy as np

    from devkit.miniworld import ensure_checkpoint, showcase, world

    path = ensure_checkpoint()
    link = Path(folder_paths.get_folder_paths("checkpoints")[0]) / path.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        os.symlink(path.resolve(), link)
    folder_paths.filename_list_cache.clear()
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(path.name)[:3]
    pairs = world.concept_pictures(pictures, seed=0)
    training = [p for p, _ in pairs]
    images = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) / 255 for p in training]))

    def check_pictures(name: str, count: int = 4) -> dict:
        with_prompt, without_prompt = showcase.prompts(name)
        shares = {}
        for label, text in (("with", with_prompt), ("without", without_prompt)):
            sampled = _sample(model, clip, vae, text, count)
            shares[label] = showcase.concept_colour_share(sampled)
        return {"concept_colours_training": showcase.concept_colour_share(training),
                "concept_colours_with": shares["with"], "concept_colours_without": shares["without"],
                "prompt_with": with_prompt, "count": count}

    return Task(model, clip, vae=vae, images=images, captions="\n".join(bg for _, bg in pairs), about="miniworld",
                check_pictures=check_pictures,
                config={"init_text": "*", "num_vectors": 2, "template": "custom",
                        "custom_template": showcase.TEMPLATE, "validation_samples": 16, "validation_split": 0.25})


def _sample(model, clip, vae, text: str, count: int, steps: int = 12, cfg: float = 5.0) -> list:
    """`count` pictures of the prompt through core's nodes (seeds 0..count-1), as PIL images."""
    import nodes
    import numpy as np
    from PIL import Image

    from devkit.miniworld import world

    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    positive = nodes.CLIPTextEncode().encode(clip, text)[0]
    out = []
    with torch.inference_mode():
        for seed in range(count):
            latent = nodes.EmptyLatentImage().generate(world.SIZE, world.SIZE, 1)[0]
            sampled = nodes.KSampler().sample(model, seed, steps, cfg, "euler", "normal", positive, negative, latent)[0]
            pixels = nodes.VAEDecode().decode(vae, sampled)[0][0].cpu().numpy()
            out.append(Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)))
    return out


TASKS = {"miniworld": miniworld_task, "latent": latent_task}


def measure(seeds, cap: int, every: int, check_real: bool = True, task_name: str = "miniworld",
            settings=tuple(DEFAULT_SETTINGS)) -> list[dict]:
    trainer_mod = comfy_host.pack_import("trainer")
    TrainConfig = comfy_host.pack_import("tokensmith.train_config").TrainConfig
    stopping = comfy_host.pack_import("tokensmith.stopping")
    task = TASKS[task_name]()
    rows = []
    for seed in seeds:
        seed_rows = rows_for_seed(seed, task, settings, cap, every, trainer_mod, TrainConfig, stopping)
        rows.extend(seed_rows)
        if check_real and "tokensmith" in settings:
            predicted = next(r["stop_step"] for r in seed_rows if r["setting"] == "tokensmith")
            rows.append(check_real_stop(seed, task, every, cap, predicted, trainer_mod, TrainConfig))
    rows.append(summary([r for r in rows if r["case"] == "concept"], settings))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="miniworld")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                        help=f"a comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--cap", type=int, default=120, help="steps of each validate-every-step run")
    parser.add_argument("--validate-every", type=int, default=5,
                        help="the cadence of the user's run that the plateau rule sees (validate_every)")
    parser.add_argument("--no-real-check", action="store_true", help="skip the real plateau runs")
    add_common_args(parser)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}: choose from {', '.join(SETTINGS)}")
    emit(run_in_host(args.threads, lambda: measure(seeds, args.cap, args.validate_every, not args.no_real_check,
                                                   args.task, settings)), args.json)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
