"""The reader's dispatcher held exactly: what it says of a path that is no readable file, the header it
gives for each container (every field), encoder order as stored and as read, the refusals of pickled
and PNG tensors and of files too large to read whole, and the name it gives an embedding."""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np
import pytest
import safetensors.torch
import torch

from tests.core import golden
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import png_fmt, read_embedding, read_embedding_with_header, read_header
from tokensmith.formats.limits import MAX_FILE_BYTES, MAX_TENSOR_BYTES

READERS = [read_embedding, read_header, read_embedding_with_header]


def refused(path, message: str):
    return pytest.raises(EmbeddingFileError, match=f"^{re.escape(f'{path}: {message}')}$")


# ----------------------------------------------------------------------------- paths that are no file

@pytest.mark.parametrize("read", READERS)
def test_paths_that_are_no_readable_file_word_for_word(tmp_path, read):
    with refused(tmp_path / "missing.pt", "file not found"):
        read(tmp_path / "missing.pt")
    with refused(tmp_path, "is a folder, not an embedding file"):
        read(tmp_path)
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with refused(fifo, "is not a regular file"):
        read(fifo)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with refused(empty, "file is empty"):
        read(empty)
    one = tmp_path / "one.pt"
    one.write_bytes(b"\0")
    with refused(one, "format not recognised: expected safetensors, a PyTorch .pt/.bin file or an A1111 PNG "
                 "embedding (the file may be damaged)"):
        read(one)
    afile = tmp_path / "plain.txt"
    afile.write_text("x")
    with refused(afile / "child.pt", "cannot read the file (Not a directory)"):
        read(afile / "child.pt")
    long = tmp_path / ("n" * 300)
    with refused(long, "cannot read the file (File name too long)"):
        read(long)
    bad = "is not a valid file name (it holds a NUL byte or undecodable characters); rename the file"
    with refused(tmp_path / "a\0b.pt", bad):
        read(tmp_path / "a\0b.pt")
    with refused(tmp_path / "a\ud800b.pt", bad):
        read(str(tmp_path / "a\ud800b.pt"))


# ----------------------------------------------------------------------------- headers, field by field

def test_header_of_a_safetensors_file_every_field(tmp_path):
    vec = golden.vectors(3, 768, 2)
    path = golden.kohya_safetensors(tmp_path / "kohya.safetensors", vec, metadata={"step": "40", "note": "n"})
    size = path.stat().st_size
    expected = {"path": str(path), "name": "kohya", "format": "safetensors_emb_params", "family": "sd1",
                "encoders": {"clip_l": [3, 768]}, "dtypes": {"clip_l": "float32"},
                "metadata": {"step": "40", "note": "n"}, "step": 40, "size": size, "container": "safetensors",
                "stored_order": ["clip_l"]}
    assert read_header(path) == expected
    emb, header = read_embedding_with_header(path)
    assert header == expected
    assert emb.name == "kohya" and emb.step == 40 and emb.metadata == {"step": "40", "note": "n"}
    assert emb.source_format == "safetensors_emb_params" and torch.equal(emb.vectors["clip_l"], vec)
    # a name given is the embedding's name (and the header's); an empty one falls back to the stem
    emb, header = read_embedding_with_header(path, name="given")
    assert emb.name == "given" and header["name"] == "given"
    assert read_embedding(path, name="").name == "kohya"


def sdxl_raw(path, first: str, dtype_l: str = "F32", n_g: int = 2):
    """An SDXL safetensors file whose tensor ``first`` lies first in the data, whatever the header order."""
    l_vec = (torch.arange(2 * 768, dtype=torch.float32) / 1000).reshape(2, 768)
    g_vec = (torch.arange(n_g * 1280, dtype=torch.float32) / -1000).reshape(n_g, 1280)
    l_bytes = l_vec.numpy().tobytes() if dtype_l == "F32" else l_vec.half().numpy().tobytes()
    g_bytes = g_vec.numpy().tobytes()
    if first == "clip_l":
        offs = {"clip_l": [0, len(l_bytes)], "clip_g": [len(l_bytes), len(l_bytes) + len(g_bytes)]}
        data = l_bytes + g_bytes
    else:
        offs = {"clip_g": [0, len(g_bytes)], "clip_l": [len(g_bytes), len(g_bytes) + len(l_bytes)]}
        data = g_bytes + l_bytes
    header = {"clip_l": {"dtype": dtype_l, "shape": [2, 768], "data_offsets": offs["clip_l"]},
              "clip_g": {"dtype": "F32", "shape": [n_g, 1280], "data_offsets": offs["clip_g"]}}
    golden.safetensors_raw(path, header, data)
    return l_vec, g_vec


