"""What ComfyUI feeds each text encoder of a CLIP from one embedding file: the one place for these rules
(the Inspect verdict and the Prompt node's warnings both come from here).

For ``embedding:NAME`` every tokenizer of the CLIP loads the file itself, asking for its own
``embedding_key`` (clip_l, clip_g, t5xxl, qwen3_4b, ...). ``comfy/sd1_clip.py`` ``load_embed`` (the same
in ComfyUI v0.3.75 and v0.33.0) then takes, in this order:

1. an A1111 file's ``string_to_param`` tensor;
2. the tensor under the encoder's own key;
3. a LoRA's bundled ``bundle_emb.*`` tensors;
4. otherwise the file's FIRST tensor (safetensors: the one stored first, which for same-dtype tensors
   written by safetensors is the first by name, so clip_g before clip_l before t5xxl; pickles: their
   dictionary order).

So a one-tensor file (``emb_params``, diffusers, A1111) goes to every encoder, and a file that lacks an
encoder's key gives that encoder another encoder's vectors: an SDXL file (clip_l + clip_g) on SD3 puts
its clip_g rows on the T5 side, an SD1 file puts its 768-wide rows on the G side. Vectors whose width
differs from the encoder's are dropped when encoding (``WARNING: shape mismatch when trying to apply
embedding, embedding will be ignored``); vectors of the same width but made for another encoder are used,
and mean nothing there. A tokenizer built without an embeddings folder never looks ``embedding:`` words up:
they are read as plain text. Qwen-Image's qwen25_7b and Lumina 2's gemma2_2b tokenizers are built so in
v0.3.75 and v0.33.0, Z-Image's qwen3_4b in v0.3.75 (v0.33.0 passes the folder); the adapter reads this
from the live tokenizer (``Slot.looks_up``), never from a list. An encoder the CLIP did not load (SD3
without T5) reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .embedding import family_name, family_of


@dataclass(frozen=True)
class Slot:
    """One text encoder of a CLIP as ComfyUI's tokenizer sees embeddings."""

    key: str  # the tokenizer's embedding_key
    width: int  # the tokenizer's embedding_size
    looks_up: bool = True  # the tokenizer has an embeddings folder (else `embedding:` is plain text)
    loaded: bool = True  # the CLIP holds this encoder's model (SD3's T5 is optional)


@dataclass(frozen=True)
class Reading:
    """What one encoder gets: the file's vectors under ``reads`` (None: nothing is read)."""

    key: str
    needs: int
    reads: str | None
    width: int | None
    used: bool
    fallback: bool  # ComfyUI took the first tensor because the file lacks this encoder's key

    @property
    def active(self) -> bool:
        return self.reads is not None

    def as_dict(self) -> dict:
        return {"reads": self.reads, "width": self.width, "used": self.used, "fallback": self.fallback}

    def describe(self) -> str:
        """E.g. 't5xxl: no t5xxl key, falls back to the first tensor (clip_g), width 1280 vs 4096'."""
        if self.fallback:
            return (f"{self.key}: no {self.key} key, falls back to the first tensor ({self.reads}), "
                    f"width {self.width} vs {self.needs}")
        return f"{self.key}: width {self.width} vs {self.needs}"


def source_for(file_widths: dict[str, int], key: str, order: list[str] | None = None) -> str:
    """The file's tensor (by encoder key) ComfyUI gives the encoder ``key``. ``order``: the file's
    tensors as stored (default: as TokenSmith's writer stores them, by name)."""
    if len(file_widths) == 1:
        return next(iter(file_widths))
    if key in file_widths:
        return key
    stored = [k for k in (order or []) if k in file_widths] or sorted(file_widths)
    return stored[0]


def read_by(file_widths: dict[str, int], slot: Slot, order: list[str] | None = None) -> Reading:
    if not (slot.looks_up and slot.loaded):
        return Reading(slot.key, slot.width, None, None, False, False)
    source = source_for(file_widths, slot.key, order)
    width = file_widths[source]
    fallback = len(file_widths) > 1 and source != slot.key
    return Reading(slot.key, slot.width, source, width, width == slot.width, fallback)


def readings(file_widths: dict[str, int], slots: list[Slot], order: list[str] | None = None) -> dict[str, Reading]:
    return {s.key: read_by(file_widths, s, order) for s in slots}


def clip_family(slots: list[Slot]) -> str:
    return family_of(s.key for s in slots)


def _not_read_notes(slots: list[Slot], unloaded: bool = True) -> list[str]:
    notes = []
    for s in slots:
        if not s.loaded:
            if not unloaded:
                continue
            notes.append(f"{s.key} is not loaded in this CLIP, so it reads nothing")
        elif not s.looks_up:
            notes.append(f"this ComfyUI's {s.key} tokenizer does not look up embedding: names (they are read "
                         "as plain words)")
    return notes


