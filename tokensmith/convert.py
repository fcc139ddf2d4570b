"""Conversions between the SD1 (clip_l) and SDXL (clip_l + clip_g) layouts, as pure functions."""

from __future__ import annotations

import torch

from .embedding import ENCODER_WIDTHS, Embedding
from .errors import FamilyMismatchError


def to_sdxl(emb: Embedding, g_vectors: torch.Tensor | None = None) -> Embedding:
    """An SDXL embedding from an SD1 one: its vectors on the L side, ``g_vectors`` (default zeros,
    ``[n, 1280]``) on the G side. An SDXL embedding is returned as a copy."""
    if emb.family == "sdxl":
        return emb.with_vectors(emb.float_vectors())
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
    """An SD1 embedding: the L side of an SDXL one (an SD1 embedding is returned as a copy)."""
    if emb.family not in ("sd1", "sdxl"):
        raise FamilyMismatchError(f"only SDXL or SD1 embeddings have SD1 (clip_l) vectors; {emb.name!r} is "
                                  f"{emb.family} ({', '.join(emb.encoders)})")
    return emb.with_vectors({"clip_l": emb.float_vectors()["clip_l"]})
