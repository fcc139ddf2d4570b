"""tokensmith.use: the `embedding:` text for a listed file, with a prompt weight."""

from __future__ import annotations

import pytest

from tokensmith.errors import EmbeddingNameError, TokenSmithError
from tokensmith.use import keyword_of_file, prompt_reference


@pytest.mark.parametrize("file, keyword", [
    ("dog.safetensors", "dog"), ("old.pt", "old"), ("diff.bin", "diff"), ("sub/ink.v2.safetensors", "sub/ink.v2"),
    ("sub\\ink.SAFETENSORS", "sub/ink"), ("bare", "bare"),
])
def test_keyword_of_file(file, keyword):
    assert keyword_of_file(file) == keyword


@pytest.mark.parametrize("file", ["my dog.safetensors", "(x).pt", "a:b.bin", "", "../x.pt", "/abs/x.pt"])
def test_names_a_prompt_cannot_carry_are_refused(file):
    with pytest.raises(EmbeddingNameError):
        keyword_of_file(file)


@pytest.mark.parametrize("weight, text", [
    (1.0, "embedding:dog"), (1.0004, "embedding:dog"), (1.2, "(embedding:dog:1.2)"), (0.85, "(embedding:dog:0.85)"),
    (0.0, "(embedding:dog:0)"), (2, "(embedding:dog:2)"), (1.23456, "(embedding:dog:1.235)"),
])
def test_prompt_reference(weight, text):
    assert prompt_reference("dog", weight) == text


@pytest.mark.parametrize("weight", [-0.5, float("nan"), float("inf")])
def test_bad_weights_are_refused(weight):
    with pytest.raises(TokenSmithError):
        prompt_reference("dog", weight)
