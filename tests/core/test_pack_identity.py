"""Which files and log lines are the pack's: decided by resolved location, never by a word in a path
(checkouts are named ComfyUI-TokenSmith, and hold .venv/ and .comfyui/ with ComfyUI's own code)."""

from __future__ import annotations

import os

from devkit.comfy_host import REPO_ROOT, frames_in_pack, is_pack_file, names_pack_path


def test_pack_sources_are_the_packs():
    assert is_pack_file(REPO_ROOT / "trainer.py")
    assert is_pack_file(REPO_ROOT / "tokensmith" / "embedding.py")
    assert is_pack_file(REPO_ROOT / "nodes" / "train.py")


def test_provisioned_folders_inside_the_checkout_are_not():
    for inside in (".venv/lib/python3.11/site-packages/sqlalchemy/pool/base.py", ".comfyui/comfy_extras/nodes_audio.py",
                   ".hosts/comfyui-0.33.0/src/ComfyUI/comfy/sd.py"):
        assert not is_pack_file(REPO_ROOT / inside), inside


def test_a_folder_named_like_the_pack_elsewhere_is_not(tmp_path):
    other = tmp_path / "ComfyUI-TokenSmith" / "tokensmith"
    other.mkdir(parents=True)
    (other / "trainer.py").write_text("")
    assert not is_pack_file(other / "trainer.py")


def test_the_pack_linked_into_custom_nodes_is(tmp_path):
    link = tmp_path / "ComfyUI" / "custom_nodes" / "TokenSmith"
    link.parent.mkdir(parents=True)
    os.symlink(REPO_ROOT, link, target_is_directory=True)
    assert is_pack_file(link / "comfy_adapter.py")
    assert not is_pack_file(link / ".venv" / "lib" / "x.py")


def test_tracebacks_and_import_lines():
    venv_frame = f'  File "{REPO_ROOT}/.venv/lib/python3.11/site-packages/sqlalchemy/pool/base.py", line 3, in close\n'
    ours_frame = f'  File "{REPO_ROOT}/trainer.py", line 10, in run\n'
    assert not frames_in_pack(venv_frame)
    assert frames_in_pack(venv_frame + ours_frame)
    comfy_line = f"Cannot import {REPO_ROOT}/.comfyui/comfy_extras/nodes_audio.py module for custom nodes: No module"
    assert not names_pack_path(comfy_line)
    assert names_pack_path(f"   0.1 seconds (IMPORT FAILED): {REPO_ROOT}")
    assert not names_pack_path("   0.1 seconds (IMPORT FAILED): /elsewhere/custom_nodes/TokenSmith-fork")
