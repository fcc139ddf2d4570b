"""PyTorch pickles (.pt / .bin, zip or legacy layout), loaded with ``weights_only=True`` only.

The one non-tensor class we let through is the ParameterDict of early textual-inversion files, and
it is mapped to an inert stand-in class, so no torch module is ever built from the file.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings

import torch

from ..errors import EmbeddingFileError
from .layout import plan_object

PARAMETER_DICT = "torch.nn.modules.container.ParameterDict"


class ParameterDictStandIn:
    """Receives the pickled state of a ParameterDict; only its ``_parameters`` dict is used."""

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    @property
    def parameters(self) -> dict:
        params = self.state.get("_parameters")
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


def load_torch(data: bytes, path, *, name: str | None = None):
    """``(plan, tensors)`` for a torch.save file held in ``data``."""
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
