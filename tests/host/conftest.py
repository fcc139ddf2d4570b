"""In-process ComfyUI: the real host imported on CPU with its folders in a temporary base, and the
pack loaded by ComfyUI's own loader. The small real MODEL/CLIP/VAE objects of each family and the
`pack` / `node_classes` fixtures are in tests/conftest.py (shared with the reliability suite)."""

from __future__ import annotations

import pytest

from devkit import comfy_host


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    comfy_host.start_in_process(base)
    return base


@pytest.fixture
def embeddings_dir(comfy_base):
    import folder_paths

    path = folder_paths.get_folder_paths("embeddings")[0]
    return path
