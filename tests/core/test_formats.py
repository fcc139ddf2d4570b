"""Readers: every layout other tools write, and refusal of damaged or hostile files."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.core import golden
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import (
    limits,
    png_fmt,
    read_embedding,
    read_embedding_with_header,
    read_header,
    safetensors_fmt,
)
from tokensmith.report import inspect_report


def _expect(emb, vecs):
    assert list(emb.vectors) == [k for k in ("clip_l", "clip_h", "clip_g", "t5xxl") if k in vecs]
    for enc, v in vecs.items():
        got = emb.vectors[enc]
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        assert torch.equal(got, v.to(torch.float32).reshape(got.shape)), enc


@pytest.fixture(scope="module")
def goldens(tmp_path_factory):
    return golden.all_goldens(tmp_path_factory.mktemp("golden"))


LABELS = ["a1111_zip", "a1111_legacy", "a1111_paramdict", "kohya_l", "kohya_h", "sdxl_st", "sdxl_pt", "t5",
          "diffusers_bin", "diffusers_st", "lora_bundle", "png_text", "png_drawn"]


@pytest.mark.parametrize("label", LABELS)
def test_every_layout_reads_back_exactly(goldens, label):
    path, fmt, vecs = goldens[label]
    emb = read_embedding(path)
    assert emb.source_format == fmt
    assert emb.name == path.stem
    _expect(emb, vecs)
    header = read_header(path)
    assert header["format"] == fmt
    assert header["family"] == emb.family
    assert header["encoders"] == emb.shapes()
    assert header["size"] == path.stat().st_size


def test_format_is_detected_from_content_not_extension(goldens, tmp_path):
    path, _, vecs = goldens["kohya_l"]
    renamed = tmp_path / "looks_like.pt"
    renamed.write_bytes(path.read_bytes())
    emb = read_embedding(renamed)
    assert emb.source_format == "safetensors_emb_params"
    _expect(emb, vecs)
    pt, _, vecs = goldens["a1111_zip"]
    other = tmp_path / "really_a_pickle.safetensors"
    other.write_bytes(pt.read_bytes())
    assert read_embedding(other).source_format == "a1111_pt"


def test_a1111_metadata_and_step(goldens):
    emb = read_embedding(goldens["a1111_zip"][0], name="custom")
    assert emb.name == "custom"
    assert emb.step == 500
    assert emb.metadata == {"name": "golden", "step": "500", "sd_checkpoint": "abcdef1234",
                            "sd_checkpoint_name": "v1-5-pruned"}
    assert emb.family == "sd1"


@pytest.mark.parametrize("legacy", [False, True])
def test_a1111_saved_on_cuda_loads_on_cpu(tmp_path, legacy):
    vec = golden.vectors(2, 768, 5)
    path = golden.a1111_pt(tmp_path / "gpu.pt", vec, legacy=legacy, location="cuda:0")
    if not torch.cuda.is_available():
        # The file really says cuda: torch refuses it without a map_location.
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    emb = read_embedding(path)
    assert emb.vectors["clip_l"].device.type == "cpu"
    _expect(emb, {"clip_l": vec})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_becomes_fp32(tmp_path, dtype):
    vec = golden.vectors(3, 768, 6, dtype=dtype)
    for path in (golden.a1111_pt(tmp_path / "half.pt", vec), golden.kohya_safetensors(tmp_path / "half.st", vec)):
        emb, header = read_embedding_with_header(path)
        assert emb.vectors["clip_l"].dtype == torch.float32
        assert torch.equal(emb.vectors["clip_l"], vec.float())
        assert header["dtypes"] == {"clip_l": str(dtype).removeprefix("torch.")}


def test_parameterdict_variant_without_unpickling_modules(tmp_path):
    vec = golden.vectors(2, 768, 8)
    path = golden.a1111_parameterdict_pt(tmp_path / "old.pt", vec)
    with pytest.raises(Exception, match="ParameterDict"):  # plain weights_only refuses it
        torch.load(path, weights_only=True)
    emb = read_embedding(path)
    assert emb.source_format == "a1111_pt_parameterdict"
    assert not emb.vectors["clip_l"].requires_grad
    _expect(emb, {"clip_l": vec})


def test_parameterdict_in_legacy_layout_is_refused_cleanly(tmp_path):
    # torch's legacy layout pickles a module's class with its source code: never loaded.
    path = golden.a1111_parameterdict_pt(tmp_path / "old_legacy.pt", legacy=True)
    with pytest.raises(EmbeddingFileError, match="refused"):
        read_embedding(path)


def test_kohya_width_decides_encoder(tmp_path):
    for width, enc, family in ((768, "clip_l", "sd1"), (1024, "clip_h", "sd2"), (1280, "clip_g", "sdxl_g")):
        emb = read_embedding(golden.kohya_safetensors(tmp_path / f"w{width}.safetensors", golden.vectors(2, width)))
        assert list(emb.vectors) == [enc] and emb.family == family


def test_unknown_width_is_refused(tmp_path):
    path = golden.kohya_safetensors(tmp_path / "w512.safetensors", golden.vectors(2, 512))
    with pytest.raises(EmbeddingFileError, match="width 512"):
        read_embedding(path)


def test_per_encoder_single_clip_g_and_wrong_width(tmp_path):
    g = golden.vectors(2, 1280)
    emb = read_embedding(golden.per_encoder_safetensors(tmp_path / "g.safetensors", {"clip_g": g}))
    assert emb.source_format == "per_encoder" and emb.family == "sdxl_g"
    bad = golden.per_encoder_safetensors(tmp_path / "bad.safetensors", {"clip_l": golden.vectors(2, 1024)})
    with pytest.raises(EmbeddingFileError, match="clip_l vectors are 768 wide"):
        read_embedding(bad)


def test_sdxl_vector_counts_must_agree(tmp_path):
    path = golden.sdxl_safetensors(tmp_path / "mis.safetensors", golden.vectors(2, 768), golden.vectors(3, 1280))
    with pytest.raises(EmbeddingFileError, match="same number of vectors") as info:
        read_embedding(path)
    assert "mis.safetensors" in str(info.value)
    with pytest.raises(EmbeddingFileError, match="same number of vectors"):
        read_header(path)


def test_three_dimensional_tensor_is_refused(tmp_path):
    path = golden.kohya_safetensors(tmp_path / "3d.safetensors", torch.zeros(2, 3, 768))
    with pytest.raises(EmbeddingFileError, match="1-D or 2-D"):
        read_embedding(path)
    pt = golden.torch_file(tmp_path / "3d.pt", golden.a1111_dict(torch.zeros(1, 2, 768)))
    with pytest.raises(EmbeddingFileError, match="1-D or 2-D"):
        read_embedding(pt)


def test_integer_tensor_is_refused(tmp_path):
    ints = {"clip_l": torch.zeros(2, 768, dtype=torch.int32)}
    path = golden.per_encoder_safetensors(tmp_path / "int.safetensors", ints)
    with pytest.raises(EmbeddingFileError, match="floating point"):
        read_embedding(path)


def test_diffusers_multi_token_needs_name(tmp_path):
    a, b = golden.vectors(1, 768, 1)[0], golden.vectors(2, 768, 2)
    path = tmp_path / "two.safetensors"
    golden.per_encoder_safetensors(path, {"<a>": a, "<b>": b})
    with pytest.raises(EmbeddingFileError, match="pass the token as the name"):
        read_embedding(path)
    emb = read_embedding(path, name="b")
    assert emb.source_format == "diffusers" and emb.metadata["token"] == "<b>"
    _expect(emb, {"clip_l": b})


def test_lora_bundle_picks_named_or_first(tmp_path):
    first, second = golden.vectors(2, 768, 21), golden.vectors(3, 768, 22)
    path = golden.lora_bundle(tmp_path / "multi.safetensors", {"alpha": first, "beta": second})
    emb = read_embedding(path)
    assert emb.source_format == "lora_bundle" and emb.metadata["bundle"] == "alpha"
    assert emb.metadata["bundles"] == "alpha,beta"
    _expect(emb, {"clip_l": first})
    emb = read_embedding(path, name="beta")
    assert emb.name == "beta" and emb.metadata["bundle"] == "beta"
    _expect(emb, {"clip_l": second})


def test_lora_bundle_reads_only_bundle_tensors(tmp_path, monkeypatch):
    path = golden.lora_bundle(tmp_path / "l.safetensors", {"tok": golden.vectors(2, 768)})
    seen = []
    real = safetensors_fmt.read_tensor

    def spy(fh, p, header, key):
        seen.append(key)
        return real(fh, p, header, key)

    monkeypatch.setattr(safetensors_fmt, "read_tensor", spy)
    read_embedding(path)
    assert seen == ["bundle_emb.tok.string_to_param.*"]


def test_tokensmith_files_are_recognised(tmp_path):
    from tokensmith.embedding import Embedding
    from tokensmith.writer import save_embedding

    emb = Embedding({"clip_g": golden.vectors(2, 1280)}, name="x", step=42)
    path = save_embedding(emb, tmp_path, "mine")
    back = read_embedding(path)
    assert back.source_format == "tokensmith" and back.step == 42 and back.family == "sdxl_g"
    assert read_header(path)["format"] == "tokensmith"


@pytest.mark.parametrize("chunk", ["tEXt", "zTXt", "iTXt"])
def test_png_text_chunk_kinds(tmp_path, chunk):
    vec = golden.vectors(2, 768, 31)
    path = golden.png_text(tmp_path / f"{chunk}.png", golden.a1111_dict(vec, name="card", step=7), chunk=chunk)
    emb = read_embedding(path)
    assert emb.source_format == "png_text" and emb.step == 7 and emb.metadata["name"] == "card"
    _expect(emb, {"clip_l": vec})


def test_png_sdxl_text(tmp_path):
    l_vec, g_vec = golden.vectors(2, 768, 1), golden.vectors(2, 1280, 2)
    emb = read_embedding(golden.png_text(tmp_path / "xl.png", {"clip_l": l_vec, "clip_g": g_vec}))
    assert emb.family == "sdxl"
    _expect(emb, {"clip_l": l_vec, "clip_g": g_vec})


def test_lcg_matches_a1111_reference():
    # The first values A1111's own self-test pins for its generator (before & 0x0F).
    reference = [253, 242, 127, 44, 157, 27, 239, 133, 38, 79, 167, 4, 177, 95, 130, 79, 78, 14, 52, 215]
    assert golden.lcg_values(20) == reference
    assert png_fmt.lcg_nibbles(20).tolist() == [v & 0x0F for v in reference]
    n = 50_001
    assert png_fmt.lcg_nibbles(n).tolist() == [v & 0x0F for v in golden.lcg_values(n)]


def test_own_drawn_encoder_is_readable_by_the_plain_a1111_decoder():
    from tokensmith.embedding import Embedding

    emb = Embedding({"clip_l": golden.vectors(3, 768, 40)}, name="drawn", step=3)
    image = png_fmt.draw_embedding(golden.picture(40, 33), emb)
    payload = zlib.decompressobj().decompress(golden.read_drawn_payload(image))
    data = json.loads(payload)
    assert data["name"] == "drawn" and data["step"] == 3
    assert np.array_equal(np.array(data["string_to_param"]["*"]["TORCHTENSOR"], dtype=np.float32),
                          emb.vectors["clip_l"].numpy())


def test_png_card_round_trip_text_and_drawn(tmp_path):
    from tokensmith.embedding import Embedding

    emb = Embedding({"clip_l": golden.vectors(2, 768, 41)}, name="card", step=9,
                    metadata={"sd_checkpoint": "abc"})
    path = png_fmt.write_png_card(emb, tmp_path / "card.png", golden.picture(30, 20))
    back = read_embedding(path)
    assert back.source_format == "png_text" and back.step == 9 and back.metadata["sd_checkpoint"] == "abc"
    _expect(back, emb.vectors)
    # A site that strips text chunks keeps the pixels: the drawn copy must still read.
    stripped = tmp_path / "stripped.png"
    Image.open(path).save(stripped, format="PNG")
    assert "sd-ti-embedding" not in Image.open(stripped).info
    again = read_embedding(stripped)
    assert again.source_format == "png_drawn"
    _expect(again, emb.vectors)
    # SDXL cards too
    xl = Embedding({"clip_l": golden.vectors(1, 768, 1), "clip_g": golden.vectors(1, 1280, 2)}, name="xl")
    out = png_fmt.write_png_card(xl, tmp_path / "xl.png", draw_data=False)
    _expect(read_embedding(out), xl.vectors)
    with pytest.raises(EmbeddingFileError, match="exists"):
        png_fmt.write_png_card(xl, tmp_path / "xl.png")


def test_nan_vectors_are_read_and_reported(tmp_path):
    vec = golden.vectors(3, 768)
    vec[1, 5] = float("nan")
    vec[2, 7] = float("inf")
    emb = read_embedding(golden.kohya_safetensors(tmp_path / "nan.safetensors", vec))
    report = inspect_report(emb)
    stats = report["stats"]["clip_l"]
    assert stats["nan"] == 1 and stats["inf"] == 1
    assert stats["norms"][0] is not None and stats["norms"][1] is None and stats["norms"][2] is None
    assert report["warnings"] and "NaN" in report["warnings"][0]
    json.dumps(report, allow_nan=False)


def test_read_header_does_not_read_tensor_data(tmp_path, monkeypatch):
    path = golden.sdxl_safetensors(tmp_path / "xl.safetensors")

    def boom(*a, **k):
        raise AssertionError("tensor data was read")

    monkeypatch.setattr(safetensors_fmt, "read_tensor", boom)
    header = read_header(path)
    assert header["encoders"] == {"clip_l": [2, 768], "clip_g": [2, 1280]}
    assert header["family"] == "sdxl" and header["dtypes"] == {"clip_l": "float32", "clip_g": "float32"}


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("layout", ["zip", "legacy", "pickle"])
def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path, layout):
    marker = tmp_path / "pwned"
    path = golden.malicious_pt(tmp_path / f"evil_{layout}.pt", marker, layout=layout)
    with pytest.raises(EmbeddingFileError) as info:
        read_embedding(path)
    assert "refused" in str(info.value) and path.name in str(info.value)
    assert not marker.exists()
    with pytest.raises(EmbeddingFileError):
        read_header(path)
    assert not marker.exists()


def _truncations(data: bytes):
    return sorted({1, 8, 9, 20, len(data) // 4, len(data) // 2, len(data) - 40, len(data) - 1})


@pytest.mark.parametrize("label", LABELS)
def test_truncated_files_fail_cleanly(goldens, tmp_path, label):
    data = goldens[label][0].read_bytes()
    for cut in _truncations(data):
        path = tmp_path / f"cut{cut}"
        path.write_bytes(data[:cut])
        with pytest.raises(EmbeddingFileError) as info:
            read_embedding(path)
        assert path.name in str(info.value)


@pytest.mark.parametrize("seed", range(5))
def test_garbage_fails_cleanly(tmp_path, seed):
    rng = np.random.default_rng(seed)
    for head in (b"", b"PK\x03\x04", b"\x89PNG\r\n\x1a\n", b"\x80\x02", struct.pack("<Q", 30) + b"{"):
        path = tmp_path / "garbage.bin"
        path.write_bytes(head + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        with pytest.raises(EmbeddingFileError, match="garbage.bin"):
            read_embedding(path)


def test_empty_missing_and_folder(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(EmbeddingFileError, match="empty"):
        read_embedding(tmp_path / "empty.pt")
    with pytest.raises(EmbeddingFileError, match="not found"):
        read_embedding(tmp_path / "missing.pt")
    with pytest.raises(EmbeddingFileError, match="folder"):
        read_embedding(tmp_path)


def test_oversized_pickle_is_refused_without_reading(tmp_path):
    path = tmp_path / "huge.pt"
    with open(path, "wb") as fh:
        fh.write(b"PK\x03\x04")
        fh.truncate(limits.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(EmbeddingFileError, match="refused above"):
        read_embedding(path)


def test_safetensors_header_bounds(tmp_path):
    huge = golden.safetensors_raw(tmp_path / "hdr.safetensors", {}, header_len=limits.MAX_SAFETENSORS_HEADER + 1)
    with pytest.raises(EmbeddingFileError, match="header claims"):
        read_header(huge)
    short = golden.safetensors_raw(tmp_path / "short.safetensors", {}, header_len=5000)
    with pytest.raises(EmbeddingFileError, match="truncated"):
        read_embedding(short)
    beyond = golden.safetensors_raw(
        tmp_path / "beyond.safetensors",
        {"emb_params": {"dtype": "F32", "shape": [1000, 768], "data_offsets": [0, 1000 * 768 * 4]}}, b"\0" * 64)
    with pytest.raises(EmbeddingFileError, match="beyond the end"):
        read_header(beyond)
    mismatch = golden.safetensors_raw(
        tmp_path / "mismatch.safetensors",
        {"emb_params": {"dtype": "F32", "shape": [2, 768], "data_offsets": [0, 16]}}, b"\0" * 16)
    with pytest.raises(EmbeddingFileError, match="does not match"):
        read_embedding(mismatch)
    not_json = tmp_path / "notjson.safetensors"
    not_json.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(EmbeddingFileError, match="not valid JSON"):
        read_embedding(not_json)


def test_oversized_tensor_in_safetensors_is_refused(tmp_path):
    rows = limits.MAX_TENSOR_BYTES // (768 * 4) + 1
    path = golden.safetensors_raw(
        tmp_path / "big.safetensors",
        {"emb_params": {"dtype": "F32", "shape": [rows, 768], "data_offsets": [0, rows * 768 * 4]}})
    with open(path, "ab") as fh:
        fh.truncate(path.stat().st_size + rows * 768 * 4)
    with pytest.raises(EmbeddingFileError, match="too large"):
        read_embedding(path)


def _bomb(size=limits.MAX_DECOMPRESSED_BYTES + 1024 * 1024) -> bytes:
    comp = zlib.compressobj(9)
    chunk = b"\0" * (1024 * 1024)
    out = [comp.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(out) + comp.flush()


def test_zlib_bombs_are_capped(tmp_path):
    bomb = _bomb()
    ztxt = golden.png_with_chunk(tmp_path / "ztxt.png", b"zTXt", b"sd-ti-embedding\0\0" + bomb)
    with pytest.raises(EmbeddingFileError, match="refused"):
        read_embedding(ztxt)
    drawn = golden.png_drawn(tmp_path / "drawn_bomb.png", payload=bomb, image=golden.picture(64, 512))
    with pytest.raises(EmbeddingFileError, match="refused"):
        read_embedding(drawn)


@pytest.mark.parametrize("tensor_json", [
    [[1.0, 2.0], [3.0]],          # ragged
    [["a", "b"]],                 # not numbers
    [[True, False]],              # booleans are not numbers here
    [],                           # empty
    [[[1.0]]],                    # 3-D
    "text",
])
def test_png_json_tensors_are_validated(tmp_path, tensor_json):
    payload = base64.b64encode(json.dumps({"string_to_param": {"*": {"TORCHTENSOR": tensor_json}}}).encode())
    path = golden.png_with_chunk(tmp_path / "bad.png", b"tEXt", b"sd-ti-embedding\0" + payload)
    with pytest.raises(EmbeddingFileError, match="bad.png"):
        read_embedding(path)


def test_png_deep_json_and_bad_base64(tmp_path):
    deep = base64.b64encode(b"[" * 100_000 + b"]" * 100_000)
    path = golden.png_with_chunk(tmp_path / "deep.png", b"tEXt", b"sd-ti-embedding\0" + deep)
    with pytest.raises(EmbeddingFileError, match="JSON"):
        read_embedding(path)
    path = golden.png_with_chunk(tmp_path / "b64.png", b"tEXt", b"sd-ti-embedding\0" + b"!!!not base64")
    with pytest.raises(EmbeddingFileError):
        read_embedding(path)


def test_png_without_embedding_and_bad_crc(tmp_path):
    plain = tmp_path / "plain.png"
    golden.picture().save(plain)
    with pytest.raises(EmbeddingFileError, match="holds no embedding"):
        read_embedding(plain)
    raw = bytearray(golden.png_text(tmp_path / "t.png", golden.a1111_dict(golden.vectors())).read_bytes())
    at = raw.index(b"tEXt") + 30
    raw[at] ^= 0xFF
    broken = tmp_path / "crc.png"
    broken.write_bytes(bytes(raw))
    with pytest.raises(EmbeddingFileError, match="checksum"):
        read_embedding(broken)


def test_huge_png_is_not_scanned(tmp_path):
    img = Image.new("RGB", (4097, 4097))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    path = tmp_path / "big.png"
    path.write_bytes(buf.getvalue())
    with pytest.raises(EmbeddingFileError, match="too large to scan"):
        read_embedding(path)


def test_header_for_non_safetensors_matches_full_read(goldens):
    for label in ("a1111_zip", "png_text", "diffusers_bin"):
        path = goldens[label][0]
        assert read_header(path)["encoders"] == read_embedding(path).shapes()


def test_every_error_names_the_file(tmp_path):
    path = Path(tmp_path / "x.unknown")
    path.write_bytes(b"hello world, not an embedding")
    with pytest.raises(EmbeddingFileError) as info:
        read_embedding(path)
    assert info.value.path == str(path) and "not recognised" in info.value.reason


def test_pickled_tensors_must_be_dense_float_and_bounded(tmp_path, monkeypatch):
    import tokensmith.formats as formats

    sparse = golden.torch_file(tmp_path / "sparse.pt", golden.a1111_dict(torch.eye(2, 768).to_sparse()))
    with pytest.raises(EmbeddingFileError, match="dense floating-point"):
        read_embedding(sparse)
    ints = golden.torch_file(tmp_path / "ints.pt", {"emb_params": torch.zeros(2, 768, dtype=torch.int64)})
    with pytest.raises(EmbeddingFileError, match="dense floating-point"):
        read_embedding(ints)
    big = golden.a1111_pt(tmp_path / "big.pt", golden.vectors(4, 768))
    monkeypatch.setattr(formats, "MAX_TENSOR_BYTES", 4 * 768 * 4 - 1)
    with pytest.raises(EmbeddingFileError, match="too large"):
        read_embedding(big)


@pytest.mark.parametrize("header_bytes", [640, 896, 1152, 1408, 65536 + 640, 1024])
def test_safetensors_whose_header_length_looks_like_a_pickle_opcode(tmp_path, header_bytes):
    """A safetensors header of 640, 896, 1152 or 1408 bytes (+ k * 65536) starts the file with 0x80
    0x02..0x05, a pickle's protocol opcode: it is still read as safetensors (it was refused as a
    pickle; TokenSmith's own files, with their training metadata, reach such lengths). 1024 is the
    control."""
    data = (torch.arange(768, dtype=torch.float32) / 768).reshape(1, 768)
    header = json.dumps({"emb_params": {"dtype": "F32", "shape": [1, 768], "data_offsets": [0, 768 * 4]}}).encode()
    header += b" " * (header_bytes - len(header))  # the format pads its header with spaces
    path = tmp_path / "padded.safetensors"
    path.write_bytes(struct.pack("<Q", header_bytes) + header + data.numpy().tobytes())
    assert (path.read_bytes()[0] == 0x80) == (header_bytes % 256 == 0x80)
    assert torch.equal(read_embedding(path).vectors["clip_l"], data)
