"""Exact behaviour of the zip checks before torch.load: a damaged zip directory, one record past the
tensor limit (and one at it), compressed records that together inflate past it, and stored records,
which torch.save writes and which inflate to nothing."""

from __future__ import annotations

import zipfile

import pytest

from tests.core.refusals import refused
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding
from tokensmith.formats.limits import MAX_TENSOR_BYTES

NOT_TORCH = "not a readable PyTorch file (damaged or truncated?): "


def _zip(path, records, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, size in records:
            zf.writestr(name, bytes(size))
    return path


def test_a_damaged_zip_directory_is_refused_word_for_word(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    with refused(f"{path}: not a readable PyTorch file (damaged zip directory: File is not a zip file)",
                 EmbeddingFileError):
        read_embedding(path)


def test_a_record_past_the_limit_is_refused_word_for_word(tmp_path):
    path = _zip(tmp_path / "big.pt", [("big", MAX_TENSOR_BYTES + 1)])
    with refused(f"{path}: record 'big' is {MAX_TENSOR_BYTES + 1} bytes; too large for an embedding (limit "
                 f"{MAX_TENSOR_BYTES})", EmbeddingFileError):
        read_embedding(path)


def test_a_record_at_the_limit_passes_the_zip_checks(tmp_path):
    path = _zip(tmp_path / "edge.pt", [("edge", MAX_TENSOR_BYTES)])
    with pytest.raises(EmbeddingFileError) as exc:  # a zip of zeros is not a PyTorch file
        read_embedding(path)
    assert exc.value.reason.startswith(NOT_TORCH)


def test_compressed_records_that_inflate_past_the_limit_are_refused_word_for_word(tmp_path):
    half = MAX_TENSOR_BYTES // 2 + 1
    path = _zip(tmp_path / "two.pt", [("a", half), ("b", half)])
    with refused(f"{path}: compressed records inflate to {2 * half} bytes (limit {MAX_TENSOR_BYTES}); not an "
                 "embedding file", EmbeddingFileError):
        read_embedding(path)


def test_stored_records_do_not_count_as_inflation(tmp_path):
    half = MAX_TENSOR_BYTES // 2 + 1
    path = _zip(tmp_path / "stored.pt", [("a", half), ("b", half)], compression=zipfile.ZIP_STORED)
    with pytest.raises(EmbeddingFileError) as exc:  # a zip of zeros is not a PyTorch file
        read_embedding(path)
    assert exc.value.reason.startswith(NOT_TORCH)
