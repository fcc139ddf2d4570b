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


@pytest.fixture(scope="module")
def tiny(comfy_base):
    """tiny(family) -> devkit.model_factory.build_tiny(family, seed=0), built once per test module (the
    flow-matching families' models are dropped when the module ends)."""
    from devkit.model_factory import build_tiny

    built: dict = {}

    def get(family):
        if family not in built:
            built[family] = build_tiny(family, seed=0)
        return built[family]

    yield get
    built.clear()


@pytest.fixture
def input_folder(comfy_base):
    """A fresh subfolder of ComfyUI's input folder, removed afterwards: (its name, its path)."""
    import os
    import shutil
    import uuid

    import folder_paths

    name = f"ts-pictures-{uuid.uuid4().hex[:8]}"
    path = os.path.join(folder_paths.get_input_directory(), name)
    os.makedirs(path)
    try:
        yield name, path
    finally:
        shutil.rmtree(path, ignore_errors=True)
