"""Captions through the Train Embedding node: with the default `object` preset the text encoder reads
each picture's caption, and a template that ignores the given captions says so (console, the live
view's run events, and the node's UI output)."""

from __future__ import annotations

import logging

import torch

CAPTION_WORDS = {"collar", "sofa", "grass"}


def images(count=2, size=64, seed=0):
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


def run_node(node_classes, sd1, pack, name, captions=None, template="object", custom_template=None):
    """Train 2 steps through the node; returns (node output, every word the text encoder looked up)."""
    adapter = pack("comfy_adapter")
    train = node_classes["TokenSmithTrainEmbedding"]
    encoders = adapter.encoders_of(sd1.clip)
    seen: list[str] = []

    def look_up(module, args, enc):
        # the token ids the encoder's own input embedding reads (the trained vectors are placed after it)
        seen.extend(adapter.token_strings(enc, args[0].flatten().tolist()))

    hooks = [e.model.transformer.get_input_embeddings().register_forward_pre_hook(
        lambda module, args, e=e: look_up(module, args, e)) for e in encoders]
    extra = {} if custom_template is None else {"custom_template": [custom_template]}
    try:
        with torch.inference_mode():
            out = train.execute([sd1.model], [sd1.clip], [name], ["*"], [1], [template], [2], ["5e-3"], [2], [0],
                                [True], vae=[sd1.vae], images=[images(2)], captions=captions, validate_every=[0],
                                **extra)
    finally:
        for hook in hooks:
            hook.remove()
    return out, set(seen)


def test_object_preset_feeds_the_captions_to_the_text_encoder(pack, sd1, node_classes):
    # one caption per picture, as core's dataset loaders give them (a list)
    out, words = run_node(node_classes, sd1, pack, "caption-object",
                          captions=["a dog with a red collar", "a dog on a sofa"])
    assert {"collar", "sofa"} <= words, sorted(words)
    assert {"photo", "dog"} & words  # the template's words and the caption's, in one prompt
    assert out.ui is None  # nothing to report, no previews asked for

    # the same run without captions: none of those words reach the encoder (the check can fail)
    _, bare = run_node(node_classes, sd1, pack, "caption-none")
    assert not (CAPTION_WORDS | {"dog"}) & bare, sorted(bare)


def test_template_without_filewords_reports_the_unused_captions(pack, sd1, node_classes, caplog):
    server_routes = pack("server_routes")
    with caplog.at_level(logging.WARNING, logger="tokensmith"):
        out, words = run_node(node_classes, sd1, pack, "caption-ignored", captions=["on green grass"],
                              template="custom", custom_template="a photo of [name]")
    assert "grass" not in words and "photo" in words
    (text,) = out.ui["text"]
    assert "no [filewords]" in text and "not used in training" in text
    assert any(text in r.getMessage() and "caption-ignored" in r.getMessage() for r in caplog.records)
    run = next(r for r in reversed(server_routes.runs_snapshot()) if r["name"] == "caption-ignored")
    events = [e["event"] for e in run["events"] if e.get("event")]
    assert {"kind": "warning", "step": 0, "text": text} in events


def test_custom_template_with_filewords_uses_the_captions_without_a_warning(pack, sd1, node_classes):
    out, words = run_node(node_classes, sd1, pack, "caption-custom", captions="on green grass",
                          template="custom", custom_template="[filewords], art of [name]")
    assert "grass" in words
    assert out.ui is None
