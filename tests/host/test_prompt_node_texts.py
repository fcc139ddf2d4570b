"""Embedding Prompt word for word: its inputs as its help page gives them, the `ok:` line (each name
once, in order), what it shows when nothing is referenced, a file it cannot read, and the
fingerprint's parts (a file's size and its mtime each count; with
convert_keywords the list of names counts too)."""

from __future__ import annotations

import os
import uuid

import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture
def names(embeddings_dir):
    """Write embeddings under fresh names: put(stem, rows, width) -> stem; removed afterwards."""
    import folder_paths

    made = []

    def put(stem, rows=1, width=768, raw: bytes | None = None):
        path = os.path.join(embeddings_dir, f"{stem}.safetensors")
        if raw is None:
            save_file({"emb_params": torch.ones(rows, width)}, path)
        else:
            with open(path, "wb") as f:
                f.write(raw)
        made.append(path)
        folder_paths.filename_list_cache.clear()
        return stem

    yield put
    for path in made:
        os.remove(path)
    folder_paths.filename_list_cache.clear()


def run(node_classes, **kw):
    with torch.inference_mode():
        out = node_classes["TokenSmithPrompt"].execute(**kw)
    return out.result[1], out.ui.as_dict()["text"]


def fresh() -> str:
    return f"tspt{uuid.uuid4().hex[:8]}"


def test_the_inputs(node_classes):
    got = {i.id: (i.io_type, i.optional, getattr(i, "default", None), getattr(i, "multiline", None))
           for i in node_classes["TokenSmithPrompt"].define_schema().inputs}
    assert got == {"text": ("STRING", False, "", True), "convert_keywords": ("BOOLEAN", False, False, None),
                   "clip": ("CLIP", True, None, None)}


def test_ok_names_each_reference_once_in_order_and_nothing_referenced_is_said(node_classes, names, sd1):
    a, b = names(fresh()), names(fresh())
    warnings, shown = run(node_classes, text=f"embedding:{b} embedding:{a} embedding:{b}", clip=sd1.clip)
    assert warnings == f"ok: embedding:{b}, embedding:{a}" and shown == (warnings,)
    assert run(node_classes, text="a photo of a cat") == ("", ("no embeddings referenced",))


def test_a_file_it_cannot_read_is_one_line(node_classes, names, sd1):
    bad = names(fresh(), raw=b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    warnings, _ = run(node_classes, text=f"embedding:{bad}", clip=sd1.clip)
    assert warnings.startswith(f"unreadable: embedding:{bad}: ") and len(warnings.splitlines()) == 1


def fingerprint(node_classes, **kw):
    return node_classes["TokenSmithPrompt"].fingerprint_inputs(**kw)


def test_a_files_size_and_its_mtime_each_change_the_fingerprint(node_classes, names):
    name = names(fresh(), rows=1)
    import folder_paths

    path = folder_paths.get_full_path("embeddings", f"{name}.safetensors")
    text = f"embedding:{name}"
    before = fingerprint(node_classes, text=text, convert_keywords=False)
    st = os.stat(path)
    save_file({"emb_params": torch.ones(2, 768)}, path)  # another size, the old mtime set back
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint(node_classes, text=text, convert_keywords=False) != before


def test_with_convert_keywords_a_new_name_changes_the_fingerprint(node_classes, names):
    word = fresh()
    text = f"a photo of {word}"
    off, on = (fingerprint(node_classes, text=text, convert_keywords=c) for c in (False, True))
    names(fresh())  # another file: only the converting fingerprint lists every name
    assert fingerprint(node_classes, text=text, convert_keywords=False) == off
    assert fingerprint(node_classes, text=text, convert_keywords=True) != on
    names(word)  # the bare word now names a file: converted, it is a reference
    assert fingerprint(node_classes, text=text, convert_keywords=True)[2][0][0] == word


def test_with_a_linked_text_renaming_a_file_changes_the_fingerprint(node_classes, names, embeddings_dir):
    import folder_paths

    old = names(fresh())
    renamed = os.path.join(embeddings_dir, f"{fresh()}.safetensors")
    before = fingerprint(node_classes, convert_keywords=False)  # a linked text: ComfyUI passes none
    os.rename(os.path.join(embeddings_dir, f"{old}.safetensors"), renamed)
    try:
        folder_paths.filename_list_cache.clear()
        # the same size and mtime under another name: embedding:OLD no longer resolves
        assert fingerprint(node_classes, convert_keywords=False) != before
    finally:
        os.rename(renamed, os.path.join(embeddings_dir, f"{old}.safetensors"))


def test_each_problem_is_a_line_of_its_own(node_classes):
    a, b = fresh(), fresh()
    warnings, shown = run(node_classes, text=f"embedding:{a} embedding:{b}")
    lines = warnings.split("\n")
    assert [ln.split(" ", 2)[:2] for ln in lines] == [["missing:", f"embedding:{a}"], ["missing:", f"embedding:{b}"]]
    assert shown == (warnings,)
