"""TokenSmithPrompt against ComfyUI's own tokenizer: every rewrite it makes must turn a prompt that
ComfyUI's parser misreads into one it resolves, and leave well-formed prompts alone."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

NAME = "tsp_ring"


def _write(folder, rel, tensors):
    path = os.path.join(folder, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


@pytest.fixture(scope="module")
def files(comfy_base):
    import folder_paths

    folder = folder_paths.get_folder_paths("embeddings")[0]
    gen = torch.Generator().manual_seed(3)
    paths = {
        NAME: _write(folder, f"{NAME}.safetensors", {"emb_params": torch.randn(2, 768, generator=gen)}),
        "tsp_xl": _write(folder, "tsp_xl.safetensors", {"clip_l": torch.randn(3, 768, generator=gen),
                                                        "clip_g": torch.randn(3, 1280, generator=gen)}),
        "tsp_sd2": _write(folder, "tsp_sd2.safetensors", {"emb_params": torch.randn(1, 1024, generator=gen)}),
        "styles/tsp_deep": _write(folder, "styles/tsp_deep.safetensors",
                                  {"emb_params": torch.randn(1, 768, generator=gen)}),
    }
    folder_paths.filename_list_cache.clear()
    return paths


@pytest.fixture(scope="module")
def prompt_mod(pack, files):
    return pack("nodes.prompt")


def embedding_rows(clip, text):
    """(vectors found, their weights) in ComfyUI's own tokenization of text."""
    tokens = clip.tokenize(text)
    rows = [(t, w) for row in tokens["l"] for (t, w, *_rest) in row if isinstance(t, torch.Tensor)]
    return len(rows), sorted({round(w, 3) for _t, w in rows})


def run_node(node_classes, **kwargs):
    with torch.inference_mode():
        out = node_classes["TokenSmithPrompt"].execute(**kwargs)
    return out.result[0], out.result[1], out.ui


@pytest.mark.parametrize("broken, weight, misread", [
    (f"a photo,embedding:{NAME}", 1.0, True),                  # no space before the prefix
    (f"embedding:{NAME},red ring", 1.0, True),                 # comma glued to the next word
    (f"embedding:{NAME}:1.2 on a table", 1.2, True),           # weight without parentheses
    (f"(embedding:{NAME}:1.3, red)", 1.3, True),               # weight inside a longer group
    (f"a photo of embedding:{NAME.upper()}", 1.0, True),       # wrong case (file names are case-sensitive)
    (f"a picture of embedding:{NAME}.", 1.0, True),            # sentence full stop
    (f"red ring,(embedding:{NAME}:0.8)", 0.8, False),          # glued to a comma but in its own group: fine
])
def test_rewrites_make_comfyui_resolve_the_embedding(sd1, prompt_mod, node_classes, broken, weight, misread):
    # ComfyUI's own tokenizer is the judge: before, it misses the vectors; after, it finds both
    assert (embedding_rows(sd1.clip, broken) != (2, [weight])) == misread
    text, warnings, _ui = run_node(node_classes, text=broken, convert_keywords=False)
    assert embedding_rows(sd1.clip, text) == (2, [weight]), (broken, text, warnings)
    assert "missing" not in warnings
    assert (text != broken) == misread and ("changed:" in warnings) == misread, (broken, text, warnings)


@pytest.mark.parametrize("good", [
    f"a photo of embedding:{NAME}, red ring",
    f"(embedding:{NAME}:1.2)",
    f"(red ring, embedding:{NAME}:1.3)",
    f"embedding:{NAME}\nsecond line",
    "no embedding here at all",
])
def test_well_formed_prompts_are_left_alone(sd1, prompt_mod, node_classes, good):
    text, warnings, _ui = run_node(node_classes, text=good, convert_keywords=False)
    assert text == good
    assert "changed" not in warnings and "missing" not in warnings


