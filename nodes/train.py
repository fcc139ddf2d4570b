"""TokenSmithTrainEmbedding and TokenSmithLossGraph: thin V3 nodes over trainer.Trainer."""

from __future__ import annotations

import logging
import uuid

import torch
from comfy_api.latest import io, ui

from .. import server_routes
from ..tokensmith.history import TrainingHistory, draw_history
from ..tokensmith.templates import ignored_captions_warning, split_captions, template_lines
from ..tokensmith.train_config import TrainConfig
from ..trainer import Trainer
from .types import ADV, CATEGORY, Embedding, LossHistory

_DEFAULTS = TrainConfig()
log = logging.getLogger("tokensmith")


def _console_bar(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="TokenSmith", unit="step", dynamic_ncols=True)


def first(value):
    """One value of an input that arrived as a list (is_input_list)."""
    return value[0] if isinstance(value, list) and value else value


def gather_images(items) -> torch.Tensor:
    """One IMAGE (or MASK) batch from a list of batches that must share a size."""
    items = items if isinstance(items, list) else [items]
    items = [t for t in items if t is not None]
    if not items:
        return torch.zeros(0, 8, 8, 3)
    sizes = {tuple(t.shape[1:]) for t in items}
    if len(sizes) > 1:
        from ..tokensmith.errors import TrainingError

        raise TrainingError(
            f"the images have different sizes {sorted(sizes)[:4]}: make them one size first (e.g. core's "
            "'Resize Images by Shorter Edge' + 'Center Crop Images' nodes, or ImageScale)"
        )
    return torch.cat(items, dim=0)


def gather_latents(items):
    """One latent batch [B, C, H, W] from LATENT dicts (a list when is_input_list), or None."""
    if items is None:
        return None
    items = items if isinstance(items, list) else [items]
    samples = [i["samples"] if isinstance(i, dict) else i for i in items if i is not None]
    return gather_images(samples) if samples else None


def gather_captions(items, count: int) -> str:
    """Caption text, one line per image, from a multiline string or a list of captions (one per image)."""
    if items is None:
        return ""
    items = items if isinstance(items, list) else [items]
    items = ["" if c is None else str(c) for c in items]
    if len(items) == 1:
        return items[0]
    if len(items) == count:
        return "\n".join(c.replace("\n", " ") for c in items)
    from ..tokensmith.errors import TrainingError

    raise TrainingError(f"got {len(items)} captions for {count} images: give one per image")


class TrainEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithTrainEmbedding",
            display_name="Train Embedding (TokenSmith)",
            category=f"{CATEGORY}/train",
            description=(
                "Textual inversion: learns a few new word vectors for the loaded MODEL/CLIP from an image batch "
                "(the model itself stays untouched) and saves them to models/embeddings as NAME.safetensors. "
                "Use the `prompt` output (embedding:NAME) in a prompt."
            ),
            is_output_node=True,
            # Lists in: core's dataset loaders (LoadImageTextDataSetFromFolder...) give one image and
            # one caption per list item; they are gathered into one batch here.
            is_input_list=True,
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from your checkpoint loader (SD1.x, SD2.x or SDXL)."),
                io.Clip.Input("clip", tooltip="The CLIP from the same checkpoint loader."),
                io.Vae.Input("vae", optional=True, tooltip="The VAE: each image is encoded once, before training."),
                io.Image.Input("images", optional=True,
                               tooltip="5-20 pictures of the concept (same size, a multiple of 8 pixels)."),
                io.String.Input("name", default=_DEFAULTS.name,
                                tooltip="Keyword and file name: letters, digits, . _ - (and / for subfolders)."),
                io.String.Input("init_text", default=_DEFAULTS.init_text,
                                tooltip="Words to start from, spread over the vectors (e.g. 'cat' for your cat)."),
                io.Int.Input("num_vectors", default=_DEFAULTS.num_vectors, min=1, max=75,
                             tooltip="Vectors per encoder: more learns more detail but takes prompt room (75 per chunk)."),
                io.Combo.Input("template", options=["object", "style", "negative", "custom"], default="object",
                               tooltip="Prompts used in training: object/style presets, 'negative' for negative "
                                       "embeddings, or 'custom' lines with [name] and [filewords]."),
                io.Int.Input("steps", default=_DEFAULTS.steps, min=1, max=1_000_000, tooltip="Optimizer steps."),
                io.String.Input("learning_rate", default=_DEFAULTS.learning_rate,
                                tooltip="'PEAK -> FLOOR' decays along a cosine over the run; a single rate is "
                                        "constant; A1111 schedules '0.005:100, 1e-3:1000, 1e-5' step as written."),
                io.Int.Input("batch_size", default=_DEFAULTS.batch_size, min=1, max=64),
                io.Int.Input("seed", default=_DEFAULTS.seed, min=0, max=2**31 - 1, control_after_generate=False),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing embedding of the same name."),
                io.Latent.Input("latents", optional=True,
                                tooltip="Instead of images + VAE: an already encoded LATENT batch (e.g. from VAE Encode)."),
                io.Mask.Input("masks", optional=True,
                              tooltip="Per-pixel loss weight (white = learn this, black = ignore), one per image."),
                io.String.Input("captions", optional=True, multiline=True, default="",
                                tooltip="One caption per line (one line per image, or one for all): fills [filewords]."),
                io.String.Input("custom_template", **ADV, optional=True, multiline=True, default="a photo of [name], [filewords]",
                                tooltip="Used when template is 'custom': one prompt per line with [name]."),
                io.Boolean.Input("shuffle_tags", **ADV, optional=True, default=False, tooltip="Shuffle comma-separated caption tags."),
                io.Float.Input("tag_dropout", **ADV, optional=True, default=0.0, min=0.0, max=0.95, step=0.05),
                io.Int.Input("lr_warmup_steps", **ADV, optional=True, default=_DEFAULTS.lr_warmup_steps, min=0, max=100_000),
                io.Combo.Input("lr_shape", **ADV, optional=True, options=["auto", "steps", "cosine", "constant"],
                               default=_DEFAULTS.lr_shape,
                               tooltip="auto: cosine when learning_rate is 'A -> B', otherwise as written."),
                io.Int.Input("gradient_accumulation", **ADV, optional=True, default=1, min=1, max=256),
                io.Combo.Input("precision", **ADV, optional=True, options=["auto", "fp32", "bf16", "fp16"], default="auto",
                               tooltip="Autocast for the frozen model; the vectors always stay fp32."),
                io.Boolean.Input("gradient_checkpointing", **ADV, optional=True, default=False,
                                 tooltip="Recompute each UNet block in the backward pass: on an H200, SDXL 1024px "
                                         "peaked at 7.9 instead of 13.4 GiB, at about half the speed."),
                io.Combo.Input("latent_sampling", **ADV, optional=True, options=["deterministic", "once", "random"],
                               default="deterministic", tooltip="VAE runs once per image in every mode."),
                io.Boolean.Input("flip", **ADV, optional=True, default=False, tooltip="Also train on mirrored images."),
                io.Combo.Input("clip_mode", **ADV, optional=True, options=["norm", "value", "none"], default=_DEFAULTS.clip_mode,
                               tooltip="Gradient clipping."),
                io.Float.Input("clip_value", **ADV, optional=True, default=_DEFAULTS.clip_value, min=0.0, max=1000.0, step=0.01),
                io.Combo.Input("norm_mode", **ADV, optional=True, options=["none", "clamp", "median"], default=_DEFAULTS.norm_mode,
                               tooltip="Keep vector norms in check: clamp to max_norm, or hold the vocabulary's median."),
                io.Float.Input("max_norm", **ADV, optional=True, default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="For norm_mode=clamp; 0 = the vocabulary's largest norm."),
                io.Float.Input("min_snr_gamma", **ADV, optional=True, default=_DEFAULTS.min_snr_gamma, min=0.0, max=100.0, step=0.5,
                               tooltip="Min-SNR loss weighting (5 is common); 0 = off."),
                io.Int.Input("validate_every", **ADV, optional=True, default=_DEFAULTS.validate_every, min=0, max=100_000,
                             tooltip="Validation loss on fixed noise every N steps (0 = off)."),
                io.Int.Input("early_stop_patience", **ADV, optional=True, default=_DEFAULTS.early_stop_patience, min=0, max=1000,
                             tooltip="Stop after this many validations without improvement and keep the best "
                                     "vectors (0 = never)."),
                io.Int.Input("save_every", **ADV, optional=True, default=0, min=0, max=1_000_000,
                             tooltip="Also save NAME-stepNNNNN every N steps, to compare steps by name (0 = off)."),
                io.Int.Input("preview_every", **ADV, optional=True, default=0, min=0, max=1_000_000,
                             tooltip="Sample a preview image every N steps and at the end (0 = off)."),
                io.String.Input("preview_prompt", **ADV, optional=True, default=_DEFAULTS.preview_prompt),
                io.Int.Input("preview_seed", **ADV, optional=True, default=0, min=0, max=2**31 - 1),
                io.String.Input("resume_from", **ADV, optional=True, default="",
                                tooltip="Name of an embedding to continue (optimizer state too, when TokenSmith "
                                        "trained it)."),
                io.Boolean.Input("crop_to_multiple_of_8", **ADV, optional=True, default=False,
                                 tooltip="Centre-crop images (and masks) whose size is not a multiple of 8."),
            ],
            outputs=[
                Embedding.Output("embedding"),
                io.String.Output("prompt", tooltip="embedding:NAME, to feed a text encode after training."),
                LossHistory.Output("loss"),
                io.Image.Output("previews"),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clip, name, init_text, num_vectors, template, steps, learning_rate, batch_size, seed,
                overwrite, vae=None, images=None, latents=None, masks=None, captions=None, custom_template=None,
                **advanced) -> io.NodeOutput:
        import comfy.utils

        latents = gather_latents(latents)
        images = None if images is None else gather_images(images)
        masks = None if masks is None else gather_images(masks)
        count = latents.shape[0] if latents is not None else (0 if images is None else images.shape[0])
        captions = gather_captions(captions, count)
        model, clip, name, init_text, num_vectors, template, steps, learning_rate, batch_size, seed, overwrite = (
            first(v) for v in (model, clip, name, init_text, num_vectors, template, steps, learning_rate,
                               batch_size, seed, overwrite))
        custom_template = first(custom_template) or ""
        advanced = {k: first(v) for k, v in advanced.items()}

        config = TrainConfig(name=name.strip(), init_text=init_text, num_vectors=num_vectors, template=template,
                             custom_template=custom_template or "", steps=steps, learning_rate=learning_rate,
                             batch_size=batch_size, seed=seed,
                             **{k: v for k, v in advanced.items() if k in TrainConfig.__dataclass_fields__})
        node_id = str(getattr(cls.hidden, "unique_id", None) or "")
        run_id = uuid.uuid4().hex[:12]
        pbar = comfy.utils.ProgressBar(steps, node_id=node_id or None)
        console = None

        def on_progress(p):
            nonlocal console
            if console is None:
                console = _console_bar(p.total, max(0, p.step - 1))
            console.n = p.step
            console.set_postfix(loss=f"{p.loss:.4f}", lr=f"{p.lr:.2g}",
                                norm=f"{sum(p.norms.values()) / max(1, len(p.norms)):.3f}", refresh=False)
            console.refresh()
            pbar.update_absolute(p.step, p.total)
            event = {"step": p.step, "total": p.total, "loss": p.loss, "val_loss": p.val_loss, "lr": p.lr,
                     "norms": p.norms, "eta_s": p.eta_s, "event": p.event}
            if p.preview is not None:
                event["preview"] = server_routes.preview_to_data_url(p.preview)
            server_routes.publish(run_id, event)

        trainer = Trainer(model, clip, first(vae), images, config, masks=masks, latents=latents, captions=captions,
                          resume_from=advanced.get("resume_from", "") or "", overwrite=overwrite,
                          on_progress=on_progress)
        server_routes.start_run(run_id, node_id, steps, config.name)
        # the trainer has checked the template and the captions: say so when the captions go unused
        warnings = [w for w in [ignored_captions_warning(template_lines(config.template, config.custom_template),
                                                         split_captions(captions, count))] if w]
        for text in warnings:
            log.warning("TokenSmith %s: %s", config.name, text)
            server_routes.publish(run_id, {"step": 0, "event": {"kind": "warning", "step": 0, "text": text}})
        outcome = "failed"
        try:
            result = trainer.run()
            outcome = "early_stop" if result.stopped_early else "finished"
        except BaseException as exc:
            outcome = "cancelled" if type(exc).__name__ == "InterruptProcessingException" else "failed"
            raise
        finally:
            if console is not None:
                console.close()
            server_routes.finish_run(run_id, outcome)
        previews = torch.cat(result.previews) if result.previews else torch.zeros(1, 64, 64, 3)
        ui_out = ui.PreviewImage(previews, cls=cls).as_dict() if result.previews else {}
        if warnings:
            ui_out["text"] = warnings
        return io.NodeOutput(result.embedding, f"embedding:{config.name}", result.history, previews, ui=ui_out or None)


class LossGraph(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithLossGraph",
            display_name="Loss Graph (TokenSmith)",
            category=f"{CATEGORY}/train",
            description="Draws a training run: loss (raw and smoothed) and validation loss, learning rate and vector norm.",
            is_output_node=True,
            inputs=[
                LossHistory.Input("loss"),
                io.Int.Input("width", default=768, min=256, max=4096),
                io.Int.Input("height", default=512, min=256, max=4096),
            ],
            outputs=[io.Image.Output("image")],
        )

    @classmethod
    def execute(cls, loss: TrainingHistory, width: int, height: int) -> io.NodeOutput:
        image = torch.from_numpy(draw_history(loss, width, height)).unsqueeze(0)
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))


NODES = [TrainEmbedding, LossGraph]
