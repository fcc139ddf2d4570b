"""The ``names`` target: embedding names -> validate_name / safe_join (a path that is let through
stays inside the root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from devkit.fuzzing.shared import random_unicode, reason_key


def make_names_case(rng) -> str:
    r = rng.random()
    if r < 0.3:
        return random_unicode(rng, 30)
    parts = []
    for _ in range(rng.randint(1, 4)):
        parts.append(rng.choice(("ok", "my-emb_1.2", "..", ".", "", ".hidden", "trail.", "CON", "con.txt", "LPT9", "a b",
                                 "ｃａｔ", "cаt", "x" * 129, "x" * 128, "a\0b", "C:", "\\\\server", "~", "$HOME",
                                 "%APPDATA%", "name.pt", "name.safetensors", "-rf", "a\\b", random_unicode(rng, 5))))
    sep = rng.choice(("/", "/", "\\", "//", "/../", "/./"))
    text = sep.join(parts)
    if rng.random() < 0.2:
        text = rng.choice(("/", "../", "../../", "C:\\", "\\", "/tmp/", "~/")) + text
    if rng.random() < 0.05:
        text = text * 20
    return text


def _encodable(text: str) -> bool:
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return True


def run_names_case(name: str, root: Path) -> tuple[str, str]:
    from tokensmith.errors import TokenSmithError
    from tokensmith.names import safe_join, validate_name

    try:
        clean = validate_name(name)
        assert re.fullmatch(r"[A-Za-z0-9._/-]+", clean), clean
        assert ".." not in clean.split("/") and not clean.startswith("/") and len(clean) <= 255, clean
        target = safe_join(root, clean + ".safetensors")
        assert os.path.commonpath([str(root.resolve()), str(target)]) == str(root.resolve()), target
        first = "valid"
    except TokenSmithError as exc:
        first = "name refused: " + reason_key(exc)
    if not _encodable(name):
        return "refused", first  # lone surrogates in safe_join: a separate, known case (tests/fuzz/test_bounds.py)
    try:
        target = safe_join(root, name)
        base = str(root.resolve())
        assert os.path.commonpath([base, str(target)]) == base and str(target) != base, target
        return "joined", first
    except TokenSmithError as exc:
        return "join-refused", f"{first} / {reason_key(exc)}"
