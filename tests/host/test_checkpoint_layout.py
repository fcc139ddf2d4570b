"""The checkpoints the project writes for tests, the demo and the benchmarks (devkit.model_factory,
devkit.miniworld) have ComfyUI's checkpoint layout on every host: the diffusion model, the text
encoder and the VAE each under its own prefix, with the models' own values. ComfyUI v0.33 changed
the signature of state_dict_for_saving; called the old way it wrote the text encoder as the UNet and
dropped the VAE's prefix, and that host could not load its own test checkpoint."""

from __future__ import annotations

import torch


def test_each_part_lands_under_its_prefix_with_its_values(tiny):
    from devkit.model_factory import checkpoint_state_dict

    ms = tiny("sd1")
    base = ms.model.model
    unet, clip, vae = base.diffusion_model.state_dict(), ms.clip.get_sd(), ms.vae.get_sd()
    sd = checkpoint_state_dict(base, dict(clip), dict(vae))  # ComfyUI renames keys in the dicts it is given

    inside = {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    assert sorted(inside) == sorted(unet)
    assert all(torch.equal(inside[k], unet[k]) for k in unet)
    # a VAE built from a config already names its keys first_stage_model.*: one prefix either way
    own_vae = {k.removeprefix("first_stage_model."): v for k, v in vae.items()}
    saved_vae = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    assert sorted(saved_vae) == sorted(own_vae)
    assert all(torch.equal(saved_vae[k], own_vae[k]) for k in own_vae)
    # SD1.5 files keep CLIP-L's transformer under cond_stage_model.
    text = {k[len("clip_l."):]: v for k, v in clip.items() if k.startswith("clip_l.transformer.text_model.")}
    assert len(text) > 20, sorted(clip)[:5]
    assert all(torch.equal(sd["cond_stage_model." + k], v) for k, v in text.items())
    others = [k for k in sd if not k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model."))]
    assert others == []
