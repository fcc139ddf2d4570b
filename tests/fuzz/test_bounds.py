"""Hand-made hostile files at the size limits: each is refused with a TokenSmithError, in bounded
memory (peak resident growth for the one read, measured through /proc/self/clear_refs). No test here
bounds a duration: read times are figures for bench/.

The cases for bugs this suite once found in tokensmith/formats (zip and PNG bombs, header size, NUL
paths) stay here as regression tests.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from devkit.fuzzing.formats import build_png, zlib_bomb
from devkit.fuzzing.pickles import build_zip, legacy_stream, zip_entries
from devkit.fuzzing.runner import MEMORY_BOUND_MB, PeakMeter
from tests.core import golden
from tests.needs import missing
from tokensmith.errors import EmbeddingFileError, TokenSmithError
from tokensmith.formats import limits, read_embedding, read_header
from tokensmith.names import safe_join


@pytest.fixture(scope="module")
def meter():
    m = PeakMeter()
    if not m.per_case:
        missing("this kernel does not let a process reset its peak memory (/proc/self/clear_refs)")
    return m


def refused_within_bounds(meter, path, *, reader=read_embedding, match: str | None = None) -> float:
    """Read ``path``; it must be refused (with ``match`` in the message) within MEMORY_BOUND_MB of peak
    resident growth. Returns the MB. (No wall-clock bound: a duration depends on the machine's load;
    the read times are figures for bench/, not assertions.)"""
    start = meter.start()
    with pytest.raises(TokenSmithError, match=match):
        reader(path)
    growth = meter.growth(start)
    assert growth < MEMORY_BOUND_MB, f"{path.name}: reading it took {growth:.0f} MB (bound {MEMORY_BOUND_MB} MB)"
    return growth


# ----------------------------------------------------------------------------- bounds that hold


def test_compressed_text_chunk_bombs_stop_at_the_cap(tmp_path, meter):
    bomb = zlib_bomb(limits.MAX_DECOMPRESSED_BYTES * 4)  # 128 MiB of zeros in ~130 KB
    for ctype, head in ((b"zTXt", b"sd-ti-embedding\0\0"), (b"iTXt", b"sd-ti-embedding\0\x01\x00\0\0")):
        path = golden.png_with_chunk(tmp_path / f"{ctype.decode()}.png", ctype, head + bomb)
        assert path.stat().st_size < 200_000
        refused_within_bounds(meter, path)


def test_drawn_payload_bomb_stops_at_the_cap(tmp_path, meter):
    path = golden.png_drawn(tmp_path / "drawn_bomb.png", payload=zlib_bomb(64 << 20), image=golden.picture(32, 256))
    refused_within_bounds(meter, path)


def test_image_too_large_to_scan_is_not_decoded(tmp_path, meter):
    # IHDR claims 40000 x 40000 pixels; the pixel data is a few bytes: must be refused without decoding
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    raw = build_png([(b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\0" * 100)), (b"IEND", b"")])
    path = tmp_path / "huge.png"
    path.write_bytes(raw)
    refused_within_bounds(meter, path)


def test_black_picture_at_the_scan_limit(tmp_path, meter):
    # the largest picture that is scanned (4096 x 4096), all black: nothing to find, memory bounded
    side = int(limits.MAX_DRAWN_PIXELS ** 0.5)
    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, format="PNG", compress_level=9)
    path = tmp_path / "black.png"
    path.write_bytes(buf.getvalue())
    refused_within_bounds(meter, path)


def test_safetensors_claims_are_checked_before_reading(tmp_path, meter):
    cases = {
        "terabyte_shape": {"emb_params": {"dtype": "F32", "shape": [2**40, 768], "data_offsets": [0, 2**40 * 768 * 4]}},
        "overflowing_shape": {"emb_params": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]}},
        "offsets_past_end": {"emb_params": {"dtype": "F32", "shape": [1, 768], "data_offsets": [2**62, 2**62 + 3072]}},
        "reversed_offsets": {"emb_params": {"dtype": "F32", "shape": [0, 768], "data_offsets": [10, 0]}},
    }
    for label, header in cases.items():
        path = golden.safetensors_raw(tmp_path / f"{label}.safetensors", header, b"\0" * 64)
        refused_within_bounds(meter, path)
        refused_within_bounds(meter, path, reader=read_header)
    lie = golden.safetensors_raw(tmp_path / "length_lie.safetensors", {}, header_len=2**63)
    refused_within_bounds(meter, lie, reader=read_header)


def test_deep_nesting_is_refused(tmp_path, meter):
    deep = b"[" * 200_000 + b"]" * 200_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(deep) + 2) + b"{" + deep[:-1] + b"}")
    refused_within_bounds(meter, path)
    doc = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
    png = golden.png_with_chunk(tmp_path / "deep.png", b"tEXt", b"sd-ti-embedding\0" + base64.b64encode(doc))
    refused_within_bounds(meter, png)


def test_pickle_size_claims_do_not_allocate(tmp_path, meter):
    # legacy layout: the pickle claims 2**31 elements for a storage of 1536
    raw = golden.a1111_pt(tmp_path / "l.pt", legacy=True).read_bytes()
    assert raw.count(b"M\x00\x06") >= 1  # BININT2 1536 = 2 x 768, the storage size
    (tmp_path / "legacy_numel.pt").write_bytes(raw.replace(b"M\x00\x06", b"J" + struct.pack("<i", 2**31 - 1), 1))
    refused_within_bounds(meter, tmp_path / "legacy_numel.pt")
    # zip layout: the central directory claims a 4 GiB storage record
    data = bytearray(golden.a1111_pt(tmp_path / "z.pt").read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + name_len]).endswith(b"data/0"):
            struct.pack_into("<I", data, pos + 24, 0xFFFFFFF0)
        pos = data.find(b"PK\x01\x02", pos + 4)
    (tmp_path / "zip_size.pt").write_bytes(bytes(data))
    refused_within_bounds(meter, tmp_path / "zip_size.pt")
    # a tensor whose shape asks far more than its storage holds
    entries = zip_entries(golden.a1111_pt(tmp_path / "s.pt").read_bytes())
    patched = [(n, d.replace(b"K\x02M\x00\x03", b"J" + struct.pack("<i", 2**30) + b"M\x00\x03")
                if n.endswith("data.pkl") else d) for n, d in entries]
    (tmp_path / "shape_lie.pt").write_bytes(build_zip(patched))
    refused_within_bounds(meter, tmp_path / "shape_lie.pt")


def test_big_but_legal_json_tensor(tmp_path, meter):
    # 75 x 4096 numbers, the largest real embedding, as a PNG text chunk: read, within bounds
    obj = {"clip_l": {"TORCHTENSOR": [[0.001] * 768] * 75}}
    png = golden.png_with_chunk(tmp_path / "big_ok.png", b"tEXt",
                                b"sd-ti-embedding\0" + base64.b64encode(json.dumps(obj).encode()))
    start = meter.start()
    emb = read_embedding(png)
    assert emb.shapes() == {"clip_l": [75, 768]}
    assert meter.growth(start) < MEMORY_BOUND_MB


# ----------------------------------------------------------------------------- bugs found here


def _zip_pt_with_deflated_storage(path, inflated_bytes: int) -> None:
    """A .pt whose one storage record is deflated: small on disk, ``inflated_bytes`` once read."""
    rows = inflated_bytes // (768 * 4)
    buf = io.BytesIO()
    torch.save({"emb_params": torch.zeros(2, 768)}, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, payload in zip_entries(buf.getvalue()):
            if name.endswith("data.pkl"):
                # shape (2, 768) -> (rows, 768) and numel 1536 -> rows * 768
                payload = payload.replace(b"M\x00\x06", b"J" + struct.pack("<i", rows * 768))
                payload = payload.replace(b"K\x02M\x00\x03", b"J" + struct.pack("<i", rows) + b"M\x00\x03")
                zf.writestr(name, payload)
            elif name.endswith("/data/0"):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as fh:
                    chunk = b"\0" * (16 << 20)
                    for _ in range(inflated_bytes // len(chunk)):
                        fh.write(chunk)
            else:
                zf.writestr(name, payload)
    path.write_bytes(out.getvalue())


def test_zip_pt_deflate_bomb_is_refused_in_bounded_memory(tmp_path, meter):
    path = tmp_path / "bomb.pt"
    _zip_pt_with_deflated_storage(path, 512 << 20)
    assert path.stat().st_size < 2_000_000
    refused_within_bounds(meter, path, match="too large|compressed|record")


def test_wide_drawn_strips_stay_in_bounded_memory(tmp_path, meter):
    side = int(limits.MAX_DRAWN_PIXELS ** 0.5)
    arr = np.full((side, side, 3), 200, np.uint8)
    arr[:, side // 2 - 1] = 0
    arr[:, side // 2] = 0  # strips of equal width left and right of two black columns
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=9)
    path = tmp_path / "strips.png"
    path.write_bytes(buf.getvalue())
    assert path.stat().st_size < 200_000
    refused_within_bounds(meter, path)


def test_json_number_flood_stays_in_bounded_memory(tmp_path, meter):
    # as many numbers as fit under the 32 MiB cap on the decompressed (base64) text
    numbers = b"[" + b"0.0," * (6 * 1024 * 1024 - 64) + b"0.0]"
    doc = b'{"string_to_param": {"*": {"TORCHTENSOR": ' + numbers + b"}}}"
    payload = base64.b64encode(doc)
    assert len(payload) <= limits.MAX_DECOMPRESSED_BYTES
    path = golden.png_with_chunk(tmp_path / "flood.png", b"zTXt", b"sd-ti-embedding\0\0" + zlib.compress(payload, 9))
    assert path.stat().st_size < 200_000
    refused_within_bounds(meter, path, match="numbers")


@pytest.mark.slow
def test_huge_safetensors_header_stays_in_bounded_memory(tmp_path, meter):
    entry = b'{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    count = 40_000_000 // (len(entry) + 12)
    raw = b"{" + b",".join(b'"k%d":' % i + entry for i in range(count)) + b"}"
    path = tmp_path / "many.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    del raw
    refused_within_bounds(meter, path, reader=read_header)


def test_unrepresentable_paths_get_the_clear_error(tmp_path):
    calls = {
        "read_embedding": lambda name: read_embedding(tmp_path / name),
        "read_header": lambda name: read_header(tmp_path / name),
        "safe_join": lambda name: safe_join(tmp_path, name),
    }
    escaped = []
    for bad in ("a\0b.safetensors", "\ud800.pt"):
        for label, call in calls.items():
            try:
                call(bad)
            except TokenSmithError:
                continue
            except Exception as exc:  # collected: the test fails on the list below
                escaped.append(f"{label}({bad!r}): {type(exc).__name__}: {exc}")
            else:
                escaped.append(f"{label}({bad!r}): no error at all")
    assert not escaped, escaped


def test_hostile_legacy_records_are_refused(tmp_path):
    # the legacy layout reads several pickles in turn; a hostile one in any place is refused
    evil = b"\x80\x02cposix\nsystem\n(Vtouch " + str(tmp_path / "ran").encode() + b"\ntR."
    for where in ("magic", "protocol", "sys_info", "object", "keys"):
        path = tmp_path / f"legacy_{where}.pt"
        path.write_bytes(legacy_stream(evil, where=where))
        with pytest.raises(EmbeddingFileError):
            read_embedding(path)
    assert not (tmp_path / "ran").exists()
