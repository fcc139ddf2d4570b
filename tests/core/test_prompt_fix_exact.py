"""Exact behaviour of prompt_fix: the parenthesis depth before each character, every change line
word for word, the spaces added (and not added) at the edges of the text, names cut at a sentence's
full stop only when the shorter name exists, keywords next to other characters, and the lookups of
the index (whole names, base names, suggestions)."""

import pytest

from tokensmith.prompt_fix import EmbeddingIndex, _depth_at, convert_keywords, fix_prompt, problem_lines

NAMES = {"ring": "/e/ring.safetensors", "styles/deep": "/e/styles/deep.pt", "Mixed": "/e/Mixed.safetensors"}


@pytest.fixture
def index():
    return EmbeddingIndex(dict(NAMES))


# ---------------------------------------------------------------- the parenthesis depth


@pytest.mark.parametrize("text, depth", [
    ("", [0]),
    ("a", [0, 0]),
    ("()", [0, 1, 0]),
    ("((a))", [0, 1, 2, 2, 1, 0]),
    (")a", [0, 0, 0]),  # a ')' without its '(' does not go below 0
    ("(\\)", [0, 1, 1, 1]),  # an escaped ')' is text: the group stays open
    ("(a\\)b)", [0, 1, 1, 1, 1, 1, 0]),
    ("\\((a)", [0, 0, 0, 1, 1, 0]),
    ("(\\a)", [0, 1, 1, 1, 0]),  # a backslash before anything but a parenthesis escapes nothing
    ("a\\", [0, 0, 0]),  # a backslash at the end
])
def test_depth_before_each_character_as_comfyui_counts_it(text, depth):
    assert _depth_at(text) == depth


# ---------------------------------------------------------------- fix_prompt


def test_a_case_fix_is_reported_word_for_word(index):
    report = fix_prompt("embedding:RING", index)
    assert report.text == "embedding:ring"
    assert report.changes == ["'embedding:RING' -> 'embedding:ring' (file names are case-sensitive)"]


def test_the_spaces_added_are_reported_word_for_word(index):
    report = fix_prompt("a,embedding:ring;b", index)
    assert report.text == "a, embedding:ring ;b"
    assert report.changes == ["space added before 'embedding:ring' (after ',')",
                              "space added after 'embedding:ring' (before ';')"]


def test_a_space_is_added_after_any_letter_before_the_prefix(index):
    assert fix_prompt("Xembedding:ring", index).text == "X embedding:ring"


def test_a_reference_closing_a_group_gets_no_space(index):
    report = fix_prompt("(embedding:ring)", index)
    assert report.text == "(embedding:ring)" and report.changes == []


def test_a_comma_ends_a_name_only_before_whitespace_or_the_end(index):
    assert fix_prompt("embedding:ring,", index).text == "embedding:ring,"
    assert fix_prompt("embedding:ring, ", index).text == "embedding:ring, "
    assert fix_prompt("embedding:ring,x", index).text == "embedding:ring ,x"


def test_a_weight_is_wrapped_and_the_change_reported_word_for_word(index):
    report = fix_prompt("embedding:ring:1.25", index)
    assert report.text == "(embedding:ring:1.25)"
    assert report.changes == ["'embedding:ring:1.25' -> '(embedding:ring:1.25)'"]


def test_a_prefix_without_a_name_is_left_alone_weight_and_all(index):
    for text in ("embedding: ring", "embedding:", "embedding::1.2"):
        report = fix_prompt(text, index)
        assert (report.text, report.referenced, report.missing, report.changes) == (text, [], [], [])


def test_a_trailing_full_stop_is_cut_only_when_the_shorter_name_exists(index):
    report = fix_prompt("embedding:gone.", index)
    assert (report.text, report.referenced, report.missing) == ("embedding:gone.", ["gone."], ["gone."])


def test_a_name_ending_in_a_full_stop_that_exists_is_kept_whole():
    index = EmbeddingIndex({"ring": "/e/ring.pt", "ring.": "/e/ring..pt"})
    report = fix_prompt("embedding:ring.", index)
    assert (report.text, report.found) == ("embedding:ring.", {"ring.": "ring."})


def test_a_prefix_inside_a_longer_name_is_skipped_and_the_references_after_it_still_read(index):
    report = fix_prompt("embedding:xembedding:y embedding:ring", index)
    assert report.referenced == ["xembedding", "ring"] and report.found == {"ring": "ring"}


# ---------------------------------------------------------------- keywords


def test_text_before_the_first_keyword_and_without_one_is_kept(index):
    assert convert_keywords("hello", index) == ("hello", [])
    assert convert_keywords("a ring", index) == ("a embedding:ring", ["'ring' -> 'embedding:ring'"])


def test_a_keyword_after_punctuation_gets_one_space(index):
    assert convert_keywords("a,ring", index)[0] == "a, embedding:ring"
    assert convert_keywords("(ring)", index)[0] == "(embedding:ring)"


def test_a_keyword_before_a_backslash_or_after_a_colon_is_part_of_another_token(index):
    assert convert_keywords("ring\\x", index) == ("ring\\x", [])
    assert convert_keywords("x:ring ring", index)[0] == "x:ring embedding:ring"


def test_a_sentences_full_stop_after_a_keyword_stays_text(index):
    assert convert_keywords("a ring.", index)[0] == "a embedding:ring."


def test_only_full_stops_are_cut_from_a_keyword():
    index = EmbeddingIndex({"styleX": "/e/styleX.pt"})
    assert convert_keywords("styleX", index)[0] == "embedding:styleX"


def test_the_word_embedding_before_a_colon_is_the_prefix_not_a_keyword():
    index = EmbeddingIndex({"embedding": "/e/embedding.pt", "ring": "/e/ring.pt"})
    assert convert_keywords("embedding:ring embedding ring", index)[0] == (
        "embedding:ring embedding:embedding embedding:ring")


def test_keywords_after_a_reference_are_still_converted(index):
    assert convert_keywords("embedding:x ring", index)[0] == "embedding:x embedding:ring"


# ---------------------------------------------------------------- the index


def test_a_keyword_is_a_whole_name_with_its_folders_or_a_base_name():
    index = EmbeddingIndex({"a/b/c": "/e/a/b/c.pt"})
    assert index.keyword("a/b/c") == "a/b/c" and index.keyword("A/B/C") == "a/b/c"
    assert index.keyword("c") == "a/b/c" and index.keyword("b/c") is None


def test_at_most_three_suggestions_the_closest_first():
    """Similarity to 'ring' (difflib's ratio, 2 x matches / total length): rings 8/9, ringxx 8/10,
    ringxxx 8/11, ringxxxx 8/12 (still above the 0.6 cutoff)."""
    index = EmbeddingIndex({n: f"/e/{n}.pt" for n in ("ringxxxx", "ringxx", "rings", "ringxxx")})
    assert index.suggest("ring") == ["rings", "ringxx", "ringxxx"]


def test_a_missing_name_without_close_names_has_no_hint(index):
    report = fix_prompt("embedding:zzzzzz", index)
    assert problem_lines(report, index) == [
        "missing: embedding:zzzzzz is not in models/embeddings; ComfyUI will drop it."]


def test_several_suggestions_are_listed_with_commas():
    index = EmbeddingIndex({"ringxx": "/1", "rings": "/2"})
    report = fix_prompt("embedding:ring", index)
    assert problem_lines(report, index) == [
        "missing: embedding:ring is not in models/embeddings; ComfyUI will drop it. "
        "Did you mean embedding:rings, embedding:ringxx?"]
