"""Exact behaviour of convert: each refusal word for word, the vectors each conversion keeps, adds
as zeros or takes from the caller (shape checked, 1-D accepted, copied), and that results are copies."""


import torch

from tests.core import refusals
from tokensmith.convert import CONVERT_TARGETS, convert_to, to_sd1, to_sd3, to_sdxl
from tokensmith.embedding import ENCODER_WIDTHS, FAMILY_ENCODERS, Embedding
from tokensmith.errors import FamilyMismatchError


def refused(message: str):
    return refusals.refused(message, FamilyMismatchError)


def emb_of(family, n=2, name="x"):
    g = torch.Generator().manual_seed(1)
    return Embedding({k: torch.randn(n, ENCODER_WIDTHS[k], generator=g) for k in FAMILY_ENCODERS[family]}, name=name)


# ---------------------------------------------------------------- to_sdxl


def test_sd1_to_sdxl_keeps_l_and_adds_zero_g():
    sd1 = emb_of("sd1")
    xl = to_sdxl(sd1)
    assert xl.encoders == ("clip_l", "clip_g")
    assert torch.equal(xl.vectors["clip_l"], sd1.vectors["clip_l"])
    assert torch.equal(xl.vectors["clip_g"], torch.zeros(2, 1280))


def test_sd1_to_sdxl_takes_given_g_vectors_as_an_fp32_copy():
    sd1 = emb_of("sd1")
    g = torch.ones(2, 1280, dtype=torch.float64)
    xl = to_sdxl(sd1, g)
    assert xl.vectors["clip_g"].dtype == torch.float32
    assert torch.equal(xl.vectors["clip_g"], torch.ones(2, 1280))
    g.fill_(5)
    assert torch.equal(xl.vectors["clip_g"], torch.ones(2, 1280))


def test_sd1_to_sdxl_accepts_one_g_vector_as_1d_for_one_l_vector():
    xl = to_sdxl(emb_of("sd1", n=1), torch.full((1280,), 2.0))
    assert torch.equal(xl.vectors["clip_g"], torch.full((1, 1280), 2.0))


def test_sd1_to_sdxl_refuses_g_vectors_of_the_wrong_shape():
    with refused("G vectors must have shape [2, 1280] to pair with 2 L vectors; got [3, 1280]"):
        to_sdxl(emb_of("sd1"), torch.zeros(3, 1280))
    with refused("G vectors must have shape [2, 1280] to pair with 2 L vectors; got [1, 1280]"):
        to_sdxl(emb_of("sd1"), torch.zeros(1280))


def test_sdxl_and_sd3_to_sdxl_keep_their_clip_sides_as_copies():
    for family in ("sdxl", "sd3"):
        src = emb_of(family)
        xl = to_sdxl(src, torch.ones(2, 1280))
        assert xl.encoders == ("clip_l", "clip_g")
        assert torch.equal(xl.vectors["clip_g"], src.vectors["clip_g"])
        assert torch.equal(xl.vectors["clip_l"], src.vectors["clip_l"])
        xl.vectors["clip_l"].fill_(9)
        assert not torch.equal(src.vectors["clip_l"], xl.vectors["clip_l"])


def test_other_families_cannot_become_sdxl():
    with refused("only an SD1 (clip_l) embedding can become SDXL; 'x' is flux (clip_l, t5xxl)"):
        to_sdxl(emb_of("flux"))


# ---------------------------------------------------------------- to_sd1


def test_to_sd1_keeps_only_the_l_side_as_a_copy():
    for family in ("sd1", "sdxl", "sd3", "flux"):
        src = emb_of(family)
        sd1 = to_sd1(src)
        assert sd1.encoders == ("clip_l",)
        assert torch.equal(sd1.vectors["clip_l"], src.vectors["clip_l"])
        sd1.vectors["clip_l"].fill_(9)
        assert not torch.equal(src.vectors["clip_l"], sd1.vectors["clip_l"])


def test_an_embedding_without_clip_l_has_no_sd1_side():
    with refused("only embeddings with clip_l vectors (SD1, SDXL, SD3, Flux.1) have an SD1 side; "
                 "'x' is sd2 (clip_h)"):
        to_sd1(emb_of("sd2"))


# ---------------------------------------------------------------- to_sd3


