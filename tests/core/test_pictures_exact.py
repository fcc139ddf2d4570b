"""Exact behaviour of tokensmith.pictures: every refusal of the folder name word for word (each
kind of absolute path, NUL, not a string), the captions' edge cases (invalid UTF-8, a caption link
leading out, one that cannot be read), hidden and linked files, each high-bit-depth mode scaled
by its range with the edges at 255 and 256, transparency for L and RGB, float32 outputs, the
warnings' order and lists cut after 8, and the size limits at their edges."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.core.picture_files import input_root, save
from tests.core.refusals import refused
from tokensmith import pictures
from tokensmith.pictures import PicturesError


@pytest.fixture
def root(tmp_path):
    return input_root(tmp_path)


NO_FOLDER = ("no folder given: pick a subfolder of ComfyUI's input folder (put the pictures in input/NAME/ and "
             "refresh the page)")




# ---------------------------------------------------------------- the folder name


@pytest.mark.parametrize("folder", ["", "  ", ".", "./", None, 3])
def test_no_folder_is_refused_word_for_word(root, folder):
    with refused(NO_FOLDER, PicturesError):
        pictures.resolve_folder(root, folder)


def test_a_nul_character_is_refused_word_for_word(root):
    with refused("the folder name contains a NUL character", PicturesError):
        pictures.resolve_folder(root, "a\0b")


@pytest.mark.parametrize("folder", ["/etc", "\\share\\x", "C:/Windows", "c:pics"])
def test_each_kind_of_absolute_path_is_refused_word_for_word(root, folder):
    with refused(f"folder {folder!r}: an absolute path is not allowed; pick a subfolder of ComfyUI's input folder",
                 PicturesError):
        pictures.resolve_folder(root, folder)


def test_a_folder_leading_out_is_refused_word_for_word(root, tmp_path):
    (tmp_path / "out").mkdir()
    (root / "escape").symlink_to(tmp_path / "out", target_is_directory=True)
    base = str(root.resolve())
    with refused(f"folder 'escape' leads outside ComfyUI's input folder {base!r} (a symbolic link?); put the "
                 "pictures themselves in a subfolder of the input folder", PicturesError):
        pictures.resolve_folder(root, "escape")


def test_a_missing_folder_and_a_file_are_refused_word_for_word(root):
    base = str(root.resolve())
    save(root / "file.png")
    for folder, what in (("missing", "was not found"), ("file.png", "is not a folder")):
        with refused(f"folder {folder!r} {what} in ComfyUI's input folder {base!r}; put the pictures in input/NAME/ "
                     "and refresh the page (or press R)", PicturesError):
            pictures.resolve_folder(root, folder)


@pytest.mark.parametrize("recursive, where", [(True, "it and its subfolders"),
                                              (False, "it (turn on recursive for its subfolders)")])
def test_no_pictures_is_refused_word_for_word(root, recursive, where):
    (root / "empty").mkdir()
    with refused(f"no pictures in folder 'empty': looked in {where} for .png .jpg .jpeg .webp .bmp files (any case)",
                 PicturesError):
        pictures.load_pictures(root, "empty", recursive=recursive)


# ---------------------------------------------------------------- files and captions


def test_find_pictures_is_not_recursive_unless_asked_and_skips_hidden_folders(root):
    save(root / "set" / "a.png")
    save(root / "set" / "sub" / "b.png")
    save(root / "set" / ".hidden" / "c.png")
    assert [p.name for p in pictures.find_pictures(root, root / "set")[0]] == ["a.png"]
    assert [p.name for p in pictures.find_pictures(root, root / "set", True)[0]] == ["a.png", "sub/b.png"]


def test_load_pictures_looks_in_subfolders_when_recursive(root):
    save(root / "set" / "sub" / "b.png")
    assert pictures.load_pictures(root, "set", recursive=True).names == ["sub/b.png"]


def test_every_picture_but_a_link_leading_out_is_kept(root, tmp_path):
    save(tmp_path / "secret.png")
    names = [f"p{i:02}.png" for i in range(12)]
    for name in names:
        save(root / "set" / name, size=(4, 4))
    os.symlink(tmp_path / "secret.png", root / "set" / "link.png")
    found, warnings = pictures.find_pictures(root, root / "set")
    assert [p.name for p in found] == names
    assert warnings == ["link.png: a link that leads outside the input folder; skipped"]


def test_a_caption_with_invalid_utf8_is_read_with_replacement_characters(root):
    save(root / "set" / "a.png")
    (root / "set" / "a.txt").write_bytes(b"caf\xe9 ok")
    found, warnings = pictures.find_pictures(root, root / "set")
    assert found[0].caption == "caf\ufffd ok" and warnings == []


def test_a_caption_link_leading_out_is_not_used_and_said(root, tmp_path):
    save(root / "set" / "a.png")
    (tmp_path / "a.txt").write_text("secret", encoding="utf-8")
    os.symlink(tmp_path / "a.txt", root / "set" / "a.txt")
    found, warnings = pictures.find_pictures(root, root / "set")
    assert found[0].caption == ""
    assert warnings == ["a.png: its caption file leads outside the input folder; not used"]


def test_a_caption_that_cannot_be_read_is_said_with_the_reason(root):
    save(root / "set" / "a.png")
    os.symlink(root / "set" / "gone.txt", root / "set" / "a.txt")  # a broken link inside the folder
    found, warnings = pictures.find_pictures(root, root / "set")
    assert found[0].caption == ""
    assert warnings == ["a.png: its caption file cannot be read (No such file or directory); no caption"]


# ---------------------------------------------------------------- pixels


def _grey(mode, value, size=(2, 1)):
    img = Image.new(mode, size)
    img.putpixel((0, 0), value)
    return img


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_sixteen_bit_modes_are_scaled_by_65535(mode):
    rgb, alpha = pictures._pixels(_grey(mode, 1000))
    assert alpha is None and rgb.shape == (1, 2, 3) and rgb.dtype == np.float32
    assert rgb[0, 0].tolist() == [np.float32(1000) / np.float32(65535)] * 3 and rgb[0, 1].tolist() == [0.0] * 3


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_sixteen_bit_modes_are_scaled_by_65535_even_when_dark(mode):
    rgb, _ = pictures._pixels(_grey(mode, 200))
    assert rgb.dtype == np.float32 and rgb[0, 0].tolist() == [np.float32(200) / np.float32(65535)] * 3


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_modes_up_to_255_are_scaled_by_255(mode):
    rgb, alpha = pictures._pixels(_grey(mode, 255))
    assert alpha is None and rgb.shape == (1, 2, 3) and rgb.dtype == np.float32
    assert rgb[0, 0].tolist() == [1.0, 1.0, 1.0]
    rgb, _ = pictures._pixels(_grey(mode, 51))
    assert rgb[0, 0].tolist() == [np.float32(51) / np.float32(255)] * 3


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_modes_past_255_are_scaled_by_65535(mode):
    rgb, _ = pictures._pixels(_grey(mode, 256))
    assert rgb[0, 0].tolist() == [np.float32(256) / np.float32(65535)] * 3


def test_32_bit_values_outside_the_range_are_clipped():
    rgb, _ = pictures._pixels(_grey("I", 70000))
    assert rgb[0, 0].tolist() == [1.0, 1.0, 1.0]
    rgb, _ = pictures._pixels(_grey("F", -5.0))
    assert rgb[0, 0].tolist() == [0.0, 0.0, 0.0]


def test_rgb_without_transparency_is_float32_and_has_no_alpha():
    rgb, alpha = pictures._pixels(Image.new("RGB", (1, 1), (255, 0, 51)))
    assert alpha is None and rgb.dtype == np.float32 and rgb[0, 0].tolist() == [1.0, 0.0, np.float32(51) / 255]


@pytest.mark.parametrize("mode, transparent, other", [("L", 0, 255), ("RGB", (0, 0, 0), (255, 255, 255))])
def test_a_transparency_colour_makes_an_alpha_mask(tmp_path, mode, transparent, other):
    img = Image.new(mode, (2, 1), other)
    img.putpixel((0, 0), transparent)
    path = tmp_path / "t.png"
    img.save(path, transparency=transparent)
    rgb, alpha, note = pictures.read_picture(path)
    assert alpha.tolist() == [[0.0, 1.0]] and rgb.dtype == np.float32 and note == ""
    assert rgb[0, 0].tolist() == [1.0, 1.0, 1.0]  # the transparent pixel on white


def test_a_grey_picture_with_alpha_is_composited_on_white():
    rgb, alpha = pictures._pixels(Image.new("LA", (1, 1), (0, 51)))
    a = np.float32(51) / np.float32(255)
    assert alpha.tolist() == [[a]] and rgb.dtype == alpha.dtype == np.float32
    assert rgb[0, 0].tolist() == [np.float32(0 * a + 1.0 * (1 - a))] * 3


def test_an_unreadable_exif_block_is_a_note_and_the_picture_is_used_as_stored(tmp_path, monkeypatch):
    def broken(img):
        raise SyntaxError("bad IFD")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    path = save(tmp_path / "a.png", size=(3, 2))
    rgb, alpha, note = pictures.read_picture(path)
    assert rgb.shape == (2, 3, 3) and note == "its EXIF orientation cannot be read (bad IFD); used as stored"


def test_the_exif_note_is_a_warning_naming_the_picture_and_masks_are_float32(root, monkeypatch):
    def broken(img):
        raise SyntaxError("bad IFD")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    save(root / "set" / "a.png", size=(300, 300))
    loaded = pictures.load_pictures(root, "set")
    assert loaded.warnings == ["a.png: its EXIF orientation cannot be read (bad IFD); used as stored"]
    assert str(loaded.masks[0].dtype) == str(loaded.images[0].dtype) == "torch.float32"


def test_a_decoder_error_without_a_message_is_named_by_its_type(root, monkeypatch):
    save(root / "set" / "a.png", size=(300, 300))
    save(root / "set" / "b.png", size=(300, 300))
    real = pictures.read_picture

    def fails_for_b(path):
        if path.name == "b.png":
            raise ValueError()
        return real(path)

    monkeypatch.setattr(pictures, "read_picture", fails_for_b)
    assert pictures.load_pictures(root, "set").warnings == ["1 file(s) cannot be read and were skipped: b.png (ValueError)"]


def test_a_decoder_error_is_named_with_its_message(root):
    save(root / "set" / "a.png", size=(300, 300))
    (root / "set" / "b.png").write_bytes(b"not a picture")
    path = root / "set" / "b.png"
    with pytest.raises(Exception) as exc:  # what PIL says about this file, whatever its version
        Image.open(path)
    said = str(exc.value)
    assert pictures.load_pictures(root, "set").warnings == [f"1 file(s) cannot be read and were skipped: b.png ({said})"]


def test_the_unreadable_files_come_first_among_the_warnings(root, tmp_path):
    save(tmp_path / "secret.png")
    save(root / "set" / "a.png", size=(300, 300))
    (root / "set" / "b.png").write_bytes(b"")
    os.symlink(tmp_path / "secret.png", root / "set" / "c.png")
    warnings = pictures.load_pictures(root, "set").warnings
    assert warnings[0].startswith("1 file(s) cannot be read and were skipped: b.png (")
    assert warnings[1:] == ["c.png: a link that leads outside the input folder; skipped"]


# ---------------------------------------------------------------- size warnings


def test_a_list_of_eight_is_shown_whole_and_one_more_is_counted():
    eight = [(f"p{i}", 100, 100) for i in range(8)]
    listed = ", ".join(f"p{i} (100x100)" for i in range(8))
    assert pictures.size_warnings(eight) == [
        f"8 picture(s) with a side under 256 px, too small to teach much: {listed}; use larger pictures or leave "
        "these out"]
    assert pictures.size_warnings([*eight, ("p8", 100, 100)]) == [
        f"9 picture(s) with a side under 256 px, too small to teach much: {listed} and 1 more; use larger pictures "
        "or leave these out"]


def test_sixteen_megapixels_exactly_is_not_large_and_the_warning_word_for_word():
    assert pictures.size_warnings([("a", 4000, 4000)]) == []
    assert pictures.size_warnings([("a", 4000, 4001)]) == [
        "1 picture(s) larger than 4096 px on a side or 16 MP: a (4000x4001); they are scaled down to the training "
        "resolution by Train Embedding: downscale them first to save memory and load time"]
