"""What write_embedding_file and save_embedding promise, each held on its own: the file's name and
metadata, refusing to replace a file unless asked (also when it appears at the last moment, also
without hard links) and replacing it when asked, and every refusal naming the path it is about."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
from datetime import datetime

import pytest
import torch

from tokensmith import writer
from tokensmith.embedding import Embedding
from tokensmith.errors import EmbeddingFileError, TokenSmithError
from tokensmith.writer import _link_new, atomic_write_bytes, build_metadata, save_embedding, write_embedding_file


def emb(value=1.0, **kw):
    return Embedding({"clip_l": torch.full((2, 768), value)}, **kw)


def header_of(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def vectors_of(path):
    from safetensors.torch import load_file

    return load_file(str(path))["emb_params"]


def test_only_text_to_text_metadata_is_carried_over():
    meta = build_metadata(emb(metadata={"kept": "yes", "count": 3, 5: "five"}))
    assert meta["kept"] == "yes"
    assert "count" not in meta and 5 not in meta


def test_write_embedding_file_refuses_to_replace_unless_asked(tmp_path):
    target = tmp_path / "one.safetensors"
    write_embedding_file(emb(1.0), target)
    with pytest.raises(EmbeddingFileError, match="exists; pass overwrite"):
        write_embedding_file(emb(2.0), target)
    assert torch.equal(vectors_of(target), torch.full((2, 768), 1.0))
    assert write_embedding_file(emb(3.0), target, overwrite=True) == target
    assert torch.equal(vectors_of(target), torch.full((2, 768), 3.0))


def test_write_embedding_file_names_the_file_after_its_path(tmp_path):
    target = tmp_path / "chosen-name.safetensors"
    write_embedding_file(emb(name="other"), target, extra_metadata={"note": "x"})
    meta = header_of(target)["__metadata__"]
    assert meta["name"] == "chosen-name" and meta["note"] == "x"


def test_write_embedding_file_refusals_name_the_path(tmp_path):
    wrong = tmp_path / "x.pt"
    with pytest.raises(EmbeddingFileError) as info:
        write_embedding_file(emb(), wrong)
    assert str(info.value) == f"{wrong}: TokenSmith writes safetensors only: give a path ending in .safetensors"
    assert info.value.path == str(wrong)
    broken = tmp_path / "nan.safetensors"
    with pytest.raises(EmbeddingFileError) as info:
        write_embedding_file(emb(float("nan")), broken)
    assert info.value.path == str(broken) and "clip_l vectors hold 1536 NaN/Inf values" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_save_embedding_writes_name_dot_safetensors(tmp_path):
    root = tmp_path.resolve()
    path = save_embedding(emb(), root, "sub/kitten")
    assert path == root / "sub" / "kitten.safetensors" and path.is_file()
    assert [p.name for p in (root / "sub").iterdir()] == ["kitten.safetensors"]


def test_save_embedding_refusals_name_the_path(tmp_path):
    root = tmp_path.resolve()
    with pytest.raises(EmbeddingFileError) as info:
        save_embedding(emb(float("inf")), root, "bad")
    assert info.value.path == str(root / "bad.safetensors")
    (root / "taken").write_text("a file where the folder would go")
    with pytest.raises(EmbeddingFileError) as info:
        save_embedding(emb(), root, "taken/x")
    assert info.value.path == str(root / "taken")
    assert str(info.value) == f"{root / 'taken'}: cannot create the folder (File exists)"


def test_metadata_names_the_encoders_and_a_whole_second_and_drops_a_stale_step():
    pair = Embedding({"clip_l": torch.ones(1, 768), "clip_g": torch.ones(1, 1280)},
                     metadata={"step": "40", "seen": "kept"})
    meta = build_metadata(pair)
    assert meta["encoders"] == "clip_l,clip_g" and meta["vectors"] == "1" and meta["seen"] == "kept"
    assert "step" not in meta  # the vectors carry no step: a step copied from an older file would lie
    created = datetime.fromisoformat(meta["created"])
    assert created.microsecond == 0 and created.tzinfo is not None
    assert build_metadata(pair.with_vectors(pair.vectors, step=7))["step"] == "7"


def test_metadata_that_is_not_text_is_refused_by_its_key_and_type():
    with pytest.raises(TokenSmithError) as info:
        build_metadata(emb(), extra_metadata={"lr": 0.1})
    assert str(info.value) == "metadata must map text to text; got 'lr': float"


def _staged(tmp_path, data=b"new"):
    tmp = tmp_path / ".staged.tmp"
    tmp.write_bytes(data)
    return tmp


def test_a_file_that_appears_before_the_link_is_not_replaced(tmp_path):
    # the race atomic_write_bytes closes: the target appears between its check and the link
    target = tmp_path / "raced.safetensors"
    target.write_bytes(b"theirs")
    with pytest.raises(EmbeddingFileError) as info:
        _link_new(_staged(tmp_path), target)
    assert str(info.value) == f"{target}: exists; pass overwrite or choose another name"
    assert target.read_bytes() == b"theirs"


def test_without_hard_links_a_new_file_is_moved_and_an_existing_one_kept(tmp_path, monkeypatch):
    # a file system without hard links (FAT, some shares): os.link fails with another OSError
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(writer.os, "link", no_links)
    target = tmp_path / "plain.safetensors"
    tmp = _staged(tmp_path)
    _link_new(tmp, target)
    assert target.read_bytes() == b"new" and not tmp.exists()
    with pytest.raises(EmbeddingFileError) as info:
        _link_new(_staged(tmp_path, b"newer"), target)
    assert str(info.value) == f"{target}: exists; pass overwrite or choose another name"
    assert target.read_bytes() == b"new"


def test_atomic_write_refusals_name_the_path_and_the_reason(tmp_path):
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"old")
    with pytest.raises(EmbeddingFileError) as info:
        atomic_write_bytes(taken, b"new")  # overwrite is off unless asked
    assert (info.value.path, info.value.reason) == (str(taken), "exists; pass overwrite or choose another name")
    assert taken.read_bytes() == b"old"
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(EmbeddingFileError) as info:
        atomic_write_bytes(tmp_path / "folder.safetensors", b"new", overwrite=True)
    assert str(info.value) == f"{tmp_path / 'folder.safetensors'}: is a folder; choose a file name"
    long = tmp_path / ("a" * 300 + ".safetensors")
    with pytest.raises(EmbeddingFileError) as info:
        atomic_write_bytes(long, b"new")
    assert str(info.value) == f"{long}: is not a usable file name (File name too long); choose a shorter, plain name"
    nowhere = tmp_path / "missing" / "x.safetensors"
    with pytest.raises(EmbeddingFileError) as info:
        atomic_write_bytes(nowhere, b"new")
    assert str(info.value) == f"{nowhere}: cannot write in {str(nowhere.parent)!r} (No such file or directory)"


def test_the_part_written_is_hidden_from_listings_and_the_rename_is_made_durable(tmp_path, monkeypatch):
    # while the bytes are written the folder holds '.NAME.<random>.tmp' (a dot file, no .safetensors
    # ending: ComfyUI never lists a half-written embedding); after the rename the folder is fsynced
    target = tmp_path / "durable.safetensors"
    seen, synced_dirs = [], []
    real_fsync = os.fsync

    def watching_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced_dirs.append(sorted(os.listdir(tmp_path)))
        else:
            seen.append(sorted(os.listdir(tmp_path)))
        real_fsync(fd)

    monkeypatch.setattr(writer.os, "fsync", watching_fsync)
    atomic_write_bytes(target, b"data")
    assert len(seen) == 1 and len(seen[0]) == 1, seen
    (partial,) = seen[0]
    assert partial.startswith(".durable.safetensors.") and partial.endswith(".tmp"), partial
    assert synced_dirs == [["durable.safetensors"]]


def test_a_folder_that_refuses_chmod_or_fsync_still_gets_the_file(tmp_path, monkeypatch):
    # some shares refuse chmod, some file systems fsync on a folder: the file is written all the same
    real_fsync = os.fsync

    def no_chmod(path, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    def no_dir_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(writer.os, "chmod", no_chmod)
    monkeypatch.setattr(writer.os, "fsync", no_dir_fsync)
    target = atomic_write_bytes(tmp_path / "kept.safetensors", b"data")
    assert target.read_bytes() == b"data" and os.listdir(tmp_path) == ["kept.safetensors"]


def test_the_nan_refusal_says_how_to_recover(tmp_path):
    target = tmp_path / "nan.safetensors"
    with pytest.raises(EmbeddingFileError) as info:
        write_embedding_file(Embedding({"clip_l": torch.tensor([[float("nan"), 1.0, float("inf")] * 256])}), target)
    assert str(info.value) == (f"{target}: clip_l vectors hold 512 NaN/Inf values; refusing to save a broken "
                               "embedding (roll back to an earlier step or lower the learning rate)")


def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.os, "fsync", disk_full)
    target = tmp_path / "full.safetensors"
    with pytest.raises(EmbeddingFileError) as info:
        atomic_write_bytes(target, b"data")
    assert str(info.value) == f"{target}: could not be written (No space left on device)"
    assert os.listdir(tmp_path) == []


def test_a_temp_name_that_cannot_be_removed_does_not_hide_the_outcome(tmp_path, monkeypatch):
    # removing the temporary name is best effort: the link (or the write's error) is what counts
    def no_unlink(self, missing_ok=False):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    target = tmp_path / "linked.safetensors"
    tmp = _staged(tmp_path)
    monkeypatch.setattr(writer.Path, "unlink", no_unlink)
    _link_new(tmp, target)
    assert target.read_bytes() == b"new"

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.os, "fsync", disk_full)
    with pytest.raises(EmbeddingFileError, match="could not be written"):
        atomic_write_bytes(tmp_path / "full.safetensors", b"data")


def test_a_written_file_gets_the_usual_permissions(tmp_path):
    # mkstemp makes 0600; the file must read as any other file the user writes (0666 less the umask)
    mask = os.umask(0o022)
    os.umask(mask)
    target = atomic_write_bytes(tmp_path / "mode.safetensors", b"data")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
