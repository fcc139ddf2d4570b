"""tokensmith.prompt_fix without ComfyUI: the rewrites of the Embedding Prompt node, name by name.
(tests/host/test_prompt_node.py judges the same rewrites with ComfyUI's own tokenizer.)"""

from __future__ import annotations

import pytest

from tokensmith.prompt_fix import EmbeddingIndex, convert_keywords, fix_prompt, problem_lines

NAMES = {"ring": "/e/ring.safetensors", "styles/deep": "/e/styles/deep.pt", "Mixed": "/e/Mixed.safetensors"}


@pytest.fixture
def index():
    return EmbeddingIndex(dict(NAMES))


def test_index_from_files_keys_names_as_comfyui_resolves_them():
    files = ["ring.safetensors", "ring.pt", "styles/deep.bin", "card.png", "gone.safetensors"]
    paths = {f: f"/e/{f}" for f in files if f != "gone.safetensors"}  # resolve() finds no file for one
    index = EmbeddingIndex.from_files(files, paths.get)
    # .safetensors is listed (sorted) first and wins, as in ComfyUI's lookup; .png keeps its extension
    assert index.paths == {"ring": "/e/ring.safetensors", "styles/deep": "/e/styles/deep.bin",
                           "card.png": "/e/card.png"}


def test_index_lookups(index):
    assert index.exact("ring") == "ring" and index.exact("ring.safetensors") == "ring"
    assert index.exact("ring.png") is None and index.exact("Ring") is None
    assert index.case_fix("RING") == "ring" and index.case_fix("mixed") == "Mixed"
    assert index.keyword("deep") == "styles/deep" and index.keyword("DEEP") == "styles/deep"
    assert index.keyword("nothing") is None
    assert index.suggest("rign") == ["ring"]


def test_ambiguous_case_is_not_guessed():
    index = EmbeddingIndex({"a/x": "/1", "b/X": "/2", "Cat": "/3", "cat": "/4"})
    assert index.case_fix("A/X") == "a/x"
    assert index.case_fix("CAT") is None  # Cat and cat: which one is meant cannot be known
    assert index.keyword("x") is None  # two files named x in different folders


@pytest.mark.parametrize("broken, fixed", [
    ("a photo,embedding:ring", "a photo, embedding:ring"),
    ("embedding:ring,red ring", "embedding:ring ,red ring"),
    ("embedding:ring:1.2 on a table", "(embedding:ring:1.2) on a table"),
    ("(embedding:ring:1.3, red)", "((embedding:ring:1.3), red)"),
    ("a photo of embedding:RING", "a photo of embedding:ring"),
    ("a picture of embedding:ring.", "a picture of embedding:ring ."),
])
def test_near_misses_are_rewritten(index, broken, fixed):
    report = fix_prompt(broken, index)
    assert report.text == fixed
    assert report.changes and report.missing == [] and report.found == {"ring": "ring"}


@pytest.mark.parametrize("good", [
    "a photo of embedding:ring, red ring",
    "(embedding:ring:1.2)",
    "(red ring, embedding:ring:1.3)",
    "embedding:ring\nsecond line",
    "red ring,(embedding:ring:0.8)",
    "no embedding here at all",
])
def test_well_formed_prompts_are_left_alone(index, good):
    report = fix_prompt(good, index)
    assert report.text == good and report.changes == []


def test_missing_names_are_reported_once_with_suggestions(index):
    report = fix_prompt("embedding:rign and embedding:rign again", index)
    assert report.referenced == ["rign", "rign"] and report.missing == ["rign"] and report.found == {}
    lines = problem_lines(report, index)
    assert lines == ["missing: embedding:rign is not in models/embeddings; ComfyUI will drop it. "
                     "Did you mean embedding:ring?"]


def test_keywords_only_whole_words(index):
    text, changes = convert_keywords("ring, red ring, (deep:1.2), my_ring_x, rings, embedding:ring", index)
    assert text == ("embedding:ring, red embedding:ring, (embedding:styles/deep:1.2), my_ring_x, rings, "
                    "embedding:ring")
    assert len(changes) == 3
    report = fix_prompt("ring", index, keywords=True)
    assert report.text == "embedding:ring" and report.changes == ["keyword 'ring' -> 'embedding:ring'"]
    assert fix_prompt("ring", index).text == "ring"


def test_escaped_parentheses_do_not_count_as_a_group(index):
    # \( is text for ComfyUI, so the weight is outside any group and gets its own parentheses
    assert fix_prompt(r"\(embedding:ring:1.2\)", index).text == r"\((embedding:ring:1.2)\)"
