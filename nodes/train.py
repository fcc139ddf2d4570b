"""TokenSmithTrainEmbedding and TokenSmithLossGraph: thin V3 nodes over trainer.Trainer."""

from __future__ import annotations

import logging
import uuid

import torch
from comfy_api.latest import io, ui

from .. import comfy_adapter as adapter
from .. import server_routes
from ..tokensmith.history import TrainingHistory, draw_history
from ..tokensmith.templates import ignored_captions_warning, negative_embedding_note, template_lines
from ..tokensmith.train_config import LATENT_SAMPLING, LR_SHAPES, PRECISIONS, STOP_RULES, TrainConfig
from ..trainer import Trainer
from .sockets import ADV, CATEGORY, Embedding, LossHistory

_DEFAULTS = TrainConfig()
log = logging.getLogger("tokensmith")


def _console_bar(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="TokenSmith", unit="step", dynamic_ncols=True)


def first(value):
    """One value of an input that arrived as a list (is_input_list)."""
    return value[0] if isinstance(value, list) and value else value


def gather_images(items):
    """The pictures (or masks) of a list of batches: one batch when they share a size (as they
    came), else a list of single pictures of their own sizes, for the trainer's buckets."""
    items = items if isinstance(items, list) else [items]
    items = [t for t in items if t is not None]
    if not items:
        return torch.zeros(0, 8, 8, 3)
    if len({tuple(t.shape[1:]) for t in items}) == 1:
        return torch.cat(items, dim=0)
    return [single for t in items for single in t]


def gather_latents(items):
    """Latent batches [B, C, H, W] from LATENT dicts (a list when is_input_list): one batch when
    they share a size, else a list of batches; None without latents."""
    if items is None:
        return None
    items = items if isinstance(items, list) else [items]
    samples = [i["samples"] if isinstance(i, dict) else i for i in items if i is not None]
    if not samples:
        return None
    return torch.cat(samples, dim=0) if len({tuple(t.shape[1:]) for t in samples}) == 1 else samples


def _count(images, latents) -> int:
    if latents is not None:
        return latents.shape[0] if torch.is_tensor(latents) else sum(t.shape[0] for t in latents)
    if images is None:
        return 0
    return images.shape[0] if torch.is_tensor(images) else len(images)


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


def _config(name, init_text, num_vectors, template, steps, learning_rate, batch_size, seed, custom_template,
            advanced) -> TrainConfig:
    return TrainConfig(name=name.strip(), init_text=init_text, num_vectors=num_vectors, template=template,
                       custom_template=custom_template or "", steps=steps, learning_rate=learning_rate,
                       batch_size=batch_size, seed=seed,
                       **{k: v for k, v in advanced.items() if k in TrainConfig.__dataclass_fields__})


class _Progress:
    """The run's progress to ComfyUI's bar on the node, a console bar and the live view."""

    def __init__(self, run_id: str, node_id: str, steps: int):
        self.run_id = run_id
        self.pbar = adapter.progress_bar(steps, node_id or None)
        self.console = None

    def __call__(self, p) -> None:
        if self.console is None:
            self.console = _console_bar(p.total, max(0, p.step - 1))
        self.console.n = p.step
        self.console.set_postfix(loss=f"{p.loss:.4f}", lr=f"{p.lr:.2g}",
                                 norm=f"{sum(p.norms.values()) / max(1, len(p.norms)):.3f}", refresh=False)
        self.console.refresh()
        self.pbar.update_absolute(p.step, p.total)
        event = {"step": p.step, "total": p.total, "loss": p.loss, "val_loss": p.val_loss, "lr": p.lr,
                 "norms": p.norms, "eta_s": p.eta_s, "event": p.event}
        if p.preview is not None:
            event["preview"] = server_routes.preview_to_data_url(p.preview)
        server_routes.publish(self.run_id, event)

    def close(self) -> None:
        if self.console is not None:
            self.console.close()