def test_sd1_to_sd3_fills_g_and_t5_with_zeros_or_the_given_t5():
    sd1 = emb_of("sd1")
    out = to_sd3(sd1)
    assert out.encoders == ("clip_l", "clip_g", "t5xxl")
    assert torch.equal(out.vectors["clip_l"], sd1.vectors["clip_l"])
    assert torch.equal(out.vectors["clip_g"], torch.zeros(2, 1280))
    assert torch.equal(out.vectors["t5xxl"], torch.zeros(2, 4096))
    t5 = torch.full((2, 4096), 3.0, dtype=torch.float16)
    given = to_sd3(sd1, t5)
    assert given.vectors["t5xxl"].dtype == torch.float32
    assert torch.equal(given.vectors["t5xxl"], torch.full((2, 4096), 3.0))
    assert torch.equal(given.vectors["clip_g"], torch.zeros(2, 1280))
    t5.fill_(0)
    assert torch.equal(given.vectors["t5xxl"], torch.full((2, 4096), 3.0))


def test_flux_to_sd3_keeps_its_own_t5_over_the_given_one():
    flux = emb_of("flux")
    out = to_sd3(flux, torch.ones(2, 4096))
    assert torch.equal(out.vectors["t5xxl"], flux.vectors["t5xxl"])
    assert torch.equal(out.vectors["clip_g"], torch.zeros(2, 1280))


def test_to_sd3_accepts_one_t5_vector_as_1d():
    out = to_sd3(emb_of("sdxl", n=1), torch.full((4096,), 2.0))
    assert torch.equal(out.vectors["t5xxl"], torch.full((1, 4096), 2.0))


def test_to_sd3_refuses_t5_vectors_of_the_wrong_shape():
    with refused("t5xxl vectors must have shape [2, 4096] to pair with 2 vectors; got [2, 768]"):
        to_sd3(emb_of("sdxl"), torch.zeros(2, 768))


def test_sd3_to_sd3_is_a_copy():
    src = emb_of("sd3")
    out = to_sd3(src, torch.ones(2, 4096))
    assert torch.equal(out.vectors["t5xxl"], src.vectors["t5xxl"])
    out.vectors["t5xxl"].fill_(9)
    assert not torch.equal(src.vectors["t5xxl"], out.vectors["t5xxl"])


def test_sd2_cannot_become_sd3_and_is_told_why():
    with refused("'x' is SD2 (clip_h) and cannot become SD3: SD2's clip_h vectors (1024 wide, CLIP-H) have no "
                 "counterpart among SD3's encoders (clip_l 768, clip_g 1280, t5xxl 4096). Train an embedding on "
                 "the SD3 checkpoint instead."):
        to_sd3(emb_of("sd2"))


def test_an_embedding_without_clip_vectors_cannot_become_sd3():
    with refused("'x' is Z-Image (qwen3_4b) and cannot become SD3: it has no CLIP-L or CLIP-G vectors, and "
                 "vectors made for qwen3_4b mean nothing to SD3's CLIP encoders (a text encoder's input vectors "
                 "only work in that encoder). Train an embedding on the SD3 checkpoint instead."):
        to_sd3(emb_of("zimage"))


def test_a_g_only_embedding_cannot_become_sd3_and_an_unnamed_one_is_this_embedding():
    with refused("'this embedding' is SDXL (G only) (clip_g) and cannot become SD3: its clip_g do not map onto "
                 "SD3's clip_l + clip_g + t5xxl. Train an embedding on the SD3 checkpoint instead."):
        to_sd3(emb_of("sdxl_g", name=""))


# ---------------------------------------------------------------- convert_to


def test_convert_to_each_target_gives_its_family():
    assert CONVERT_TARGETS == ("sd1", "sdxl", "sd3")
    for target in CONVERT_TARGETS:
        assert convert_to(emb_of("sdxl"), target).family == target


def test_an_unknown_target_is_refused_with_the_choices():
    with refused("unknown conversion target 'flux'; use one of sd1, sdxl, sd3"):
        convert_to(emb_of("sd1"), "flux")


def test_an_unknown_layout_with_clip_l_cannot_become_sd3_and_its_keys_are_listed():
    """clip_l with clip_h is no known family; the refusal names both keys, comma-separated."""
    emb = Embedding({"clip_l": torch.zeros(1, 768), "clip_h": torch.zeros(1, 1024)}, name="y")
    with refused("'y' is unknown (clip_l, clip_h) and cannot become SD3: its clip_l, clip_h do not map onto "
                 "SD3's clip_l + clip_g + t5xxl. Train an embedding on the SD3 checkpoint instead."):
        to_sd3(emb)


def test_a_layout_without_clip_l_lists_its_keys_in_the_sd1_refusal():
    emb = Embedding({"clip_g": torch.zeros(1, 1280), "t5xxl": torch.zeros(1, 4096)}, name="y")
    with refused("only embeddings with clip_l vectors (SD1, SDXL, SD3, Flux.1) have an SD1 side; "
                 "'y' is unknown (clip_g, t5xxl)"):
        to_sd1(emb)
