"""A JSON-able description of an embedding's vectors: what an inspector shows."""

from __future__ import annotations

import math

import torch

from .embedding import ENCODER_WIDTHS, Embedding


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
        usual = ENCODER_WIDTHS.get(enc)
        if usual is not None and s["shape"][1] != usual:
            warnings.append(f"{enc}: {s['shape'][1]} wide, where the {enc} encoders of the families TokenSmith "
                            f"knows take {usual}: only a model of that width uses them")
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


def fmt_number(x) -> str:
    """A statistic as reports print it (``n/a`` for a missing value)."""
    return "n/a" if x is None else f"{x:.4g}"


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _source_lines(src: dict) -> list[str]:
    lines = []
    if src.get("path"):
        lines.append(f"  file: {src['path']} ({human_size(src['size'])}, {src['container']})")
    if src.get("sha256"):
        lines.append(f"  sha256: {src['sha256']}   AutoV2: {src['autov2']}")
    if src.get("note"):
        lines.append(f"  hash: {src['note']}")
    return lines


def _stats_lines(data: dict) -> list[str]:
    f = fmt_number
    lines = []
    for enc, s in data["stats"].items():
        lines.append(f"  {enc}: {s['shape'][0]} x {s['shape'][1]} (stored as {s.get('stored_dtype', s['dtype'])})")
        lines.append(f"    mean {f(s['mean'])}  std {f(s['std'])}  min {f(s['min'])}  max {f(s['max'])}  "
                     f"NaN {s['nan']}  Inf {s['inf']}")
        lines.append("    vector norms: " + " ".join(f(n) for n in s["norms"]))
        for i, v in enumerate(data.get("per_vector", {}).get(enc, [])):
            lines.append(f"    #{i}: norm {f(v['norm'])}  mean {f(v['mean'])}  std {f(v['std'])}  "
                         f"min {f(v['min'])}  max {f(v['max'])}")
    return lines


def _clip_lines(clip: dict) -> list[str]:
    f = fmt_number
    encs = ", ".join(f"{k} {w}" for k, w in clip["encoders"].items())
    lines = [f"  with this CLIP ({clip['family']}: {encs}): {clip['verdict']}"]
    for key, r in clip["per_encoder"].items():
        if r["reads"] is None:
            lines.append(f"    {key} reads nothing")
            continue
        state = "used" if r["used"] else "ignored"
        head = f"    {key} reads {r['reads']} ({r['width']} wide): {state}"
        vocab = r.get("vocabulary_norms")
        if vocab:
            head += f"; vocabulary norm median {f(vocab['median'])} (max {f(vocab['max'])})"
        lines.append(head)
        if r.get("norm_vs_median"):
            lines.append("      norm / median: " + " ".join(f(x) for x in r["norm_vs_median"]))
        for i, row in enumerate(r.get("nearest", [])):
            lines.append(f"      #{i} nearest: " + ", ".join(f"{tok} ({sim:.3f})" for tok, sim in row))
    return lines


def format_report(data: dict) -> str:
    """The text form of an inspect report (``inspect_report`` plus, when known, the file: ``path``,
    ``size``, ``container``, ``sha256``, ``autov2`` at the top or under ``source``; ``per_vector``; and
    the ``clip`` section of the Inspect node). The CLI and the Inspect node both print this."""
    step = "unknown" if data["step"] is None else data["step"]
    lines = [f"{data['name'] or 'unnamed'}",
             f"  format: {data['format']}   family: {data['family']}   vectors: {data['vectors']}   step: {step}"]
    lines += _source_lines(data.get("source", data))
    lines += _stats_lines(data)
    if data["metadata"]:
        lines.append("  metadata:")
        for k, v in sorted(data["metadata"].items()):
            lines.append(f"    {k}: {v if len(v) <= 100 else v[:97] + '...'}")
    lines += [f"  warning: {w}" for w in data["warnings"]]
    if data.get("clip"):
        lines += _clip_lines(data["clip"])
    return "\n".join(lines)
