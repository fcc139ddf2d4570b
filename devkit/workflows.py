"""The example workflows: their definitions, the UI-format <-> API-format conversion, and the builder
that writes example_workflows/*.json (UI format) with real screenshots as .jpg thumbnails.

    python -m devkit.workflows build     # re-create example_workflows/ through the real front end
    python -m devkit.workflows build "Train an SD3 embedding"   # only the examples named

The definitions are API-format graphs plus a layout (positions, sizes, notes). The builder loads
each into the real ComfyUI front end in headless Chromium (app.loadApiJson), lays it out, saves the
front end's own serialisation, and screenshots the canvas. `ui_to_api` converts a saved UI-format
workflow back with /object_info (what the demo queues); the browser tests check it against the
front end's own conversion (app.graphToPrompt).
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .comfy_host import REPO_ROOT

EXAMPLES_DIR = REPO_ROOT / "example_workflows"
SD15_NAME = "v1-5-pruned-emaonly-fp16.safetensors"  # what most people have; the user picks their own
# Where a missing model comes from, in the form the front end's missing-models dialog reads from a
# loader node's properties (as ComfyUI's own templates carry it).
SDXL_NAME = "sd_xl_base_1.0.safetensors"  # as ComfyUI's own SDXL templates name and source it
SD35M_NAME = "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"  # SD3.5 medium with its CLIPs and T5, one file
MODEL_SOURCES = {
    SD15_NAME: {"url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                       f"{SD15_NAME}?download=true", "directory": "checkpoints"},
    SDXL_NAME: {"url": "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                       f"{SDXL_NAME}?download=true", "directory": "checkpoints"},
    SD35M_NAME: {"url": "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/"
                        f"{SD35M_NAME}?download=true", "directory": "checkpoints"},
}
DEMO_FOLDER = "tokensmith_demo"
NEGATIVE_FOLDER = "tokensmith_negative"
TRAIN = "Train an embedding from images"
NEGATIVE = "Train a negative embedding"
MERGE = "Inspect and merge embeddings"
CONVERT = "Convert old pt embeddings"
STYLE = "Train a style embedding"
SDXL = "Train an SDXL embedding"
SD3 = "Train an SD3 embedding"
RESUME = "Resume a training run"
MASKS = "Train with masks"
COMPARE = "Compare snapshots by step"
USE = "Use embeddings in prompts"
# UI node types that are not executed (the front end drops them from the API format).
VIRTUAL_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


@dataclass
class Example:
    name: str
    api: dict
    columns: list  # (width, [node id or "note", ...]) left to right; nodes stack top to bottom
    note: str = ""  # markdown shown in a note node at the "note" place
    titles: dict = field(default_factory=dict)  # node id -> title shown on the node


def _train_inputs(name: str, template: str, init_text: str, steps: int, preview_prompt: str, **extra) -> dict:
    """The examples' trainer: the node's own defaults (one set, tokensmith.train_config) with previews on."""
    from tokensmith.train_config import TrainConfig

    defaults = TrainConfig()
    return {
        "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "images": ["2", 0], "captions": ["2", 1],
        "name": name, "init_text": init_text, "num_vectors": defaults.num_vectors, "template": template,
        "steps": steps, "learning_rate": defaults.learning_rate, "batch_size": defaults.batch_size, "seed": 0,
        "overwrite": True, "validate_every": defaults.validate_every, "early_stop_patience": defaults.early_stop_patience,
        "stop_rule": defaults.stop_rule, "preview_every": 100, "preview_prompt": preview_prompt, **extra,
    }


def _sampler(positive, negative, prefix: str, first_id: int, size: int = 512, latent: str = "EmptyLatentImage",
             **sampling) -> dict:
    i = first_id
    return {
        str(i): {"class_type": latent, "inputs": {"width": size, "height": size, "batch_size": 1}},
        str(i + 1): {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": positive, "negative": negative, "latent_image": [str(i), 0],
            "seed": 42, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            **sampling}},
        str(i + 2): {"class_type": "VAEDecode", "inputs": {"samples": [str(i + 1), 0], "vae": ["1", 2]}},
        str(i + 3): {"class_type": "SaveImage", "inputs": {"images": [str(i + 2), 0], "filename_prefix": prefix}},
    }


def examples() -> list[Example]:
    ckpt = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_NAME}}
    train = Example(
        TRAIN,
        {
            "1": ckpt,
            # the pack's own loader: phone photos upright (EXIF), captions by name, size warnings
            "2": {"class_type": "TokenSmithLoadTrainingPictures", "inputs": {"folder": DEMO_FOLDER}},
            "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": _train_inputs(
                "tokensmith-ring", "object", "ring", 500, "a photo of [name] on a table", captions=["2", 2])},
            "4": {"class_type": "TokenSmithLossGraph", "inputs": {"loss": ["3", 2], "width": 768, "height": 512}},
            "5": {"class_type": "StringConcatenate", "inputs": {
                "string_a": ["3", 1], "string_b": "on a wooden table, sharp focus", "delimiter": ", "}},
            "7": {"class_type": "TokenSmithPrompt", "inputs": {"text": ["5", 0], "convert_keywords": False,
                                                                "clip": ["1", 1]}},
            "8": {"class_type": "CLIPTextEncode", "inputs": {"text": ["7", 0], "clip": ["1", 1]}},
            "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["1", 1]}},
            **_sampler(["8", 0], ["9", 0], "tokensmith/ring", 10),
        },
        [(380, ["note", "1", "2"]), (470, ["3"]), (420, ["4", "5", "7"]), (360, ["8", "9", "10"]),
         (320, ["11", "12"]), (420, ["13"])],
        (
          "## Train an embedding from images\n"
          "1. Put 5–20 pictures of your subject (any sizes: they are scaled into aspect-ratio buckets; phone "
          "photos are turned upright) in `ComfyUI/input/tokensmith_demo/`, optionally with a same-name `.txt` "
          "caption each saying what changes between pictures (background, pose), then press R to list the "
          "folder. **Load Training Pictures** warns about pictures too small or needlessly large.\n"
          "2. Pick an SD1.x / SD2.x / SDXL checkpoint and a `name`.\n"
          "3. Queue. The chart on the trainer shows the loss live; the file lands in `models/embeddings/`.\n"
          "The trainer's `prompt` output (`embedding:NAME`) feeds the sampler below, so it runs after training."),
    )
    negative = Example(
        NEGATIVE,
        {
            "1": ckpt,
            "2": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": NEGATIVE_FOLDER}},
            "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": _train_inputs(
                "tokensmith-negative", "negative", "blurry lowres", 500, "[name]")},
            "4": {"class_type": "TokenSmithLossGraph", "inputs": {"loss": ["3", 2], "width": 768, "height": 512}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a red ring on a table, sharp focus",
                                                             "clip": ["1", 1]}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["3", 1], "clip": ["1", 1]}},
            **_sampler(["5", 0], ["6", 0], "tokensmith/negative", 7),
        },
        [(380, ["note", "1", "2"]), (470, ["3"]), (420, ["4", "5", "6"]), (320, ["7", "8", "9"]),
         (420, ["10"])],
        (
          "## Train a negative embedding\n"
          "Put pictures of what you want to *avoid* (blur, artefacts, a style) in "
          "`ComfyUI/input/tokensmith_negative/`. The `negative` template trains the vectors on plain prompts, "
          "so they describe the pictures as a whole.\n\n"
          "The trainer's `prompt` output goes straight into the **negative** text encode."),
    )
    merge = Example(
        MERGE,
        {
            "1": ckpt,
            "2": {"class_type": "TokenSmithLoadEmbedding", "inputs": {"file": "tokensmith-ring.safetensors"}},
            "3": {"class_type": "TokenSmithInspectEmbedding", "inputs": {"embedding": ["2", 0], "clip": ["1", 1],
                                                                         "top_k": 5}},
            "4": {"class_type": "TokenSmithEmbeddingFromText", "inputs": {"clip": ["1", 1], "text": "red circle"}},
            "5": {"class_type": "TokenSmithMergeEmbeddings", "inputs": {
                "operation": "weighted sum", "a": ["2", 0], "b": ["4", 0], "clip": ["1", 1],
                "weight_a": 0.7, "weight_b": 0.3, "weight_c": 1.0, "weight_d": 1.0, "t": 0.5, "factor": 1.0,
                "encoder": "clip_g", "norm": 0.0, "n": 1, "shift": 1, "expression": ""}},
            "6": {"class_type": "TokenSmithInspectEmbedding", "inputs": {"embedding": ["5", 0], "clip": ["1", 1],
                                                                         "top_k": 5}},
            "7": {"class_type": "TokenSmithSaveEmbedding", "inputs": {"embedding": ["5", 0],
                                                                      "name": "tokensmith-ring-merged",
                                                                      "overwrite": True}},
        },
        [(380, ["note", "1", "2", "4"]), (520, ["3", "5"]), (520, ["6", "7"])],
        (
          "## Inspect and merge embeddings\n"
          "**Inspect** shows shapes, norms (next to the vocabulary's typical norm) and the nearest words of "
          "each vector.\n\n**Merge** mixes embeddings (weighted sum, mean, concat, slerp...) or evaluates an "
          "expression like `'red circle' + tokensmith-ring*0.5`. **Save** writes the result; use it as "
          "`embedding:tokensmith-ring-merged`."),
    )
    convert = Example(
        CONVERT,
        {
            "1": {"class_type": "TokenSmithLoadEmbedding", "inputs": {"file": "tokensmith-old.pt"}},
            "2": {"class_type": "TokenSmithInspectEmbedding", "inputs": {"embedding": ["1", 0], "top_k": 0}},
            "3": {"class_type": "TokenSmithConvertEmbedding", "inputs": {"embedding": ["1", 0], "target": "keep"}},
            "4": {"class_type": "TokenSmithSaveEmbedding", "inputs": {"embedding": ["3", 0],
                                                                      "name": "tokensmith-old-converted",
                                                                      "overwrite": True}},
        },
        [(380, ["note", "1"]), (520, ["2", "3"]), (460, ["4"])],
        (
          "## Convert old .pt embeddings\n"
          "Reads A1111 `.pt` files (opened with `weights_only=True`: a file cannot run code), PNG cards, "
          "diffusers `.bin` and LoRA bundles, and saves them as `.safetensors`. `target`: keep, sd1 or sdxl "
          "(SD1 -> SDXL adds G vectors).\n\nOne file at a time from a terminal, no ComfyUI needed:\n"
          "`python -m tokensmith convert OLD.pt NEW.safetensors`"),
    )
    return [train, negative, merge, convert, *_more_examples(ckpt)]


def _use_prompt(first_id: int, prompt, before: str, after: str) -> dict:
    """Concatenate 'BEFORE embedding:NAME AFTER' (the trainer's prompt output, so it runs after training)
    -> CLIP Text Encode; and the negative prompt."""
    i = first_id
    return {
        str(i): {"class_type": "StringConcatenate", "inputs": {"string_a": before, "string_b": prompt, "delimiter": " "}},
        str(i + 1): {"class_type": "StringConcatenate", "inputs": {"string_a": [str(i), 0], "string_b": after,
                                                                    "delimiter": " "}},
        str(i + 2): {"class_type": "CLIPTextEncode", "inputs": {"text": [str(i + 1), 0], "clip": ["1", 1]}},
        str(i + 3): {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["1", 1]}},
    }


def _more_examples(ckpt: dict) -> list[Example]:
    dataset = {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": DEMO_FOLDER}}
    loss = {"class_type": "TokenSmithLossGraph", "inputs": {"loss": ["3", 2], "width": 768, "height": 512}}
    demo_files = ("The demo pictures in `ComfyUI/input/tokensmith_demo/` (written by `make demo`, or put your own "
                  "there) stand in for yours.")
    style = Example(
        STYLE,
        {
            "1": ckpt, "2": dataset,
            "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": _train_inputs(
                "tokensmith-style", "style", "painting", 500, "a lighthouse on a cliff, in the style of [name]")},
            "4": loss,
            **_use_prompt(5, ["3", 1], "a lighthouse on a cliff, in the style of", "sharp focus"),
            **_sampler(["7", 0], ["8", 0], "tokensmith/style", 9),
        },
        [(380, ["note", "1", "2"]), (470, ["3"]), (420, ["4", "5", "6"]), (360, ["7", "8", "9"]),
         (340, ["10", "11", "12"])],
        (
          "## Train a style embedding\n"
          "A look (a painter, a film stock, a palette) rather than a thing: 10–30 pictures that share the "
          "style and differ in subject, in `ComfyUI/input/tokensmith_demo/` (or change the folder). "
          f"{demo_files}\n\n"
          "The `style` template trains on prompts such as `a painting in the style of [name]`, with each "
          "picture's caption after it. Use it as `... in the style of embedding:tokensmith-style`."),
    )
    sdxl = Example(
        SDXL,
        {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SDXL_NAME}},
            "2": dataset,
            "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {**_train_inputs(
                "tokensmith-ring-sdxl", "object", "ring", 500, "a photo of [name] on a table"),
                "images": ["21", 0]}},
            "4": loss,
            **_use_prompt(5, ["3", 1], "a photo of", "on a wooden table, sharp focus"),
            **_sampler(["7", 0], ["8", 0], "tokensmith/sdxl", 9, size=1024),
            "20": {"class_type": "ResizeImagesByShorterEdge", "inputs": {"images": ["2", 0], "shorter_edge": 1024}},
            "21": {"class_type": "CenterCropImages", "inputs": {"images": ["20", 0], "width": 1024, "height": 1024}},
        },
        [(380, ["note", "1", "2", "20", "21"]), (470, ["3"]), (420, ["4", "5", "6"]), (360, ["7", "8", "9"]),
         (340, ["10", "11", "12"])],
        (
          "## Train an SDXL embedding\n"
          f"Needs the SDXL base checkpoint `{SDXL_NAME}` in `ComfyUI/models/checkpoints/` (the front end offers "
          "the download from stabilityai's Hugging Face page), or any SDXL checkpoint. "
          f"{demo_files}\n\n"
          "SDXL trains at 1024×1024: *Resize Images by Shorter Edge* and *Center Crop Images* bring every "
          "picture there. The file holds `clip_l` and `clip_g` vectors, read by every SDXL checkpoint."),
    )
    resume = Example(
        RESUME,
        {
            "1": ckpt, "2": dataset,
            "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": _train_inputs(
                "tokensmith-ring", "object", "ring", 1200, "a photo of [name] on a table", resume_from="tokensmith-ring")},
            "4": loss,
            **_use_prompt(5, ["3", 1], "a photo of", "on a wooden table, sharp focus"),
            **_sampler(["7", 0], ["8", 0], "tokensmith/resume", 9),
        },
        [(380, ["note", "1", "2"]), (470, ["3"]), (420, ["4", "5", "6"]), (360, ["7", "8", "9"]),
         (340, ["10", "11", "12"])],
        (
          "## Resume a training run\n"
          "Continues `tokensmith-ring` (made by *Train an embedding from images* or `make demo`: run one of those "
          "first) from its last step to `steps` in all, with the optimizer state TokenSmith kept in "
          "`ComfyUI/output/tokensmith_state/`, the same settings and the same pictures. `resume_from` is under "
          "the trainer's advanced inputs; the other settings are the training example's. The same `name` "
          "updates the file; another name keeps the old one."),
    )
    masks = Example(
        MASKS,
        {
            "1": ckpt, "2": dataset,
            "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {**_train_inputs(
                "tokensmith-ring-masked", "object", "ring", 500, "a photo of [name] on a table"),
                "masks": ["22", 0]}},
            "4": loss,
            **_use_prompt(5, ["3", 1], "a photo of", "on a wooden table, sharp focus"),
            **_sampler(["7", 0], ["8", 0], "tokensmith/masked", 9),
            "20": {"class_type": "ImageToMask", "inputs": {"image": ["2", 0], "channel": "green"}},
            "21": {"class_type": "InvertMask", "inputs": {"mask": ["20", 0]}},
            "22": {"class_type": "ThresholdMask", "inputs": {"mask": ["21", 0], "value": 0.6}},
            "23": {"class_type": "MaskToImage", "inputs": {"mask": ["22", 0]}},
            "24": {"class_type": "PreviewImage", "inputs": {"images": ["23", 0]}},
        },
        [(340, ["note", "1", "2"]), (260, ["20", "21", "22", "23", "24"]), (470, ["3"]), (400, ["4", "5", "6"]),
         (340, ["7", "8", "9"]), (340, ["10", "11", "12"])],
        (
          "## Train with masks\n"
          "A mask per picture says where the loss counts: white = learn this, black = ignore (the background, "
          "a person next to your dog). Here the masks are made from the demo pictures themselves (the ring is "
          "dark in the green channel: invert, threshold), and shown in the preview. "
          f"{demo_files}\n\n"
          "For your own pictures: paint masks in an editor and load them with a second *Load Image Dataset from "
          "Folder* and *Convert Image to Mask*, one mask per picture, in the same order and size."),
    )
    return [style, sdxl, _sd3_example(dataset, loss, demo_files), resume, masks, _compare_example(ckpt, dataset),
            _use_example(ckpt)]


def _sd3_example(dataset: dict, loss: dict, demo_files: str) -> Example:
    """A flow-matching family: SD3.5 medium, whose one file carries CLIP-L, CLIP-G and T5."""
    api = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD35M_NAME}},
        "2": dataset,
        "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {**_train_inputs(
            "tokensmith-ring-sd3", "object", "ring", 500, "a photo of [name] on a table"),
            "images": ["21", 0]}},
        "4": loss,
        **_use_prompt(5, ["3", 1], "a photo of", "on a wooden table, sharp focus"),
        # SD3's 16-channel latent, and the sampler settings of ComfyUI's own SD3.5 examples
        **_sampler(["7", 0], ["8", 0], "tokensmith/sd3", 9, size=1024, latent="EmptySD3LatentImage",
                   steps=28, cfg=4.5, scheduler="sgm_uniform"),
        "20": {"class_type": "ResizeImagesByShorterEdge", "inputs": {"images": ["2", 0], "shorter_edge": 1024}},
        "21": {"class_type": "CenterCropImages", "inputs": {"images": ["20", 0], "width": 1024, "height": 1024}},
    }
    columns = [(380, ["note", "1", "2", "20", "21"]), (470, ["3"]), (420, ["4", "5", "6"]), (360, ["7", "8", "9"]),
               (340, ["10", "11", "12"])]
    note = (
        "## Train an SD3 embedding\n"
        f"SD3.5 medium as one file, `{SD35M_NAME}` in `ComfyUI/models/checkpoints/` (the front end offers the "
        "download from Comfy-Org's Hugging Face page), or any SD3 / SD3.5 checkpoint. "
        f"{demo_files}\n\n"
        "SD3 is a flow-matching model: the trainer uses the model's own sampling (its shift included). Every "
        "text encoder the checkpoint carries is trained together, and the file holds one key per encoder "
        "(`clip_l`, `clip_g`, and `t5xxl` when the checkpoint has T5). The sampler needs SD3's 16-channel "
        "latent (*EmptySD3LatentImage*).")
    return Example(SD3, api, columns, note)


def _use_example(ckpt: dict) -> Example:
    """Pick Embedding's prompt text, and an unsaved merge used in a prompt through Text Encode with Embedding."""
    ring = "tokensmith-ring.safetensors"
    api = {
        "1": ckpt,
        "2": {"class_type": "TokenSmithPickEmbedding", "inputs": {"embedding": ring, "weight": 1.2}},
        **_use_prompt(3, ["2", 0], "a photo of", "on a wooden table, sharp focus"),
        **_sampler(["5", 0], ["6", 0], "tokensmith/picked", 7),
        "20": {"class_type": "TokenSmithLoadEmbedding", "inputs": {"file": ring}},
        "21": {"class_type": "TokenSmithEmbeddingFromText", "inputs": {"clip": ["1", 1], "text": "red circle"}},
        "22": {"class_type": "TokenSmithMergeEmbeddings", "inputs": {
            "operation": "weighted sum", "a": ["20", 0], "b": ["21", 0], "clip": ["1", 1],
            "weight_a": 0.7, "weight_b": 0.3, "weight_c": 1.0, "weight_d": 1.0, "t": 0.5, "factor": 1.0,
            "encoder": "clip_g", "norm": 0.0, "n": 1, "shift": 1, "expression": ""}},
        "23": {"class_type": "TokenSmithEncodeWithEmbedding", "inputs": {
            "clip": ["1", 1], "embedding": ["22", 0], "keyword": "draft",
            "text": "a photo of embedding:draft on a wooden table, sharp focus"}},
        **_sampler(["23", 0], ["6", 0], "tokensmith/unsaved", 24),
    }
    columns = [(380, ["note", "1", "2"]), (380, ["3", "4", "5", "6"]), (340, ["7", "8", "9", "10"]),
               (440, ["20", "21", "23"]), (480, ["22"]), (340, ["24", "25", "26", "27"])]
    note = (
        "## Use embeddings in prompts\n"
        "**Pick Embedding** lists the embeddings folders: pick a file and a weight and it writes "
        "`(embedding:tokensmith-ring:1.2)` for your prompt, no typing of names.\n\n"
        "**Text Encode with Embedding** uses an embedding that is not saved yet: here a merge of "
        "`tokensmith-ring` with `red circle` is `embedding:draft` in the prompt. The picture is the one the "
        "saved file would give; save the merge when you like it.\n\n"
        "`tokensmith-ring` comes from *Train an embedding from images* or `make demo`: run one of those first.")
    titles = {"7": "picked: latent", "8": "picked: sampler", "24": "unsaved merge: latent",
              "25": "unsaved merge: sampler"}
    return Example(USE, api, columns, note, titles)


COMPARE_STEPS = (100, 200, 300)


def _compare_example(ckpt: dict, dataset: dict) -> Example:
    """Train with save_every, then the same seed and prompt with each snapshot, side by side in one picture."""
    name = "tokensmith-ring-steps"
    api = {
        "1": ckpt, "2": dataset,
        "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": _train_inputs(
            name, "object", "ring", COMPARE_STEPS[-1], "a photo of [name] on a table",
            stop_rule="steps", save_every=COMPARE_STEPS[0])},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    }
    titles = {}
    columns = [(380, ["note", "1", "2"]), (470, ["3", "4", "5"])]
    decoded = []
    for k, step in enumerate(COMPARE_STEPS):
        i = 10 + 10 * k
        last = step == COMPARE_STEPS[-1]
        # the snapshot NAME-stepNNNNN; the last step's is the file itself (NAME)
        suffix = " on a wooden table, sharp focus" if last else f"-step{step:05d} on a wooden table, sharp focus"
        api.update({
            str(i): {"class_type": "StringConcatenate", "inputs": {"string_a": ["3", 1], "string_b": suffix,
                                                                   "delimiter": ""}},
            str(i + 1): {"class_type": "CLIPTextEncode", "inputs": {"text": [str(i), 0], "clip": ["1", 1]}},
            str(i + 2): {"class_type": "KSampler", "inputs": {
                "model": ["1", 0], "positive": [str(i + 1), 0], "negative": ["4", 0], "latent_image": ["5", 0],
                "seed": 42, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
            str(i + 3): {"class_type": "VAEDecode", "inputs": {"samples": [str(i + 2), 0], "vae": ["1", 2]}},
        })
        label = f"step {step}" + (" (final)" if last else "")
        titles.update({str(i): f"{label}: prompt", str(i + 1): f"{label}: text encode", str(i + 2): f"{label}: sampler",
                       str(i + 3): f"{label}: picture"})
        columns.append((340, [str(i), str(i + 1), str(i + 2), str(i + 3)]))
        decoded.append([str(i + 3), 0])
    left = decoded[0]
    for k, right in enumerate(decoded[1:]):
        node = str(50 + k)
        api[node] = {"class_type": "ImageStitch", "inputs": {"image1": left, "direction": "right",
                                                             "match_image_size": True, "spacing_width": 8,
                                                             "spacing_color": "white", "image2": right}}
        left = [node, 0]
    api["60"] = {"class_type": "SaveImage", "inputs": {"images": left, "filename_prefix": "tokensmith/compare"}}
    titles["60"] = "steps " + ", ".join(map(str, COMPARE_STEPS)) + ", left to right"
    columns.append((420, [*(str(50 + k) for k in range(len(decoded) - 1)), "60"]))
    steps = ", ".join(f"`{name}-step{s:05d}`" for s in COMPARE_STEPS[:-1])
    note = (
        "## Compare snapshots by step\n"
        f"Trains `{name}` for {COMPARE_STEPS[-1]} steps with `save_every` {COMPARE_STEPS[0]} (the snapshots "
        f"{steps}, then the file itself), then makes one picture with each: the same prompt, seed and sampler, "
        "side by side, left to right by step (each column's nodes are titled with its step). Pick the step "
        "that looks right, and use that snapshot's name in your prompts.\n\n"
        "The demo pictures in `ComfyUI/input/tokensmith_demo/` (from `make demo`, or yours) are the training "
        "set. To compare the snapshots of an earlier run instead, type its names into the prompts and delete "
        "the trainer.")
    return Example(COMPARE, api, columns, note, titles)


def example_path(name: str, ext: str = "json") -> Path:
    return EXAMPLES_DIR / f"{name}.{ext}"


def load_example(name: str) -> dict:
    return json.loads(example_path(name).read_text())


# ----------------------------------------------------------------------------------------------
# UI format -> API format


def _widget_inputs(info: dict) -> list[tuple[str, bool]]:
    """(input name, has a control_after_generate widget) for every input the front end draws as a
    widget, in the order the node's widgets_values lists them."""
    out = []
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    for section in ("required", "optional"):
        specs = info.get("input", {}).get(section, {})
        for name in order.get(section, []):
            spec = specs.get(name)
            if spec is None:
                continue
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if opts.get("forceInput"):
                continue
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                control = opts.get("control_after_generate")
                if control is None:
                    control = kind == "INT" and name in ("seed", "noise_seed")
                out.append((name, bool(control)))
    return out


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow (no subgraphs or group nodes; muted and bypassed
    nodes are left out, as the front end does)."""
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    out = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in VIRTUAL_TYPES or node.get("mode", 0) in (2, 4):
            continue
        if kind not in object_info:
            raise KeyError(f"node type {kind!r} (node {node['id']}) is not installed on this server")
        inputs = {}
        values = list(node.get("widgets_values") or [])
        pos = 0
        for name, control in _widget_inputs(object_info[kind]):
            if pos < len(values):
                value = values[pos]
                inputs[name] = {"__value__": value} if isinstance(value, list) else value
            pos += 2 if control else 1
        for slot in node.get("inputs", []):
            link_id = slot.get("link")
            if link_id is None:
                continue
            link = links[link_id]
            origin = nodes.get(link[1])
            if origin is None or origin.get("mode", 0) in (2, 4):
                inputs.pop(slot["name"], None)
                continue
            inputs[slot["name"]] = [str(link[1]), link[2]]
        out[str(node["id"])] = {"class_type": kind, "inputs": inputs, "_meta": {"title": node.get("title") or kind}}
    return out


def set_inputs(api: dict, class_type: str, **values) -> dict:
    """Change widget inputs of every node of one type (a copy is returned)."""
    api = copy.deepcopy(api)
    hits = [n for n in api.values() if n["class_type"] == class_type]
    if not hits:
        raise KeyError(f"no {class_type} node in this workflow")
    for node in hits:
        node["inputs"].update(values)
    return api


# ----------------------------------------------------------------------------------------------
# Building example_workflows/ through the real front end

BUILD_JS = """async ([api, columns, note, name, titles]) => {
  const app = window.app;
  app.loadApiJson(api, name);
  await new Promise((r) => setTimeout(r, 300));
  for (const [id, title] of Object.entries(titles)) {
    const node = app.graph.getNodeById(Number(id));
    if (!node) throw new Error("no node " + id);
    node.title = title;
  }
  for (const node of app.graph._nodes) {
    // examples keep their seeds: the sampler's "randomize" would change it on every queue
    const control = node.widgets?.find((w) => w.name === "control_after_generate");
    if (control) control.value = "fixed";
  }
  let x = 20;
  for (const [width, ids] of columns) {
    let y = 50;
    for (const id of ids) {
      let node;
      if (id === "note") {
        node = LiteGraph.createNode("MarkdownNote") || LiteGraph.createNode("Note");
        node.widgets[0].value = note;
        app.graph.add(node);
        node.setSize([width, 290]);
      } else {
        node = app.graph.getNodeById(Number(id));
        if (!node) throw new Error("no node " + id);
        node.setSize([width, node.computeSize()[1]]);
      }
      node.pos = [x, y];
      y += node.size[1] + 60;
    }
    x += width + 40;
  }
  app.graph.setDirtyCanvas(true, true);
  return JSON.parse(JSON.stringify(app.graph.serialize()));  // drops undefined fields, as Export does
}"""


def fit_view(page) -> None:
    page.evaluate("""() => {
      const canvas = window.app.canvas;
      const nodes = window.app.graph._nodes;
      let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
      for (const n of nodes) {
        x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
        x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
      }
      canvas.ds.fitToBounds([x0 - 20, y0 - 20, x1 - x0 + 40, y1 - y0 + 40], { zoom: 0.98 });
      canvas.setDirty(true, true);
    }""")


def add_model_sources(ui_graph: dict) -> dict:
    """Give each loader node whose file is in MODEL_SOURCES the `models` property naming its source."""
    for node in ui_graph.get("nodes", []):
        files = [v for v in node.get("widgets_values") or [] if isinstance(v, str) and v in MODEL_SOURCES]
        if files:
            node.setdefault("properties", {})["models"] = [{"name": f, **MODEL_SOURCES[f]} for f in files]
    return ui_graph


def build(out_dir: Path = EXAMPLES_DIR, only=None) -> list[Path]:
    """Write every example's (or only the named ones') UI-format JSON and a .jpg screenshot of it (needs
    chromium)."""
    import tempfile

    from .server import ComfyServer

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="tokensmith-build-") as tmp:
        skip_first_visit(Path(tmp))
        with ComfyServer(Path(tmp)) as server, open_browser() as browser:
            page = new_comfy_page(browser, server.url, viewport=(1600, 1000))
            for ex in examples():
                if only and ex.name not in only:
                    continue
                ui_graph = page.evaluate(BUILD_JS, [ex.api, ex.columns, ex.note, ex.name, ex.titles])
                ui_graph.setdefault("extra", {})["tokensmith"] = {"example": ex.name}
                add_model_sources(ui_graph)
                path = out_dir / f"{ex.name}.json"
                path.write_text(json.dumps(ui_graph, indent=1) + "\n")
                thumb = out_dir / f"{ex.name}.jpg"
                screenshot_graph(page, thumb, Path(tmp) / "shot.png")
                written += [path, thumb]
            page.close()
    return written


def screenshot_graph(page, jpg: Path, scratch: Path, max_side: int = 960) -> None:
    """The whole graph, fitted to the window with the side and top bars hidden, as a JPEG."""
    import time

    from PIL import Image

    page.evaluate("() => { const w = window.app.extensionManager; if (!w.focusMode) w.toggleFocusMode?.(); }")
    time.sleep(0.4)
    fit_view(page)
    time.sleep(0.8)
    page.screenshot(path=str(scratch))
    page.evaluate("() => { const w = window.app.extensionManager; if (w.focusMode) w.toggleFocusMode?.(); }")
    with Image.open(scratch) as img:
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side))
        img.save(jpg, quality=85, optimize=True)


# ----------------------------------------------------------------------------------------------
# Headless Chromium (Debian's package; never a downloaded browser)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


class open_browser:
    """`with open_browser() as browser:` a Playwright Chromium context on /usr/bin/chromium with a
    throw-away profile folder (--user-data-dir), headless."""

    def __enter__(self):
        import tempfile

        from playwright.sync_api import sync_playwright

        if not Path(CHROMIUM).exists():
            raise RuntimeError("no /usr/bin/chromium: run `bash scripts/install_browser.sh` (as root)")
        self._profile = tempfile.TemporaryDirectory(prefix="tokensmith-chromium-")
        self._pw = sync_playwright().start()
        try:
            self.context = self._pw.chromium.launch_persistent_context(
                self._profile.name, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900},
            )
        except BaseException:
            self._pw.stop()
            self._profile.cleanup()
            raise
        return self.context

    def __exit__(self, *exc):
        try:
            self.context.close()
        finally:
            self._pw.stop()
            self._profile.cleanup()


def new_comfy_page(context, url: str, viewport=(1400, 900), before=None):
    """A page with the ComfyUI front end loaded, the first-visit dialogs closed; `before(page)` runs
    before the page is opened (e.g. to record its console)."""
    page = context.new_page()
    if before is not None:
        before(page)
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    # the "try Nodes 2.0" banner is remembered in localStorage once dismissed
    page.add_init_script("try { localStorage.setItem('vueNodesBannerDismissed', 'true') } catch (e) {}")
    page.goto(url)
    page.wait_for_function("!!(window.app && window.app.graph && window.app.extensionManager && "
                           "window.LiteGraph && window.LiteGraph.registered_node_types['TokenSmithPrompt'])",
                           timeout=90_000)
    page.evaluate("""async () => {
      const s = window.app.extensionManager.setting;
      for (const [k, v] of [["Comfy.TutorialCompleted", true]]) {
        try { await s.set(k, v); } catch (e) {}
      }
    }""")
    page.keyboard.press("Escape")
    close_dialogs(page)
    return page


# Records the front end's execution and TokenSmith events in window.__tsRecorder (tests).
RECORD_EVENTS = """() => {
  const api = window.comfyAPI.api.api;
  if (window.__tsRecorder) return;
  window.__tsRecorder = [];
  for (const type of ["execution_start", "execution_success", "execution_error", "execution_interrupted",
                      "tokensmith.train"]) {
    api.addEventListener(type, (e) => window.__tsRecorder.push({ type, detail: e.detail }));
  }
}"""


def skip_first_visit(base: Path) -> None:
    """Seed the server's user settings so the first visit opens no template browser over the canvas."""
    settings = Path(base) / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(settings.read_text()) if settings.exists() else {}
    data.setdefault("Comfy.TutorialCompleted", True)
    settings.write_text(json.dumps(data))


# What the front end offers for the models a loaded workflow lacks: newer front ends keep them in
# their `missingModel` store (with the url and folder from the node's `models` property), older
# ones open a "Missing Models" dialog with a Download button.
MISSING_MODELS_JS = """() => {
  const pinia = document.querySelector('#vue-app')?.__vue_app__?.config.globalProperties.$pinia;
  const store = pinia?._s.get('missingModel');
  if (store) return {source: 'store', models: JSON.parse(JSON.stringify(store.missingModelCandidates || []))};
  const dialog = [...document.querySelectorAll('.p-dialog')].find((d) => d.innerText.includes('Missing Models'));
  return dialog ? {source: 'dialog', text: dialog.innerText} : {source: 'none'};
}"""


def close_missing_models_dialog(page) -> None:
    """Close the older front ends' Missing Models dialog, as a person would, when it is open."""
    page.evaluate("""() => {
      for (const d of document.querySelectorAll('.p-dialog')) {
        if (d.innerText.includes('Missing Models')) d.querySelector('.p-dialog-close-button, .p-dialog-header-close')?.click();
      }
    }""")


def close_dialogs(page) -> None:
    page.evaluate("""() => {
      for (const b of document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close')) b.click();
      for (const b of document.querySelectorAll('button')) {
        if (b.closest('[role=banner], .p-toolbar') && b.getAttribute('aria-label') === 'Close') b.click();
      }
    }""")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build"]:
        unknown = set(argv[1:]) - {ex.name for ex in examples()}
        if unknown:
            print(f"no example named {sorted(unknown)}")
            return 2
        for path in build(only=set(argv[1:])):
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
