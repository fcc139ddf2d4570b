"""A JSON-able description of an embedding's vectors: what an inspector shows."""

from __future__ import annotations

import math

import torch

from .embedding import Embedding


def _num(x: float) -> float | None:
    """A JSON-safe float (None for NaN/Inf, which JSON cannot carry)."""
    x = float(x)
    return x if math.isfinite(x) else None


def encoder_stats(t: torch.Tensor) -> dict:
    """Per-encoder statistics; mean/std/min/max over the finite values only."""
    t64 = t.detach().to(device="cpu", dtype=torch.float64)
    finite = torch.isfinite(t64)
    vals = t64[finite]
    norms = [_num(v) for v in torch.linalg.vector_norm(t64, dim=-1).tolist()]
    return {
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "norms": norms,
        "mean": _num(vals.mean()) if vals.numel() else None,
        "std": _num(vals.std(correction=0)) if vals.numel() else None,
        "min": _num(vals.min()) if vals.numel() else None,
        "max": _num(vals.max()) if vals.numel() else None,
        "nan": int(torch.isnan(t64).sum()),
        "inf": int(torch.isinf(t64).sum()),
        "zero_vectors": int((t64 == 0).all(dim=-1).sum()),
    }


def inspect_report(emb: Embedding) -> dict:
    """``{"name", "format", "family", "step", "vectors", "encoders": {enc: [n, d]}, "metadata",
    "stats": {enc: {dtype, shape, norms, mean, std, min, max, nan, inf, zero_vectors}}, "warnings"}``."""
    stats = {enc: encoder_stats(t) for enc, t in emb.vectors.items()}
    warnings = []
    for enc, s in stats.items():
        if s["nan"] or s["inf"]:
            warnings.append(f"{enc}: {s['nan']} NaN and {s['inf']} Inf values; this embedding is broken "
                            "(it cannot be saved; use an earlier snapshot)")
        if s["zero_vectors"]:
            warnings.append(f"{enc}: {s['zero_vectors']} all-zero vector(s)")
    return {
        "name": emb.name,
        "format": emb.source_format,
        "family": emb.family,
        "step": emb.step,
        "vectors": emb.num_vectors,
        "encoders": emb.shapes(),
        "metadata": dict(emb.metadata),
        "stats": stats,
        "warnings": warnings,
    }
