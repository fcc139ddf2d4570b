"""Picture files for the picture-folder tests: `save` writes one, `input_root` makes ComfyUI's input folder."""

from __future__ import annotations

from PIL import Image


def save(path, size=(300, 260), colour=(200, 30, 30), mode="RGB", **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **kwargs)
    return path


def input_root(tmp_path):
    (tmp_path / "input").mkdir()
    return tmp_path / "input"
