"""GPU benchmark: TokenSmith's training step against the floor on full-size SD1.5 and SDXL UNets.

    bash bench/gpu.sh [--smoke] [--out PATH]        (python -m bench.gpu ...)

For a session that is lent one GPU (sized for an H100: under 5 minutes). Writes one JSON with, per
case, iterations per second and peak GPU memory of TokenSmith's Trainer and of the floor
(bench.step_floor.Floor: a bare forward + backward through copies of the same ComfyUI modules,
gradients to the vectors only), measured in the same run, interleaved step by step:

- sd15-512-b1 and sd15-512-b4: SD1.5 architecture (ComfyUI's own SD15 UNet config, full CLIP-L),
  512 x 512 pixels, batch 1 and 4, bf16 weights and bf16 autocast;
- sdxl-1024-b1: SDXL architecture (SDXL UNet, CLIP-L + CLIP-G), 1024 x 1024, batch 1, bf16;
- the cost of the choices: SD1.5 batch 1 with gradient checkpointing, with fp16 weights + fp16
  autocast (ComfyUI's usual weight dtype for SD1.5 on a GPU) and in fp32; SDXL with checkpointing.

Every model is built with ComfyUI's classes directly on the GPU and filled with seeded random
weights (no downloads, no files). Peak memory is the weights (one copy) plus the most the step
allocated above what was resident before it (torch.cuda.max_memory_allocated), since the process
holds the floor's copy of the weights too. CUDA runs asynchronously, so every time is taken after
torch.cuda.synchronize().

--smoke runs the same code on the CPU at tiny sizes (seconds), to test it where no GPU is lent.
Published figures to compare with: the textual-inversion paper's code about 1.5 it/s on a V100,
A1111 about 1.8 it/s on a Colab GPU, both SD1.5 at 512.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import importlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from devkit import comfy_host

from .step_floor import Floor, interleave, summarize

# ComfyUI's own configs for the two architectures (comfy/model_detection.py, v0.3.75)
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# --smoke: the same families at toy sizes
_SMOKE_COMMON = {"model_channels": 64, "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth_middle": 1}
SMOKE_SD15_UNET = {**SD15_UNET, **_SMOKE_COMMON, "transformer_depth": [1, 1],
                   "transformer_depth_output": [1, 1, 1, 1], "num_heads": 4}
SMOKE_SDXL_UNET = {**SDXL_UNET, **_SMOKE_COMMON, "transformer_depth": [0, 1],
                   "transformer_depth_output": [0, 0, 1, 1]}
SMOKE_TEXT = {"num_hidden_layers": 3, "intermediate_size": 256, "num_attention_heads": 4}

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (case, family, pixels, batch, precision, gradient checkpointing), most wanted first: a run that
# hits the time budget drops the tail
CASES = [
    ("sd15-512-b1", "sd15", 512, 1, "bf16", False),
    ("sd15-512-b4", "sd15", 512, 4, "bf16", False),
    ("sdxl-1024-b1", "sdxl", 1024, 1, "bf16", False),
    ("sd15-512-b1-checkpointing", "sd15", 512, 1, "bf16", True),
    ("sdxl-1024-b1-checkpointing", "sdxl", 1024, 1, "bf16", True),
    ("sd15-512-b1-fp16", "sd15", 512, 1, "fp16", False),
    ("sd15-512-b1-fp32", "sd15", 512, 1, "fp32", False),
]
SMOKE_PIXELS = 32  # 4 x 4 latents
SMOKE_MAX_BATCH = 2


class Host:
    """ComfyUI imported in-process on the GPU (or the CPU for --smoke) with the pack loaded."""

    def __init__(self, cpu: bool):
        path = comfy_host.host_path()
        if not (path / "comfy").is_dir():
            raise SystemExit(f"no ComfyUI at {path}: set COMFYUI_PATH")
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
        import comfy.options

        comfy.options.enable_args_parsing(False)
        import comfy.cli_args

        # devkit.comfy_host forces the CPU; here the GPU is the point, so ComfyUI is imported directly
        comfy.cli_args.args.cpu = cpu
        import comfy.model_management as mm

        self.mm = mm
        self.base = tempfile.mkdtemp(prefix="tokensmith-gpu-bench-")
        comfy_host.set_base_directory(self.base)
        import nodes

        if not asyncio.run(nodes.load_custom_node(str(comfy_host.REPO_ROOT), module_parent="custom_nodes")):
            raise SystemExit("ComfyUI failed to load the TokenSmith pack")
        logging.getLogger().setLevel(logging.WARNING)
        pack = comfy_host.pack_module_name()
        self.adapter = importlib.import_module(f"{pack}.comfy_adapter")
        self.trainer = importlib.import_module(f"{pack}.trainer")
        self.TrainConfig = importlib.import_module(f"{pack}.tokensmith.train_config").TrainConfig
        self.device = mm.get_torch_device()
        import comfyui_version

        self.comfy_version = comfyui_version.__version__

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def fill(module: torch.nn.Module, seed: int) -> None:
    """Seeded weights of a sensible scale on the module's own device (weights ~ 1/sqrt(fan_in))."""
    gens = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            gen = gens.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            if p.dim() >= 2:
                std = 0.014 if ("token_embedding" in name or "position_embedding" in name) else 1 / math.sqrt(p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen, device=p.device) * std)
            elif name.endswith("weight") and ("norm" in name or "ln" in name):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, device=p.device) * 0.01)


