"""The flow-matching families (SD3, Flux.1 dev/schnell, Chroma, Z-Image, Qwen-Image) on tiny real ComfyUI
models (devkit.model_factory.build_tiny_flow): their text encoders as comfy_adapter sees them, trainable
vectors spliced into their prompt rows (chat template included) against core's CLIPTextEncode with
`embedding:NAME`, gradients through CLIP, T5 and the Qwen LLMs, and the flow-matching objective."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import torch

PROMPT = "a photo of [name] on a wooden table"

# family -> the embedding keys its CLIP trains, in encoders_of order
KEYS = {
    "sd3": ("clip_l", "clip_g"),
    "sd3_t5": ("clip_l", "clip_g", "t5xxl"),
    "flux": ("clip_l", "t5xxl"),
    "flux_schnell": ("clip_l", "t5xxl"),
    "chroma": ("t5xxl",),
    "zimage": ("qwen3_4b",),
    "qwen_image": ("qwen25_7b",),
}
MODEL_FAMILY = {"sd3": "sd3", "sd3_t5": "sd3", "flux": "flux", "flux_schnell": "flux", "chroma": "chroma",
                "zimage": "zimage", "qwen_image": "qwen_image"}
# Families whose every tokenizer looks embedding:NAME up on both hosts (v0.3.75, v0.33.0)
ALWAYS_READ = {"sd3", "sd3_t5", "flux", "flux_schnell", "chroma"}
SMALL = ("sd3", "flux", "flux_schnell", "chroma", "zimage")
# ComfyUI's Qwen-Image tokenizer (both hosts) checks every token for its image placeholder with
# `token == 151655`, which fails on an embedding vector: no prompt row can hold trainable vectors.
NO_VECTORS_IN_ROWS = {"qwen_image"}


@pytest.fixture(scope="module")
def adapter(pack):
    return pack("comfy_adapter")


def token_like(adapter, clip, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Random vectors with the norm of each encoder's own token rows."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for enc in adapter.encoders_of(clip):
        table = adapter.token_table(enc).detach().float()
        v = torch.randn(n, enc.width, generator=gen)
        out[enc.key] = v / v.norm(dim=-1, keepdim=True) * float(table.norm(dim=-1).median())
    return out


def core_encode(clip, text: str):
    import nodes

    with torch.inference_mode():
        (conditioning,) = nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]().encode(clip, text)
    return conditioning[0][0], conditioning[0][1]


def spliced(adapter, clip, vectors, n: int, prompt: str = PROMPT):
    with torch.inference_mode(), adapter.PromptRows(clip, n) as rows:
        tokens = adapter.fill_slots(rows.tokens(prompt), vectors, rows.encoders)
        return adapter.encode_conditioning(clip, tokens)


def save(pack, embeddings_dir, vectors, name):
    Embedding = pack("tokensmith.embedding").Embedding
    pack("tokensmith.writer").save_embedding(Embedding(vectors=vectors, name=name), embeddings_dir, name,
                                             overwrite=True)


def assert_same_conditioning(a, b):
    cond_a, extra_a = a
    cond_b, extra_b = b
    assert cond_a.shape == cond_b.shape
    assert (cond_a - cond_b).abs().max().item() == 0.0
    for key in ("pooled_output", "attention_mask"):
        va, vb = extra_a.get(key), extra_b.get(key)
        assert (va is None) == (vb is None), key
        if va is not None:
            assert va.shape == vb.shape and (va.float() - vb.float()).abs().max().item() == 0.0, key


def differs(a, b) -> bool:
    return a[0].shape != b[0].shape or (a[0] - b[0]).abs().max().item() > 0


def weight_digest(*modules) -> dict[str, str]:
    out = {}
    for i, m in enumerate(modules):
        for name, t in list(m.state_dict(keep_vars=True).items()):
            raw = t.detach().cpu().reshape(-1).contiguous().view(torch.uint8)
            out[f"{i}.{name}"] = hashlib.sha1(raw.numpy().tobytes()).hexdigest()
    return out


@pytest.mark.parametrize("family", list(KEYS))
def test_encoders_and_family(family, tiny, adapter):
    ms = tiny(family)
    encs = adapter.encoders_of(ms.clip)
    assert tuple(e.key for e in encs) == KEYS[family]
    for e in encs:  # widths are the loaded model's (the tiny T5 / Qwen are narrower than the real ones)
        assert e.width == adapter.token_table(e).shape[-1]
    assert adapter.model_family(ms.model) == MODEL_FAMILY[family]
    assert adapter.prediction_type(ms.model) == "flow"
    if MODEL_FAMILY[family] == "flux":  # dev has a guidance input, schnell none
        assert adapter.takes_guidance(ms.model) == (family == "flux")
    if family in ALWAYS_READ:
        assert adapter.unreadable_encoders(ms.clip) == []


@pytest.mark.parametrize("family", list(KEYS))
def test_saved_file_used_by_name_equals_direct_splice(family, tiny, adapter, pack, embeddings_dir):
    clip = tiny(family).clip
    n = 2
    vectors = token_like(adapter, clip, n, seed=5)
    other = {k: v.flip(0) * 1.1 for k, v in vectors.items()}
    name = f"flow-{family}-{uuid.uuid4().hex[:8]}"
    text = PROMPT.replace("[name]", f"embedding:{name}")

    save(pack, embeddings_dir, vectors, name)
    by_name = core_encode(clip, text)
    save(pack, embeddings_dir, other, name)
    by_name_other = core_encode(clip, text)
    reads_names = differs(by_name, by_name_other)

    # what ComfyUI does is what the adapter says it does
    assert reads_names == (adapter.unreadable_encoders(clip) == [])
    if family in ALWAYS_READ:
        assert reads_names
    if not reads_names:
        # the host's tokenizer reads `embedding:NAME` as words: training must be refused, with the reason
        with pytest.raises(pack("tokensmith.errors").FamilyMismatchError, match="embedding:NAME"):
            adapter.check_embedding_use(clip)
        return
    adapter.check_embedding_use(clip)

    assert_same_conditioning(spliced(adapter, clip, vectors, n), by_name)
    assert_same_conditioning(spliced(adapter, clip, other, n), by_name_other)
    # every encoder's vectors count: changing one encoder's changes the conditioning
    for key in vectors:
        one = {**vectors, key: vectors[key] * 0.5}
        a, b = spliced(adapter, clip, one, n), by_name
        pooled_a, pooled_b = a[1].get("pooled_output"), b[1].get("pooled_output")
        assert differs(a, b) or (pooled_a is not None and (pooled_a - pooled_b).abs().max().item() > 0), key
    # ... and the file really is read: without it the prompt encodes differently
    assert differs(core_encode(clip, PROMPT.replace("[name]", "")), by_name)


def test_chat_template_wraps_the_slots(tiny, adapter):
    """Z-Image's prompts are tokenized inside ComfyUI's chat template, the slots where embedding:NAME stands."""
    for family, start in (("zimage", "<|im_start|>user\n"),):
        clip = tiny(family).clip
        with adapter.PromptRows(clip, 2) as rows:
            (row,) = rows.tokens(PROMPT)[KEYS[family][0]]
        enc = adapter.encoders_of(clip)[0]
        slots = [i for i, (t, _) in enumerate(row) if isinstance(t, tuple)]
        assert len(slots) == 2 and slots[1] == slots[0] + 1
        ids = [t for t, _ in row if not isinstance(t, tuple)]
        text = enc.tokenizer.tokenizer.decode(ids)
        # the template around the prompt; the slots between "of" and "on", where embedding:NAME stands
        assert text.startswith(start) and text.rstrip().endswith("<|im_start|>assistant")
        before = enc.tokenizer.tokenizer.decode([t for t, _ in row[:slots[0]]])
        after = enc.tokenizer.tokenizer.decode([t for t, _ in row[slots[1] + 1:]])
        assert before.rstrip() == start + "a photo of"  # (spaces around embedding:NAME as the host tokenizes them)
        assert after.strip().startswith("on a wooden table<|im_end|>")


def flow_batch(adapter, model, seed: int, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    x0 = adapter.latents_for_model(model, adapter.process_latents_in(model, torch.randn(batch, 16, 16, 16, generator=gen)))
    noise = torch.randn(x0.shape, generator=gen)
    sigmas = adapter.flow_sigmas(model, torch.rand(batch, generator=gen))
    return x0, noise, sigmas


def step_loss(adapter, ms, rows, params, prompts, batch):
    token_sets = [adapter.fill_slots(rows.tokens(p), params, rows.encoders) for p in prompts]
    conditioning = adapter.encode_prompts(ms.clip, token_sets)
    x0, noise, sigmas = batch
    return adapter.flow_loss(ms.model, x0, conditioning, sigmas, noise)


@pytest.mark.parametrize("family", list(KEYS))
def test_gradients_reach_every_encoders_vectors(family, tiny, adapter, pack):
    ms = tiny(family)
    params = {k: v.clone().requires_grad_(True) for k, v in token_like(adapter, ms.clip, 2, seed=7).items()}
    prompts = [PROMPT, "a painting of [name], in a garden"]  # two lengths: two model calls
    if family in NO_VECTORS_IN_ROWS:
        with adapter.PromptRows(ms.clip, 2) as rows, \
                pytest.raises(pack("tokensmith.errors").FamilyMismatchError, match="cannot take embedding vectors"):
            rows.tokens(PROMPT)
        return
    with adapter.PromptRows(ms.clip, 2) as rows, torch.inference_mode(False), \
            adapter.trainable_graph(ms.model.model, ms.clip.cond_stage_model):
        loss = step_loss(adapter, ms, rows, params, prompts, flow_batch(adapter, ms.model, 3))
        loss.backward()
    assert torch.isfinite(loss)
    for key, p in params.items():
        assert p.grad is not None, key
        assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, key


@pytest.mark.parametrize("family", ["chroma", "zimage"])
def test_gradient_matches_finite_difference(family, tiny, adapter):
    """Through T5 and Qwen3 the gradient is the derivative of the loss (one direction, central difference)."""
    ms = tiny(family)
    key = KEYS[family][0]
    base = token_like(adapter, ms.clip, 2, seed=9)
    direction = torch.randn(base[key].shape, generator=torch.Generator().manual_seed(1))
    direction = direction / direction.norm()
    batch = flow_batch(adapter, ms.model, 4)
    with adapter.PromptRows(ms.clip, 2) as rows, torch.inference_mode(False), \
            adapter.trainable_graph(ms.model.model, ms.clip.cond_stage_model):
        p = base[key].clone().requires_grad_(True)
        loss = step_loss(adapter, ms, rows, {key: p}, [PROMPT], tuple(t[:1] for t in batch))
        loss.backward()
        analytic = float((p.grad * direction).sum())
        eps = 1e-3
        with torch.no_grad():
            up = step_loss(adapter, ms, rows, {key: base[key] + eps * direction}, [PROMPT], tuple(t[:1] for t in batch))
            down = step_loss(adapter, ms, rows, {key: base[key] - eps * direction}, [PROMPT], tuple(t[:1] for t in batch))
    numeric = float(up - down) / (2 * eps)
    assert abs(analytic) > 0
    assert abs(analytic - numeric) <= 0.05 * abs(numeric) + 1e-6


def test_flow_objective_follows_model_sampling(tiny, adapter):
    """sigmas through the model's own shift; xt is its noise_scaling; a patched model_sampling is used."""
    import comfy.model_sampling

    ms = tiny("sd3")
    sampling = ms.model.get_model_object("model_sampling")
    assert isinstance(sampling, comfy.model_sampling.CONST) and sampling.shift == 3.0
    u = torch.tensor([0.0, 0.25, 0.5, 0.9])
    shift = 3.0
    t = 1.0 - u
    expected = shift * t / (1 + (shift - 1) * t)
    assert torch.allclose(adapter.flow_sigmas(ms.model, u), expected.float())
    # a ModelSamplingSD3 node's shift (a patched model) is what training samples
    import comfy_extras.nodes_model_advanced as advanced

    out = advanced.ModelSamplingSD3().patch(ms.model, 1.0)
    patched = out[0] if isinstance(out, tuple) else out.result[0]
    assert torch.allclose(adapter.flow_sigmas(patched, u), (1.0 - u).float())

    objective = adapter.FLOW_MATCHING
    x0 = torch.randn(2, 4, 3, 3)
    noise = torch.randn(2, 4, 3, 3)
    s = torch.tensor([0.2, 0.7])
    xt = s.view(-1, 1, 1, 1) * noise + (1 - s.view(-1, 1, 1, 1)) * x0
    v_pred = torch.randn(2, 4, 3, 3)
    x0_pred = xt - s.view(-1, 1, 1, 1) * v_pred
    expected_loss = ((v_pred - (noise - x0)) ** 2).mean()
    assert torch.allclose(objective.loss(x0_pred, x0, s), expected_loss, rtol=1e-5)


