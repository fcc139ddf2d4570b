"""Reading A1111 PNG embeddings held word for word: the chunk walk and its refusals, which text chunk
is taken (tEXt, zTXt, iTXt), the base64 and JSON checks with their limits, the TORCHTENSOR lists, and
the drawn data (black-border crop, the strips, block-wise decoding and its refusals)."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from tests.core import golden
from tokensmith.embedding import Embedding
from tokensmith.errors import EmbeddingFileError, TokenSmithError
from tokensmith.formats import png_fmt, read_embedding
from tokensmith.formats.limits import MAX_DECOMPRESSED_BYTES, MAX_JSON_BYTES, MAX_JSON_NUMBERS

P = "card.png"


def refused(message: str, path: str = P, error=EmbeddingFileError):
    return pytest.raises(error, match=f"^{re.escape(f'{path}: {message}' if path else message)}$")


def chunk(ctype: bytes, payload: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(ctype + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def plain_png(w: int = 4, h: int = 3) -> bytes:
    buf = io.BytesIO()
    golden.picture(w, h).save(buf, format="PNG")
    return buf.getvalue()


def with_chunks(*chunks: bytes, base: bytes | None = None) -> bytes:
    raw = plain_png() if base is None else base
    iend = raw.rindex(b"IEND") - 4
    return raw[:iend] + b"".join(chunks) + raw[iend:]


MAGIC = b"\x89PNG\r\n\x1a\n"
IEND = chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- the chunk walk

def test_chunks_are_walked_in_order_up_to_iend_and_bytes_after_it_ignored():
    data = MAGIC + chunk(b"IHDR", b"abc") + chunk(b"tEXt", b"k\0v") + IEND + b"trailing junk"
    assert list(png_fmt.iter_chunks(data, P)) == [(b"IHDR", b"abc"), (b"tEXt", b"k\0v"), (b"IEND", b"")]
    assert list(png_fmt.iter_chunks(MAGIC + IEND, P)) == [(b"IEND", b"")]


@pytest.mark.parametrize("data, message", [
    (b"GIF89a" + b"\0" * 20, "not a PNG file"),
    (MAGIC[:-1], "not a PNG file"),
    (MAGIC + b"\0\0\0\0IEN", "PNG is truncated (incomplete chunk header)"),
    (MAGIC + chunk(b"IHDR", b"abc")[:-1], "PNG is truncated (chunk b'IHDR' runs past the end of the file)"),
    (MAGIC + struct.pack(">I", 2 ** 32 - 1) + b"IDAT" + b"\0" * 8,
     "PNG is truncated (chunk b'IDAT' runs past the end of the file)"),
    (MAGIC + chunk(b"tEXt", b"k\0v", crc=zlib.crc32(b"tEXtk\0v") ^ 1) + IEND,
     "PNG is damaged (bad checksum in chunk b'tEXt')"),
    (MAGIC + chunk(b"IHDR", b"abc"), "PNG is truncated (no IEND chunk)"),
    (MAGIC, "PNG is truncated (no IEND chunk)"),
])
def test_chunk_walk_refusals_word_for_word(data, message):
    with refused(message):
        list(png_fmt.iter_chunks(data, P))


def test_a_chunk_that_ends_exactly_at_the_end_of_the_file_is_whole():
    data = MAGIC + chunk(b"IHDR", b"x" * 13) + IEND
    assert [c for c, _ in png_fmt.iter_chunks(data, P)] == [b"IHDR", b"IEND"]
    with refused("PNG is truncated (chunk b'IEND' runs past the end of the file)"):
        list(png_fmt.iter_chunks(data[:-1], P))


# ----------------------------------------------------------------------------- which text is found

def test_find_text_takes_the_first_chunk_with_the_key_of_any_text_kind():
    data = with_chunks(chunk(b"tEXt", b"other\0nope"), chunk(b"tEXt", b"sd-ti-embedding\0first"),
                       chunk(b"tEXt", b"sd-ti-embedding\0second"))
    assert png_fmt.find_text(data, P) == b"first"
    assert png_fmt.find_text(data, P, key="other") == b"nope"
    assert png_fmt.find_text(data, P, key="missing") is None
    z = with_chunks(chunk(b"zTXt", b"sd-ti-embedding\0\0" + zlib.compress(b"zipped")))
    assert png_fmt.find_text(z, P) == b"zipped"
    i_plain = with_chunks(chunk(b"iTXt", b"sd-ti-embedding\0\0\0en\0translated\0plain text"))
    assert png_fmt.find_text(i_plain, P) == b"plain text"
    i_zip = with_chunks(chunk(b"iTXt", b"sd-ti-embedding\0\1\0\0\0" + zlib.compress(b"zipped itxt")))
    assert png_fmt.find_text(i_zip, P) == b"zipped itxt"
    # a text value may itself hold NUL bytes: only the first separates the key
    assert png_fmt.find_text(with_chunks(chunk(b"tEXt", b"sd-ti-embedding\0a\0b")), P) == b"a\0b"


@pytest.mark.parametrize("extra", [
    chunk(b"tEXt", b"sd-ti-embedding"),            # no separator: not a keyword
    chunk(b"tEXt", b"sd-ti-embeddingX\0value"),    # another key
    chunk(b"tEXt", b"SD-TI-EMBEDDING\0value"),     # keys are case-sensitive
    chunk(b"teXt", b"sd-ti-embedding\0value"),     # not a text chunk type
    chunk(b"prIV", b"sd-ti-embedding\0value"),
])
def test_find_text_ignores_what_is_not_the_key_in_a_text_chunk(extra):
    assert png_fmt.find_text(with_chunks(extra), P) is None


def test_find_text_walks_the_whole_file_even_after_the_key():
    data = with_chunks(chunk(b"tEXt", b"sd-ti-embedding\0v"), chunk(b"zzZz", b"x", crc=0))
    with refused("PNG is damaged (bad checksum in chunk b'zzZz')"):
        png_fmt.find_text(data, P)


@pytest.mark.parametrize("payload, message", [
    (b"sd-ti-embedding\0", "zTXt chunk uses an unknown compression method"),
    (b"sd-ti-embedding\0\1" + zlib.compress(b"x"), "zTXt chunk uses an unknown compression method"),
    (b"sd-ti-embedding\0\0not zlib", "zTXt chunk is not valid zlib data (Error -3 while decompressing data: "
                                     "incorrect header check)"),
    (b"sd-ti-embedding\0\0" + zlib.compress(b"x" * 100)[:-3], "zTXt chunk is truncated (zlib stream does not end)"),
])
def test_ztxt_refusals(payload, message):
    with refused(message):
        png_fmt.find_text(with_chunks(chunk(b"zTXt", payload)), P)


@pytest.mark.parametrize("payload, message", [
    (b"sd-ti-embedding\0", "iTXt chunk is truncated"),
    (b"sd-ti-embedding\0\1", "iTXt chunk is truncated"),
    (b"sd-ti-embedding\0\0\0en", "iTXt chunk is malformed"),
    (b"sd-ti-embedding\0\0\0en\0tr", "iTXt chunk is malformed"),
    (b"sd-ti-embedding\0\1\1\0\0" + zlib.compress(b"x"), "iTXt chunk uses an unknown compression method"),
    (b"sd-ti-embedding\0\1\0\0\0garbage", "iTXt chunk is not valid zlib data (Error -3 while decompressing "
                                          "data: incorrect header check)"),
])
def test_itxt_refusals(payload, message):
    with refused(message):
        png_fmt.find_text(with_chunks(chunk(b"iTXt", payload)), P)


def test_an_uncompressed_itxt_ignores_its_method_byte():
    data = with_chunks(chunk(b"iTXt", b"sd-ti-embedding\0\0\7\0\0kept"))
    assert png_fmt.find_text(data, P) == b"kept"


def test_zlib_trailing_bytes_are_ignored_and_the_decompressed_cap_is_exact():
    assert png_fmt._decompress(zlib.compress(b"hello") + b"tail", P, "zTXt chunk") == b"hello"
    exact = zlib.compress(b"\0" * (MAX_DECOMPRESSED_BYTES - 1), 9)
    assert len(png_fmt._decompress(exact, P, "zTXt chunk")) == MAX_DECOMPRESSED_BYTES - 1
    over = zlib.compress(b"\0" * (MAX_DECOMPRESSED_BYTES + 1), 9)
    with refused(f"iTXt chunk decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refused"):
        png_fmt._decompress(over, P, "iTXt chunk")


# ----------------------------------------------------------------------------- base64, JSON, tensors

def test_text_payload_size_limit_and_base64():
    limit = MAX_JSON_BYTES * 4 // 3 + 16
    with refused(f"'sd-ti-embedding' text is {limit + 1} bytes; too large"):
        png_fmt.decode_text_payload(b"A" * (limit + 1), P)
    # at the limit it is decoded, and the decoded JSON is what is then too large
    with refused(f"embedding JSON is {limit // 4 * 3} bytes (limit {MAX_JSON_BYTES})"):
        png_fmt.decode_text_payload(b"A" * (limit // 4 * 4), P)
    with refused("'sd-ti-embedding' text is not valid base64"):
        png_fmt.decode_text_payload(b"!!!not base64", P)
    # exactly at the limit (not a whole number of base64 quads): decoded, and the padding is wrong
    with refused("'sd-ti-embedding' text is not valid base64"):
        png_fmt.decode_text_payload(b"A" * limit, P)
    raw = base64.b64encode(b'{"a": {"TORCHTENSOR": [1, 2.5]}}')
    out = png_fmt.decode_text_payload(raw, P)
    assert list(out) == ["a"] and torch.equal(out["a"], torch.tensor([1.0, 2.5]))


def test_json_limits_word_for_word():
    with refused(f"embedding JSON is {MAX_JSON_BYTES + 1} bytes (limit {MAX_JSON_BYTES})"):
        png_fmt.parse_embedding_json(b" " * (MAX_JSON_BYTES + 1), P)
    with refused(f"embedding JSON holds about {MAX_JSON_NUMBERS} numbers (limit {MAX_JSON_NUMBERS}); too many "
                 "for an embedding"):
        png_fmt.parse_embedding_json(b"[" + b"0," * MAX_JSON_NUMBERS + b"0]", P)
    # one separator fewer is parsed (and then is not an object of tensors, which is not this check's business)
    below = png_fmt.parse_embedding_json(b"[" + b"0," * (MAX_JSON_NUMBERS - 1) + b"0]", P)
    assert len(below) == MAX_JSON_NUMBERS and below[:2] == [0, 0]
    # the limit itself is read: a document of exactly MAX_JSON_BYTES passes on to the parser
    exact = b'"' + b"a" * (MAX_JSON_BYTES - 2) + b'"'
    assert len(png_fmt.parse_embedding_json(exact, P)) == MAX_JSON_BYTES - 2


@pytest.mark.parametrize("text, kind", [(b"{{{", "JSONDecodeError"), (b"\xff\xfe", "UnicodeDecodeError"),
                                        (b"[" * 100_000 + b"]" * 100_000, "RecursionError"), (b"", "JSONDecodeError")])
def test_json_that_does_not_parse_names_why(text, kind):
    with refused(f"embedding data is not valid JSON ({kind})"):
        png_fmt.parse_embedding_json(text, P)


BAD = "a TORCHTENSOR value in the embedding JSON is not a 1-D or rectangular 2-D list of numbers"


@pytest.mark.parametrize("value", [[], "text", 3, None, {"a": 1}, [[]], [[1.0, 2.0], [3.0]], [[1.0], 2.0],
                                   [["a"]], [True], [[1.0], [False]], [1.0, [2.0]], [[[1.0]]], [1, None],
                                   [10 ** 400], [[1.0, 10 ** 400]]])
def test_torchtensor_values_that_are_refused(value):
    with refused(BAD):
        png_fmt.parse_embedding_json(json.dumps({"x": {"TORCHTENSOR": value}}).encode(), P)


def test_torchtensor_values_become_float32_tensors_of_their_shape():
    out = png_fmt.parse_embedding_json(b'{"v": {"TORCHTENSOR": [1, 2.5, -3]}, "m": {"TORCHTENSOR": [[1, 2], [3, 4.5]]},'
                                       b' "n": {"k": {"TORCHTENSOR": [0.1]}}, "s": 7}', P)
    assert out["v"].dtype == torch.float32 and out["v"].shape == (3,) and out["v"].tolist() == [1.0, 2.5, -3.0]
    assert out["m"].shape == (2, 2) and out["m"].tolist() == [[1.0, 2.0], [3.0, 4.5]]
    assert out["n"]["k"].dtype == torch.float32 and torch.equal(out["n"]["k"], torch.tensor([0.1]))
    assert out["s"] == 7


def test_a_tensor_over_the_number_limit_is_refused_with_its_count():
    rows = [[0.0] * 1024 for _ in range(MAX_JSON_NUMBERS // 1024)]
    assert png_fmt._nested_to_tensor(rows, P).shape == (MAX_JSON_NUMBERS // 1024, 1024)
    with refused(f"a tensor in the embedding JSON has {MAX_JSON_NUMBERS + 1024} numbers (limit {MAX_JSON_NUMBERS})"):
        png_fmt._nested_to_tensor(rows + [[0.0] * 1024], P)
    with refused(f"a tensor in the embedding JSON has {MAX_JSON_NUMBERS + 1} numbers (limit {MAX_JSON_NUMBERS})"):
        png_fmt._nested_to_tensor([0] * (MAX_JSON_NUMBERS + 1), P)
    assert png_fmt._nested_to_tensor([0] * MAX_JSON_NUMBERS, P).shape == (MAX_JSON_NUMBERS,)


# ----------------------------------------------------------------------------- the JSON a card stores

def test_embedding_json_bytes_word_for_word():
    emb = Embedding({"clip_l": torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float16)}, name="n", step=3,
                    metadata={"sd_checkpoint": "abc", "other": "dropped"})
    assert png_fmt.embedding_json_bytes(emb) == (
        b'{"string_to_token": {"*": 265}, "string_to_param": {"*": {"TORCHTENSOR": [[0.5, -1.0], [2.0, 0.25]]}}, '
        b'"name": "n", "step": 3, "sd_checkpoint": "abc", "sd_checkpoint_name": null}')
    xl = Embedding({"clip_g": torch.tensor([[1.5]]), "clip_l": torch.tensor([[-2.0]])}, name="xl", step=1,
                   metadata={"sd_checkpoint": "dropped too"})
    assert png_fmt.embedding_json_bytes(xl) == (b'{"clip_l": {"TORCHTENSOR": [[-2.0]]}, '
                                                b'"clip_g": {"TORCHTENSOR": [[1.5]]}}')


def test_embedding_json_object_refuses_other_sets_of_encoders():
    two = Embedding({"clip_l": torch.zeros(1, 768), "t5xxl": torch.zeros(1, 4096)})
    with refused("a PNG card holds one encoder's vectors or SDXL's pair; got ['clip_l', 't5xxl']", "", TokenSmithError):
        png_fmt.embedding_json_object(two)
    three = Embedding({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280), "t5xxl": torch.zeros(1, 4096)})
    with refused("a PNG card holds one encoder's vectors or SDXL's pair; got ['clip_l', 'clip_g', 't5xxl']", "",
                 TokenSmithError):
        png_fmt.embedding_json_object(three)
    obj = png_fmt.embedding_json_object(Embedding({"clip_h": torch.ones(2, 1024)}, name="h"))
    assert list(obj) == ["string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"]
    assert obj["string_to_token"] == {"*": 265} and list(obj["string_to_param"]) == ["*"]
    assert torch.equal(obj["string_to_param"]["*"], torch.ones(2, 1024))
    assert (obj["name"], obj["step"], obj["sd_checkpoint"], obj["sd_checkpoint_name"]) == ("h", None, None, None)


def test_a_value_json_cannot_hold_is_refused_naming_its_type():
    with pytest.raises(TypeError, match="^bytes$"):
        png_fmt.embedding_json_bytes(Embedding({"clip_l": torch.zeros(1, 768)}, name=b"raw"))


# ----------------------------------------------------------------------------- the LCG

def test_lcg_stream_in_blocks():
    assert png_fmt.lcg_nibbles(0).tolist() == [] and png_fmt.lcg_nibbles(-3).tolist() == []
    assert png_fmt.lcg_nibbles(1).tolist() == [253 & 15]
    assert png_fmt.lcg_nibbles(5).dtype == np.uint8
    chunks = list(png_fmt._lcg_chunks(20, block=7))
    assert [c.size for c in chunks] == [7, 7, 6] and all(c.dtype == np.uint8 for c in chunks)
    assert np.concatenate(chunks).tolist() == [v & 15 for v in golden.lcg_values(20)]
    assert list(png_fmt._lcg_chunks(0)) == [] and list(png_fmt._lcg_chunks(-1, block=4)) == []
    assert [c.size for c in png_fmt._lcg_chunks(8, block=8)] == [8]
    # the default block is 2^20 values
    assert [c.size for c in png_fmt._lcg_chunks((1 << 20) + 3)] == [1 << 20, 3]
    mul, add = png_fmt._lcg_jumps(5)
    assert mul.dtype == np.uint32 and add.dtype == np.uint32
    assert mul.tolist() == [pow(1664525, k, 2 ** 32) for k in range(1, 6)]
    x = 0
    steps = []
    for _ in range(5):
        x = (1664525 * x + 1013904223) % 2 ** 32
        steps.append(x)
    assert add.tolist() == steps  # from x_0 = 0 the jump's constant is the state itself
    assert png_fmt._lcg_jumps(1)[0].tolist() == [1664525] and png_fmt._lcg_jumps(3)[1].size == 3


# ----------------------------------------------------------------------------- the drawn data

def test_crop_black_keeps_the_box_of_pixels_with_every_channel_lit():
    arr = np.zeros((6, 7, 3), dtype=np.uint8)
    arr[1, 2] = (1, 1, 1)
    arr[4, 5] = (9, 9, 9)
    arr[0, 0] = (5, 5, 0)  # one channel dark: not lit, cropped away
    arr[5, 6] = (0, 7, 7)
    out = png_fmt._crop_black(arr)
    assert out.shape == (4, 4, 3) and np.array_equal(out, arr[1:5, 2:6])
    assert png_fmt._crop_black(np.zeros((3, 3, 3), np.uint8)).shape == (0, 0, 3)
    lit = np.full((2, 3, 3), 4, np.uint8)
    assert np.array_equal(png_fmt._crop_black(lit), lit)


def card_image(payload: bytes, w: int = 5, h: int = 6) -> Image.Image:
    return golden.draw_payload(golden.picture(w, h, seed=8), payload)


def test_extract_drawn_bytes_reads_the_strips_in_any_mode():
    payload = zlib.compress(b"the drawn data", 9)
    image = card_image(payload)
    drawn = png_fmt.extract_drawn_bytes(image, P)
    assert drawn == golden.read_drawn_payload(image) and drawn[:len(payload)] == payload
    assert png_fmt.extract_drawn_bytes(image.convert("RGBA"), P) == drawn
    # black borders around the card are cropped first
    framed = Image.new("RGB", (image.size[0] + 6, image.size[1] + 4))
    framed.paste(image, (3, 2))
    assert png_fmt.extract_drawn_bytes(framed, P) == drawn


def test_no_strips_reads_as_none():
    assert png_fmt.extract_drawn_bytes(golden.picture(8, 8), P) is None  # no black column
    assert png_fmt.extract_drawn_bytes(Image.new("RGB", (5, 5)), P) is None  # all black
    one = np.full((4, 6, 3), 0x33, np.uint8)
    one[:, 2] = 0x10  # one column black in the low nibbles: needs two
    assert png_fmt.extract_drawn_bytes(Image.fromarray(one), P) is None
    first = np.full((4, 6, 3), 0x33, np.uint8)
    first[:, 0] = 0x10  # the first column is black: nothing left of it
    first[:, 4] = 0x20
    assert png_fmt.extract_drawn_bytes(Image.fromarray(first), P) is None
    uneven = np.full((4, 7, 3), 0x33, np.uint8)
    uneven[:, 2] = 0x10  # 2 columns left, 3 right: strips of different sizes
    uneven[:, 3] = 0x10
    assert png_fmt.extract_drawn_bytes(Image.fromarray(uneven), P) is None
    even = np.delete(uneven, 4, axis=1)  # 2 left, 2 right: strips
    lower, upper = png_fmt._drawn_strips(Image.fromarray(even))
    assert np.array_equal(lower, even[:, :2]) and np.array_equal(upper, even[:, 4:])


def test_the_strips_are_split_at_the_first_and_last_black_columns():
    arr = np.full((2, 9, 3), 0x35, np.uint8)
    arr[:, 2] = 0x40  # black (low nibbles 0) but lit
    arr[:, 4] = 0x40  # a black column inside the picture is the picture's
    arr[:, 6] = 0x40
    lower, upper = png_fmt._drawn_strips(Image.fromarray(arr))
    assert np.array_equal(lower, arr[:, :2]) and np.array_equal(upper, arr[:, 7:])


def test_drawn_bytes_come_a_block_of_rows_at_a_time():
    # 3 values a pixel; 2^20 // (175000 * 3) = 1 row a block
    lower = np.full((3, 175_000, 3), 0x21, np.uint8)
    upper = np.full((3, 175_000, 3), 0x34, np.uint8)
    chunks = list(png_fmt._drawn_byte_chunks(lower, upper))
    assert [len(c) for c in chunks] == [525_000] * 3
    key = png_fmt.lcg_nibbles(lower.size)
    assert b"".join(chunks) == ((((4 ^ key) << 4) | (1 ^ key)).astype(np.uint8)).tobytes()
    # wider than a block: still one row at a time
    wide = np.full((2, 350_000, 3), 0x21, np.uint8)
    assert [len(c) for c in png_fmt._drawn_byte_chunks(wide, wide)] == [1_050_000] * 2
    # small strips: 2^20 // (2 * 3) rows a block, so all 5 rows at once
    small = np.full((5, 2, 3), 0x21, np.uint8)
    assert [len(c) for c in png_fmt._drawn_byte_chunks(small, small)] == [30]
    # 100 rows of 4000 pixels: 87 rows a block, then 13
    mid = np.full((100, 4000, 3), 0x21, np.uint8)
    got = list(png_fmt._drawn_byte_chunks(mid, mid))
    assert [len(c) for c in got] == [87 * 12000, 13 * 12000]
    k = png_fmt.lcg_nibbles(mid.size)
    assert b"".join(got) == ((((1 ^ k) << 4) | (1 ^ k)).astype(np.uint8)).tobytes()


def drawn_file(tmp_path, payload: bytes, name: str = "drawn.png", h: int = 6) -> str:
    path = tmp_path / name
    card_image(payload, h=h).save(path, format="PNG")
    return path


def test_drawn_data_refusals_word_for_word(tmp_path):
    path = drawn_file(tmp_path, b"not zlib at all")
    with refused("drawn embedding data is not valid zlib data (Error -3 while decompressing data: incorrect header "
                 "check)", str(path)):
        read_embedding(path)
    # a stored block longer than the strips: the stream never ends
    never = b"\x78\x01\x00" + struct.pack("<HH", 0xFFFF, 0x0000) + b"abc"
    path = drawn_file(tmp_path, never, "never.png")
    with refused("drawn embedding data is truncated (zlib stream does not end)", str(path)):
        read_embedding(path)
    path = drawn_file(tmp_path, zlib.compress(b"[1, 2]"), "list.png")
    with refused("file holds a list, not a dictionary of embedding tensors", str(path)):
        read_embedding(path)


def test_drawn_data_over_the_cap_is_refused_and_at_the_cap_is_read():
    over = zlib.compress(b" " * (MAX_DECOMPRESSED_BYTES + 1), 9)
    image = golden.draw_payload(golden.picture(4, 512), over)
    strips = png_fmt._drawn_strips(image)
    with refused(f"drawn embedding data decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refused"):
        png_fmt._decompress_drawn(png_fmt._drawn_byte_chunks(*strips), P)
    exact = zlib.compress(b" " * MAX_DECOMPRESSED_BYTES, 9)
    strips = png_fmt._drawn_strips(golden.draw_payload(golden.picture(4, 512), exact))
    out = png_fmt._decompress_drawn(png_fmt._drawn_byte_chunks(*strips), P)
    assert len(out) == MAX_DECOMPRESSED_BYTES and out[:1] == b" " and out[-1:] == b" "


def test_decompress_drawn_stops_at_the_end_of_the_stream():
    data = zlib.compress(b"0123456789" * 50)
    parts = [data[:7], data[7:20], data[20:], b"\xff" * 40, b"never read"]
    assert png_fmt._decompress_drawn(iter(parts), P) == b"0123456789" * 50
    assert png_fmt._decompress_drawn(iter([data, b"junk"]), P) == b"0123456789" * 50
    with refused("drawn embedding data is truncated (zlib stream does not end)"):
        png_fmt._decompress_drawn(iter([data[:10], data[10:-2]]), P)
    with refused("drawn embedding data is truncated (zlib stream does not end)"):
        png_fmt._decompress_drawn(iter([]), P)


# ----------------------------------------------------------------------------- load_png and the picture checks

def hand_png(w: int, h: int, idat: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + IEND


def test_a_picture_too_large_to_scan_is_refused_before_decoding():
    no = "PNG holds no embedding: no 'sd-ti-embedding' text chunk and no data drawn beside the picture"
    with refused(f"{no} (image of 4097x4096 is too large to scan)"):
        png_fmt.load_png(hand_png(4097, 4096), P)
    with refused(f"{no} (image of 16777217x1 is too large to scan)"):
        png_fmt.load_png(hand_png(4096 * 4096 + 1, 1), P)
    # at the limit the picture is decoded (this one has no pixel data, so decoding fails)
    with refused("PNG image data cannot be decoded (OSError)"):
        png_fmt.load_png(hand_png(4096, 4096), P)
    with refused("PNG image data cannot be decoded (OSError)"):
        png_fmt.load_png(hand_png(3, 2, zlib.compress(b"\0\1\2")), P)


def test_a_plain_picture_holds_no_embedding():
    with refused("PNG holds no embedding: no 'sd-ti-embedding' text chunk and no data drawn beside the picture"):
        png_fmt.load_png(plain_png(8, 8), P)


def test_load_png_prefers_the_text_chunk_and_names_the_format():
    vec_text, vec_drawn = golden.vectors(2, 768, 1), golden.vectors(3, 768, 2)
    buf = io.BytesIO()
    golden.draw_payload(golden.picture(6, 20), zlib.compress(golden.embedding_json(golden.a1111_dict(vec_drawn,
                                                                                                     name="d")))
                        ).save(buf, format="PNG")
    drawn_only = buf.getvalue()
    text = base64.b64encode(golden.embedding_json(golden.a1111_dict(vec_text, name="t", step=5)))
    both = with_chunks(chunk(b"tEXt", b"sd-ti-embedding\0" + text), base=drawn_only)
    plan, tensors = png_fmt.load_png(both, P)
    assert plan.source_format == "png_text" and plan.step == 5 and plan.keys == {"clip_l": "string_to_param.*"}
    assert torch.equal(tensors["string_to_param.*"], vec_text)
    plan, tensors = png_fmt.load_png(drawn_only, P)
    assert plan.source_format == "png_drawn" and plan.step == 500
    assert plan.metadata["name"] == "d" and torch.equal(tensors["string_to_param.*"], vec_drawn)
    # the name picks nothing in an A1111 dict, and is passed on without harm
    plan, _ = png_fmt.load_png(drawn_only, P, name="other")
    assert plan.source_format == "png_drawn"


def test_a_drawn_sdxl_dict_is_read_by_its_keys(tmp_path):
    l_vec, g_vec = golden.vectors(1, 768, 3), golden.vectors(1, 1280, 4)
    path = golden.png_drawn(tmp_path / "xl.png", {"clip_l": l_vec, "clip_g": g_vec}, image=golden.picture(5, 30))
    emb = read_embedding(path)
    assert emb.source_format == "png_drawn" and emb.family == "sdxl"
    assert torch.equal(emb.vectors["clip_l"], l_vec) and torch.equal(emb.vectors["clip_g"], g_vec)


# ----------------------------------------------------------------------------- edges the first mutation run found

def lcg_state(k: int) -> int:
    """x_k of A1111's generator from x_0 = 0, by composing the affine step k times (square and multiply)."""
    a, c = 1, 0  # the identity map
    step_a, step_c = 1664525, 1013904223
    while k:
        if k & 1:
            a, c = (step_a * a) % 2 ** 32, (step_a * c + step_c) % 2 ** 32
        step_a, step_c = (step_a * step_a) % 2 ** 32, (step_a * step_c + step_c) % 2 ** 32
        k >>= 1
    return c


