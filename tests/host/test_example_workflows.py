"""The example workflows still match the nodes: every node type exists, and each saved UI-format file
converts back to the API-format definition it was built from. A node that gained or lost a widget
input shifts the saved widget values; then re-create the files with `python -m devkit.workflows build`."""

from __future__ import annotations

import pytest

from devkit.workflows import VIRTUAL_TYPES, _widget_inputs, example_path, examples, load_example, ui_to_api


def node_info(cls) -> dict:
    """The /object_info entry of a node class (V3 and classic nodes)."""
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return cls.GET_NODE_INFO_V1()
    types = cls.INPUT_TYPES()
    return {"input": types, "input_order": {k: list(v) for k, v in types.items()}}


@pytest.fixture(scope="module")
def object_info(comfy_base):
    import os

    import nodes

    from devkit.comfy_host import run_coroutine

    # core's dataset, string, image, mask and SD3 latent nodes live in comfy_extras, which the in-process host does not load
    extras = os.path.join(os.path.dirname(os.path.realpath(nodes.__file__)), "comfy_extras")
    for module in ("nodes_dataset.py", "nodes_string.py", "nodes_images.py", "nodes_mask.py", "nodes_sd3.py"):
        assert run_coroutine(nodes.load_custom_node(os.path.join(extras, module), module_parent="comfy_extras"))
    return {name: node_info(cls) for name, cls in nodes.NODE_CLASS_MAPPINGS.items()}


@pytest.mark.parametrize("example", examples(), ids=lambda ex: ex.name)
def test_example_matches_current_nodes(example, object_info):
    assert example_path(example.name).is_file() and example_path(example.name, "jpg").is_file()
    saved = load_example(example.name)
    for node in saved["nodes"]:
        if node["type"] in VIRTUAL_TYPES:
            continue
        assert node["type"] in object_info, f"{example.name}: node type {node['type']} is not installed"
        widgets = _widget_inputs(object_info[node["type"]])
        expected = sum(2 if control else 1 for _name, control in widgets)
        assert len(node.get("widgets_values") or []) == expected, (
            f"{example.name}: {node['type']} has {len(node.get('widgets_values') or [])} widget values, the node "
            f"now has {expected}: run `python -m devkit.workflows build`")
    api = ui_to_api(saved, object_info)
    for node_id, want in example.api.items():
        got = api[node_id]
        assert got["class_type"] == want["class_type"]
        for name, value in want["inputs"].items():
            assert got["inputs"].get(name) == value, (example.name, node_id, name, got["inputs"].get(name), value)
