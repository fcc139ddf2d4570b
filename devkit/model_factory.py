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


def small_vae(seed: int, channels: int = 4):
    """A small real ComfyUI VAE (4 latent channels, or `channels`; x8 down-sampling) with seeded weights, on
    ComfyUI's device."""
    import comfy.sd

    ddconfig = {
        "double_z": True, "z_channels": channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
    }
    with _quiet_logging():  # an empty state dict makes ComfyUI list every VAE key as missing; we fill them next
        vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": ddconfig, "embed_dim": channels}}, dtype=torch.float32)
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
    """A tiny real ComfyUI MODEL/CLIP/VAE of one family: 'sd1', 'sd2' (v-prediction) or 'sdxl', or one of
    the flow-matching families in FLOW_FAMILIES (see build_tiny_flow)."""
    if family in FLOW_FAMILIES:
        return build_tiny_flow(family, seed)
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


def checkpoint_state_dict(base, clip_sd: dict, vae_sd: dict) -> dict:
    """A model_base model's weights with its CLIP and VAE, in ComfyUI's checkpoint layout. ComfyUI
    v0.33 takes the diffusion model's state dict as a first argument where v0.3.75 read it itself."""
    import inspect

    kwargs = {"clip_state_dict": clip_sd, "vae_state_dict": vae_sd}
    if "unet_state_dict" in inspect.signature(base.state_dict_for_saving).parameters:
        kwargs["unet_state_dict"] = base.diffusion_model.state_dict()
    return base.state_dict_for_saving(**kwargs)


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
        sd = checkpoint_state_dict(model.model, clip.get_sd(), vae.get_sd())
        # fp16, as most published SD1.5 checkpoints are stored
        sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
        comfy.utils.save_torch_file(sd, str(path), metadata={"tokensmith.note": "random weights, for tests and the demo only"})


# ---------------------------------------------------------------------------------------------
# Flow-matching families: SD3, Flux.1 (dev / schnell), Chroma, Z-Image, Qwen-Image
#
# The same idea at smaller sizes: ComfyUI's own supported_models configs, model_base classes, text
# encoder classes and tokenizers, with small depth and width. CLIP-L/G keep their real widths (768 /
# 1280, three thin layers, as for SDXL); T5 and the LLM encoders get small widths (their vocabularies of
# 32k / 152k rows at the real 4096 / 2560 / 3584 would be 0.5-2 GB), so embedding files made on these
# models have the real keys but the tiny model's widths. The one exception is SD3 with T5: ComfyUI's
# SD3ClipModel pads the CLIP-L+G output to 4096 and joins it to T5's along the tokens, so that T5 must
# be 4096 wide (a thin one: 131M parameters, nearly all its token table).

FLOW_FAMILIES = ("sd3", "sd3_t5", "flux", "flux_schnell", "chroma", "zimage", "qwen_image")

SMALL_T5 = {"d_model": 64, "d_ff": 128, "num_heads": 2, "d_kv": 32, "num_layers": 2}
SMALL_T5_4096 = {"d_model": 4096, "d_ff": 32, "num_heads": 1, "d_kv": 32, "num_layers": 2}
# Qwen2.5 / Qwen3 at width 64; head_dim stays ComfyUI's fixed 128; at least 3 layers (Qwen3 reads layer -2).
SMALL_LLM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 1,
             "num_key_value_heads": 1}


def _fill_flow(module: torch.nn.Module, seed: int) -> None:
    # fill_seeded, plus the DiTs' RMSNorm scales (".scale") at 1 as real checkpoints have them, and MMDiT's
    # position table (a buffer, left uninitialised by ComfyUI until a checkpoint loads) as SD3's 2-D sin-cos
    fill_seeded(module, seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and "norm" in name and name.endswith(".scale"):
                p.fill_(1.0)
        pos = getattr(module, "pos_embed", None)
        if isinstance(pos, torch.Tensor) and pos.dim() == 3:
            from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed

            grid = round(math.sqrt(pos.shape[1]))
            pos.copy_(torch.from_numpy(get_2d_sincos_pos_embed(pos.shape[2], grid)).reshape(pos.shape).to(pos.dtype))


def _params_fields(params_cls) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(params_cls)}


def _flux_like(config: dict, params_cls) -> dict:
    # v0.33.0's FluxParams / ChromaParams added required fields (txt_ids_dims; vec_in_dim for Chroma)
    # that v0.3.75 lacks: add them only where this host's dataclass has them, with model_detection's values.
    fields = _params_fields(params_cls)
    extra = {"txt_ids_dims": [], "vec_in_dim": None, "yak_mlp": False, "txt_norm": False}
    out = {k: v for k, v in config.items() if k in fields or k == "image_model"}
    for key, value in extra.items():
        if key in fields and key not in out:
            out[key] = value
    return out


def _flow_model(config_cls, unet_config: dict, seed: int):
    import comfy.model_management
    import comfy.model_patcher

    config = config_cls(unet_config)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    _fill_flow(base.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)


