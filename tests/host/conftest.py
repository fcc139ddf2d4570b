"""In-process ComfyUI: the real host imported on CPU, the pack loaded by ComfyUI's own loader,
and small real MODEL/CLIP/VAE objects of each family (built once per session)."""

from __future__ import annotations

import logging

import pytest

from devkit import comfy_host


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    comfy_host.import_comfy(base)
    comfy_host.load_pack()
    logging.getLogger().setLevel(logging.WARNING)
    return base


@pytest.fixture(scope="session")
def pack(comfy_base):
    """Import a pack module the way ComfyUI loaded it: pack('comfy_adapter'), pack('nodes.files')."""
    return comfy_host.pack_import


@pytest.fixture(scope="session")
def node_classes(comfy_base):
    """The pack's V3 node classes by node id."""
    mod = comfy_host.pack_import("nodes")
    return {cls.define_schema().node_id: cls for cls in mod.NODE_LIST}


@pytest.fixture
def embeddings_dir(comfy_base):
    import folder_paths

    path = folder_paths.get_folder_paths("embeddings")[0]
    return path


def _build(family):
    from devkit.model_factory import build_tiny

    return build_tiny(family, seed=0)


@pytest.fixture(scope="session")
def sd1(comfy_base):
    return _build("sd1")


@pytest.fixture(scope="session")
def sd2(comfy_base):
    return _build("sd2")


@pytest.fixture(scope="session")
def sdxl(comfy_base):
    return _build("sdxl")


@pytest.fixture(scope="session")
def models(sd1, sd2, sdxl):
    return {"sd1": sd1, "sd2": sd2, "sdxl": sdxl}
