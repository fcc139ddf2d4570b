"""Small, real ComfyUI models for tests, the demo and benchmarks (seeded random weights).

Everything here is built with ComfyUI's own classes (supported_models, model_base, ModelPatcher,
comfy.sd.CLIP, comfy.sd.VAE), at real encoder widths (768 / 1024 / 1280) so embedding files made
on them have the shapes real files have, but with few layers so they run on a CPU in seconds.
Weights are made under torch.inference_mode(), as ComfyUI's loaders make them inside a prompt.

`write_sd15_checkpoint` writes the smallest checkpoint ComfyUI detects as SD1.5, with a full
CLIP-L and the standard VAE: the default model of the demo and the benchmarks.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from .comfy_host import import_comfy

# A text encoder with the real width but three thin layers.
SMALL_TEXT_ENCODER = {"num_hidden_layers": 3, "intermediate_size": 256, "num_attention_heads": 4}

_UNET_COMMON = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "in_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "model_channels": 64,
    "num_res_blocks": [1, 1],
    "channel_mult": [1, 2],
    "transformer_depth_middle": 1,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


@dataclass
class ModelSet:
    """What ComfyUI's checkpoint loader hands a graph: MODEL, CLIP, VAE."""

    family: str
    model: Any  # comfy.model_patcher.ModelPatcher
    clip: Any  # comfy.sd.CLIP
    vae: Any  # comfy.sd.VAE


def fill_seeded(module: torch.nn.Module, seed: int, cross_attention_gain: float = 1.0) -> None:
    """Give every parameter a seeded value of a sensible scale (weights ~ 1/sqrt(fan_in)).

    cross_attention_gain scales the UNet's attn2 key/value projections, so that the prompt
    (and therefore an embedding) visibly steers a random model.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                if "token_embedding" in name or "position_embedding" in name:
                    std = 0.014  # real CLIP token rows have L2 norms of ~0.4 at width 768
                else:
                    std = 1.0 / math.sqrt(max(1, p[0].numel()))
                    if ".attn2.to_k" in name or ".attn2.to_v" in name:
                        std *= cross_attention_gain
                values = torch.randn(p.shape, generator=gen) * std
            elif name.endswith("weight") and ("norm" in name or "ln" in name):
                values = torch.ones(p.shape)
            else:
                values = torch.randn(p.shape, generator=gen) * 0.01
            p.copy_(values.to(p.dtype))


def _clip(tokenizer_cls, model_cls, model_options: dict, seed: int):
    import comfy.sd
    import comfy.supported_models_base
    import folder_paths

    target = comfy.supported_models_base.ClipTarget(tokenizer_cls, model_cls)
    clip = comfy.sd.CLIP(
        target=target,
        embedding_directory=folder_paths.get_folder_paths("embeddings"),
        model_options={"dtype": torch.float32, **model_options},
    )
    fill_seeded(clip.cond_stage_model, seed)
    return clip


@contextlib.contextmanager
def _quiet_logging():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def small_vae(seed: int):
    """A small real ComfyUI VAE (4 latent channels, x8 down-sampling) with seeded weights, on ComfyUI's device."""
    import comfy.sd

    ddconfig = {
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
    }
    with _quiet_logging():  # an empty state dict makes ComfyUI list every VAE key as missing; we fill them next
        vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}}, dtype=torch.float32)
    fill_seeded(vae.first_stage_model, seed)
    return vae


def _model(config_cls, unet_config: dict, seed: int, model_type=None, gain: float = 3.0):
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher

    config = config_cls(unet_config)
    config.set_inference_dtype(torch.float32, None)
    if model_type is None:
        base = config.get_model({})
    else:
        base = comfy.model_base.BaseModel(config, model_type=model_type)
    fill_seeded(base.diffusion_model, seed, cross_attention_gain=gain)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)


def build_tiny(family: str, seed: int = 0) -> ModelSet:
    """A tiny real ComfyUI MODEL/CLIP/VAE of one family: 'sd1', 'sd2' (v-prediction) or 'sdxl'."""
    import_comfy()
    import comfy.model_base
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models
    import comfy.text_encoders.sd2_clip as sd2_clip

    with torch.inference_mode():
        if family == "sd1":
            unet = {**_UNET_COMMON, "adm_in_channels": None, "context_dim": 768, "use_linear_in_transformer": False,
                    "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1]}
            model = _model(comfy.supported_models.SD15, unet, seed)
            clip = _clip(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel,
                         {"clip_l_model_config": SMALL_TEXT_ENCODER}, seed + 1)
        elif family == "sd2":
            unet = {**_UNET_COMMON, "adm_in_channels": None, "context_dim": 1024, "use_linear_in_transformer": True,
                    "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1]}
            model = _model(comfy.supported_models.SD20, unet, seed, model_type=comfy.model_base.ModelType.V_PREDICTION)
            clip = _clip(sd2_clip.SD2Tokenizer, sd2_clip.SD2ClipModel,
                         {"clip_h_model_config": SMALL_TEXT_ENCODER}, seed + 1)
        elif family == "sdxl":
            unet = {**_UNET_COMMON, "adm_in_channels": 2816, "num_classes": "sequential", "context_dim": 2048,
                    "use_linear_in_transformer": True, "transformer_depth": [0, 1],
                    "transformer_depth_output": [0, 0, 1, 1]}
            model = _model(comfy.supported_models.SDXL, unet, seed)
            clip = _clip(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel,
                         {"clip_l_model_config": SMALL_TEXT_ENCODER, "clip_g_model_config": SMALL_TEXT_ENCODER}, seed + 1)
        else:
            raise ValueError(f"unknown family {family!r}")
        vae = small_vae(seed + 2)
    return ModelSet(family, model, clip, vae)


# The smallest UNet ComfyUI's model detection still calls SD1.5 (model_channels 320, context 768).
SD15_CHECKPOINT_UNET = {
    **_UNET_COMMON, "model_channels": 320, "adm_in_channels": None, "context_dim": 768,
    "use_linear_in_transformer": False, "channel_mult": [1], "num_res_blocks": [1],
    "transformer_depth": [1], "transformer_depth_output": [1, 1],
}


def write_sd15_checkpoint(path, seed: int = 0) -> None:
    """Write a real-architecture SD1.5 checkpoint (full CLIP-L and standard VAE, random weights)."""
    import_comfy()
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.utils

    with torch.inference_mode():
        model = _model(comfy.supported_models.SD15, SD15_CHECKPOINT_UNET, seed)
        clip = _clip(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel, {}, seed + 1)
        with _quiet_logging():
            # these keys make ComfyUI pick the standard SD VAE (x8, ch_mult 1,2,4,4), not the x4 upscaler's
            vae = comfy.sd.VAE(sd={"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3),
                                   "encoder.down.2.downsample.conv.weight": torch.zeros(512, 512, 3, 3),
                                   "decoder.up.3.upsample.conv.weight": torch.zeros(512, 512, 3, 3),
                                   "post_quant_conv.weight": torch.zeros(4, 4, 1, 1)}, dtype=torch.float32)
        fill_seeded(vae.first_stage_model, seed + 2)
        sd = model.model.state_dict_for_saving(clip.get_sd(), vae.get_sd(), None)
        # fp16, as most published SD1.5 checkpoints are stored
        sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
        comfy.utils.save_torch_file(sd, str(path), metadata={"tokensmith.note": "random weights, for tests and the demo only"})
