"""AutoV2 and SHA-256 of whole files, as the CLI, the inspect node and the browser listing show them."""

from __future__ import annotations

import hashlib

import pytest

from tokensmith.errors import EmbeddingFileError
from tokensmith.hashing import autov2, file_hashes


def test_file_hashes_read_the_whole_file_once_for_both_forms(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * 9000  # over two 1 MiB chunks
    path.write_bytes(data)
    full = hashlib.sha256(data).hexdigest()
    assert file_hashes(path) == {"sha256": full, "autov2": full[:10]}
    assert autov2(path) == full[:10]


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(EmbeddingFileError, match="cannot read"):
        file_hashes(tmp_path / "missing.safetensors")
