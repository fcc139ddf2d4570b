"""TokenSmith's training step against diffusers' textual_inversion.py (the script a user would run instead).

    python -m bench.vs_diffusers --script PATH [--sizes 64 512] [--vectors 1 4] [--steps 4 16]
                                 [--steps-512 2 5] [--json bench/results/vs_diffusers.json]

PATH (or the environment variable TOKENSMITH_DIFFUSERS_SCRIPT) is diffusers' own
examples/textual_inversion/textual_inversion.py, e.g. from a diffusers checkout:
`git show v0.40.0:examples/textual_inversion/textual_inversion.py > /tmp/textual_inversion.py`. It is
never kept in this repository; without it the bench says so and exits 0 (skipped). Its packages:
requirements-bench.txt (accelerate; diffusers and transformers are in requirements-test.txt).

Model: the real-architecture SD1.5 checkpoint (devkit.make_checkpoint.ensure_checkpoint: full CLIP-L,
a 320-channel one-level UNet, the standard VAE, random fp16 weights). The peer gets it converted to a
diffusers folder with diffusers' own single-file helpers (loaders.single_file_utils:
create_unet_diffusers_config_from_ldm / convert_ldm_unet_checkpoint, the VAE's, convert_ldm_clip_checkpoint;
the LDM config they read is this checkpoint's, from ComfyUI's unet_config); the converted UNet and text
encoder are run against ComfyUI's on the same inputs and the max differences are in the result.

Each run is its own process, as a user's would be: TokenSmith through the real Train Embedding node
(execute, as ComfyUI's executor calls it, on the checkpoint loaded as CheckpointLoaderSimple loads it,
images through the VAE once), the peer through its own main(). Same pictures (4 seeded PNGs of the
case's size), batch 1, fp32, lr 5e-4 constant without warm-up, no flip (the peer's dataset flips with a
hard-coded p=0.5: the bench runs its source with flip_p=0.0, the one change), no validation, previews
or snapshots, one torch thread each. Runs alternate TokenSmith, peer, TokenSmith, peer (a short and a
long run per side). Per-step time is the median step of the long run (from each side's progress bar:
ComfyUI's progress hook for the node, tqdm's update for the peer; first two steps left out) and, as a
check, the difference of the two runs' wall times over the difference of their steps (fixed costs
cancel). Memory: the process's peak resident size (VmHWM) for both; for TokenSmith also the resident
size before training (ComfyUI and the loaded model) and the peak above it.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit.comfy_host import REPO_ROOT

ENV_SCRIPT = "TOKENSMITH_DIFFUSERS_SCRIPT"
RESULTS = REPO_ROOT / "bench" / "results" / "vs_diffusers.json"
PLACEHOLDER, INIT = "<tsm-bench>", "dog"
LEARNING_RATE = 5e-4
MMAP_THRESHOLD = "131072"  # as bench.run: freed big blocks go back to the OS, so peaks are live memory


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the kernel restarts VmHWM from the current resident size


def _median_step(stamps: list[float], skip: int = 2) -> float | None:
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][skip:]
    return statistics.median(gaps) if gaps else None


# ------------------------------------------------------------------------------------------------
# pictures and the diffusers folder


def write_images(folder: Path, size: int, count: int = 4) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        c = rng.random(3)
        img = np.stack([(c[k] + 0.5 * np.sin(6.28 * (xx * (k + 1) + yy * (i + 1)))) for k in range(3)], -1)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype("uint8")).save(folder / f"img-{i}.png")


def _ldm_config(comfy_unet_config: dict) -> dict:
    """The LDM (original) config diffusers' helpers read, for this checkpoint: its UNet from ComfyUI's
    detected unet_config, SD1's standard VAE and scale factor."""
    levels = len(comfy_unet_config["channel_mult"])
    return {"model": {"params": {
        "scale_factor": 0.18215,
        "unet_config": {"params": {
            "in_channels": comfy_unet_config["in_channels"], "out_channels": comfy_unet_config["out_channels"],
            "model_channels": comfy_unet_config["model_channels"], "channel_mult": list(comfy_unet_config["channel_mult"]),
            "num_res_blocks": comfy_unet_config["num_res_blocks"][0],
            "attention_resolutions": [2 ** i for i, d in enumerate(comfy_unet_config["transformer_depth"][:levels]) if d],
            "transformer_depth": 1, "num_heads": comfy_unet_config["num_heads"], "context_dim": comfy_unet_config["context_dim"],
            "use_linear_in_transformer": comfy_unet_config.get("use_linear_in_transformer", False)}},
        "first_stage_config": {"params": {"ddconfig": {
            "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "in_channels": 3, "out_ch": 3, "z_channels": 4}}},
    }}}


def convert(out: Path) -> dict:
    """The checkpoint as a diffusers folder (unet, vae, text_encoder, tokenizer, scheduler) made with
    diffusers' single-file helpers; returns the check against ComfyUI's modules."""
    import comfy.sd
    import folder_paths
    import safetensors.torch
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from devkit.make_checkpoint import ensure_checkpoint

    path = ensure_checkpoint()
    with torch.inference_mode():
        model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(path), output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    unet_config = dict(model.model.model_config.unet_config)
    ldm = _ldm_config(unet_config)
    checkpoint = {k: v.float() for k, v in safetensors.torch.load_file(str(path)).items()}

    config = sfu.create_unet_diffusers_config_from_ldm(ldm, checkpoint)
    unet = UNet2DConditionModel(**config)
    unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(checkpoint, config), strict=True)
    vae_config = sfu.create_vae_diffusers_config_from_ldm(ldm, checkpoint)
    vae = AutoencoderKL(**vae_config)
    vae.load_state_dict(sfu.convert_ldm_vae_checkpoint(checkpoint, vae_config), strict=True)
    comfy_dir = Path(comfy.sd.__file__).parent
    text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(str(comfy_dir / "sd1_clip_config.json")))
    clip_sd = sfu.convert_ldm_clip_checkpoint(checkpoint)
    if not any(k.startswith("text_model.") for k in text_encoder.state_dict()):  # transformers 5 drops the prefix
        clip_sd = {k.removeprefix("text_model."): v for k, v in clip_sd.items()}
    missing, unexpected = text_encoder.load_state_dict(clip_sd, strict=False)
    if unexpected or any("position_ids" not in k for k in missing):
        raise RuntimeError(f"text encoder conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    tokenizer = CLIPTokenizer.from_pretrained(str(comfy_dir / "sd1_tokenizer"), model_max_length=77)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type="epsilon", clip_sample=False)
    for name, part in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder), ("tokenizer", tokenizer),
                       ("scheduler", scheduler)):
        part.save_pretrained(str(out / name))

    # the converted modules against ComfyUI's, same inputs, fp32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    ctx = torch.randn(1, 77, 768, generator=gen)
    t = torch.tensor([500.0])
    with torch.inference_mode():
        ours = model.model.diffusion_model(x, t, context=ctx).float()
        theirs = unet(x, t, encoder_hidden_states=ctx).sample.float()
        ids = tokenizer("a photo of a dog on a table", padding="max_length", max_length=77, return_tensors="pt").input_ids
        comfy_tokens = clip.tokenize("a photo of a dog on a table")
        comfy_cond = clip.encode_from_tokens(comfy_tokens).float()
        hf_cond = text_encoder(ids).last_hidden_state.float()
    comfy_ids = [t for t, _w in comfy_tokens["l"][0]]
    return {"unet_max_abs_diff": float((ours - theirs).abs().max()), "unet_output_abs_max": float(ours.abs().max()),
            "text_encoder_max_abs_diff": float((comfy_cond - hf_cond).abs().max()),
            "text_encoder_output_abs_max": float(comfy_cond.abs().max()),
            "same_token_ids": comfy_ids == ids[0].tolist(), "diffusers_unet_config": config}


