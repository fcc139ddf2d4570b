"""python -m devkit.miniworld.pretrain [PATH]: pre-train the mini-world checkpoint on this CPU.

What it writes is an ordinary SD1.5 checkpoint (ComfyUI's CheckpointLoaderSimple detects it as SD1.5):
- the text encoder is a full CLIP-L with seeded random weights, never trained, whose layers' residual
  branches are zero, so each output position is the normed sum of its token's and position's
  embeddings (a caption's words stay apart for the UNet's cross-attention to key on);
- the VAE is ComfyUI's TAESD layout (x8, 4 latent channels, 64-wide convolutions; ComfyUI picks it
  from the `first_stage_model.taesd_*` keys), trained to reconstruct the world's pictures, its
  vae_scale / vae_shift set so that the UNet's latents have mean 0 and spread 1;
- the UNet is the smallest SD1.5 layout detection accepts (model_channels 320, context 768, one
  level, one res block, cross-attention in the input block and the last output block, no middle
  block), trained on the VAE's latents of captioned pictures, conditioned on the frozen CLIP's
  encoding of each caption (1 in 10 on the empty prompt, for CFG).
Each stage prints its wall and CPU seconds; they are also kept in the file's metadata, with the
x0 error by noise band and, at high noise, with each picture's own caption against a wrong one and the
empty one (the UNet follows its captions when the right one gives clearly less error).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..model_factory import checkpoint_state_dict
from . import world

UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None, "context_dim": 768,
    "use_linear_in_transformer": False, "channel_mult": [1], "num_res_blocks": [1], "transformer_depth": [1],
    "transformer_depth_output": [0, 1], "transformer_depth_middle": -2, "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


class Settings:
    seed = 0
    images_per_caption = 4
    vae_steps = 120
    vae_batch = 16
    vae_crop = 32
    vae_lr = 2e-3
    unet_steps = 350
    unet_batch = 16
    unet_lr = 1e-3
    # x0-MSE weight min(1/sigma^2, 5) is eps-MSE with min-SNR-5; at high noise it leaves the picture's
    # layout (what the prompt decides) almost unweighted, so the weight never drops below this floor
    weight_floor = 0.2
    uncond_p = 0.1
    attn2_lr_mult = 1.0  # cross-attention's learning rate over the rest's
    # timesteps drawn as 1000 u^(1/t_power): above 1 they lean to high noise, where the layout is set
    t_power = 2.0


class Clock:
    """Wall and CPU (process) seconds per stage."""

    def __init__(self):
        self.stages: dict[str, dict[str, float]] = {}
        self._w, self._c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        self.stages[name] = {"wall_s": round(w - self._w, 1), "cpu_s": round(c - self._c, 1)}
        print(f"  {name}: {w - self._w:.1f} s wall, {c - self._c:.1f} s CPU", flush=True)
        self._w, self._c = w, c

    def total(self) -> dict[str, float]:
        return {k: round(sum(s[k] for s in self.stages.values()), 1) for k in ("wall_s", "cpu_s")}


def _init_(module: torch.nn.Module, seed: int, zero=()) -> None:
    """Seeded weights: N(0, 1/fan_in) for matrices and kernels, norms at 1, biases at 0, and the
    parameters whose names contain one of `zero` at 0 (blocks that start as identities)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(z in name for z in zero):
                p.zero_()
            elif p.dim() >= 2:
                std = 0.014 if "embedding" in name else 1.0 / math.sqrt(p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def _round_half(module: torch.nn.Module) -> None:
    """The weights as the fp16 checkpoint will give them back."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


def build_clip(seed: int):
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target=target, embedding_directory=[], model_options={"dtype": torch.float32})
    # every layer's residual branches at zero: each output position is then
    # final_layer_norm(token + position), so a caption's words reach the UNet apart, and a new
    # input vector (textual inversion) steers its own position with a gradient through the norm
    _init_(clip.cond_stage_model, seed, zero=["self_attn.out_proj.", "mlp.fc2."])
    _round_half(clip.cond_stage_model)
    return clip


def encode_captions(clip, captions: list[str], batch: int = 16) -> torch.Tensor:
    """[N, 77, 768]: ComfyUI's encoding of each caption. Captions go through the encoder `batch` at a
    time, as the 77-token chunks of one long prompt (with every weight 1.0, exactly each caption's
    own encoding). The layers are identities (zero residual branches), so they are skipped, which
    saves most of a CPU minute; the first batch is checked against the full encoder."""
    def encode(chunk: list[str]) -> torch.Tensor:
        tokens = [clip.tokenize(c)["l"] for c in chunk]
        assert all(len(t) == 1 for t in tokens), "a caption longer than one chunk"
        cond = clip.encode_from_tokens({"l": [t[0] for t in tokens]})
        return cond.reshape(len(tokens), -1, cond.shape[-1]).float().clone()

    encoder = clip.cond_stage_model.clip_l.transformer.text_model.encoder
    layers = encoder.layers
    out = []
    with torch.inference_mode():
        full = encode(captions[:batch])
        encoder.layers = torch.nn.ModuleList()
        try:
            for i in range(0, len(captions), batch):
                out.append(encode(captions[i:i + batch]))
        finally:
            encoder.layers = layers
    assert torch.allclose(out[0], full, atol=1e-5), "the CLIP layers are not identities"
    return torch.cat(out)


def pictures(scenes: list) -> torch.Tensor:
    """[N, 3, H, W] in 0..1."""
    return torch.from_numpy(np.stack([np.asarray(world.draw(s), dtype=np.float32) / 255.0 for s in scenes])).permute(0, 3, 1, 2).contiguous()


def _start_vae(vae, seed: int) -> None:
    """A starting point that already works: the encoder averages each 8x8 patch's colour into latent
    channels 0-2 (centred), the decoder paints each patch in that colour (nearest up-sampling), every
    Block an identity (its last convolution at zero) and channel 3 free. Training then sharpens it."""
    _init_(vae, seed, zero=["conv.4.weight"])
    enc, dec = vae.taesd_encoder, vae.taesd_decoder
    with torch.no_grad():
        for conv in (enc[0], enc[2], enc[6], enc[10], dec[1], dec[7], dec[12], dec[17], enc[14], dec[19]):
            conv.weight.mul_(0.01)
            if conv.bias is not None:
                conv.bias.zero_()
        for k in range(3):
            enc[0].weight[k, k, 1, 1] = 1.0  # colour (0..1) into channels 0-2
            for down in (enc[2], enc[6], enc[10]):  # stride 2, taps 1-2 = input pixels 2i, 2i+1
                down.weight[k, k, 1:, 1:] = 0.25
            enc[14].weight[k, k, 1, 1] = 2.0
            enc[14].bias[k] = -1.0  # latent = 2 x colour - 1
            dec[1].weight[k, k, 1, 1] = 0.5
            dec[1].bias[k] = 0.5  # back to the colour, >= 0 through the ReLUs
            for up in (dec[7], dec[12], dec[17]):
                up.weight[k, k, 1, 1] = 1.0
            dec[19].weight[k, k, 1, 1] = 1.0


def train_vae(images: torch.Tensor, s: Settings, gen: torch.Generator):
    import comfy.taesd.taesd

    vae = comfy.taesd.taesd.TAESD()
    _start_vae(vae, s.seed + 2)
    enc, dec = vae.taesd_encoder, vae.taesd_decoder
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=s.vae_lr)
    n, size = images.shape[0], images.shape[-1]
    for step in range(s.vae_steps):
        for g in opt.param_groups:
            g["lr"] = s.vae_lr * 0.5 * (1 + math.cos(math.pi * step / s.vae_steps))
        idx = torch.randint(0, n, (s.vae_batch,), generator=gen)
        ox, oy = (int(v) // 8 * 8 for v in torch.randint(0, size - s.vae_crop + 1, (2,), generator=gen))
        x = images[idx, :, oy:oy + s.vae_crop, ox:ox + s.vae_crop]
        z = enc(x)
        z_noisy = z + 0.1 * torch.randn(z.shape, generator=gen)
        loss = (dec(z_noisy) - x).abs().mean() + 1e-3 * z.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 40 == 0 or step == s.vae_steps - 1:
            print(f"    vae step {step}: loss {loss.item():.4f}", flush=True)
    with torch.no_grad():
        z = torch.cat([enc(images[i:i + 64]) for i in range(0, n, 64)])
        err = (dec(z[:64]) - images[:64]).abs().mean().item()
        mu, sd = z.mean().item(), z.std().item()
        # ComfyUI: stored latent = enc / vae_scale + vae_shift; the model sees 0.18215 x that
        vae.vae_scale.fill_(0.18215 * sd)
        vae.vae_shift.fill_(-mu / (0.18215 * sd))
    print(f"    vae reconstruction error {err * 255:.1f}/255, latent mean {mu:.2f} std {sd:.2f}", flush=True)
    return vae, (z - mu) / sd, err


def build_unet(seed: int):
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(UNET))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    # output convolutions, res blocks' second convs and transformers' out projections at zero, as
    # the original UNet starts
    _init_(base.diffusion_model, seed, zero=["out.2.", "out_layers.3.", "proj_out."])
    # newer ComfyUI builds models with their weights frozen (it only samples); here they are trained
    base.diffusion_model.requires_grad_(True)
    return base


def _timesteps(count: int, s: Settings, gen: torch.Generator) -> torch.Tensor:
    if s.t_power == 1.0:
        return torch.randint(0, count, (s.unet_batch,), generator=gen)
    u = torch.rand(s.unet_batch, generator=gen)
    return (count * u ** (1.0 / s.t_power)).long().clamp(max=count - 1)


def train_unet(base, latents: torch.Tensor, cond_index: torch.Tensor, conds: torch.Tensor, s: Settings,
               gen: torch.Generator) -> list[float]:
    """x0-MSE weighted by 1/sigma^2 clamped to [weight_floor, 5], timesteps as _timesteps draws them."""
    unet = base.diffusion_model
    params = [p for p in unet.parameters()]
    cross = [p for n, p in unet.named_parameters() if ".attn2." in n]
    rest = [p for n, p in unet.named_parameters() if ".attn2." not in n]
    opt = torch.optim.AdamW([{"params": rest, "mult": 1.0}, {"params": cross, "mult": s.attn2_lr_mult}],
                            lr=s.unet_lr, weight_decay=0.0)
    sampling = base.model_sampling
    n = latents.shape[0]
    empty = conds.shape[0] - 1
    losses, by_t = [], []
    warm = 10
    for step in range(s.unet_steps):
        lr = s.unet_lr * min(1.0, (step + 1) / warm) * (0.55 + 0.45 * math.cos(math.pi * step / s.unet_steps))
        for g in opt.param_groups:
            g["lr"] = lr * g["mult"]
        idx = torch.randint(0, n, (s.unet_batch,), generator=gen)
        x0 = latents[idx]
        ci = cond_index[idx].clone()
        ci[torch.rand(s.unet_batch, generator=gen) < s.uncond_p] = empty
        t = _timesteps(len(sampling.sigmas), s, gen)
        sigma = sampling.sigmas[t].float()
        noise = torch.randn(x0.shape, generator=gen)
        xt = x0 + noise * sigma.view(-1, 1, 1, 1)
        pred = base.apply_model(xt, sigma, c_crossattn=conds[ci])
        w = (1.0 / sigma**2).clamp(min=s.weight_floor, max=5.0)
        err = ((pred - x0) ** 2).mean(dim=(1, 2, 3))
        loss = (err * w).mean()
        by_t.extend(zip(t.tolist(), err.detach().tolist(), strict=True))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == s.unet_steps - 1:
            print(f"    unet step {step}: loss {np.mean(losses[-20:]):.4f}", flush=True)
    return losses, by_t[len(by_t) * 3 // 4:]


BANDS = ((0, 250), (250, 500), (500, 750), (750, 1000))  # timestep ranges, low noise to high


def loss_by_noise(by_t: list) -> dict[str, float]:
    """Mean unweighted x0-MSE per timestep band over the last quarter of training."""
    out = {}
    for lo, hi in BANDS:
        errs = [e for t, e in by_t if lo <= t < hi]
        out[f"t{lo}-{hi}"] = round(float(np.mean(errs)), 4) if errs else None
    return out


def caption_gap(base, latents, cond_index, conds, seed: int, count: int = 96) -> dict:
    """x0-MSE at high noise with each picture's own caption, another caption and the empty one, on
    the same noise: the UNet follows its captions when the right one gives clearly less error."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(latents.shape[0], generator=gen)[:count]
    x0, right = latents[idx], cond_index[idx]
    empty = conds.shape[0] - 1
    wrong = (right + torch.randint(1, empty, (count,), generator=gen)) % empty
    sigmas = base.model_sampling.sigmas
    out = {}
    with torch.no_grad():
        for t in (999, 800, 600):
            sigma = torch.full((count,), float(sigmas[t]))
            xt = x0 + torch.randn(x0.shape, generator=gen) * sigma.view(-1, 1, 1, 1)
            errs = {}
            for name, ci in (("right", right), ("wrong", wrong), ("empty", torch.full_like(right, empty))):
                pred = torch.cat([base.apply_model(xt[i:i + 32], sigma[i:i + 32], c_crossattn=conds[ci[i:i + 32]])
                                  for i in range(0, count, 32)])
                errs[name] = round(((pred - x0) ** 2).mean().item(), 4)
            out[f"t{t}"] = errs
    return out


def build(path: Path, s: Settings | None = None) -> dict:
    """Pre-train and write the checkpoint at path; returns the build report."""
    from devkit.comfy_host import import_comfy

    s = s or Settings()
    torch.manual_seed(s.seed)
    import_comfy(tempfile.mkdtemp(prefix="tokensmith-miniworld-"))
    import comfy.utils

    clock = Clock()
    print("mini-world: pre-training the checkpoint on this CPU", flush=True)
    gen = torch.Generator().manual_seed(s.seed)
    rng = random.Random(s.seed)
    combos = world.all_captions()
    scenes = [world.random_scene(rng, *c) for c in combos for _ in range(s.images_per_caption)]
    cond_index = torch.tensor([i for i in range(len(combos)) for _ in range(s.images_per_caption)])
    images = pictures(scenes)
    clock.lap(f"pictures ({len(scenes)})")

    clip = build_clip(s.seed + 1)
    captions = [world.Scene(*c).caption for c in combos]
    conds = encode_captions(clip, [*captions, ""])
    clock.lap(f"text encoder (frozen, random) on {len(captions)} captions")

    vae, latents, vae_err = train_vae(images, s, gen)
    clock.lap(f"VAE ({s.vae_steps} steps)")

    base = build_unet(s.seed + 3)
    losses, by_t = train_unet(base, latents, cond_index, conds, s, gen)
    clock.lap(f"UNet ({s.unet_steps} steps x {s.unet_batch})")
    gap = caption_gap(base, latents, cond_index, conds, s.seed + 4)
    print(f"    x0 error by noise band: {loss_by_noise(by_t)}", flush=True)
    print(f"    x0 error at high noise, right / wrong / empty caption: {gap}", flush=True)
    clock.lap("caption-gap diagnostic")

    report = {"stages": clock.stages, "total": clock.total(), "vae_error_255": round(vae_err * 255, 2),
              "unet_loss_start": float(np.mean(losses[:10])), "unet_loss_end": float(np.mean(losses[-10:])),
              "threads": torch.get_num_threads(), "loss_by_noise": loss_by_noise(by_t), "caption_gap": gap,
              "settings": {k: getattr(s, k) for k in vars(Settings) if not k.startswith("_")}}
    with torch.no_grad():
        sd = checkpoint_state_dict(base, clip.get_sd(), vae.state_dict())
        sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    comfy.utils.save_torch_file(sd, str(partial), metadata={
        "tokensmith.note": "the mini-world: coloured shapes, pre-trained here (devkit/miniworld)",
        "tokensmith.build": json.dumps(report)})
    partial.rename(path)
    clock.lap("write")
    report["total"] = clock.total()
    path.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {report['total']['wall_s']} s wall, "
          f"{report['total']['cpu_s']} s CPU", flush=True)
    return report


def main(argv=None) -> int:
    from . import checkpoint_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, nargs="?", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--unet-steps", type=int, default=None)
    parser.add_argument("--vae-steps", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override one of Settings (for trying settings without editing the file)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Settings()
    if args.unet_steps is not None:
        s.unet_steps = args.unet_steps
    if args.vae_steps is not None:
        s.vae_steps = args.vae_steps
    for item in args.set:
        name, value = item.split("=", 1)
        setattr(s, name, type(getattr(Settings, name))(value))
    path = args.path or checkpoint_path()
    if path.exists():
        print(f"{path} exists; leaving it as it is")
        return 0
    build(path, s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
