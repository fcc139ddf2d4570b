"""Embedding files: Load, Save, Convert and Embedding From Text (thin V3 nodes over tokensmith + adapter).

Where an embedding came from: the Load node records the file it read (path, size, mtime, stored
dtypes) in a side table keyed by the Embedding object, not in its metadata, so the path never
ends up inside a saved file and a merged or converted embedding (a new object) never claims the
hash of a file it no longer matches. ``source_of(emb)`` reads it back (the Inspect node uses it).
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

from comfy_api.latest import io, ui

from .. import comfy_adapter
from ..tokensmith.convert import to_sd1, to_sd3, to_sdxl
from ..tokensmith.embedding import MAX_VECTORS, Embedding
from ..tokensmith.errors import EmbeddingFileError, EmbeddingNameError, FamilyMismatchError, TokenSmithError
from ..tokensmith.formats import read_embedding_with_header
from ..tokensmith.modelspec import checkpoint_sha256, sharing_metadata
from ..tokensmith.names import validate_name
from ..tokensmith.writer import save_embedding
from .sockets import CATEGORY
from .sockets import Embedding as EmbeddingSocket

# ComfyUI's own lookup order for `embedding:NAME` (comfy/sd1_clip.py load_embed), plus A1111 PNG cards.
_LOOKUP_EXTENSIONS = ("", ".safetensors", ".pt", ".bin", ".png")


@dataclass(frozen=True)
class SourceFile:
    path: str
    size: int
    mtime_ns: int
    container: str
    dtypes: dict
    order: tuple = ()  # the encoders in the order the file stores them (ComfyUI's first-tensor fallback)


_SOURCES: dict[int, SourceFile] = {}


def remember_source(emb: Embedding, source: SourceFile) -> None:
    _SOURCES[id(emb)] = source
    # Forget the entry when the embedding is freed, before its id can be reused.
    weakref.finalize(emb, _SOURCES.pop, id(emb), None)


def source_of(emb: Embedding) -> SourceFile | None:
    return _SOURCES.get(id(emb))


def describe(emb: Embedding) -> str:
    """One line: name, family, vector count and shapes."""
    shapes = ", ".join(f"{k} {n}x{d}" for k, (n, d) in emb.shapes().items())
    name = emb.name or "unnamed"
    return f"{name}: {emb.family}, {emb.num_vectors} vector(s) ({shapes})"


def _stat_key(path: str):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def load_file(path: str) -> Embedding:
    """Read an embedding file of any supported format and remember where it came from."""
    emb, header = read_embedding_with_header(path)
    try:
        size, mtime_ns = _stat_key(path)
    except OSError:
        size, mtime_ns = header["size"], 0
    remember_source(emb, SourceFile(str(path), size, mtime_ns, header["container"], dict(header["dtypes"]),
                                    tuple(header["stored_order"])))
    return emb


def find_embedding(name: str) -> str | None:
    """The file ComfyUI would use for ``embedding:NAME``: the exact name, then NAME.safetensors, .pt,
    .bin (and .png cards), searched in the embeddings folders; a name leading outside them raises
    EmbeddingNameError."""
    if not name or "\0" in name:
        return None
    for ext in _LOOKUP_EXTENSIONS:
        path = comfy_adapter.embedding_path(name + ext, refuse_outside=True)
        if path is not None:
            return path
    return None


def read_named_embedding(name: str) -> Embedding:
    path = find_embedding(name)
    if path is None:
        raise EmbeddingFileError(name, "no embedding of this name in the embeddings folders "
                                 f"({', '.join(comfy_adapter.embedding_folders()) or 'none configured'}); "
                                 "check the spelling, or connect it to one of the inputs a-d")
    return load_file(path)


def listed_files() -> list[str]:
    """The Load node's choices: every file ComfyUI lists as an embedding, plus A1111 PNG cards.

    Model managers put preview pictures beside embeddings (NAME.preview.png, or NAME.png next to
    NAME.safetensors); those are left out, so only PNGs that stand alone are offered."""
    files = set(comfy_adapter.embedding_files())
    stems = {os.path.splitext(f)[0] for f in files}
    cards = {p for p in comfy_adapter.embedding_card_files()
             if not p.lower().endswith(".preview.png") and os.path.splitext(p)[0] not in stems}
    return sorted(files | cards)


def _listed_path(embedding: str) -> str | None:
    if not isinstance(embedding, str) or not embedding:
        return None
    return comfy_adapter.embedding_path(embedding, refuse_outside=True)


class LoadEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithLoadEmbedding",
            display_name="Load Embedding (TokenSmith)",
            category=f"{CATEGORY}/files",
            description=(
                "Reads an embedding file from models/embeddings in any format TokenSmith knows (A1111 .pt, "
                "kohya/Civitai safetensors, SDXL clip_l+clip_g, diffusers .bin, LoRA bundles, A1111 PNG cards). "
                "Pickles are opened with weights_only=True, so a file cannot run code."
            ),
            inputs=[
                io.Combo.Input("file", options=listed_files(),
                               tooltip="A file in the embeddings folders. After adding files press R (Refresh Node "
                                       "Definitions) or reload the page."),
            ],
            outputs=[EmbeddingSocket.Output("embedding", tooltip="The vectors per text encoder (fp32), with the "
                                                          "file's name and metadata.")],
        )

    @classmethod
    def validate_inputs(cls, file) -> bool | str:
        try:
            path = _listed_path(file)
        except EmbeddingNameError as exc:
            return str(exc)
        if path is None:
            return (f"embedding file {file!r} was not found in the embeddings folders; pick one from the "
                    "list (refresh the page if you just added or renamed it)")
        return True

    @classmethod
    def fingerprint_inputs(cls, file):
        # Size and modification time: a file changed on disk is read again, an unchanged one is not.
        try:
            path = _listed_path(file)
        except EmbeddingNameError:
            return file
        if path is None:
            return file
        try:
            return (path, *_stat_key(path))
        except OSError:
            return (path, None)

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        path = _listed_path(file)
        if path is None:
            raise EmbeddingFileError(file, "not found in the embeddings folders; pick a file from the list")
        return io.NodeOutput(load_file(path))


class SaveEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithSaveEmbedding",
            display_name="Save Embedding (TokenSmith)",
            category=f"{CATEGORY}/files",
            description=(
                "Writes the embedding to models/embeddings/NAME.safetensors (clip_l + clip_g for SDXL, emb_params "
                "otherwise: the layout ComfyUI, A1111 and kohya read). Outputs embedding:NAME; feed it to a text "
                "encode so the prompt runs after the save."
            ),
            is_output_node=True,
            inputs=[
                EmbeddingSocket.Input("embedding", tooltip="What to save: from Train, Load, Merge, Convert or Embedding From Text."),
                io.String.Input("name", default="my-embedding",
                                tooltip="Keyword and file name: letters, digits, . _ - (and / for a subfolder). "
                                        "No spaces: a prompt keyword ends at a space."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing file of that name (otherwise saving refuses)."),
                io.String.Input("trigger_word", optional=True, default="",
                                tooltip="Optional: the word or phrase to use it with, written to the file for "
                                        "model browsers (modelspec.trigger_phrase; empty = the name)."),
                io.String.Input("notes", optional=True, multiline=True, default="",
                                tooltip="Optional: what it is, how it was made, what to watch out for "
                                        "(modelspec.description)."),
                io.Combo.Input("base_checkpoint", optional=True, options=["none", *comfy_adapter.checkpoint_files()],
                               default="none",
                               tooltip="Optional: the checkpoint it was made for; its file name and SHA-256 go "
                                       "into the file (hashed once per file, which takes a while for a big one)."),
            ],
            outputs=[io.String.Output("prompt", tooltip="embedding:NAME, ready for a prompt.")],
        )

    @classmethod
    def execute(cls, embedding: Embedding, name: str, overwrite: bool, trigger_word: str = "", notes: str = "",
                base_checkpoint: str = "none") -> io.NodeOutput:
        clean = validate_name(name.strip() if isinstance(name, str) else name)
        base, base_hash = "", ""
        if base_checkpoint and base_checkpoint != "none":
            ckpt = comfy_adapter.checkpoint_path(base_checkpoint)
            if ckpt is None:
                raise EmbeddingFileError(base_checkpoint, "is not a checkpoint ComfyUI lists; pick one or none")
            base, base_hash = base_checkpoint, checkpoint_sha256(ckpt)
        extra = sharing_metadata(trigger_word or "", notes or "", base, base_hash)
        path = save_embedding(embedding, comfy_adapter.primary_embedding_folder(), clean, overwrite=overwrite,
                              extra_metadata=extra)
        text = f"saved {path}\n{describe(embedding)}\nuse it as embedding:{clean}"
        return io.NodeOutput(f"embedding:{clean}", ui=ui.PreviewText(text))


class EmbeddingFromText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithEmbeddingFromText",
            display_name="Embedding From Text (TokenSmith)",
            category=f"{CATEGORY}/files",
            description=(
                "Turns text into an embedding: one vector per token, the CLIP's own input vectors, for every text "
                "encoder of that CLIP. Save it to bake a long prompt into one keyword."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP whose vocabulary gives the vectors (SD1.x, SD2.x or SDXL)."),
                io.String.Input("text", multiline=True, default="",
                                tooltip="Plain words (at most 75 tokens). Prompt syntax such as (word:1.2) or "
                                        "embedding:NAME is not interpreted."),
            ],
            outputs=[EmbeddingSocket.Output("embedding", tooltip="One vector per token, in order, for each encoder of "
                                                                  "the CLIP.")],
        )

    @classmethod
    def execute(cls, clip, text: str) -> io.NodeOutput:
        vectors = comfy_adapter.text_to_vectors(clip, text or "")
        count = next(iter(vectors.values())).shape[0]
        if count == 0:
            raise TokenSmithError("the text gives no tokens; type at least one word")
        if count > MAX_VECTORS:
            raise TokenSmithError(f"the text gives {count} tokens; an embedding holds at most {MAX_VECTORS} "
                                  "(one prompt chunk): shorten it")
        emb = Embedding(vectors=vectors, name="from-text", metadata={"source_text": text})
        return io.NodeOutput(emb)


class ConvertEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithConvertEmbedding",
            display_name="Convert Embedding (TokenSmith)",
            category=f"{CATEGORY}/files",
            description=(
                "SD1.5 -> SDXL (G side zero, or with an SDXL CLIP connected the G vector of each L vector's nearest "
                "vocabulary token), SDXL -> SD1.5 (keeps the L side), SDXL/SD1.5/Flux.1 -> SD3 (the CLIP sides "
                "kept, the missing ones zero, zero T5 vectors so T5 does not fall back to the clip_g rows), or "
                "keep. Save the result to get a safetensors file from any readable format."
            ),
            inputs=[
                EmbeddingSocket.Input("embedding", tooltip="The embedding to convert (e.g. from Load Embedding)."),
                io.Combo.Input("target", options=["sdxl", "sd1", "sd3", "keep"], default="sdxl",
                               tooltip="sdxl: clip_l + clip_g; sd1: clip_l only; sd3: clip_l + clip_g + zero "
                                       "t5xxl; keep: unchanged."),
                io.Clip.Input("clip", optional=True,
                              tooltip="An SDXL CLIP: fill the G side from the nearest tokens instead of zeros."),
            ],
            outputs=[
                EmbeddingSocket.Output("converted", tooltip="The converted embedding."),
                io.String.Output("summary", tooltip="What was done."),
            ],
        )

    @classmethod
    def execute(cls, embedding: Embedding, target: str, clip=None) -> io.NodeOutput:
        source = embedding.family
        if target == "keep":
            out = embedding.with_vectors(embedding.float_vectors())
            note = "kept as is"
        elif target == "sd1":
            out = to_sd1(embedding)
            note = "kept the clip_l side" if source == "sdxl" else "already SD1"
        elif target == "sd3":
            out = to_sd3(embedding)
            note = "already SD3" if source == "sd3" else "missing sides zero (T5 reads zero vectors, not clip_g)"
        elif target == "sdxl":
            if source == "sd1" and clip is not None:
                out, tokens = _to_sdxl_by_tokens(embedding, clip)
                note = "G side from the nearest L tokens: " + ", ".join(tokens)
            else:
                out = to_sdxl(embedding)
                note = "G side zero (connect an SDXL CLIP to map tokens)" if source == "sd1" else "already SDXL"
        else:
            raise TokenSmithError(f"unknown target {target!r}; use sdxl, sd1, sd3 or keep")
        if out.family != source:
            out.metadata["converted_from"] = source
        summary = f"{describe(out)} ({note})"
        return io.NodeOutput(out, summary, ui=ui.PreviewText(summary))


def _to_sdxl_by_tokens(emb: Embedding, clip) -> tuple[Embedding, list[str]]:
    l_enc = comfy_adapter.encoder_by_key(clip, "clip_l")
    g_enc = comfy_adapter.encoder_by_key(clip, "clip_g")
    if l_enc is None or g_enc is None:
        have = ", ".join(e.key for e in comfy_adapter.encoders_of(clip))
        raise FamilyMismatchError(f"nearest-token conversion needs an SDXL CLIP (clip_l + clip_g); this CLIP has "
                                  f"{have}. Disconnect it to get a zero G side.")
    ids = comfy_adapter.nearest_token_ids(l_enc, emb.float_vectors()["clip_l"])
    table = comfy_adapter.token_table(g_enc)
    g = table[ids.to(table.device)].detach().float().cpu().clone()
    out = to_sdxl(emb, g_vectors=g)
    out.metadata["g_side"] = "nearest tokens"
    return out, comfy_adapter.token_strings(l_enc, ids.tolist())


NODES = [LoadEmbedding, SaveEmbedding, EmbeddingFromText, ConvertEmbedding]