@pytest.mark.parametrize("first", ["clip_l", "clip_g"])
def test_safetensors_encoders_read_in_canonical_order_and_stored_order_by_offset(tmp_path, first):
    path = tmp_path / "xl.safetensors"
    l_vec, g_vec = sdxl_raw(path, first, dtype_l="F16")
    order = [first, "clip_g" if first == "clip_l" else "clip_l"]
    for header in (read_header(path), read_embedding_with_header(path)[1]):
        assert list(header["encoders"]) == ["clip_l", "clip_g"] and list(header["dtypes"]) == ["clip_l", "clip_g"]
        assert header["encoders"] == {"clip_l": [2, 768], "clip_g": [2, 1280]}
        assert header["dtypes"] == {"clip_l": "float16", "clip_g": "float32"}
        assert header["stored_order"] == order and header["format"] == "sdxl" and header["family"] == "sdxl"
        assert header["step"] is None and header["metadata"] == {} and header["container"] == "safetensors"
    emb = read_embedding(path)
    assert list(emb.vectors) == ["clip_l", "clip_g"]
    assert torch.equal(emb.vectors["clip_l"], l_vec.half().float()) and torch.equal(emb.vectors["clip_g"], g_vec)


@pytest.mark.parametrize("read", [read_header, read_embedding])
def test_encoders_with_different_vector_counts_are_refused(tmp_path, read):
    path = tmp_path / "uneven.safetensors"
    sdxl_raw(path, "clip_l", n_g=3)
    with refused(path, "every encoder needs the same number of vectors, got {'clip_l': [2, 768], "
                 "'clip_g': [3, 1280]}"):
        read(path)


def test_uneven_pickled_encoders_are_refused_naming_the_file(tmp_path):
    path = golden.torch_file(tmp_path / "uneven.pt", {"clip_g": golden.vectors(3, 1280), "clip_l": golden.vectors(2)})
    with refused(path, "every encoder needs the same number of vectors, got {'clip_l': [2, 768], "
                 "'clip_g': [3, 1280]}"):
        read_embedding(path)


def test_header_of_a_pickle_every_field_and_its_stored_order(tmp_path):
    l_vec, g_vec = golden.vectors(2, 768, 1).double(), golden.vectors(2, 1280, 2).to(torch.bfloat16)
    path = golden.torch_file(tmp_path / "xl.pt", {"clip_g": g_vec, "clip_l": l_vec})
    expected = {"path": str(path), "name": "xl", "format": "sdxl", "family": "sdxl",
                "encoders": {"clip_l": [2, 768], "clip_g": [2, 1280]},
                "dtypes": {"clip_l": "float64", "clip_g": "bfloat16"}, "metadata": {}, "step": None,
                "size": path.stat().st_size, "container": "torch_zip", "stored_order": ["clip_g", "clip_l"]}
    assert read_header(path) == expected
    emb, header = read_embedding_with_header(path)
    assert header == expected and list(header["encoders"]) == ["clip_l", "clip_g"]
    assert list(header["dtypes"]) == ["clip_l", "clip_g"] and list(emb.vectors) == ["clip_l", "clip_g"]
    assert emb.vectors["clip_l"].dtype == torch.float32 and torch.equal(emb.vectors["clip_l"], l_vec.float())
    assert torch.equal(emb.vectors["clip_g"], g_vec.float())
    assert emb.vectors["clip_l"].is_contiguous() and emb.source_format == "sdxl"


def test_header_of_a_legacy_pickle_and_of_a_png(tmp_path):
    vec = golden.vectors(2, 768, 3)
    pt = golden.a1111_pt(tmp_path / "old.pt", vec, legacy=True, name="old", step=7)
    header = read_header(pt)
    assert header == {"path": str(pt), "name": "old", "format": "a1111_pt", "family": "sd1",
                      "encoders": {"clip_l": [2, 768]}, "dtypes": {"clip_l": "float32"},
                      "metadata": {"name": "old", "step": "7", "sd_checkpoint": "abcdef1234",
                                   "sd_checkpoint_name": "v1-5-pruned"},
                      "step": 7, "size": pt.stat().st_size, "container": "torch_legacy",
                      "stored_order": ["clip_l"]}
    png = golden.png_text(tmp_path / "card.png", golden.a1111_dict(vec, name="card", step=3))
    emb, header = read_embedding_with_header(png)
    assert header["container"] == "png" and header["format"] == "png_text" and header["name"] == "card"
    assert header["step"] == 3 and header["stored_order"] == ["clip_l"] and header["dtypes"] == {"clip_l": "float32"}
    assert emb.source_format == "png_text" and torch.equal(emb.vectors["clip_l"], vec)


