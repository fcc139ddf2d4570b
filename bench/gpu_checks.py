"""Checks that need a CUDA GPU: the trainer's mixed-precision paths and ComfyUI's weight offloading.

    python -m bench.gpu_checks [--smoke] [--out PATH]      (bash bench/gpu.sh runs it after the timings)

The CPU test suite cannot reach these paths, so a session that is lent a GPU runs them once:

- precision-fp16: fp16 weights, fp16 autocast and a GradScaler (fp16 loss-scale overflows must be
  skipped by the scaler, not rolled back by the NaN guard);
- precision-auto: "auto" must pick bf16 on a GPU that has it;
- images-and-previews: images through ComfyUI's VAE, validation, and previews from ComfyUI's own
  sampler between training segments;
- offload-all: ComfyUI's NO_VRAM state (the --novram path: every layer's weights cast to the GPU
  as it runs, from the CPU);
- offload-partial: a weight budget of half the UNet (the --lowvram path ComfyUI takes when the
  model does not fit), so part of the UNet is on the GPU and part is cast per layer;
- saved-file-in-use: the saved file through core's CLIPTextEncode with `embedding:NAME` on the GPU
  equals the conditioning the trainer optimised;
- out-of-memory: a batch far beyond the card ends in TokenSmith's error with advice, the model
  unchanged, no file written, and a normal run works right after.

Each training check uses the SD1.5 architecture (ComfyUI's SD15 config, full CLIP-L, seeded random
weights) at 256 x 256 pixels and asserts: every recorded loss and the vectors are finite, the vectors
moved, and the model's weights are bitwise what they were before. Writes one JSON row per check
(bench/results/gpu-checks-latest.json, and $OUT when set); exit status 1 when any check failed.
--smoke runs the same code on the CPU at toy sizes (the offload and memory checks need CUDA and are skipped).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

from devkit import comfy_host
from devkit.checks import assert_same_weights, weights_snapshot

from . import gpu

PIXELS = 256


def _train(host: gpu.Host, model, clip, name: str, precision: str, steps: int, pixels: int, batch: int = 2):
    latents = torch.randn(4, 4, pixels // 8, pixels // 8, generator=torch.Generator().manual_seed(1))
    cfg = host.TrainConfig(name=name, steps=steps, precision=precision, batch_size=batch, validate_every=0,
                           init_text="a photo of a dog", num_vectors=2)
    trainer = host.trainer.Trainer(model, clip, None, None, cfg, latents=latents, overwrite=True)
    with torch.inference_mode():
        result = trainer.run()
    return trainer, result


def _assert_trained(trainer, result, steps: int) -> dict:
    losses = result.history.loss
    assert len(losses) == steps, f"{len(losses)} steps recorded, {steps} asked"
    assert all(torch.isfinite(torch.tensor(losses))), f"non-finite loss: {losses}"
    vectors = result.embedding.vectors
    assert all(torch.isfinite(v).all() for v in vectors.values()), "non-finite vectors"
    init = trainer._init_vectors()
    moved = max(float((vectors[k].float().cpu() - init[k].float().cpu()).abs().max()) for k in vectors)
    assert moved > 0, "the vectors did not move"
    events = [e["kind"] for e in result.history.events]
    return {"first_loss": losses[0], "last_loss": losses[-1], "moved_max_abs": moved,
            "rollbacks": events.count("rollback"), "fp16_overflows": events.count("fp16_overflow")}


def check_precision_fp16(host, smoke, keep: dict):
    model, clip = gpu.build(host, "sd15", torch.float16, smoke)
    ms = SimpleNamespace(model=model, clip=clip)
    before = weights_snapshot(ms)
    trainer, result = _train(host, model, clip, "gpu-check-fp16", "fp16", 30, PIXELS if not smoke else 32)
    assert_same_weights(before, ms)
    _, scaler = trainer._autocast()
    row = _assert_trained(trainer, result, 30)
    row["grad_scaler"] = scaler is not None
    assert scaler is not None, "fp16 must use a GradScaler"
    keep["trained"] = (model, clip, result)
    return row


def check_precision_auto(host, smoke):
    model, clip = gpu.build(host, "sd15", torch.bfloat16 if not smoke else torch.float32, smoke)
    ms = SimpleNamespace(model=model, clip=clip)
    before = weights_snapshot(ms)
    trainer, result = _train(host, model, clip, "gpu-check-auto", "auto", 10, PIXELS if not smoke else 32)
    assert_same_weights(before, ms)
    autocast, _ = trainer._autocast()
    dtype = getattr(autocast, "fast_dtype", None)
    row = _assert_trained(trainer, result, 10)
    row["autocast_dtype"] = str(dtype)
    if host.device.type == "cuda" and torch.cuda.is_bf16_supported():
        assert dtype == torch.bfloat16, f"auto picked {dtype}"
    return row


def _offload(host, smoke, budget_fraction: float | None):
    """Train with the UNet's home on the CPU and ComfyUI loading all (None) or part of it."""
    mm = host.mm
    model, clip = gpu.build(host, "sd15", torch.float16, smoke, offload_to_cpu=True)
    ms = SimpleNamespace(model=model, clip=clip)
    before = weights_snapshot(ms)
    saved_state, saved_reserve = mm.vram_state, mm.EXTRA_RESERVED_VRAM
    try:
        mm.unload_all_models()
        mm.soft_empty_cache()
        if budget_fraction is None:
            mm.vram_state = mm.VRAMState.NO_VRAM
        else:
            # ComfyUI gives weights what is free beyond 0.8 GiB + the reserve: leave room for a fraction
            free = mm.get_free_memory(host.device)
            budget = model.model_size() * budget_fraction
            mm.EXTRA_RESERVED_VRAM = int(max(0, free - 0.8 * 2**30 - budget - clip.patcher.model_size()))
        name = "gpu-check-offload-" + ("all" if budget_fraction is None else "part")
        trainer, result = _train(host, model, clip, name, "fp16", 5, PIXELS)
        loaded, total = model.loaded_size(), model.model_size()
        lowvram = bool(getattr(model.model, "model_lowvram", False))
    finally:
        mm.vram_state, mm.EXTRA_RESERVED_VRAM = saved_state, saved_reserve
        mm.unload_all_models()
    assert_same_weights(before, ms)
    row = _assert_trained(trainer, result, 5)
    row.update({"unet_loaded_gib": loaded / 2**30, "unet_gib": total / 2**30, "model_lowvram": lowvram})
    assert lowvram and loaded < total, f"the UNet was fully loaded ({loaded} of {total} bytes): no offload tested"
    if budget_fraction is not None:
        assert loaded > 0, "nothing of the UNet was loaded: the partial path was not taken"
    return row