def _wrong_encoder(rs: dict[str, Reading]) -> list[str]:
    return [f"{r.key} reads the file's {r.reads} vectors (no {r.key} key: ComfyUI falls back to the first "
            "tensor); same width, but made for another text encoder" for r in rs.values() if r.used and r.fallback]


def fix_hint(emb_family: str, clip_fam: str) -> str:
    """How Convert Embedding fixes an embedding for this CLIP ('' when it cannot)."""
    if clip_fam == "sdxl" and emb_family == "sd1":
        return "convert it to SDXL to fill the G side"
    if clip_fam == "sd3" and emb_family in ("sd1", "sdxl"):
        return "convert it to SD3 (Convert Embedding, target sd3) to give T5 its own vectors"
    return ""


def verdict(emb_family: str, slots: list[Slot], rs: dict[str, Reading], emb_keys) -> str:
    """One sentence on how this CLIP will use the embedding (rs: readings per CLIP encoder)."""
    clip_fam = clip_family(slots)
    clip_name, emb_name = family_name(clip_fam), family_name(emb_family)
    active = [r for r in rs.values() if r.active]
    used = [r.key for r in active if r.used]
    ignored = [r for r in active if not r.used]
    mismatch = "; ".join(r.describe() for r in ignored)
    extra = _wrong_encoder(rs) + _not_read_notes(slots)
    if not used:
        if not active:
            text = "will not be read"
        elif len(ignored) == 1 and not ignored[0].fallback:
            text = f"will be ignored: width {ignored[0].width} vs {ignored[0].needs}"
        else:
            text = f"will be ignored: {mismatch}"
        text += f" ({emb_name} embedding on {clip_name})"
    elif not ignored:
        if len(used) == 2 and clip_fam == "sdxl":
            text = "works on both SDXL encoders"
        else:
            text = f"works on this {clip_name} CLIP ({', '.join(used)})"
        read = {r.reads for r in active if r.used}
        unread = [k for k in emb_keys if k not in read]
        if unread:
            text += f"; its {', '.join(unread)} vectors are not used ({emb_name} embedding on {clip_name})"
    elif emb_family == "sd1" and clip_fam == "sdxl" and [r.key for r in ignored] == ["clip_g"]:
        g = ignored[0]
        text = (f"SD1.5 embedding on SDXL: only the L side uses it (clip_g ignores it: width {g.width} vs "
                f"{g.needs}); {fix_hint(emb_family, clip_fam)}")
    else:
        text = f"only {', '.join(used)} uses it; ignored by {mismatch}"
        hint = fix_hint(emb_family, clip_fam)
        if hint:
            text += f"; {hint}"
    return "; ".join([text, *extra])


def prompt_warnings(name: str, file_widths: dict[str, int], slots: list[Slot],
                    order: list[str] | None = None) -> list[str]:
    """What the Prompt node says about ``embedding:name`` on this CLIP (nothing when every encoder gets
    its own vectors)."""
    rs = readings(file_widths, slots, order)
    emb_fam, clip_fam = family_of(file_widths), clip_family(slots)
    keys = ", ".join(file_widths)
    kind = family_name(emb_fam) if emb_fam != "unknown" else "+".join(file_widths)
    clip_name = family_name(clip_fam) if clip_fam != "unknown" else "+".join(s.key for s in slots)
    active = [r for r in rs.values() if r.active]
    used = [r.key for r in active if r.used]
    ignored = [r for r in active if not r.used]
    ref = f"embedding:{name}"
    lines = []
    if active and not used:
        lines.append(f"{ref} is a {kind} embedding ({keys}); this {clip_name} CLIP has "
                     f"{', '.join(s.key for s in slots)}: ComfyUI will ignore it entirely "
                     f"({'; '.join(r.describe() for r in ignored)}). Use an embedding made for {clip_name} "
                     "(or train one with TokenSmith on this checkpoint).")
    elif ignored:
        hint = fix_hint(emb_fam, clip_fam)
        lines.append(f"{ref} is a {kind} embedding ({keys}) used on {clip_name}: only {', '.join(used)} gets it, "
                     f"{', '.join(r.key for r in ignored)} ignores it ({'; '.join(r.describe() for r in ignored)}; "
                     "ComfyUI logs 'shape mismatch')." + (f" To fix: {hint}." if hint else ""))
    lines += [f"{ref}: {note}" for note in _wrong_encoder(rs) + _not_read_notes(slots, unloaded=False)]
    return lines
