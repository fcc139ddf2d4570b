"""tokensmith.comfy_reads: what each text encoder of a CLIP gets from an embedding file (ComfyUI's
load_embed rules), and the Inspect verdict / Prompt warnings made from it. tests/host/test_comfy_reads.py
checks the same rules against ComfyUI's own load_embed."""

from __future__ import annotations

import pytest

from tokensmith.comfy_reads import Slot, prompt_warnings, readings, source_for, verdict
from tokensmith.embedding import ENCODER_WIDTHS, FAMILY_ENCODERS

W = ENCODER_WIDTHS


def widths(*keys):
    return {k: W[k] for k in keys}


def slots(family, **changes):
    """The CLIP of a family; changes: {key: Slot field overrides}, e.g. t5xxl={"loaded": False}."""
    return [Slot(k, W[k], **changes.get(k, {})) for k in FAMILY_ENCODERS[family]]


def test_own_key_first_then_the_first_tensor():
    sdxl = widths("clip_l", "clip_g")
    assert source_for(sdxl, "clip_l") == "clip_l" and source_for(sdxl, "clip_g") == "clip_g"
    assert source_for(sdxl, "t5xxl") == "clip_g"  # stored first by name
    assert source_for(sdxl, "t5xxl", order=["clip_l", "clip_g"]) == "clip_l"  # a pickle's own order
    one = widths("clip_h")
    assert all(source_for(one, k) == "clip_h" for k in ("clip_l", "clip_g", "t5xxl", "qwen3_4b"))


def test_sdxl_file_on_sd3_with_t5_feeds_clip_g_rows_to_t5():
    rs = readings(widths("clip_l", "clip_g"), slots("sd3"))
    assert rs["clip_l"].used and rs["clip_g"].used and not rs["clip_l"].fallback
    t5 = rs["t5xxl"]
    assert (t5.reads, t5.width, t5.used, t5.fallback) == ("clip_g", 1280, False, True)
    text = verdict("sdxl", slots("sd3"), rs, ("clip_l", "clip_g"))
    assert text.startswith("only clip_l, clip_g uses it; ignored by t5xxl: no t5xxl key, falls back to the "
                           "first tensor (clip_g), width 1280 vs 4096")
    assert "target sd3" in text
    [line] = prompt_warnings("xl", widths("clip_l", "clip_g"), slots("sd3"))
    assert "only clip_l, clip_g gets it, t5xxl ignores it" in line and "clip_g" in line and "sd3" in line


def test_sd3_without_t5_reads_an_sdxl_file_fully():
    s = slots("sd3", t5xxl={"loaded": False})
    rs = readings(widths("clip_l", "clip_g"), s)
    assert rs["t5xxl"].reads is None and not rs["t5xxl"].active
    text = verdict("sdxl", s, rs, ("clip_l", "clip_g"))
    assert text.startswith("works on this SD3 CLIP (clip_l, clip_g)") and "t5xxl is not loaded" in text
    assert prompt_warnings("xl", widths("clip_l", "clip_g"), s) == []


def test_sd3_file_keeps_every_encoder_on_its_own_key():
    rs = readings(widths("clip_l", "clip_g", "t5xxl"), slots("sd3"))
    assert all(r.used and r.reads == k and not r.fallback for k, r in rs.items())
    assert verdict("sd3", slots("sd3"), rs, FAMILY_ENCODERS["sd3"]) == "works on this SD3 CLIP (clip_l, clip_g, t5xxl)"


def test_flux_file_on_sd3_gives_clip_g_the_clip_l_rows():
    rs = readings(widths("clip_l", "t5xxl"), slots("sd3"))
    assert (rs["clip_g"].reads, rs["clip_g"].used) == ("clip_l", False)
    assert rs["clip_l"].used and rs["t5xxl"].used


def test_sd1_file_on_flux_reaches_only_clip_l():
    rs = readings(widths("clip_l"), slots("flux"))
    assert rs["clip_l"].used and (rs["t5xxl"].reads, rs["t5xxl"].used, rs["t5xxl"].fallback) == ("clip_l", False, False)
    assert verdict("sd1", slots("flux"), rs, ("clip_l",)) == "only clip_l uses it; ignored by t5xxl: width 768 vs 4096"


