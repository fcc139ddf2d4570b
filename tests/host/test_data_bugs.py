"""The trainer's training data on small real ComfyUI models: the VAE encoder runs once per picture,
given latents are checked as latents (no picture-sized tensor is made for them), and a trainer run
twice trains on the same data twice."""

from __future__ import annotations

import pytest
import torch


def new_trainer(pack, ms, *, images=None, latents=None, masks=None, captions="", resume_from="", **options):
    cfg = {"init_text": "*", "num_vectors": 2, "steps": 2, "learning_rate": "5e-3", "validate_every": 0, **options}
    with torch.inference_mode():
        return pack("trainer").Trainer(ms.model, ms.clip, ms.vae, images, pack("tokensmith.train_config").TrainConfig(**cfg),
                                       latents=latents, masks=masks, captions=captions, resume_from=resume_from,
                                       overwrite=True)


def run(trainer):
    with torch.inference_mode():
        return trainer.run()


def pictures(count, size=64, seed=1):
    return torch.rand(count, size, size, 3, generator=torch.Generator().manual_seed(seed))


class EncoderCalls:
    """Counts the pictures that go through the VAE's encoder."""

    def __init__(self, vae):
        self.pictures, self.batches = 0, []
        self.hook = vae.first_stage_model.encoder.register_forward_hook(self.seen)

    def seen(self, module, args, output):
        self.pictures += args[0].shape[0]
        self.batches.append(args[0].shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.hook.remove()


@pytest.mark.parametrize("mode", ["deterministic", "once", "random"])
def test_vae_encoder_runs_once_per_picture(pack, sd1, mode):
    images = pictures(3)
    trainer = new_trainer(pack, sd1, images=images, name=f"encode-{mode}", latent_sampling=mode, flip=True)
    with EncoderCalls(sd1.vae) as calls:
        run(trainer)
    assert calls.pictures == 6, f"{calls.pictures} encoder passes for 6 pictures (3 and their mirror images)"
    # one picture per encoder call: a batch of all of them was the memory peak of a large-picture run
    assert calls.batches == [1] * 6, calls.batches
    both = torch.cat([images, images.flip(2)])
    with torch.inference_mode():
        fs = sd1.vae.first_stage_model
        pixels = sd1.vae.process_input(both.movedim(-1, 1)).to(sd1.vae.vae_dtype).to(sd1.vae.device)
        mean, logvar = fs.quant_conv(fs.encoder(pixels)).float().chunk(2, dim=1)
        comfy_mean = sd1.vae.encode(both)  # what ComfyUI's VAEEncode gives for the batch
        one_by_one = torch.cat([sd1.vae.encode(both[i:i + 1]) for i in range(len(both))])
    assert torch.allclose(comfy_mean.cpu(), mean.cpu(), atol=1e-5)
    assert torch.allclose(one_by_one.cpu(), comfy_mean.cpu(), atol=1e-5)
    if mode == "deterministic":
        assert torch.equal(trainer.latent_mean, one_by_one.float().cpu())
        assert not trainer.latent_std.any(), "deterministic training has no use for the spread"
    else:
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0)).cpu()
        assert torch.allclose(trainer.latent_std, std, rtol=1e-5, atol=1e-7)
        assert (trainer.latent_std > 0).all()


def largest_allocation(fn) -> int:
    """The largest single CPU allocation (bytes) torch makes while fn runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


def test_given_latents_are_checked_as_latents(pack, sd1):
    """Latents (e.g. from VAEEncode) need no picture: none is made to pass picture checks (at SDXL sizes
    that would be hundreds of MB)."""
    latents = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    picture_bytes = 2 * (64 * 8) ** 2 * 3 * 4  # the float32 IMAGE batch these latents decode to: 6 MiB
    made = []
    biggest = largest_allocation(lambda: made.append(new_trainer(pack, sd1, latents={"samples": latents},
                                                                 name="latents-only")))
    assert biggest < picture_bytes // 4, f"a {biggest} byte tensor was made for {latents.numel() * 4} bytes of latents"
    trainer = made[0]
    assert trainer.pixel_size == (512, 512)
    errors = pack("tokensmith.errors")
    with pytest.raises(errors.TrainingError, match=r"does not fit images \[2, 512, 512\]"):
        new_trainer(pack, sd1, latents=latents, masks=torch.ones(2, 64, 64), name="latents-masks")
    with pytest.raises(errors.TrainingError, match="NaN or infinite"):
        new_trainer(pack, sd1, latents=torch.full((1, 4, 8, 8), float("nan")), name="latents-nan")


def test_a_second_run_trains_on_the_same_data(pack, sd1):
    images = pictures(2)
    masks = torch.ones(2, 64, 64)
    masks[0, :, :32] = 0  # left half of the first picture masked out: its mirror image is masked on the right
    trainer = new_trainer(pack, sd1, images=images, masks=masks, captions="red ring\nblue ring", flip=True,
                          name="second-run", steps=3, validate_every=3)
    seen = []
    for _ in range(2):
        result = run(trainer)
        seen.append((list(trainer.captions), trainer.masks.clone(), trainer.latent_masks.clone(), result))
    (captions1, masks1, latent_masks1, first), (captions2, masks2, latent_masks2, second) = seen
    assert captions1 == captions2 == ["red ring", "blue ring"]
    assert torch.equal(masks1, masks2) and torch.equal(masks1, masks)
    assert latent_masks2.shape[0] == trainer.latent_mean.shape[0] == 4
    assert torch.equal(latent_masks1, latent_masks2)
    assert latent_masks1[2, 0, :, 4:].sum() == 0 and latent_masks1[2, 0, :, :4].all()  # the mirrored mask
    for key in first.embedding.vectors:
        assert torch.equal(first.embedding.vectors[key], second.embedding.vectors[key]), key
    assert first.history.loss == second.history.loss and first.history.val_loss == second.history.val_loss

