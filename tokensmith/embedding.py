"""The in-memory embedding: learned vectors per text encoder, plus what is known about them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import FamilyMismatchError, TokenSmithError

# ComfyUI's names for the text encoders an embedding can target, with their input widths.
ENCODER_WIDTHS: dict[str, int] = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280, "t5xxl": 4096}
WIDTH_TO_ENCODER: dict[int, str] = {w: k for k, w in ENCODER_WIDTHS.items()}

# Which set of encoders makes which model family.
FAMILIES: dict[frozenset[str], str] = {
    frozenset({"clip_l"}): "sd1",
    frozenset({"clip_h"}): "sd2",
    frozenset({"clip_l", "clip_g"}): "sdxl",
    frozenset({"clip_g"}): "sdxl_g",
    frozenset({"t5xxl"}): "t5",
}
FAMILY_ENCODERS: dict[str, tuple[str, ...]] = {
    "sd1": ("clip_l",),
    "sd2": ("clip_h",),
    "sdxl": ("clip_l", "clip_g"),
    "sdxl_g": ("clip_g",),
    "t5": ("t5xxl",),
}
MAX_VECTORS = 75  # one CLIP chunk has 75 usable slots


def family_of(encoders) -> str:
    """The family name for a set of encoder keys ('unknown' when no family matches)."""
    return FAMILIES.get(frozenset(encoders), "unknown")


@dataclass
class Embedding:
    """Vectors per encoder (``{"clip_l": [n, 768], ...}``, float, CPU) and what we know of them."""

    vectors: dict[str, torch.Tensor]
    name: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    source_format: str = "tokensmith"
    step: int | None = None

    def __post_init__(self):
        if not self.vectors:
            raise TokenSmithError("an embedding needs at least one encoder's vectors")
        fixed = {}
        for key, tensor in self.vectors.items():
            if not isinstance(tensor, torch.Tensor):
                raise TokenSmithError(f"vectors for {key!r} are not a tensor")
            t = tensor.detach()
            if t.dim() == 1:
                t = t.unsqueeze(0)
            if t.dim() != 2 or t.shape[0] < 1:
                raise TokenSmithError(f"vectors for {key!r} have shape {list(tensor.shape)}; expected [n, width]")
            fixed[key] = t
        counts = {t.shape[0] for t in fixed.values()}
        if len(counts) != 1:
            shapes = {k: list(t.shape) for k, t in fixed.items()}
            raise FamilyMismatchError(f"every encoder needs the same number of vectors, got {shapes}")
        self.vectors = fixed

    @property
    def encoders(self) -> tuple[str, ...]:
        return tuple(self.vectors)

    @property
    def family(self) -> str:
        return family_of(self.vectors)

    @property
    def num_vectors(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def shapes(self) -> dict[str, list[int]]:
        return {k: list(t.shape) for k, t in self.vectors.items()}

    def with_vectors(self, vectors: dict[str, torch.Tensor], **changes) -> Embedding:
        """A copy with new vectors (and optionally other fields changed); metadata is copied."""
        fields = {
            "name": self.name,
            "metadata": dict(self.metadata),
            "source_format": self.source_format,
            "step": self.step,
        }
        fields.update(changes)
        return Embedding(vectors=vectors, **fields)

    def float_vectors(self) -> dict[str, torch.Tensor]:
        """fp32 CPU copies, the form every merge and writer works in."""
        return {k: t.to(device="cpu", dtype=torch.float32).clone() for k, t in self.vectors.items()}
