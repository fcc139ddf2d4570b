"""Gradient checkpointing on the flow-matching families (comfy_adapter.checkpointed_unet with the CLIP):
every DiT block and every T5 / LLM text-encoder layer keeps only its input and runs again in the backward
pass, the gradients to the vectors are those of the plain path, and every forward is given back."""

from __future__ import annotations

import pytest
import torch

from tests.host.test_new_families import PROMPT, flow_batch, step_loss, token_like

FAMILIES = ["sd3_t5", "flux", "chroma", "zimage"]


@pytest.fixture(scope="module")
def adapter(pack):
    return pack("comfy_adapter")


def one_backward(adapter, ms, checkpointing: bool):
    """Bytes autograd keeps for one training loss, the vectors' gradients, and per checkpointed block the
    calls of its leaf modules (a recomputation calls them again; the block's own hooks do not see it)."""
    params = {k: v.clone().requires_grad_(True) for k, v in token_like(adapter, ms.clip, 2, seed=7).items()}
    saved, runs = [], {}

    def keep(t):
        saved.append(t.numel() * t.element_size())
        return t

    blocks = adapter._checkpointed_blocks(ms.model, ms.clip)
    hooks = [leaf.register_forward_pre_hook(lambda m, a, i=i: runs.__setitem__(i, runs.get(i, 0) + 1))
             for i, b in enumerate(blocks) for leaf in b.modules() if not list(leaf.children())]
    try:
        with adapter.PromptRows(ms.clip, 2) as rows, torch.inference_mode(False), \
                adapter.trainable_graph(ms.model.model, ms.clip.cond_stage_model):
            ckpt = adapter.checkpointed_unet(ms.model, ms.clip) if checkpointing else \
                torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
            with ckpt:
                with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
                    loss = step_loss(adapter, ms, rows, params, [PROMPT], flow_batch(adapter, ms.model, 3, batch=1))
                loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    return sum(saved), {k: p.grad for k, p in params.items()}, runs, blocks


@pytest.mark.parametrize("family", FAMILIES)
def test_flow_checkpointing_recomputes_every_block_and_keeps_the_gradients(family, tiny, adapter):
    ms = tiny(family)
    if adapter.unreadable_encoders(ms.clip):
        pytest.skip("this host's tokenizer for the family cannot read embeddings (the trainer refuses it)")
    forwards_before = {id(m): m.__dict__.get("forward") for m in ms.model.model.diffusion_model.modules()}
    plain_bytes, plain_grads, plain_runs, blocks = one_backward(adapter, ms, checkpointing=False)
    ckpt_bytes, ckpt_grads, ckpt_runs, _ = one_backward(adapter, ms, checkpointing=True)
    names = {id(m): name for name, m in ms.model.model.diffusion_model.named_modules()}
    dit = [i for i, b in enumerate(blocks) if id(b) in names]
    text = [i for i in range(len(blocks)) if i not in dit]
    assert dit and text, "no DiT block or no T5 / LLM layer found to checkpoint"
    # each block ran once without checkpointing, and with it once more in the backward pass; NextDiT's
    # noise_refiner sees the picture only (no gradient to the vectors flows through it), so nothing recomputes it
    # (nor a layer whose output is not read)
    image_only = {i for i in dit if names[id(blocks[i])].startswith("noise_refiner")}
    if family == "zimage":  # Z-Image reads the LLM's next-to-last layer: the last one's output is unused
        image_only.add(text[-1])
    assert all(plain_runs.get(i, 0) > 0 for i in range(len(blocks))), plain_runs
    wrong = [(names.get(id(blocks[i]), type(blocks[i]).__name__), plain_runs[i], ckpt_runs.get(i))
             for i in range(len(blocks)) if ckpt_runs.get(i) != (1 if i in image_only else 2) * plain_runs[i]]
    assert not wrong, wrong
    print(f"{family}: autograd keeps {plain_bytes / 1e6:.2f} MB -> {ckpt_bytes / 1e6:.2f} MB")
    assert ckpt_bytes < plain_bytes
    for key, grad in plain_grads.items():
        assert grad.abs().max() > 0, key
        torch.testing.assert_close(ckpt_grads[key], grad, rtol=1e-4, atol=1e-6)
    after = {id(m): m.__dict__.get("forward") for m in ms.model.model.diffusion_model.modules()}
    assert after == forwards_before, "a wrapped forward was left on the model"
    assert not any("forward" in m.__dict__ for m in ms.clip.cond_stage_model.modules())


def test_trainer_with_checkpointing_on_flux_learns_the_same_vectors(tiny, pack):
    from tests.host.test_new_families import pictures, train_config

    ms = tiny("flux")
    Trainer = pack("trainer").Trainer
    adapter = pack("comfy_adapter")
    calls = []
    vectors = {}
    for on in (False, True):
        config = train_config(pack, name=f"ckpt-flux-{int(on)}", steps=2, validate_every=0, gradient_checkpointing=on)
        with torch.inference_mode():
            trainer = Trainer(ms.model, ms.clip, ms.vae, pictures(), config, overwrite=True)
            blocks = adapter._checkpointed_blocks(ms.model, ms.clip)
            leaf = next(m for m in blocks[0].modules() if not list(m.children()))
            hook = leaf.register_forward_pre_hook(lambda m, a, on=on: calls.append(on))
            try:
                vectors[on] = trainer.run().embedding.vectors
            finally:
                hook.remove()
    # the first block's leaf runs twice per training step with checkpointing (forward + recomputation)
    assert calls.count(True) == 2 * calls.count(False) > 0, calls
    for key, v in vectors[False].items():
        torch.testing.assert_close(vectors[True][key], v, rtol=1e-4, atol=1e-6)
