"""Pick Embedding and Text Encode with Embedding, word for word: their inputs as the help pages give
them (weight 0-5 by 0.05, default 1; keyword `draft`, used in the default text), what Pick says of a
file it cannot use, the encoder's refusals and the line it shows."""

from __future__ import annotations

import uuid

import pytest
import torch

from tests.host.test_embedding_use import token_like_vectors as token_like


def inputs(cls) -> dict:
    return {i.id: i for i in cls.define_schema().inputs}


def test_pick_embeddings_inputs(node_classes):
    embedding, weight = inputs(node_classes["TokenSmithPickEmbedding"]).values()
    assert (embedding.id, embedding.io_type) == ("embedding", "COMBO")
    assert (weight.io_type, weight.default, weight.min, weight.max, weight.step) == ("FLOAT", 1.0, 0.0, 5.0, 0.05)


def test_encode_with_embeddings_inputs(node_classes):
    got = {k: (i.io_type, getattr(i, "default", None), getattr(i, "multiline", None))
           for k, i in inputs(node_classes["TokenSmithEncodeWithEmbedding"]).items()}
    assert got == {"clip": ("CLIP", None, None), "embedding": ("TOKENSMITH_EMBEDDING", None, None),
                   "keyword": ("STRING", "draft", False), "text": ("STRING", "a photo of embedding:draft", True)}


def test_pick_says_why_it_cannot_use_a_file(node_classes):
    pick = node_classes["TokenSmithPickEmbedding"]
    assert pick.validate_inputs(embedding="nope-missing.safetensors") == (
        "embedding file 'nope-missing.safetensors' was not found in the embeddings folders; pick one from the list "
        "(refresh the page if you just added or renamed it)")
    # the refusal of tokensmith.use.keyword_of_file, as it words it
    said = pick.validate_inputs(embedding="has space.safetensors")
    assert said.startswith("the file 'has space.safetensors' cannot be named in a prompt") and said.endswith(
        "; rename the file")


def test_pick_shows_the_text_it_outputs(pack, sd1, node_classes):
    from tests.host.test_use_nodes import save

    name = f"shown-{uuid.uuid4().hex[:8]}"
    save(node_classes, pack("tokensmith.embedding").Embedding(vectors=token_like(sd1.clip, "sd1", 1, seed=7)), name)
    out = node_classes["TokenSmithPickEmbedding"].execute(embedding=f"{name}.safetensors", weight=1.5)
    assert out.result == (f"(embedding:{name}:1.5)",) and out.ui.as_dict()["text"] == out.result


def run(node_classes, clip, emb, keyword, text):
    with torch.inference_mode():
        return node_classes["TokenSmithEncodeWithEmbedding"].execute(clip=clip, embedding=emb, keyword=keyword,
                                                                     text=text)


@pytest.mark.parametrize("name, shown", [(None, "an unsaved embedding"), ("merged", "merged")])
def test_the_line_it_shows_counts_vectors_and_places(pack, sd1, node_classes, name, shown):
    emb = pack("tokensmith.embedding").Embedding(vectors=token_like(sd1.clip, "sd1", 1, seed=5), name=name)
    out = run(node_classes, sd1.clip, emb, " draft ", "embedding:draft beside embedding:draft")
    assert out.ui.as_dict()["text"] == (f"embedding:draft: 1 vector(s) of {shown} in 2 place(s)",)


def test_the_encoders_refusals_word_for_word(pack, sd1, node_classes):
    errors = pack("tokensmith.errors")
    emb = pack("tokensmith.embedding").Embedding(vectors=token_like(sd1.clip, "sd1", 1, seed=6))
    with pytest.raises(errors.TokenSmithError) as e:
        run(node_classes, None, emb, "draft", "embedding:draft")
    assert str(e.value) == "no CLIP connected: connect the CLIP output of your checkpoint loader"
    keyword = f"kw-{uuid.uuid4().hex[:8]}"
    for text in ("a photo", None):
        with pytest.raises(errors.TokenSmithError) as e:
            run(node_classes, sd1.clip, emb, keyword, text)
        assert str(e.value) == (f"the text does not use embedding:{keyword}: write it where the vectors go, e.g. "
                                f"'a photo of embedding:{keyword} on a table' (a space before and after it)")