# ------------------------------------------------------------------------------------------------
# one run of each side (child processes)


def tokensmith_run(images_dir: Path, size: int, vectors: int, steps: int) -> dict:
    import comfy.utils
    import numpy as np
    import torch
    from PIL import Image

    from devkit import comfy_host

    from .step_floor import load_case

    trainer_mod = comfy_host.pack_import("trainer")
    trainer_mod.PROGRESS_EVERY_S = 0.0  # a progress report after every step (charged to TokenSmith)
    train = comfy_host.pack_import("nodes.train").TrainEmbedding
    loaded = load_case("sd15-64")
    pictures = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
                                          for p in sorted(images_dir.glob("*.png"))]))
    stamps: list[float] = []
    setup_peak: list[int] = []  # the peak up to the first step (encoding the pictures, setting up)

    def on_step(value, total, preview=None, node_id=None):
        stamps.append(time.perf_counter())
        if len(stamps) == 1:
            setup_peak.append(_status_kb("VmHWM"))
            _reset_peak()

    comfy.utils.set_progress_bar_global_hook(on_step)
    rss_before = _status_kb("VmRSS")
    _reset_peak()  # VmHWM from here: the training's peak
    t0 = time.perf_counter()
    with torch.inference_mode():
        train.execute([loaded.model], [loaded.clip], [f"vsd-{size}-{vectors}"], [INIT], [vectors], ["object"], [steps],
                      [str(LEARNING_RATE)], [1], [0], [True], vae=[loaded.vae], images=[pictures], validate_every=[0],
                      clip_mode=["none"], flip=[False], lr_shape=["constant"], lr_warmup_steps=[0])
    wall = time.perf_counter() - t0
    steps_peak = _status_kb("VmHWM")
    peak = max(steps_peak, *setup_peak)
    return {"train_s": wall, "step_times": stamps, "rss_before_mb": rss_before / 1024, "peak_rss_mb": peak / 1024,
            "growth_mb": (peak - rss_before) / 1024, "setup_peak_rss_mb": setup_peak[0] / 1024 if setup_peak else None,
            "steps_peak_rss_mb": steps_peak / 1024}