def _flow_clip(target, model_options: dict, seed: int):
    import comfy.sd
    import folder_paths

    with _quiet_logging():
        clip = comfy.sd.CLIP(target=target, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                             model_options={"dtype": torch.float32, **model_options})
    _small_visual_tower(clip)
    _fill_flow(clip.cond_stage_model, seed)
    return clip


def _small_visual_tower(clip) -> None:
    # Qwen25_7BVLI always builds Qwen2.5-VL's full vision tower (32 blocks, ~630M parameters) beside the
    # language model. Text prompts never reach it; the tiny model gets the same class at one thin block.
    import comfy.text_encoders.qwen_vl as qwen_vl

    enc = getattr(clip.cond_stage_model, "qwen25_7b", None)
    transformer = getattr(enc, "transformer", None)
    if transformer is None or not hasattr(transformer, "visual"):
        return
    width = transformer.get_input_embeddings().weight.shape[-1]
    transformer.visual = qwen_vl.Qwen2VLVisionTransformer(
        hidden_size=32, output_hidden_size=width, intermediate_size=32, num_heads=1, num_layers=1,
        device=transformer.get_input_embeddings().weight.device, dtype=torch.float32, ops=enc.operations)


def build_tiny_flow(family: str, seed: int = 0) -> ModelSet:
    """A tiny real ComfyUI MODEL/CLIP/VAE of a flow-matching family (FLOW_FAMILIES):

    - 'sd3': MMDiT (depth 2, width 128) on CLIP-L + CLIP-G, no T5 (as SD3 runs without it);
      'sd3_t5': the same with a thin 4096-wide T5;
    - 'flux' (dev, guidance input) / 'flux_schnell': Flux DiT (width 64, one double and one single block)
      on CLIP-L (pooled) + T5 (width 64);
    - 'chroma': Chroma DiT on T5 (width 64);
    - 'zimage': Lumina 2 NextDiT with Z-Image's settings, on Qwen3-4B's architecture at width 64;
    - 'qwen_image': Qwen-Image DiT on Qwen2.5-VL-7B's language model at width 64.
    The VAE is the small KL VAE with 16 latent channels (Qwen-Image's real VAE is Wan's video VAE; its
    latents have the same 16 channels).
    """
    import_comfy()
    import comfy.ldm.chroma.model
    import comfy.ldm.flux.model
    import comfy.supported_models
    import comfy.supported_models_base
    import comfy.text_encoders.flux
    import comfy.text_encoders.pixart_t5
    import comfy.text_encoders.qwen_image
    import comfy.text_encoders.sd3_clip
    import comfy.text_encoders.z_image

    sm = comfy.supported_models
    target = comfy.supported_models_base.ClipTarget
    clip_opts = {"clip_l_model_config": SMALL_TEXT_ENCODER, "clip_g_model_config": SMALL_TEXT_ENCODER}
    t5_width = SMALL_T5["d_model"]
    with torch.inference_mode():
        if family in ("sd3", "sd3_t5"):
            with_t5 = family == "sd3_t5"
            depth = 2  # MMDiT width is 64 * depth
            unet = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": depth, "input_size": None,
                    "adm_in_channels": 2048, "num_patches": 1024, "pos_embed_max_size": 32,
                    "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
                    "context_embedder_config": {"target": "torch.nn.Linear",
                                                "params": {"in_features": 4096, "out_features": 64 * depth}}}
            model = _flow_model(sm.SD3, unet, seed)
            te = comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=with_t5, dtype_t5=torch.float32)
            opts = {**clip_opts, "t5xxl_model_config": SMALL_T5_4096} if with_t5 else clip_opts
            clip = _flow_clip(target(comfy.text_encoders.sd3_clip.SD3Tokenizer, te), opts, seed + 1)
        elif family in ("flux", "flux_schnell"):
            unet = _flux_like({"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
                               "context_in_dim": t5_width, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2,
                               "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000,
                               "patch_size": 2, "qkv_bias": True, "guidance_embed": family == "flux"},
                              comfy.ldm.flux.model.FluxParams)
            model = _flow_model(sm.Flux if family == "flux" else sm.FluxSchnell, unet, seed)
            te = comfy.text_encoders.flux.flux_clip(dtype_t5=torch.float32)
            clip = _flow_clip(target(comfy.text_encoders.flux.FluxTokenizer, te),
                              {**clip_opts, "t5xxl_model_config": SMALL_T5}, seed + 1)
        elif family == "chroma":
            unet = _flux_like({"image_model": "chroma", "in_channels": 64, "out_channels": 64,
                               "context_in_dim": t5_width, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2,
                               "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000,
                               "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 64, "hidden_dim": 64,
                               "n_layers": 1},
                              comfy.ldm.chroma.model.ChromaParams)
            model = _flow_model(sm.Chroma, unet, seed)
            te = comfy.text_encoders.pixart_t5.pixart_te(dtype_t5=torch.float32)
            clip = _flow_clip(target(comfy.text_encoders.pixart_t5.PixArtTokenizer, te),
                              {"t5xxl_model_config": SMALL_T5}, seed + 1)
        elif family == "zimage":
            width = SMALL_LLM["hidden_size"]
            # width 256: Z-Image's modulation takes a 256-wide time embedding (min(dim, 256) in NextDiT)
            unet = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": width,
                    "n_layers": 1, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 2, "n_kv_heads": 2,
                    "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
                    "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 32, "z_image_modulation": True,
                    "time_scale": 1000.0}
            model = _flow_model(sm.ZImage, unet, seed)
            clip = _flow_clip(target(comfy.text_encoders.z_image.ZImageTokenizer, comfy.text_encoders.z_image.te()),
                              {"qwen3_4b_model_config": SMALL_LLM}, seed + 1)
        elif family == "qwen_image":
            width = SMALL_LLM["hidden_size"]
            unet = {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "patch_size": 2,
                    "num_layers": 1, "attention_head_dim": 32, "num_attention_heads": 2,
                    "joint_attention_dim": width, "axes_dims_rope": [8, 12, 12]}
            model = _flow_model(sm.QwenImage, unet, seed)
            clip = _flow_clip(target(comfy.text_encoders.qwen_image.QwenImageTokenizer,
                                     comfy.text_encoders.qwen_image.te()),
                              {"qwen25_7b_model_config": SMALL_LLM}, seed + 1)
        else:
            raise ValueError(f"unknown family {family!r}")
        vae = small_vae(seed + 2, channels=16)
    return ModelSet(family, model, clip, vae)


