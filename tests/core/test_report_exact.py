"""Exact behaviour of the inspect report: the statistics in float64 over the finite values only,
the dtype's name, the broken-vectors warning word for word, and the text form line for line (the
file, its hash note, stored dtypes, statistics, norms, metadata cut at 100 characters, the CLIP
section) with human sizes at each unit's edge."""

import math

import pytest
import torch

from tokensmith.embedding import Embedding
from tokensmith.report import encoder_stats, fmt_number, format_report, human_size, inspect_report


def test_statistics_are_taken_in_float64():
    """2^24 + 1 + 1 in float32 loses the ones; in float64 the mean is exactly (2^24 + 2) / 3."""
    t = torch.tensor([[2.0**24, 1.0, 1.0]], dtype=torch.float32)
    assert encoder_stats(t)["mean"] == (2**24 + 2) / 3 == 5592406.0


def test_statistics_skip_the_values_that_are_not_finite():
    s = encoder_stats(torch.tensor([[1.0, math.nan, 3.0, math.inf]]))
    assert (s["mean"], s["std"], s["min"], s["max"], s["nan"], s["inf"]) == (2.0, 1.0, 1.0, 3.0, 1, 1)
    assert s["norms"] == [None]


def test_no_finite_value_leaves_every_statistic_empty():
    s = encoder_stats(torch.full((1, 3), math.nan))
    assert (s["mean"], s["std"], s["min"], s["max"], s["nan"]) == (None, None, None, None, 3)


@pytest.mark.parametrize("dtype, name", [(torch.float16, "float16"), (torch.bfloat16, "bfloat16"),
                                         (torch.float32, "float32")])
def test_the_dtype_is_named_without_the_torch_prefix(dtype, name):
    assert encoder_stats(torch.zeros(1, 2, dtype=dtype))["dtype"] == name


def test_nan_alone_is_reported_as_broken_word_for_word():
    report = inspect_report(Embedding(vectors={"x": torch.tensor([[math.nan, 1.0]])}))
    assert report["warnings"] == ["x: 1 NaN and 0 Inf values; this embedding is broken (it cannot be saved; use "
                                  "an earlier snapshot)"]


def test_a_missing_number_prints_as_n_a():
    assert fmt_number(None) == "n/a"
    assert fmt_number(0.000123456) == "0.0001235"


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (1023 * 1024, "1023.0 KiB"),
    (1024**2, "1.0 MiB"), (1024**3, "1.0 GiB"), (1024**4, "1024.0 GiB"),
])
def test_human_sizes_at_each_units_edge(n, text):
    assert human_size(n) == text


def _data(**changes):
    data = {
        "name": "", "format": "tokensmith", "family": "sd1", "vectors": 2, "step": None,
        "source": {"path": "/e/a.safetensors", "size": 2048, "container": "safetensors", "sha256": "ab" * 32,
                   "autov2": "abababab", "note": "hashed from the cache"},
        "stats": {"clip_l": {"shape": [2, 4], "dtype": "float32", "stored_dtype": "float16", "mean": 0.5,
                             "std": 0.25, "min": -1.0, "max": 2.0, "nan": 0, "inf": 0, "norms": [1.5, 2.0]}},
        "metadata": {"a": "x" * 100, "b": "y" * 101}, "warnings": [],
    }
    data.update(changes)
    return data


def test_the_text_form_line_for_line():
    assert format_report(_data()).split("\n") == [
        "unnamed",
        "  format: tokensmith   family: sd1   vectors: 2   step: unknown",
        "  file: /e/a.safetensors (2.0 KiB, safetensors)",
        "  sha256: " + "ab" * 32 + "   AutoV2: abababab",
        "  hash: hashed from the cache",
        "  clip_l: 2 x 4 (stored as float16)",
        "    mean 0.5  std 0.25  min -1  max 2  NaN 0  Inf 0",
        "    vector norms: 1.5 2",
        "  metadata:",
        "    a: " + "x" * 100,
        "    b: " + "y" * 97 + "...",
    ]


def test_without_a_stored_dtype_the_dtype_is_shown():
    stats = {"clip_l": {k: v for k, v in _data()["stats"]["clip_l"].items() if k != "stored_dtype"}}
    assert "  clip_l: 2 x 4 (stored as float32)" in format_report(_data(stats=stats)).split("\n")


def test_the_clip_section_line_for_line():
    clip = {"family": "sdxl", "encoders": {"clip_l": 768, "clip_g": 1280}, "verdict": "it works",
            "per_encoder": {
                "clip_l": {"reads": "clip_l", "width": 768, "used": True,
                           "vocabulary_norms": {"median": 0.5, "max": 1.25}, "norm_vs_median": [1.0, 2.5],
                           "nearest": [[("dog", 0.9), ("cat", 0.8126)], [("sofa", 0.5)]]},
                "clip_g": {"reads": None, "width": None, "used": False},
                "t5xxl": {"reads": "clip_g", "width": 1280, "used": False},
            }}
    lines = format_report(_data(metadata={}, clip=clip)).split("\n")
    assert lines[lines.index("  with this CLIP (sdxl: clip_l 768, clip_g 1280): it works"):] == [
        "  with this CLIP (sdxl: clip_l 768, clip_g 1280): it works",
        "    clip_l reads clip_l (768 wide): used; vocabulary norm median 0.5 (max 1.25)",
        "      norm / median: 1 2.5",
        "      #0 nearest: dog (0.900), cat (0.813)",
        "      #1 nearest: sofa (0.500)",
        "    clip_g reads nothing",
        "    t5xxl reads clip_g (1280 wide): ignored",
    ]
