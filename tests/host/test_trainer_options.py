"""Training options proved by their effect, not only by a finite result: what the frozen model is
handed (forward hooks on ComfyUI's real SD1.5-architecture modules), what the optimizer sees when it
steps (torch's global optimizer step hook) and what the text encoder reads. Nothing of ComfyUI or of
the trainer is replaced; each test has a control that shows its check can fail."""

from __future__ import annotations

import contextlib
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook


def recorder(seen: list):
    """A forward hook on the diffusion model that records, for each training call, its input latents,
    timesteps, output and the gradient that reaches the output."""

    def on_forward(module, args, output):
        if output.requires_grad:
            entry = {"x": args[0].detach().float().clone(), "t": args[1].detach().float().clone(),
                     "out": output.detach().float().clone()}
            output.register_hook(lambda g: entry.setdefault("grad", g.detach().float().clone()))
            seen.append(entry)

    return on_forward


def pictures(count=2, size=64, seed=0):
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


def train(pack, ms, images=None, captions="", resume_from="", **kw):
    """One training run on ``ms`` (the trainer as the node calls it, under inference mode)."""
    TrainConfig = pack("tokensmith.train_config").TrainConfig
    settings = dict(name="options-effect", init_text="*", num_vectors=2, steps=3, learning_rate="5e-3",
                    validate_every=0, clip_mode="none")
    settings.update(kw)
    with torch.inference_mode():
        trainer = pack("trainer").Trainer(ms.model, ms.clip, ms.vae, pictures() if images is None else images,
                                          TrainConfig(**settings), captions=captions, overwrite=True,
                                          resume_from=resume_from)
        return trainer.run()


