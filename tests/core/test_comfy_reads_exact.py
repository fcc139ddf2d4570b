"""Exact behaviour of comfy_reads: each verdict and Prompt-node warning as a whole sentence, for each
of their branches (entirely ignored, partly ignored with and without a fix, fallbacks, encoders not
loaded or not looking names up, unknown families named by their keys), and a reading's own fields."""

from __future__ import annotations

from tokensmith.comfy_reads import Reading, Slot, prompt_warnings, read_by, readings, source_for, verdict
from tokensmith.embedding import ENCODER_WIDTHS, FAMILY_ENCODERS

W = ENCODER_WIDTHS
T5_HINT = "convert it to SD3 (Convert Embedding, target sd3) to give T5 its own vectors"


def widths(*keys):
    return {k: W[k] for k in keys}


def slots(family, **changes):
    return [Slot(k, W[k], **changes.get(k, {})) for k in FAMILY_ENCODERS[family]]


def _verdict(emb_family, clip, file_widths=None):
    keys = FAMILY_ENCODERS[emb_family]
    file_widths = file_widths or widths(*keys)
    return verdict(emb_family, clip, readings(file_widths, clip), keys)


# ---------------------------------------------------------------- readings


def test_a_reading_as_a_dict_and_described_with_and_without_fallback():
    r = Reading("t5xxl", 4096, "clip_g", 1280, False, True)
    assert r.as_dict() == {"reads": "clip_g", "width": 1280, "used": False, "fallback": True}
    assert r.describe() == "t5xxl: no t5xxl key, falls back to the first tensor (clip_g), width 1280 vs 4096"
    assert Reading("clip_g", 1280, "clip_l", 768, False, False).describe() == "clip_g: width 768 vs 1280"


def test_an_encoder_that_is_not_loaded_or_does_not_look_up_reads_nothing():
    for slot in (Slot("clip_l", 768, loaded=False), Slot("clip_l", 768, looks_up=False),
                 Slot("clip_l", 768, looks_up=False, loaded=False)):
        assert read_by(widths("clip_l"), slot) == Reading("clip_l", 768, None, None, False, False)


def test_a_one_tensor_file_is_no_fallback_and_a_missing_key_in_a_larger_one_is():
    assert read_by(widths("clip_h"), Slot("clip_l", 768)) == Reading("clip_l", 768, "clip_h", 1024, False, False)
    assert read_by(widths("clip_l", "clip_g"), Slot("clip_l", 768)) == Reading("clip_l", 768, "clip_l", 768, True, False)
    assert read_by(widths("clip_l", "t5xxl"), Slot("clip_g", 1280)) == Reading("clip_g", 1280, "clip_l", 768, False, True)


def test_the_stored_order_decides_only_among_the_files_keys():
    file = widths("clip_l", "t5xxl")
    assert source_for(file, "clip_g", order=["other", "t5xxl", "clip_l"]) == "t5xxl"
    assert source_for(file, "clip_g", order=["other"]) == "clip_l"
    assert source_for(file, "clip_g", order=[]) == "clip_l"


# ---------------------------------------------------------------- verdicts


def test_an_sdxl_file_on_sd3_verdict_word_for_word():
    assert _verdict("sdxl", slots("sd3")) == (
        "only clip_l, clip_g uses it; ignored by t5xxl: no t5xxl key, falls back to the first tensor (clip_g), "
        f"width 1280 vs 4096; {T5_HINT}")


def test_an_sd1_file_on_sd3_verdict_word_for_word():
    assert _verdict("sd1", slots("sd3")) == (
        f"only clip_l uses it; ignored by clip_g: width 768 vs 1280; t5xxl: width 768 vs 4096; {T5_HINT}")


def test_a_partly_ignored_file_without_a_fix_has_no_hint():
    assert _verdict("sd1", slots("flux")) == "only clip_l uses it; ignored by t5xxl: width 768 vs 4096"


def test_sd3_without_t5_verdict_word_for_word():
    assert _verdict("sdxl", slots("sd3", t5xxl={"loaded": False})) == (
        "works on this SD3 CLIP (clip_l, clip_g); t5xxl is not loaded in this CLIP, so it reads nothing")


def test_a_tokenizer_without_lookups_verdict_word_for_word():
    assert _verdict("qwen_image", slots("qwen_image", qwen25_7b={"looks_up": False})) == (
        "will not be read (Qwen-Image embedding on Qwen-Image); this ComfyUI's qwen25_7b tokenizer does not look "
        "up embedding: names (they are read as plain words)")


def test_two_ignored_encoders_verdict_word_for_word():
    assert _verdict("sd2", slots("sdxl")) == (
        "will be ignored: clip_l: width 1024 vs 768; clip_g: width 1024 vs 1280 (SD2 embedding on SDXL)")


def test_one_ignored_fallback_verdict_names_the_fallback():
    assert _verdict("sdxl", slots("sd2")) == (
        "will be ignored: clip_h: no clip_h key, falls back to the first tensor (clip_g), width 1280 vs 1024 "
        "(SDXL embedding on SD2)")


def test_a_same_width_fallback_verdict_word_for_word():
    s = [Slot("umt5xxl", 4096)]
    rs = readings(widths("t5xxl", "clip_l"), s, order=["t5xxl", "clip_l"])
    assert verdict("flux", s, rs, ("clip_l", "t5xxl")) == (
        "works on this unknown CLIP (umt5xxl); its clip_l vectors are not used (Flux.1 embedding on unknown); "
        "umt5xxl reads the file's t5xxl vectors (no umt5xxl key: ComfyUI falls back to the first tensor); same "
        "width, but made for another text encoder")


