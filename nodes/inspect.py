"""TokenSmithInspectEmbedding: what an embedding holds and, with a CLIP, how that CLIP will use it."""

from __future__ import annotations

import json
import os

from comfy_api.latest import io, ui

from .. import comfy_adapter
from ..tokensmith.embedding import Embedding
from ..tokensmith.hashing import file_hashes
from ..tokensmith.report import encoder_stats, inspect_report
from .files import source_of
from .types import ADV, CATEGORY
from .types import Embedding as EmbeddingSocket

_FAMILY_NAMES = {"sd1": "SD1.5", "sd2": "SD2", "sdxl": "SDXL", "sdxl_g": "SDXL (G only)", "t5": "T5"}


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def comfy_reads(widths: dict[str, int], enc_key: str, enc_width: int) -> dict:
    """Which vectors ComfyUI feeds one text encoder from a file holding ``widths`` ({key: width}),
    following comfy/sd1_clip.py load_embed: a one-tensor file gives its tensor to every encoder; a
    file with several keys gives the encoder its own key, else falls back to the first tensor
    (safetensors stores same-dtype tensors sorted by name). Vectors of another width are dropped
    with a 'shape mismatch ... will be ignored' warning."""
    if len(widths) == 1:
        source = next(iter(widths))
    elif enc_key in widths:
        source = enc_key
    else:
        source = sorted(widths)[0]
    width = widths[source]
    return {"reads": source, "width": width, "used": width == enc_width}


def clip_verdict(emb: Embedding, clip_family: str, readings: dict[str, dict], widths: dict[str, int]) -> str:
    """One sentence on how this CLIP will use the embedding (readings: comfy_reads per CLIP encoder)."""
    used = [k for k, r in readings.items() if r["used"]]
    ignored = [k for k, r in readings.items() if not r["used"]]
    clip_name = _FAMILY_NAMES.get(clip_family, clip_family)
    emb_name = _FAMILY_NAMES.get(emb.family, emb.family)
    mismatch = "; ".join(f"{k}: width {readings[k]['width']} vs {widths[k]}" for k in ignored)
    if not used:
        if len(ignored) == 1:
            k = ignored[0]
            return f"will be ignored: width {readings[k]['width']} vs {widths[k]} ({emb_name} embedding on {clip_name})"
        return f"will be ignored: {mismatch} ({emb_name} embedding on {clip_name})"
    unread = [k for k in emb.encoders if k not in {r["reads"] for r in readings.values() if r["used"]}]
    if not ignored:
        if len(used) == 2 and clip_family == "sdxl":
            text = "works on both SDXL encoders"
        else:
            text = f"works on this {clip_name} CLIP ({', '.join(used)})"
        if unread:
            text += f"; its {', '.join(unread)} vectors are not used ({emb_name} embedding on {clip_name})"
        return text
    if emb.family == "sd1" and clip_family == "sdxl" and ignored == ["clip_g"]:
        return (f"SD1.5 embedding on SDXL: only the L side uses it (clip_g ignores it: width "
                f"{readings['clip_g']['width']} vs {widths['clip_g']}); convert it to SDXL to fill the G side")
    return f"only {', '.join(used)} uses it; ignored by {mismatch}"


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


def _clip_section(emb: Embedding, clip, top_k: int) -> dict:
    encoders = comfy_adapter.encoders_of(clip)
    family = comfy_adapter.clip_family(clip)
    widths = {e.key: e.width for e in encoders}
    emb_widths = {k: t.shape[1] for k, t in emb.vectors.items()}
    readings = {e.key: comfy_reads(emb_widths, e.key, e.width) for e in encoders}
    detail = {}
    for enc in encoders:
        r = dict(readings[enc.key])
        vocab = comfy_adapter.vocabulary_norms(enc)
        r["vocabulary_norms"] = vocab
        if r["used"]:
            vectors = emb.vectors[r["reads"]]
            norms = vectors.float().norm(dim=-1).tolist()
            r["norm_vs_median"] = [n / vocab["median"] if vocab["median"] else None for n in norms]
            if top_k > 0:
                r["nearest"] = [[[tok, round(sim, 4)] for tok, sim in row]
                                for row in comfy_adapter.nearest_tokens(enc, vectors, k=top_k)]
        detail[enc.key] = r
    return {"family": family, "encoders": widths, "verdict": clip_verdict(emb, family, readings, widths),
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


def format_report(data: dict) -> str:
    step = "unknown" if data["step"] is None else data["step"]
    lines = [f"{data['name'] or 'unnamed'}: format {data['format']}, family {data['family']}, "
             f"{data['vectors']} vector(s), step {step}"]
    src = data["source"]
    if src.get("path"):
        lines.append(f"file: {src['path']} ({src['size']} bytes, {src['container']})")
    if src.get("sha256"):
        lines.append(f"sha256: {src['sha256']}  AutoV2: {src['autov2']}")
    if src.get("note"):
        lines.append(f"hash: {src['note']}")
    for enc, s in data["stats"].items():
        lines.append(f"{enc}: {s['shape'][0]} x {s['shape'][1]}, stored as {s['stored_dtype']}; mean {_fmt(s['mean'])} "
                     f"std {_fmt(s['std'])} min {_fmt(s['min'])} max {_fmt(s['max'])}")
        for i, v in enumerate(data["per_vector"][enc]):
            lines.append(f"  #{i}: norm {_fmt(v['norm'])}  mean {_fmt(v['mean'])}  std {_fmt(v['std'])}  "
                         f"min {_fmt(v['min'])}  max {_fmt(v['max'])}")
    if data["metadata"]:
        lines.append("metadata:")
        for k, v in sorted(data["metadata"].items()):
            lines.append(f"  {k}: {v if len(v) <= 120 else v[:117] + '...'}")
    for w in data["warnings"]:
        lines.append(f"warning: {w}")
    clip = data.get("clip")
    if clip:
        encs = ", ".join(f"{k} {w}" for k, w in clip["encoders"].items())
        lines.append(f"with this CLIP ({clip['family']}: {encs}): {clip['verdict']}")
        for key, r in clip["per_encoder"].items():
            vocab = r["vocabulary_norms"]
            head = f"  {key} reads {r['reads']} ({r['width']} wide): " + ("used" if r["used"] else "ignored")
            lines.append(f"{head}; vocabulary norm median {_fmt(vocab['median'])} (max {_fmt(vocab['max'])})")
            if r.get("norm_vs_median"):
                lines.append("    norm / median: " + " ".join(_fmt(x) for x in r["norm_vs_median"]))
            for i, row in enumerate(r.get("nearest", [])):
                lines.append(f"    #{i} nearest: " + ", ".join(f"{tok} ({sim:.3f})" for tok, sim in row))
    return "\n".join(lines)


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