# ---------------------------------------------------------------------------------------------
# A real-architecture SD3 checkpoint file, for the server tests and the SD3 example workflow
#
# CheckpointLoaderSimple builds SD3's CLIP-L and CLIP-G from fixed configs (their full sizes, 818M
# parameters together) and loads the file into them with strict=False: a key missing from the file
# would leave that weight as torch.empty's garbage, with only a log line. So the file carries every key
# of both encoders. The MMDiT is the smallest ComfyUI still detects as SD3 (depth 1: width 64, one
# head); the VAE is SD3's own 16-channel KL architecture, which ComfyUI picks from its key shapes.

SD3_CHECKPOINT_MMDIT = {
    "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 1, "input_size": None,
    "adm_in_channels": 2048, "num_patches": 1024, "pos_embed_max_size": 32, "pos_embed_scaling_factor": None,
    "x_block_self_attn_layers": [],
    # SD3ClipModel pads the joined CLIP-L/G rows to T5's width, with or without a T5
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 64}},
}


def fill_seeded_fast(module: torch.nn.Module, seed: int) -> None:
    """fill_seeded's scales (without the cross-attention gain), drawn in place: fast enough for CLIP-G."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                std = 0.014 if ("token_embedding" in name or "position_embedding" in name) else p[0].numel() ** -0.5
                p.normal_(0.0, std, generator=gen)
            elif name.endswith("weight") and ("norm" in name or "ln" in name):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.01, generator=gen)


def _sd3_vae(seed: int):
    import comfy.sd

    # the key shapes ComfyUI reads to pick SD3's VAE: 16 latent channels, x8 (ch_mult 1,2,4,4), no quant convs
    probe = {"decoder.conv_in.weight": torch.zeros(512, 16, 3, 3),
             "encoder.down.2.downsample.conv.weight": torch.zeros(512, 512, 3, 3),
             "decoder.up.3.upsample.conv.weight": torch.zeros(512, 512, 3, 3)}
    with _quiet_logging():
        vae = comfy.sd.VAE(sd=probe, dtype=torch.float16)
    fill_seeded_fast(vae.first_stage_model, seed)
    return vae


def write_sd3_checkpoint(path, seed: int = 0) -> None:
    """Write a real-architecture SD3 checkpoint without T5 (full CLIP-L and CLIP-G, SD3's VAE, the smallest
    MMDiT detected as SD3; random weights, fp16)."""
    import_comfy()
    import comfy.sd
    import comfy.supported_models
    import comfy.supported_models_base
    import comfy.text_encoders.sd3_clip as sd3_clip
    import comfy.utils

    with torch.inference_mode():
        config = comfy.supported_models.SD3(dict(SD3_CHECKPOINT_MMDIT))
        config.set_inference_dtype(torch.float16, None)
        base = config.get_model({})
        _fill_flow(base.diffusion_model, seed)
        target = comfy.supported_models_base.ClipTarget(
            sd3_clip.SD3Tokenizer, sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=False))
        with _quiet_logging():
            clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float16})
        fill_seeded_fast(clip.cond_stage_model, seed + 1)
        vae = _sd3_vae(seed + 2)
        sd = checkpoint_state_dict(base, clip.get_sd(), vae.get_sd())
        sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
        comfy.utils.save_torch_file(sd, str(path), metadata={"tokensmith.note": "random weights, for tests only"})
