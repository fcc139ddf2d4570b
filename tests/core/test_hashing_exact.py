"""Exact behaviour of hashing: the refusal's wording and path, the digest of empty and
multi-chunk files, and the short hash's length."""

import hashlib

import pytest

from tokensmith.errors import EmbeddingFileError
from tokensmith.hashing import AUTOV2_DIGITS, autov2, file_hashes, sha256_file


def test_a_missing_file_is_refused_naming_it_and_the_system_reason(tmp_path):
    path = tmp_path / "missing.safetensors"
    with pytest.raises(EmbeddingFileError) as e:
        sha256_file(str(path))
    assert str(e.value) == f"{path}: cannot read the file (No such file or directory)"
    assert e.value.path == str(path)
    assert e.value.reason == "cannot read the file (No such file or directory)"
    assert e.value.__cause__ is None


def test_a_folder_is_refused_as_unreadable(tmp_path):
    with pytest.raises(EmbeddingFileError) as e:
        file_hashes(tmp_path)
    assert str(e.value) == f"{tmp_path}: cannot read the file (Is a directory)"


def test_an_empty_file_has_the_digest_of_no_bytes(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    empty = hashlib.sha256(b"").hexdigest()
    assert file_hashes(path) == {"sha256": empty, "autov2": empty[:10]}


def test_a_file_of_exactly_one_chunk_and_one_byte_more_hashes_every_byte(tmp_path):
    """The digest covers the chunk boundary: the last byte changes it."""
    for size in (1024 * 1024, 1024 * 1024 + 1):
        path = tmp_path / f"f{size}.bin"
        data = bytes(i % 251 for i in range(size))
        path.write_bytes(data)
        assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_the_short_hash_is_the_first_ten_hex_digits(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"tokensmith")
    assert AUTOV2_DIGITS == 10
    assert autov2(path) == hashlib.sha256(b"tokensmith").hexdigest()[:10]
    assert len(autov2(path)) == 10