def _notes(trainer: Trainer, config: TrainConfig, run_id: str) -> list[str]:
    """What the node says before training: unused captions (a warning, also in the live view) and
    the buckets the pictures were sorted into (console and node)."""
    warnings = [ignored_captions_warning(template_lines(config.template, config.custom_template), trainer.captions),
                negative_embedding_note(config.template, trainer.family)]
    notes = []
    for warning in filter(None, warnings):
        log.warning("TokenSmith %s: %s", config.name, warning)
        server_routes.publish(run_id, {"step": 0, "event": {"kind": "warning", "step": 0, "text": warning}})
        notes.append(warning)
    if config.stop_rule_note():  # validation was turned off on purpose: the console only
        log.info("TokenSmith %s: %s", config.name, config.stop_rule_note())
    buckets = trainer.data.report()
    if buckets:
        log.info("TokenSmith %s: %s", config.name, buckets)
        notes.append(buckets)
    return notes


def _train(trainer: Trainer, progress: _Progress, run_id: str):
    outcome = "failed"
    try:
        result = trainer.run()
        outcome = "early_stop" if result.stopped_early else "finished"
    except BaseException as exc:
        outcome = "cancelled" if adapter.is_interruption(exc) else "failed"
        raise
    finally:
        progress.close()
        server_routes.finish_run(run_id, outcome)
    return result


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
                "Captions (e.g. a dataset loader's texts) go into the training prompts. "
                "Use the `prompt` output (embedding:NAME) in a prompt."
            ),
            is_output_node=True,
            # Lists in: core's dataset loaders (LoadImageTextDataSetFromFolder...) give one image and
            # one caption per list item; they are gathered into one batch here.
            is_input_list=True,
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from your checkpoint loader (SD1.x, SD2.x or SDXL)."),
                io.Clip.Input("clip", tooltip="The CLIP from the same checkpoint loader."),
                io.Vae.Input("vae", optional=True,
                             tooltip="The VAE from the same loader: each image is encoded once, before training "
                                     "(not needed with latents)."),
                io.Image.Input("images", optional=True,
                               tooltip="5-20 pictures of the concept; a list from a dataset loader works. Mixed "
                                       "sizes are scaled into aspect-ratio buckets (see resolution); pictures of "
                                       "one size train as they are."),
                io.String.Input("name", default=_DEFAULTS.name,
                                tooltip="Keyword and file name (models/embeddings/NAME.safetensors): letters, digits, "
                                        ". _ - (and / for subfolders). No spaces: a prompt keyword ends at a space."),
                io.String.Input("init_text", default=_DEFAULTS.init_text,
                                tooltip="Words to start from, spread over the vectors (e.g. 'cat' for your cat)."),
                io.Int.Input("num_vectors", default=_DEFAULTS.num_vectors, min=1, max=75,
                             tooltip="Vectors per encoder: more learns more detail but takes prompt room (75 per chunk)."),
                io.Combo.Input("template", options=["object", "style", "negative", "custom"], default="object",
                               tooltip="Prompts used in training. object: 'a photo of [name]'...; style: 'a painting "
                                       "in the style of [name]'... (both add ', CAPTION' when captions are given); "
                                       "negative: '[name]' and 'CAPTION, [name]', for negative embeddings; custom: "
                                       "your custom_template lines."),
                io.Int.Input("steps", default=_DEFAULTS.steps, min=1, max=1_000_000,
                             tooltip="Optimizer steps: how long to train. Each step shows the model batch_size x "
                                     "gradient_accumulation pictures."),
                io.String.Input("learning_rate", default=_DEFAULTS.learning_rate,
                                tooltip="'PEAK -> FLOOR' (e.g. '5e-3 -> 5e-4') falls from PEAK to FLOOR along a "
                                        "half cosine over the run; one number is a constant rate; an A1111 schedule "
                                        "'0.005:100, 1e-3:1000, 1e-5' steps as written. See lr_shape."),
                io.Int.Input("batch_size", default=_DEFAULTS.batch_size, min=1, max=64,
                             tooltip="Pictures per forward pass. More gives a steadier loss per step but needs more "
                                     "memory; out of memory: lower it and raise gradient_accumulation."),
                io.Int.Input("seed", default=_DEFAULTS.seed, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seeds the choice of pictures and template lines, the noise and the noise "
                                     "levels: the same seed and settings repeat a run, another seed draws anew."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing embedding of the same name."),
                io.Latent.Input("latents", optional=True,
                                tooltip="Instead of images + VAE: an already encoded LATENT batch (e.g. from VAE Encode)."),
                io.Mask.Input("masks", optional=True,
                              tooltip="Per-pixel loss weight (white = learn this, black = ignore), one per image."),
                io.String.Input("captions", optional=True, multiline=True, default="",
                                tooltip="One caption per line (one line per image, or one for all), or a dataset "
                                        "loader's texts: fills [filewords]. The object and style presets use them "
                                        "('a photo of [name], CAPTION'); a template without [filewords] does not, "
                                        "and the node warns."),
                io.String.Input("custom_template", **ADV, optional=True, multiline=True, default="a photo of [name], [filewords]",
                                tooltip="Used when template is 'custom': one prompt per line, each with [name] "
                                        "(where the vectors go) and, to use the captions, [filewords]."),
                io.Boolean.Input("shuffle_tags", **ADV, optional=True, default=False,
                                 tooltip="Shuffle a caption's comma-separated tags in every prompt, so their order "
                                         "is not learned."),
                io.Float.Input("tag_dropout", **ADV, optional=True, default=0.0, min=0.0, max=0.95, step=0.05,
                               tooltip="Chance that each caption tag is left out of a prompt, so the vectors learn "
                                       "what the tags do not say (0 = keep every tag)."),
                io.Int.Input("lr_warmup_steps", **ADV, optional=True, default=_DEFAULTS.lr_warmup_steps, min=0,
                             max=100_000,
                             tooltip="Steps over which the learning rate rises from near 0 to its first value "
                                     "(0 = none; the cosine starts after them)."),
                io.Combo.Input("lr_shape", **ADV, optional=True, options=list(LR_SHAPES),
                               default=_DEFAULTS.lr_shape,
                               tooltip="How learning_rate is read. auto: cosine when it has '->', otherwise steps; "
                                       "steps: A1111's 'RATE:UNTIL, ..., RATE' list (one number = constant); "
                                       "cosine: 'PEAK' or 'PEAK -> FLOOR' (FLOOR 0 when left out); constant: one "
                                       "number."),
                io.Int.Input("gradient_accumulation", **ADV, optional=True, default=1, min=1, max=256,
                             tooltip="Batches whose gradients are added up before each optimizer step: an effective "
                                     "batch of batch_size x this, with the memory of one batch."),
                io.Combo.Input("precision", **ADV, optional=True, options=list(PRECISIONS), default="auto",
                               tooltip="What the frozen model computes in. auto: bf16 on GPUs that have it, fp16 "
                                       "(with loss scaling) on older ones, fp32 on a CPU. The vectors always stay "
                                       "fp32."),
                io.Boolean.Input("gradient_checkpointing", **ADV, optional=True, default=False,
                                 tooltip="Recompute each UNet or DiT block (and each T5 / LLM text-encoder layer) "
                                         "in the backward pass instead of keeping its activations: far less memory "
                                         "per step, at about half the speed. Turn on when training runs out of "
                                         "memory."),
                io.Combo.Input("latent_sampling", **ADV, optional=True, options=list(LATENT_SAMPLING),
                               default="deterministic",
                               tooltip="Which latent of each picture is trained on. deterministic: the VAE's mean; "
                                       "once: one sample, drawn before training; random: a new sample every step. "
                                       "The VAE runs once per picture in every mode."),
                io.Boolean.Input("flip", **ADV, optional=True, default=False,
                                 tooltip="Also train on mirrored copies of the pictures (doubles the set). Leave off "
                                         "for text, logos or anything one-sided."),
                io.Combo.Input("clip_mode", **ADV, optional=True, options=["norm", "value", "none"], default=_DEFAULTS.clip_mode,
                               tooltip="Gradient clipping. norm: scale the gradient down to an L2 norm of "
                                       "clip_value; value: clamp each entry to +-clip_value; none: off."),
                io.Float.Input("clip_value", **ADV, optional=True, default=_DEFAULTS.clip_value, min=0.0, max=1000.0,
                               step=0.01, tooltip="The limit clip_mode clips to (0 = no clipping)."),
                io.Combo.Input("norm_mode", **ADV, optional=True, options=["none", "clamp", "median"], default=_DEFAULTS.norm_mode,
                               tooltip="Keep vector norms in check after each step. none: off; clamp: at most "
                                       "max_norm; median: every vector at the vocabulary's median norm."),
                io.Float.Input("max_norm", **ADV, optional=True, default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="For norm_mode=clamp; 0 = the vocabulary's largest norm."),
                io.Float.Input("min_snr_gamma", **ADV, optional=True, default=_DEFAULTS.min_snr_gamma, min=0.0, max=100.0, step=0.5,
                               tooltip="Min-SNR loss weighting (5 is common); 0 = off."),
                io.Int.Input("validate_every", **ADV, optional=True, default=_DEFAULTS.validate_every, min=0, max=100_000,
                             tooltip="A validation loss every N steps (0 = off): on the training pictures, with "
                                     "fixed noise and noise levels, so checks compare. Needed for early stopping."),
                io.Int.Input("early_stop_patience", **ADV, optional=True, default=_DEFAULTS.early_stop_patience, min=0, max=1000,
                             tooltip="Stop after this many validations without improvement (0 = never). When "
                                     "above 0 the saved file holds the best validation's vectors, also when the "
                                     "run ends normally."),
                io.Int.Input("save_every", **ADV, optional=True, default=0, min=0, max=1_000_000,
                             tooltip="Also save NAME-stepNNNNN every N steps, to compare steps by name in a "
                                     "prompt (0 = off)."),
                io.Int.Input("preview_every", **ADV, optional=True, default=0, min=0, max=1_000_000,
                             tooltip="Sample a preview picture with preview_prompt every N steps and at the end "
                                     "(0 = off)."),
                io.String.Input("preview_prompt", **ADV, optional=True, default=_DEFAULTS.preview_prompt,
                                tooltip="Prompt of the preview pictures; [name] is where the vectors go."),
                io.Int.Input("preview_seed", **ADV, optional=True, default=0, min=0, max=2**31 - 1,
                             tooltip="Seed of the preview pictures: one seed for all, so previews differ only by "
                                     "the vectors."),
                io.String.Input("resume_from", **ADV, optional=True, default="",
                                tooltip="Name of an embedding to continue from its step (optimizer state too, "
                                        "when TokenSmith trained it); steps is the total to reach. Empty = new."),
                io.Boolean.Input("crop_to_multiple_of_8", **ADV, optional=True, default=False,
                                 tooltip="Centre-crop images (and masks) whose size is not a multiple of 8."),
                io.Int.Input("resolution", **ADV, optional=True, default=_DEFAULTS.resolution, min=0, max=4096, step=64,
                             tooltip="Training size: each picture is scaled to about N x N pixels at its own aspect "
                                     "ratio, into buckets whose sides are multiples of 64 (each batch comes from one "
                                     "bucket; masks follow). 0 = auto: pictures of one size train as they are (unless "
                                     "far larger than the model's size, as phone photos are), mixed "
                                     "sizes at 512 (SD1), 768 (SD2) or 1024 (SDXL, SD3, Flux.1, Chroma, Z-Image)."),
                io.Float.Input("guidance", **ADV, optional=True, default=_DEFAULTS.guidance, min=0.0, max=100.0, step=0.1,
                               tooltip="Flux.1 dev only: the guidance value the model sees while training and in "
                                       "previews, as a FluxGuidance node sets it (the default is ComfyUI's, used "
                                       "when a prompt has no FluxGuidance node). Train at the value you sample "
                                       "with. Other models have no guidance input and ignore it."),
                # (inputs added later go last: saved workflows keep widget values by position)
                io.Int.Input("validation_samples", **ADV, optional=True, default=_DEFAULTS.validation_samples, min=1,
                             max=256,
                             tooltip="Samples in each validation (pictures in turn, each at its own fixed noise "
                                     "level): more gives a steadier validation loss, at more cost per check."),
                io.Float.Input("validation_split", **ADV, optional=True, default=_DEFAULTS.validation_split, min=0.0,
                               max=0.5, step=0.05,
                               tooltip="Share of the pictures kept out of training and validated on (0 = validate "
                                       "on the training pictures). A held-out loss that rises while the training "
                                       "loss falls shows over-fitting. Needs validate_every above 0."),
                io.Int.Input("preview_steps", **ADV, optional=True, default=_DEFAULTS.preview_steps, min=1, max=200,
                             tooltip="Sampler steps of each preview picture (euler): more is closer to your real "
                                     "sampling, fewer is quicker."),
                io.Float.Input("preview_cfg", **ADV, optional=True, default=_DEFAULTS.preview_cfg, min=0.0, max=30.0,
                               step=0.1,
                               tooltip="CFG of the preview pictures; 0 = the model's usual (6, or 1 for Flux.1, "
                                       "which is guidance-distilled)."),
                io.String.Input("preview_negative", **ADV, optional=True, default=_DEFAULTS.preview_negative,
                                tooltip="Negative prompt of the preview pictures (empty = none)."),
                io.Combo.Input("stop_rule", **ADV, optional=True, options=list(STOP_RULES), default=_DEFAULTS.stop_rule,
                               tooltip="plateau: train until learned, stopping when the validation loss levels "
                                       "off (steps is then the most it trains); the saved file holds the best "
                                       "validation's vectors. Needs validate_every above 0. steps: train all the steps."),
                io.Int.Input("plateau_window", **ADV, optional=True, default=_DEFAULTS.plateau_window, min=1, max=100,
                             tooltip="For stop_rule=plateau: how many validations each of the two compared windows "
                                     "holds. Larger waits longer and is surer."),
                io.Float.Input("plateau_threshold", **ADV, optional=True, default=_DEFAULTS.plateau_threshold, min=0.0,
                               max=0.5, step=0.001,
                               tooltip="For stop_rule=plateau: stop when the last window's mean validation loss is "
                                       "at most this share below the window before it (0.005 = 0.5%)."),
            ],
            outputs=[
                Embedding.Output("embedding", tooltip="The trained vectors (already saved), for Save, Inspect or Merge."),
                io.String.Output("prompt", tooltip="embedding:NAME, to feed a text encode after training."),
                LossHistory.Output("loss", tooltip="The run's loss, validation loss, learning rate and norms, for Loss Graph."),
                io.Image.Output("previews", tooltip="The preview pictures (with preview_every above 0)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clip, name, init_text, num_vectors, template, steps, learning_rate, batch_size, seed,
                overwrite, vae=None, images=None, latents=None, masks=None, captions=None, custom_template=None,
                **advanced) -> io.NodeOutput:
        latents = gather_latents(latents)
        images = None if images is None else gather_images(images)
        masks = None if masks is None else gather_images(masks)
        captions = gather_captions(captions, _count(images, latents))
        model, clip, name, init_text, num_vectors, template, steps, learning_rate, batch_size, seed, overwrite = (
            first(v) for v in (model, clip, name, init_text, num_vectors, template, steps, learning_rate,
                               batch_size, seed, overwrite))
        advanced = {k: first(v) for k, v in advanced.items()}
        config = _config(name, init_text, num_vectors, template, steps, learning_rate, batch_size, seed,
                         first(custom_template), advanced)
        node_id = str(getattr(cls.hidden, "unique_id", None) or "")
        run_id = uuid.uuid4().hex[:12]
        progress = _Progress(run_id, node_id, steps)
        trainer = Trainer(model, clip, first(vae), images, config, masks=masks, latents=latents, captions=captions,
                          resume_from=advanced.get("resume_from", "") or "", overwrite=overwrite,
                          on_progress=progress)
        server_routes.start_run(run_id, node_id, steps, config.name)
        notes = _notes(trainer, config, run_id)
        result = _train(trainer, progress, run_id)
        previews = torch.cat(result.previews) if result.previews else torch.zeros(1, 64, 64, 3)
        ui_out = ui.PreviewImage(previews, cls=cls).as_dict() if result.previews else {}
        if result.stop_reason:
            notes.append(f"stopped at step {result.history.steps[-1] if result.history.steps else 0} of {steps}: "
                         f"{result.stop_reason}; saved the vectors of step {result.best_step}")
        if notes:
            ui_out["text"] = notes
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
                LossHistory.Input("loss", tooltip="The Train Embedding node's loss output."),
                io.Int.Input("width", default=768, min=256, max=4096, tooltip="Width of the picture in pixels."),
                io.Int.Input("height", default=512, min=256, max=4096, tooltip="Height of the picture in pixels."),
            ],
            outputs=[io.Image.Output("image", tooltip="The graph as a picture, e.g. for Save Image.")],
        )

    @classmethod
    def execute(cls, loss: TrainingHistory, width: int, height: int) -> io.NodeOutput:
        image = torch.from_numpy(draw_history(loss, width, height)).unsqueeze(0)
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))


NODES = [TrainEmbedding, LossGraph]
