"""Each refusal of validate_name and safe_join says exactly why (the message a node, the CLI or the
info route shows as is), each check fires at its boundary and not before, and the names only a later
check would catch (a leading backslash, a drive letter either case, a '.' segment) get their own
message. test_writer.py holds which names pass; this holds the words and the edges."""

from __future__ import annotations

import pytest

from tokensmith.errors import EmbeddingNameError
from tokensmith.names import safe_join, validate_name

ALLOWED = "letters A-Z a-z, digits, '.', '_', '-' and '/' between subfolders"


def _refusal(fn, *args) -> str:
    with pytest.raises(EmbeddingNameError) as info:
        fn(*args)
    return str(info.value)


@pytest.mark.parametrize("name, message", [
    (7, "an embedding name must be text, got int"),
    (None, "an embedding name must be text, got NoneType"),
    ("a\0b", "the embedding name contains a NUL character"),
    ("", "the embedding name is empty"),
    (".SafeTensors", "the embedding name is empty"),
    ("\\share\\x", "'\\\\share\\\\x': a name must be relative to the embeddings folder (no leading '/')"),
    ("c:x", "'c:x': a name must be relative to the embeddings folder (no leading '/')"),
    ("Z:x", "'Z:x': a name must be relative to the embeddings folder (no leading '/')"),
    ("a/./b", "'a/./b': '.' and '..' are not allowed in a name"),
    ("x/..", "'x/..': '.' and '..' are not allowed in a name"),
    ("a b!", "'a b!' contains ' ', '!'; use only " + ALLOWED + " (spaces cannot work in a prompt keyword)"),
    ("Up Low", "'Up Low' contains ' '; use only " + ALLOWED + " (spaces cannot work in a prompt keyword)"),
    ("sub/con.ab", "'sub/con.ab': 'con' is a reserved device name on Windows"),
    ("LPT9", "'LPT9': 'LPT9' is a reserved device name on Windows"),
    ("cat.PTH", "'cat.PTH': leave out the file extension (files are saved as .safetensors)"),
])
def test_each_refusal_names_its_reason(name, message):
    assert _refusal(validate_name, name) == message


def test_a_long_part_is_shown_by_its_first_twenty_characters():
    segment = "abcdefghijklmnopqrstuvwxyz" * 5  # 130 characters
    assert _refusal(validate_name, segment) == (
        f"{segment!r}: the part 'abcdefghijklmnopqrst'... is longer than 128 characters")


def test_the_length_limits_are_inclusive():
    at_total = "a" * 128 + "/" + "b" * 126
    assert len(at_total) == 255 and validate_name(at_total) == at_total
    over = at_total + "b"
    assert _refusal(validate_name, over) == "the embedding name is 256 characters long; the limit is 255"
    assert validate_name("c" * 128 + ".safetensors") == "c" * 128
    assert "longer than 128" in _refusal(validate_name, "c" * 129)


def test_windows_device_names_only_as_a_whole_part():
    assert validate_name("console/comx/com10/lpt0") == "console/comx/com10/lpt0"
    assert validate_name("my.con") == "my.con"


@pytest.mark.parametrize("name, message", [
    ("a\0b", "the path contains a NUL character"),
    ("\\x", "'\\\\x': an absolute path is not allowed here"),
    ("\\\\server\\share", "'\\\\\\\\server\\\\share': an absolute path is not allowed here"),
    ("C:x", "'C:x': an absolute path is not allowed here"),
    ("c:x", "'c:x': an absolute path is not allowed here"),
    ("/etc/passwd", "'/etc/passwd': an absolute path is not allowed here"),
    ("a\ud800", "'a\\ud800' holds characters that cannot be part of a file name"),
])
def test_safe_join_refusals_name_their_reason(tmp_path, name, message):
    assert _refusal(safe_join, tmp_path, name) == message


def test_safe_join_names_the_folder_it_keeps_to(tmp_path):
    base = str(tmp_path.resolve())
    assert _refusal(safe_join, tmp_path, "a/../../x") == f"'a/../../x' points outside the folder {base!r}"
    assert _refusal(safe_join, tmp_path, "a/..") == f"'a/..' points outside the folder {base!r}"
    assert safe_join(tmp_path, "ab:c") == tmp_path.resolve() / "ab:c"  # a colon later in the name is no drive
