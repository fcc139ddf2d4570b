"""Inside trainable_graph, a Linear whose stored weight ComfyUI casts per call (the fp16 text encoders
on a CPU) saves the stored weight for backward, not its cast (comfy_adapter._LinearCastInBackward):
the loss and the vectors' gradients equal ComfyUI's own cast path's within float tolerance, autograd
keeps no fp32 copy of a text-encoder weight (the saved weights are the model's own storage), and
nothing of it outlives the block."""

from __future__ import annotations

import pytest
import torch

from tests.host.training_step import training_step


@pytest.fixture(scope="module")
def fp16_models(models):
    """The tiny SD1 and SDXL sets with their text encoders' weights in fp16, as ComfyUI keeps a
    checkpoint's CLIP on a CPU (it computes in fp32 and casts each weight per call)."""
    import dataclasses

    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base
    import folder_paths

    from devkit.model_factory import SMALL_TEXT_ENCODER, fill_seeded

    kinds = {"sd1": (comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel, {"clip_l_model_config": SMALL_TEXT_ENCODER}),
             "sdxl": (comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel,
                      {"clip_l_model_config": SMALL_TEXT_ENCODER, "clip_g_model_config": SMALL_TEXT_ENCODER})}
    out = {}
    with torch.inference_mode():
        for family, (tok, model, options) in kinds.items():
            clip = comfy.sd.CLIP(target=comfy.supported_models_base.ClipTarget(tok, model),
                                 embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                 model_options={"dtype": torch.float16, **options})
            fill_seeded(clip.cond_stage_model, 11)
            out[family] = dataclasses.replace(models[family], clip=clip)
    return out


def _storages(root: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in list(root.parameters()) + list(root.buffers())}


def linear_weight_shapes(root: torch.nn.Module) -> set[tuple]:
    return {tuple(m.weight.shape) for m in root.modules() if isinstance(m, torch.nn.Linear)}


def step(adapter, ms):
    """One training step (tests/host/training_step.py); returns the loss, the vectors' gradients,
    every tensor autograd saved for backward and the text encoder's own storages."""
    saved, model_storages = [], set()

    def pack(t):
        saved.append(t)
        return t

    # taken inside the block: the aliases share the model's storage
    loss, grads = training_step(adapter, ms, pack,
                                lambda: model_storages.update(_storages(ms.clip.cond_stage_model)))
    return loss, grads, saved, model_storages


def fp32_weight_casts(saved, shapes) -> int:
    """Bytes of saved fp32 tensors shaped like a text-encoder Linear weight: the per-call casts."""
    seen, total = set(), 0
    for t in saved:
        if t.dtype == torch.float32 and tuple(t.shape) in shapes and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_no_fp32_weight_casts_kept_and_same_gradients(pack, fp16_models, family, monkeypatch):
    adapter = pack("comfy_adapter")
    ms = fp16_models[family]
    text = ms.clip.cond_stage_model
    linears = [m for m in text.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float16 for m in linears)
    shapes = linear_weight_shapes(text)
    loss, grads, saved, storages = step(adapter, ms)
    with monkeypatch.context() as m:
        m.setattr(adapter, "_casts_stored_weight", lambda module, x: False)  # ComfyUI's own cast path
        plain_loss, plain_grads, plain_saved, _ = step(adapter, ms)

    # the control keeps the casts (so the measure can see them); the training path keeps none
    assert fp32_weight_casts(plain_saved, shapes) > 0
    assert fp32_weight_casts(saved, shapes) == 0
    # what it saves instead is the stored (fp16) weight itself: the model's storage, no copy
    kept = [t for t in saved if t.dtype != torch.float32 and tuple(t.shape) in shapes]
    assert kept and all(t.untyped_storage().data_ptr() in storages for t in kept)
    saved_bytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}.values())
    plain_bytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in plain_saved}.values())
    assert saved_bytes < plain_bytes

    assert loss == plain_loss  # the forward is the same computation
    for key, g in plain_grads.items():
        assert g.abs().sum() > 0, key
        torch.testing.assert_close(grads[key], g, rtol=1e-5, atol=1e-6 * float(g.abs().max()), msg=key)


def test_layer_forwards_are_removed_after_the_block(pack, sd1):
    import comfy.ops

    adapter = pack("comfy_adapter")
    roots = (sd1.model.model, sd1.clip.cond_stage_model)
    linears = [m for r in roots for m in r.modules() if isinstance(m, comfy.ops.disable_weight_init.Linear)]
    assert linears
    with adapter.trainable_graph(*roots):
        assert all("forward" in m.__dict__ for m in linears)
    assert not any("forward" in m.__dict__ for m in linears)


def test_other_calls_keep_comfyuis_cast(pack, fp16_models):
    """Under no_grad or inference mode (validation, ComfyUI's sampler) a patched Linear runs
    ComfyUI's own forward, and a training call gives the same output: bitwise as outside the block."""
    adapter = pack("comfy_adapter")
    sd1 = fp16_models["sd1"]
    layer = next(m for m in sd1.clip.cond_stage_model.modules() if isinstance(m, torch.nn.Linear))
    assert layer.weight.dtype == torch.float16
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = layer(x)
    with adapter.trainable_graph(sd1.model.model, sd1.clip.cond_stage_model):
        with torch.no_grad():
            no_grad = layer(x)
        with torch.inference_mode():
            inference = layer(x)
        with_grad = layer(x.clone().requires_grad_())
    assert torch.equal(no_grad, before) and torch.equal(inference, before)
    assert torch.equal(with_grad.detach(), before)
