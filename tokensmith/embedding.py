"""The in-memory embedding: learned vectors per text encoder, plus what is known about them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import FamilyMismatchError, TokenSmithError

# ComfyUI's names for the text encoders an embedding can target (each tokenizer's `embedding_key`, the
# key it loads from an embedding file) with their input widths (its `embedding_size`). Checked against
# ComfyUI v0.3.75 and v0.33.0: sd1_clip.SDTokenizer (clip_l, sd1_clip_config.json hidden_size 768),
# text_encoders/sd2_clip.py (clip_h, sd2_clip_config.json 1024), sdxl_clip.py (clip_g,
# clip_config_bigg.json 1280), text_encoders/sd3_clip.py and flux.py (t5xxl, t5_config_xxl.json
# d_model 4096), z_image.py (qwen3_4b, llama.Qwen3_4BConfig 2560), qwen_image.py (qwen25_7b,
# llama.Qwen25_7BVLI_Config 3584), lumina2.py (gemma2_2b, llama.Gemma2_2B_Config 2304).
# Widths are not unique across ComfyUI (T5-XXL, UMT5-XXL, Llama and Qwen3-8B are all 4096 wide;
# Gemma3-4B is 2560 like Qwen3-4B): a named key decides; the width only labels files without one.
ENCODER_WIDTHS: dict[str, int] = {
    "clip_l": 768, "clip_h": 1024, "clip_g": 1280, "t5xxl": 4096,
    "qwen3_4b": 2560, "qwen25_7b": 3584, "gemma2_2b": 2304,
}
WIDTH_TO_ENCODER: dict[int, str] = {w: k for k, w in ENCODER_WIDTHS.items()}
# The CLIP encoders whose single-encoder files are written as `emb_params` (what A1111 and kohya read);
# every other encoder's vectors are written under their own key.
CLIP_ENCODERS = ("clip_l", "clip_h", "clip_g")

# Which set of encoders makes which model family.
FAMILY_ENCODERS: dict[str, tuple[str, ...]] = {
    "sd1": ("clip_l",),
    "sd2": ("clip_h",),
    "sdxl": ("clip_l", "clip_g"),
    "sdxl_g": ("clip_g",),
    "sd3": ("clip_l", "clip_g", "t5xxl"),
    "flux": ("clip_l", "t5xxl"),
    "chroma": ("t5xxl",),
    "zimage": ("qwen3_4b",),
    "qwen_image": ("qwen25_7b",),
    "lumina2": ("gemma2_2b",),
}
FAMILIES: dict[frozenset[str], str] = {frozenset(keys): fam for fam, keys in FAMILY_ENCODERS.items()}
# How reports name a family.
FAMILY_NAMES: dict[str, str] = {
    "sd1": "SD1.5", "sd2": "SD2", "sdxl": "SDXL", "sdxl_g": "SDXL (G only)", "sd3": "SD3",
    "flux": "Flux.1", "chroma": "Chroma (T5)", "zimage": "Z-Image", "qwen_image": "Qwen-Image",
    "lumina2": "Lumina 2",
}
MAX_VECTORS = 75  # one CLIP chunk has 75 usable slots


def family_of(encoders) -> str:
    """The family name for a set of encoder keys ('unknown' when no family matches)."""
    return FAMILIES.get(frozenset(encoders), "unknown")


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)


def canonical_order(keys) -> list[str]:
    """Encoder keys in TokenSmith's order (that of ENCODER_WIDTHS), unknown keys last."""
    order = list(ENCODER_WIDTHS)
    return sorted(keys, key=lambda k: order.index(k) if k in order else len(order))


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
