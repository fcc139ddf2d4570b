"""The file side of every family TokenSmith knows: keys and widths, family detection, the writer's
layout, reading back, conversion to SD3 and its refusals, merging, the CLI and the text report."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.core import golden
from tokensmith import merge
from tokensmith.cli import main
from tokensmith.convert import convert_to, to_sd1, to_sd3, to_sdxl
from tokensmith.embedding import ENCODER_WIDTHS, FAMILY_ENCODERS, Embedding, family_of
from tokensmith.errors import EmbeddingFileError, FamilyMismatchError
from tokensmith.formats import read_embedding, read_embedding_with_header, read_header
from tokensmith.report import format_report, inspect_report
from tokensmith.writer import embedding_to_state_dict, write_embedding_file

# The widths of ComfyUI's tokenizers (embedding_size), read in v0.33.0's comfy/sd1_clip.py,
# comfy/sdxl_clip.py and comfy/text_encoders/{sd2_clip,sd3_clip,flux,z_image,qwen_image,lumina2}.py.
COMFY_WIDTHS = {"clip_l": 768, "clip_g": 1280, "clip_h": 1024, "t5xxl": 4096, "qwen3_4b": 2560,
                "qwen25_7b": 3584, "gemma2_2b": 2304}
NEW_FAMILIES = {"sd3": ("clip_l", "clip_g", "t5xxl"), "flux": ("clip_l", "t5xxl"), "chroma": ("t5xxl",),
                "zimage": ("qwen3_4b",), "qwen_image": ("qwen25_7b",), "lumina2": ("gemma2_2b",)}


def emb_of(family, n=2, seed=0, **kw):
    keys = FAMILY_ENCODERS[family]
    return Embedding({k: golden.vectors(n, ENCODER_WIDTHS[k], seed + i) for i, k in enumerate(keys)}, **kw)


def test_widths_are_comfyuis():
    assert ENCODER_WIDTHS == COMFY_WIDTHS


@pytest.mark.parametrize("family", list(NEW_FAMILIES))
def test_family_detection(family):
    assert FAMILY_ENCODERS[family] == NEW_FAMILIES[family]
    assert family_of(reversed(NEW_FAMILIES[family])) == family
    assert emb_of(family).family == family


@pytest.mark.parametrize("family", list(NEW_FAMILIES))
def test_written_under_the_keys_comfyui_asks_for_and_read_back(family, tmp_path):
    emb = emb_of(family, n=3, seed=4, name="fam", step=7)
    path = write_embedding_file(emb, tmp_path / f"{family}.safetensors")
    stored = load_file(path)
    assert sorted(stored) == sorted(NEW_FAMILIES[family])  # one key per encoder, never emb_params
    back, header = read_embedding_with_header(path)
    assert back.family == family and back.source_format == "tokensmith" and back.step == 7
    assert back.encoders == NEW_FAMILIES[family]  # TokenSmith's order, whatever the file's
    for k in NEW_FAMILIES[family]:
        assert torch.equal(back.vectors[k], emb.vectors[k])
    cheap = read_header(path)
    assert cheap["family"] == family and cheap["encoders"] == header["encoders"]
    assert cheap["stored_order"] == header["stored_order"] == sorted(NEW_FAMILIES[family])


def test_single_clip_encoders_keep_emb_params():
    assert list(embedding_to_state_dict(emb_of("sd1"))) == ["emb_params"]
    assert list(embedding_to_state_dict(emb_of("sd2"))) == ["emb_params"]
    assert list(embedding_to_state_dict(emb_of("chroma"))) == ["t5xxl"]


@pytest.mark.parametrize(("key", "width"), [("qwen3_4b", 2560), ("qwen25_7b", 3584), ("gemma2_2b", 2304)])
def test_other_tools_keyless_files_are_labelled_by_width(key, width, tmp_path):
    path = tmp_path / "keyless.safetensors"
    save_file({"emb_params": golden.vectors(2, width)}, path)
    assert read_embedding(path).encoders == (key,)


def test_the_key_decides_not_the_width(tmp_path):
    # A named key is that encoder whatever its width (ComfyUI's Cosmos reads 1024-wide t5xxl vectors, a
    # 4096-wide file may be T5 or an LLM): read by the key, with a warning when the width is unusual.
    path = tmp_path / "t5_1024.safetensors"
    save_file({"t5xxl": golden.vectors(2, 1024)}, path)
    emb = read_embedding(path)
    assert emb.encoders == ("t5xxl",) and emb.family == "chroma"  # not clip_h, whose width it has
    [warning] = inspect_report(emb)["warnings"]
    assert warning.startswith("t5xxl: 1024 wide") and "4096" in warning
    assert inspect_report(emb_of("chroma"))["warnings"] == []
    # the CLIP encoders' widths are fixed: a clip_g key at another width is a damaged or mislabelled file
    bad = tmp_path / "bad_g.safetensors"
    save_file({"clip_l": golden.vectors(2, 768), "clip_g": golden.vectors(2, 1024)}, bad)
    with pytest.raises(EmbeddingFileError, match="clip_g vectors are 1280 wide"):
        read_embedding(bad)


def test_pickled_file_order_is_kept_for_the_fallback(tmp_path):
    path = tmp_path / "flux.pt"
    torch.save({"t5xxl": golden.vectors(1, 4096), "clip_l": golden.vectors(1, 768)}, path)
    emb, header = read_embedding_with_header(path)
    assert emb.encoders == ("clip_l", "t5xxl") and header["stored_order"] == ["t5xxl", "clip_l"]


def test_sdxl_to_sd3_keeps_both_clip_sides_and_zero_t5():
    xl = emb_of("sdxl", n=3, seed=2, name="xl", step=9)
    sd3 = to_sd3(xl)
    assert sd3.family == "sd3" and sd3.shapes() == {"clip_l": [3, 768], "clip_g": [3, 1280], "t5xxl": [3, 4096]}
    assert torch.equal(sd3.vectors["clip_l"], xl.vectors["clip_l"])
    assert torch.equal(sd3.vectors["clip_g"], xl.vectors["clip_g"])
    assert not sd3.vectors["t5xxl"].any() and sd3.name == "xl" and sd3.step == 9
    t5 = golden.vectors(3, 4096, 5)
    assert torch.equal(to_sd3(xl, t5_vectors=t5).vectors["t5xxl"], t5)
    with pytest.raises(FamilyMismatchError, match=r"\[3, 4096\]"):
        to_sd3(xl, t5_vectors=golden.vectors(2, 4096))
    assert convert_to(xl, "sd3").shapes() == sd3.shapes()
    # and back: the CLIP sides of an SD3 embedding are an SDXL one; its L side an SD1 one
    assert torch.equal(to_sdxl(sd3).vectors["clip_g"], xl.vectors["clip_g"]) and to_sdxl(sd3).family == "sdxl"
    assert to_sd1(sd3).family == "sd1"


def test_sd1_and_flux_to_sd3_fill_the_missing_sides_with_zeros():
    sd1 = to_sd3(emb_of("sd1"))
    assert sd1.family == "sd3" and not sd1.vectors["clip_g"].any() and not sd1.vectors["t5xxl"].any()
    flux = emb_of("flux", seed=3)
    out = to_sd3(flux)
    assert torch.equal(out.vectors["t5xxl"], flux.vectors["t5xxl"]) and not out.vectors["clip_g"].any()


@pytest.mark.parametrize(("family", "reason"), [
    ("sd2", "no counterpart among SD3's encoders"),
    ("chroma", "no CLIP-L or CLIP-G vectors"),
    ("zimage", "mean nothing to SD3's CLIP encoders"),
    ("qwen_image", "no CLIP-L or CLIP-G vectors"),
])
def test_conversions_that_cannot_map_are_refused_with_the_reason(family, reason):
    with pytest.raises(FamilyMismatchError, match=reason):
        to_sd3(emb_of(family, name="x"))
    with pytest.raises(FamilyMismatchError, match="clip_l"):
        to_sd1(emb_of(family))


@pytest.mark.parametrize("family", ["sd3", "flux", "zimage", "qwen_image"])
def test_merge_works_on_every_family(family):
    a, b = emb_of(family, seed=1), emb_of(family, n=1, seed=2)
    out = merge.weighted_sum([a, b], [1.0, 2.0])
    assert out.family == family and out.num_vectors == 2
    for k in a.encoders:
        expected = a.vectors[k].clone()
        expected[0] += 2.0 * b.vectors[k][0]
        assert torch.allclose(out.vectors[k], expected)
    t5 = merge.scale(emb_of("sd3"), 2.0, "t5xxl")
    assert torch.equal(t5.vectors["t5xxl"], 2.0 * emb_of("sd3").vectors["t5xxl"])
    assert torch.equal(t5.vectors["clip_g"], emb_of("sd3").vectors["clip_g"])


def test_merge_refuses_families_that_collide_in_nothing_but_names():
    with pytest.raises(FamilyMismatchError, match="different families"):
        merge.weighted_sum([emb_of("zimage"), emb_of("qwen_image")], [1.0, 1.0])
    with pytest.raises(FamilyMismatchError, match="different families"):
        merge.weighted_sum([emb_of("sdxl"), emb_of("sd3")], [1.0, 1.0])


def test_cli_converts_sdxl_to_sd3_and_inspects_it(tmp_path, capsys):
    src = golden.sdxl_safetensors(tmp_path / "xl.safetensors")
    out = tmp_path / "sd3.safetensors"
    assert main(["convert", str(src), str(out), "--to", "sd3"]) == 0
    assert sorted(load_file(out)) == ["clip_g", "clip_l", "t5xxl"]
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "sd3" and data["encoders"]["t5xxl"] == [2, 4096]
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "family: sd3" in text and "t5xxl: 2 x 4096" in text
    assert "warning: t5xxl: 2 all-zero vector(s)" in text
    bad = tmp_path / "sd2.safetensors"
    save_file({"emb_params": golden.vectors(1, 1024)}, bad)
    assert main(["convert", str(bad), str(tmp_path / "no.safetensors"), "--to", "sd3"]) == 1
    assert "cannot become SD3" in capsys.readouterr().err


def test_one_formatter_for_the_cli_and_the_node_report():
    data = inspect_report(emb_of("zimage", n=2, name="z", step=3))
    data["per_vector"] = {"qwen3_4b": [{"norm": 1.0, "mean": 0.0, "std": 1.0, "min": -1.0, "max": 1.0}] * 2}
    data["source"] = {"path": "/e/z.safetensors", "size": 20_512, "container": "safetensors",
                      "sha256": "ab" * 32, "autov2": "abababab12"}
    data["clip"] = {"family": "zimage", "encoders": {"qwen3_4b": 2560}, "verdict": "works on this Z-Image CLIP",
                    "per_encoder": {"qwen3_4b": {"reads": "qwen3_4b", "width": 2560, "used": True,
                                                 "vocabulary_norms": {"median": 0.5, "max": 2.0},
                                                 "norm_vs_median": [2.0, 4.0], "nearest": [[["cat", 0.91]]]}}}
    text = format_report(data)
    lines = text.splitlines()
    assert lines[0] == "z" and "family: zimage" in lines[1] and "step: 3" in lines[1]
    assert "  file: /e/z.safetensors (20.0 KiB, safetensors)" in lines
    assert f"  sha256: {'ab' * 32}   AutoV2: abababab12" in lines
    assert "    #1: norm 1  mean 0  std 1  min -1  max 1" in lines
    assert "  with this CLIP (zimage: qwen3_4b 2560): works on this Z-Image CLIP" in lines
    assert "      norm / median: 2 4" in lines and "      #0 nearest: cat (0.910)" in lines


def test_expression_scales_the_t5_side_alone():
    from tokensmith.errors import ExpressionError
    from tokensmith.expression import evaluate

    def sd3_text(text):
        return {"clip_l": torch.ones(1, 2), "clip_g": torch.ones(1, 3), "t5xxl": torch.ones(1, 4)}

    out = evaluate("'x'*2T/4G", sd3_text, sd3_text)
    assert out.vectors["t5xxl"].tolist() == [[2.0] * 4]
    assert out.vectors["clip_g"].tolist() == [[0.25] * 3] and out.vectors["clip_l"].tolist() == [[1.0] * 2]
    with pytest.raises(ExpressionError, match="t5xxl"):
        evaluate("'x'*2T", lambda t: {"clip_l": torch.ones(1, 2)}, sd3_text)