def test_the_lcg_stream_is_right_across_three_blocks():
    block = 1 << 20
    stream = png_fmt.lcg_nibbles(2 * block + 7)
    assert stream.size == 2 * block + 7
    for start in (0, block - 2, 2 * block - 2, 2 * block + 3):
        x = lcg_state(start)
        want = []
        for _ in range(4):
            x = (1664525 * x + 1013904223) % 2 ** 32
            want.append(x % 255 & 0x0F)
        assert stream[start:start + 4].tolist() == want, start


def stored_zlib(size: int) -> bytes:
    """A zlib stream of ``size`` bytes in stored (uncompressed) blocks, none of them final: it never ends."""
    blocks, left, data = [], size, b"a" * 65535
    while left:
        n = min(65535, left)
        blocks.append(b"\0" + struct.pack("<HH", n, n ^ 0xFFFF) + data[:n])
        left -= n
    return b"\x78\x01" + b"".join(blocks)


def test_a_stream_that_reaches_the_cap_without_ending_is_refused_as_too_large():
    # every input byte is used and the output is exactly the cap: it cannot be told from a longer stream
    with refused(f"zTXt chunk decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refused"):
        png_fmt._decompress(stored_zlib(MAX_DECOMPRESSED_BYTES), P, "zTXt chunk")
    with refused("zTXt chunk is truncated (zlib stream does not end)"):
        png_fmt._decompress(stored_zlib(MAX_DECOMPRESSED_BYTES - 1), P, "zTXt chunk")


