"""Writing embeddings: safetensors only, atomically (temp file in the target folder, fsync, rename).

Layout written (what ComfyUI, A1111 and kohya read): ``emb_params [n, d]`` for a single CLIP encoder
(SD1 clip_l, SD2 clip_h, clip_g); ``clip_l [n, 768]`` + ``clip_g [n, 1280]`` for SDXL; otherwise one key
per encoder, named as ComfyUI's tokenizers ask for it (t5xxl, qwen3_4b, ...), a single one included.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from . import __version__
from .embedding import CLIP_ENCODERS, Embedding
from .errors import EmbeddingFileError, TokenSmithError
from .modelspec import with_modelspec
from .names import safe_join, validate_name

# Keys that describe the tensors themselves: extra_metadata may not contradict them.
RESERVED_METADATA = ("family", "vectors", "encoders", "tool")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe later on.
_FILE_MODE = 0o666 & ~_current_umask()


def check_finite(emb: Embedding, path) -> None:
    for enc, t in emb.vectors.items():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise EmbeddingFileError(path, f"{enc} vectors hold {bad} NaN/Inf values; refusing to save a broken "
                                     "embedding (roll back to an earlier step or lower the learning rate)")


def embedding_to_state_dict(emb: Embedding) -> dict[str, torch.Tensor]:
    """The tensors as written: fp32, contiguous, CPU."""
    vectors = {k: t.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
               for k, t in emb.vectors.items()}
    if len(vectors) == 1 and next(iter(vectors)) in CLIP_ENCODERS:
        return {"emb_params": next(iter(vectors.values()))}
    return vectors


def build_metadata(emb: Embedding, name: str | None = None,
                   extra_metadata: dict[str, str] | None = None) -> dict[str, str]:
    """``__metadata__`` for a file: carried-over metadata, then ours, then ``extra_metadata``."""
    meta: dict[str, str] = {k: v for k, v in emb.metadata.items() if isinstance(k, str) and isinstance(v, str)}
    meta.update({
        "name": name if name is not None else emb.name,
        "family": emb.family,
        "vectors": str(emb.num_vectors),
        "encoders": ",".join(emb.encoders),
        "tool": f"tokensmith {__version__}",
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    })
    if emb.step is not None:
        meta["step"] = str(int(emb.step))
    else:
        meta.pop("step", None)
    for k, v in (extra_metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TokenSmithError(f"metadata must map text to text; got {k!r}: {type(v).__name__}")
        if k in RESERVED_METADATA:
            raise TokenSmithError(f"metadata key {k!r} is set by TokenSmith from the vectors; use another key")
        meta[k] = v
    return with_modelspec(meta)  # what other tools read (SAI model spec), from the keys above


def serialize_embedding(emb: Embedding, *, name: str | None = None,
                        extra_metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors bytes TokenSmith writes for ``emb``."""
    return st_save(embedding_to_state_dict(emb), metadata=build_metadata(emb, name, extra_metadata))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on Windows, harmless to skip there.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part.

    On any failure the temporary file is removed and an existing file is left untouched.
    """
    target = Path(path)
    folder = target.parent
    try:
        is_dir, exists = target.is_dir(), target.exists()
    except (OSError, ValueError) as exc:  # e.g. a name longer than the file system allows, or a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise EmbeddingFileError(target, f"is not a usable file name ({reason}); choose a shorter, "
                                 "plain name") from None
    if is_dir:
        raise EmbeddingFileError(target, "is a folder; choose a file name")
    if not overwrite and exists:
        raise EmbeddingFileError(target, "exists; pass overwrite or choose another name")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise EmbeddingFileError(target, f"cannot write in {str(folder)!r} ({exc.strerror or exc})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; give the file the usual permissions
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_new(tmp, target)
        _fsync_dir(folder)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise EmbeddingFileError(target, f"could not be written ({exc.strerror or exc})") from None
        raise
    return target


def _link_new(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` only if ``target`` does not exist, without a check-then-write race."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise EmbeddingFileError(target, "exists; pass overwrite or choose another name") from None
    except OSError:
        # File systems without hard links (FAT, some network shares): best effort check + rename.
        if target.exists():
            raise EmbeddingFileError(target, "exists; pass overwrite or choose another name") from None
        os.replace(tmp, target)
        return
    with contextlib.suppress(OSError):
        tmp.unlink()


def write_embedding_file(emb: Embedding, path, *, overwrite: bool = False,
                         extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``emb`` to exactly ``path`` (must end in .safetensors), atomically. For the CLI and
    other places where the user chose the path; nodes use :func:`save_embedding`."""
    target = Path(path)
    if target.suffix.lower() != ".safetensors":
        raise EmbeddingFileError(target, "TokenSmith writes safetensors only: give a path ending in .safetensors")
    check_finite(emb, target)
    data = serialize_embedding(emb, name=target.stem, extra_metadata=extra_metadata)
    return atomic_write_bytes(target, data, overwrite=overwrite)


def save_embedding(emb: Embedding, root, name: str, *, overwrite: bool = False,
                   extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``<root>/<name>.safetensors`` (``name`` may hold ``/`` for subfolders inside ``root``)."""
    clean = validate_name(name)
    root = Path(root)
    target = safe_join(root, clean + ".safetensors")
    check_finite(emb, target)
    data = serialize_embedding(emb, name=clean, extra_metadata=extra_metadata)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddingFileError(target.parent, f"cannot create the folder ({exc.strerror or exc})") from None
    # Re-check after creating folders: a symlinked subfolder must not lead out of root.
    target = safe_join(root, clean + ".safetensors")
    return atomic_write_bytes(target, data, overwrite=overwrite)
