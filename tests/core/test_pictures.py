"""tokensmith.pictures without ComfyUI: which files are pictures, their order and captions, the
folder-name checks, the size warnings, EXIF orientation, colour modes and unreadable files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tests.core.picture_files import input_root, save
from tokensmith import pictures
from tokensmith.errors import TokenSmithError


@pytest.fixture
def root(tmp_path):
    return input_root(tmp_path)


def names(root, folder="set", recursive=False):
    found, _ = pictures.find_pictures(root, root / folder, recursive)
    return [p.name for p in found]


def test_picture_files_any_case_sorted_by_name_others_left_out(root):
    for name in ["b.JPG", "a.png", "C.jpeg", "d.webp", "e.bmp", "f.gif", "g.txt", ".hidden.png", "h.png.bak"]:
        (root / "set").mkdir(exist_ok=True)
        (root / "set" / name).write_bytes(b"x")
    save(root / "set" / "sub" / "z.png")
    assert names(root) == ["a.png", "b.JPG", "C.jpeg", "d.webp", "e.bmp"]
    assert names(root, recursive=True) == ["a.png", "b.JPG", "C.jpeg", "d.webp", "e.bmp", "sub/z.png"]


def test_captions_pair_by_name_stripped_or_empty(root):
    save(root / "set" / "dog-01.jpg")
    save(root / "set" / "dog-02.PNG")
    save(root / "set" / "dog-03.jpg")
    (root / "set" / "dog-01.txt").write_text("  on a sofa, indoors\n\n", encoding="utf-8")
    (root / "set" / "dog-02.TXT").write_bytes("\ufeffon grass".encode())  # a BOM, another case
    (root / "set" / "dog-03.jpg.txt").write_text("not this one", encoding="utf-8")
    found, warnings = pictures.find_pictures(root, root / "set")
    assert [(p.name, p.caption) for p in found] == [("dog-01.jpg", "on a sofa, indoors"),
                                                    ("dog-02.PNG", "on grass"), ("dog-03.jpg", "")]
    assert warnings == []


@pytest.mark.parametrize("folder, says", [
    ("", "no folder given"), (".", "no folder given"), ("../outside", "'..' is not allowed"),
    ("set/../../outside", "'..' is not allowed"), ("set\\..\\..", "'..' is not allowed"),
    ("/etc", "absolute path"), ("C:/Windows", "absolute path"), ("missing", "was not found"),
    ("file.png", "is not a folder"),
])
def test_bad_folder_names_are_refused_clearly(root, folder, says):
    (root / "set").mkdir()
    save(root / "file.png")
    with pytest.raises(TokenSmithError, match=says):
        pictures.resolve_folder(root, folder)


def test_a_symlinked_folder_leading_out_is_refused_and_one_inside_is_not(root, tmp_path):
    outside = tmp_path / "outside"
    save(outside / "secret.png")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "set").mkdir()
    (root / "alias").symlink_to(root / "set", target_is_directory=True)
    with pytest.raises(pictures.PicturesError, match="leads outside ComfyUI's input folder"):
        pictures.resolve_folder(root, "escape")
    assert pictures.resolve_folder(root, "alias") == (root / "set").resolve()
    assert pictures.resolve_folder(root, "set/") == (root / "set").resolve()


def test_a_picture_linked_from_outside_is_skipped_with_a_warning(root, tmp_path):
    save(tmp_path / "secret.png")
    save(root / "set" / "a.png")
    os.symlink(tmp_path / "secret.png", root / "set" / "b.png")
    found, warnings = pictures.find_pictures(root, root / "set")
    assert [p.name for p in found] == ["a.png"]
    assert warnings == ["b.png: a link that leads outside the input folder; skipped"]


def test_subfolders_listed_like_the_input_list(root, tmp_path):
    for sub in ["b", "a/inner", ".cache"]:
        (root / sub).mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "link").symlink_to(tmp_path / "out", target_is_directory=True)
    assert pictures.subfolders(root) == ["a", "a/inner", "b"]
    assert pictures.subfolders(root / "missing") == []


def test_size_rules():
    assert pictures.size_warnings([("ok.png", 512, 768), ("phone.jpg", 4032, 3024), ("edge.png", 256, 4096)]) == []
    small, = pictures.size_warnings([("tiny.png", 255, 1000), ("ok.png", 512, 512)])
    assert small.startswith("1 picture(s) with a side under 256 px") and "tiny.png (255x1000)" in small
    assert "ok.png" not in small
    large, = pictures.size_warnings([("wide.png", 4097, 100 * 3 + 256), ("mp.jpg", 4000, 4001)])
    assert "wide.png (4097x556)" in large and "mp.jpg (4000x4001)" in large
    assert "scaled down to the training resolution by Train Embedding" in large and "downscale them first" in large
    both = pictures.size_warnings([("a.png", 100, 100), ("b.png", 5000, 5000)])
    assert len(both) == 2
    many, = pictures.size_warnings([(f"{i}.png", 10, 10) for i in range(12)])
    assert many.startswith("12 picture(s)") and "and 4 more" in many


def pattern(height=40, width=64):
    """An asymmetric picture: every pixel's colour says where it is."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x < 8) * 255], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                               (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
                                               (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    path = tmp_path / "p.png"  # lossless, so pixels compare exactly
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pattern()).save(path, exif=exif)
    rgb, alpha, note = pictures.read_picture(path)
    assert note == "" and alpha is None
    np.testing.assert_array_equal(np.rint(rgb * 255).astype(np.uint8), turn(pattern()))


