"""Load / Save / Convert / Embedding From Text / Inspect nodes, executed in-process on the tiny real models."""

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FAMILIES = ["sd1", "sd2", "sdxl"]
WIDTHS = {"sd1": {"clip_l": 768}, "sd2": {"clip_h": 1024}, "sdxl": {"clip_l": 768, "clip_g": 1280}}
FAMILY_ENCODERS = {"sd1": ("clip_l",), "sd2": ("clip_h",), "sdxl": ("clip_l", "clip_g")}


def run(cls, **inputs):
    """Call a node the way ComfyUI does: under inference mode."""
    with torch.inference_mode():
        return cls.execute(**inputs)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def mods(pack):
    class M:
        embedding = pack("tokensmith.embedding")
        errors = pack("tokensmith.errors")
        files = pack("nodes.files")
        writer = pack("tokensmith.writer")
        png = pack("tokensmith.formats.png_fmt")

    return M


def make(mods, family: str, n: int = 3, seed: int = 0, name: str = "test"):
    gen = torch.Generator().manual_seed(seed)
    vectors = {k: torch.randn(n, w, generator=gen) * 0.02 for k, w in WIDTHS[family].items()}
    return mods.embedding.Embedding(vectors=vectors, name=name)


def token_rows(clip, text: str) -> dict[str, torch.Tensor]:
    """The CLIP's input vectors for text, read straight from ComfyUI's tokenizer and embedding table."""
    out = {}
    for key in ("clip_l", "clip_h", "clip_g"):
        tok = getattr(clip.tokenizer, key, None)
        model = getattr(clip.cond_stage_model, key, None)
        if tok is None or model is None:
            continue
        ids = tok.tokenizer(text)["input_ids"][1:-1]
        out[key] = model.transformer.get_input_embeddings().weight[ids].float()
    return out


# --------------------------------------------------------------------------- Save / Load


@pytest.mark.parametrize("family", FAMILIES)
def test_save_then_load_round_trip(family, mods, node_classes, embeddings_dir):
    emb = make(mods, family, n=3, seed=1)
    name = unique(f"rt-{family}")
    out = run(node_classes["TokenSmithSaveEmbedding"], embedding=emb, name=name, overwrite=False)
    assert out.result == (f"embedding:{name}",)
    path = Path(embeddings_dir) / f"{name}.safetensors"
    assert str(path) in out.ui.as_dict()["text"][0]
    keys = set(load_file(path))
    assert keys == ({"emb_params"} if family != "sdxl" else {"clip_l", "clip_g"})

    load = node_classes["TokenSmithLoadEmbedding"]
    assert load.validate_inputs(file=path.name) is True
    loaded = run(load, file=path.name).result[0]
    assert loaded.family == family
    assert loaded.encoders == FAMILY_ENCODERS[family]
    for k, t in emb.vectors.items():
        assert torch.equal(loaded.vectors[k], t), k
    assert loaded.metadata["family"] == family
    assert path.name in mods.files.listed_files()


def test_save_into_subfolder(mods, node_classes, embeddings_dir):
    name = f"{unique('sub')}/inner.v2"
    out = run(node_classes["TokenSmithSaveEmbedding"], embedding=make(mods, "sd1"), name=name, overwrite=False)
    assert out.result == (f"embedding:{name}",)
    assert (Path(embeddings_dir) / f"{name}.safetensors").is_file()


@pytest.mark.parametrize("bad", ["bad name", "../escape", "", "a/../b", "/abs/path", "x.pt", "semi;colon", "dot."])
def test_save_refuses_bad_names(bad, mods, node_classes, embeddings_dir):
    before = set(Path(embeddings_dir).parent.rglob("*"))
    with pytest.raises(mods.errors.EmbeddingNameError) as info:
        run(node_classes["TokenSmithSaveEmbedding"], embedding=make(mods, "sd1"), name=bad, overwrite=True)
    assert isinstance(info.value, mods.errors.TokenSmithError)
    assert str(info.value)  # a message the UI can show
    assert set(Path(embeddings_dir).parent.rglob("*")) == before, "a refused name still wrote something"


def test_bad_name_messages_say_what_is_wrong(mods, node_classes):
    save = node_classes["TokenSmithSaveEmbedding"]
    with pytest.raises(mods.errors.EmbeddingNameError, match="spaces cannot work"):
        run(save, embedding=make(mods, "sd1"), name="my cat", overwrite=False)
    with pytest.raises(mods.errors.EmbeddingNameError, match="'..'"):
        run(save, embedding=make(mods, "sd1"), name="../up", overwrite=False)


