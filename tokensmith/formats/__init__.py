"""Reading embedding files of every layout in use, recognised from their content.

``read_embedding(path)`` gives an :class:`~tokensmith.embedding.Embedding` (fp32, CPU);
``read_header(path)`` describes a file cheaply (safetensors: header only) for listings.
Everything that goes wrong is an :class:`~tokensmith.errors.EmbeddingFileError` naming the file.
"""

from __future__ import annotations

import stat as stat_mod
from pathlib import Path

import torch

from ..embedding import Embedding, canonical_order, family_of
from ..errors import EmbeddingFileError, TokenSmithError
from . import safetensors_fmt
from .detect import HEAD_BYTES, PNG, SAFETENSORS, detect_container
from .layout import check_shape, plan_flat
from .limits import MAX_FILE_BYTES, MAX_TENSOR_BYTES

SOURCE_FORMATS = (
    "a1111_pt", "a1111_pt_parameterdict", "safetensors_emb_params", "sdxl", "per_encoder", "diffusers",
    "lora_bundle", "png_text", "png_drawn", "tokensmith",
)

__all__ = ["SOURCE_FORMATS", "read_embedding", "read_embedding_with_header", "read_header", "detect_container"]

_SAFETENSORS_DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def _stat(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise EmbeddingFileError(path, "file not found") from None
    except OSError as exc:
        raise EmbeddingFileError(path, f"cannot read the file ({exc.strerror or exc})") from None
    except ValueError:  # NUL byte or a lone surrogate (UnicodeEncodeError): no file can have this name
        raise EmbeddingFileError(path, "is not a valid file name (it holds a NUL byte or undecodable "
                                 "characters); rename the file") from None
    if stat_mod.S_ISDIR(st.st_mode):
        raise EmbeddingFileError(path, "is a folder, not an embedding file")
    if not stat_mod.S_ISREG(st.st_mode):
        raise EmbeddingFileError(path, "is not a regular file")
    if st.st_size == 0:
        raise EmbeddingFileError(path, "file is empty")
    return st.st_size


def _unknown(path: Path) -> EmbeddingFileError:
    return EmbeddingFileError(path, "format not recognised: expected safetensors, a PyTorch .pt/.bin file or an "
                              "A1111 PNG embedding (the file may be damaged)")


def _header_dict(path: Path, plan, size: int, container: str, shapes: dict, dtypes: dict, name: str,
                 stored_order: list[str]) -> dict:
    return {
        "path": str(path),
        "name": name,
        "format": plan.source_format,
        "family": family_of(shapes),
        "encoders": shapes,
        "dtypes": dtypes,
        "metadata": dict(plan.metadata),
        "step": plan.step,
        "size": size,
        "container": container,
        # the encoders in the order ComfyUI's loader meets their tensors (safetensors: by offset; pickles:
        # dictionary order): its fallback for an encoder whose key a file lacks is the first tensor
        "stored_order": stored_order,
    }


def _safetensors_order(header, plan) -> list[str]:
    return sorted(plan.keys, key=lambda enc: header.tensors[plan.keys[enc]].begin)


def read_embedding_with_header(path, *, name: str | None = None) -> tuple[Embedding, dict]:
    """``(embedding, header)``: the embedding plus what :func:`read_header` reports (with the
    stored dtypes, before conversion to fp32)."""
    path = Path(path)
    size = _stat(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            container = detect_container(head)
            if container is None:
                raise _unknown(path)
            if container == SAFETENSORS:
                header = safetensors_fmt.parse_header(fh, path, size)
                plan = plan_flat({k: e.shape for k, e in header.tensors.items()}, path, name=name,
                                 metadata=header.metadata)
                stored = {enc: safetensors_fmt.read_tensor(fh, path, header, key) for enc, key in plan.keys.items()}
                dtypes = {enc: _SAFETENSORS_DTYPE_NAMES[header.tensors[key].dtype] for enc, key in plan.keys.items()}
                stored_order = _safetensors_order(header, plan)
            else:
                if size > MAX_FILE_BYTES:
                    raise EmbeddingFileError(path, f"file is {size} bytes; embedding files of this kind are "
                                             f"refused above {MAX_FILE_BYTES} bytes")
                fh.seek(0)
                data = fh.read(MAX_FILE_BYTES + 1)
                if container == PNG:
                    from .png_fmt import load_png

                    plan, tensors = load_png(data, path, name=name)
                else:
                    from .torch_fmt import load_torch

                    plan, tensors = load_torch(data, path, name=name)
                stored, dtypes = {}, {}
                stored_order = list(plan.keys)
                for enc, key in plan.keys.items():
                    t = tensors[key]
                    if t.layout != torch.strided or not t.is_floating_point():
                        raise EmbeddingFileError(path, f"tensor {key!r} is {t.dtype} ({t.layout}); an embedding must "
                                                 "be a dense floating-point tensor")
                    if t.numel() * t.element_size() > MAX_TENSOR_BYTES:
                        raise EmbeddingFileError(path, f"tensor {key!r} is {list(t.shape)}: too large for an "
                                                 "embedding")
                    dtypes[enc] = str(t.dtype).removeprefix("torch.")
                    stored[enc] = t.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
    except OSError as exc:
        raise EmbeddingFileError(path, f"cannot read the file ({exc.strerror or exc})") from None

    # Canonical encoder order (clip_l, clip_h, clip_g, t5xxl, ...) whatever order the file used.
    stored = {k: stored[k] for k in canonical_order(stored)}
    dtypes = {k: dtypes[k] for k in stored}
    emb_name = name if name else path.stem
    try:
        emb = Embedding(vectors=stored, name=emb_name, metadata=dict(plan.metadata),
                        source_format=plan.source_format, step=plan.step)
    except EmbeddingFileError:
        raise
    except TokenSmithError as exc:
        raise EmbeddingFileError(path, str(exc)) from None
    return emb, _header_dict(path, plan, size, container, emb.shapes(), dtypes, emb_name, stored_order)


def read_embedding(path, *, name: str | None = None) -> Embedding:
    """Read any supported embedding file (format detected from content) as fp32 CPU vectors.

    ``name`` defaults to the file stem; for a LoRA with several bundled embeddings it also picks
    the bundle (else the first), and for a multi-token diffusers file the token.
    """
    return read_embedding_with_header(path, name=name)[0]


def read_header(path) -> dict:
    """Describe a file cheaply: ``{"format", "family", "encoders": {enc: [n, d]}, "metadata", "step",
    "size", ...}``. Safetensors: only the JSON header is read; other formats: a bounded full read."""
    path = Path(path)
    size = _stat(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            container = detect_container(head)
            if container is None:
                raise _unknown(path)
            if container == SAFETENSORS:
                header = safetensors_fmt.parse_header(fh, path, size)
    except OSError as exc:
        raise EmbeddingFileError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if container != SAFETENSORS:
        return read_embedding_with_header(path)[1]
    plan = plan_flat({k: e.shape for k, e in header.tensors.items()}, path, metadata=header.metadata)
    shapes, dtypes = {}, {}
    for enc in canonical_order(plan.keys):
        key = plan.keys[enc]
        entry = header.tensors[key]
        n, d = check_shape(entry.shape, path, f"tensor {key!r}")
        shapes[enc] = [n, d]
        if entry.dtype not in _SAFETENSORS_DTYPE_NAMES:
            raise EmbeddingFileError(path, f"tensor {key!r} has dtype {entry.dtype}; an embedding must be "
                                     "floating point")
        dtypes[enc] = _SAFETENSORS_DTYPE_NAMES[entry.dtype]
    if len({s[0] for s in shapes.values()}) > 1:
        raise EmbeddingFileError(path, f"every encoder needs the same number of vectors, got {shapes}")
    return _header_dict(path, plan, size, container, shapes, dtypes, path.stem, _safetensors_order(header, plan))
