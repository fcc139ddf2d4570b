"""TokenSmithInspectEmbedding: what an embedding holds and, with a CLIP, how that CLIP will use it."""

from __future__ import annotations

import json
import os

from comfy_api.latest import io, ui

from .. import comfy_adapter
from ..tokensmith.comfy_reads import readings, verdict
from ..tokensmith.embedding import Embedding, family_of
from ..tokensmith.hashing import file_hashes
from ..tokensmith.report import encoder_stats, format_report, inspect_report
from .files import source_of
from .sockets import ADV, CATEGORY
from .sockets import Embedding as EmbeddingSocket


def _source_section(emb: Embedding) -> dict:
    src = source_of(emb)
    if src is None:
        return {"path": None, "sha256": None, "autov2": None,
                "note": "not read from a file here (trained, merged or converted): save it to get a hash"}
    out = {"path": src.path, "size": src.size, "container": src.container, "stored_dtypes": dict(src.dtypes)}
    try:
        st = os.stat(src.path)
        unchanged = (st.st_size, st.st_mtime_ns) == (src.size, src.mtime_ns)
    except OSError:
        unchanged = False
    if unchanged:
        out.update(file_hashes(src.path))
    else:
        out.update({"sha256": None, "autov2": None,
                    "note": "the file changed or vanished since it was loaded; run Load Embedding again"})
    return out


def _per_vector(emb: Embedding) -> dict[str, list[dict]]:
    out = {}
    for enc, t in emb.vectors.items():
        rows = []
        for i in range(t.shape[0]):
            s = encoder_stats(t[i:i + 1])
            rows.append({"norm": s["norms"][0], "mean": s["mean"], "std": s["std"], "min": s["min"], "max": s["max"]})
        out[enc] = rows
    return out


def _stored_order(emb: Embedding) -> list[str] | None:
    # the order ComfyUI meets the file's tensors in (its first-tensor fallback); None: as TokenSmith writes
    src = source_of(emb)
    return list(src.order) if src is not None and src.order else None


def _clip_section(emb: Embedding, clip, top_k: int) -> dict:
    slots = comfy_adapter.embedding_slots(clip)
    encoders = {e.key: e for e in comfy_adapter.text_encoders(clip)}
    widths = {s.key: s.width for s in slots}
    emb_widths = {k: t.shape[1] for k, t in emb.vectors.items()}
    reads = readings(emb_widths, slots, _stored_order(emb))
    detail = {}
    for key, reading in reads.items():
        r = reading.as_dict()
        enc = encoders.get(key)
        if enc is not None:
            vocab = comfy_adapter.vocabulary_norms(enc)
            r["vocabulary_norms"] = vocab
            if reading.used:
                vectors = emb.vectors[reading.reads]
                norms = vectors.float().norm(dim=-1).tolist()
                r["norm_vs_median"] = [n / vocab["median"] if vocab["median"] else None for n in norms]
                if top_k > 0:
                    r["nearest"] = [[[tok, round(sim, 4)] for tok, sim in row]
                                    for row in comfy_adapter.nearest_tokens(enc, vectors, k=top_k)]
        detail[key] = r
    family = family_of(widths)
    return {"family": family, "encoders": widths, "verdict": verdict(emb.family, slots, reads, emb.encoders),
            "per_encoder": detail}


def build_report(emb: Embedding, clip=None, top_k: int = 5) -> dict:
    data = inspect_report(emb)
    data["source"] = _source_section(emb)
    stored = data["source"].get("stored_dtypes") or {}
    for enc, s in data["stats"].items():
        s["stored_dtype"] = stored.get(enc, s["dtype"])
    data["per_vector"] = _per_vector(emb)
    if clip is not None:
        data["clip"] = _clip_section(emb, clip, top_k)
    return data


class InspectEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithInspectEmbedding",
            display_name="Inspect Embedding (TokenSmith)",
            category=f"{CATEGORY}/files",
            description=(
                "Shows what an embedding holds: format, family, shape and stored dtype per encoder, metadata, "
                "sha256 and AutoV2 hash (when it comes straight from Load Embedding), and per-vector norm, mean, "
                "std, min, max. With a CLIP: the norms beside that vocabulary's typical norm, the nearest "
                "vocabulary tokens of each vector, and whether that CLIP will use it."
            ),
            is_output_node=True,
            inputs=[
                EmbeddingSocket.Input("embedding", tooltip="The embedding to describe (from Load, Train, Merge or Convert)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The CLIP you plan to use it with: adds vocabulary norms, nearest tokens "
                                      "and a verdict."),
                io.Int.Input("top_k", **ADV, default=5, min=0, max=50, optional=True,
                             tooltip="Nearest vocabulary tokens shown per vector (needs a CLIP; 0 = none)."),
            ],
            outputs=[
                io.String.Output("report", tooltip="The report as text (also shown on the node)."),
                io.String.Output("json", tooltip="The same report as one JSON object."),
            ],
        )

    @classmethod
    def execute(cls, embedding: Embedding, clip=None, top_k: int = 5) -> io.NodeOutput:
        data = build_report(embedding, clip, int(top_k))
        text = format_report(data)
        return io.NodeOutput(text, json.dumps(data, ensure_ascii=False), ui=ui.PreviewText(text))


NODES = [InspectEmbedding]
