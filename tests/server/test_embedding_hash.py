"""The embedding browser's hash badge (js/embedding_browser.js reads `hash` from the listing): the
routes of a real ComfyUI server give each file's AutoV2 hash, computed once per size and mtime."""

from __future__ import annotations

import hashlib
import os
import urllib.parse

import pytest

from devkit.server import ComfyServer
from tests.core import golden


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """A server with the pack and an embeddings folder, no checkpoint (the listing needs none)."""
    srv = ComfyServer(tmp_path_factory.mktemp("hash_base")).start()
    yield srv
    srv.stop()


def autov2_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def listed(server, name: str) -> dict:
    return {e["name"]: e for e in server.get("/tokensmith/embeddings")}[name]


def test_listing_and_info_carry_the_files_autov2_hash(bare_server):
    folder = bare_server.base / "models" / "embeddings"
    (folder / "sub").mkdir(exist_ok=True)
    one = golden.kohya_safetensors(folder / "hash-one.safetensors", golden.vectors(2, 768, 1))
    two = golden.a1111_pt(folder / "sub" / "hash-two.pt", golden.vectors(3, 768, 2))
    for name, path in (("hash-one", one), ("sub/hash-two", two)):
        entry = listed(bare_server, name)
        assert entry["hash"] == autov2_of(path), entry
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        info = bare_server.get("/tokensmith/embeddings/info?name=" + urllib.parse.quote(name))
        assert info["hash"] == entry["hash"]


def test_hash_is_computed_once_per_size_and_mtime(bare_server):
    path = golden.kohya_safetensors(bare_server.base / "models" / "embeddings" / "hash-cached.safetensors",
                                    golden.vectors(1, 768, 3))
    first = listed(bare_server, "hash-cached")["hash"]
    assert first == autov2_of(path)
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last vector: same size, same header, other file hash
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert autov2_of(path) != first
    assert listed(bare_server, "hash-cached")["hash"] == first, "the file was hashed again at the same size and mtime"
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert listed(bare_server, "hash-cached")["hash"] == autov2_of(path)