def test_an_eight_byte_chunk_header_without_its_checksum_runs_past_the_end():
    with refused("PNG is truncated (chunk b'IEND' runs past the end of the file)"):
        list(png_fmt.iter_chunks(MAGIC + b"\0\0\0\0IEND", P))
    with refused("PNG is truncated (incomplete chunk header)"):
        list(png_fmt.iter_chunks(MAGIC + b"\0\0\0\0IEN", P))


def test_an_itxt_of_flag_and_method_only_is_malformed():
    with refused("iTXt chunk is malformed"):
        png_fmt.find_text(with_chunks(chunk(b"iTXt", b"sd-ti-embedding\0\0\0")), P)
    with refused("iTXt chunk is malformed"):
        png_fmt.find_text(with_chunks(chunk(b"iTXt", b"sd-ti-embedding\0\0\0\0")), P)


def test_black_first_and_last_columns_leave_no_strips():
    arr = np.full((3, 5, 3), 0x33, np.uint8)
    arr[:, 0] = 0x10  # lit, but black in the low nibbles
    arr[:, 4] = 0x20
    assert png_fmt._drawn_strips(Image.fromarray(arr)) is None
    assert png_fmt.extract_drawn_bytes(Image.fromarray(arr), P) is None


def test_extract_drawn_bytes_joins_blocks_of_rows_without_gaps():
    w = 175_000  # 525,000 values a row: one row a block, 3 blocks
    card = np.zeros((3, w + 1 + 2 + 1 + w, 3), np.uint8)
    card[:, :w] = 0x21
    card[:, w + 1:w + 3] = 0x77
    card[:, w + 4:] = 0x34
    drawn = png_fmt.extract_drawn_bytes(Image.fromarray(card), P)
    key = png_fmt.lcg_nibbles(3 * w * 3)
    assert len(drawn) == 3 * w * 3
    assert drawn == ((((4 ^ key) << 4) | (1 ^ key)).astype(np.uint8)).tobytes()


