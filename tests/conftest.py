"""Fixtures shared by the suites that use ComfyUI. Each suite's conftest defines `comfy_base` (the
in-process host with ComfyUI's folders pointed at a base directory of its own); the models and the
pack's modules below do not depend on which base is current, so they are built once per session."""

from __future__ import annotations

import pytest

from devkit import comfy_host


@pytest.fixture(scope="session")
def pack(comfy_base):
    """Import a pack module the way ComfyUI loaded it: pack('comfy_adapter'), pack('nodes.files')."""
    return comfy_host.pack_import


@pytest.fixture(scope="session")
def node_classes(comfy_base):
    """The pack's V3 node classes by node id."""
    mod = comfy_host.pack_import("nodes")
    return {cls.define_schema().node_id: cls for cls in mod.NODE_LIST}


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


@pytest.fixture(scope="session")
def checkpoint_file():
    """The real-architecture SD1.5 checkpoint (random weights), made once and cached under .cache/."""
    from devkit.make_checkpoint import ensure_checkpoint

    return ensure_checkpoint()
