"""Caption templates: the object and style presets use the captions when there are some (A1111's
subject_filewords / style_filewords), give exactly the old prompts when there are none, and a
template that ignores given captions is reported."""

import random

import pytest

from tokensmith.templates import (
    NEGATIVE_TEMPLATES,
    OBJECT_TEMPLATES,
    STYLE_TEMPLATES,
    ignored_captions_warning,
    negative_embedding_note,
    render,
    shape_caption,
    split_captions,
    template_lines,
)

BARE = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}


def prompts(preset: str, captions: list[str], seed: int, count: int = 200, shuffle=False, dropout=0.0) -> list[str]:
    """Prompts drawn the way the trainer draws them: a seeded template line per prompt, then the caption."""
    lines = template_lines(preset)
    rng = random.Random(seed)
    out = []
    for i in range(count):
        line = lines[rng.randrange(len(lines))]
        out.append(render(line, shape_caption(captions[i % len(captions)], rng, shuffle, dropout)))
    return out


@pytest.mark.parametrize("preset", ["object", "style"])
def test_presets_put_the_caption_after_the_prompt(preset):
    lines = template_lines(preset)
    assert len(lines) == len(BARE[preset])
    assert all(line.endswith(", [filewords]") and "[name]" in line for line in lines)
    for line, bare in zip(lines, BARE[preset], strict=True):
        assert render(line, "my dog, on grass") == f"{bare}, my dog, on grass"


def test_object_prompt_reads_like_a1111_subject_filewords():
    assert render(template_lines("object")[0], "a brown dog") == "a photo of [name], a brown dog"
    assert render(template_lines("style")[0], "a harbour at dusk") == "a painting in the style of [name], a harbour at dusk"


@pytest.mark.parametrize("preset", ["object", "style", "negative"])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_without_captions_the_prompts_are_exactly_the_bare_lines(preset, seed):
    """No captions (or all empty): the same seeded sequence of prompts as the presets without
    [filewords] gave, character for character."""
    bare_lines = BARE.get(preset, ["[name]", "[name]"])  # negative: "[filewords], [name]" without a caption is "[name]"
    rng = random.Random(seed)
    expected = [bare_lines[rng.randrange(len(bare_lines))] for _ in range(200)]
    assert prompts(preset, [""], seed) == expected
    assert prompts(preset, split_captions("", 3), seed) == expected
    assert "[filewords]" not in "".join(expected) and not any(p.endswith(",") or ", ," in p for p in expected)


def test_captions_reach_every_object_prompt_and_are_shaped_per_prompt():
    captions = ["red collar, sitting", "on a sofa, sleeping"]
    out = prompts("object", captions, seed=3)
    assert all(p.startswith(("a ", "an ")) and "[name]" in p for p in out)
    assert all(("red collar" in p and "sitting" in p) or ("on a sofa" in p and "sleeping" in p) for p in out)
    shuffled = prompts("object", captions, seed=3, shuffle=True)
    assert shuffled != out and {p.split(", ", 1)[0] for p in shuffled} <= {p.split(", ", 1)[0] for p in out}
    # tag dropout can drop a caption's every tag: the prompt is then the bare line, with no stray comma
    dropped = prompts("object", ["one"], seed=5, dropout=0.9)
    assert any(p in OBJECT_TEMPLATES for p in dropped) and any(p.endswith(", one") for p in dropped)


def test_negative_preset_uses_captions_in_half_its_lines():
    assert NEGATIVE_TEMPLATES == ["[name]", "[filewords], [name]"]
    out = set(prompts("negative", ["blurry, jpeg artefacts"], seed=0))
    assert out == {"[name]", "blurry, jpeg artefacts, [name]"}


@pytest.mark.parametrize("preset,custom", [("object", ""), ("style", ""), ("negative", ""),
                                           ("custom", "a [name]\n[filewords], art of [name]")])
def test_templates_that_use_captions_give_no_warning(preset, custom):
    assert ignored_captions_warning(template_lines(preset, custom), ["a dog", "a cat"]) == ""


def test_a_template_without_filewords_is_reported_when_captions_are_given():
    lines = template_lines("custom", "a photo of [name]\na drawing of [name]")
    message = ignored_captions_warning(lines, ["a dog", "", "a cat"])
    assert "no [filewords]" in message and "2 captions are not used" in message
    assert "a photo of [name], [filewords]" in message  # says what to write instead
    assert "caption is not used" in ignored_captions_warning(lines, ["a dog"])
    # nothing to report without captions (none, or only empty or blank lines)
    assert ignored_captions_warning(lines, []) == ""
    assert ignored_captions_warning(lines, ["", "  "]) == ""
    assert ignored_captions_warning(lines, split_captions("", 4)) == ""


def test_negative_embedding_note_names_the_families_sampled_without_cfg():
    flux = negative_embedding_note("negative", "flux")
    assert "no effect" in flux and "Flux.1" in flux
    assert "Turbo" in negative_embedding_note("negative", "zimage")
    # families sampled with CFG, and other templates, get no note
    for family in ("sd1", "sd2", "sdxl", "sd3", "chroma"):
        assert negative_embedding_note("negative", family) == ""
    for template in ("object", "style", "custom"):
        assert negative_embedding_note(template, "flux") == ""