def test_a_bare_pickle_is_handed_to_the_restricted_loader(tmp_path):
    path = golden.malicious_pt(tmp_path / "bare.pkl", tmp_path / "marker", layout="pickle")
    for read in READERS:
        with pytest.raises(EmbeddingFileError, match=f"^{re.escape(str(path))}: refused: the file contains Python "
                           "objects other than tensors"):
            read(path)
    assert not (tmp_path / "marker").exists()


# ----------------------------------------------------------------------------- tensors and sizes

@pytest.mark.parametrize("read", READERS)
def test_pickled_tensors_that_are_not_dense_float_word_for_word(tmp_path, read):
    ints = golden.torch_file(tmp_path / "ints.pt", {"emb_params": torch.zeros(2, 768, dtype=torch.int64)})
    with refused(ints, "tensor 'emb_params' is torch.int64 (torch.strided); an embedding must be a dense "
                 "floating-point tensor"):
        read(ints)
    sparse = golden.torch_file(tmp_path / "sparse.pt", golden.a1111_dict(torch.eye(2, 768).to_sparse()))
    with refused(sparse, "tensor 'string_to_param.*' is torch.float32 (torch.sparse_coo); an embedding must be a "
                 "dense floating-point tensor"):
        read(sparse)


def test_a_pickled_tensor_over_the_byte_limit_is_refused_and_at_it_read(tmp_path):
    # A tensor saved as a stride-0 view of one row: a small file (the loader's record check passes) whose
    # tensor would fill the limit once made contiguous.
    rows = MAX_TENSOR_BYTES // (1024 * 4)
    at = golden.torch_file(tmp_path / "at.pt", {"emb_params": torch.ones(1, 1024).expand(rows, 1024)})
    assert at.stat().st_size < 100_000
    emb = read_embedding(at)
    assert emb.shapes() == {"clip_h": [rows, 1024]} and float(emb.vectors["clip_h"][-1, -1]) == 1.0
    assert emb.vectors["clip_h"].is_contiguous()
    half = golden.torch_file(tmp_path / "half.pt", {"emb_params": torch.ones(1, 1024).half().expand(rows + 1, 1024)})
    assert read_embedding(half).shapes() == {"clip_h": [rows + 1, 1024]}  # 2 bytes a number: under the limit
    over = golden.torch_file(tmp_path / "over.pt", {"emb_params": torch.ones(1, 1024).expand(rows + 1, 1024)})
    with refused(over, f"tensor 'emb_params' is [{rows + 1}, 1024]: too large for an embedding"):
        read_embedding(over)


def test_files_read_whole_are_refused_above_the_size_limit(tmp_path):
    for head, name in ((b"PK\x03\x04", "huge.pt"), (b"\x89PNG\r\n\x1a\n", "huge.png")):
        path = tmp_path / name
        with open(path, "wb") as fh:
            fh.write(head)
            fh.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
        for read in READERS:
            with refused(path, f"file is {MAX_FILE_BYTES + 1} bytes; embedding files of this kind are refused "
                         f"above {MAX_FILE_BYTES} bytes"):
                read(path)


def test_a_png_card_is_read_whole_through_the_dispatcher(tmp_path):
    vec = golden.vectors(2, 768, 9)
    from tokensmith.embedding import Embedding

    emb = Embedding({"clip_l": vec}, name="c", step=2)
    path = tmp_path / "c.png"
    path.write_bytes(png_fmt.png_card_bytes(emb, golden.picture(6, 10)))
    back, header = read_embedding_with_header(path, name="renamed")
    assert back.name == "renamed" and header["name"] == "renamed" and torch.equal(back.vectors["clip_l"], vec)
    assert header["size"] == len(path.read_bytes())