def build(host: Host, family: str, dtype: torch.dtype, smoke: bool, offload_to_cpu: bool = False):
    """MODEL (ModelPatcher) and CLIP of one architecture, made on the device under inference mode.

    offload_to_cpu: the UNet is made on the CPU with the CPU as its offload device, as ComfyUI's
    loaders leave a checkpoint, so model management decides how much of it goes to the GPU."""
    import comfy.model_patcher
    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.supported_models_base
    import folder_paths

    device = host.device
    with torch.inference_mode():
        if family == "sd15":
            config = comfy.supported_models.SD15(dict(SMOKE_SD15_UNET if smoke else SD15_UNET))
            target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
            text_options = {"clip_l_model_config": SMOKE_TEXT} if smoke else {}
        else:
            config = comfy.supported_models.SDXL(dict(SMOKE_SDXL_UNET if smoke else SDXL_UNET))
            target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
            text_options = {"clip_l_model_config": SMOKE_TEXT, "clip_g_model_config": SMOKE_TEXT} if smoke else {}
        config.set_inference_dtype(dtype, None)
        home = torch.device("cpu") if offload_to_cpu else device
        base = config.get_model({}, device=home)
        base.to(home)
        fill(base.diffusion_model, 0)
        model = comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=home)
        clip = comfy.sd.CLIP(target=target, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                             model_options={"dtype": dtype, "load_device": device, "offload_device": device,
                                            "initial_device": device, **text_options})
        fill(clip.cond_stage_model, 1)
    return model, clip


def weight_bytes(model, clip) -> int:
    total = 0
    for module in (model.model, clip.cond_stage_model):
        total += sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
    return total


def peak_above(host: Host, fn) -> int | None:
    """Bytes the device allocated above what was resident when fn started (None off CUDA)."""
    if host.device.type != "cuda":
        fn()
        return None
    host.sync()
    torch.cuda.reset_peak_memory_stats(host.device)
    before = torch.cuda.memory_allocated(host.device)
    fn()
    host.sync()
    return torch.cuda.max_memory_allocated(host.device) - before