@pytest.mark.parametrize("family", ["chroma", "zimage", "qwen_image", "lumina2"])
def test_single_encoder_families_read_their_own_files(family):
    key = FAMILY_ENCODERS[family][0]
    rs = readings(widths(key), slots(family))
    assert rs[key].used
    assert verdict(family, slots(family), rs, (key,)).startswith("works on this")
    # an SDXL file on such a CLIP: the first tensor, of the wrong width
    other = readings(widths("clip_l", "clip_g"), slots(family))
    assert (other[key].reads, other[key].used, other[key].fallback) == ("clip_g", False, True)


def test_a_tokenizer_without_embeddings_folder_reads_nothing():
    s = slots("qwen_image", qwen25_7b={"looks_up": False})
    rs = readings(widths("qwen25_7b"), s)
    assert rs["qwen25_7b"].reads is None
    text = verdict("qwen_image", s, rs, ("qwen25_7b",))
    assert text.startswith("will not be read") and "does not look up embedding: names" in text
    [line] = prompt_warnings("q", widths("qwen25_7b"), s)
    assert line.startswith("embedding:q: this ComfyUI's qwen25_7b tokenizer does not look up")


def test_same_width_from_another_encoder_is_flagged():
    # A pickled {t5xxl, clip_l} file (t5xxl stored first) on a 4096-wide encoder of another kind: ComfyUI
    # feeds it the T5 vectors, which fit by width only.
    s = [Slot("umt5xxl", 4096)]
    rs = readings(widths("t5xxl", "clip_l"), s, order=["t5xxl", "clip_l"])
    assert (rs["umt5xxl"].reads, rs["umt5xxl"].used, rs["umt5xxl"].fallback) == ("t5xxl", True, True)
    assert "made for another text encoder" in verdict("flux", s, rs, ("clip_l", "t5xxl"))
    lines = prompt_warnings("f", widths("t5xxl", "clip_l"), s, order=["t5xxl", "clip_l"])
    assert any("umt5xxl reads the file's t5xxl vectors" in w for w in lines)


# The sentences the Inspect node has always given for the classic families (its host test checks them
# against ComfyUI's tokenizer): kept word for word.
CLASSIC = [
    ("sdxl", "sdxl", "works on both SDXL encoders"),
    ("sd1", "sdxl", "SD1.5 embedding on SDXL: only the L side uses it (clip_g ignores it: width 768 vs 1280); "
                    "convert it to SDXL to fill the G side"),
    ("sd2", "sd1", "will be ignored: width 1024 vs 768 (SD2 embedding on SD1.5)"),
    ("sd1", "sd1", "works on this SD1.5 CLIP (clip_l)"),
    ("sdxl", "sd1", "works on this SD1.5 CLIP (clip_l); its clip_g vectors are not used (SDXL embedding on SD1.5)"),
]


@pytest.mark.parametrize(("emb_family", "clip_family", "expected"), CLASSIC)
def test_classic_verdicts(emb_family, clip_family, expected):
    keys = FAMILY_ENCODERS[emb_family]
    rs = readings(widths(*keys), slots(clip_family))
    assert verdict(emb_family, slots(clip_family), rs, keys) == expected


def test_prompt_warnings_for_classic_mismatches():
    [entirely] = prompt_warnings("h", widths("clip_h"), slots("sd1"))
    assert entirely.startswith("embedding:h is a SD2 embedding (clip_h); this SD1.5 CLIP has clip_l: ComfyUI "
                               "will ignore it entirely")
    [half] = prompt_warnings("l", widths("clip_l"), slots("sdxl"))
    assert "only clip_l gets it, clip_g ignores it" in half and "convert it to SDXL" in half
    assert prompt_warnings("xl", widths("clip_l", "clip_g"), slots("sd1")) == []
    assert prompt_warnings("xl", widths("clip_l", "clip_g"), slots("sdxl")) == []
