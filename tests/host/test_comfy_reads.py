"""tokensmith.comfy_reads against the running ComfyUI: for each file layout and each embedding key, the
tensor ComfyUI's own load_embed returns is the one comfy_reads names; and the tokenizers' slots, as the
adapter reads them, are what those tokenizers do with `embedding:NAME`."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

KEYS = ["clip_l", "clip_h", "clip_g", "t5xxl", "qwen3_4b", "qwen25_7b", "gemma2_2b", "umt5xxl"]
SIZES = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280, "t5xxl": 4096, "qwen3_4b": 2560, "qwen25_7b": 3584,
         "gemma2_2b": 2304, "umt5xxl": 4096}


def _tensors(keys, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(2, SIZES[k], generator=gen) for k in keys}


LAYOUTS = {
    "sdxl.safetensors": ("safetensors", ["clip_l", "clip_g"]),
    "sd3.safetensors": ("safetensors", ["clip_l", "clip_g", "t5xxl"]),
    "flux.safetensors": ("safetensors", ["t5xxl", "clip_l"]),
    "zimage.safetensors": ("safetensors", ["qwen3_4b"]),
    "flux_pickled.pt": ("pt", ["t5xxl", "clip_l"]),  # dictionary order: t5xxl first
    "kohya.safetensors": ("emb_params", ["clip_l"]),
}


@pytest.fixture(scope="module")
def layout_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reads")
    out = {}
    for i, (name, (kind, keys)) in enumerate(LAYOUTS.items()):
        tensors = _tensors(keys, i)
        path = os.path.join(folder, name)
        if kind == "pt":
            torch.save(tensors, path)
        elif kind == "emb_params":
            save_file({"emb_params": tensors[keys[0]]}, path)
        else:
            save_file(tensors, path)
        out[name] = (path, tensors)
    return str(folder), out


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_comfy_reads_names_what_load_embed_returns(name, layout_files, pack):
    import comfy.sd1_clip

    folder, files = layout_files
    path, tensors = files[name]
    header = pack("tokensmith.formats").read_header(path)
    reads = pack("tokensmith.comfy_reads")
    file_widths = {k: d for k, (_, d) in header["encoders"].items()}
    emb = pack("tokensmith.formats").read_embedding(path)
    for key in KEYS:
        got = comfy.sd1_clip.load_embed(name, folder, SIZES[key], key)
        source = reads.source_for(file_widths, key, header["stored_order"])
        assert torch.equal(got.float(), emb.vectors[source]), (name, key, source)


def _fake_clip(tokenizer, **models):
    # the CLIP container only: real tokenizers, and which encoder models it holds
    return SimpleNamespace(tokenizer=tokenizer, cond_stage_model=SimpleNamespace(**models))


def test_slots_of_real_clips(sd1, sdxl, pack):
    adapter = pack("comfy_adapter")
    assert [(s.key, s.width, s.looks_up, s.loaded) for s in adapter.embedding_slots(sd1.clip)] == [
        ("clip_l", 768, True, True)]
    assert [(s.key, s.width) for s in adapter.embedding_slots(sdxl.clip)] == [("clip_l", 768), ("clip_g", 1280)]


def test_sd3_tokenizer_slots_and_the_missing_t5(embeddings_dir, pack):
    from comfy.text_encoders.sd3_clip import SD3Tokenizer

    adapter = pack("comfy_adapter")
    tok = SD3Tokenizer(embedding_directory=embeddings_dir)
    slots = adapter.embedding_slots(_fake_clip(tok, clip_l=object(), clip_g=object(), t5xxl=None))
    assert [(s.key, s.width, s.looks_up, s.loaded) for s in slots] == [
        ("clip_l", 768, True, True), ("clip_g", 1280, True, True), ("t5xxl", 4096, True, False)]


@pytest.mark.parametrize(("module", "cls", "key", "width"), [
    ("comfy.text_encoders.z_image", "ZImageTokenizer", "qwen3_4b", 2560),
    ("comfy.text_encoders.qwen_image", "QwenImageTokenizer", "qwen25_7b", 3584),
])
def test_llm_tokenizers_look_up_embeddings_as_their_slot_says(module, cls, key, width, embeddings_dir, pack):
    import importlib

    adapter = pack("comfy_adapter")
    tok = getattr(importlib.import_module(module), cls)(embedding_directory=embeddings_dir)
    [slot] = adapter.embedding_slots(_fake_clip(tok, **{key: object()}))
    assert (slot.key, slot.width) == (key, width)
    name = f"reads_{key}"
    save_file({key: torch.randn(2, width)}, os.path.join(embeddings_dir, f"{name}.safetensors"))
    tokens = tok.tokenize_with_weights(f"a photo of embedding:{name}")
    spliced = [t for row in tokens[key] for t, *_ in row if torch.is_tensor(t)]
    # looks_up True: the two vectors arrive; False (ComfyUI built the tokenizer without the folder): none
    assert len(spliced) == (2 if slot.looks_up else 0), (slot, len(spliced))


@pytest.mark.parametrize("tokenizer", ["sd3_clip.SD3Tokenizer", "flux.FluxTokenizer"])
@pytest.mark.parametrize("file_keys", [["clip_l", "clip_g"], ["clip_l"], ["clip_l", "clip_g", "t5xxl"],
                                       ["clip_l", "t5xxl"], ["t5xxl"]])
def test_what_each_tokenizer_of_sd3_and_flux_receives(tokenizer, file_keys, embeddings_dir, pack):
    """The fallback trap through ComfyUI's own tokenizers: e.g. an SDXL file on SD3 hands T5 its clip_g rows."""
    import importlib

    module, cls = tokenizer.split(".")
    tok = getattr(importlib.import_module(f"comfy.text_encoders.{module}"), cls)(embedding_directory=embeddings_dir)
    adapter, reads = pack("comfy_adapter"), pack("tokensmith.comfy_reads")
    slots = adapter.embedding_slots(_fake_clip(tok, **{attr: object() for attr in vars(tok)}))
    name = f"trap_{module}_{'_'.join(file_keys)}"
    tensors = _tensors(file_keys, 11)
    stored = {"emb_params": tensors[file_keys[0]]} if len(file_keys) == 1 else tensors
    save_file(stored, os.path.join(embeddings_dir, f"{name}.safetensors"))
    emb = pack("tokensmith.formats").read_embedding(os.path.join(embeddings_dir, f"{name}.safetensors"))
    tokens = tok.tokenize_with_weights(f"embedding:{name}")
    readings = reads.readings({k: t.shape[1] for k, t in emb.vectors.items()}, slots)
    for slot in slots:
        token_key = next(a for a, t in vars(tok).items() if getattr(t, "embedding_key", None) == slot.key)
        spliced = [t for row in tokens[token_key.removeprefix("clip_")] for t, *_ in row if torch.is_tensor(t)]
        r = readings[slot.key]
        assert torch.equal(torch.stack(spliced).float(), emb.vectors[r.reads]), (slot.key, r)
        assert r.used == (spliced[0].shape[-1] == slot.width)
    if tokenizer.startswith("sd3") and file_keys == ["clip_l", "clip_g"]:
        assert readings["t5xxl"].reads == "clip_g" and readings["t5xxl"].fallback  # the trap, as issue 15 says