@pytest.mark.parametrize("family", SMALL)
def test_training_lowers_the_loss_and_keeps_the_weights(family, tiny, adapter, pack, embeddings_dir):
    """Adam on the vectors through the real model: the loss on fixed noise falls, no model weight changes by
    a bit, and the trained file used by name gives the trained conditioning."""
    ms = tiny(family)
    before = weight_digest(ms.model.model, ms.clip.cond_stage_model)
    params = {k: v.clone().requires_grad_(True) for k, v in token_like(adapter, ms.clip, 2, seed=11).items()}
    opt = torch.optim.Adam(params.values(), lr=5e-2)
    batch = flow_batch(adapter, ms.model, 12, batch=1)
    prompts = [PROMPT]
    losses = []
    with adapter.PromptRows(ms.clip, 2) as rows, torch.inference_mode(False), \
            adapter.trainable_graph(ms.model.model, ms.clip.cond_stage_model):
        for _ in range(12):
            opt.zero_grad()
            loss = step_loss(adapter, ms, rows, params, prompts, batch)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    # falls steadily (on the tiny Z-Image the prompt steers least: ~2.5% in 12 steps; Flux ~40%)
    assert losses[-1] < losses[0] * 0.98 and losses[-1] == min(losses), losses
    assert weight_digest(ms.model.model, ms.clip.cond_stage_model) == before

    if adapter.unreadable_encoders(ms.clip):
        return  # the host cannot use the file by name (test_saved_file_used_by_name_equals_direct_splice)
    trained = {k: v.detach() for k, v in params.items()}
    name = f"trained-{family}-{uuid.uuid4().hex[:8]}"
    save(pack, embeddings_dir, trained, name)
    assert_same_conditioning(spliced(adapter, ms.clip, trained, 2),
                             core_encode(ms.clip, PROMPT.replace("[name]", f"embedding:{name}")))


