"""Conversions between the SD1 (clip_l), SDXL (clip_l + clip_g) and SD3 (clip_l + clip_g + t5xxl) layouts,
as pure functions."""

from __future__ import annotations

import torch

from .embedding import ENCODER_WIDTHS, Embedding, family_name
from .errors import FamilyMismatchError


def to_sdxl(emb: Embedding, g_vectors: torch.Tensor | None = None) -> Embedding:
    """An SDXL embedding from an SD1 one: its vectors on the L side, ``g_vectors`` (default zeros,
    ``[n, 1280]``) on the G side. An SDXL embedding is returned as a copy, an SD3 one without its T5 side."""
    if emb.family in ("sdxl", "sd3"):  # SD3: its CLIP sides (the T5 vectors are dropped)
        vec = emb.float_vectors()
        return emb.with_vectors({"clip_l": vec["clip_l"], "clip_g": vec["clip_g"]})
    if emb.family != "sd1":
        raise FamilyMismatchError(f"only an SD1 (clip_l) embedding can become SDXL; {emb.name!r} is {emb.family} "
                                  f"({', '.join(emb.encoders)})")
    l_vec = emb.float_vectors()["clip_l"]
    n, width = l_vec.shape[0], ENCODER_WIDTHS["clip_g"]
    if g_vectors is None:
        g = torch.zeros(n, width)
    else:
        g = g_vectors.detach().to(device="cpu", dtype=torch.float32)
        if g.dim() == 1:
            g = g.unsqueeze(0)
        if tuple(g.shape) != (n, width):
            raise FamilyMismatchError(f"G vectors must have shape [{n}, {width}] to pair with {n} L vectors; "
                                      f"got {list(g.shape)}")
        g = g.clone()
    return emb.with_vectors({"clip_l": l_vec, "clip_g": g})


def to_sd1(emb: Embedding) -> Embedding:
    """An SD1 embedding: the L side of an SDXL, SD3 or Flux.1 one (an SD1 embedding is returned as a copy)."""
    if "clip_l" not in emb.vectors:
        raise FamilyMismatchError(f"only embeddings with clip_l vectors (SD1, SDXL, SD3, Flux.1) have an SD1 side; "
                                  f"{emb.name!r} is {emb.family} ({', '.join(emb.encoders)})")
    return emb.with_vectors({"clip_l": emb.float_vectors()["clip_l"]})


# Families an SD3 embedding can be made from, and why the others cannot.
_SD3_KEYS = ("clip_l", "clip_g", "t5xxl")


def _sd3_refusal(emb: Embedding) -> str:
    keys = ", ".join(emb.encoders)
    if emb.family == "sd2":
        why = ("SD2's clip_h vectors (1024 wide, CLIP-H) have no counterpart among SD3's encoders (clip_l 768, "
               "clip_g 1280, t5xxl 4096)")
    elif "clip_l" not in emb.vectors and "clip_g" not in emb.vectors:
        why = (f"it has no CLIP-L or CLIP-G vectors, and vectors made for {keys} mean nothing to SD3's CLIP "
               "encoders (a text encoder's input vectors only work in that encoder)")
    else:
        why = f"its {keys} do not map onto SD3's clip_l + clip_g + t5xxl"
    return (f"{emb.name or 'this embedding'!r} is {family_name(emb.family)} ({keys}) and cannot become SD3: {why}. "
            "Train an embedding on the SD3 checkpoint instead.")


def to_sd3(emb: Embedding, t5_vectors: torch.Tensor | None = None) -> Embedding:
    """An SD3 embedding (clip_l + clip_g + t5xxl) from an SDXL, SD1 or Flux.1 one: the vectors it has are
    kept, the missing sides are zeros (``t5_vectors`` ``[n, 4096]`` instead of zero T5 vectors). Zero
    vectors keep every encoder on its own key, so none falls back to another encoder's vectors (ComfyUI
    gives an encoder whose key a file lacks the file's first tensor). An SD3 embedding is returned as a copy."""
    if emb.family == "sd3":
        return emb.with_vectors(emb.float_vectors())
    if emb.family not in ("sd1", "sdxl", "flux"):
        raise FamilyMismatchError(_sd3_refusal(emb))
    vec = emb.float_vectors()
    n = emb.num_vectors
    out = {}
    for key in _SD3_KEYS:
        given = t5_vectors if key == "t5xxl" and key not in vec else None
        if key in vec:
            out[key] = vec[key]
        elif given is not None:
            out[key] = _checked_rows(given, n, key)
        else:
            out[key] = torch.zeros(n, ENCODER_WIDTHS[key])
    return emb.with_vectors(out)


def _checked_rows(t: torch.Tensor, n: int, key: str) -> torch.Tensor:
    t = t.detach().to(device="cpu", dtype=torch.float32)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    width = ENCODER_WIDTHS[key]
    if tuple(t.shape) != (n, width):
        raise FamilyMismatchError(f"{key} vectors must have shape [{n}, {width}] to pair with {n} vectors; "
                                  f"got {list(t.shape)}")
    return t.clone()


_CONVERSIONS = {"sd1": to_sd1, "sdxl": to_sdxl, "sd3": to_sd3}
CONVERT_TARGETS = tuple(_CONVERSIONS)


def convert_to(emb: Embedding, target: str) -> Embedding:
    """The embedding in the layout of ``target`` (one of CONVERT_TARGETS), missing sides zero."""
    if target not in _CONVERSIONS:
        raise FamilyMismatchError(f"unknown conversion target {target!r}; use one of {', '.join(CONVERT_TARGETS)}")
    return _CONVERSIONS[target](emb)
