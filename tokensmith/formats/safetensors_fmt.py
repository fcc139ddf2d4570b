"""Safetensors parsing of our own: header only (cheap listing), then just the tensors we need.

Parsing the header ourselves lets us check every offset against the file size before reading, read
only the embedding keys of a large LoRA file, and never memory-map (no file left locked on Windows).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass

import torch

from ..errors import EmbeddingFileError
from .limits import MAX_SAFETENSORS_HEADER, MAX_TENSOR_BYTES

# safetensors dtype name -> (torch dtype, bytes per element); only float types can be embeddings.
FLOAT_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
}
# Sizes of the other dtypes, only to check offsets of tensors we will not read.
OTHER_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8, "C64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass
class SafetensorsHeader:
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int


def _metadata_strings(raw: object, path) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise EmbeddingFileError(path, "safetensors __metadata__ is not a JSON object")
    out = {}
    for k, v in raw.items():
        # The format says str -> str; some writers put numbers in: keep those as text, drop the rest.
        if isinstance(v, str):
            out[str(k)] = v
        elif isinstance(v, (int, float, bool)):
            out[str(k)] = json.dumps(v)
    return out


def parse_header(fh, path, file_size: int) -> SafetensorsHeader:
    """Parse and validate the header of the open file ``fh`` (positioned anywhere)."""
    fh.seek(0)
    prefix = fh.read(8)
    if len(prefix) < 8:
        raise EmbeddingFileError(path, "file is truncated (no safetensors header length)")
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_SAFETENSORS_HEADER:
        raise EmbeddingFileError(path, f"safetensors header claims {n} bytes (limit {MAX_SAFETENSORS_HEADER}); "
                                 "the file is damaged or not an embedding")
    if 8 + n > file_size:
        raise EmbeddingFileError(path, f"file is truncated: header needs {n} bytes, file has {file_size - 8}")
    raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EmbeddingFileError(path, f"safetensors header is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise EmbeddingFileError(path, "safetensors header is not a JSON object")
    data_start = 8 + n
    data_len = file_size - data_start
    metadata = _metadata_strings(header.pop("__metadata__", None), path)
    tensors: dict[str, TensorEntry] = {}
    for key, info in header.items():
        tensors[key] = _entry(key, info, data_len, path)
    return SafetensorsHeader(tensors=tensors, metadata=metadata, data_start=data_start)


def _entry(key: str, info: object, data_len: int, path) -> TensorEntry:
    bad = f"tensor {key!r} has a malformed header entry"
    if not isinstance(info, dict):
        raise EmbeddingFileError(path, bad)
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
        raise EmbeddingFileError(path, bad)
    if not all(type(d) is int and d >= 0 for d in shape) or not all(type(o) is int for o in offsets):
        raise EmbeddingFileError(path, bad)
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise EmbeddingFileError(path, f"tensor {key!r} lies beyond the end of the file (truncated or damaged)")
    size = FLOAT_DTYPES[dtype][1] if dtype in FLOAT_DTYPES else OTHER_DTYPE_SIZES.get(dtype)
    if size is not None and math.prod(shape) * size != end - begin:
        raise EmbeddingFileError(path, f"tensor {key!r}: shape {shape} x {dtype} does not match its "
                                 f"{end - begin} bytes")
    return TensorEntry(dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def read_tensor(fh, path, header: SafetensorsHeader, key: str) -> torch.Tensor:
    """Read one float tensor as a fresh fp32 CPU tensor."""
    entry = header.tensors[key]
    if entry.dtype not in FLOAT_DTYPES:
        raise EmbeddingFileError(path, f"tensor {key!r} has dtype {entry.dtype}; an embedding must be floating point")
    nbytes = entry.end - entry.begin
    if nbytes > MAX_TENSOR_BYTES:
        raise EmbeddingFileError(path, f"tensor {key!r} is {nbytes} bytes (limit {MAX_TENSOR_BYTES}); "
                                 "too large for an embedding")
    if nbytes == 0:
        raise EmbeddingFileError(path, f"tensor {key!r} is empty (shape {list(entry.shape)})")
    fh.seek(header.data_start + entry.begin)
    buf = bytearray(fh.read(nbytes))
    if len(buf) != nbytes:
        raise EmbeddingFileError(path, f"file is truncated inside tensor {key!r}")
    torch_dtype = FLOAT_DTYPES[entry.dtype][0]
    tensor = torch.frombuffer(buf, dtype=torch_dtype)
    if sys.byteorder != "little":  # safetensors is little-endian on disk
        tensor = tensor.view(torch.uint8).view(-1, FLOAT_DTYPES[entry.dtype][1]).flip(1).contiguous().view(torch_dtype)
    return tensor.reshape(entry.shape).to(torch.float32).clone()