def check_out_of_memory(host, smoke):
    """A batch far beyond the card: a clear error, the model unchanged, no file, the memory given back."""
    import folder_paths

    model, clip = gpu.build(host, "sd15", torch.bfloat16, smoke)
    ms = SimpleNamespace(model=model, clip=clip)
    before = weights_snapshot(ms)
    resident = torch.cuda.memory_allocated(host.device)
    name = "gpu-check-oom"
    try:
        _train(host, model, clip, name, "bf16", 2, 512, batch=512)
    except host.trainer.TrainingError as e:
        message = str(e)
    else:
        raise AssertionError("a batch of 512 at 512 px trained without running out of memory")
    assert "ran out of memory" in message and "gradient_checkpointing" in message, message
    assert_same_weights(before, ms)
    path = os.path.join(folder_paths.get_folder_paths("embeddings")[0], name + ".safetensors")
    assert not os.path.exists(path), "a file was written"
    after = torch.cuda.memory_allocated(host.device)
    # and the card is usable again: a normal run right after
    _, result = _train(host, model, clip, name, "bf16", 2, 256)
    assert os.path.exists(result.path)
    return {"message": message, "allocated_before_gib": resident / 2**30, "allocated_after_gib": after / 2**30}


def check_images_and_previews(host, smoke):
    """The image path on the device: VAE encode, validation, previews from ComfyUI's sampler between
    training segments (the model management loads and unloads around them)."""
    from devkit.model_factory import small_vae

    model, clip = gpu.build(host, "sd15", torch.float32 if smoke else torch.bfloat16, smoke)
    vae = small_vae(2)
    ms = SimpleNamespace(model=model, clip=clip)
    before = weights_snapshot(ms)
    pixels = 32 if smoke else 256
    images = torch.rand(3, pixels, pixels, 3, generator=torch.Generator().manual_seed(3))
    cfg = host.TrainConfig(name="gpu-check-previews", steps=4, batch_size=2, preview_every=2, preview_steps=3,
                           validate_every=2, validation_samples=4, num_vectors=2)
    trainer = host.trainer.Trainer(model, clip, vae, images, cfg, overwrite=True)
    with torch.inference_mode():
        result = trainer.run()
    assert_same_weights(before, ms)
    row = _assert_trained(trainer, result, 4)
    shapes = [list(p.shape) for p in result.previews]
    assert len(result.previews) == 2, f"{len(result.previews)} previews, 2 expected (step 2 and the end)"
    assert all(p.shape[-1] == 3 and torch.isfinite(p).all() for p in result.previews), shapes
    row.update({"previews": shapes, "val_loss": result.history.val_loss})
    return row