# ---------------------------------------------------------------------------------------------
# The Train Embedding trainer on the flow-matching families

TRAIN_PROMPT = "a photo of [name], sharp focus"


def train_config(pack, **kw):
    TrainConfig = pack("tokensmith.train_config").TrainConfig
    defaults = dict(init_text="*", num_vectors=2, steps=6, learning_rate="5e-2", validate_every=3, clip_mode="norm",
                    template="custom", custom_template=TRAIN_PROMPT)
    defaults.update(kw)
    return TrainConfig(**defaults)


def pictures(count=2, size=64, seed=0):
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["sd3", "flux", "chroma", "zimage", "qwen_image"])
def test_trainer_trains_flow_families(family, tiny, adapter, pack):
    """The Train Embedding trainer on a flow-matching family: the validation loss falls, no weight of the model
    or its text encoders changes by a bit, and the saved file used by name in core's CLIPTextEncode gives the
    conditioning the trainer optimised. Where the host's tokenizer cannot use embeddings by name (Qwen-Image,
    Z-Image on v0.3.75) the trainer refuses before any work, saying why."""
    ms = tiny(family)
    Trainer = pack("trainer").Trainer
    name = f"train-{family}-{uuid.uuid4().hex[:8]}"
    if adapter.unreadable_encoders(ms.clip):
        with torch.inference_mode(), pytest.raises(pack("tokensmith.errors").FamilyMismatchError, match="embedding:NAME"):
            Trainer(ms.model, ms.clip, ms.vae, pictures(), train_config(pack, name=name), overwrite=True)
        return
    before = weight_digest(ms.model.model, ms.clip.cond_stage_model)
    with torch.inference_mode():
        trainer = Trainer(ms.model, ms.clip, ms.vae, pictures(), train_config(pack, name=name), overwrite=True)
        assert trainer.family == MODEL_FAMILY[family] and trainer.prediction == "flow"
        result = trainer.run()
    history = result.history
    assert len(history.val_loss) >= 2 and all(torch.isfinite(torch.tensor(history.loss)))
    if family != "zimage":
        # (the tiny random Z-Image's prompt steers it too little for a few noisy steps to lower the validation
        # loss; its loss falls in test_training_lowers_the_loss_and_keeps_the_weights on fixed noise)
        assert history.val_loss[-1] < history.val_loss[0], history.val_loss
    assert weight_digest(ms.model.model, ms.clip.cond_stage_model) == before
    assert set(result.embedding.vectors) == set(KEYS[family])
    trained = result.embedding.vectors
    assert_same_conditioning(spliced(adapter, ms.clip, trained, 2, TRAIN_PROMPT),
                             core_encode(ms.clip, TRAIN_PROMPT.replace("[name]", f"embedding:{name}")))


