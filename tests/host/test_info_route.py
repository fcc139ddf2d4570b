"""GET /tokensmith/embeddings/info's answer (server_routes.embedding_info_reply, which the route
returns as JSON) in process, on ComfyUI's real embeddings folders: the name check's error (400), the
file's facts under the cleaned name through each candidate the route tries (200), or 'no embedding
named' (404). The HTTP wrapping itself is tested through the real server (tests/server,
tests/reliability/test_hostile_names.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def reply(pack):
    return pack("server_routes").embedding_info_reply


def _write(path, rows=1):
    from tokensmith.embedding import Embedding
    from tokensmith.writer import write_embedding_file

    # the writer only writes .safetensors names: a .pt/.bin/upper-case name is a renamed file
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.parent / "staged-for-rename.safetensors"
    write_embedding_file(Embedding({"clip_l": torch.ones(rows, 768)}, name=path.stem), staged)
    staged.replace(path)


@pytest.fixture
def folder(embeddings_dir):
    from pathlib import Path

    import folder_paths

    root = Path(embeddings_dir) / "info_route"
    made = []

    def put(rel, rows=1):
        target = root / rel
        _write(target, rows)
        made.append(target)
        folder_paths.filename_list_cache.clear()
        return target

    yield put
    for target in made:
        target.unlink(missing_ok=True)
    folder_paths.filename_list_cache.clear()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin"])
def test_a_name_finds_its_file_by_each_extension_the_route_tries(reply, folder, suffix):
    path = folder(f"kind{suffix}", rows=2)
    status, body = reply("info_route/kind")
    assert status == 200, body
    assert body["name"] == "info_route/kind"
    assert body["file"] == path.name and body["size"] == path.stat().st_size
    assert body["family"] == "sd1" and body["vectors"] == 2 and "error" not in body


def test_the_safetensors_suffix_is_cleaned_from_the_reported_name(reply, folder):
    folder("clean.safetensors")
    status, body = reply("info_route/clean.safetensors")
    assert status == 200, body
    assert body["name"] == "info_route/clean"


def test_a_file_named_exactly_as_asked_is_found_before_the_extensions(reply, folder):
    # 'X.SAFETENSORS' cleans to 'X'; only the name as given finds the upper-case file
    path = folder("UPPER.SAFETENSORS", rows=3)
    status, body = reply("info_route/UPPER.SAFETENSORS")
    assert status == 200, body
    assert body["name"] == "info_route/UPPER" and body["file"] == path.name and body["vectors"] == 3


def test_an_unknown_name_is_404_with_the_cleaned_name(reply, folder):
    assert reply("info_route/absent.safetensors") == (
        404, {"error": "no embedding named 'info_route/absent'"})


@pytest.mark.parametrize("name, message", [
    ("", "the embedding name is empty"),
    ("../outside", "'..' are not allowed"),
    ("/tmp/outside", "must be relative to the embeddings folder"),
    ("a b", "contains ' '"),
    ("CON", "reserved device name"),
])
def test_a_refused_name_is_400_with_the_name_check_message(reply, embeddings_dir, name, message):
    from pathlib import Path

    # a real file waits where the hostile name points
    outside = Path(embeddings_dir).parent / "outside.safetensors"
    _write(outside)
    try:
        status, body = reply(name)
    finally:
        outside.unlink()
    assert status == 400, body
    assert set(body) == {"error"} and message in body["error"], body

