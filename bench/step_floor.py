"""Training step time against the floor: TokenSmith's whole optimizer step / a bare forward + backward.

    python -m bench.step_floor --case sd1-tiny [--warmup 5 --steps 25] [--json OUT]

The floor is the least work any textual-inversion step on the same model has to do: one forward
and backward pass through the same ComfyUI text encoder(s) and UNet modules, same batch size,
resolution and dtype, with the trainable vectors spliced into the token embeddings by hand and
gradients to those vectors only. It runs on its own copy of the weights as ordinary tensors (not
the inference tensors ComfyUI's loaders make), calls the modules directly (no apply_model wrapper,
no tokenizer, no TokenSmith code) and does no optimizer step, no data pipeline and no logging.

Two floors run after every trainer step. The machine floor (`floor_s`, `step_floor_ratio`) is the
fastest correct path of those modules and weights on this machine: PyTorch's SDPA in every attention
call and every weight stored in the compute dtype (on a CPU the text encoder's fp16 weights upcast once
to fp32, so no per-call casts). ComfyUI's floor (`comfy_floor_s`, `comfy_floor_ratio`) runs them as
ComfyUI configured them (on a CPU: sub-quadratic attention in the UNet, basic attention in CLIP,
fp16 weights cast per call), the floor this bench had before.

TokenSmith's step is everything trainer.Trainer does per optimizer step (seeded generators, prompt
templates, tokens with vector slots, text encoder through ComfyUI's encode path, noise and sigmas,
diffusion loss, backward, NaN guard, clipping, AdamW, norm control, history, progress report).
It is timed from outside: the trainer's on_progress callback fires after every step (this bench sets
trainer.PROGRESS_EVERY_S to 0 so the callback is not throttled; the extra report per step is charged
to TokenSmith). Inside that callback the floor runs one step of its own, timed on its own, so the
two alternate A B A B in one process and a slow phase of the shared machine slows both. A trainer
step is the time from the end of one callback to the start of the next.

The run validates every few steps (TokenSmith's validation is part of the node); steps with a
validation are kept apart, so `step_s` is a plain step and `validation_s` the extra cost of one
validation pass, amortized over the node's default validate_every in `validation_overhead`.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from devkit import comfy_host

from .child import add_common_args, emit, run_in_host

# name -> how to load it; every case trains at 64 x 64 pixels (8 x 8 latents), batch as TrainConfig's default
CASES = {
    "sd1-tiny": {"kind": "tiny", "family": "sd1", "size": 64,
                 "about": "tiny SD1-like model (devkit.model_factory.build_tiny, 3-layer CLIP-L, 64-channel UNet)"},
    "sdxl-tiny": {"kind": "tiny", "family": "sdxl", "size": 64,
                  "about": "tiny SDXL-like model (3-layer CLIP-L + CLIP-G, 64-channel UNet with ADM)"},
    "sd15-64": {"kind": "checkpoint", "family": "sd1", "size": 64,
                "about": "real-architecture SD1.5 checkpoint (full 12-layer CLIP-L, 320-channel UNet, "
                         "random weights) loaded by load_checkpoint_guess_config"},
}
FLOOR_PROMPT = "a photo of"  # the floor's prompt: these words, then the vectors, then the end token


# ------------------------------------------------------------------------------------------------
# host and models


@dataclass
class Loaded:
    case: str
    model: object  # ModelPatcher
    clip: object  # comfy.sd.CLIP
    vae: object
    size: int


def load_case(case: str) -> Loaded:
    """The case's MODEL / CLIP / VAE made the way ComfyUI makes them (weights under inference mode)."""
    spec = CASES[case]
    if spec["kind"] == "tiny":
        from devkit.model_factory import build_tiny

        ms = build_tiny(spec["family"], seed=0)
        return Loaded(case, ms.model, ms.clip, ms.vae, spec["size"])
    import comfy.sd
    import folder_paths

    from devkit.make_checkpoint import ensure_checkpoint

    path = ensure_checkpoint()
    with torch.inference_mode():  # as CheckpointLoaderSimple runs inside a prompt
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(path), output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    return Loaded(case, model, clip, vae, spec["size"])


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each storage counted once."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def model_sizes(loaded: Loaded) -> dict[str, int]:
    out = {"unet_bytes": tensor_bytes(loaded.model.model), "text_encoder_bytes": tensor_bytes(loaded.clip.cond_stage_model)}
    first_stage = getattr(loaded.vae, "first_stage_model", None)
    out["vae_bytes"] = tensor_bytes(first_stage) if first_stage is not None else 0
    return out


