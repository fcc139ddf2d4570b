"""Wrong inputs get a clear TokenSmithError that says what to do, before any expensive work: no VAE,
text encoder or diffusion model forward runs (counted with torch forward hooks: a count, not a
duration).

In-process, on the tiny real models of each family, through the nodes as ComfyUI calls them.
"""

from __future__ import annotations

import pytest
import torch

from tests.reliability.helpers import run_node, train_inputs


def images(count=2, size=64, seed=0):
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


def expect_clear_error(pack, model_runs, models, call, *hints):
    """``call()`` raises a TokenSmithError (the pack's own class) naming one of ``hints``, before any model runs."""
    errors = pack("tokensmith.errors")
    runs = model_runs(*models)
    with pytest.raises(errors.TokenSmithError) as info:
        call()
    message = str(info.value)
    assert any(h.lower() in message.lower() for h in hints), f"no hint {hints} in: {message}"
    # "before any work" is a count, not a duration: no VAE, diffusion model or text encoder forward ran
    assert runs.total == 0, f"models ran before the error: {runs.counts} ({message})"
    return info.value


@pytest.fixture
def train(node_classes, embeddings_dir):
    cls = node_classes["TokenSmithTrainEmbedding"]

    def run(models, **overrides):
        return run_node(cls, **train_inputs(models, **overrides))

    return run


def test_the_model_run_counter_sees_real_work(model_runs, train, sd1):
    """Control for every 'no model ran' check below: a real (one-step) run is counted."""
    runs = model_runs(sd1)
    train(sd1, name="counter-control", steps=1)
    assert runs.counts["vae"] > 0 and runs.counts["unet"] > 0 and runs.counts["text"] > 0, runs.counts


# ----------------------------------------------------------------------------- families


@pytest.mark.parametrize("model_family, clip_family", [("sd1", "sdxl"), ("sdxl", "sd1"), ("sd2", "sd1"), ("sd1", "sd2")])
def test_model_and_clip_from_different_families(request, pack, model_runs, train, model_family, clip_family):
    m, c = request.getfixturevalue(model_family), request.getfixturevalue(clip_family)
    err = expect_clear_error(pack, model_runs, (m, c), lambda: train(m, clip=c.clip),
                             "same checkpoint loader")
    assert type(err).__name__ == "FamilyMismatchError"
    assert model_family in str(err) and clip_family in str(err)


def _emb(pack, vectors, name):
    return pack("tokensmith.embedding").Embedding(vectors, name=name)


@pytest.mark.parametrize("operation", ["weighted sum", "mean", "concat", "slerp"])
def test_merge_across_families(pack, node_classes, model_runs, sd1, operation):
    a = _emb(pack, {"clip_l": torch.randn(2, 768)}, "l-only")
    b = _emb(pack, {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, "xl")
    merge = node_classes["TokenSmithMergeEmbeddings"]
    err = expect_clear_error(pack, model_runs, (sd1,), lambda: run_node(merge, operation=operation, a=a, b=b),
                             "different families", "convert")
    assert type(err).__name__ == "FamilyMismatchError"


def test_merge_expression_across_families(pack, node_classes, model_runs, sd1):
    a = _emb(pack, {"clip_l": torch.randn(2, 768)}, "l-only")
    b = _emb(pack, {"clip_h": torch.randn(1, 1024)}, "sd2")
    merge = node_classes["TokenSmithMergeEmbeddings"]
    for expr in ("a + b", "a, b", "(a*0.5) - b:2"):
        expect_clear_error(pack, model_runs, (sd1,),
                           lambda e=expr: run_node(merge, operation="mean", a=a, b=b, expression=e),
                           "different families")


def test_wider_embedding_than_the_encoder(pack, node_classes, model_runs, sd1, sdxl):
    wide = _emb(pack, {"clip_h": torch.randn(2, 1024)}, "sd2-file")
    merge = node_classes["TokenSmithMergeEmbeddings"]
    # norm matched to this (SD1) CLIP's vocabulary: the vectors are 1024 wide, the encoder 768
    expect_clear_error(pack, model_runs, (sd1,),
                       lambda: run_node(merge, operation="match norm", a=wide, clip=sd1.clip, norm=0.0),
                       "connect the CLIP of the embedding's family")
    convert = node_classes["TokenSmithConvertEmbedding"]
    expect_clear_error(pack, model_runs, (sdxl,), lambda: run_node(convert, embedding=wide, target="sdxl"),
                       "only an SD1")
    sd1_emb = _emb(pack, {"clip_l": torch.randn(2, 768)}, "l")
    expect_clear_error(pack, model_runs, (sd1,),
                       lambda: run_node(convert, embedding=sd1_emb, target="sdxl", clip=sd1.clip),
                       "needs an SDXL CLIP")


def test_wider_embedding_is_reported_by_inspect(pack, node_classes, sd1):
    """Inspecting with a CLIP is a report, not an error: it says the vectors will be ignored, and why."""
    wide = _emb(pack, {"clip_h": torch.randn(2, 1024)}, "sd2-file")
    out = run_node(node_classes["TokenSmithInspectEmbedding"], embedding=wide, clip=sd1.clip)
    text = " ".join(str(x) for x in out.result) + " " + str(out.ui)
    assert "will be ignored" in text and "1024" in text and "768" in text, text[:2000]


def _resume_file(pack, embeddings_dir, name, vectors):
    writer = pack("tokensmith.writer")
    emb = pack("tokensmith.embedding").Embedding(vectors, name=name)
    writer.save_embedding(emb, embeddings_dir, name, overwrite=True)
    import folder_paths

    folder_paths.filename_list_cache.clear()


def test_resume_from_an_embedding_of_another_family_is_refused(pack, train, sd1, embeddings_dir):
    _resume_file(pack, embeddings_dir, "resume-wide", {"clip_h": torch.randn(1, 1024)})
    errors = pack("tokensmith.errors")
    with pytest.raises(errors.TokenSmithError, match="resume_from") as info:
        train(sd1, name="resume-target", resume_from="resume-wide", num_vectors=1)
    assert "num_vectors" in str(info.value) and "family" in str(info.value)


def test_resume_from_is_checked_before_the_vae_runs(pack, model_runs, train, sd1, embeddings_dir):
    _resume_file(pack, embeddings_dir, "resume-wide", {"clip_h": torch.randn(1, 1024)})
    for bad in ("resume-wide", "no-such-embedding"):
        expect_clear_error(pack, model_runs, (sd1,),
                           lambda b=bad: train(sd1, name="resume-target", resume_from=b, num_vectors=1),
                           "resume_from")


# ----------------------------------------------------------------------------- images, masks, steps


def test_images_not_a_multiple_of_8(pack, model_runs, train, sd1):
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=images(size=60)),
                       "multiple of 8")
    err = expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=images(count=1, size=4),
                                                                     crop_to_multiple_of_8=True), "smaller than 8")
    assert type(err).__name__ == "TrainingError"


