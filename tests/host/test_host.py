"""The pack against the real ComfyUI host: loader, schemas, and every internal the adapter uses."""

import subprocess
import sys

from devkit.comfy_host import REPO_ROOT


def test_adapter_finds_every_comfy_internal_it_uses(pack):
    adapter = pack("comfy_adapter")
    missing = adapter.check_host()
    assert not missing, (
        f"ComfyUI {adapter.host_version()} lacks internals TokenSmith's adapter relies on: {missing}. "
        "Update comfy_adapter.py for this ComfyUI version."
    )


def test_pack_loads_through_comfyui_loader_and_registers_every_node(comfy_base, node_classes):
    import nodes

    assert node_classes, "the pack registered no nodes"
    for node_id, cls in node_classes.items():
        assert node_id.startswith("TokenSmith"), node_id
        assert nodes.NODE_CLASS_MAPPINGS[node_id] is not None
        schema = cls.define_schema()
        schema.validate()
        assert schema.category.startswith("TokenSmith"), (node_id, schema.category)
        info = cls.GET_NODE_INFO_V1()
        assert info["name"] == node_id
        assert info["description"], f"{node_id} has no description"


def test_web_directory_is_served(comfy_base):
    import nodes

    web_dirs = [d for d in nodes.EXTENSION_WEB_DIRS.values() if str(REPO_ROOT / "js") in str(d)]
    assert web_dirs, nodes.EXTENSION_WEB_DIRS


def test_core_imports_without_comfyui():
    code = (
        "import importlib, pkgutil, sys\n"
        "import tokensmith\n"
        "for m in pkgutil.walk_packages(tokensmith.__path__, 'tokensmith.'):\n"
        "    if m.name != 'tokensmith.__main__': importlib.import_module(m.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('comfy', 'folder_paths', 'comfy_api', 'nodes', 'server')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