def test_convert_to_sd3_closes_the_trap(embeddings_dir, pack, node_classes):
    """Convert Embedding (target sd3) on an SDXL embedding: ComfyUI's SD3 tokenizer then gives T5 the file's
    own zero t5xxl rows instead of its clip_g rows, and L and G keep their vectors."""
    from comfy.text_encoders.sd3_clip import SD3Tokenizer

    Embedding = pack("tokensmith.embedding").Embedding
    xl = Embedding(_tensors(["clip_l", "clip_g"], 21), name="xl")
    with torch.inference_mode():
        out = node_classes["TokenSmithConvertEmbedding"].execute(embedding=xl, target="sd3")
    sd3 = out.result[0]
    assert sd3.family == "sd3" and "zero" in out.result[1]
    pack("tokensmith.writer").save_embedding(sd3, embeddings_dir, "converted_sd3")
    tokens = SD3Tokenizer(embedding_directory=embeddings_dir).tokenize_with_weights("embedding:converted_sd3")
    rows = {k: torch.stack([t for row in tokens[k] for t, *_ in row if torch.is_tensor(t)]).float()
            for k in ("l", "g", "t5xxl")}
    assert torch.equal(rows["l"], xl.vectors["clip_l"]) and torch.equal(rows["g"], xl.vectors["clip_g"])
    assert rows["t5xxl"].shape == (2, 4096) and not rows["t5xxl"].any()
    sd2 = Embedding({"clip_h": torch.randn(1, 1024)}, name="old")
    with pytest.raises(pack("tokensmith.errors").FamilyMismatchError, match="cannot become SD3"):
        node_classes["TokenSmithConvertEmbedding"].execute(embedding=sd2, target="sd3")