def test_trainer_refuses_a_clip_of_another_family(tiny, pack):
    ms, other = tiny("chroma"), tiny("flux")
    with torch.inference_mode(), pytest.raises(pack("tokensmith.errors").FamilyMismatchError, match="not its text encoder"):
        pack("trainer").Trainer(ms.model, other.clip, ms.vae, pictures(), train_config(pack, name="mixed-flow"),
                                overwrite=True)


@pytest.mark.parametrize("family", ["flux", "chroma"])
def test_train_node_with_previews(family, tiny, node_classes):
    """The Train Embedding node itself on a flow-matching family, previews included (sampled by core's
    sampler at the model's 16 latent channels): it returns the embedding, its prompt word and pictures."""
    ms = tiny(family)
    name = f"node-{family}-{uuid.uuid4().hex[:8]}"
    train = node_classes["TokenSmithTrainEmbedding"]
    with torch.inference_mode():
        out = train.execute([ms.model], [ms.clip], [name], ["*"], [2], ["object"], [2], ["5e-2"], [1], [0], [True],
                            vae=[ms.vae], images=[pictures(2)], validate_every=[0], preview_every=[2],
                            preview_steps=[2])
    embedding, prompt_word = out.result[0], out.result[1]
    assert prompt_word == f"embedding:{name}"
    assert set(embedding.vectors) == set(KEYS[family])
    previews = out.result[3]
    assert previews.shape[-1] == 3 and previews.shape[0] >= 1 and torch.isfinite(previews).all()


def test_sd3_without_t5_places_slots_without_warnings(tiny, adapter, caplog):
    """SD3 without T5 keeps the T5 tokenizer: the prompt rows' slot must not be reported missing there."""
    import logging

    clip = tiny("sd3").clip
    with caplog.at_level(logging.WARNING), adapter.PromptRows(clip, 2) as rows:
        tokens = rows.tokens("a drawing of [name] in the snow")
    assert not [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert set(tokens) >= {"l", "g"}
    assert adapter.unreadable_encoders(clip) == [] and [e.key for e in rows.encoders] == ["clip_l", "clip_g"]
