"""Exact behaviour of the PyTorch reader (tokensmith.formats.torch_fmt) on .pt files made by hand:
a refusal that names no global, torch's error quoted by its first line cut at 200 characters, the
name asked for reaching the layout rules, and A1111 ParameterDicts pickled with odd or no state."""

from __future__ import annotations

import copyreg
import pickle
import types

import pytest
import torch

from tests.core.refusals import refused
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # what torch's legacy layout pickles first
NOT_TORCH = "not a readable PyTorch file (damaged or truncated?): "


def test_a_refusal_that_names_no_global_names_nothing(tmp_path):
    path = tmp_path / "opcode.pt"
    path.write_bytes(b"\x80\x02\xff" + bytes(20))  # a pickle whose first opcode (255) does not exist
    with refused(f"{path}: refused: the file contains Python objects other than tensors, which could run code "
                 "when loaded; TokenSmith only loads plain tensors. If you trust the file, re-save it as "
                 "safetensors", EmbeddingFileError):
        read_embedding(path)


def legacy_with_protocol(path, protocol: object):
    """torch's legacy layout whose protocol-version record is ``protocol``: torch.load says
    'Invalid protocol version: <it>'."""
    path.write_bytes(pickle.dumps(TORCH_LEGACY_MAGIC, protocol=2) + pickle.dumps(protocol, protocol=2))
    return path


def test_torchs_error_is_quoted_by_its_first_200_characters(tmp_path):
    path = legacy_with_protocol(tmp_path / "long.pt", "A" * 300)
    quoted = ("Invalid protocol version: " + "A" * 300)[:200]
    with refused(f"{path}: {NOT_TORCH}{quoted}", EmbeddingFileError):
        read_embedding(path)


def test_torchs_error_is_quoted_by_its_first_line(tmp_path):
    path = legacy_with_protocol(tmp_path / "lines.pt", "one\ntwo")
    with refused(f"{path}: {NOT_TORCH}Invalid protocol version: one", EmbeddingFileError):
        read_embedding(path)


def test_the_name_asked_for_picks_the_token_of_a_pickled_dict(tmp_path):
    a, b = torch.zeros(1, 768), torch.ones(2, 768)
    path = tmp_path / "tokens.bin"
    torch.save({"<a>": a, "<b>": b}, path)
    emb = read_embedding(path, name="b")
    assert (emb.source_format, emb.metadata, emb.name) == ("diffusers", {"token": "<b>"}, "b")
    assert torch.equal(emb.vectors["clip_l"], b)


def parameterdict_pickled_as(path, reduction: tuple):
    """A .pt file whose 'string_to_param' is a ParameterDict pickled as ``reduction`` (class, then
    maybe a state) instead of the way torch pickles one."""

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            return reduction if type(obj) is torch.nn.ParameterDict else NotImplemented

    torch.save({"string_to_param": torch.nn.ParameterDict()}, path,
               pickle_module=types.SimpleNamespace(Pickler=Pickler, __name__="pickle"))
    return path


@pytest.mark.parametrize("state", ["text", 5, [("*", 1)], {"_parameters": [1]}, {"other": {}}, None])
def test_a_parameterdict_with_an_odd_state_or_none_has_no_terms(tmp_path, state):
    args = (copyreg.__newobj__, (torch.nn.ParameterDict,))
    path = parameterdict_pickled_as(tmp_path / "odd.pt", args if state is None else (*args, state))
    with refused(f"{path}: 'string_to_param' holds 0 terms; an embedding file has one", EmbeddingFileError):
        read_embedding(path)
