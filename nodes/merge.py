"""TokenSmithMergeEmbeddings: structured merge operations, or an embedding-merge style expression."""

from __future__ import annotations

from comfy_api.latest import io, ui

from .. import comfy_adapter
from ..tokensmith import merge as ops
from ..tokensmith.embedding import ENCODER_WIDTHS, Embedding
from ..tokensmith.errors import FamilyMismatchError, TokenSmithError
from ..tokensmith.expression import evaluate
from .files import describe, read_named_embedding
from .sockets import ADV, CATEGORY
from .sockets import Embedding as EmbeddingSocket

OPERATIONS = ["weighted sum", "mean", "concat", "slerp", "scale", "match norm", "crop/pad", "roll",
              "per-encoder scale", "collapse"]
_LETTERS = ("a", "b", "c", "d")


def _need_clip(clip, what: str):
    if clip is None:
        raise TokenSmithError(f"{what} needs a CLIP: connect the CLIP input (its vocabulary turns text and token "
                              "numbers into vectors)")
    return clip


def _resolvers(inputs: dict[str, Embedding], clip):
    def resolve_text(text: str):
        return comfy_adapter.text_to_vectors(_need_clip(clip, "quoted text"), text)

    def resolve_name(name: str):
        if name in inputs:
            return inputs[name]
        return read_named_embedding(name)

    def resolve_token(token):
        rows = {}
        for enc in comfy_adapter.encoders_of(_need_clip(clip, "a token number")):
            index = token if isinstance(token, int) else comfy_adapter.special_token_id(enc, token)
            table = comfy_adapter.token_table(enc)
            if not 0 <= index < table.shape[0]:
                raise TokenSmithError(f"token {index} is outside the {enc.key} vocabulary (0..{table.shape[0] - 1})")
            rows[enc.key] = table[index:index + 1].detach().float().cpu().clone()
        return rows

    return resolve_text, resolve_name, resolve_token


def _vocabulary_medians(emb: Embedding, clip) -> dict[str, float]:
    encoders = {e.key: e for e in comfy_adapter.text_encoders(clip)}
    missing = [k for k in emb.encoders if k not in encoders or encoders[k].width != emb.vectors[k].shape[1]]
    if missing:
        raise FamilyMismatchError(
            f"match norm to the vocabulary: this CLIP has {', '.join(encoders)} but the embedding needs "
            f"{', '.join(missing)}; connect the CLIP of the embedding's family ({emb.family}) or set norm > 0")
    return {k: comfy_adapter.vocabulary_norms(encoders[k])["median"] for k in emb.encoders}


def _label(letter: str, emb: Embedding) -> str:
    return f"{letter}={emb.name}" if emb.name else letter


class MergeEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithMergeEmbeddings",
            display_name="Merge Embeddings (TokenSmith)",
            category=f"{CATEGORY}/merge",
            description=(
                "Combines embeddings of one family: weighted sum, mean, concat, slerp (a to b), or reshapes input a: "
                "scale, match norm, crop/pad, roll, per-encoder scale, collapse to one vector. A non-empty "
                "expression wins, in embedding-merge's grammar: 'quoted text' (needs the CLIP), names "
                "(a-d = the inputs, else a file in models/embeddings), + - * / :N :+N , and parentheses."
            ),
            inputs=[
                io.Combo.Input("operation", options=OPERATIONS, default="weighted sum",
                               tooltip="Ignored when the expression is not empty."),
                EmbeddingSocket.Input("a", optional=True, tooltip="First operand; the one-input operations use a."),
                EmbeddingSocket.Input("b", optional=True, tooltip="Second operand (weighted sum, mean, concat, slerp; b in the expression)."),
                EmbeddingSocket.Input("c", optional=True, tooltip="Third operand (weighted sum, mean, concat; c in the expression)."),
                EmbeddingSocket.Input("d", optional=True, tooltip="Fourth operand (weighted sum, mean, concat; d in the expression)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Needed for quoted text and token numbers in the expression, and for "
                                      "match norm to the vocabulary median."),
                io.Float.Input("weight_a", default=1.0, min=-10.0, max=10.0, step=0.01, optional=True,
                               tooltip="weighted sum: weight of a."),
                io.Float.Input("weight_b", default=1.0, min=-10.0, max=10.0, step=0.01, optional=True,
                               tooltip="weighted sum: weight of b."),
                io.Float.Input("weight_c", **ADV, default=1.0, min=-10.0, max=10.0, step=0.01, optional=True,
                               tooltip="weighted sum: weight of c."),
                io.Float.Input("weight_d", **ADV, default=1.0, min=-10.0, max=10.0, step=0.01, optional=True,
                               tooltip="weighted sum: weight of d."),
                io.Float.Input("t", default=0.5, min=-1.0, max=2.0, step=0.01, optional=True,
                               tooltip="slerp: 0 gives a, 1 gives b."),
                io.Float.Input("factor", default=1.0, min=-10.0, max=10.0, step=0.01, optional=True,
                               tooltip="scale and per-encoder scale: multiply the vectors by this."),
                io.Combo.Input("encoder", **ADV, options=list(ENCODER_WIDTHS), default="clip_g", optional=True,
                               tooltip="per-encoder scale: the side to scale (SDXL: clip_l or clip_g; SD3 and "
                                       "Flux.1 also t5xxl)."),
                io.Float.Input("norm", **ADV, default=0.0, min=0.0, max=100.0, step=0.01, optional=True,
                               tooltip="match norm: the L2 norm every vector gets; 0 = the connected CLIP's "
                                       "vocabulary median per encoder."),
                io.Int.Input("n", **ADV, default=1, min=1, max=75, optional=True,
                             tooltip="crop/pad: keep the first N vectors or add zero vectors up to N."),
                io.Int.Input("shift", **ADV, default=1, min=-75, max=75, optional=True,
                             tooltip="roll: +1 moves vector i to i+1 (the last wraps to the front)."),
                io.String.Input("expression", default="", multiline=True, optional=True,
                                tooltip="e.g. a*0.5 + b*0.5, 'red hair'/2 + a, EasyNegative:2, ('cat'+'dog') =/2"),
            ],
            outputs=[
                EmbeddingSocket.Output("embedding", tooltip="The result (its recipe is kept in the metadata when "
                                                            "saved)."),
                io.String.Output("summary", tooltip="What was computed, and the result's shape and norms."),
            ],
        )

    @classmethod
    def execute(cls, operation: str, a=None, b=None, c=None, d=None, clip=None, weight_a=1.0, weight_b=1.0,
                weight_c=1.0, weight_d=1.0, t=0.5, factor=1.0, encoder="clip_g", norm=0.0, n=1, shift=1,
                expression="") -> io.NodeOutput:
        inputs = {k: v for k, v in zip(_LETTERS, (a, b, c, d), strict=True) if v is not None}
        weights = dict(zip(_LETTERS, (weight_a, weight_b, weight_c, weight_d), strict=True))
        if expression and expression.strip():
            out = evaluate(expression.strip(), *_resolvers(inputs, clip))
            out.name = "merge"
            recipe = expression.strip()
        else:
            out, recipe = _structured(operation, inputs, weights, clip, t=t, factor=factor, encoder=encoder,
                                      norm=norm, n=n, shift=shift)
        out.metadata["merge"] = recipe
        norms = "; ".join(f"{k} norms " + " ".join(f"{x:.4g}" for x in v) for k, v in ops.norms(out).items())
        summary = f"{recipe}\n-> {describe(out)}\n{norms}"
        return io.NodeOutput(out, summary, ui=ui.PreviewText(summary))


