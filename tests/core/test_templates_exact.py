"""Exact behaviour of templates: refusal messages word for word, the custom template's limits,
caption splitting and shaping at their boundaries, rendering, and the warnings' wording."""

import random

from tests.core.refusals import refused
from tokensmith.templates import (
    MAX_LINE_LENGTH,
    MAX_TEMPLATE_LINES,
    NEGATIVE_TEMPLATES,
    OBJECT_TEMPLATES,
    STYLE_TEMPLATES,
    ignored_captions_warning,
    negative_embedding_note,
    render,
    shape_caption,
    split_captions,
    template_lines,
    with_filewords,
)

# ---------------------------------------------------------------- presets


def test_with_filewords_appends_the_caption_only_where_it_is_missing():
    """A line without [filewords] gets ', [filewords]'; one that has it is kept as written."""
    assert with_filewords(["a [name]", "[filewords] of [name]"]) == ["a [name], [filewords]", "[filewords] of [name]"]


def test_object_and_style_presets_are_their_lists_with_the_caption_after():
    assert template_lines("object") == [f"{line}, [filewords]" for line in OBJECT_TEMPLATES]
    assert template_lines("style") == [f"{line}, [filewords]" for line in STYLE_TEMPLATES]
    assert template_lines("negative") == ["[name]", "[filewords], [name]"] == NEGATIVE_TEMPLATES


def test_a_preset_list_is_a_copy_the_caller_may_change():
    lines = template_lines("negative")
    lines.append("changed")
    assert template_lines("negative") == ["[name]", "[filewords], [name]"]


def test_an_unknown_preset_is_refused_with_the_choices():
    with refused("unknown template preset 'Object'; choose one of ['negative', 'object', 'style'] or 'custom'"):
        template_lines("Object")


# ---------------------------------------------------------------- custom templates


def test_custom_lines_are_stripped_and_blank_ones_skipped():
    assert template_lines("custom", "  a [name]  \n\n   \n[name] b\n") == ["a [name]", "[name] b"]


def test_custom_preset_ignores_the_text_of_other_presets():
    """Custom text is read only with preset 'custom'."""
    assert template_lines("negative", "no name here") == ["[name]", "[filewords], [name]"]


def test_an_empty_custom_template_is_refused():
    with refused("the custom template is empty: write one prompt per line, with [name] where the keyword goes"):
        template_lines("custom", " \n\t\n")


def test_a_custom_line_without_name_is_refused_naming_the_first_one():
    with refused("every template line needs [name] (where the embedding goes); this one has none: 'b'"):
        template_lines("custom", "a [name]\nb\nc")


def test_custom_template_of_exactly_the_line_limit_is_accepted():
    assert len(template_lines("custom", "[name]\n" * MAX_TEMPLATE_LINES)) == MAX_TEMPLATE_LINES


def test_custom_template_over_the_line_limit_is_refused_with_the_count():
    with refused("the custom template has 1001 lines; at most 1000"):
        template_lines("custom", "[name]\n" * (MAX_TEMPLATE_LINES + 1))


def test_custom_template_of_exactly_the_length_limit_is_accepted_and_one_more_refused():
    """The length limit is lines times line length, counted in characters of the whole text."""
    limit = MAX_TEMPLATE_LINES * MAX_LINE_LENGTH
    text = "[name]" + " " * (limit - len("[name]"))
    assert template_lines("custom", text) == ["[name]"]
    with refused("the custom template is too long"):
        template_lines("custom", text + " ")


# ---------------------------------------------------------------- captions


def test_split_captions_gives_one_stripped_line_per_image():
    assert split_captions(" a \nb\n", 2) == ["a", "b"]


def test_a_single_caption_line_is_used_for_every_image():
    assert split_captions("red cat\n\n\n", 3) == ["red cat", "red cat", "red cat"]


def test_no_caption_text_gives_empty_captions():
    assert split_captions("", 2) == ["", ""]
    assert split_captions(None, 2) == ["", ""]
    assert split_captions("\n \n", 2) == ["", ""]


def test_a_blank_caption_line_inside_the_text_stays_an_empty_caption():
    """Only trailing blank lines are dropped; an inner one is the caption of its image."""
    assert split_captions("a\n\nc", 3) == ["a", "", "c"]


def test_a_wrong_number_of_caption_lines_is_refused_with_both_counts():
    with refused("got 2 caption lines for 3 images: give one line per image, or one line for all"):
        split_captions("a\nb", 3)


def test_shape_caption_without_shuffle_or_dropout_returns_the_caption_unchanged():
    caption = "a ,b,, c"
    assert shape_caption(caption, random.Random(0), shuffle=False, dropout=0.0) == caption
    assert shape_caption(caption, random.Random(0), shuffle=False, dropout=-0.5) == caption
    assert shape_caption("", random.Random(0), shuffle=True, dropout=0.5) == ""


