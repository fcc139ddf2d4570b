"""Peak resident memory of a training run against the floor run and against the model's own size.

    python -m bench.memory --case sd1-tiny --mode train|floor [--steps 8] [--num-vectors 8] --json OUT

Each mode runs in its own process (bench.run starts one per case and mode), so neither sees the
other's allocations. The process loads the case as ComfyUI does (weights made under inference
mode), notes its resident size, resets the kernel's high-water mark (/proc/self/clear_refs, 5) and
then trains (TokenSmith's Trainer) or runs the floor (bench.step_floor.Floor on the same model,
converted in place to ordinary tensors, so the floor process also holds one copy). The peak is the
high-water mark after the run (VmHWM); where the kernel refuses the reset, a 10 ms sampler of the
resident size stands in.

"No second copy of the model": during training every UNet and text-encoder parameter the trainer
uses must live in the same storage as the loaded model's (checked from the progress callback,
`weights_shared`), and the training peak above the loaded size must stay well under the model's size.
The TI state is what a resume needs: the vectors plus AdamW's state, read from the state file the
trainer wrote (tensor bytes).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time

import torch

from devkit import comfy_host

from .child import add_common_args, emit, run_in_host
from .step_floor import CASES, Floor, bench_latents, load_case, model_sizes


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakRSS:
    """The resident-size peak from now on: kernel high-water mark, or sampling where it cannot be reset."""

    def __init__(self):
        self.method = "VmHWM after clear_refs"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident size
        except OSError:
            self.method = "10 ms sampling of VmRSS"
        self._peak = _status_kb("VmRSS")
        self._stop = threading.Event()
        self._thread = None
        if self.method.startswith("10 ms"):
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, _status_kb("VmRSS"))

    def peak_mb(self) -> float:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            return self._peak / 1024
        return _status_kb("VmHWM") / 1024


def _storages(module: torch.nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in module.parameters()}


def run(case: str, mode: str, steps: int, num_vectors: int) -> dict:
    trainer_mod = comfy_host.pack_import("trainer")
    TrainConfig = comfy_host.pack_import("tokensmith.train_config").TrainConfig
    loaded = load_case(case)
    sizes = model_sizes(loaded)
    model_bytes = sizes["unet_bytes"] + sizes["text_encoder_bytes"]
    latents = bench_latents(4, loaded.size)
    out = {"case": case, "mode": mode, "steps": steps, "num_vectors": num_vectors, **sizes,
           "model_mb": model_bytes / 2**20}
    if mode == "floor":
        # convert the loaded model in place, then measure from there: one copy, as the trainer has
        floor = Floor(loaded.model, loaded.clip, num_vectors=num_vectors, batch_size=TrainConfig().batch_size,
                      pixel_size=(loaded.size, loaded.size), own_copy=False)
        out["rss_loaded_mb"] = _status_kb("VmRSS") / 1024
        peak = PeakRSS()
        for _ in range(steps):
            floor.step()
        out["peak_rss_mb"] = peak.peak_mb()
        out["peak_method"] = peak.method
    else:
        out["rss_loaded_mb"] = _status_kb("VmRSS") / 1024
        unet, text = loaded.model.model, loaded.clip.cond_stage_model
        before = _storages(unet) | _storages(text)
        shared = []

        def on_progress(_p):
            # inside training the modules hold the trainer's stand-ins: are they the same storage?
            shared.append((_storages(unet) | _storages(text)) <= before)

        trainer_mod.PROGRESS_EVERY_S = 0.0
        cfg = TrainConfig(name=f"bench-mem-{case}", steps=steps, num_vectors=num_vectors)
        peak = PeakRSS()
        with torch.inference_mode():
            trainer = trainer_mod.Trainer(loaded.model, loaded.clip, None, None, cfg, latents=latents, overwrite=True,
                                          on_progress=on_progress)
            trainer.run()
        out["peak_rss_mb"] = peak.peak_mb()
        out["peak_method"] = peak.method
        out["weights_shared"] = bool(shared) and all(shared)
        out["validate_every"] = cfg.validate_every
        out.update(ti_state_bytes(trainer_mod.state_path(cfg.name)))
    out["growth_mb"] = out["peak_rss_mb"] - out["rss_loaded_mb"]
    out["growth_vs_model"] = out["growth_mb"] / out["model_mb"]
    out["process_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def ti_state_bytes(path: str) -> dict:
    """Bytes of the trainable vectors and of the optimizer state in a trainer's resume-state file."""
    from safetensors import safe_open

    vectors = optimizer = 0
    with safe_open(path, framework="pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            size = t.numel() * t.element_size()
            if key.startswith("vectors."):
                vectors += size
            elif key.startswith("optimizer."):
                optimizer += size
    return {"ti_vectors_bytes": vectors, "ti_optimizer_bytes": optimizer, "ti_state_bytes": vectors + optimizer}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    parser.add_argument("--mode", choices=("train", "floor"), required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--num-vectors", type=int, default=8)
    add_common_args(parser)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = run_in_host(args.threads, lambda: run(args.case, args.mode, args.steps, args.num_vectors))
    out["wall_s"] = time.perf_counter() - t0
    emit(out, args.json)
    print(f"{args.case} {args.mode}: loaded {out['rss_loaded_mb']:.0f} MB, peak {out['peak_rss_mb']:.0f} MB "
          f"(+{out['growth_mb']:.0f} MB; model {out['model_mb']:.0f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