def _structured(operation: str, inputs: dict[str, Embedding], weights: dict[str, float], clip, *, t, factor,
                encoder, norm, n, shift) -> tuple[Embedding, str]:
    if operation not in OPERATIONS:
        raise TokenSmithError(f"unknown operation {operation!r}; choose one of: {', '.join(OPERATIONS)}")
    if not inputs:
        raise TokenSmithError("nothing to merge: connect an embedding to input a (and b, c, d for the "
                              "operations that combine several)")
    letters = list(inputs)
    embs = [inputs[k] for k in letters]
    labels = ", ".join(_label(k, inputs[k]) for k in letters)
    if operation == "weighted sum":
        out = ops.weighted_sum(embs, [weights[k] for k in letters])
        recipe = " + ".join(f"{weights[k]:g}*{_label(k, inputs[k])}" for k in letters)
    elif operation == "mean":
        out, recipe = ops.mean(embs), f"mean({labels})"
    elif operation == "concat":
        out, recipe = ops.concat(embs), f"concat({labels})"
    elif operation == "slerp":
        if "a" not in inputs or "b" not in inputs:
            raise TokenSmithError("slerp goes from input a to input b: connect both")
        out = ops.slerp(inputs["a"], inputs["b"], t)
        recipe = f"slerp({_label('a', inputs['a'])}, {_label('b', inputs['b'])}, t={t:g})"
    else:
        if "a" not in inputs:
            raise TokenSmithError(f"'{operation}' works on input a: connect the embedding there")
        return _one_input(operation, inputs["a"], clip, factor=factor, encoder=encoder, norm=norm, n=n, shift=shift)
    out.name = "merge"
    return out, recipe


def _one_input(operation: str, src: Embedding, clip, *, factor, encoder, norm, n, shift) -> tuple[Embedding, str]:
    # the operations on input a alone
    name = _label("a", src)
    if operation == "scale":
        return ops.scale(src, factor), f"{name} * {factor:g}"
    if operation == "per-encoder scale":
        return ops.scale(src, factor, encoder), f"{name} * {factor:g} on {encoder}"
    if operation == "match norm":
        if norm and norm > 0:
            return ops.match_norm(src, float(norm)), f"{name} with norm {norm:g}"
        if clip is None:
            raise TokenSmithError("match norm with norm 0 uses the vocabulary median: connect the CLIP, or "
                                  "set norm to the value you want")
        medians = _vocabulary_medians(src, clip)
        return ops.match_norm(src, medians), f"{name} with the vocabulary median norm (" + ", ".join(
            f"{k} {v:.4g}" for k, v in medians.items()) + ")"
    if operation == "crop/pad":
        return ops.crop_or_pad(src, int(n)), f"{name} :{int(n)}"
    if operation == "roll":
        return ops.roll(src, int(shift)), f"{name} rolled by {int(shift):+d}"
    return ops.collapse(src), f"collapse({name})"  # collapse


NODES = [MergeEmbeddings]