def test_empty_batches(pack, model_runs, train, sd1):
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=torch.zeros(0, 64, 64, 3)),
                       "connect an IMAGE batch")
    # is_input_list with nothing in it (an empty dataset folder)
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=[]), "connect an IMAGE batch")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=None), "connect an IMAGE batch")


def test_masks_that_do_not_fit_pictures_of_different_sizes(pack, model_runs, train, sd1):
    # pictures of different sizes train in aspect-ratio buckets (tests/host/test_buckets.py); their masks
    # must still be one per picture, each its picture's size
    mixed = [images(1, 64), images(1, 32)]
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=mixed, masks=[torch.ones(1, 64, 64)] * 2),
                       "same height and width")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=mixed, masks=torch.ones(1, 64, 64)),
                       "one mask per image")


def test_masks_of_the_wrong_size_or_count(pack, model_runs, train, sd1):
    imgs = images(2, 64)
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=imgs, masks=torch.ones(2, 32, 32)),
                       "same height and width")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=imgs, masks=torch.ones(3, 64, 64)),
                       "one mask per image")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=imgs, masks=torch.zeros(2, 64, 64)),
                       "fix or remove it")
    nan_mask = torch.ones(2, 64, 64)
    nan_mask[0, 0, 0] = float("nan")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=imgs, masks=nan_mask),
                       "finite and non-negative")


def test_zero_steps_and_other_bad_settings(pack, model_runs, train, sd1):
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, steps=0), "at least 1")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, num_vectors=0), "num_vectors must be")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, num_vectors=76), "num_vectors must be")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, learning_rate="fast please"),
                       "write rates like")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, learning_rate="1e-3:100, 5e-3:50, 1e-4"),
                       "must be after")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, template="custom", custom_template="no slot"),
                       "needs [name]")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, captions=["a", "b", "c"]), "one per image")
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, early_stop_patience=3, validate_every=0),
                       "set validate_every")


def test_nan_and_infinite_images(pack, model_runs, train, sd1):
    for bad in (float("nan"), float("inf")):
        imgs = images(2, 64)
        imgs[1, 5, 5, 1] = bad
        expect_clear_error(pack, model_runs, (sd1,), lambda i=imgs: train(sd1, images=i),
                           "check the nodes that produce them")


def test_nan_latents(pack, model_runs, train, sd1):
    latents = {"samples": torch.full((1, 4, 8, 8), float("nan"))}
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, images=None, latents=latents),
                       "NaN or infinite")


def test_name_taken_without_overwrite(pack, model_runs, train, sd1, embeddings_dir):
    _resume_file(pack, embeddings_dir, "taken-name", {"clip_l": torch.randn(1, 768)})
    before = (embeddings_dir / "taken-name.safetensors").read_bytes()
    expect_clear_error(pack, model_runs, (sd1,), lambda: train(sd1, name="taken-name", overwrite=False),
                       "turn on overwrite")
    assert (embeddings_dir / "taken-name.safetensors").read_bytes() == before
