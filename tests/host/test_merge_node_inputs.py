"""Merge Embeddings' inputs as its help page gives them: the operations in order, a-d optional
embeddings, the weights (default 1, -10 to 10), t (default 0.5), factor (default 1), encoder (clip_g by
default, every encoder a file can hold), norm (default 0), n and shift (default 1) and the expression,
all optional, with the ranges and steps the widgets take."""

from __future__ import annotations

INPUTS = {  # id: (type, default, min, max, step)
    "a": ("TOKENSMITH_EMBEDDING", None, None, None, None), "b": ("TOKENSMITH_EMBEDDING", None, None, None, None),
    "c": ("TOKENSMITH_EMBEDDING", None, None, None, None), "d": ("TOKENSMITH_EMBEDDING", None, None, None, None),
    "clip": ("CLIP", None, None, None, None),
    "weight_a": ("FLOAT", 1.0, -10.0, 10.0, 0.01), "weight_b": ("FLOAT", 1.0, -10.0, 10.0, 0.01),
    "weight_c": ("FLOAT", 1.0, -10.0, 10.0, 0.01), "weight_d": ("FLOAT", 1.0, -10.0, 10.0, 0.01),
    "t": ("FLOAT", 0.5, -1.0, 2.0, 0.01), "factor": ("FLOAT", 1.0, -10.0, 10.0, 0.01),
    "encoder": ("COMBO", "clip_g", None, None, None), "norm": ("FLOAT", 0.0, 0.0, 100.0, 0.01),
    "n": ("INT", 1, 1, 75, None), "shift": ("INT", 1, -75, 75, None), "expression": ("STRING", "", None, None, None),
}


def test_the_inputs_as_the_page_gives_them(pack, node_classes):
    merge = pack("nodes.merge")
    schema = node_classes["TokenSmithMergeEmbeddings"].define_schema()
    operation, *rest = schema.inputs
    assert (operation.id, operation.optional, operation.default) == ("operation", False, "weighted sum")
    assert operation.options == merge.OPERATIONS == [
        "weighted sum", "mean", "concat", "slerp", "scale", "match norm", "crop/pad", "roll", "per-encoder scale",
        "collapse"]
    got = {i.id: (i.io_type, getattr(i, "default", None), getattr(i, "min", None), getattr(i, "max", None),
                  getattr(i, "step", None)) for i in rest}
    assert got == INPUTS
    assert [i.id for i in rest if not i.optional] == []
    encoder = next(i for i in rest if i.id == "encoder")
    assert encoder.options == list(pack("tokensmith.embedding").ENCODER_WIDTHS)
    assert next(i for i in rest if i.id == "expression").multiline is True
    assert schema.outputs[0].id == "embedding" and schema.outputs[1].id == "summary"