def test_shape_caption_with_full_dropout_keeps_only_the_first_tags():
    assert shape_caption("a, b, c, d", random.Random(0), shuffle=False, dropout=1.0, keep_first=2) == "a, b"
    assert shape_caption("a, b, c, d", random.Random(0), shuffle=False, dropout=1.0) == ""


def test_shape_caption_dropout_draws_per_tag_and_keeps_those_at_or_above_the_rate():
    """A tag stays when its draw is >= dropout; the draws come from the given rng in tag order."""
    rng = random.Random(7)
    expected_draws = [rng.random() for _ in range(4)]
    rate = sorted(expected_draws)[2]
    kept = [t for t, d in zip("abcd", expected_draws, strict=True) if d >= rate]
    assert shape_caption("a, b, c, d", random.Random(7), shuffle=False, dropout=rate) == ", ".join(kept)
    assert len(kept) == 2


def test_shape_caption_shuffle_reorders_only_the_tags_after_keep_first():
    rng = random.Random(3)
    tail = ["c", "d", "e", "f", "g"]
    rng.shuffle(tail)
    out = shape_caption("a, b, c, d, e, f, g", random.Random(3), shuffle=True, dropout=0.0, keep_first=2)
    assert out == ", ".join(["a", "b", *tail])
    assert tail != ["c", "d", "e", "f", "g"]


def test_shape_caption_with_shuffle_tidies_the_tags():
    """Tags are stripped and empty ones dropped before shaping."""
    out = shape_caption(" x ,, y ", random.Random(0), shuffle=True, dropout=0.0)
    assert sorted(out.split(", ")) == ["x", "y"]


# ---------------------------------------------------------------- render


def test_render_puts_the_caption_for_filewords_and_keeps_name():
    assert render("a photo of [name], [filewords]", "red, big") == "a photo of [name], red, big"


def test_render_with_an_empty_caption_drops_the_empty_parts():
    assert render("[filewords], [name]", "") == "[name]"
    assert render("a [name] ,  , b", "") == "a [name], b"


# ---------------------------------------------------------------- warnings


def test_one_ignored_caption_is_reported_in_the_singular():
    assert ignored_captions_warning(["a [name]"], ["", "cat", " "]) == (
        "the template has no [filewords], so the caption is not used in training: add [filewords] to the "
        "template lines (e.g. 'a photo of [name], [filewords]'), or choose the object or style preset")


def test_several_ignored_captions_are_reported_with_their_count():
    assert ignored_captions_warning(["a [name]", "b [name]"], ["cat", "dog"]) == (
        "the template has no [filewords], so the 2 captions are not used in training: add [filewords] to the "
        "template lines (e.g. 'a photo of [name], [filewords]'), or choose the object or style preset")


def test_no_warning_without_captions_or_when_one_line_uses_them():
    assert ignored_captions_warning(["a [name]"], ["", "  "]) == ""
    assert ignored_captions_warning(["a [name]", "[name], [filewords]"], ["cat"]) == ""


def test_negative_embedding_note_for_flux_and_zimage_word_for_word():
    tail = " (use it with a CFG above 1, or train an object or style embedding)"
    assert negative_embedding_note("negative", "flux") == (
        "Flux.1 dev and schnell are guidance-distilled and sample at CFG 1, where the negative prompt is "
        "not used: a negative embedding trained here has no effect on them" + tail)
    assert negative_embedding_note("negative", "zimage") == (
        "Z-Image Turbo samples at CFG 1, where the negative prompt is not used: a negative embedding "
        "works on the Z-Image base model (CFG above 1) only" + tail)


def test_negative_embedding_note_is_empty_for_other_templates_or_families():
    assert negative_embedding_note("object", "flux") == ""
    assert negative_embedding_note("negative", "sdxl") == ""


class _Fixed(random.Random):
    """An rng whose every draw is the same number."""

    def __init__(self, value: float):
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_a_tag_whose_draw_equals_the_dropout_rate_is_kept():
    assert shape_caption("a, b", _Fixed(0.5), shuffle=False, dropout=0.5) == "a, b"
    assert shape_caption("a, b", _Fixed(0.4999), shuffle=False, dropout=0.5) == ""


def test_zero_dropout_draws_nothing_from_the_rng():
    """With dropout 0 the shuffle sees the rng untouched."""
    rng = random.Random(11)
    out = shape_caption("a, b, c, d, e", rng, shuffle=True, dropout=0.0)
    tail = ["a", "b", "c", "d", "e"]
    random.Random(11).shuffle(tail)
    assert out == ", ".join(tail)


def test_custom_preset_without_text_is_refused_as_empty():
    with refused("the custom template is empty: write one prompt per line, with [name] where the keyword goes"):
        template_lines("custom")
