"""Pictures as people have them: a folder of mixed sizes (portrait, landscape, square, odd sizes) trains
on small real ComfyUI models in aspect-ratio buckets: each latent is its picture's VAE latent at its
bucket's size, masks stay aligned, every batch comes from one bucket, the buckets are reported on the
node and in the console, and pictures of one size train bitwise as before (not rescaled)."""

from __future__ import annotations

import logging

import pytest
import torch


def picture(h, w, seed):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def folder():
    """Like core's dataset loader gives them: a list of single pictures of their own sizes."""
    return [picture(150, 100, 1), picture(120, 200, 2), picture(90, 90, 3), picture(133, 77, 4), picture(100, 100, 5)]


def left_half_masks(pictures):
    masks = []
    for p in pictures:
        m = torch.ones(1, *p.shape[1:3])
        m[:, :, : m.shape[2] // 2] = 0
        masks.append(m)
    return masks


def config(pack, **kw):
    cfg = dict(init_text="*", num_vectors=1, steps=6, learning_rate="5e-3", validate_every=3, validation_samples=5,
               batch_size=2)
    cfg.update(kw)
    return pack("tokensmith.train_config").TrainConfig(**cfg)


class DiffusionInputs:
    """The latent sizes the diffusion model is called with (a forward hook; nothing is replaced)."""

    def __init__(self, ms):
        self.shapes = []
        self.hook = ms.model.model.diffusion_model.register_forward_pre_hook(
            lambda module, args: self.shapes.append(tuple(args[0].shape)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.hook.remove()


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_mixed_folder_trains_in_buckets(pack, request, family):
    ms = request.getfixturevalue(family)
    data_mod = pack("tokensmith.training_data")
    pictures = folder()
    trainer = pack("trainer").Trainer(ms.model, ms.clip, ms.vae, pictures, config(pack, name=f"buckets-{family}",
                                      resolution=192, flip=True), masks=left_half_masks(pictures),
                                      captions="\n".join("abcde"), overwrite=True)
    with DiffusionInputs(ms) as seen, torch.inference_mode():
        result = trainer.run()
    assert torch.isfinite(result.embedding.vectors["clip_l"]).all() and len(result.history.loss) == 6
    buckets = trainer.session.data.buckets
    assert sorted(b.size for b in buckets) == [(128, 256), (192, 192), (256, 128)]
    assert sum(len(b.pictures) for b in buckets) == 10  # five pictures and their mirror images
    for bucket in buckets:
        h, w = bucket.size
        assert tuple(bucket.mean.shape) == (len(bucket.pictures), 4, h // 8, w // 8)
        assert bucket.masks.shape[-2:] == bucket.mean.shape[-2:]
        for pos, n in enumerate(bucket.pictures):
            original = pictures[n % 5][0]
            assert data_mod.bucket_for(tuple(original.shape[:2]), 192) == bucket.size
            fitted = data_mod.fit_picture(original, bucket.size)
            with torch.inference_mode():
                alone = ms.vae.encode(fitted.flip(1)[None] if n >= 5 else fitted[None]).float().cpu()
            assert torch.allclose(bucket.mean[pos], alone[0], atol=1e-4), (n, bucket.size)
            mask = bucket.masks[pos, 0].flip(1) if n >= 5 else bucket.masks[pos, 0]  # mirrored with its picture
            assert mask[:, : w // 16].max() < 0.2 and mask[:, w // 16:].min() > 0.8, (n, bucket.size)
    latent_sizes = {(b.size[0] // 8, b.size[1] // 8) for b in buckets}
    batch_sizes = {shape[2:] for shape in seen.shapes}
    # every call of the diffusion model is one bucket's latents (a tensor holds one size), and training
    # drew from more than one bucket
    assert batch_sizes <= latent_sizes and len(batch_sizes) >= 2, (batch_sizes, latent_sizes)


def test_the_node_takes_a_mixed_folder_and_reports_its_buckets(pack, sd1, node_classes, caplog):
    train = node_classes["TokenSmithTrainEmbedding"]
    with caplog.at_level(logging.INFO, logger="tokensmith"), torch.inference_mode():
        out = train.execute([sd1.model], [sd1.clip], ["node-buckets"], ["*"], [1], ["object"], [2], ["5e-3"], [2],
                            [0], [True], vae=[sd1.vae], images=folder(), captions=list("abcde"),
                            resolution=[192], validate_every=[0])
    text = out.ui["text"]
    assert any(t.startswith("3 buckets: 128x256 (2 pictures), 192x192 (2 pictures), 256x128 (1 picture)")
               and "5 of 5 pictures scaled" in t for t in text), text
    assert any("3 buckets" in r.getMessage() for r in caplog.records), "the buckets are reported in the console"


def test_same_size_pictures_train_bitwise_as_they_are(pack, sd1):
    """One-size pictures are not rescaled: as a batch (auto), as a dataset loader's list, and at an
    explicit resolution equal to their size, the run is the same to the bit; one that rescales differs."""
    batch = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(9))
    runs = {}
    for key, images, resolution in [("batch", batch, 0), ("list", [p[None] for p in batch], 0),
                                    ("at-size", batch, 64), ("rescaled", batch, 128)]:
        trainer = pack("trainer").Trainer(sd1.model, sd1.clip, sd1.vae, images,
                                          config(pack, name=f"same-{key}", resolution=resolution), overwrite=True)
        assert trainer.data.report() is None or key == "rescaled"
        with torch.inference_mode():
            runs[key] = trainer.run()
    for key in ("list", "at-size"):
        assert runs[key].history.loss == runs["batch"].history.loss, key
        assert runs[key].history.val_loss == runs["batch"].history.val_loss, key
        assert torch.equal(runs[key].embedding.vectors["clip_l"], runs["batch"].embedding.vectors["clip_l"]), key
    assert runs["rescaled"].history.loss != runs["batch"].history.loss, "the comparison can tell a rescaled run"


def test_latents_of_different_sizes_train_by_size(pack, sd1):
    latents = [{"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))},
               {"samples": torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(2))}]
    trainer = pack("trainer").Trainer(sd1.model, sd1.clip, None, None, config(pack, name="latent-buckets"),
                                      latents=latents, overwrite=True)
    assert trainer.data.report() == "2 buckets: 64x64 (2 pictures), 128x64 (1 picture)"
    with torch.inference_mode():
        trainer.run()
    assert [tuple(b.mean.shape) for b in trainer.session.data.buckets] == [(2, 4, 8, 8), (1, 4, 8, 16)]


def test_the_node_tells_a_cancel_from_a_failure(pack, sd1, node_classes):
    """The run's last event is 'cancelled' for ComfyUI's interrupt (comfy_adapter.is_interruption) and
    'failed' for any other error."""
    import comfy.model_management

    routes = pack("server_routes")
    train = node_classes["TokenSmithTrainEmbedding"]
    inputs = dict(vae=[sd1.vae], images=[torch.rand(1, 64, 64, 3)], validate_every=[0])
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException), torch.inference_mode():
            train.execute([sd1.model], [sd1.clip], ["outcome-cancel"], ["*"], [1], ["object"], [2], ["5e-3"], [1],
                          [0], [True], **inputs)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    with pytest.raises(pack("tokensmith.errors").TrainingError), torch.inference_mode():
        # a caption over 75 tokens: the step-0 validation batches both pictures' prompts, of different lengths
        train.execute([sd1.model], [sd1.clip], ["outcome-fail"], ["*"], [1], ["custom"], [2], ["5e-3"], [2],
                      [0], [True], captions=["short", ", ".join(["a detailed photo of a red ring"] * 14)],
                      custom_template=["[name], [filewords]"], vae=[sd1.vae], images=[torch.rand(2, 64, 64, 3)],
                      validate_every=[1])
    outcome = {r["name"]: r["events"][-1]["event"]["kind"] for r in routes.runs_snapshot()}
    assert outcome["outcome-cancel"] == "cancelled" and outcome["outcome-fail"] == "failed", outcome