def test_safetensors_data_is_read_from_the_file_not_the_header(tmp_path):
    data = (np.arange(768, dtype=np.float32) / 7).tobytes()
    header = {"emb_params": {"dtype": "F32", "shape": [1, 768], "data_offsets": [0, 768 * 4]},
              "__metadata__": {"name": "x"}}
    raw = json.dumps(header).encode()
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    emb, h = read_embedding_with_header(path)
    assert torch.equal(emb.vectors["clip_l"], torch.from_numpy(np.frombuffer(data, np.float32).copy()).reshape(1, 768))
    assert h["metadata"] == {"name": "x"} and emb.metadata == {"name": "x"}
    safetensors.torch.save_file({"emb_params": torch.zeros(1, 768)}, str(path))
    assert read_header(path)["size"] == path.stat().st_size


# ----------------------------------------------------------------------------- edges the first mutation run found

def unreadable_file(tmp_path):
    """A regular file that cannot be opened for reading: mode 000 (enough unless running as root), else a
    write-only sysfs attribute (the kernel refuses to read it even to root)."""
    path = tmp_path / "locked.pt"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    path.chmod(0)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return path
    for candidate in ("/sys/bus/pci/rescan", "/sys/class/zram-control/hot_remove"):
        try:
            with open(candidate, "rb"):
                pass
        except PermissionError:
            if os.path.isfile(candidate) and os.stat(candidate).st_size > 0:
                from pathlib import Path

                return Path(candidate)
        except OSError:
            continue
    pytest.skip("no unreadable regular file can be made here (root, and no write-only sysfs attribute)")


@pytest.mark.parametrize("read", READERS)
def test_a_file_that_cannot_be_opened_is_refused_with_the_reason(tmp_path, read):
    path = unreadable_file(tmp_path)
    with refused(path, "cannot read the file (Permission denied)"):
        read(path)


def test_read_header_reads_only_the_safetensors_header(tmp_path):
    import tracemalloc

    rows = 16_000  # 49 MB of data, sparse on disk
    header = json.dumps({"emb_params": {"dtype": "F32", "shape": [rows, 768], "data_offsets": [0, rows * 768 * 4]}})
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header.encode())
        fh.truncate(8 + len(header) + rows * 768 * 4)
    tracemalloc.start()
    try:
        header = read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header["encoders"] == {"clip_l": [rows, 768]} and header["size"] == path.stat().st_size
    assert peak < 4 << 20, peak


def test_a_file_too_large_is_refused_without_reading_it(tmp_path):
    import tracemalloc

    path = tmp_path / "huge.png"
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(MAX_FILE_BYTES + 1)
    tracemalloc.start()
    try:
        with refused(path, f"file is {MAX_FILE_BYTES + 1} bytes; embedding files of this kind are refused above "
                     f"{MAX_FILE_BYTES} bytes"):
            read_embedding_with_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_a_png_of_exactly_the_size_limit_is_read_to_its_last_byte(tmp_path):
    import zlib

    vec = golden.vectors(1, 768, 4)
    card = golden.png_text(tmp_path / "small.png", golden.a1111_dict(vec, name="big")).read_bytes()
    iend = card.rindex(b"IEND") - 4
    head, tail = card[:iend], card[iend:]
    filler = MAX_FILE_BYTES - len(head) - len(tail) - 12  # one ancillary chunk of zeros makes up the size
    crc = zlib.crc32(b"zzZz")
    zeros = b"\0" * (1 << 20)
    for _ in range(filler >> 20):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(b"\0" * (filler & ((1 << 20) - 1)), crc)
    path = tmp_path / "at_limit.png"
    with open(path, "wb") as fh:
        fh.write(head + struct.pack(">I", filler) + b"zzZz")
        fh.seek(filler, os.SEEK_CUR)  # sparse zeros
        fh.write(struct.pack(">I", crc) + tail)
    assert path.stat().st_size == MAX_FILE_BYTES
    emb = read_embedding(path)
    assert emb.source_format == "png_text" and torch.equal(emb.vectors["clip_l"], vec)


def test_read_header_names_the_file_in_header_refusals(tmp_path):
    path = tmp_path / "notjson.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with refused(path, "safetensors header is not valid JSON (JSONDecodeError)"):
        read_header(path)
    bundle = tmp_path / "bundle.safetensors"
    safetensors.torch.save_file({"bundle_emb.a.clip_l": torch.zeros(1, 2, 768)}, str(bundle))
    with refused(bundle, "tensor 'bundle_emb.a.clip_l' has shape [1, 2, 768]; an embedding tensor must be 1-D or 2-D"):
        read_header(bundle)
