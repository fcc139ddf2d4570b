"""Held-out validation (validation_split) and the preview settings, through the Train Embedding node on the
tiny SD1 model: what the text encoder reads while training, validating and previewing shows each one."""

from __future__ import annotations

import torch

# one word per picture, so the prompts say which picture they were made for
WORDS = ["apple", "bread", "cheese", "fish", "egg"]


def images(count=5, size=64, seed=0):
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


def run_node(node_classes, sd1, pack, name, **advanced):
    """Train 4 steps through the node; the words the text encoder read with gradients (training) and
    without (validation and previews), and the number of UNet calls made without gradients."""
    adapter = pack("comfy_adapter")
    train = node_classes["TokenSmithTrainEmbedding"]
    (enc,) = adapter.encoders_of(sd1.clip)
    training, other = set(), set()
    sampling = []

    def look_up(module, args):
        words = set(adapter.token_strings(enc, args[0].flatten().tolist()))
        (training if torch.is_grad_enabled() else other).update(words)

    hooks = [enc.model.transformer.get_input_embeddings().register_forward_pre_hook(look_up),
             sd1.model.model.diffusion_model.register_forward_pre_hook(
                 lambda m, a: sampling.append(a[0].shape[0]) if not torch.is_grad_enabled() else None)]
    extra = {k: [v] for k, v in advanced.items()}
    try:
        with torch.inference_mode():
            out = train.execute([sd1.model], [sd1.clip], [name], ["*"], [1], ["custom"], [4], ["5e-3"], [1], [0],
                                [True], vae=[sd1.vae], images=[images()], captions=list(WORDS),
                                custom_template=["a photo of [name], [filewords]"], **extra)
    finally:
        for hook in hooks:
            hook.remove()
    return out, {w for w in training if w.rstrip("</w>") in WORDS}, {w for w in other if w.rstrip("</w>") in WORDS}, sampling


def strip(words):
    return {w.replace("</w>", "") for w in words}


def test_validation_split_keeps_pictures_out_of_training(pack, sd1, node_classes):
    out, trained, validated, _ = run_node(node_classes, sd1, pack, "split-held", validate_every=2,
                                          validation_split=0.4)
    trained, validated = strip(trained), strip(validated)
    assert len(validated) == 2, validated  # 0.4 of 5 pictures
    assert not trained & validated, (trained, validated)
    assert trained <= set(WORDS) - validated and trained
    assert out.result[2].val_loss, "no validation loss was recorded"


def test_without_a_split_validation_reads_the_training_pictures(pack, sd1, node_classes):
    # the control: validation covers every picture, the training pictures included
    _, trained, validated, _ = run_node(node_classes, sd1, pack, "split-none", validate_every=2,
                                        validation_samples=5)
    assert strip(validated) == set(WORDS)
    assert strip(trained) & strip(validated)


def test_preview_settings_reach_the_sampler(pack, sd1, node_classes):
    common = dict(validate_every=0, preview_every=4)
    _, _, read, calls = run_node(node_classes, sd1, pack, "preview-a", preview_steps=3, **common)
    _, _, read_b, calls_b = run_node(node_classes, sd1, pack, "preview-b", preview_steps=5,
                                     preview_negative="cheese, egg", preview_cfg=1.0, **common)
    # 3 euler steps at CFG 6 run the positive and the negative prompt: 3 calls of a batch of 2 (ComfyUI batches
    # them); 5 steps at CFG 1 run only the positive one: 5 calls of 1
    assert calls == [2, 2, 2] and calls_b == [1] * 5, (calls, calls_b)
    # the negative prompt's words reach the text encoder only when one is given
    assert {"cheese", "egg"} <= strip(read_b) and not {"cheese", "egg"} & strip(read)
