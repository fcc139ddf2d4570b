"""Merge maths on embeddings: sums, means, concatenation, slerp, scaling and reshaping.

Every public function works in fp32 on CPU copies and returns a new :class:`Embedding`; inputs
are never mutated. Operands must share the same encoders with the same widths, otherwise
:class:`FamilyMismatchError` is raised.

Conventions:

- Shorter operands are zero-padded at the end to the longest vector count (as in the
  embedding-merge and embedding-inspector extensions), so ``mean`` of a 2-vector and a 1-vector
  embedding halves the second row.
- n-ary results (``weighted_sum``, ``mean``, ``concat``, ``slerp``) get an empty name and no
  metadata; the caller names them. Unary results keep the input's name, metadata and step.
- ``collapse`` turns all vectors into one: the direction of their sum, rescaled to their mean
  norm. A plain sum grows with the vector count and a plain mean shrinks when vectors disagree;
  this keeps a typical token magnitude, which is what a prompt slot expects.

The ``*_rows`` helpers work on ``{encoder: tensor [n, d]}`` dicts that may have zero rows; the
expression evaluator builds on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .embedding import MAX_VECTORS, Embedding
from .errors import FamilyMismatchError, TokenSmithError

# Which encoder a one-sided operation may target.
SIDE_ENCODERS = ("clip_l", "clip_g")

# Below this cosine distance from +-1 two directions count as parallel for slerp.
_PARALLEL_EPS = 1e-6


Rows = dict[str, torch.Tensor]


# ---------------------------------------------------------------- row-level helpers


def describe_rows(rows: Mapping[str, torch.Tensor]) -> str:
    """A short text like ``clip_l[2x768] + clip_g[2x1280]`` for error messages."""
    return " + ".join(f"{k}[{t.shape[0]}x{t.shape[1]}]" for k, t in rows.items())


def check_same_family(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], what: str = "operands") -> None:
    """Raise FamilyMismatchError unless both have the same encoders with the same widths."""
    if set(a) != set(b) or any(a[k].shape[1] != b[k].shape[1] for k in a):
        raise FamilyMismatchError(
            f"cannot combine {what} of different families: {describe_rows(a)} vs {describe_rows(b)}; "
            "use embeddings made for the same model family (convert one first if needed)"
        )


def pad_rows(rows: Mapping[str, torch.Tensor], n: int) -> Rows:
    """Crop or zero-pad every encoder's tensor to ``n`` rows (n >= 0)."""
    out = {}
    for k, t in rows.items():
        if t.shape[0] >= n:
            out[k] = t[:n].clone()
        else:
            pad = torch.zeros(n - t.shape[0], t.shape[1], dtype=t.dtype)
            out[k] = torch.cat([t, pad], dim=0)
    return out


def add_rows(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], sign: float = 1.0) -> Rows:
    """``a + sign * b`` with the shorter side zero-padded."""
    check_same_family(a, b)
    n = max(_count(a), _count(b))
    pa, pb = pad_rows(a, n), pad_rows(b, n)
    return {k: pa[k] + sign * pb[k] for k in pa}


def scale_rows(rows: Mapping[str, torch.Tensor], factor: float, encoder: str | None = None) -> Rows:
    """Multiply every vector (or only ``encoder``'s) by ``factor``."""
    _check_finite(factor, "scale factor")
    if encoder is not None and encoder not in rows:
        raise TokenSmithError(
            f"cannot scale only {encoder!r}: this embedding has {', '.join(rows)}; "
            "one-sided scaling needs an embedding with that encoder (e.g. SDXL for clip_l/clip_g)"
        )
    return {k: (t * factor if encoder is None or k == encoder else t.clone()) for k, t in rows.items()}


def roll_rows(rows: Mapping[str, torch.Tensor], shift: int) -> Rows:
    """Circularly shift the vectors: +1 moves vector i to i+1 and the last one to the front."""
    return {k: (torch.roll(t, shifts=int(shift), dims=0) if t.shape[0] else t.clone()) for k, t in rows.items()}


