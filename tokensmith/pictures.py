"""Training pictures from a folder: which files, their captions, upright RGB pixels and the warnings.

The rules of the Load Training Pictures node without ComfyUI: a subfolder of the input folder (no
'..', absolute paths or symlinks leading out), the picture files in it sorted by name, each
picture's same-name .txt caption, EXIF orientation applied (phone photos are stored sideways with
a tag that says how to turn them), every mode made RGB (transparency composited on white, the alpha
kept as a mask) and warnings for sizes that train badly. Nothing here writes a file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import TokenSmithError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_SIDE = 256
MAX_SIDE = 4096
MAX_MEGAPIXELS = 16
# transparent pixels become this colour; the masks output says which pixels were there
BACKGROUND = 1.0


class PicturesError(TokenSmithError):
    """The picture folder cannot be used (bad name, missing, empty, nothing readable)."""


@dataclass
class Picture:
    """One picture file of the folder: its name relative to the folder, its path and its caption."""
    name: str
    path: Path
    caption: str = ""


@dataclass
class Loaded:
    """What the node outputs: one [1, H, W, 3] image and [1, H, W] mask per readable picture,
    their captions and names, and the warnings to show."""
    images: list[torch.Tensor] = field(default_factory=list)
    masks: list[torch.Tensor] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _inside(base: Path, target: Path) -> bool:
    return os.path.commonpath([str(base), str(target)]) == str(base)


def resolve_folder(root, folder: str) -> Path:
    """The picture folder ``root/folder``, resolved; refuses an empty name, an absolute path, '..',
    a folder that resolves outside ``root`` (a symlink leading out), or one that is missing."""
    text = (folder or "").strip() if isinstance(folder, str) else ""
    if not text or text in (".", "./"):
        raise PicturesError("no folder given: pick a subfolder of ComfyUI's input folder (put the pictures in "
                            "input/NAME/ and refresh the page)")
    if "\0" in text:
        raise PicturesError("the folder name contains a NUL character")
    if os.path.isabs(text) or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text):
        raise PicturesError(f"folder {text!r}: an absolute path is not allowed; pick a subfolder of ComfyUI's "
                            "input folder")
    parts = re.split(r"[\\/]", text)
    if ".." in parts:
        raise PicturesError(f"folder {text!r}: '..' is not allowed; pick a subfolder of ComfyUI's input folder")
    base = Path(root).resolve()
    target = base.joinpath(*[p for p in parts if p not in ("", ".")]).resolve()
    if not _inside(base, target) or target == base:
        raise PicturesError(f"folder {text!r} leads outside ComfyUI's input folder {str(base)!r} (a symbolic "
                            "link?); put the pictures themselves in a subfolder of the input folder")
    if not target.is_dir():
        what = "is not a folder" if target.exists() else "was not found"
        raise PicturesError(f"folder {text!r} {what} in ComfyUI's input folder {str(base)!r}; put the pictures "
                            "in input/NAME/ and refresh the page (or press R)")
    return target


def subfolders(root) -> list[str]:
    """The input folder's subfolders, '/'-separated and sorted, for the node's list: hidden ones and
    symlinked ones are left out (as ComfyUI's own list does, which does not descend into links)."""
    base = Path(root)
    if not base.is_dir():
        return []
    found = []
    for dirpath, dirnames, _ in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(base).as_posix()
        if rel != ".":
            found.append(rel)
    return sorted(found)


def is_picture(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def _caption(base: Path, directory: Path, stem: str, texts: dict[str, str], warnings: list[str], name: str) -> str:
    found = texts.get(f"{stem}.txt".lower())
    if found is None:
        return ""
    path = directory / found
    if not _inside(base, path.resolve()):
        warnings.append(f"{name}: its caption file leads outside the input folder; not used")
        return ""
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace").strip()
    except OSError as exc:
        warnings.append(f"{name}: its caption file cannot be read ({exc.strerror or exc}); no caption")
        return ""


def find_pictures(base, folder: Path, recursive: bool = False) -> tuple[list[Picture], list[str]]:
    """The picture files of ``folder`` (and, when recursive, its subfolders), sorted by their name
    relative to it, each with its same-name .txt caption (stripped; '' when there is none), and
    warnings for files left out. Files whose real path is outside ``base`` are left out."""
    base = Path(base).resolve()
    folder = Path(folder)
    pictures, warnings = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        directory = Path(dirpath)
        texts = {f.lower(): f for f in filenames if f.lower().endswith(".txt")}
        for filename in filenames:
            if not is_picture(filename):
                continue
            path = directory / filename
            name = path.relative_to(folder).as_posix()
            if not _inside(base, path.resolve()):
                warnings.append(f"{name}: a link that leads outside the input folder; skipped")
                continue
            caption = _caption(base, directory, Path(filename).stem, texts, warnings, name)
            pictures.append(Picture(name, path, caption))
    pictures.sort(key=lambda p: (p.name.casefold(), p.name))
    return pictures, warnings


def no_pictures_error(folder: str, recursive: bool) -> PicturesError:
    where = "it and its subfolders" if recursive else "it (turn on recursive for its subfolders)"
    return PicturesError(f"no pictures in folder {folder!r}: looked in {where} for {' '.join(EXTENSIONS)} files "
                         "(any case)")


def _pixels(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """[H, W, 3] float32 RGB in 0..1 and the [H, W] alpha (None when the picture has none)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = np.asarray(img, dtype=np.float32)
        grey = grey / (65535.0 if img.mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0)
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2), None
    has_alpha = "A" in img.getbands() or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)
    if not has_alpha:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, None
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3]
    rgb = rgba[..., :3] * alpha[..., None] + BACKGROUND * (1.0 - alpha[..., None])
    return rgb.astype(np.float32), alpha


def read_picture(path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """One picture upright (its EXIF orientation applied) as RGB and alpha, and a note when its
    orientation tag could not be read (then it is used as stored). Raises what the decoder raises."""
    with Image.open(path) as img:
        img.load()
        note = ""
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception as exc:  # a damaged EXIF block: the pixels are still good
            upright, note = img, f"its EXIF orientation cannot be read ({exc}); used as stored"
        return (*_pixels(upright), note)


def _listing(items: list[str], most: int = 8) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def size_warnings(sizes: list[tuple[str, int, int]]) -> list[str]:
    """Warnings for pictures (name, width, height) too small to teach much, or so large that loading
    them costs memory and time for pixels Train Embedding scales away."""
    small = [f"{n} ({w}x{h})" for n, w, h in sizes if min(w, h) < MIN_SIDE]
    large = [f"{n} ({w}x{h})" for n, w, h in sizes
             if max(w, h) > MAX_SIDE or w * h > MAX_MEGAPIXELS * 1_000_000]
    warnings = []
    if small:
        warnings.append(f"{len(small)} picture(s) with a side under {MIN_SIDE} px, too small to teach much: "
                        f"{_listing(small)}; use larger pictures or leave these out")
    if large:
        warnings.append(f"{len(large)} picture(s) larger than {MAX_SIDE} px on a side or {MAX_MEGAPIXELS} MP: "
                        f"{_listing(large)}; they are scaled down to the training resolution by Train Embedding: "
                        "downscale them first to save memory and load time")
    return warnings


def _read_all(pictures: list[Picture], loaded: Loaded) -> tuple[list[str], list[tuple[str, int, int]]]:
    unreadable, sizes = [], []
    for picture in pictures:
        try:
            rgb, alpha, note = read_picture(picture.path)
        except Exception as exc:  # any decoder failure: name the file, skip it, load the rest
            unreadable.append(f"{picture.name} ({str(exc) or type(exc).__name__})")
            continue
        if note:
            loaded.warnings.append(f"{picture.name}: {note}")
        height, width = rgb.shape[:2]
        mask = np.ones((height, width), dtype=np.float32) if alpha is None else alpha
        loaded.images.append(torch.from_numpy(np.ascontiguousarray(rgb))[None])
        loaded.masks.append(torch.from_numpy(np.ascontiguousarray(mask))[None])
        loaded.captions.append(picture.caption)
        loaded.names.append(picture.name)
        sizes.append((picture.name, width, height))
    return unreadable, sizes


def load_pictures(root, folder: str, recursive: bool = False) -> Loaded:
    """The pictures of the input folder's subfolder ``folder``, upright, with captions, masks and
    warnings; unreadable files are named and skipped. Refuses a bad folder name and a folder with
    no (readable) pictures."""
    target = resolve_folder(root, folder)
    pictures, warnings = find_pictures(root, target, recursive)
    if not pictures:
        raise no_pictures_error(folder, recursive)
    loaded = Loaded(warnings=warnings)
    unreadable, sizes = _read_all(pictures, loaded)
    if not loaded.images:
        raise PicturesError(f"none of the {len(pictures)} picture file(s) in folder {folder!r} can be read: "
                            f"{_listing(unreadable)}")
    if unreadable:
        loaded.warnings.insert(0, f"{len(unreadable)} file(s) cannot be read and were skipped: {_listing(unreadable)}")
    loaded.warnings += size_warnings(sizes)
    return loaded


def summary(loaded: Loaded, folder: str) -> str:
    """One line for the node and the console: how many pictures, captions and transparent ones."""
    captioned = sum(1 for c in loaded.captions if c)
    line = f"{len(loaded.images)} picture(s) from {folder!r}, {captioned} with a caption"
    transparent = sum(1 for m in loaded.masks if bool((m < 1).any()))
    if transparent:
        line += f", {transparent} with transparency (composited on white; masks holds their alpha)"
    return line
