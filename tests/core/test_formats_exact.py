"""Exact behaviour of the embedding readers' refusals and headers: an unrecognised file, a pickle
with code in it, a tensor that is not floating point or holds no vectors, each stored dtype's name in
the header, and which LoRA bundle keys name an embedding."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from tests.core import golden
from tests.core.refusals import refused
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding, read_header

READERS = [read_embedding, read_header]


@pytest.mark.parametrize("read", READERS)
def test_a_file_of_no_known_format_is_refused_word_for_word(tmp_path, read):
    path = tmp_path / "notes.txt"
    path.write_text("hello there, not an embedding")
    with refused(f"{path}: format not recognised: expected safetensors, a PyTorch .pt/.bin file or an A1111 PNG "
                 "embedding (the file may be damaged)", EmbeddingFileError):
        read(path)


@pytest.mark.parametrize("read", READERS)
def test_a_pickle_that_would_run_code_is_refused_naming_what_it_calls(tmp_path, read):
    path = golden.malicious_pt(tmp_path / "evil.pt", tmp_path / "marker")
    with refused(f"{path}: refused: the file contains Python objects other than tensors (posix.system), which could "
                 "run code when loaded; TokenSmith only loads plain tensors. If you trust the file, re-save it as "
                 "safetensors", EmbeddingFileError):
        read(path)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("dtype, name", [(torch.int32, "I32"), (torch.int64, "I64"), (torch.uint8, "U8"),
                                         (torch.bool, "BOOL")])
def test_a_tensor_that_is_not_floating_point_is_refused_with_its_dtype(tmp_path, read, dtype, name):
    path = tmp_path / "ints.safetensors"
    safetensors.torch.save_file({"emb_params": torch.zeros(2, 768, dtype=dtype)}, str(path))
    with refused(f"{path}: tensor 'emb_params' has dtype {name}; an embedding must be floating point",
                 EmbeddingFileError):
        read(path)


@pytest.mark.parametrize("read", READERS)
def test_a_tensor_without_vectors_is_refused_with_its_shape(tmp_path, read):
    path = tmp_path / "empty.safetensors"
    safetensors.torch.save_file({"emb_params": torch.zeros(0, 768)}, str(path))
    with refused(f"{path}: tensor 'emb_params' is empty (shape [0, 768])", EmbeddingFileError):
        read(path)


@pytest.mark.parametrize("dtype, name", [(torch.float16, "float16"), (torch.bfloat16, "bfloat16"),
                                         (torch.float32, "float32"), (torch.float64, "float64")])
def test_the_header_names_each_stored_float_dtype(tmp_path, dtype, name):
    path = tmp_path / "e.safetensors"
    vec = golden.vectors(2, 768).to(dtype)
    safetensors.torch.save_file({"emb_params": vec}, str(path))
    header = read_header(path)
    assert header["dtypes"] == {"clip_l": name} and header["encoders"] == {"clip_l": [2, 768]}
    emb = read_embedding(path)
    assert emb.vectors["clip_l"].dtype == torch.float32 and torch.equal(emb.vectors["clip_l"], vec.float())


def test_lora_bundles_by_encoder_and_by_token_are_read_and_odd_keys_ignored(tmp_path):
    a_l, a_g, b = golden.vectors(2, 768, 1), golden.vectors(2, 1280, 2), golden.vectors(1, 768, 3)
    path = golden.lora_bundle(tmp_path / "lora.safetensors",
                              {"alpha": {"clip_l": a_l, "clip_g": a_g}, "beta": b,
                               "gamma": {"not_an_encoder": golden.vectors(1, 768, 4)}})
    alpha = read_embedding(path, name="alpha")
    assert alpha.shapes() == {"clip_l": [2, 768], "clip_g": [2, 1280]}
    assert torch.equal(alpha.vectors["clip_l"], a_l) and torch.equal(alpha.vectors["clip_g"], a_g)
    beta = read_embedding(path, name="beta")
    assert beta.shapes() == {"clip_l": [1, 768]} and torch.equal(beta.vectors["clip_l"], b)
    assert (alpha.metadata["bundle"], alpha.metadata["bundles"]) == ("alpha", "alpha,beta")
    # 'gamma' has no encoder key, so it is no bundle: a name no bundle has picks the first one
    gamma = read_embedding(path, name="gamma")
    assert gamma.metadata["bundle"] == "alpha" and torch.equal(gamma.vectors["clip_l"], a_l)