def make_ordinary(root: torch.nn.Module) -> None:
    """Replace every inference tensor of a module tree by an ordinary copy, one tensor at a time
    (so a process that owns the model never holds two copies of it)."""
    with torch.inference_mode(False):
        for module in root.modules():
            for store in (module._parameters, module._buffers):
                for name, t in list(store.items()):
                    if t is None:
                        continue
                    fresh = t.detach().clone() if t.is_inference() else t.detach()
                    store[name] = torch.nn.Parameter(fresh, requires_grad=False) if store is module._parameters else fresh


# ------------------------------------------------------------------------------------------------
# the floor


def _residual_forward(layer, attention=None):
    # ComfyUI's CLIPLayer adds its residuals in place, which backward cannot go through.
    def forward(x, mask=None, optimized_attention=None):
        x = x + layer.self_attn(layer.layer_norm1(x), mask, attention or optimized_attention)
        return x + layer.mlp(layer.layer_norm2(x))

    return forward


@dataclass
class _FloorEncoder:
    key: str
    model: object  # SDClipModel (the floor's copy)
    ids: torch.Tensor  # [1, 77]
    slot: int  # first position of the vectors
    num_tokens: int  # tokens up to and including the end token (ComfyUI's pooled position + 1)
    intermediate: int | None
    layer_norm_hidden: bool
    last_layer: bool
    projected_pooled: bool


