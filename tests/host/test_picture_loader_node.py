"""Load Training Pictures as a node: its inputs as its help page gives them (a folder to pick, and
`recursive`, optional and off by default), and what it shows and logs word for word: the summary line,
then each warning on a line of its own."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def loader(node_classes):
    return node_classes["TokenSmithLoadTrainingPictures"]


def test_the_inputs_are_a_folder_and_an_optional_recursive_switch_off_by_default(loader):
    folder, recursive = loader.define_schema().inputs
    assert (folder.id, folder.io_type, folder.optional) == ("folder", "COMBO", False)
    assert (recursive.id, recursive.io_type, recursive.optional, recursive.default) == ("recursive", "BOOLEAN", True,
                                                                                        False)


def test_the_shown_text_and_the_log_are_the_summary_then_each_warning(loader, input_folder, caplog):
    name, path = input_folder
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(os.path.join(path, "a.png"))
    with open(os.path.join(path, "a.txt"), "w", encoding="utf-8") as f:
        f.write("a grey square")
    with open(os.path.join(path, "b.png"), "wb") as f:
        f.write(b"\x89PNG not really")
    with caplog.at_level(logging.INFO, logger="tokensmith"):
        out = loader.execute(folder=name)
    summary = f"1 picture(s) from {name!r}, 1 with a caption"
    warnings = [f"1 file(s) cannot be read and were skipped: b.png (cannot identify image file "
                f"{os.path.join(path, 'b.png')!r})",
                "1 picture(s) with a side under 256 px, too small to teach much: a.png (64x64); use larger pictures "
                "or leave these out"]
    assert out.ui.as_dict()["text"] == ("\n".join([summary, *warnings]),)
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tokensmith"]
    assert records == [(logging.INFO, f"TokenSmith Load Training Pictures: {summary}")] + [
        (logging.WARNING, f"TokenSmith Load Training Pictures {name!r}: {w}") for w in warnings]


def test_recursive_reaches_the_pictures_of_subfolders(loader, input_folder):
    name, path = input_folder
    os.makedirs(os.path.join(path, "sub"))
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(os.path.join(path, "sub", "a.png"))
    assert loader.execute(folder=name, recursive=True).result[3] == 1
    with pytest.raises(Exception, match="no pictures in folder"):
        loader.execute(folder=name)
