"""The safetensors header checks held word for word on hand-made bytes: a file too short for its
length prefix, a header past the limit (a prefix read as unsigned) and one at it, a header longer
than the file, a header that is not a JSON object, each kind of malformed tensor entry, and a
shape that does not match its bytes (float and other dtypes)."""

from __future__ import annotations

import io
import json
import struct

import pytest

from tokensmith.errors import EmbeddingFileError
from tokensmith.formats.limits import MAX_SAFETENSORS_HEADER
from tokensmith.formats.safetensors_fmt import parse_header

PATH = "/models/embeddings/x.safetensors"


def with_header(header, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode("utf-8")
    return struct.pack("<Q", len(text)) + text + data


def refusal(data: bytes) -> str:
    with pytest.raises(EmbeddingFileError) as caught:
        parse_header(io.BytesIO(data), PATH, len(data))
    assert caught.value.path == PATH
    return str(caught.value)


def test_a_file_too_short_for_its_length_prefix():
    assert refusal(b"\x01\x02\x03") == f"{PATH}: file is truncated (no safetensors header length)"


def test_a_header_past_the_limit_is_refused_and_the_prefix_is_unsigned():
    n = MAX_SAFETENSORS_HEADER + 1
    assert refusal(struct.pack("<Q", n)) == (f"{PATH}: safetensors header claims {n} bytes (limit "
                                             f"{MAX_SAFETENSORS_HEADER}); the file is damaged or not an embedding")
    huge = 2**63 + 5  # negative if the prefix were read as signed
    assert refusal(struct.pack("<Q", huge)).startswith(f"{PATH}: safetensors header claims {huge} bytes")


def test_a_header_at_the_limit_is_only_too_long_for_the_file():
    data = struct.pack("<Q", MAX_SAFETENSORS_HEADER) + b"{}"
    assert refusal(data) == f"{PATH}: file is truncated: header needs {MAX_SAFETENSORS_HEADER} bytes, file has 2"


def test_a_header_longer_than_the_file_names_both_sizes():
    data = struct.pack("<Q", 50) + b'{"a": 1}'
    assert refusal(data) == f"{PATH}: file is truncated: header needs 50 bytes, file has 8"


@pytest.mark.parametrize("header", [[1, 2], "text", 3])
def test_a_header_that_is_not_a_json_object(header):
    assert refusal(with_header(header)) == f"{PATH}: safetensors header is not a JSON object"


GOOD = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("entry", [
    "not a dict",
    {**GOOD, "dtype": 7},
    {**GOOD, "shape": 2},
    {**GOOD, "data_offsets": "0-8"},
    {**GOOD, "data_offsets": [0, 4, 8]},
    {**GOOD, "shape": [-1]},
    {**GOOD, "shape": [2.0]},
    {**GOOD, "data_offsets": [0, 8.0]},
])
def test_each_kind_of_malformed_entry_is_refused_word_for_word(entry):
    assert refusal(with_header({"emb": entry}, bytes(8))) == f"{PATH}: tensor 'emb' has a malformed header entry"


def test_a_float_shape_that_does_not_match_its_bytes():
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [4, 10]}
    assert refusal(with_header({"emb": entry}, bytes(10))) == (
        f"{PATH}: tensor 'emb': shape [2] x F32 does not match its 6 bytes")


def test_another_dtypes_shape_is_checked_against_its_bytes_too():
    entry = {"dtype": "I32", "shape": [2], "data_offsets": [0, 4]}
    assert refusal(with_header({"ids": entry}, bytes(4))) == (
        f"{PATH}: tensor 'ids': shape [2] x I32 does not match its 4 bytes")


def test_a_well_formed_header_is_read():
    header = parse_header(io.BytesIO(with_header({"emb": GOOD}, bytes(8))), PATH, len(with_header({"emb": GOOD})) + 8)
    assert header.tensors["emb"].shape == (2,) and (header.tensors["emb"].begin, header.tensors["emb"].end) == (0, 8)


def test_metadata_that_is_not_an_object_is_refused_word_for_word():
    assert refusal(with_header({"__metadata__": ["a"]})) == f"{PATH}: safetensors __metadata__ is not a JSON object"


def test_metadata_numbers_become_text_and_other_values_are_dropped():
    data = with_header({"__metadata__": {"a": "x", "n": 3, "f": 0.5, "b": True, "l": [1], "d": {"k": 1}, "z": None}})
    assert parse_header(io.BytesIO(data), PATH, len(data)).metadata == {"a": "x", "n": "3", "f": "0.5", "b": "true"}


def read_refusal(entry, data: bytes, key: str = "emb") -> str:
    from tokensmith.formats.safetensors_fmt import read_tensor

    whole = with_header({key: entry}, data)
    header = parse_header(io.BytesIO(whole), PATH, len(whole))
    cut = io.BytesIO(whole[:-1]) if entry.get("cut") else io.BytesIO(whole)
    with pytest.raises(EmbeddingFileError) as caught:
        read_tensor(cut, PATH, header, key)
    assert caught.value.path == PATH
    return str(caught.value)


def test_a_non_float_tensor_is_refused_word_for_word():
    entry = {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}
    assert read_refusal(entry, bytes(8), "ids") == (
        f"{PATH}: tensor 'ids' has dtype I32; an embedding must be floating point")


def test_an_empty_tensor_is_refused_with_its_shape():
    entry = {"dtype": "F32", "shape": [0, 768], "data_offsets": [0, 0]}
    assert read_refusal(entry, b"") == f"{PATH}: tensor 'emb' is empty (shape [0, 768])"


def test_a_tensor_past_the_limit_is_refused_and_one_at_it_is_not(monkeypatch):
    import tokensmith.formats.safetensors_fmt as fmt

    monkeypatch.setattr(fmt, "MAX_TENSOR_BYTES", 8)
    entry = {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}
    assert read_refusal(entry, bytes(12)) == f"{PATH}: tensor 'emb' is 12 bytes (limit 8); too large for an embedding"
    ok = with_header({"emb": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8))
    assert fmt.read_tensor(io.BytesIO(ok), PATH, parse_header(io.BytesIO(ok), PATH, len(ok)), "emb").tolist() == [0.0, 0.0]


def test_a_file_cut_inside_a_tensor_is_refused_word_for_word():
    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "cut": True}
    assert read_refusal(entry, bytes(8)) == f"{PATH}: file is truncated inside tensor 'emb'"