class Floor:
    """A bare forward + backward through the same ComfyUI modules, gradients to the vectors only.

    own_copy=True works on deep copies (the model given stays as it is: the trainer uses it in the
    same process); own_copy=False converts the given model in place (a process that only runs the floor).

    machine=False runs the modules as ComfyUI configured them (its attention function, fp16 text-encoder
    weights cast per call on a CPU): "ComfyUI's floor". machine=True is the fastest correct path of the
    same architecture and weights on this machine, "the machine floor": PyTorch's SDPA in every attention
    call (UNet through ComfyUI's per-call optimized_attention_override, CLIP passed to each layer) and
    every weight stored in the compute dtype (the text encoder's fp16 weights upcast once, exactly, so no
    cast is made per call).
    """

    ENCODER_ATTRS = ("clip_l", "clip_h", "clip_g")  # ComfyUI's SDXL conditioning is [clip_l, clip_g]

    def __init__(self, model, clip, *, num_vectors: int, batch_size: int, pixel_size: tuple[int, int],
                 own_copy: bool = True, seed: int = 0, autocast_dtype: torch.dtype | None = None,
                 machine: bool = False):
        import comfy.clip_model
        import comfy.ldm.modules.attention
        import comfy.model_base

        self.batch_size = batch_size
        self.num_vectors = num_vectors
        self.autocast_dtype = autocast_dtype
        self.machine = machine
        sdpa = comfy.ldm.modules.attention.attention_pytorch if machine else None
        self.unet_options = {"optimized_attention_override": lambda func, *a, **kw: sdpa(*a, **kw)} if machine else {}
        with torch.inference_mode(False):
            base, text = model.model, clip.cond_stage_model
            # only plain modules are copied (not the BaseModel, which can hold its ModelPatcher)
            unet, sampling = base.diffusion_model, base.model_sampling
            if own_copy:
                unet, sampling, text = copy.deepcopy(unet), copy.deepcopy(sampling), copy.deepcopy(text)
            for module in (unet, sampling, text):
                make_ordinary(module)
            for m in text.modules():
                if isinstance(m, comfy.clip_model.CLIPLayer):
                    m.forward = _residual_forward(m, sdpa)
            self.unet_dtype = base.manual_cast_dtype or base.get_dtype()
            if machine and own_copy:
                compute = torch.float32 if autocast_dtype is None else autocast_dtype
                text.to(compute)  # CLIP computes in fp32 (or the autocast dtype): store it so
                if autocast_dtype is None:
                    unet.to(self.unet_dtype)
            self.text, self.unet, self.sampling = text, unet, sampling
            self.device = next(self.unet.parameters()).device
            # the same layer options ComfyUI's encode path applies (clip skip included)
            text.reset_clip_options()
            if clip.layer_idx is not None:
                text.set_clip_options({"layer": clip.layer_idx})
            gen = torch.Generator().manual_seed(seed)
            self.encoders: list[_FloorEncoder] = []
            self.vectors: dict[str, torch.Tensor] = {}
            for attr in self.ENCODER_ATTRS:
                enc = getattr(text, attr, None)
                tok = getattr(clip.tokenizer, attr, None)
                if enc is None or tok is None:
                    continue
                words = tok.tokenizer(FLOOR_PROMPT)["input_ids"][tok.tokens_start:]
                if tok.tokenizer_adds_end_token:
                    words = words[:-1]
                row = [tok.start_token, *words] + [tok.pad_token] * num_vectors + [tok.end_token]
                num_tokens = len(row)
                row += [tok.pad_token] * (tok.max_length - len(row))
                device = enc.transformer.get_input_embeddings().weight.device
                self.encoders.append(_FloorEncoder(
                    key=tok.embedding_key, model=enc, ids=torch.tensor([row], device=device), slot=1 + len(words),
                    num_tokens=num_tokens, intermediate=enc.layer_idx, layer_norm_hidden=enc.layer_norm_hidden_state,
                    last_layer=enc.layer == "last", projected_pooled=enc.return_projected_pooled))
                width = tok.embedding_size
                self.vectors[tok.embedding_key] = (0.02 * torch.randn(num_vectors, width, generator=gen)).to(device).requires_grad_()
            h, w = pixel_size
            self.latents = torch.randn(batch_size, 4, h // 8, w // 8, generator=gen).to(self.device)
            self.adm_tail = None
            if isinstance(base, comfy.model_base.SDXL):
                # the size part of SDXL's ADM input is a constant for a fixed resolution
                pooled_width = self.vectors["clip_g"].shape[1]
                with torch.no_grad():
                    adm = base.encode_adm(pooled_output=torch.zeros(1, pooled_width), width=w, height=h,
                                          target_width=w, target_height=h)
                self.adm_tail = adm[:, pooled_width:].to(self.device)

    def _autocast(self):
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def conditioning(self, vectors: dict[str, torch.Tensor] | None = None, batch: int = 1):
        """cond [B, 77, width] and pooled output (SDXL) for the floor's prompt with the vectors."""
        vectors = self.vectors if vectors is None else vectors
        conds, pooled = [], None
        n = self.num_vectors
        for e in self.encoders:
            tokens = e.model.transformer.get_input_embeddings()(e.ids, out_dtype=torch.float32)
            vec = vectors[e.key].to(tokens.device, torch.float32).unsqueeze(0)
            embeds = torch.cat([tokens[:, :e.slot], vec, tokens[:, e.slot + n:]], dim=1)
            if batch > 1:
                embeds = embeds.expand(batch, -1, -1)
            out = e.model.transformer(None, None, embeds=embeds, num_tokens=[e.num_tokens] * batch,
                                      intermediate_output=e.intermediate, final_layer_norm_intermediate=e.layer_norm_hidden,
                                      dtype=torch.float32)
            conds.append((out[0] if e.last_layer else out[1]).float())
            if not e.projected_pooled and len(out) >= 4 and out[3] is not None:
                pooled = out[3].float()
            elif out[2] is not None:
                pooled = out[2].float()
        return torch.cat(conds, dim=-1), pooled

    def step(self) -> float:
        """One forward + backward; returns the loss."""
        with torch.inference_mode(False), torch.enable_grad(), self._autocast():
            for v in self.vectors.values():
                v.grad = None
            b = self.batch_size
            cond, pooled = self.conditioning(batch=b)
            x0 = self.latents
            sigma = self.sampling.sigma(torch.rand(b) * 999.0).to(self.device, torch.float32)
            noise = torch.randn_like(x0)
            xt = x0 + noise * sigma.view(-1, 1, 1, 1)
            xc = self.sampling.calculate_input(sigma, xt).to(self.unet_dtype)
            t = self.sampling.timestep(sigma).float()
            extra = {}
            if self.adm_tail is not None:
                extra["y"] = torch.cat([pooled, self.adm_tail.expand(b, -1)], dim=1).to(self.unet_dtype)
            if self.unet_options:
                extra["transformer_options"] = dict(self.unet_options)
            out = self.unet(xc, t, context=cond.to(self.unet_dtype), **extra)
            loss = torch.nn.functional.mse_loss(out.float(), noise)
            loss.backward()
        return float(loss.detach())

    def check_against_comfy(self, clip, adapter=None) -> float:
        """Max |difference| between the floor's conditioning and what TokenSmith's encode path gives
        for the same prompt and vectors: proof that the floor does the same text-encoder work."""
        adapter = adapter or comfy_host.pack_import("comfy_adapter")
        vectors = {k: v.detach().cpu().clone() for k, v in self.vectors.items()}
        with torch.inference_mode(False), torch.no_grad():
            ours, pooled = self.conditioning(vectors)
        with torch.inference_mode(), adapter.PromptRows(clip, self.num_vectors) as rows:
            tokens = adapter.fill_slots(rows.tokens(FLOOR_PROMPT + " [name]"), vectors, rows.encoders)
            theirs, their_pooled = adapter.encode_tokens(clip, tokens)
        diff = float((ours.cpu() - theirs.float().cpu()).abs().max())
        if pooled is not None and their_pooled is not None:
            diff = max(diff, float((pooled.cpu() - their_pooled.float().cpu()).abs().max()))
        return diff


# ------------------------------------------------------------------------------------------------
# timing


def quantiles(values: list[float]) -> dict[str, float]:
    vs = sorted(values)
    if not vs:
        return {"median": float("nan"), "p10": float("nan"), "p90": float("nan")}

    def q(p):
        i = (len(vs) - 1) * p
        lo, hi = int(i), min(int(i) + 1, len(vs) - 1)
        return vs[lo] + (vs[hi] - vs[lo]) * (i - lo)

    return {"median": statistics.median(vs), "p10": q(0.1), "p90": q(0.9)}


def bench_latents(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """A LATENT batch for `size` x `size` pixels. The trainer takes latents in place of images +
    VAE (the VAE runs once before training either way, never per step), so trainer and floor see
    the same latent size whatever VAE a checkpoint carries."""
    return torch.randn(count, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))


def interleave(run_trainer, floor: Floor, warmup: int, sync=lambda: None, others: dict | None = None):
    """Trainer and floor steps in turn: run_trainer(on_progress) runs a Trainer whose every progress
    report (one per step) is followed by one floor step. Returns the trainer steps without and with a
    validation, the floor steps and the per-pair ratios, all after `warmup` steps. `sync` waits for
    the device (CUDA runs asynchronously), so each time covers the work, not just its launch.
    `others` ({name: Floor}) are more floors, each run after the first one; their step times and
    ratios (trainer step / that floor's step) are put in others_out[name] = {"times", "pairs"}."""
    plain, with_val, floor_times, pairs = [], [], [], []
    state = {"t": None}
    others = others or {}
    interleave.others_out = {name: {"times": [], "pairs": []} for name in others}

    def on_progress(p):
        sync()
        now = time.perf_counter()
        trainer_s = None if state["t"] is None else now - state["t"]
        f0 = time.perf_counter()
        floor.step()
        sync()
        floor_s = time.perf_counter() - f0
        other_s = {}
        for name, other in others.items():
            f0 = time.perf_counter()
            other.step()
            sync()
            other_s[name] = time.perf_counter() - f0
        if p.step > warmup and trainer_s is not None and p.event is None:
            floor_times.append(floor_s)
            for name, secs in other_s.items():
                interleave.others_out[name]["times"].append(secs)
            if p.val_loss is not None:
                with_val.append(trainer_s)
            else:
                plain.append(trainer_s)
                pairs.append(trainer_s / floor_s)
                for name, secs in other_s.items():
                    interleave.others_out[name]["pairs"].append(trainer_s / secs)
        state["t"] = time.perf_counter()

    run_trainer(on_progress)
    return plain, with_val, floor_times, pairs


def summarize(plain: list[float], floor_times: list[float], pairs: list[float]) -> dict:
    step, fl, pair = quantiles(plain), quantiles(floor_times), quantiles(pairs)
    return {
        "steps_timed": len(plain),
        "step_s": step["median"], "step_p10_s": step["p10"], "step_p90_s": step["p90"],
        "floor_s": fl["median"], "floor_p10_s": fl["p10"], "floor_p90_s": fl["p90"],
        # the ratio of each trainer step to the floor step right after it: robust to the machine's drift
        "step_floor_ratio": pair["median"], "step_floor_ratio_p10": pair["p10"], "step_floor_ratio_p90": pair["p90"],
        "ratio_of_medians": step["median"] / fl["median"],
    }


def measure(case: str, warmup: int = 5, steps: int | None = None, budget_s: float = 60.0,
            min_steps: int = 20, max_steps: int = 30, batch_size: int | None = None) -> dict:
    """Interleaved trainer / floor steps for one case; returns the figures as a dict.

    steps=None sizes the run to the time budget from a few floor steps (between min and max steps)."""
    trainer_mod = comfy_host.pack_import("trainer")
    TrainConfig = comfy_host.pack_import("tokensmith.train_config").TrainConfig
    defaults = TrainConfig()
    batch = batch_size or defaults.batch_size
    t0 = time.perf_counter()
    loaded = load_case(case)
    load_s = time.perf_counter() - t0
    # the machine floor (SDPA, weights in the compute dtype) and ComfyUI's configured floor, both every step
    floor = Floor(loaded.model, loaded.clip, num_vectors=defaults.num_vectors, batch_size=batch,
                  pixel_size=(loaded.size, loaded.size), machine=True)
    comfy_floor = Floor(loaded.model, loaded.clip, num_vectors=defaults.num_vectors, batch_size=batch,
                        pixel_size=(loaded.size, loaded.size))
    check = floor.check_against_comfy(loaded.clip)
    comfy_check = comfy_floor.check_against_comfy(loaded.clip)
    floor.step()  # first-call costs (allocator, kernels) stay out of the figures
    comfy_floor.step()
    t0 = time.perf_counter()
    floor.step()
    comfy_floor.step()
    estimate = time.perf_counter() - t0
    if steps is None:
        # a trainer step plus two floor steps per step, plus the validations (about 1/3 more)
        steps = max(min_steps, min(max_steps, int(budget_s / (1.8 * estimate)) - warmup))
    validate_every = max(5, (warmup + steps) // 4)
    cfg = TrainConfig(name=f"bench-{case}", steps=warmup + steps, validate_every=validate_every, batch_size=batch)

    trainer_mod.PROGRESS_EVERY_S = 0.0  # a report (and so a timestamp) after every step
    latents = bench_latents(max(4, batch), loaded.size)
    t0 = time.perf_counter()
    holder = {}

    def run_trainer(on_progress):
        with torch.inference_mode():
            trainer = trainer_mod.Trainer(loaded.model, loaded.clip, None, None, cfg, latents=latents, overwrite=True,
                                          on_progress=on_progress)
            holder["result"] = trainer.run()

    plain, with_val, floor_times, pairs = interleave(run_trainer, floor, warmup, others={"comfy": comfy_floor})
    result = holder["result"]
    run_s = time.perf_counter() - t0
    figures = summarize(plain, floor_times, pairs)
    comfy = interleave.others_out["comfy"]
    comfy_fl, comfy_pair = quantiles(comfy["times"]), quantiles(comfy["pairs"])
    figures.update({"floor": "machine: PyTorch SDPA everywhere, weights stored in the compute dtype (fp32)",
                    "comfy_floor_s": comfy_fl["median"], "comfy_floor_ratio": comfy_pair["median"],
                    "comfy_floor_ratio_p10": comfy_pair["p10"], "comfy_floor_ratio_p90": comfy_pair["p90"],
                    "machine_floor_speedup_over_comfy_floor": comfy_fl["median"] / figures["floor_s"]})
    val_extra = statistics.median(with_val) - figures["step_s"] if with_val else float("nan")
    return {
        "case": case,
        "about": CASES[case]["about"],
        "pixels": loaded.size,
        "batch_size": cfg.batch_size,
        "num_vectors": cfg.num_vectors,
        "precision": "fp32",
        "unet_dtype": str(floor.unet_dtype).removeprefix("torch."),
        "warmup_steps": warmup,
        **figures,
        "validate_every": validate_every,
        "validation_s": val_extra,
        "validation_samples": cfg.validation_samples,
        "validation_overhead": (val_extra / defaults.validate_every / figures["step_s"]) if defaults.validate_every else 0.0,
        "default_validate_every": defaults.validate_every,
        "floor_cond_max_abs_diff": check,
        "comfy_floor_cond_max_abs_diff": comfy_check,
        "load_s": load_s,
        "run_s": run_s,
        "final_loss": float(result.history.loss[-1]),
        **model_sizes(loaded),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: fit the budget)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--budget-s", type=float, default=60.0, help="rough time for the timed steps")
    add_common_args(parser)
    args = parser.parse_args(argv)
    out = run_in_host(args.threads, lambda: measure(args.case, args.warmup, args.steps, args.budget_s,
                                                    batch_size=args.batch_size))
    out["torch_threads"] = torch.get_num_threads()
    emit(out, args.json)
    print(f"{args.case}: step {out['step_s'] * 1000:.1f} ms, floor {out['floor_s'] * 1000:.1f} ms, "
          f"ratio {out['step_floor_ratio']:.3f}; ComfyUI's floor {out['comfy_floor_s'] * 1000:.1f} ms, "
          f"ratio {out['comfy_floor_ratio']:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
