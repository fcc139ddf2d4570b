"""Writer, names, hashing, conversions and the inspect report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import subprocess

import pytest
import torch

from tests.core import golden
from tests.needs import missing
from tokensmith import __version__
from tokensmith.convert import to_sd1, to_sdxl
from tokensmith.embedding import Embedding
from tokensmith.errors import EmbeddingFileError, EmbeddingNameError, FamilyMismatchError, TokenSmithError
from tokensmith.formats import read_embedding
from tokensmith.hashing import autov2, sha256_file
from tokensmith.names import safe_join, validate_name
from tokensmith.report import inspect_report
from tokensmith.writer import embedding_to_state_dict, save_embedding, serialize_embedding


def sd1(n=2, seed=0, **kw):
    return Embedding({"clip_l": golden.vectors(n, 768, seed)}, **kw)


def sdxl(n=2, seed=0, **kw):
    return Embedding({"clip_l": golden.vectors(n, 768, seed), "clip_g": golden.vectors(n, 1280, seed + 1)}, **kw)


def header_of(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def test_sd1_file_layout_and_metadata(tmp_path):
    emb = sd1(3, name="ignored", step=120)
    path = save_embedding(emb, tmp_path, "my-emb", extra_metadata={"trigger": "mytoken"})
    assert path == (tmp_path / "my-emb.safetensors").resolve()
    header = header_of(path)
    meta = header.pop("__metadata__")
    assert list(header) == ["emb_params"]
    assert header["emb_params"]["dtype"] == "F32" and header["emb_params"]["shape"] == [3, 768]
    assert meta["name"] == "my-emb" and meta["family"] == "sd1" and meta["vectors"] == "3"
    assert meta["encoders"] == "clip_l" and meta["step"] == "120" and meta["trigger"] == "mytoken"
    assert meta["tool"] == f"tokensmith {__version__}"
    assert meta["created"].endswith("+00:00")
    assert all(isinstance(v, str) for v in meta.values())
    back = read_embedding(path)
    assert torch.equal(back.vectors["clip_l"], emb.vectors["clip_l"]) and back.step == 120


def test_sdxl_file_layout(tmp_path):
    emb = sdxl(2)
    path = save_embedding(emb, tmp_path, "xl")
    header = header_of(path)
    assert header["clip_l"]["shape"] == [2, 768] and header["clip_g"]["shape"] == [2, 1280]
    assert "emb_params" not in header
    back = read_embedding(path)
    assert back.family == "sdxl"
    for k in ("clip_l", "clip_g"):
        assert torch.equal(back.vectors[k], emb.vectors[k])


def test_fp16_and_noncontiguous_become_fp32_contiguous():
    t = golden.vectors(2, 768 * 2, dtype=torch.float16)[:, ::2]
    sd = embedding_to_state_dict(Embedding({"clip_l": t}))
    assert sd["emb_params"].dtype == torch.float32 and sd["emb_params"].is_contiguous()
    assert isinstance(serialize_embedding(Embedding({"clip_l": t})), bytes)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    save_embedding(sd1(seed=1), tmp_path, "same")
    with pytest.raises(EmbeddingFileError, match="exists; pass overwrite or choose another name"):
        save_embedding(sd1(seed=2), tmp_path, "same")
    assert torch.equal(read_embedding(tmp_path / "same.safetensors").vectors["clip_l"], golden.vectors(2, 768, 1))
    save_embedding(sd1(seed=2), tmp_path, "same", overwrite=True)
    assert torch.equal(read_embedding(tmp_path / "same.safetensors").vectors["clip_l"], golden.vectors(2, 768, 2))


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_failed_replace_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = save_embedding(sd1(seed=1), tmp_path, "keep")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(EmbeddingFileError, match="No space left"):
        save_embedding(sd1(seed=2), tmp_path, "keep", overwrite=True)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failure_while_writing_removes_temp(tmp_path, monkeypatch):
    path = save_embedding(sd1(seed=1), tmp_path, "keep")
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(EmbeddingFileError, match="Input/output error"):
        save_embedding(sd1(seed=2), tmp_path, "keep", overwrite=True)
    with pytest.raises(EmbeddingFileError):
        save_embedding(sd1(seed=2), tmp_path, "new")
    assert path.read_bytes() == before
    assert not (tmp_path / "new.safetensors").exists()
    assert _leftovers(tmp_path) == []


@contextlib.contextmanager
def read_only(folder):
    """``folder`` unwritable for this process, as any user: its permissions for a normal user; root
    ignores those, so for root a read-only bind mount of the folder onto itself (the kernel then
    refuses every write in it with EROFS, root's included)."""
    folder = str(folder)
    if os.geteuid() != 0:
        os.chmod(folder, 0o500)
        try:
            yield "permissions"
        finally:
            os.chmod(folder, 0o700)
        return
    bound = subprocess.run(["mount", "--bind", folder, folder], capture_output=True, text=True)
    if bound.returncode != 0:
        missing(f"root cannot bind-mount here ({bound.stderr.strip() or bound.returncode})")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", folder], capture_output=True, text=True)
        assert ro.returncode == 0, ro.stderr
        yield "read-only bind mount"
    finally:
        subprocess.run(["umount", folder], check=True)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and mounts")
def test_read_only_folder(tmp_path):
    path = save_embedding(sd1(seed=1), tmp_path, "ro")
    before = path.read_bytes()
    with read_only(tmp_path) as how:
        with pytest.raises(EmbeddingFileError, match="cannot write"):
            save_embedding(sd1(seed=2), tmp_path, "ro", overwrite=True)
        with pytest.raises(EmbeddingFileError, match="cannot write"):
            save_embedding(sd1(seed=2), tmp_path, "ro-new")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ro.safetensors"], how
    assert path.read_bytes() == before
    # control: the same folder, writable again, takes the save (the refusal above was the folder's)
    save_embedding(sd1(seed=2), tmp_path, "ro", overwrite=True)
    assert path.read_bytes() != before


def test_nan_and_inf_are_refused(tmp_path):
    for bad in (float("nan"), float("inf")):
        vec = golden.vectors(2, 768)
        vec[0, 3] = bad
        with pytest.raises(EmbeddingFileError, match="NaN/Inf"):
            save_embedding(Embedding({"clip_l": vec}), tmp_path, "broken")
    assert list(tmp_path.iterdir()) == []


def test_subfolders_are_created_inside_root(tmp_path):
    path = save_embedding(sd1(), tmp_path, "styles/v2/thing")
    assert path == (tmp_path / "styles" / "v2" / "thing.safetensors").resolve()
    assert path.exists()
    with pytest.raises(EmbeddingNameError):
        save_embedding(sd1(), tmp_path, "../escape")
    assert not (tmp_path.parent / "escape.safetensors").exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_subfolder_cannot_lead_out(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(EmbeddingNameError, match="outside"):
        save_embedding(sd1(), root, "link/x")
    assert list(outside.iterdir()) == []


def test_extra_metadata_rules(tmp_path):
    with pytest.raises(TokenSmithError, match="reserved|set by TokenSmith"):
        save_embedding(sd1(), tmp_path, "m", extra_metadata={"family": "sdxl"})
    with pytest.raises(TokenSmithError, match="text"):
        save_embedding(sd1(), tmp_path, "m", extra_metadata={"lr": 0.1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, expected", [
    ("cat", "cat"),
    ("Cat_2-v1.5", "Cat_2-v1.5"),
    ("styles/cat", "styles/cat"),
    ("cat.safetensors", "cat"),
    ("a" * 128, "a" * 128),
    ("/".join(["b" * 120] * 2), "/".join(["b" * 120] * 2)),
])
def test_valid_names(name, expected):
    assert validate_name(name) == expected


@pytest.mark.parametrize("name, fragment", [
    ("", "empty"),
    (".safetensors", "empty"),
    ("../x", "not allowed"),
    ("a/../b", "not allowed"),
    ("/abs", "leading"),
    ("C:/x", "leading"),
    (".hidden", "start or end"),
    ("name.", "start or end"),
    ("a//b", "empty folder part"),
    ("a/", "empty folder part"),
    ("with space", "' '"),
    ("tab\tname", "'\\t'"),
    ("back\\slash", "'\\\\'"),
    ("nul\0byte", "NUL"),
    ("a" * 129, "longer than 128"),
    ("/".join(["b" * 100] * 3), "limit is 255"),
    ("CON", "reserved"),
    ("nul.txt", "reserved"),
    ("x/com1", "reserved"),
    ("kitten.pt", "extension"),
    ("ünïcode", "contains"),
    ("semi;colon", "';'"),
])
def test_invalid_names(name, fragment):
    with pytest.raises(EmbeddingNameError, match=None) as info:
        validate_name(name)
    assert fragment in str(info.value)


def test_safe_join(tmp_path):
    assert safe_join(tmp_path, "a/b.safetensors") == (tmp_path / "a" / "b.safetensors").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x", ".", ""):
        with pytest.raises(EmbeddingNameError):
            safe_join(tmp_path, bad)


def test_hashes(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert autov2(path) == hashlib.sha256(data).hexdigest()[:10]
    with pytest.raises(EmbeddingFileError):
        sha256_file(tmp_path / "missing")


def test_conversions():
    emb = sd1(3, name="c", step=5)
    xl = to_sdxl(emb)
    assert xl.family == "sdxl" and xl.shapes() == {"clip_l": [3, 768], "clip_g": [3, 1280]}
    assert torch.equal(xl.vectors["clip_l"], emb.vectors["clip_l"]) and not xl.vectors["clip_g"].any()
    assert xl.name == "c" and xl.step == 5
    g = golden.vectors(3, 1280, 9)
    assert torch.equal(to_sdxl(emb, g).vectors["clip_g"], g)
    with pytest.raises(FamilyMismatchError, match=r"\[3, 1280\]"):
        to_sdxl(emb, golden.vectors(2, 1280))
    back = to_sd1(xl)
    assert back.family == "sd1" and torch.equal(back.vectors["clip_l"], emb.vectors["clip_l"])
    assert to_sd1(emb).family == "sd1" and to_sdxl(xl).family == "sdxl"
    sd2 = Embedding({"clip_h": golden.vectors(1, 1024)})
    with pytest.raises(FamilyMismatchError):
        to_sdxl(sd2)
    with pytest.raises(FamilyMismatchError):
        to_sd1(sd2)


def test_inspect_report_numbers():
    vec = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    report = inspect_report(Embedding({"clip_l": vec}, name="r", step=3))
    s = report["stats"]["clip_l"]
    assert s["norms"] == [5.0, 0.0]
    assert s["mean"] == pytest.approx(7 / 4) and s["min"] == 0.0 and s["max"] == 4.0
    assert s["std"] == pytest.approx(vec.flatten().std(correction=0).item())
    assert s["nan"] == 0 and s["inf"] == 0 and s["zero_vectors"] == 1
    assert report["encoders"] == {"clip_l": [2, 2]} and report["step"] == 3 and report["family"] == "sd1"
    assert any("all-zero" in w for w in report["warnings"])
