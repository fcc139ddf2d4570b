"""Where a TokenSmith training step's time goes: PyTorch's profiler over a few steps of the Trainer on
the real-architecture SD1.5 checkpoint, by phase and by op.

    python -m bench.profile_step [--size 64] [--steps 3] [--warmup 2] [--plain] [--json OUT]

The Trainer runs as bench.attention runs it (batch 1, TrainConfig's defaults, no validation,
previews or snapshots); the profiler records `steps` whole steps after `warmup` (started and
stopped from the progress callback, one report after every step). Phases: the text encoders'
forward and the UNet's forward (profiler scopes opened and closed by forward hooks on the two
modules), the backward pass (the autograd engine's evaluate_function events) and the rest of the
step (tokens, noise, loss, NaN guard, AdamW, norms, the report). Ops: PyTorch ops by self time.
`--plain` profiles ComfyUI's configured attention instead of the training attention (see
bench.attention for how that is switched). Times are per step (total / steps).

Memory: one more step, not profiled, with a saved-tensors hook that records what autograd keeps for
the backward pass, each storage once, by the phase that saved it (text encoder / UNet / the rest):
`weights_mb` is saved tensors whose storage is a model weight's (the alias weights: no memory of
their own), `casts_mb` float32 tensors shaped like an fp16/bf16 weight of the model (ComfyUI's
per-forward weight casts), `activations_mb` the rest. All of it is alive at once at the start of
the backward pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from devkit import comfy_host

from .attention import Variant, run_trainer
from .child import add_common_args, emit, run_in_host
from .step_floor import load_case

BACKWARD = "autograd::engine::evaluate_function"


def _scope(module: torch.nn.Module, name: str) -> list:
    open_scopes = []

    def pre(mod, args):
        scope = torch.profiler.record_function(name)
        scope.__enter__()
        open_scopes.append(scope)

    def post(mod, args, output):
        open_scopes.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


class SavedTensors:
    """What autograd saves for the backward pass while entered, each storage counted once."""

    def __init__(self, models, phase: dict):
        self.phase = phase
        self.weights = {p.untyped_storage().data_ptr() for m in models for p in list(m.parameters()) + list(m.buffers())}
        self.low_shapes = {tuple(p.shape) for m in models for p in m.parameters()
                           if p.dtype in (torch.float16, torch.bfloat16)}
        self.seen: set[int] = set()
        self.bytes: dict[tuple[str, str], int] = {}
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    def pack(self, t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.seen:
            self.seen.add(ptr)
            if ptr in self.weights:
                kind = "weights"
            elif t.dtype == torch.float32 and tuple(t.shape) in self.low_shapes and not t.requires_grad:
                kind = "casts"
            else:
                kind = "activations"
            key = (self.phase.get("now", "rest"), kind)
            self.bytes[key] = self.bytes.get(key, 0) + storage.nbytes()
        return t

    def __enter__(self):
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    def summary(self) -> dict:
        out = {}
        for (phase, kind), b in sorted(self.bytes.items()):
            out.setdefault(phase, {})[f"{kind}_mb"] = b / 2**20
        return out


def _phase(module: torch.nn.Module, phase: dict, name: str) -> list:
    def pre(mod, args):
        phase["now"] = name

    def post(mod, args, output):
        phase["now"] = "rest"

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def measure(size: int, steps: int, warmup: int, plain: bool, top: int) -> dict:
    trainer_mod = comfy_host.pack_import("trainer")
    TrainConfig = comfy_host.pack_import("tokensmith.train_config").TrainConfig
    adapter = comfy_host.pack_import("comfy_adapter")
    trainer_mod.PROGRESS_EVERY_S = 0.0
    loaded = load_case("sd15-64")
    variant = Variant(adapter)
    cfg = TrainConfig(name=f"bench-profile-{size}", steps=warmup + steps + 1, validate_every=0, preview_every=0)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=False)
    state = {}
    phase: dict[str, str] = {}
    saved = SavedTensors([loaded.model.model, loaded.clip.cond_stage_model], phase)

    def on_progress(p):
        if p.step == warmup:
            state["t0"] = time.perf_counter()
            prof.start()
        elif p.step == warmup + steps:
            prof.stop()
            state["wall_s"] = time.perf_counter() - state["t0"]
            saved.__enter__()  # the next step's saved tensors
        elif p.step == warmup + steps + 1:
            saved.__exit__(None, None, None)

    hooks = [h for e in adapter.encoders_of(loaded.clip) for h in _scope(e.model, "tokensmith::text_encoder_forward")]
    hooks += _scope(loaded.model.model.diffusion_model, "tokensmith::unet_forward")
    hooks += [h for e in adapter.encoders_of(loaded.clip) for h in _phase(e.model, phase, "text_encoder")]
    hooks += _phase(loaded.model.model.diffusion_model, phase, "unet")
    variant.set("plain" if plain else "fast")
    try:
        run_trainer(trainer_mod, loaded, cfg, size, on_progress)
    finally:
        variant.restore()
        for h in hooks:
            h.remove()
    events = prof.events()
    step_s = state["wall_s"] / steps

    def scope_s(name):
        return sum(e.cpu_time_total for e in events if e.name == name) / 1e6 / steps

    backward_s = sum(e.cpu_time_total for e in events if e.name.startswith(BACKWARD)) / 1e6 / steps
    te_s, unet_s = scope_s("tokensmith::text_encoder_forward"), scope_s("tokensmith::unet_forward")
    phases = {"text_encoder_forward_s": te_s, "unet_forward_s": unet_s, "backward_s": backward_s,
              "rest_s": step_s - te_s - unet_s - backward_s}
    averages = sorted((a for a in prof.key_averages() if not a.key.startswith(("tokensmith::", BACKWARD))),
                      key=lambda a: a.self_cpu_time_total, reverse=True)
    ops = [{"op": a.key, "calls_per_step": a.count / steps, "self_s_per_step": a.self_cpu_time_total / 1e6 / steps,
            "share": a.self_cpu_time_total / 1e6 / steps / step_s} for a in averages[:top]]
    return {"pixels": size, "attention": "plain (ComfyUI's configured)" if plain else "training attention",
            "steps_profiled": steps, "step_s": step_s, "phases": phases, "ops": ops,
            "saved_for_backward": saved.summary()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="ComfyUI's configured attention")
    parser.add_argument("--top", type=int, default=15, help="ops listed")
    add_common_args(parser)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    out = run_in_host(args.threads, lambda: measure(args.size, args.steps, args.warmup, args.plain, args.top))
    out["torch_threads"] = torch.get_num_threads()
    out["load_average_start"], out["load_average_end"] = load, os.getloadavg()
    emit(out, args.json)
    print(f"{out['pixels']}px, {out['attention']}: step {out['step_s']:.3f} s; "
          + ", ".join(f"{k.removesuffix('_s')} {v:.3f} s" for k, v in out["phases"].items()), file=sys.stderr)
    for where, kinds in out["saved_for_backward"].items():
        print(f"  saved for backward, {where}: " + ", ".join(f"{k} {v:.0f}" for k, v in kinds.items()), file=sys.stderr)
    for op in out["ops"]:
        print(f"  {op['op']:<48} {op['calls_per_step']:>7.0f} calls  {op['self_s_per_step']:.3f} s  {op['share']:.0%}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
