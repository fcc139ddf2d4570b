"""Flux.1 dev's guidance input while training and in previews, and the note a negative embedding gets on
families sampled without CFG, on the tiny real Flux models (devkit.model_factory.build_tiny_flow)."""

from __future__ import annotations

import uuid

import pytest
import torch


def pictures(count=2, size=64, seed=0):
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


class ModelCalls:
    """Every call of the diffusion model: its batch size and the guidance values it was given (None when
    the call had no guidance input); `sampling` counts the calls made without gradients (previews)."""

    def __init__(self, model):
        self.calls: list[tuple[int, list[float] | None]] = []
        self.sampling = 0
        self.hook = model.model.diffusion_model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        guidance = kwargs.get("guidance")
        values = None if guidance is None else [round(float(g), 4) for g in guidance.flatten()]
        self.calls.append((args[0].shape[0], values))
        self.sampling += not torch.is_grad_enabled()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.hook.remove()


def train(node_classes, ms, template="custom", **advanced):
    node = node_classes["TokenSmithTrainEmbedding"]
    extra = {k: [v] for k, v in advanced.items()}
    if template == "custom":
        extra.setdefault("custom_template", ["a photo of [name]"])
    with torch.inference_mode():
        return node.execute([ms.model], [ms.clip], [f"guidance-{uuid.uuid4().hex[:8]}"], ["*"], [1], [template], [2],
                            ["5e-2"], [1], [0], [True], vae=[ms.vae], images=[pictures()], validate_every=[0], **extra)


@pytest.mark.parametrize("guidance", [2.0, 5.5])
def test_flux_dev_trains_at_the_guidance_asked_for(guidance, tiny, node_classes):
    ms = tiny("flux")
    with ModelCalls(ms.model) as seen:
        train(node_classes, ms, guidance=guidance)
    assert seen.calls, "the diffusion model was never called"
    assert all(values is not None and set(values) == {guidance} for _, values in seen.calls), seen.calls


def test_flux_dev_default_guidance_is_comfyuis(tiny, node_classes, pack):
    # ComfyUI's Flux conditioning falls back to 3.5 when no FluxGuidance node sets one
    ms = tiny("flux")
    assert pack("tokensmith.train_config").TrainConfig().guidance == 3.5
    with ModelCalls(ms.model) as seen:
        train(node_classes, ms)
    assert {v for _, values in seen.calls for v in values} == {3.5}


def test_flux_schnell_has_no_guidance_input(tiny, node_classes):
    # schnell's model has no guidance layer; ComfyUI's conditioning still carries its default value, which the
    # model ignores, and the setting is not passed on
    ms = tiny("flux_schnell")
    assert not ms.model.model.diffusion_model.params.guidance_embed
    with ModelCalls(ms.model) as seen:
        train(node_classes, ms, guidance=7.0)
    assert seen.calls and all(7.0 not in (values or []) for _, values in seen.calls), seen.calls


PREVIEW_STEPS = 2  # euler: one model call per step for each conditioning


def test_flux_dev_previews_sample_at_cfg_1_with_the_guidance(tiny, node_classes):
    ms = tiny("flux")
    with ModelCalls(ms.model) as seen:
        out = train(node_classes, ms, guidance=2.5, preview_every=2, preview_steps=PREVIEW_STEPS)
    pictures_made = out.result[3].shape[0]
    assert pictures_made >= 1
    # training calls and preview calls alike see 2.5; at CFG 1 ComfyUI's sampler makes no negative pass
    assert {v for _, values in seen.calls for v in values} == {2.5}
    assert seen.sampling == PREVIEW_STEPS * pictures_made, seen.calls


def test_chroma_previews_keep_cfg(tiny, node_classes):
    # the control for the test above: a family sampled with CFG also runs its negative prompt in previews
    ms = tiny("chroma")
    with ModelCalls(ms.model) as seen:
        out = train(node_classes, ms, preview_every=2, preview_steps=PREVIEW_STEPS)
    pictures_made = out.result[3].shape[0]
    passes = sum(batch for batch, _ in seen.calls[-seen.sampling:])
    assert passes == 2 * PREVIEW_STEPS * pictures_made, seen.calls


def test_negative_embedding_on_flux_says_it_has_no_effect(tiny, node_classes):
    out = train(node_classes, tiny("flux"), template="negative")
    notes = out.ui["text"]
    assert any("no effect" in n and "Flux.1" in n for n in notes), notes


def test_negative_embedding_on_chroma_gets_no_such_note(tiny, node_classes):
    out = train(node_classes, tiny("chroma"), template="negative")
    assert not any("no effect" in n for n in (out.ui or {}).get("text", [])), out.ui
