"""PyTorch pickles (.pt / .bin, zip or legacy layout), loaded with ``weights_only=True`` only.

The one non-tensor class we let through is the ParameterDict of early textual-inversion files, and
it is mapped to an inert stand-in class, so no torch module is ever built from the file.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile

import torch

from ..errors import EmbeddingFileError
from .layout import plan_object
from .limits import MAX_TENSOR_BYTES

PARAMETER_DICT = "torch.nn.modules.container.ParameterDict"


class ParameterDictStandIn:
    """Receives the pickled state of a ParameterDict; only its ``_parameters`` dict is used."""

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    @property
    def parameters(self) -> dict:
        params = getattr(self, "state", {}).get("_parameters")  # no state when the file has no BUILD for it
        return dict(params) if isinstance(params, dict) else {}


def _load(data: bytes, allow_parameter_dict: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "pickle protocol 4" notes: the outcome is reported by us
        if not allow_parameter_dict:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        with torch.serialization.safe_globals([(ParameterDictStandIn, PARAMETER_DICT)]):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _refusal(exc: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" ({found.group(1)})" if found else ""
    return (f"refused: the file contains Python objects other than tensors{what}, which could run code when "
            "loaded; TokenSmith only loads plain tensors. If you trust the file, re-save it as safetensors")


def _check_zip_records(data: bytes, path) -> None:
    """Refuse a zip-layout file whose records would inflate past what an embedding can need, from
    the zip directory alone: torch.load inflates every record whole before any size check."""
    if not data.startswith(b"PK\x03\x04"):
        return  # legacy layout: a plain pickle, nothing compressed
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise EmbeddingFileError(path, f"not a readable PyTorch file (damaged zip directory: {exc})") from None
    inflated = 0
    for info in infos:
        if info.file_size > MAX_TENSOR_BYTES:
            raise EmbeddingFileError(path, f"record {info.filename!r} is {info.file_size} bytes; too large for an "
                                     f"embedding (limit {MAX_TENSOR_BYTES})")
        if info.compress_type != zipfile.ZIP_STORED:
            inflated += info.file_size
    # torch.save never compresses; allow some compressed records (re-zipped files) but bound the inflation
    if inflated > MAX_TENSOR_BYTES:
        raise EmbeddingFileError(path, f"compressed records inflate to {inflated} bytes (limit {MAX_TENSOR_BYTES}); "
                                 "not an embedding file")


def load_torch(data: bytes, path, *, name: str | None = None):
    """``(plan, tensors)`` for a torch.save file held in ``data``."""
    _check_zip_records(data, path)
    parameter_dict = False
    try:
        try:
            obj = _load(data, allow_parameter_dict=False)
        except pickle.UnpicklingError as exc:
            if PARAMETER_DICT not in str(exc):
                raise
            parameter_dict = True
            obj = _load(data, allow_parameter_dict=True)
    except pickle.UnpicklingError as exc:
        raise EmbeddingFileError(path, _refusal(exc)) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError... for damaged files
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
        raise EmbeddingFileError(path, f"not a readable PyTorch file (damaged or truncated?): {first_line}") from None

    fmt = "a1111_pt"
    if isinstance(obj, dict) and isinstance(obj.get("string_to_param"), ParameterDictStandIn):
        obj = dict(obj)
        obj["string_to_param"] = obj["string_to_param"].parameters
        fmt = "a1111_pt_parameterdict"
    elif parameter_dict:
        raise EmbeddingFileError(path, "file holds a ParameterDict outside 'string_to_param'; not an embedding")
    return plan_object(obj, path, name=name, a1111_format=fmt)