def test_modes_become_rgb_and_alpha_is_composited_on_white(tmp_path):
    grey = pictures.read_picture(save(tmp_path / "g.png", mode="L", colour=128))[0]
    assert grey.shape == (260, 300, 3) and np.allclose(grey, 128 / 255)
    cmyk = pictures.read_picture(save(tmp_path / "c.jpg", mode="CMYK", colour=(0, 0, 0, 0)))[0]
    assert cmyk.shape == (260, 300, 3) and cmyk.min() > 0.95
    deep = pictures.read_picture(save(tmp_path / "d.png", mode="I;16", colour=65535))[0]
    assert np.allclose(deep, 1.0)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    rgb, alpha, _ = pictures.read_picture(tmp_path / "t.png")
    np.testing.assert_array_equal(alpha, np.repeat([[1.0], [1.0], [0.0], [0.0]], 4, axis=1))
    assert np.allclose(rgb[:2], [1, 0, 0]) and np.allclose(rgb[2:], [1, 1, 1])
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.save(tmp_path / "p.png", transparency=0)
    rgb, alpha, _ = pictures.read_picture(tmp_path / "p.png")
    assert np.allclose(alpha, 0.0) and np.allclose(rgb, 1.0)


def test_load_pictures_skips_unreadable_files_and_says_so(root):
    save(root / "set" / "a.png", size=(300, 300))
    save(root / "set" / "c.png", size=(100, 300), mode="RGBA", colour=(0, 0, 0, 0))
    (root / "set" / "b.jpg").write_bytes(b"not a jpeg")
    (root / "set" / "a.txt").write_text("a caption", encoding="utf-8")
    loaded = pictures.load_pictures(root, "set")
    assert loaded.names == ["a.png", "c.png"] and loaded.captions == ["a caption", ""]
    assert [tuple(t.shape) for t in loaded.images] == [(1, 300, 300, 3), (1, 300, 100, 3)]
    assert [tuple(t.shape) for t in loaded.masks] == [(1, 300, 300), (1, 300, 100)]
    assert bool((loaded.masks[0] == 1).all()) and bool((loaded.masks[1] == 0).all())
    assert loaded.warnings[0].startswith("1 file(s) cannot be read and were skipped: b.jpg (")
    assert any("c.png (100x300)" in w for w in loaded.warnings[1:])
    line = pictures.summary(loaded, "set")
    assert line == ("2 picture(s) from 'set', 1 with a caption, 1 with transparency (composited on white; "
                    "masks holds their alpha)")


def test_an_empty_or_unreadable_folder_is_an_error_naming_it(root):
    (root / "set").mkdir()
    (root / "set" / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(pictures.PicturesError) as err:
        pictures.load_pictures(root, "set")
    assert "no pictures in folder 'set'" in str(err.value)
    assert all(ext in str(err.value) for ext in pictures.EXTENSIONS) and "turn on recursive" in str(err.value)
    (root / "set" / "x.png").write_bytes(b"broken")
    with pytest.raises(pictures.PicturesError, match=r"none of the 1 picture file\(s\) in folder 'set' can be read"):
        pictures.load_pictures(root, "set")
