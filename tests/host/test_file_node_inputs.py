"""The file nodes' inputs as their help pages give them: Load (a file to pick), Save (name
`my-embedding`, overwrite off, the optional trigger word, notes and base checkpoint `none` first),
Embedding From Text (a CLIP and multiline text), Convert (target `sdxl` first and by default, an
optional CLIP); Save is an output node (it runs with nothing after it)."""

from __future__ import annotations


def spec(cls) -> dict:
    return {i.id: (i.io_type, i.optional, getattr(i, "default", None), getattr(i, "multiline", None))
            for i in cls.define_schema().inputs}


def test_load_embedding(node_classes):
    assert spec(node_classes["TokenSmithLoadEmbedding"]) == {"file": ("COMBO", False, None, None)}


def test_save_embedding(node_classes):
    save = node_classes["TokenSmithSaveEmbedding"]
    assert spec(save) == {"embedding": ("TOKENSMITH_EMBEDDING", False, None, None),
                          "name": ("STRING", False, "my-embedding", False),
                          "overwrite": ("BOOLEAN", False, False, None),
                          "trigger_word": ("STRING", True, "", False),
                          "notes": ("STRING", True, "", True),
                          "base_checkpoint": ("COMBO", True, "none", None)}
    schema = save.define_schema()
    assert schema.is_output_node is True
    assert next(i for i in schema.inputs if i.id == "base_checkpoint").options[0] == "none"


def test_embedding_from_text(node_classes):
    assert spec(node_classes["TokenSmithEmbeddingFromText"]) == {"clip": ("CLIP", False, None, None),
                                                                 "text": ("STRING", False, "", True)}


def test_convert_embedding(node_classes):
    convert = node_classes["TokenSmithConvertEmbedding"]
    assert spec(convert) == {"embedding": ("TOKENSMITH_EMBEDDING", False, None, None),
                             "target": ("COMBO", False, "sdxl", None), "clip": ("CLIP", True, None, None)}
    assert next(i for i in convert.define_schema().inputs if i.id == "target").options == ["sdxl", "sd1", "sd3", "keep"]
