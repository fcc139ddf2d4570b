"""The host matrix's own checks (scripts/test_hosts.py): a host tarball is used only when its
checksum matches what the hosts README gives, and per-host counts come from pytest's JUnit report."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile

import pytest

from devkit.comfy_host import REPO_ROOT

spec = importlib.util.spec_from_file_location("test_hosts_script", REPO_ROOT / "scripts" / "test_hosts.py")
matrix = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = matrix  # its dataclasses look their module up while being made
spec.loader.exec_module(matrix)


def make_host_tarball(folder, name="comfyui-9.9.9.tar.gz"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, text in (("ComfyUI/main.py", "print('hi')\n"), ("ComfyUI/comfyui_version.py", '__version__ = "9.9.9"\n')):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tarball = folder / name
    tarball.write_bytes(buf.getvalue())
    return tarball, hashlib.sha256(buf.getvalue()).hexdigest()


def test_a_matching_checksum_unpacks_once(tmp_path):
    tarball, digest = make_host_tarball(tmp_path)
    (tmp_path / "README.md").write_text(f"| `{tarball.name}` | v9.9.9 |\n\nsha256 of the tarball: `{digest}`.\n")
    host = matrix.unpack_checked(tarball, tmp_path / "out")
    assert (host / "main.py").is_file() and matrix.comfyui_version(host) == "9.9.9"
    (host / "main.py").write_text("kept")
    assert (matrix.unpack_checked(tarball, tmp_path / "out") / "main.py").read_text() == "kept"


def test_a_wrong_or_missing_checksum_is_refused(tmp_path):
    tarball, digest = make_host_tarball(tmp_path)
    (tmp_path / "README.md").write_text(f"sha256 of the tarball: `{'0' * 64}`.\n")
    with pytest.raises(SystemExit, match="README says"):
        matrix.unpack_checked(tarball, tmp_path / "out")
    (tmp_path / "README.md").write_text("no checksum here\n")
    with pytest.raises(SystemExit, match="gives no sha256"):
        matrix.unpack_checked(tarball, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_junit_counts(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text('<testsuites><testsuite name="pytest" tests="10" failures="1" errors="2" skipped="3"/>'
                      "</testsuites>")
    assert matrix.junit_counts(report) == (4, 3, 3)
