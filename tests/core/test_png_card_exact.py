"""The PNG card drawing held exactly: the picture made when none is given, the decoration and layout
of the drawn strips (pixel for pixel against a plain loop-by-loop rebuild of A1111's layout), what the
text chunk holds, and that every card reads back to the very tensors it was made from."""

from __future__ import annotations

import base64
import io
import json
import re
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from tests.core import golden
from tokensmith.embedding import Embedding
from tokensmith.errors import EmbeddingFileError, TokenSmithError
from tokensmith.formats import png_fmt, read_embedding, read_embedding_with_header


def exactly(message: str, error=TokenSmithError):
    return pytest.raises(error, match=f"^{re.escape(message)}$")


# ----------------------------------------------------------------------------- plain rebuilds

def plain_shades(style, reverse: bool) -> list[int]:
    """A1111-style decoration shades, one value at a time: 1 + 14 * |v| / max |v| over the first 1024."""
    mags = [abs(float(v)) for v in style][:1024]
    if reverse:
        mags = mags[::-1]
    if not mags:
        return [1]
    top = max(mags)
    return [int(1 + (m / top if top > 0 else 0.0) * 14) for m in mags]


def plain_strips(h: int, payload: bytes, style) -> tuple[np.ndarray, np.ndarray]:
    n = len(payload)
    size = n + (h - n % h)
    size += 3 * h - size % (3 * h)
    width = size // (3 * h)
    rand = golden.lcg_values(size)
    out = []
    for nibble, reverse in ((lambda b: b & 0x0F, False), (lambda b: b >> 4, True)):
        shades = plain_shades(style, reverse)
        strip = np.zeros((h, width, 3), dtype=np.uint8)
        for i in range(size):
            y, rest = divmod(i, width * 3)
            x, c = divmod(rest, 3)
            low = nibble(payload[i % n]) ^ (rand[i] & 0x0F)
            strip[y, x, c] = low | (shades[((x + y) // 4) % len(shades)] << 4)
        out.append(strip)
    return out[0], out[1]


def plain_card(image: Image.Image, payload: bytes, style) -> np.ndarray:
    w, h = image.size
    low, high = plain_strips(h, payload, style)
    sw = low.shape[1]
    card = np.zeros((h, sw + 1 + w + 1 + sw, 3), dtype=np.uint8)
    card[:, :sw] = low
    card[:, sw + 1:sw + 1 + w] = np.asarray(image.convert("RGB"))
    card[:, sw + 2 + w:] = high
    return card


def plain_default_picture(vectors: torch.Tensor) -> np.ndarray:
    flat = [float(v) for v in vectors.flatten()]
    flat = [0.0 if v != v else v for v in flat]
    scale = max(abs(v) for v in flat) or 1.0
    vals = [v / scale * 0.5 + 0.5 for v in flat[:48]]
    vals = [vals[i % len(vals)] for i in range(48)]
    tiles = [[int(min(max(vals[3 * t + c], 0.0), 1.0) * 200 + 30) for c in range(3)] for t in range(16)]
    out = np.zeros((256, 256, 3), dtype=np.uint8)
    for y in range(256):
        for x in range(0, 256, 16):
            out[y, x:x + 16] = tiles[((x // 16) * 3 + (y // 16) * 5) % 16]
    return out


def png_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB"
        return np.asarray(im.convert("RGB")).copy()


# ----------------------------------------------------------------------------- the drawn strips

STYLE = [0.5, -2.0, 1.0, 0.0, 4.0, -0.25]


def test_strips_beside_a_picture_are_laid_out_pixel_for_pixel():
    picture = golden.picture(3, 5, seed=9)
    payload = bytes([0x00, 0xFF, 0x12, 0xA7, 0x3C, 0x81, 0x5E]) + bytes(range(100, 113))
    card = png_fmt.draw_data_strips(picture, payload, np.array(STYLE))
    assert card.mode == "RGB" and card.size == (3 + 2 * 2 + 2, 5)  # 20 bytes pad to 25, then 30 = 5 x 2 x 3
    arr = np.asarray(card)
    assert np.array_equal(arr, plain_card(picture, payload, STYLE))
    # the two separating columns are black, the picture sits between them untouched
    assert not arr[:, 2].any() and not arr[:, 6].any()
    assert np.array_equal(arr[:, 3:6], np.asarray(picture))
    # first pixel, by hand: low nibbles 0 ^ (253 & 15), 0xF ^ (242 & 15), 0x2 ^ (127 & 15); top shade
    # of |0.5| / 4 is 1 + 1.75 -> 2 (the high strip's reversed style starts at |-0.25| -> 1)
    assert arr[0, 0].tolist() == [0x20 | 0x0D, 0x20 | 0x0D, 0x20 | 0x0D]
    assert arr[0, 7].tolist() == [0x10 | (0x0 ^ 0xD), 0x10 | (0xF ^ 0x2), 0x10 | (0x1 ^ 0xF)]


def test_strip_padding_adds_a_step_even_when_the_data_fills_the_rows():
    # 6 bytes at height 2: already a multiple of h and of 3h, A1111 still pads to 6 + 2 = 8, then 12
    picture = golden.picture(2, 2, seed=1)
    payload = bytes(range(1, 7))
    card = png_fmt.draw_data_strips(picture, payload)
    assert card.size == (2 + 2 * 2 + 2, 2)
    assert np.array_equal(np.asarray(card), plain_card(picture, payload, [1.0]))
    # 5 bytes at height 3: 5 -> 6 -> 9, one pixel column per strip
    card = png_fmt.draw_data_strips(golden.picture(4, 3), b"\x10\x20\x30\x40\x50")
    assert card.size == (4 + 2 + 2, 3)


def strips_of(card: np.ndarray) -> np.ndarray:
    """Both strips of a card whose picture is 2 pixels wide, side by side."""
    sw = (card.shape[1] - 2 - 2) // 2
    return np.concatenate([card[:, :sw], card[:, -sw:]], axis=1)


def test_without_a_style_vector_the_decoration_is_the_brightest_shade():
    card = np.asarray(png_fmt.draw_data_strips(golden.picture(2, 4), bytes(range(9))))
    assert card.shape == (4, 2 + 2 * 2 + 2, 3)  # 9 bytes -> 12 -> 24 = 4 x 2 x 3
    assert (strips_of(card) >> 4 == 15).all()
    assert np.array_equal(card, plain_card(golden.picture(2, 4), bytes(range(9)), [1.0]))


@pytest.mark.parametrize("style", [[0.0, 0.0, 0.0], [], [float("inf"), 2.0], [float("nan"), 3.0]])
def test_a_flat_empty_or_non_finite_style_shades_every_strip_pixel_1(style):
    card = np.asarray(png_fmt.draw_data_strips(golden.picture(2, 4), bytes(range(9)), np.array(style)))
    assert (strips_of(card) >> 4 == 1).all()
    plain = plain_card(golden.picture(2, 4), bytes(range(9)), [1.0])
    assert np.array_equal(card & 0x0F, plain & 0x0F)


@pytest.mark.parametrize("style", [[0.0, 0.0, 0.0], []])
def test_a_flat_style_draws_without_a_warning(style):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing (0 / 0) to print on a user's console
        card = np.asarray(png_fmt.draw_data_strips(golden.picture(2, 4), bytes(range(9)), np.array(style)))
    assert (strips_of(card) >> 4 == 1).all()


def test_the_style_reads_the_first_1024_magnitudes_and_the_high_strip_reverses_them():
    style = np.ones(1100)
    style[:5] = [1.0, -8.0, 3.0, 16.0, -5.0]
    style[1019:1024] = [2.0, 4.0, 6.0, -8.0, 16.0]
    style[1024] = 1e6  # past the first 1024: plays no part
    picture = golden.picture(5, 8, seed=4)
    payload = bytes((i * 37) % 256 for i in range(300))
    card = np.asarray(png_fmt.draw_data_strips(picture, payload, style))
    assert card.shape == (8, 13 + 1 + 5 + 1 + 13, 3)  # 300 -> 304 -> 312 = 8 x 13 x 3
    assert np.array_equal(card, plain_card(picture, payload, style))
    again = np.asarray(png_fmt.draw_data_strips(picture, payload, style[:1024]))
    assert np.array_equal(card, again)
    # bands run along the diagonals, 4 pixels wide; shades 1 + 14 |v| / 16
    low, high = card[:, :13] >> 4, card[:, -13:] >> 4
    assert low[0, 0].tolist() == low[0, 3].tolist() == low[3, 0].tolist() == low[1, 2].tolist() == [1, 1, 1]
    assert [low[0, x, 0] for x in (4, 8, 12)] == [8, 3, 15] and low[4, 12, 0] == 5 and low[7, 12, 0] == 5
    # the high strip's shades run from the end of the first 1024: 16, 8, 6, 4, 2
    assert [high[0, x, 0] for x in (0, 4, 8, 12)] == [15, 8, 6, 4] and high[7, 12, 0] == 2


def test_a_two_dimensional_style_is_read_flat():
    picture = golden.picture(2, 4)
    style = np.array([[1.0, 8.0], [2.0, 4.0]])
    card = np.asarray(png_fmt.draw_data_strips(picture, bytes(range(20)), style))
    assert np.array_equal(card, plain_card(picture, bytes(range(20)), [1.0, 8.0, 2.0, 4.0]))


def test_the_picture_is_drawn_in_rgb_whatever_its_mode():
    grey = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, mode="L")
    card = png_fmt.draw_data_strips(grey, b"\x01\x02\x03")
    assert card.mode == "RGB" and card.size == (1 + 1 + 4 + 1 + 1, 3)
    arr = np.asarray(card)
    assert np.array_equal(arr[:, 2:6], np.asarray(grey.convert("RGB")))
    assert np.array_equal(arr, plain_card(grey, b"\x01\x02\x03", [1.0]))


@pytest.mark.parametrize("size, payload", [((4, 0), b"x"), ((4, 3), b"")])
def test_strips_refuse_an_empty_picture_or_no_data(size, payload):
    with exactly("cannot draw embedding data beside an empty image or with empty data"):
        png_fmt.draw_data_strips(Image.new("RGB", size), payload)


def test_a_picture_one_pixel_tall_still_draws():
    card = png_fmt.draw_data_strips(Image.new("RGB", (2, 1), (90, 90, 90)), b"\x05")
    assert card.size == (2 + 2 + 2, 1)
    assert np.array_equal(np.asarray(card), plain_card(Image.new("RGB", (2, 1), (90, 90, 90)), b"\x05", [1.0]))


# ----------------------------------------------------------------------------- draw_embedding

def two_rows() -> Embedding:
    vec = torch.tensor([[0.5, -1.0, 0.25, 2.0] * 192, [3.0, 0.0, -6.0, 1.5] * 192])
    return Embedding({"clip_l": vec}, name="rows", step=4)


def test_draw_embedding_draws_the_compressed_json_shaded_by_the_first_vector():
    emb = two_rows()
    picture = golden.picture(6, 9, seed=2)
    payload = zlib.compress(png_fmt.embedding_json_bytes(emb), level=9)
    card = np.asarray(png_fmt.draw_embedding(picture, emb))
    assert np.array_equal(card, plain_card(picture, payload, emb.vectors["clip_l"][0].tolist()))
    # what is drawn is the level-9 stream itself, byte for byte (then its cyclic repeat)
    drawn = golden.read_drawn_payload(Image.fromarray(card))
    assert drawn[:len(payload)] == payload
    assert json.loads(zlib.decompress(payload)) == json.loads(png_fmt.embedding_json_bytes(emb))


def test_draw_embedding_refuses_a_picture_too_short_to_read_back():
    emb = Embedding({"clip_l": golden.vectors(3, 768, 40)}, name="drawn", step=3)
    with exactly("the drawn data cannot be read back at this image height; use a taller image"):
        png_fmt.draw_embedding(Image.new("RGB", (4, 1), (100, 100, 100)), emb)
    card = png_fmt.draw_embedding(Image.new("RGB", (4, 2), (100, 100, 100)), emb)
    assert card.size[1] == 2


# ----------------------------------------------------------------------------- the default picture

@pytest.mark.parametrize("vec", [
    torch.tensor([[0.5, -1.0, 0.25, 2.0] * 192, [3.0, 0.0, -6.0, 1.5] * 192]),  # rows flattened: 48 from row 0
    torch.tensor([[0.1, -0.2, 0.3, 0.4, 0.05]]),  # 5 values repeated cyclically to 48
    torch.zeros(1, 768),  # all zero: every tile mid-grey
    torch.tensor([[float("nan"), 1.0, -0.5, 2.0]]),  # NaN counts as 0
])
def test_the_default_picture_is_16_tiles_derived_from_the_vectors(vec):
    emb = Embedding({"clip_l": vec}, name="p")
    picture = png_fmt._default_picture(emb)
    assert picture.mode == "RGB" and picture.size == (256, 256)
    assert np.array_equal(np.asarray(picture), plain_default_picture(vec))


def test_default_picture_pixels_by_hand():
    vec = torch.tensor([[0.5, -1.0, 0.25, 2.0] * 192])
    arr = np.asarray(png_fmt._default_picture(Embedding({"clip_l": vec})))
    # scale 2, so the values map to v / 2 * 0.5 + 0.5: 0.5 -> 0.625, -1 -> 0.25, 0.25 -> 0.5625, 2 -> 1.0,
    # then * 200 + 30 -> 155, 80, 142, 230. Tile t holds values 3t..3t+2 of the cycle of 4.
    assert arr[0, 0].tolist() == [155, 80, 142] and arr[15, 15].tolist() == [155, 80, 142]
    # x 16 -> tile 3 = values 9, 10, 11 = (-1, 0.25, 2)
    assert arr[0, 16].tolist() == [80, 142, 230] and arr[15, 31].tolist() == [80, 142, 230]
    # y 16 -> tile 5 = values 15, 16, 17 = (2, 0.5, -1)
    assert arr[16, 0].tolist() == [230, 155, 80]
    # (x 32, y 16) -> tile (6 + 5) % 16 = 11 = values 33, 34, 35 = (-1, 0.25, 2)
    assert arr[16, 32].tolist() == [80, 142, 230]
    # (x 48, y 0) -> tile 9 = values 27, 28, 29 = (2, 0.5, -1)
    assert arr[0, 48].tolist() == [230, 155, 80]
    assert arr[255, 255].tolist() == arr[(255 // 16) * 16, (255 // 16) * 16].tolist()


def test_default_picture_of_a_single_value():
    arr = np.asarray(png_fmt._default_picture(Embedding({"clip_l": torch.tensor([[-3.0]])})))
    assert (arr == 30).all()  # -1 * 0.5 + 0.5 = 0 -> 30, never black


# ----------------------------------------------------------------------------- the card file

def text_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(ctype, payload) for ctype, payload in png_fmt.iter_chunks(data, "card.png")
            if ctype in (b"tEXt", b"zTXt", b"iTXt")]


def test_a_card_without_drawn_data_is_the_default_picture_and_one_text_chunk():
    emb = two_rows()
    data = png_fmt.png_card_bytes(emb, draw_data=False)
    assert np.array_equal(png_image(data), plain_default_picture(emb.vectors["clip_l"]))
    value = base64.b64encode(png_fmt.embedding_json_bytes(emb))
    assert text_chunks(data) == [(b"tEXt", b"sd-ti-embedding\0" + value)]
    assert png_fmt.find_text(data, "card.png") == value


def test_a_card_with_drawn_data_holds_both_copies():
    emb = two_rows()
    picture = golden.picture(10, 12, seed=5).convert("RGBA")
    data = png_fmt.png_card_bytes(emb, picture)
    expected = np.asarray(png_fmt.draw_embedding(picture.convert("RGB"), emb))
    assert np.array_equal(png_image(data), expected)
    assert text_chunks(data) == [(b"tEXt", b"sd-ti-embedding\0" + base64.b64encode(png_fmt.embedding_json_bytes(emb)))]
    # the default picture is used, drawn beside, when none is given
    plain = png_fmt.png_card_bytes(emb)
    assert png_image(plain).shape[0] == 256
    assert np.array_equal(png_image(plain), np.asarray(png_fmt.draw_embedding(png_fmt._default_picture(emb), emb)))


def test_a_card_given_a_picture_keeps_it_as_is_without_drawn_data():
    picture = golden.picture(7, 5, seed=6)
    data = png_fmt.png_card_bytes(two_rows(), picture.convert("L").convert("RGB"), draw_data=False)
    assert np.array_equal(png_image(data), np.asarray(picture.convert("L").convert("RGB")))


def test_write_png_card_reads_back_both_copies_exactly(tmp_path):
    vec = golden.vectors(2, 768, 77)
    emb = Embedding({"clip_l": vec}, name="card", step=12, metadata={"sd_checkpoint": "abc", "sd_checkpoint_name": "m"})
    path = png_fmt.write_png_card(emb, tmp_path / "card.png", golden.picture(12, 16))
    assert path == tmp_path / "card.png"
    back, header = read_embedding_with_header(path)
    assert back.source_format == "png_text" and header["format"] == "png_text"
    assert torch.equal(back.vectors["clip_l"], vec) and back.step == 12 and back.name == "card"
    assert back.metadata == {"name": "card", "step": "12", "sd_checkpoint": "abc", "sd_checkpoint_name": "m"}
    # the drawn copy alone (text chunk stripped) recovers the same tensor
    stripped = tmp_path / "stripped.png"
    Image.open(path).save(stripped, format="PNG")
    again = read_embedding(stripped)
    assert again.source_format == "png_drawn" and torch.equal(again.vectors["clip_l"], vec)
    assert again.metadata == back.metadata and again.step == 12


def test_write_png_card_refuses_nan_and_an_existing_file_unless_told(tmp_path):
    vec = golden.vectors(2, 768, 1)
    vec[1, 3] = float("nan")
    target = tmp_path / "bad.png"
    with exactly(f"{target}: clip_l vectors hold 1 NaN/Inf values; refusing to save a broken embedding (roll back "
                 "to an earlier step or lower the learning rate)", EmbeddingFileError):
        png_fmt.write_png_card(Embedding({"clip_l": vec}), target)
    assert not target.exists()
    first = Embedding({"clip_l": golden.vectors(1, 768, 2)}, name="a")
    second = Embedding({"clip_l": golden.vectors(1, 768, 3)}, name="b")
    path = png_fmt.write_png_card(first, tmp_path / "c.png", draw_data=False)
    with Image.open(path) as im:  # draw_data=False writes no strips: the 256 x 256 default picture alone
        assert im.size == (256, 256)
    with exactly(f"{path}: exists; pass overwrite or choose another name", EmbeddingFileError):
        png_fmt.write_png_card(second, path)
    png_fmt.write_png_card(second, path, overwrite=True)
    assert torch.equal(read_embedding(path).vectors["clip_l"], second.vectors["clip_l"])
    with Image.open(path) as im:  # drawn data by default: strips on both sides
        assert im.size[1] == 256 and im.size[0] > 256 + 2


def test_sdxl_cards_hold_both_tensors_and_draw_the_clip_l_style(tmp_path):
    l_vec, g_vec = golden.vectors(1, 768, 5), golden.vectors(1, 1280, 6)
    emb = Embedding({"clip_l": l_vec, "clip_g": g_vec}, name="xl")
    path = png_fmt.write_png_card(emb, tmp_path / "xl.png", golden.picture(8, 40))
    stripped = tmp_path / "xl_stripped.png"
    Image.open(path).save(stripped, format="PNG")
    for p, fmt in ((path, "png_text"), (stripped, "png_drawn")):
        back = read_embedding(p)
        assert back.source_format == fmt and back.family == "sdxl"
        assert torch.equal(back.vectors["clip_l"], l_vec) and torch.equal(back.vectors["clip_g"], g_vec)
    payload = zlib.compress(png_fmt.embedding_json_bytes(emb), level=9)
    assert np.array_equal(png_image(path.read_bytes()), plain_card(golden.picture(8, 40), payload, l_vec[0].tolist()))


def test_a_card_without_drawn_data_saves_any_picture_as_rgb():
    rgba = Image.fromarray(np.full((5, 7, 4), [10, 200, 60, 90], np.uint8), mode="RGBA")
    data = png_fmt.png_card_bytes(two_rows(), rgba, draw_data=False)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB" and im.size == (7, 5)
        assert np.asarray(im)[2, 3].tolist() == [10, 200, 60]