def run_case(host: Host, name: str, model, clip, pixels: int, batch: int, precision: str, checkpointing: bool,
             warmup: int, steps: int) -> dict:
    cfg_common = {"batch_size": batch, "precision": precision, "gradient_checkpointing": checkpointing,
                  "validate_every": 0}
    defaults = host.TrainConfig()
    latents = torch.randn(max(4, batch), 4, pixels // 8, pixels // 8, generator=torch.Generator().manual_seed(0))
    floor = Floor(model, clip, num_vectors=defaults.num_vectors, batch_size=batch, pixel_size=(pixels, pixels),
                  autocast_dtype=None if precision == "fp32" else DTYPES[precision])
    check = floor.check_against_comfy(clip, host.adapter)
    floor.step()
    host.trainer.PROGRESS_EVERY_S = 0.0

    def trainer_run(n: int, tag: str):
        def run(on_progress=None):
            cfg = host.TrainConfig(name=f"gpu-bench-{name}-{tag}", steps=n, **cfg_common)
            with torch.inference_mode():
                host.trainer.Trainer(model, clip, None, None, cfg, latents=latents, overwrite=True,
                                     on_progress=on_progress).run()
        return run

    t0 = time.perf_counter()
    plain, _, floor_times, pairs = interleave(trainer_run(warmup + steps, "time"), floor, warmup, host.sync)
    figures = summarize(plain, floor_times, pairs)
    trainer_extra = peak_above(host, trainer_run(2, "memory"))

    def floor_two():
        floor.step()
        floor.step()

    floor_extra = peak_above(host, floor_two)
    weights = weight_bytes(model, clip)
    gib = 2**30
    out = {
        "case": name, "pixels": pixels, "batch_size": batch, "precision": precision,
        "weights_dtype": str(DTYPES[precision]).removeprefix("torch."), "gradient_checkpointing": checkpointing,
        "num_vectors": defaults.num_vectors, "warmup_steps": warmup, **figures,
        "it_per_s": 1 / figures["step_s"], "floor_it_per_s": 1 / figures["floor_s"],
        "weights_gib": weights / gib,
        "peak_gib": None if trainer_extra is None else (weights + trainer_extra) / gib,
        "floor_peak_gib": None if floor_extra is None else (weights + floor_extra) / gib,
        "step_extra_gib": None if trainer_extra is None else trainer_extra / gib,
        "floor_extra_gib": None if floor_extra is None else floor_extra / gib,
        "floor_cond_max_abs_diff": check,
        "wall_s": time.perf_counter() - t0,
    }
    gc.collect()
    if host.device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, to test this script")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/gpu-latest.json; "
                                                                   "with --smoke, the temp folder)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="start no new case after this many seconds")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case (default 10; smoke 3)")
    parser.add_argument("--only", default="", help="comma-separated case names")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    # a smoke run's figures mean nothing: they go to the temp folder, not into bench/results
    out_path = args.out or (Path(tempfile.gettempdir()) / "tokensmith-gpu-smoke.json" if args.smoke
                            else comfy_host.REPO_ROOT / "bench" / "results" / "gpu-latest.json")
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to test the script on the CPU")
    host = Host(cpu=args.smoke)
    if args.smoke:
        torch.set_num_threads(1)  # a shared CPU stalls torch's thread pool; the smoke run only tests the code
    warmup, steps = (1, args.steps or 2) if args.smoke else (3, args.steps or 10)
    budget = math.inf if args.smoke else args.budget_s
    facts = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(host.device) if host.device.type == "cuda" else platform.processor() or "cpu",
        "smoke": args.smoke, "torch": torch.__version__, "cuda": torch.version.cuda, "comfyui": host.comfy_version,
        "python": platform.python_version(),
    }
    wanted = {c.strip() for c in args.only.split(",") if c.strip()}
    results: list[dict] = []
    built: dict[tuple[str, str], tuple] = {}

    def write():
        facts["wall_s"] = time.perf_counter() - started
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(json.dumps({"run": facts, "cases": results}, indent=2) + "\n")
        tmp.replace(out_path)  # written after every case, so a run cut short still leaves its figures

    for name, family, pixels, batch, precision, checkpointing in CASES:
        if wanted and name not in wanted:
            continue
        if time.perf_counter() - started > budget:
            results.append({"case": name, "skipped": f"time budget of {budget:.0f} s spent"})
            write()
            continue
        key = (family, precision)
        if key not in built:
            for old in list(built):  # one architecture and dtype on the device at a time
                del built[old]
            gc.collect()
            if host.device.type == "cuda":
                torch.cuda.empty_cache()
            built[key] = build(host, family, DTYPES[precision], args.smoke)
        model, clip = built[key]
        px, bs = (SMOKE_PIXELS, min(batch, SMOKE_MAX_BATCH)) if args.smoke else (pixels, batch)
        try:
            row = run_case(host, name, model, clip, px, bs, precision, checkpointing, warmup, steps)
        except Exception as e:  # noqa: BLE001  (one failing case must not lose the others' figures)
            row = {"case": name, "error": f"{type(e).__name__}: {e}"}
        results.append(row)
        write()
        if "error" in row:
            print(f"{name}: FAILED {row['error']}", file=sys.stderr, flush=True)
        else:
            peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
            floor_peak = "-" if row["floor_peak_gib"] is None else f"{row['floor_peak_gib']:.1f}"
            print(f"{name}: {row['it_per_s']:.2f} it/s (floor {row['floor_it_per_s']:.2f}, ratio "
                  f"{row['step_floor_ratio']:.2f}); peak {peak} GiB (floor {floor_peak})", file=sys.stderr, flush=True)
    shutil.rmtree(host.base, ignore_errors=True)
    print(f"wrote {out_path} in {time.perf_counter() - started:.0f} s")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
