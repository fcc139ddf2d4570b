"""Using an embedding in a prompt: the `embedding:NAME` text for a file, with a prompt weight."""

from __future__ import annotations

from .errors import EmbeddingNameError, TokenSmithError
from .names import validate_name

PREFIX = "embedding:"
# The extensions ComfyUI's `embedding:NAME` look-up tries after the bare name (comfy/sd1_clip.py load_embed).
LOOKUP_EXTENSIONS = (".safetensors", ".pt", ".bin")


def keyword_of_file(file: str) -> str:
    """The name to write after `embedding:` for a file ComfyUI lists ('sub/x.safetensors' -> 'sub/x').

    A name ComfyUI's prompt parser cannot carry (spaces, brackets, colons...) is refused with
    EmbeddingNameError saying to rename the file."""
    if not isinstance(file, str) or not file:
        raise EmbeddingNameError("no embedding picked")
    name = file.replace("\\", "/")
    for ext in LOOKUP_EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    try:
        return validate_name(name)
    except EmbeddingNameError as exc:
        raise EmbeddingNameError(f"the file {file!r} cannot be named in a prompt ({exc}); rename the file") from None


def format_weight(weight: float) -> str:
    # adding 0.0 turns a negative zero (from -0.0 or rounding a tiny negative) into 0, never "-0"
    return f"{round(float(weight), 3) + 0.0:g}"


def prompt_reference(name: str, weight: float = 1.0) -> str:
    """`embedding:NAME`, or `(embedding:NAME:W)` for a weight other than 1 (ComfyUI's prompt weighting:
    the encoder's output for those tokens moves away from the empty prompt's by W; the vectors are not
    scaled)."""
    name = validate_name(name)
    weight = float(weight)
    if not weight >= 0 or weight == float("inf"):
        raise TokenSmithError(f"the weight must be a number of 0 or more, got {weight!r}")
    if format_weight(weight) == "1":
        return PREFIX + name
    return f"({PREFIX}{name}:{format_weight(weight)})"