def peer_run(script: Path, model_dir: Path, images_dir: Path, size: int, vectors: int, steps: int, out_dir: Path) -> dict:
    import tqdm.auto

    stamps: list[float] = []
    base = tqdm.auto.tqdm

    class Stamped(base):
        def update(self, n=1):
            stamps.append(time.perf_counter())
            return super().update(n)

    tqdm.auto.tqdm = Stamped
    source = script.read_text()
    if source.count("flip_p=0.5") != 1:
        raise RuntimeError("the peer script's dataset no longer reads flip_p=0.5: check the no-flip change")
    no_flip = out_dir / f"no_flip_{script.name}"
    no_flip.parent.mkdir(parents=True, exist_ok=True)
    no_flip.write_text(source.replace("flip_p=0.5", "flip_p=0.0"))
    sys.argv = [str(script), "--pretrained_model_name_or_path", str(model_dir), "--train_data_dir", str(images_dir),
                "--placeholder_token", PLACEHOLDER, "--initializer_token", INIT, "--num_vectors", str(vectors),
                "--resolution", str(size), "--train_batch_size", "1", "--max_train_steps", str(steps),
                "--learning_rate", str(LEARNING_RATE), "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
                "--output_dir", str(out_dir), "--seed", "0", "--dataloader_num_workers", "0",
                "--mixed_precision", "no", "--save_steps", "100000", "--checkpointing_steps", "100000"]
    t0 = time.perf_counter()
    runpy.run_path(str(no_flip), run_name="__main__")  # in this process, so the step stamps above see it
    wall = time.perf_counter() - t0
    return {"run_s": wall, "step_times": stamps, "peak_rss_mb": _status_kb("VmHWM") / 1024}


# ------------------------------------------------------------------------------------------------
# the comparison


def _child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "0", "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DIFFUSERS_VERBOSITY": "error"}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.vs_diffusers", *args, "--threads", str(threads), "--json", out],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{(proc.stderr or proc.stdout)[-3000:]}")
        data = json.loads(Path(out).read_text())
    finally:
        os.unlink(out)
    data["process_s"] = wall
    return data


