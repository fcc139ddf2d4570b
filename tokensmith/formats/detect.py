"""Recognise an embedding file's container from its first bytes, never from its extension."""

from __future__ import annotations

ZIP_MAGIC = b"PK\x03\x04"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# torch's legacy (non-zip) format starts with a pickled "magic number" (protocol 2, LONG1 of 10 bytes).
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

# Containers this module names.
SAFETENSORS = "safetensors"
TORCH_ZIP = "torch_zip"
TORCH_LEGACY = "torch_legacy"
PICKLE = "pickle"
PNG = "png"

HEAD_BYTES = 16


def detect_container(head: bytes) -> str | None:
    """The container type for a file starting with ``head`` (at least 16 bytes when available)."""
    if head.startswith(ZIP_MAGIC):
        return TORCH_ZIP
    if head.startswith(PNG_MAGIC):
        return PNG
    if head.startswith(TORCH_LEGACY_MAGIC):
        return TORCH_LEGACY
    if len(head) >= 9 and head[8:9] == b"{":
        # 8-byte little-endian header length, then the JSON header. An absurd length is reported by
        # the safetensors reader ("header claims N bytes"), which is clearer than "not recognised".
        # Checked before the bare pickle: a header of 640, 896, 1152 or 1408 bytes (+ k * 65536)
        # starts with the bytes 0x80 0x02..0x05, a pickle's protocol opcode.
        return SAFETENSORS
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        # A bare pickle (not torch's layout): handed to the same restricted loader, which refuses it
        # with a clear message instead of a "format not recognised".
        return PICKLE
    return None
