"""A .pt file that would run code is refused even where a user has told torch to load pickles in
full by default (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which torch documents as forcing
weights_only=False on every call that leaves it unset): TokenSmith asks for weights_only=True on both of its loads, the plain one and
the one that admits A1111's ParameterDict."""

from __future__ import annotations

import os

import pytest
import torch

from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding


class MakesAFolder:
    """Unpickled in full, this calls os.makedirs(path): an effect the test can see."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


@pytest.fixture
def full_pickles_by_default(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)


def test_a_plain_pickle_with_code_is_refused_and_never_runs(tmp_path, full_pickles_by_default):
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "x": MakesAFolder(marker)}, path)
    with pytest.raises(EmbeddingFileError, match="contains Python objects other than tensors"):
        read_embedding(path)
    assert not marker.exists()


def test_a_parameter_dict_file_with_code_is_refused_and_never_runs(tmp_path, full_pickles_by_default):
    # the ParameterDict makes the first load fail; the second (which admits it) must still refuse the rest
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.zeros(1, 4))})
    torch.save({"string_to_param": params, "x": MakesAFolder(marker)}, path)
    with pytest.raises(EmbeddingFileError, match="contains Python objects other than tensors"):
        read_embedding(path)
    assert not marker.exists()


def test_a_parameter_dict_file_still_reads_under_the_setting(tmp_path, full_pickles_by_default):
    path = tmp_path / "a1111.pt"
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.arange(2 * 768.0).reshape(2, 768))})
    torch.save({"string_to_param": params, "name": "a1111"}, path)
    emb = read_embedding(path)
    assert torch.equal(next(iter(emb.vectors.values())), torch.arange(2 * 768.0).reshape(2, 768))


def test_a_parameter_dict_outside_string_to_param_is_refused_word_for_word(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"other": torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.zeros(1, 768))})}, path)
    with pytest.raises(EmbeddingFileError) as caught:
        read_embedding(path)
    assert str(caught.value) == f"{path}: file holds a ParameterDict outside 'string_to_param'; not an embedding"


def test_the_name_asked_for_and_the_path_reach_the_reader(tmp_path):
    path = tmp_path / "a1111.pt"
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.ones(1, 768))})
    torch.save({"string_to_param": params, "name": "inside"}, path)
    assert read_embedding(path, name="asked").name == "asked"
    narrow = tmp_path / "narrow.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 5)}}, narrow)
    with pytest.raises(EmbeddingFileError) as caught:
        read_embedding(narrow)
    assert str(caught.value).startswith(f"{narrow}: string_to_param['*'] has width 5")


def test_a_truncated_legacy_file_is_refused_with_torchs_first_line(tmp_path):
    import io

    whole = io.BytesIO()
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}}, whole, _use_new_zipfile_serialization=False)
    path = tmp_path / "cut.pt"
    path.write_bytes(whole.getvalue()[:-40])
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises is what the message quotes
        first = str(exc).strip().splitlines()[0][:200]
    else:
        pytest.fail("torch read the cut file")
    with pytest.raises(EmbeddingFileError) as caught:
        read_embedding(path)
    assert str(caught.value) == f"{path}: not a readable PyTorch file (damaged or truncated?): {first}"