@contextlib.contextmanager
def hooked(module, hook, pre=False):
    handle = module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def optimizer_steps():
    """Every optimizer step while the block runs: its learning rate and a copy of each gradient."""
    seen = []

    def hook(optimizer, args, kwargs):
        group = optimizer.param_groups[0]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        seen.append({"lr": group["lr"], "grads": [p.grad.detach().clone() for p in params if p.grad is not None],
                     "params": [p.detach().clone() for p in params]})  # before this step's update

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def unet(ms):
    return ms.model.model.diffusion_model


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                              ("fp32", torch.float32)])
def test_autocast_runs_the_model_in_the_asked_dtype(pack, sd1, precision, dtype):
    """The diffusion model's linear and convolution layers compute in the asked dtype in every training
    forward (fp32 is the control: the same hook sees float32 there)."""
    layers = [m for m in unet(sd1).modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    first_linear = next(m for m in layers if isinstance(m, torch.nn.Linear))
    first_conv = next(m for m in layers if isinstance(m, torch.nn.Conv2d))
    seen = []

    def record(module, args, output):
        if torch.is_grad_enabled():
            seen.append(output.dtype)

    with hooked(first_linear, record), hooked(first_conv, record):
        result = train(pack, sd1, precision=precision, steps=2)
    assert len(seen) == 2 * 2, seen  # both layers, both steps
    assert set(seen) == {dtype}, seen
    assert all(v.dtype == torch.float32 for v in result.embedding.vectors.values())  # the vectors stay fp32


# ----------------------------------------------------------------------------- gradient checkpointing


def test_gradient_checkpointing_through_the_node_keeps_fewer_activations(sd1, node_classes, embeddings_dir):
    """Through Train Embedding's gradient_checkpointing input: autograd keeps under half the bytes for
    the diffusion model's backward pass, and a UNet residual block's layers run again in the backward
    (twice per step)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    from tests.reliability.helpers import run_node, train_inputs

    # the last residual block: its input depends on the vectors (through the cross-attention before it),
    # so the backward pass goes through it (the first blocks see only the latents and keep nothing)
    block = [m for m in unet(sd1).modules() if isinstance(m, ResBlock)][-1]
    inner = next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d))

    def run(checkpointing):
        kept, calls, in_unet = [], [], []

        def pack_hook(t):
            if in_unet:  # saved during the diffusion model's forward (the text encoder's are not at issue)
                kept.append(t.numel() * t.element_size())
            return t

        def enter(module, args):
            in_unet.append(1)

        def leave(module, args, output):
            in_unet.clear()

        with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t), \
                hooked(unet(sd1), enter, pre=True), hooked(unet(sd1), leave), \
                hooked(inner, lambda m, a: calls.append(torch.is_grad_enabled()), pre=True):
            run_node(node_classes["TokenSmithTrainEmbedding"],
                     **train_inputs(sd1, name=f"ckpt-{checkpointing}", steps=2, gradient_checkpointing=checkpointing))
        return sum(kept), len(calls)

    plain_bytes, plain_calls = run(False)
    ckpt_bytes, ckpt_calls = run(True)
    assert plain_calls == 2, plain_calls  # one forward per step
    assert ckpt_calls == 2 * plain_calls, ckpt_calls  # and one recomputation per step in the backward
    assert ckpt_bytes < 0.5 * plain_bytes, (plain_bytes, ckpt_bytes)


# ----------------------------------------------------------------------------- latent sampling


def _unet_inputs(pack, ms, grad: bool, **kw) -> list[torch.Tensor]:
    """The latents the diffusion model was handed, per forward (training forwards when grad, else the
    validation forwards)."""
    seen = []

    def record(module, args):
        if torch.is_grad_enabled() == grad:
            seen.append(args[0].detach().float().clone())

    with hooked(unet(ms), record, pre=True):
        train(pack, ms, **kw)
    assert seen
    return seen


def _cos(a, b) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_once_draws_one_latent_sample_per_image_and_reuses_it(pack, sd1):
    """Against a deterministic run of the same seed (same pictures, noise levels and noise: `once` draws
    nothing per step), each training input differs by the image's one drawn sample minus its mean,
    scaled by the noise level's input factor: the differences for the same image point the same way
    in every step, those of the two images do not, and none is zero."""
    kw = dict(steps=8, batch_size=1)
    det = _unet_inputs(pack, sd1, True, latent_sampling="deterministic", **kw)
    again = _unet_inputs(pack, sd1, True, latent_sampling="deterministic", **kw)
    assert all(torch.equal(a, b) for a, b in zip(det, again, strict=True)), "the runs are not repeatable"
    once = _unet_inputs(pack, sd1, True, latent_sampling="once", **kw)
    diffs = [o - d for o, d in zip(once, det, strict=True)]
    assert all(float(d.abs().max()) > 0 for d in diffs), "once used the mean"
    classes: list[torch.Tensor] = []  # one direction per image
    for d in diffs:
        matches = [c for c in classes if _cos(c, d) > 0.999]
        assert len(matches) <= 1
        if not matches:
            assert all(_cos(c, d) < 0.9 for c in classes)
            classes.append(d)
    assert len(classes) == 2, f"{len(classes)} sample directions for 2 images"


def test_random_draws_a_new_latent_sample_each_time(pack, sd1):
    """The validation set fixes pictures, noise levels and noise, so the validation inputs of a `random`
    run differ from a deterministic run's only by the drawn samples: two validation samples of the same
    image got different draws (with `once` the same: the control)."""
    kw = dict(steps=1, validate_every=1, validation_samples=4, batch_size=1)
    det = _unet_inputs(pack, sd1, False, latent_sampling="deterministic", **kw)[0]
    once = _unet_inputs(pack, sd1, False, latent_sampling="once", **kw)[0]
    rand = _unet_inputs(pack, sd1, False, latent_sampling="random", **kw)[0]
    assert det.shape[0] == 4  # pictures 0, 1, 0, 1
    d_once, d_rand = once - det, rand - det
    assert _cos(d_once[0], d_once[2]) > 0.999 and _cos(d_once[1], d_once[3]) > 0.999
    assert float(d_rand[0].abs().max()) > 0 and float(d_rand[2].abs().max()) > 0
    assert _cos(d_rand[0], d_rand[2]) < 0.9 and _cos(d_rand[1], d_rand[3]) < 0.9


# ----------------------------------------------------------------------------- timestep sampling


def _training_timesteps(pack, ms, **kw) -> list[float]:
    """The timesteps of the diffusion model's training forwards, in the order it was handed them."""
    seen = []

    def record(module, args):
        if torch.is_grad_enabled():
            seen.extend(float(t) for t in args[1].detach().float())

    with hooked(unet(ms), record, pre=True):
        train(pack, ms, **kw)
    return seen


def _golden_sequence(seed: int, count: int) -> list[float]:
    offset = float(torch.rand(1, generator=torch.Generator().manual_seed(seed)))
    return [(offset + k * (math.sqrt(5) - 1) / 2) % 1.0 for k in range(count)]


def test_stratified_timesteps_follow_the_seeded_sequence_across_batches_and_a_resume(pack, sd1, embeddings_dir):
    """With timestep_sampling "stratified" the k-th training draw of the run (over steps, accumulation
    and batch, in that order) is the seed's k-th golden-ratio draw, mapped over the model's 1000
    timesteps (which the discrete SD1 sampling hands the model rounded to whole steps); a resumed run
    continues the sequence; the uniform default draws other timesteps."""
    kw = dict(steps=6, batch_size=2, gradient_accumulation=2, seed=4)
    got = _training_timesteps(pack, sd1, timestep_sampling="stratified", **kw)
    expected = [u * 999 for u in _golden_sequence(4, 24)]
    assert len(got) == 24
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 0.5, (got[:4], expected[:4])
    uniform = _training_timesteps(pack, sd1, timestep_sampling="uniform", **kw)
    assert len(uniform) == 24 and max(abs(a - b) for a, b in zip(uniform, expected, strict=True)) > 50

    first = _training_timesteps(pack, sd1, timestep_sampling="stratified", name="strat-resume",
                                **{**kw, "steps": 3})
    rest = _training_timesteps(pack, sd1, timestep_sampling="stratified", name="strat-resume",
                               resume_from="strat-resume", **kw)
    assert max(abs(a - b) for a, b in zip(first + rest, expected, strict=True)) <= 0.5


# ----------------------------------------------------------------------------- validation


def test_a_validation_encodes_each_distinct_prompt_once_and_scores_as_sample_by_sample(pack, sd1):
    """Eight validation samples of two captioned pictures have two prompts: each validation pass runs the
    text encoder on its distinct prompts only, and the score equals the mean of the samples each scored alone (its own prompt, noise level
    and noise)."""
    adapter = pack("comfy_adapter")
    rows_read = []
    encoder = adapter.encoders_of(sd1.clip)[0].model.transformer.get_input_embeddings()

    def count(module, args):
        if not torch.is_grad_enabled():
            rows_read.append(int(args[0].shape[0]))

    TrainConfig = pack("tokensmith.train_config").TrainConfig
    cfg = TrainConfig(name="val-distinct", init_text="*", num_vectors=1, steps=1, validate_every=1,
                      validation_samples=8, template="custom", custom_template="a [name] on [filewords]",
                      clip_mode="none")
    with torch.inference_mode():
        trainer = pack("trainer").Trainer(sd1.model, sd1.clip, sd1.vae, pictures(2), cfg, captions="grass\nsand",
                                          overwrite=True)
        trainer.run()
        session = trainer.session
        params = adapter.text_to_vectors(sd1.clip, "*")
        with hooked(encoder, count, pre=True):
            together = session.loss.validation(params, session.validation)
        prompts = [p for b in session.validation for p in b.prompts]
        assert len(prompts) == 8 and len(set(prompts)) == 2, prompts
        distinct_per_pass = [len(set(b.prompts)) for b in session.validation]
        assert sum(distinct_per_pass) < len(prompts), "every pass has distinct prompts: nothing to show"
        # prompt rows the text encoder read (one call per row or per pass: the adapter decides)
        assert sum(rows_read) == sum(distinct_per_pass), (rows_read, [b.prompts for b in session.validation])
        alone = []
        for b in session.validation:
            for i in range(len(b.positions)):
                one = type(b)(b.bucket, b.positions[i:i + 1], b.prompts[i:i + 1], b.u[i:i + 1], b.noise[i:i + 1])
                alone.append(session.loss.validation(params, [one]))
    assert together == pytest.approx(sum(alone) / len(alone), rel=1e-5)


# ----------------------------------------------------------------------------- flip


def test_flip_shows_the_model_the_mirrored_pictures(pack, sd1):
    """With flip the VAE encodes every picture and its left-right mirror (once, before training);
    without it only the pictures."""
    images = pictures(2)
    expected = images[:, :, :, :3].movedim(-1, 1) * 2.0 - 1.0  # ComfyUI's VAE input range

    def encoded(**kw):
        seen = []
        with hooked(sd1.vae.first_stage_model.encoder, lambda m, a: seen.append(a[0].detach().float().clone()),
                    pre=True):
            train(pack, sd1, images=images, steps=1, **kw)
        return torch.cat(seen)

    def has(batch, picture) -> bool:
        return any(torch.allclose(row, picture, atol=1e-6) for row in batch)

    plain, flipped = encoded(flip=False), encoded(flip=True)
    mirrored = expected.flip(-1)  # width mirrored
    assert not any(torch.allclose(a, b) for a, b in zip(expected, mirrored, strict=True))
    assert all(has(plain, p) for p in expected) and not any(has(plain, m) for m in mirrored)
    assert all(has(flipped, p) for p in expected) and all(has(flipped, m) for m in mirrored)


# ----------------------------------------------------------------------------- gradient clipping


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_clipping_bounds_the_gradient_the_optimizer_steps_with(pack, sd1, mode):
    """clip_mode value: every gradient entry the optimizer sees is within +-clip_value; norm: the total
    norm is at most clip_value. Control: without clipping the same run's gradients exceed the bound."""
    bound = 1e-4

    def steps(**kw):
        with optimizer_steps() as seen:
            train(pack, sd1, steps=3, learning_rate="5e-2", **kw)
        assert len(seen) == 3
        return seen

    def size(step):
        if mode == "value":
            return max(float(g.abs().max()) for g in step["grads"])
        return math.sqrt(sum(float(g.norm()) ** 2 for g in step["grads"]))

    unclipped = steps(clip_mode="none")
    assert max(size(s) for s in unclipped) > 10 * bound, "the control's gradients are too small to show anything"
    clipped = steps(clip_mode=mode, clip_value=bound)
    assert all(size(s) <= bound * (1 + 1e-5) for s in clipped), [size(s) for s in clipped]
    if mode == "value":
        assert any(float(g.abs().max()) >= bound * (1 - 1e-5) for s in clipped for g in s["grads"])


# ----------------------------------------------------------------------------- gradient accumulation


def test_gradient_accumulation_averages_k_batches_into_one_step(pack, sd1):
    """gradient_accumulation 3 x batch_size 2: each optimizer step follows 3 forwards of 2 pictures, and
    the first batch's loss counts 1/3 (its gradient on the model's prediction is a third of the one
    the same batch gets alone, gradient_accumulation 1: the first batch draws the same pictures, noise
    levels and noise in both runs). So a step's gradient is the mean over the 3 x 2 pictures, as a
    batch of 6 would give."""

    def run(k):
        forwards, grads = [], []

        def on_forward(module, args, output):
            if output.requires_grad:
                forwards.append(args[0].shape[0])
                output.register_hook(lambda g: grads.append(g.detach().clone()))

        with optimizer_steps() as steps, hooked(unet(sd1), on_forward):
            result = train(pack, sd1, steps=2, batch_size=2, gradient_accumulation=k)
        return forwards, grads, steps, result

    forwards, grads, steps, result = run(3)
    assert forwards == [2] * 6, forwards  # 2 steps x 3 batches of 2
    assert len(steps) == 2 and len(result.history.loss) == 2
    single_forwards, single_grads, _, _ = run(1)
    assert single_forwards == [2, 2]
    torch.testing.assert_close(grads[0] * 3, single_grads[0], rtol=1e-4, atol=1e-12)


def test_gradient_accumulation_weighs_each_picture_as_one_batch_of_k_times_b(pack, sd1):
    """Each picture's gradient on the model's output is c * (eps_pred - noise) (the noise recovered
    from the model's input and noise level, x0 from ComfyUI's VAE), and c is the same, 2 / (6 * latent
    size), for 3 accumulated batches of 2 and for one batch of 6: every picture weighs the same in the
    step either way, so the accumulated step is the batch-of-6 step for the same pictures and noise."""
    sampling = sd1.model.get_model_object("model_sampling")
    picture = pictures(1)
    with torch.inference_mode():
        x0 = sd1.model.model.process_latent_in(sd1.vae.encode(picture[:, :, :, :3])).float()

    def factors(k, b):
        seen = []
        on_forward = recorder(seen)

        with hooked(unet(sd1), on_forward):
            train(pack, sd1, images=picture, steps=2, batch_size=b, gradient_accumulation=k,
                  latent_sampling="deterministic")
        assert len(seen) == 2 * k and all(e["x"].shape[0] == b for e in seen)
        out = []
        for e in seen:
            sigma = sampling.sigma(e["t"]).float().view(-1, 1, 1, 1)
            noise = (e["x"] * (sigma**2 + 1).sqrt() - x0) / sigma
            residual = e["out"] - noise
            for i in range(b):
                assert _cos(e["grad"][i], residual[i]) > 0.999
                out.append(float((e["grad"][i] * residual[i]).sum() / (residual[i] ** 2).sum()))
        return out

    expected = 2 / (6 * x0[0].numel())
    accumulated, batched = factors(3, 2), factors(1, 6)
    assert len(accumulated) == len(batched) == 12
    assert all(f == pytest.approx(expected, rel=1e-2) for f in accumulated), accumulated
    assert all(f == pytest.approx(expected, rel=1e-2) for f in batched), batched


# ----------------------------------------------------------------------------- learning-rate schedule


def _cosine(step, steps, warmup, peak, floor):
    if step <= warmup:
        return peak * step / warmup
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


@pytest.mark.parametrize("spec, shape, warmup, formula", [
    ("1e-2 -> 1e-3", "auto", 3, lambda s: _cosine(s, 8, 3, 1e-2, 1e-3)),
    ("1e-2", "cosine", 0, lambda s: _cosine(s, 8, 0, 1e-2, 0.0)),
    ("1e-2:4, 1e-3", "steps", 2, lambda s: (1e-2 if s <= 4 else 1e-3) * (s / 2 if s <= 2 else 1)),
    ("2e-3", "constant", 4, lambda s: 2e-3 * min(1.0, s / 4)),
])
def test_recorded_learning_rates_follow_the_schedule(pack, sd1, spec, shape, warmup, formula):
    """The rate the optimizer steps with, and the one the history records, at every step, is the
    formula's (written out here): linear warmup, then the cosine / steps / constant shape."""
    with optimizer_steps() as seen:
        result = train(pack, sd1, steps=8, learning_rate=spec, lr_shape=shape, lr_warmup_steps=warmup)
    expected = [formula(s) for s in range(1, 9)]
    assert [s["lr"] for s in seen] == pytest.approx(expected, rel=1e-9)
    assert result.history.learning_rate == pytest.approx(expected, rel=1e-9)
    assert len(set(expected)) > 1 or shape == "constant"


# ----------------------------------------------------------------------------- caption shaping


TAGS = "red, round, shiny, metal, small"


def _prompts_read(pack, sd1, **kw) -> list[tuple[int, ...]]:
    """The token ids CLIP-L's embedding layer read, per training prompt (padding left out)."""
    emb = sd1.clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding
    seen = []

    def record(module, args):
        if torch.is_grad_enabled():
            for row in args[0].tolist():
                seen.append(tuple(row[: row.index(49407) + 1] if 49407 in row else row))

    with hooked(emb, record, pre=True):
        train(pack, sd1, images=pictures(1), captions=TAGS, template="custom", custom_template="[name], [filewords]",
              steps=8, **kw)
    assert len(seen) == 8
    return seen


def _tag_ids(sd1) -> list[tuple[int, ...]]:
    tokenizer = sd1.clip.tokenizer.clip_l.tokenizer
    return [tuple(tokenizer(tag.strip())["input_ids"][1:-1]) for tag in TAGS.split(",")]


def _contains(prompt, ids) -> bool:
    return any(prompt[i:i + len(ids)] == ids for i in range(len(prompt)))


def test_shuffle_tags_changes_the_order_the_text_encoder_reads_and_the_seed_fixes_it(pack, sd1):
    plain = _prompts_read(pack, sd1)
    assert len(set(plain)) == 1, "without shuffling every prompt is the same"
    shuffled = _prompts_read(pack, sd1, shuffle_tags=True)
    assert len(set(shuffled)) > 1, "shuffle_tags read the same order every step"
    assert all(sorted(p) == sorted(plain[0]) for p in shuffled), "shuffling lost or added tokens"
    assert _prompts_read(pack, sd1, shuffle_tags=True) == shuffled  # the seed fixes them
    assert _prompts_read(pack, sd1, shuffle_tags=True, seed=1) != shuffled


def test_tag_dropout_leaves_tags_out_and_the_seed_fixes_which(pack, sd1):
    tags = _tag_ids(sd1)
    plain = _prompts_read(pack, sd1)
    assert all(_contains(plain[0], t) for t in tags)
    dropped = _prompts_read(pack, sd1, tag_dropout=0.5)
    kept = [sum(_contains(p, t) for t in tags) for p in dropped]
    assert min(kept) < len(tags), kept  # some prompt lost tags
    assert len(set(kept)) > 1, kept  # and not always the same number
    assert all(len(p) < len(plain[0]) or k == len(tags) for p, k in zip(dropped, kept, strict=True))
    assert _prompts_read(pack, sd1, tag_dropout=0.5) == dropped
    assert _prompts_read(pack, sd1, tag_dropout=0.5, seed=3) != dropped


# ----------------------------------------------------------------------------- early stop, resume, metadata


def _file_vectors(pack, path) -> torch.Tensor:
    return pack("tokensmith.formats").read_embedding(path).vectors["clip_l"]


def test_early_stop_saves_the_best_vectors_and_a_resume_continues(pack, sd1, embeddings_dir):
    """A rate far too high makes the validation loss worse than at the start: the run stops after
    `patience` worse validations, and the file holds the vectors of the best validation (here the
    init vectors of step 0, which the optimizer held before its first step), not the last ones. A
    resume from the stopped run continues from the step it reached."""
    with optimizer_steps() as seen:
        result = train(pack, sd1, name="early-stop", steps=12, learning_rate="50", validate_every=1,
                       early_stop_patience=2)
    assert result.stopped_early and result.steps_done < 12, (result.steps_done, result.history.val_loss)
    best = result.best_step
    assert best is not None and best < result.steps_done
    assert len(seen) == result.steps_done
    val = dict(zip(result.history.val_steps, result.history.val_loss, strict=True))
    assert val[best] == min(val.values())
    best_vectors = seen[best]["params"][0]  # the vectors after step `best` = before step best + 1
    last_vectors = seen[-1]["params"][0]
    saved = _file_vectors(pack, result.path)
    torch.testing.assert_close(saved, best_vectors.cpu(), rtol=0, atol=0)
    assert not torch.equal(saved, last_vectors.cpu())
    assert any(e["kind"] == "early_stop" for e in result.history.events)

    more = train(pack, sd1, name="early-stop", resume_from="early-stop", steps=result.steps_done + 2,
                 learning_rate="5e-3", validate_every=0)
    assert more.history.steps[-2:] == [result.steps_done + 1, result.steps_done + 2], more.history.steps
    assert any(e["kind"] == "resumed" for e in more.history.events)


def test_plateau_stops_a_run_whose_validation_loss_levels_off(pack, sd1, embeddings_dir):
    """At a rate too small to move the vectors the validation loss stays where it is: stop_rule
    'plateau' (windows of 2 validations, one per step, the first at step 0) stops once two full
    windows compare, at step 3 of 20, says why in its event, and saves the best validation's vectors.
    With stop_rule 'steps' the same run takes all its steps (control). A resume of the stopped run
    carries the validations it had, so it stops at its first validation instead of filling two new
    windows first."""
    settings = dict(steps=20, learning_rate="1e-9", validate_every=1, plateau_window=2, plateau_threshold=0.01)
    stopped = train(pack, sd1, name="plateau", stop_rule="plateau", **settings)
    assert stopped.stopped_early and stopped.steps_done == 3, stopped.history.val_loss
    assert stopped.stop_reason.startswith("plateau: the mean of the last 2 validations")
    event = next(e for e in stopped.history.events if e["kind"] == "early_stop")
    assert event["reason"] == stopped.stop_reason and event["step"] == 3
    val = dict(zip(stopped.history.val_steps, stopped.history.val_loss, strict=True))
    assert val[stopped.best_step] == min(val.values())

    full = train(pack, sd1, name="plateau-control", stop_rule="steps", **settings)
    assert not full.stopped_early and full.steps_done == 20 and full.stop_reason is None

    more = train(pack, sd1, name="plateau", resume_from="plateau", stop_rule="plateau",
                 **{**settings, "steps": 20})
    assert more.stopped_early and more.history.steps[-1] == 4, more.history.steps


def test_resume_without_optimizer_state_and_the_already_at_step_error(pack, sd1, embeddings_dir):
    """Without its optimizer-state file a resume starts from the file's vectors at the file's step
    (the optimizer's first step sees exactly them) and says so in the history; a resume at or past
    `steps` is refused before any work."""
    first = train(pack, sd1, name="resume-nostate", steps=2)
    state = pack("trainer").state_path("resume-nostate")
    assert os.path.isfile(state)
    os.remove(state)
    vectors = _file_vectors(pack, first.path)
    errors = pack("tokensmith.errors")
    with pytest.raises(errors.TrainingError, match="already at step 2"):
        train(pack, sd1, name="resume-nostate", resume_from="resume-nostate", steps=2)
    with optimizer_steps() as seen:
        more = train(pack, sd1, name="resume-nostate", resume_from="resume-nostate", steps=4)
    assert len(seen) == 2 and more.history.steps == [3, 4], more.history.steps
    torch.testing.assert_close(seen[0]["params"][0].cpu(), vectors, rtol=0, atol=0)
    resumed = [e for e in more.history.events if e["kind"] == "resumed"]
    assert resumed and resumed[0].get("optimizer_state") is False, more.history.events


def test_saved_file_holds_the_training_metadata(pack, sd1, embeddings_dir):
    """The settings, step, family and prediction type are in the file's safetensors metadata."""
    from safetensors import safe_open

    result = train(pack, sd1, name="meta-check", steps=2, learning_rate="1e-2 -> 1e-3", seed=7, num_vectors=3)
    with safe_open(result.path, framework="pt") as f:
        meta = f.metadata()
    settings = json.loads(meta["tokensmith.training"])
    assert {k: settings[k] for k in ("name", "steps", "learning_rate", "seed", "num_vectors", "clip_mode")} == {
        "name": "meta-check", "steps": 2, "learning_rate": "1e-2 -> 1e-3", "seed": 7, "num_vectors": 3,
        "clip_mode": "none"}
    assert meta["step"] == "2"
    assert meta["tokensmith.family"] == "sd1" and meta["tokensmith.prediction"] == "eps"


# ----------------------------------------------------------------------------- crop, templates, previews


def test_crop_to_multiple_of_8_keeps_crop_and_mask_aligned(pack, sd1):
    """68 x 68 pictures are cut to their central 64 x 64 (2 pixels off each side) and the mask with
    them: the mask is one left of original column 34 (cropped column 32), so the loss gradient on the
    prediction is exactly zero from latent column 4 on. A mask cut 2 pixels off (not centred like the
    pictures) would reach into latent column 4."""
    images = pictures(2, size=68)
    mask = torch.zeros(1, 68, 68)
    mask[:, :, :34] = 1.0
    encoded = []
    grads = []

    def on_forward(module, args, output):
        if output.requires_grad:
            output.register_hook(lambda g: grads.append(g.detach().clone()))

    with hooked(sd1.vae.first_stage_model.encoder, lambda m, a: encoded.append(a[0].detach().float().clone()),
                pre=True), hooked(unet(sd1), on_forward):
        TrainConfig = pack("tokensmith.train_config").TrainConfig
        cfg = TrainConfig(name="crop-mask", init_text="*", num_vectors=1, steps=2, learning_rate="5e-3",
                          validate_every=0, clip_mode="none", crop_to_multiple_of_8=True)
        with torch.inference_mode():
            pack("trainer").Trainer(sd1.model, sd1.clip, sd1.vae, images, cfg, masks=mask, overwrite=True).run()
    centre = images[:, 2:66, 2:66, :3].movedim(-1, 1) * 2.0 - 1.0
    torch.testing.assert_close(torch.cat(encoded), centre)  # one picture per encoder call
    assert grads and all(g.shape[-1] == 8 for g in grads)
    for g in grads:
        assert torch.count_nonzero(g[..., 4:]) == 0, float(g[..., 4:].abs().max())
        assert torch.count_nonzero(g[..., :4]) > 0


def _ids(sd1, text) -> list[int]:
    return sd1.clip.tokenizer.clip_l.tokenizer(text)["input_ids"][1:-1]


def test_style_template_prompts_are_the_style_lines(pack, sd1):
    """The style preset's prompts ("a painting in the style of [name]"...) are what the text encoder
    reads; the object preset's are not style prompts (the control)."""
    style_words = _ids(sd1, "in the style of")

    def prompts(template):
        seen = []
        emb = sd1.clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding

        def record(module, args):
            if torch.is_grad_enabled():
                seen.extend(tuple(row) for row in args[0].tolist())

        with hooked(emb, record, pre=True):
            train(pack, sd1, template=template, steps=6)
        return seen

    style, objects = prompts("style"), prompts("object")
    assert len(style) == 6 and all(_contains(p, tuple(style_words)) for p in style)
    assert not any(_contains(p, tuple(style_words)) for p in objects)


def test_preview_prompt_and_seed_decide_the_preview(pack, sd1):
    """The preview samples preview_prompt (the text encoder reads its words, outside training) with
    preview_seed: the same seed gives the same picture, another seed another."""
    lighthouse = tuple(_ids(sd1, "lighthouse"))
    emb = sd1.clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding

    def preview(seed):
        seen = []

        def record(module, args):
            if not torch.is_grad_enabled():
                seen.extend(tuple(row) for row in args[0].tolist())

        with hooked(emb, record, pre=True):
            result = train(pack, sd1, steps=1, preview_every=1, preview_steps=2, preview_seed=seed,
                           preview_prompt="a lighthouse, [name]")
        assert any(_contains(p, lighthouse) for p in seen), "the preview prompt was not read"
        assert len(result.previews) == 1
        return result.previews[0]

    a, again, other = preview(0), preview(0), preview(1)
    assert torch.equal(a, again)
    assert not torch.equal(a, other)


def test_the_last_preview_is_saved_inside_the_file_and_listed(pack, sd1, embeddings_dir):
    """With previews on, the saved file's header carries the final preview as the model spec's
    thumbnail (a JPEG data URL of that picture), the embedding listing passes it to the browser, and
    the Embedding the node outputs carries it for Save Embedding; without previews there is none."""
    import base64
    import io

    import numpy as np
    from PIL import Image
    from safetensors import safe_open

    result = train(pack, sd1, name="thumb-check", steps=1, preview_every=1, preview_steps=2)
    with safe_open(result.path, framework="pt") as f:
        url = f.metadata()["modelspec.thumbnail"]
    assert url.startswith("data:image/jpeg;base64,")
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")) / 255
    final = result.previews[-1][0].float().numpy()
    assert picture.shape == final.shape

    def blocks(a):  # 8 x 8 means: JPEG keeps these, while it drops a noisy preview's finest grain
        return a.reshape(a.shape[0] // 8, 8, a.shape[1] // 8, 8, 3).mean(axis=(1, 3))

    error = np.abs(blocks(picture) - blocks(final)).mean()
    assert error < 0.03, error  # the same picture
    assert error < 0.25 * np.abs(blocks(picture) - blocks(final[::-1, ::-1])).mean()  # not any picture
    assert result.embedding.metadata["modelspec.thumbnail"] == url
    listed = pack("server_routes").describe_embedding(result.path, "thumb-check")
    assert listed["thumbnail"] == url

    plain = train(pack, sd1, name="thumb-none", steps=1)
    with safe_open(plain.path, framework="pt") as f:
        assert "modelspec.thumbnail" not in f.metadata()
    assert pack("server_routes").describe_embedding(plain.path, "thumb-none")["thumbnail"] is None


# ----------------------------------------------------------------------------- SD2: v-prediction


def test_sd2_trains_on_the_v_prediction_target(pack, sd2):
    """The SD2 model samples with ComfyUI's V_PREDICTION, and the loss is the squared error of the
    model's output against the v target: the gradient on the output is c * (v_pred - v) with one c
    for every sample whatever its noise level. v is computed here from ComfyUI's own VAE latents and
    the model's input and noise level: x_t = input * sqrt(sigma^2 + 1), v = (x_t / (sigma^2 + 1) - x0)
    * sqrt(sigma^2 + 1) / sigma. (An eps or x0 loss gives the same direction but a factor that
    depends on sigma: 1 / (sigma^2 + 1) or sigma^2 / (sigma^2 + 1).)"""
    import comfy.model_sampling

    sampling = sd2.model.get_model_object("model_sampling")
    assert isinstance(sampling, comfy.model_sampling.V_PREDICTION)
    picture = pictures(1)
    with torch.inference_mode():
        x0 = sd2.model.model.process_latent_in(sd2.vae.encode(picture[:, :, :, :3])).float()
    seen = []
    on_forward = recorder(seen)

    with hooked(unet(sd2), on_forward):
        result = train(pack, sd2, images=picture, steps=3, batch_size=2, latent_sampling="deterministic")
    from safetensors import safe_open

    with safe_open(result.path, framework="pt") as f:
        assert f.metadata()["tokensmith.prediction"] == "v"
    factors = []
    for entry in seen:
        sigma = sampling.sigma(entry["t"]).float().view(-1, 1, 1, 1)
        xt = entry["x"] * (sigma**2 + 1).sqrt()
        v = (xt / (sigma**2 + 1) - x0) * (sigma**2 + 1).sqrt() / sigma
        residual = entry["out"] - v
        for i in range(residual.shape[0]):
            assert _cos(entry["grad"][i], residual[i]) > 0.999, _cos(entry["grad"][i], residual[i])
            factors.append(float((entry["grad"][i] * residual[i]).sum() / (residual[i] ** 2).sum()))
    sigmas = [float(s) for e in seen for s in sampling.sigma(e["t"])]
    assert max(sigmas) > 2 * min(sigmas), sigmas  # noise levels far enough apart to tell the losses apart
    # one factor, the mean squared error's 2 / (batch * latent size) (seen within 0.3%: sigma is read
    # back from the timestep); an eps loss would spread it over (sigma^2 + 1) = 1.06 .. 5.5 here
    mse = 2 / (2 * x0[0].numel())
    assert all(f == pytest.approx(mse, rel=1e-2) for f in factors), (factors, sigmas)
