"""Exact behaviour of use: the refusals' wording, which extensions are cut from a file name, and
how the weight is rounded and written."""

import pytest

from tokensmith.errors import EmbeddingNameError, TokenSmithError
from tokensmith.use import LOOKUP_EXTENSIONS, format_weight, keyword_of_file, prompt_reference

RULE = "use only letters A-Z a-z, digits, '.', '_', '-' and '/' between subfolders (spaces cannot work in a prompt keyword)"


@pytest.mark.parametrize("file", ["", None, 3])
def test_no_file_is_refused_as_nothing_picked(file):
    with pytest.raises(EmbeddingNameError) as e:
        keyword_of_file(file)
    assert str(e.value) == "no embedding picked"


def test_a_file_a_prompt_cannot_name_is_refused_with_the_reason_and_what_to_do():
    with pytest.raises(EmbeddingNameError) as e:
        keyword_of_file("my dog.safetensors")
    assert str(e.value) == f"the file 'my dog.safetensors' cannot be named in a prompt ('my dog' contains ' '; {RULE}); rename the file"
    assert e.value.__cause__ is None


def test_only_one_extension_is_cut_and_the_name_check_sees_the_rest():
    """'a.pt.pt' loses one '.pt'; the remaining '.pt' is refused as an extension."""
    with pytest.raises(EmbeddingNameError) as e:
        keyword_of_file("a.pt.pt")
    assert str(e.value) == ("the file 'a.pt.pt' cannot be named in a prompt ('a.pt': leave out the file extension "
                            "(files are saved as .safetensors)); rename the file")


def test_the_lookup_extensions_are_those_comfyui_tries_in_any_case():
    assert LOOKUP_EXTENSIONS == (".safetensors", ".pt", ".bin")
    assert keyword_of_file("a.Bin") == "a"
    assert keyword_of_file("b.PT") == "b"
    assert keyword_of_file("c.SafeTensors") == "c"


def test_backslashes_become_folder_slashes():
    assert keyword_of_file("x\\y\\z.pt") == "x/y/z"


def test_format_weight_rounds_to_three_decimals_without_trailing_zeros():
    assert format_weight(1.0) == "1"
    assert format_weight(0.5) == "0.5"
    assert format_weight(1.0004) == "1"
    assert format_weight(1.0006) == "1.001"
    assert format_weight(2) == "2"
    assert format_weight("0.25") == "0.25"


def test_a_weight_that_rounds_to_one_writes_the_bare_keyword():
    assert prompt_reference("dog", 0.9996) == "embedding:dog"
    assert prompt_reference("dog") == "embedding:dog"


def test_a_weighted_reference_uses_comfyuis_parenthesis_syntax():
    assert prompt_reference("sub/dog", 0.8) == "(embedding:sub/dog:0.8)"
    assert prompt_reference("dog", "1.5") == "(embedding:dog:1.5)"


def test_the_name_is_cleaned_before_it_is_written():
    assert prompt_reference("dog.safetensors", 2) == "(embedding:dog:2)"


def test_a_name_a_prompt_cannot_carry_is_refused_by_the_name_check():
    with pytest.raises(EmbeddingNameError) as e:
        prompt_reference("my dog")
    assert str(e.value) == f"'my dog' contains ' '; {RULE}"


@pytest.mark.parametrize("weight, shown", [(-0.5, "-0.5"), (float("nan"), "nan"), (float("inf"), "inf"),
                                           (-1e-9, "-1e-09")])
def test_a_weight_below_zero_or_not_finite_is_refused_word_for_word(weight, shown):
    with pytest.raises(TokenSmithError) as e:
        prompt_reference("dog", weight)
    assert str(e.value) == f"the weight must be a number of 0 or more, got {shown}"
    assert type(e.value) is TokenSmithError


def test_a_weight_of_zero_is_accepted():
    assert prompt_reference("dog", 0) == "(embedding:dog:0)"


def test_a_negative_zero_weight_is_written_as_zero():
    """-0.0 passes the "0 or more" check; the prompt must read 0, not -0."""
    assert prompt_reference("dog", -0.0) == "(embedding:dog:0)"
    assert format_weight(-0.0) == "0"