def check_saved_file_in_use(host, keep: dict):
    import nodes

    model, clip, result = keep.pop("trained")
    adapter = host.adapter
    prompt = "a photo of [name] on a table"
    with torch.inference_mode(), adapter.PromptRows(clip, result.embedding.num_vectors) as rows:
        tokens = adapter.fill_slots(rows.tokens(prompt), result.embedding.vectors, rows.encoders)
        cond, _ = adapter.encode_tokens(clip, tokens)
        (conditioning,) = nodes.CLIPTextEncode().encode(clip, prompt.replace("[name]", "embedding:gpu-check-fp16"))
    theirs = conditioning[0][0]
    diff = float((cond.float() - theirs.float().to(cond.device)).abs().max())
    assert diff == 0.0, f"CLIPTextEncode differs from the optimised conditioning by {diff}"
    return {"max_abs_diff": diff}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU, to test this script")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated check names")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to test the script on the CPU")
    out_path = args.out or (Path(tempfile.gettempdir()) / "tokensmith-gpu-checks-smoke.json" if args.smoke
                            else comfy_host.REPO_ROOT / "bench" / "results" / "gpu-checks-latest.json")
    started = time.perf_counter()
    host = gpu.Host(cpu=args.smoke)
    if args.smoke:
        torch.set_num_threads(1)
    facts = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "device": torch.cuda.get_device_name(host.device) if host.device.type == "cuda" else "cpu",
             "torch": torch.__version__, "comfyui": host.comfy_version, "smoke": args.smoke}
    rows: list[dict] = []
    keep: dict = {}

    wanted = {c.strip() for c in args.only.split(",") if c.strip()}

    def attempt(name, fn, *fn_args):
        if wanted and name not in wanted:
            return
        t0 = time.perf_counter()
        try:
            row = {"check": name, "ok": True, **fn(*fn_args)}
        except Exception as e:  # noqa: BLE001  (one failing check must not hide the others)
            row = {"check": name, "ok": False, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()[-3000:]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{name}: {'ok' if row['ok'] else 'FAILED ' + row['error']}  "
              f"{ {k: v for k, v in row.items() if k not in ('check', 'ok', 'traceback')} }", flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"run": facts, "checks": rows}, indent=2) + "\n")

    attempt("precision-fp16", check_precision_fp16, host, args.smoke, keep)
    if "trained" in keep:
        attempt("saved-file-in-use", check_saved_file_in_use, host, keep)
    keep.clear()
    host.mm.unload_all_models()
    attempt("precision-auto", check_precision_auto, host, args.smoke)
    host.mm.unload_all_models()
    attempt("images-and-previews", check_images_and_previews, host, args.smoke)
    if host.device.type == "cuda":
        host.mm.unload_all_models()
        attempt("out-of-memory", check_out_of_memory, host, args.smoke)
        host.mm.unload_all_models()
        attempt("offload-all", _offload, host, args.smoke, None)
        attempt("offload-partial", _offload, host, args.smoke, 0.5)
    shutil.rmtree(host.base, ignore_errors=True)
    if os.environ.get("OUT") and Path(os.environ["OUT"]).is_dir():
        target = Path(os.environ["OUT"]) / out_path.name
        if target.resolve() != out_path.resolve():
            shutil.copy(out_path, target)
    print(f"wrote {out_path} in {time.perf_counter() - started:.0f} s")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
