"""Embedding names: what may be used as a file name and an ``embedding:NAME`` prompt keyword."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import EmbeddingNameError

MAX_SEGMENT = 128
MAX_TOTAL = 255
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
# Names ending like another embedding file would make ComfyUI's lookup pick a different file.
_OTHER_EXTENSIONS = (".pt", ".bin", ".ckpt", ".pth", ".sft", ".png")
_ALLOWED = "letters A-Z a-z, digits, '.', '_', '-' and '/' between subfolders"


def validate_name(name: str) -> str:
    """The cleaned name (a trailing ``.safetensors`` removed) or :class:`EmbeddingNameError`.

    Allowed: ASCII letters, digits, ``._-``, and ``/`` to put the file in a subfolder. Refused: empty
    segments, ``..``, segments starting or ending with ``.``, a leading ``/``, Windows device names,
    more than 128 characters in a segment or 255 in all.
    """
    if not isinstance(name, str):
        raise EmbeddingNameError(f"an embedding name must be text, got {type(name).__name__}")
    if "\0" in name:
        raise EmbeddingNameError("the embedding name contains a NUL character")
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not name:
        raise EmbeddingNameError("the embedding name is empty")
    if name.startswith("/") or name.startswith("\\") or re.match(r"^[A-Za-z]:", name):
        raise EmbeddingNameError(f"{name!r}: a name must be relative to the embeddings folder (no leading '/')")
    if name.lower().endswith(_OTHER_EXTENSIONS):
        raise EmbeddingNameError(f"{name!r}: leave out the file extension (files are saved as .safetensors)")
    if len(name) > MAX_TOTAL:
        raise EmbeddingNameError(f"the embedding name is {len(name)} characters long; the limit is {MAX_TOTAL}")
    for segment in name.split("/"):
        if not segment:
            raise EmbeddingNameError(f"{name!r} has an empty folder part ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise EmbeddingNameError(f"{name!r}: '.' and '..' are not allowed in a name")
        if not _SEGMENT_RE.fullmatch(segment):
            bad = sorted({c for c in segment if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
            shown = ", ".join(repr(c) for c in bad)
            raise EmbeddingNameError(f"{name!r} contains {shown}; use only {_ALLOWED} (spaces cannot work in "
                                     "a prompt keyword)")
        if segment.startswith(".") or segment.endswith("."):
            raise EmbeddingNameError(f"{name!r}: a name or folder may not start or end with '.'")
        if len(segment) > MAX_SEGMENT:
            raise EmbeddingNameError(f"{name!r}: the part {segment[:20]!r}... is longer than {MAX_SEGMENT} "
                                     "characters")
        if segment.split(".")[0].upper() in _WINDOWS_RESERVED:
            raise EmbeddingNameError(f"{name!r}: {segment.split('.')[0]!r} is a reserved device name on Windows")
    return name


def safe_join(root, name) -> Path:
    """``root / name`` resolved, refusing any result outside ``root`` (``..``, absolute paths,
    symlinks leading out)."""
    name = os.fspath(name)
    if "\0" in name:
        raise EmbeddingNameError("the path contains a NUL character")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise EmbeddingNameError(f"{name!r}: an absolute path is not allowed here")
    try:
        base = Path(root).resolve()
        target = (base / name).resolve()
    except ValueError:  # UnicodeEncodeError for a lone surrogate: the name cannot be a file name
        raise EmbeddingNameError(f"{name!r} holds characters that cannot be part of a file name") from None
    if os.path.commonpath([str(base), str(target)]) != str(base) or target == base:
        raise EmbeddingNameError(f"{name!r} points outside the folder {str(base)!r}")
    return target