def test_save_refuses_existing_file_unless_overwrite(mods, node_classes, embeddings_dir):
    save, load = node_classes["TokenSmithSaveEmbedding"], node_classes["TokenSmithLoadEmbedding"]
    name = unique("exists")
    first, second = make(mods, "sd1", seed=1), make(mods, "sd1", seed=2)
    run(save, embedding=first, name=name, overwrite=False)
    with pytest.raises(mods.errors.EmbeddingFileError, match="exists; pass overwrite") as info:
        run(save, embedding=second, name=name, overwrite=False)
    assert isinstance(info.value, mods.errors.TokenSmithError)
    kept = run(load, file=f"{name}.safetensors").result[0]
    assert torch.equal(kept.vectors["clip_l"], first.vectors["clip_l"]), "a refused save changed the file"
    run(save, embedding=second, name=name, overwrite=True)
    replaced = run(load, file=f"{name}.safetensors").result[0]
    assert torch.equal(replaced.vectors["clip_l"], second.vectors["clip_l"])


def test_load_validation_and_fingerprint(mods, node_classes, embeddings_dir):
    load = node_classes["TokenSmithLoadEmbedding"]
    message = load.validate_inputs(file="no-such-file.safetensors")
    assert isinstance(message, str) and "not found" in message
    with pytest.raises(mods.errors.EmbeddingFileError):
        run(load, file="no-such-file.safetensors")

    name = unique("fp")
    path = Path(embeddings_dir) / f"{name}.safetensors"
    mods.writer.save_embedding(make(mods, "sd1", seed=1), embeddings_dir, name)
    fp1 = load.fingerprint_inputs(file=path.name)
    assert load.fingerprint_inputs(file=path.name) == fp1, "an unchanged file must keep its fingerprint"
    newer = make(mods, "sd1", n=2, seed=5)
    mods.writer.save_embedding(newer, embeddings_dir, name, overwrite=True)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load.fingerprint_inputs(file=path.name) != fp1
    assert torch.equal(run(load, file=path.name).result[0].vectors["clip_l"], newer.vectors["clip_l"])


def test_load_reads_a1111_pt_and_png_card(mods, node_classes, embeddings_dir):
    load = node_classes["TokenSmithLoadEmbedding"]
    inspect = node_classes["TokenSmithInspectEmbedding"]
    vec = (torch.randn(2, 768) * 0.02).half()
    pt_name = unique("a1111") + ".pt"
    pt_path = Path(embeddings_dir) / pt_name
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "x", "step": 1500},
               pt_path)
    emb = run(load, file=pt_name).result[0]
    assert emb.source_format.startswith("a1111")
    assert emb.step == 1500
    assert torch.equal(emb.vectors["clip_l"], vec.float())
    report = json.loads(run(inspect, embedding=emb).result[1])
    assert report["stats"]["clip_l"]["stored_dtype"] == "float16"
    assert report["source"]["sha256"] == hashlib.sha256(pt_path.read_bytes()).hexdigest()
    assert report["source"]["autov2"] == report["source"]["sha256"][:10]

    card = make(mods, "sd1", n=2, seed=9, name="card")
    png_name = unique("card") + ".png"
    mods.png.write_png_card(card, Path(embeddings_dir) / png_name, draw_data=False)
    assert png_name in mods.files.listed_files()
    # Preview pictures that model managers put beside embeddings are not offered as embeddings.
    pt_preview = pt_name[:-3] + ".png"
    (Path(embeddings_dir) / pt_preview).write_bytes((Path(embeddings_dir) / png_name).read_bytes())
    (Path(embeddings_dir) / (pt_name[:-3] + ".preview.png")).write_bytes(b"\x89PNG")
    listed = mods.files.listed_files()
    assert pt_name in listed and pt_preview not in listed and pt_name[:-3] + ".preview.png" not in listed
    assert node_classes["TokenSmithLoadEmbedding"].validate_inputs(file=png_name) is True
    from_png = run(load, file=png_name).result[0]
    assert torch.allclose(from_png.vectors["clip_l"], card.vectors["clip_l"], atol=0, rtol=1e-6)

    # Any readable format -> safetensors through the Save node.
    out_name = unique("from-pt")
    run(node_classes["TokenSmithSaveEmbedding"], embedding=emb, name=out_name, overwrite=False)
    assert torch.equal(load_file(Path(embeddings_dir) / f"{out_name}.safetensors")["emb_params"], vec.float())


