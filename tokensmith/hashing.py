"""File hashes as model sites show them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import EmbeddingFileError

_CHUNK = 1024 * 1024
AUTOV2_DIGITS = 10  # Civitai's and A1111's short hash: this many leading hex digits of the SHA-256


def sha256_file(path) -> str:
    """Hex SHA-256 of the whole file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with open(Path(path), "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise EmbeddingFileError(path, f"cannot read the file ({exc.strerror or exc})") from None
    return digest.hexdigest()


def file_hashes(path) -> dict[str, str]:
    """``{"sha256": ..., "autov2": ...}`` of the whole file, read once."""
    digest = sha256_file(path)
    return {"sha256": digest, "autov2": digest[:AUTOV2_DIGITS]}


def autov2(path) -> str:
    """The short hash Civitai and A1111 show ("AutoV2"): the first 10 hex digits of the SHA-256."""
    return file_hashes(path)["autov2"]