def test_one_sdxl_encoder_alone_is_not_both():
    s = [Slot("clip_l", 768), Slot("clip_g", 1280, loaded=False)]
    assert _verdict("sdxl", s) == (
        "works on this SDXL CLIP (clip_l); its clip_g vectors are not used (SDXL embedding on SDXL); clip_g is not "
        "loaded in this CLIP, so it reads nothing")


def test_an_sd1_file_on_sdxl_g_only_is_ignored_not_half_used():
    assert _verdict("sd1", slots("sdxl_g")) == "will be ignored: width 768 vs 1280 (SD1.5 embedding on SDXL (G only))"


# ---------------------------------------------------------------- the Prompt node's warnings


def test_an_sdxl_file_on_sd3_warning_word_for_word():
    assert prompt_warnings("xl", widths("clip_l", "clip_g"), slots("sd3")) == [
        "embedding:xl is a SDXL embedding (clip_l, clip_g) used on SD3: only clip_l, clip_g gets it, t5xxl ignores "
        "it (t5xxl: no t5xxl key, falls back to the first tensor (clip_g), width 1280 vs 4096; ComfyUI logs 'shape "
        f"mismatch'). To fix: {T5_HINT}."]


def test_an_sd1_file_on_sdxl_warning_word_for_word():
    assert prompt_warnings("l", widths("clip_l"), slots("sdxl")) == [
        "embedding:l is a SD1.5 embedding (clip_l) used on SDXL: only clip_l gets it, clip_g ignores it (clip_g: "
        "width 768 vs 1280; ComfyUI logs 'shape mismatch'). To fix: convert it to SDXL to fill the G side."]


def test_a_partly_used_file_without_a_fix_has_no_fix_sentence():
    assert prompt_warnings("l", widths("clip_l"), slots("flux")) == [
        "embedding:l is a SD1.5 embedding (clip_l) used on Flux.1: only clip_l gets it, t5xxl ignores it (t5xxl: "
        "width 768 vs 4096; ComfyUI logs 'shape mismatch')."]


def test_an_entirely_ignored_file_warning_word_for_word():
    assert prompt_warnings("h", widths("clip_h"), slots("sdxl")) == [
        "embedding:h is a SD2 embedding (clip_h); this SDXL CLIP has clip_l, clip_g: ComfyUI will ignore it "
        "entirely (clip_l: width 1024 vs 768; clip_g: width 1024 vs 1280). Use an embedding made for SDXL (or train "
        "one with TokenSmith on this checkpoint)."]


def test_unknown_files_and_clips_are_named_by_their_keys():
    assert prompt_warnings("u", {"a": 5, "b": 6}, [Slot("x1", 7), Slot("x2", 8)]) == [
        "embedding:u is a a+b embedding (a, b); this x1+x2 CLIP has x1, x2: ComfyUI will ignore it entirely (x1: no "
        "x1 key, falls back to the first tensor (a), width 5 vs 7; x2: no x2 key, falls back to the first tensor "
        "(a), width 5 vs 8). Use an embedding made for x1+x2 (or train one with TokenSmith on this checkpoint)."]


def test_a_same_width_fallback_warning_and_a_lookup_note_word_for_word():
    s = [Slot("umt5xxl", 4096), Slot("qwen3_4b", 2560, looks_up=False), Slot("clip_l", 768, loaded=False)]
    assert prompt_warnings("f", widths("t5xxl", "clip_l"), s, order=["t5xxl", "clip_l"]) == [
        "embedding:f: umt5xxl reads the file's t5xxl vectors (no umt5xxl key: ComfyUI falls back to the first "
        "tensor); same width, but made for another text encoder",
        "embedding:f: this ComfyUI's qwen3_4b tokenizer does not look up embedding: names (they are read as plain "
        "words)"]


def test_nothing_is_said_when_every_encoder_gets_its_own_vectors():
    assert prompt_warnings("x", widths("clip_l", "clip_g", "t5xxl"), slots("sd3")) == []


def test_every_note_after_an_unloaded_encoder_is_still_given():
    s = [Slot("clip_l", 768, loaded=False), Slot("clip_g", 1280, looks_up=False), Slot("t5xxl", 4096, looks_up=False)]
    assert prompt_warnings("x", widths("clip_l"), s) == [
        "embedding:x: this ComfyUI's clip_g tokenizer does not look up embedding: names (they are read as plain words)",
        "embedding:x: this ComfyUI's t5xxl tokenizer does not look up embedding: names (they are read as plain words)"]


def test_two_ignored_encoders_of_a_partly_used_file_warning_word_for_word():
    assert prompt_warnings("l", widths("clip_l"), slots("sd3")) == [
        "embedding:l is a SD1.5 embedding (clip_l) used on SD3: only clip_l gets it, clip_g, t5xxl ignores it (clip_g: "
        "width 768 vs 1280; t5xxl: width 768 vs 4096; ComfyUI logs 'shape mismatch'). To fix: "
        f"{T5_HINT}."]


def test_two_unused_encoders_of_the_file_are_listed():
    assert _verdict("sd3", slots("sd1")) == (
        "works on this SD1.5 CLIP (clip_l); its clip_g, t5xxl vectors are not used (SD3 embedding on SD1.5)")


def test_only_an_sd1_file_on_sdxl_gets_the_half_used_sentence():
    assert _verdict("flux", slots("sdxl")) == (
        "only clip_l uses it; ignored by clip_g: no clip_g key, falls back to the first tensor (clip_l), width 768 "
        "vs 1280")