# --------------------------------------------------------------------------- Embedding From Text


@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_from_text_gives_the_vocabulary_rows(family, models, node_classes):
    clip = models[family].clip
    out = run(node_classes["TokenSmithEmbeddingFromText"], clip=clip, text="a red cat").result[0]
    expected = token_rows(clip, "a red cat")
    assert out.encoders == FAMILY_ENCODERS[family]
    assert out.num_vectors == 3
    for k, t in expected.items():
        assert torch.equal(out.vectors[k], t), k


def test_embedding_from_text_refuses_empty_and_too_long(mods, sd1, node_classes):
    node = node_classes["TokenSmithEmbeddingFromText"]
    with pytest.raises(mods.errors.TokenSmithError, match="no tokens"):
        run(node, clip=sd1.clip, text="   ")
    with pytest.raises(mods.errors.TokenSmithError, match="at most 75"):
        run(node, clip=sd1.clip, text="cat " * 80)


# --------------------------------------------------------------------------- Convert


def test_convert_sd1_to_sdxl_zero_g_and_back(mods, node_classes):
    convert = node_classes["TokenSmithConvertEmbedding"]
    sd1_emb = make(mods, "sd1", n=2, seed=3)
    xl, summary = run(convert, embedding=sd1_emb, target="sdxl").result
    assert xl.family == "sdxl"
    assert torch.equal(xl.vectors["clip_l"], sd1_emb.vectors["clip_l"])
    assert torch.equal(xl.vectors["clip_g"], torch.zeros(2, 1280))
    assert "zero" in summary
    back = run(convert, embedding=xl, target="sd1").result[0]
    assert back.family == "sd1" and torch.equal(back.vectors["clip_l"], sd1_emb.vectors["clip_l"])
    kept = run(convert, embedding=xl, target="keep").result[0]
    assert all(torch.equal(kept.vectors[k], xl.vectors[k]) for k in xl.vectors)


def test_convert_sd1_to_sdxl_maps_nearest_tokens(mods, sdxl, node_classes):
    # An SD1 embedding made of the SDXL CLIP's own L rows for "cat dog": each L vector's nearest L token
    # is itself, so the G side must be exactly the G rows of "cat" and "dog".
    rows = token_rows(sdxl.clip, "cat dog")
    sd1_emb = mods.embedding.Embedding(vectors={"clip_l": rows["clip_l"] * 1.5}, name="catdog")
    xl, summary = run(node_classes["TokenSmithConvertEmbedding"], embedding=sd1_emb, target="sdxl",
                      clip=sdxl.clip).result
    assert torch.equal(xl.vectors["clip_g"], rows["clip_g"])
    assert torch.equal(xl.vectors["clip_l"], rows["clip_l"] * 1.5)
    assert "cat, dog" in summary
    assert xl.metadata["g_side"] == "nearest tokens"


def test_convert_refuses_wrong_families(mods, sd1, node_classes):
    convert = node_classes["TokenSmithConvertEmbedding"]
    with pytest.raises(mods.errors.FamilyMismatchError, match="only an SD1"):
        run(convert, embedding=make(mods, "sd2"), target="sdxl")
    with pytest.raises(mods.errors.FamilyMismatchError, match="needs an SDXL CLIP"):
        run(convert, embedding=make(mods, "sd1"), target="sdxl", clip=sd1.clip)
    with pytest.raises(mods.errors.FamilyMismatchError):
        run(convert, embedding=make(mods, "sd2"), target="sd1")


# --------------------------------------------------------------------------- Inspect


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_without_clip_reports_shapes_stats_and_hash(family, mods, node_classes, embeddings_dir):
    emb = make(mods, family, n=2, seed=4)
    name = unique(f"insp-{family}")
    run(node_classes["TokenSmithSaveEmbedding"], embedding=emb, name=name, overwrite=False)
    path = Path(embeddings_dir) / f"{name}.safetensors"
    loaded = run(node_classes["TokenSmithLoadEmbedding"], file=path.name).result[0]
    out = run(node_classes["TokenSmithInspectEmbedding"], embedding=loaded)
    text, data = out.result[0], json.loads(out.result[1])
    assert out.ui.as_dict()["text"][0] == text
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["source"]["sha256"] == digest and digest in text
    assert data["source"]["autov2"] == digest[:10] and f"AutoV2: {digest[:10]}" in text
    assert data["family"] == family and data["format"] == "tokensmith"
    assert data["encoders"] == {k: [2, w] for k, w in WIDTHS[family].items()}
    assert data["metadata"]["name"] == name
    for k, t in emb.vectors.items():
        t64 = t.double()
        assert data["stats"][k]["stored_dtype"] == "float32"
        for i, row in enumerate(data["per_vector"][k]):
            assert row["norm"] == pytest.approx(float(t64[i].norm()), rel=1e-9)
            assert row["mean"] == pytest.approx(float(t64[i].mean()), rel=1e-9, abs=1e-12)
            assert row["std"] == pytest.approx(float(t64[i].std(correction=0)), rel=1e-9)
            assert row["min"] == pytest.approx(float(t64[i].min())) and row["max"] == pytest.approx(float(t64[i].max()))