def compare_case(script: Path, model_dir: Path, work: Path, size: int, vectors: int, steps: tuple[int, int],
                 threads: int) -> dict:
    images = work / f"images-{size}"
    if not images.exists():
        write_images(images, size)
    runs: dict[str, dict[int, dict]] = {"tokensmith": {}, "peer": {}}
    for n in steps:  # TokenSmith, peer, TokenSmith, peer
        runs["tokensmith"][n] = _child(["tokensmith", "--images", str(images), "--size", str(size),
                                        "--vectors", str(vectors), "--steps", str(n)], threads)
        runs["peer"][n] = _child(["peer", "--script", str(script), "--model", str(model_dir), "--images", str(images),
                                  "--size", str(size), "--vectors", str(vectors), "--steps", str(n),
                                  "--out", str(work / f"peer-out-{size}-{vectors}-{n}")], threads)
        print(f"  {size} px, {vectors} vector(s), {n} steps: TokenSmith {runs['tokensmith'][n]['process_s']:.0f} s, "
              f"peer {runs['peer'][n]['process_s']:.0f} s", file=sys.stderr, flush=True)
    short, long = steps
    ts, peer = runs["tokensmith"][long], runs["peer"][long]
    skip = 2 if long >= 6 else 1
    step_s, peer_step_s = _median_step(ts["step_times"], skip), _median_step(peer["step_times"], skip)
    diff = lambda side: (runs[side][long]["process_s"] - runs[side][short]["process_s"]) / (long - short)  # noqa: E731
    return {
        "case": f"sd15-{size}px-{vectors}v", "pixels": size, "batch_size": 1, "num_vectors": vectors,
        "steps_short": short, "steps_long": long,
        "step_s": step_s, "peer_step_s": peer_step_s, "speedup": peer_step_s / step_s,
        "step_s_by_difference": diff("tokensmith"), "peer_step_s_by_difference": diff("peer"),
        "speedup_by_difference": diff("peer") / diff("tokensmith"),
        "peak_rss_mb": ts["peak_rss_mb"], "peer_peak_rss_mb": peer["peak_rss_mb"],
        "peak_rss_ratio": ts["peak_rss_mb"] / peer["peak_rss_mb"],
        "rss_before_training_mb": ts["rss_before_mb"], "training_growth_mb": ts["growth_mb"],
        "setup_peak_rss_mb": ts.get("setup_peak_rss_mb"), "steps_peak_rss_mb": ts.get("steps_peak_rss_mb"),
        "runs": {side: {str(n): {k: v for k, v in r.items() if k != "step_times"} | {
            "step_times_s": [b - a for a, b in zip(r["step_times"], r["step_times"][1:], strict=False)]} for n, r in rs.items()}
            for side, rs in runs.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    for name in ("convert", "tokensmith", "peer"):
        p = sub.add_parser(name)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--json", required=True)
        if name == "convert":
            p.add_argument("--out", type=Path, required=True)
        else:
            p.add_argument("--images", type=Path, required=True)
            p.add_argument("--size", type=int, required=True)
            p.add_argument("--vectors", type=int, required=True)
            p.add_argument("--steps", type=int, required=True)
        if name == "peer":
            p.add_argument("--script", type=Path, required=True)
            p.add_argument("--model", type=Path, required=True)
            p.add_argument("--out", type=Path, required=True)
    parser.add_argument("--script", type=Path, default=os.environ.get(ENV_SCRIPT) or None,
                        help=f"diffusers' examples/textual_inversion/textual_inversion.py (or ${ENV_SCRIPT})")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--vectors", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, nargs=2, default=[4, 16], help="short and long run (64 px)")
    parser.add_argument("--steps-512", type=int, nargs=2, default=[2, 5], help="short and long run from 256 px up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.cmd:
        import torch

        torch.set_num_threads(args.threads)
        if args.cmd == "peer":
            out = peer_run(args.script, args.model, args.images, args.size, args.vectors, args.steps, args.out)
        else:
            from .child import start_host, stop_host

            base = start_host()
            try:
                out = (convert(args.out) if args.cmd == "convert"
                       else tokensmith_run(args.images, args.size, args.vectors, args.steps))
            finally:
                stop_host(base)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        return 0

    if not args.script:
        print(f"bench.vs_diffusers: skipped: no diffusers textual_inversion.py given (--script or ${ENV_SCRIPT})")
        return 0
    if not args.script.is_file():
        print(f"bench.vs_diffusers: skipped: {args.script} is not a file")
        return 0
    from .run import run_facts

    started = time.perf_counter()
    run = run_facts(args.threads) | {"load_before": [round(x, 2) for x in os.getloadavg()], "script": str(args.script)}
    import diffusers

    run["diffusers"] = diffusers.__version__
    cases = []

    def write() -> None:
        # after every case, so a long run that is stopped keeps what it measured; cases measured by
        # an earlier invocation into the same file (other sizes or vector counts) are kept beside them
        old = json.loads(args.json.read_text()) if args.json.exists() else {}
        mine = {c["case"] for c in cases}
        kept = [c for c in old.get("cases", []) if c.get("case") not in mine]
        run["load_now"] = [round(x, 2) for x in os.getloadavg()]
        run["wall_s"] = time.perf_counter() - started
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": run, "earlier_runs": [r for r in [old.get("run")] + old.get("earlier_runs", []) if r],
                                         "conversion_check": check, "cases": kept + cases}, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="tokensmith-vsd-") as tmp:
        work = Path(tmp)
        check = _child(["convert", "--out", str(work / "sd15-diffusers")], args.threads)
        print(f"converted: UNet max |diff| {check['unet_max_abs_diff']:.2e}, text encoder {check['text_encoder_max_abs_diff']:.2e}",
              file=sys.stderr, flush=True)
        for size in args.sizes:
            for vectors in args.vectors:
                steps = tuple(args.steps if size < 256 else args.steps_512)
                cases.append(compare_case(args.script, work / "sd15-diffusers", work, size, vectors, steps, args.threads))
                c = cases[-1]
                print(f"{c['case']}: TokenSmith {c['step_s']:.3f} s/step, peer {c['peer_step_s']:.3f} s/step, "
                      f"speed-up {c['speedup']:.2f}x (by difference {c['speedup_by_difference']:.2f}x); peak RSS "
                      f"{c['peak_rss_mb']:.0f} / {c['peer_peak_rss_mb']:.0f} MB = {c['peak_rss_ratio']:.2f}; "
                      f"training +{c['training_growth_mb']:.0f} MB over {c['rss_before_training_mb']:.0f} MB",
                      file=sys.stderr, flush=True)
                c["load_after_case"] = [round(x, 2) for x in os.getloadavg()]
                write()
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