def test_keywords_become_embeddings_only_when_asked(sd1, prompt_mod, node_classes):
    prompt = f"{NAME}, red ring, (tsp_deep:1.2), my_{NAME}_x, {NAME}s"
    off, _w, _ui = run_node(node_classes, text=prompt, convert_keywords=False)
    assert off == prompt
    on, warnings, _ui = run_node(node_classes, text=prompt, convert_keywords=True)
    assert on.startswith(f"embedding:{NAME}, red ring, (embedding:styles/tsp_deep:1.2)"), on
    assert f"my_{NAME}_x" in on and f"{NAME}s" in on and on.count("embedding:") == 2
    assert "keyword" in warnings
    count, weights = embedding_rows(sd1.clip, on)
    assert count == 3 and weights == [1.0, 1.2]


def test_missing_names_are_reported_with_a_suggestion(prompt_mod, node_classes):
    text, warnings, ui_out = run_node(node_classes, text="a photo of embedding:tsp_rign", convert_keywords=False)
    assert text == "a photo of embedding:tsp_rign"
    assert "missing: embedding:tsp_rign" in warnings and f"embedding:{NAME}" in warnings
    assert warnings in ui_out.as_dict()["text"]


def test_encoder_mismatches_are_reported(sd1, sdxl, prompt_mod, node_classes):
    _t, on_xl, _ui = run_node(node_classes, text=f"embedding:{NAME} and embedding:tsp_xl", clip=sdxl.clip)
    assert f"mismatch: embedding:{NAME}" in on_xl and "clip_g" in on_xl
    assert "embedding:tsp_xl is" not in on_xl  # an SDXL file on SDXL is fine
    _t, on_sd1, _ui = run_node(node_classes, text="embedding:tsp_sd2 embedding:tsp_xl", clip=sd1.clip)
    assert "embedding:tsp_sd2" in on_sd1 and "ignore it entirely" in on_sd1
    assert "embedding:tsp_xl is" not in on_sd1  # SDXL files carry clip_l, which SD1 reads
    _t, clean, _ui = run_node(node_classes, text=f"embedding:{NAME}", clip=sd1.clip)
    assert clean.startswith("ok:")


def test_fingerprint_follows_the_referenced_files(files, prompt_mod, node_classes):
    cls = node_classes["TokenSmithPrompt"]
    text = f"a photo of embedding:{NAME}"
    before = cls.fingerprint_inputs(text=text, convert_keywords=False)
    assert before == cls.fingerprint_inputs(text=text, convert_keywords=False)
    linked_before = cls.fingerprint_inputs(convert_keywords=False)  # text linked: not passed by ComfyUI

    # an unrelated file changes: the constant-text fingerprint stays, the linked one moves
    other = files["tsp_xl"]
    st = os.stat(other)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cls.fingerprint_inputs(text=text, convert_keywords=False) == before
    assert cls.fingerprint_inputs(convert_keywords=False) != linked_before

    # the referenced file is retrained (same name, same size, new contents and mtime); the new mtime is
    # set, not waited for (a coarse file-system clock could give the rewrite the old one)
    old_mtime_ns = os.stat(files[NAME]).st_mtime_ns
    path = _write(os.path.dirname(files[NAME]), f"{NAME}.safetensors", {"emb_params": torch.ones(2, 768)})
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, old_mtime_ns + 1_000_000_000))
    after = cls.fingerprint_inputs(text=text, convert_keywords=False)
    assert after != before


def test_fingerprint_sees_a_missing_file_appear(embeddings_dir, prompt_mod, node_classes):
    import folder_paths

    cls = node_classes["TokenSmithPrompt"]
    text = "embedding:tsp_late"
    before = cls.fingerprint_inputs(text=text, convert_keywords=False)
    _write(embeddings_dir, "tsp_late.safetensors", {"emb_params": torch.zeros(1, 768)})
    folder_paths.filename_list_cache.clear()
    assert cls.fingerprint_inputs(text=text, convert_keywords=False) != before
