"""Training prompts: template presets, `[name]` / `[filewords]` substitution, caption tag shuffle/dropout.

`[name]` marks where the trainable vectors go; `[filewords]` is replaced by the image's caption.
Preset lists are short descriptions in the spirit of the textual-inversion paper's object and
style prompts (written for TokenSmith). The object and style presets end in `, [filewords]` (as
A1111's subject_filewords / style_filewords do): with a caption a prompt reads "a photo of
[name], CAPTION", and without one `render` drops the empty part, so the prompt is the bare line.
"""

from __future__ import annotations

import random

from .errors import TrainingError

OBJECT_TEMPLATES = [
    "a photo of [name]",
    "a close-up photo of [name]",
    "a bright photo of [name]",
    "a dark photo of [name]",
    "a cropped photo of [name]",
    "a good photo of [name]",
    "a photo of one [name]",
    "a rendition of [name]",
    "a picture of [name]",
    "a clean photo of [name]",
    "a small [name] in a photo",
    "a large [name] in a photo",
]

STYLE_TEMPLATES = [
    "a painting in the style of [name]",
    "a picture in the style of [name]",
    "an illustration in the style of [name]",
    "a rendering in the style of [name]",
    "a cropped painting in the style of [name]",
    "a good painting in the style of [name]",
    "a bright picture in the style of [name]",
    "a dark picture in the style of [name]",
    "a close-up painting in the style of [name]",
    "art in the style of [name]",
]

# For negative embeddings the concept is the whole picture: the caption, if any, plus the vectors.
NEGATIVE_TEMPLATES = ["[name]", "[filewords], [name]"]

FILEWORDS = "[filewords]"


def with_filewords(lines: list[str]) -> list[str]:
    """Template lines with the caption after them ("a photo of [name]" -> "a photo of [name], [filewords]")."""
    return [line if FILEWORDS in line else f"{line}, {FILEWORDS}" for line in lines]


PRESETS = {"object": with_filewords(OBJECT_TEMPLATES), "style": with_filewords(STYLE_TEMPLATES),
           "negative": NEGATIVE_TEMPLATES}
MAX_TEMPLATE_LINES = 1000
MAX_LINE_LENGTH = 2000


def template_lines(preset: str, custom: str = "") -> list[str]:
    """The template list for a preset name, or the custom text's non-empty lines when preset is 'custom'."""
    if preset == "custom":
        if len(custom) > MAX_TEMPLATE_LINES * MAX_LINE_LENGTH:
            raise TrainingError("the custom template is too long")
        lines = [line.strip() for line in custom.splitlines() if line.strip()]
        if not lines:
            raise TrainingError("the custom template is empty: write one prompt per line, with [name] where the keyword goes")
        if len(lines) > MAX_TEMPLATE_LINES:
            raise TrainingError(f"the custom template has {len(lines)} lines; at most {MAX_TEMPLATE_LINES}")
        missing = [line for line in lines if "[name]" not in line]
        if missing:
            raise TrainingError(f"every template line needs [name] (where the embedding goes); this one has none: {missing[0]!r}")
        return lines
    if preset not in PRESETS:
        raise TrainingError(f"unknown template preset {preset!r}; choose one of {sorted(PRESETS)} or 'custom'")
    return list(PRESETS[preset])


def split_captions(text: str, count: int) -> list[str]:
    """One caption per image from one-line-per-image text (a single line is used for every image)."""
    lines = [line.strip() for line in (text or "").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return [""] * count
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise TrainingError(f"got {len(lines)} caption lines for {count} images: give one line per image, or one line for all")
    return lines


def shape_caption(caption: str, rng: random.Random, shuffle: bool, dropout: float, keep_first: int = 0) -> str:
    """Comma-separated tags shuffled and/or dropped (the first keep_first tags stay in place)."""
    if not caption or (not shuffle and dropout <= 0):
        return caption
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    head, tail = tags[:keep_first], tags[keep_first:]
    if dropout > 0:
        tail = [t for t in tail if rng.random() >= dropout]
    if shuffle:
        rng.shuffle(tail)
    return ", ".join(head + tail)


def render(template: str, caption: str) -> str:
    """A prompt from a template line: [filewords] becomes the caption; [name] stays for the vectors."""
    text = template.replace("[filewords]", caption)
    # tidy what an empty caption leaves behind (", ," or a leading comma)
    parts = [p.strip() for p in text.split(",")]
    return ", ".join(p for p in parts if p)


def ignored_captions_warning(lines: list[str], captions: list[str]) -> str:
    """What to tell the user when captions are given but no template line has [filewords] ('' otherwise)."""
    given = sum(1 for c in captions if c.strip())
    if not given or any(FILEWORDS in line for line in lines):
        return ""
    what = "caption is" if given == 1 else f"{given} captions are"
    return (f"the template has no [filewords], so the {what} not used in training: add [filewords] to the "
            "template lines (e.g. 'a photo of [name], [filewords]'), or choose the object or style preset")


# Families sampled without CFG, where a negative prompt (and so a negative embedding) changes nothing
_NO_NEGATIVE = {
    "flux": "Flux.1 dev and schnell are guidance-distilled and sample at CFG 1, where the negative prompt is "
            "not used: a negative embedding trained here has no effect on them",
    "zimage": "Z-Image Turbo samples at CFG 1, where the negative prompt is not used: a negative embedding "
              "works on the Z-Image base model (CFG above 1) only",
}


def negative_embedding_note(template: str, family: str) -> str:
    """What to tell the user who trains a negative embedding for a family whose usual sampling ignores the
    negative prompt ('' otherwise)."""
    if template != "negative" or family not in _NO_NEGATIVE:
        return ""
    return _NO_NEGATIVE[family] + " (use it with a CFG above 1, or train an object or style embedding)"
