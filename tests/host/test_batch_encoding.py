"""Several prompts through one pass of each text encoder (comfy_adapter.encode_batch) give, prompt by
prompt, what ComfyUI gives each prompt alone: conditioning and pooled output, weighted prompts too,
and gradients reach the vectors through both."""

import pytest
import torch

PROMPTS = [
    "a photo of [name] on a wooden table",
    "(a painting:1.3) of [name], dramatic light",
    "[name]",
    "a close-up photo of a [name] in the snow",
]


def vectors_for(clip, adapter, n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {e.key: torch.randn(n, e.width, generator=gen) * 0.4 for e in adapter.encoders_of(clip)}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_batch_equals_prompt_by_prompt(family, pack, models):
    adapter = pack("comfy_adapter")
    clip = models[family].clip
    vectors = vectors_for(clip, adapter, 2, seed=3)
    with torch.inference_mode(), adapter.PromptRows(clip, 2) as rows:
        token_sets = [adapter.fill_slots(rows.tokens(p), vectors, rows.encoders) for p in PROMPTS]
        cond, pooled = adapter.encode_batch(clip, token_sets)
        alone = [adapter.encode_tokens(clip, t) for t in token_sets]
    assert cond.shape[0] == len(PROMPTS)
    for i, (c, p) in enumerate(alone):
        torch.testing.assert_close(cond[i:i + 1], c, rtol=1e-5, atol=1e-5, msg=f"prompt {i} conditioning")
        if family == "sdxl":
            assert p is not None and pooled is not None
            torch.testing.assert_close(pooled[i:i + 1].to(p.device), p, rtol=1e-5, atol=1e-5,
                                       msg=f"prompt {i} pooled")
    # it can fail: neighbouring prompts differ, so a wrong split would not match
    assert not torch.allclose(cond[0], cond[1])
    if family == "sdxl":
        assert not torch.allclose(pooled[0], pooled[3])


def test_gradients_reach_the_vectors_through_cond_and_pooled(pack, sdxl):
    adapter = pack("comfy_adapter")
    clip = sdxl.clip
    vectors = {k: v.requires_grad_() for k, v in vectors_for(clip, adapter, 1, seed=5).items()}
    with adapter.PromptRows(clip, 1) as rows, adapter.trainable_graph(clip.cond_stage_model):
        token_sets = [adapter.fill_slots(rows.tokens(p), vectors, rows.encoders) for p in PROMPTS[:2]]
        cond, pooled = adapter.encode_batch(clip, token_sets)
        cond.sum().backward(retain_graph=True)
        grads_from_cond = {k: v.grad.clone() for k, v in vectors.items()}
        for v in vectors.values():
            v.grad = None
        pooled.sum().backward()
    assert all(g.abs().sum() > 0 for g in grads_from_cond.values())
    assert vectors["clip_g"].grad is not None and vectors["clip_g"].grad.abs().sum() > 0


def test_prompts_of_different_lengths_are_refused(pack, sd1):
    adapter = pack("comfy_adapter")
    clip = sd1.clip
    long_prompt = "[name] " + ", ".join(["a very detailed photo"] * 30)
    with torch.inference_mode(), adapter.PromptRows(clip, 1) as rows:
        vectors = vectors_for(clip, adapter, 1, seed=1)
        token_sets = [adapter.fill_slots(rows.tokens(p), vectors, rows.encoders) for p in (PROMPTS[0], long_prompt)]
        with pytest.raises(pack("tokensmith.errors").TrainingError, match="different lengths"):
            adapter.encode_batch(clip, token_sets)