def test_the_path_is_named_when_drawn_json_does_not_parse(tmp_path):
    path = drawn_file(tmp_path, zlib.compress(b"{{{"), "badjson.png")
    with refused("embedding data is not valid JSON (JSONDecodeError)", str(path)):
        read_embedding(path)


def test_a_drawn_or_written_multi_token_dict_is_picked_by_name(tmp_path):
    cat, dog = golden.vectors(1, 768, 1), golden.vectors(2, 768, 2)
    for kind, path in (("drawn", golden.png_drawn(tmp_path / "tokens_d.png", {"<cat>": cat, "<dog>": dog},
                                                   image=golden.picture(4, 20))),
                       ("text", golden.png_text(tmp_path / "tokens_t.png", {"<cat>": cat, "<dog>": dog}))):
        emb = read_embedding(path, name="dog")
        assert torch.equal(emb.vectors["clip_l"], dog) and emb.metadata["token"] == "<dog>", kind
        assert emb.source_format == f"png_{kind}"
        assert torch.equal(read_embedding(path, name="<cat>").vectors["clip_l"], cat)
        with pytest.raises(EmbeddingFileError, match="pass the token as the name$"):
            read_embedding(path)


def zeros_stream(first_mib: int, total_mib: int) -> tuple[bytes, bytes]:
    """A zlib stream of ``total_mib`` MiB of zeros, cut where ``first_mib`` MiB have been flushed out."""
    comp, mib = zlib.compressobj(1), b"\0" * (1 << 20)
    head = b"".join(comp.compress(mib) for _ in range(first_mib)) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = b"".join(comp.compress(mib) for _ in range(total_mib - first_mib)) + comp.flush()
    return head, tail


def test_drawn_decompression_counts_every_block_and_holds_at_most_the_cap_in_memory():
    import tracemalloc

    head, tail = zeros_stream(16, 64)
    assert len(zlib.decompress(head + tail)) == 64 << 20
    tracemalloc.start()
    try:
        with refused(f"drawn embedding data decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refused"):
            png_fmt._decompress_drawn(iter([head, tail]), P)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 16 MiB kept, then at most 16 MiB + 1 more (about 48 MiB at peak while zlib's buffer grows); inflating
    # the second block whole (48 MiB) would peak above 100 MiB
    assert peak < 80 << 20, peak


def test_a_premultiplied_picture_is_drawn_as_its_rgb():
    rgba = Image.fromarray(np.full((3, 4, 4), [100, 150, 200, 128], np.uint8), mode="RGBA")
    premultiplied = rgba.convert("RGBa")
    card = np.asarray(png_fmt.draw_data_strips(premultiplied, b"\x01\x02\x03"))
    assert card[0, 2].tolist() == np.asarray(premultiplied.convert("RGB"))[0, 0].tolist() == [99, 149, 199]