def concat_rows(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Rows:
    """``a``'s vectors followed by ``b``'s."""
    check_same_family(a, b)
    return {k: torch.cat([a[k], b[k]], dim=0) for k in a}


def _count(rows: Mapping[str, torch.Tensor]) -> int:
    return next(iter(rows.values())).shape[0]


def _check_finite(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TokenSmithError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise TokenSmithError(f"{what} must be a finite number, got {value!r}")
    return value


def _check_count(n: int, what: str = "vector count") -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TokenSmithError(f"{what} must be a whole number, got {n!r}")
    if n < 1:
        raise TokenSmithError(f"{what} must be at least 1, got {n}: an embedding needs at least one vector")
    if n > MAX_VECTORS:
        raise TokenSmithError(f"{what} {n} is over the limit of {MAX_VECTORS} vectors (one prompt chunk)")
    return n


def _operands(embs: Sequence[Embedding]) -> list[Rows]:
    if not embs:
        raise TokenSmithError("nothing to merge: give at least one embedding")
    rows = [e.float_vectors() for e in embs]
    first = embs[0].name or "unnamed"
    for i, r in enumerate(rows[1:], start=2):
        other = embs[i - 1].name or "unnamed"
        check_same_family(rows[0], r, what=f"embedding 1 ({first}) and embedding {i} ({other})")
    return rows


def _new(rows: Rows) -> Embedding:
    return Embedding(vectors=rows)


def _unary(emb: Embedding, rows: Rows) -> Embedding:
    return emb.with_vectors(rows)


# ---------------------------------------------------------------- public operations


def weighted_sum(embs: Sequence[Embedding], weights: Sequence[float]) -> Embedding:
    """``sum(w_i * e_i)``, every operand zero-padded to the longest vector count."""
    if len(embs) != len(weights):
        raise TokenSmithError(f"got {len(embs)} embeddings but {len(weights)} weights; give one weight each")
    rows = _operands(embs)
    ws = [_check_finite(w, f"weight {i + 1}") for i, w in enumerate(weights)]
    n = max(_count(r) for r in rows)
    out = {k: torch.zeros(n, t.shape[1], dtype=torch.float32) for k, t in rows[0].items()}
    for r, w in zip(rows, ws, strict=True):
        padded = pad_rows(r, n)
        for k in out:
            out[k] += w * padded[k]
    return _new(out)


def mean(embs: Sequence[Embedding]) -> Embedding:
    """The zero-padded average of the embeddings."""
    if not embs:
        raise TokenSmithError("nothing to average: give at least one embedding")
    return weighted_sum(embs, [1.0 / len(embs)] * len(embs))


def concat(embs: Sequence[Embedding]) -> Embedding:
    """All vectors one after another (at most MAX_VECTORS in total)."""
    rows = _operands(embs)
    total = sum(_count(r) for r in rows)
    if total > MAX_VECTORS:
        raise TokenSmithError(
            f"concatenation gives {total} vectors, over the limit of {MAX_VECTORS}; crop some inputs first"
        )
    return _new({k: torch.cat([r[k] for r in rows], dim=0) for k in rows[0]})


def _slerp_rows(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Row-wise slerp of directions with a linear blend of norms; lerp where undefined."""
    na = a.norm(dim=1, keepdim=True)
    nb = b.norm(dim=1, keepdim=True)
    lerp = (1.0 - t) * a + t * b
    ua = a / na.clamp_min(1e-30)
    ub = b / nb.clamp_min(1e-30)
    cos = (ua * ub).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    # Parallel/antiparallel rows or zero rows have no unique great circle: fall back to lerp there.
    degenerate = (sin.abs() < _PARALLEL_EPS) | (na == 0) | (nb == 0)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    direction = (torch.sin((1.0 - t) * theta) * ua + torch.sin(t * theta) * ub) / safe_sin
    slerped = direction * ((1.0 - t) * na + t * nb)
    return torch.where(degenerate, lerp, slerped)


def slerp(a: Embedding, b: Embedding, t: float) -> Embedding:
    """Spherical interpolation per vector row and per encoder.

    The direction moves along the great circle between the two rows while the norm moves linearly
    from ``|a_i|`` to ``|b_i|``. Rows that are parallel, antiparallel or zero (including rows added
    by zero-padding the shorter operand) are linearly interpolated instead. ``t=0`` gives ``a``,
    ``t=1`` gives ``b``; values outside [0, 1] extrapolate.
    """
    t = _check_finite(t, "slerp t")
    ra, rb = _operands([a, b])
    n = max(_count(ra), _count(rb))
    pa, pb = pad_rows(ra, n), pad_rows(rb, n)
    return _new({k: _slerp_rows(pa[k], pb[k], t) for k in pa})


def _encoder_for(emb: Embedding, encoder: str | None) -> str | None:
    if encoder is None:
        return None
    if encoder not in emb.vectors:
        raise TokenSmithError(
            f"cannot scale only {encoder!r}: {emb.name or 'this embedding'} has {', '.join(emb.vectors)}; "
            "pass encoder=None to scale all of it"
        )
    return encoder


def scale(emb: Embedding, factor: float, encoder: str | None = None) -> Embedding:
    """Multiply the vectors by ``factor``; ``encoder`` (e.g. "clip_l" or "clip_g") limits it to one side."""
    return _unary(emb, scale_rows(emb.float_vectors(), factor, _encoder_for(emb, encoder)))


def match_norm(emb: Embedding, target: float | Mapping[str, float]) -> Embedding:
    """Rescale every vector to L2 norm ``target``.

    ``target`` is one number for all encoders or ``{encoder: norm}``; encoders missing from the dict
    are left as they are. Zero vectors have no direction and stay zero.
    """
    rows = emb.float_vectors()
    if isinstance(target, Mapping):
        unknown = [k for k in target if k not in rows]
        if unknown:
            raise TokenSmithError(
                f"norm targets for {unknown} but the embedding has only {list(rows)}; use its encoder names"
            )
        targets = {k: _check_finite(v, f"target norm for {k}") for k, v in target.items()}
    else:
        value = _check_finite(target, "target norm")
        targets = dict.fromkeys(rows, value)
    for k, value in targets.items():
        if value < 0:
            raise TokenSmithError(f"target norm for {k} must be >= 0, got {value}")
        t = rows[k]
        norms = t.norm(dim=1, keepdim=True)
        rows[k] = torch.where(norms > 0, t * (value / norms.clamp_min(1e-30)), t)
    return _unary(emb, rows)


def crop_or_pad(emb: Embedding, n: int) -> Embedding:
    """Keep the first ``n`` vectors, or append zero vectors up to ``n``."""
    return _unary(emb, pad_rows(emb.float_vectors(), _check_count(n)))


def roll(emb: Embedding, shift: int) -> Embedding:
    """Circular shift along the vector axis (+1: vector i moves to i+1, the last wraps to the front)."""
    if isinstance(shift, bool) or not isinstance(shift, int):
        raise TokenSmithError(f"roll shift must be a whole number, got {shift!r}")
    return _unary(emb, roll_rows(emb.float_vectors(), shift))


def collapse(emb: Embedding) -> Embedding:
    """One vector per encoder: the direction of the vectors' sum, rescaled to their mean norm.

    When the vectors cancel out exactly (zero sum) the result is the zero vector, which is their mean.
    """
    out = {}
    for k, t in emb.float_vectors().items():
        total = t.sum(dim=0, keepdim=True)
        norm = total.norm()
        mean_norm = t.norm(dim=1).mean()
        out[k] = total * (mean_norm / norm) if norm > 0 else torch.zeros_like(total)
    return _unary(emb, out)


def norms(emb: Embedding) -> dict[str, list[float]]:
    """The L2 norm of every vector, per encoder."""
    return {k: t.norm(dim=1).tolist() for k, t in emb.float_vectors().items()}