def test_inspect_of_a_merged_embedding_has_no_file_hash(mods, node_classes):
    emb = make(mods, "sd1")
    data = json.loads(run(node_classes["TokenSmithInspectEmbedding"], embedding=emb).result[1])
    assert data["source"]["sha256"] is None
    assert "save it" in data["source"]["note"]


VERDICTS = [
    ("sdxl", "sdxl", "works on both SDXL encoders"),
    ("sd1", "sdxl", "SD1.5 embedding on SDXL: only the L side uses it (clip_g ignores it: width 768 vs 1280)"),
    ("sd2", "sd1", "will be ignored: width 1024 vs 768"),
    ("sd1", "sd2", "will be ignored: width 768 vs 1024"),
    ("sd1", "sd1", "works on this SD1.5 CLIP (clip_l)"),
    ("sd2", "sd2", "works on this SD2 CLIP (clip_h)"),
    ("sdxl", "sd1", "its clip_g vectors are not used"),
    ("sdxl", "sd2", "will be ignored"),
    ("sd2", "sdxl", "will be ignored"),
]


@pytest.mark.parametrize(("emb_family", "clip_family", "verdict"), VERDICTS)
def test_inspect_verdict_matches_what_comfyui_does(emb_family, clip_family, verdict, mods, models, node_classes,
                                                     embeddings_dir):
    clip = models[clip_family].clip
    emb = make(mods, emb_family, n=2, seed=6)
    data = json.loads(run(node_classes["TokenSmithInspectEmbedding"], embedding=emb, clip=clip, top_k=3).result[1])
    assert verdict in data["clip"]["verdict"]

    # Cross-check every "used" claim against ComfyUI's own loader: tokenize embedding:NAME with this CLIP and
    # see which vectors each encoder's tokenizer receives (a width that differs is dropped when encoding).
    name = unique("verdict")
    mods.writer.save_embedding(emb, embeddings_dir, name)
    with torch.inference_mode():
        tokens = clip.tokenize(f"embedding:{name}")
    for key, reading in data["clip"]["per_encoder"].items():
        spliced = [t for row in tokens[key.removeprefix("clip_")] for t, *_ in row if torch.is_tensor(t)]
        assert len(spliced) == 2, f"ComfyUI did not find the file for {key}"
        width = getattr(clip.tokenizer, key).embedding_size
        assert reading["used"] == (spliced[0].shape[-1] == width), (key, reading)
        if reading["used"]:
            assert torch.equal(torch.stack(spliced).float(), emb.vectors[reading["reads"]])


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_with_clip_shows_vocabulary_norms_and_nearest_tokens(family, mods, models, node_classes):
    clip = models[family].clip
    emb = run(node_classes["TokenSmithEmbeddingFromText"], clip=clip, text="cat dog").result[0]
    out = run(node_classes["TokenSmithInspectEmbedding"], embedding=emb, clip=clip, top_k=3)
    data = json.loads(out.result[1])
    for key in FAMILY_ENCODERS[family]:
        r = data["clip"]["per_encoder"][key]
        table = getattr(clip.cond_stage_model, key).transformer.get_input_embeddings().weight.float()
        median = float(table.norm(dim=-1).median())
        assert r["vocabulary_norms"]["median"] == pytest.approx(median)
        assert r["norm_vs_median"][0] == pytest.approx(float(emb.vectors[key][0].norm()) / median)
        assert [row[0][0] for row in r["nearest"]] == ["cat", "dog"]
        assert r["nearest"][0][0][1] == pytest.approx(1.0, abs=1e-4)
        assert len(r["nearest"][0]) == 3
    assert "#0 nearest: cat (1.000)" in out.result[0]
