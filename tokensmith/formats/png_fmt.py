"""A1111 PNG embeddings: the ``sd-ti-embedding`` text chunk, and the data drawn beside the picture.

Text chunk: base64(JSON) where every tensor is ``{"TORCHTENSOR": nested list}``.

Drawn data (what survives sites that strip text chunks), as A1111's image_embedding.py lays it out:
the same JSON, zlib-compressed; each byte split into its low and high nibble. Each nibble stream is
cyclically repeated to fill ``h x w x 3`` (h = picture height) and laid row-major into an RGB strip;
the low strip goes left of the picture, the high strip right, each separated from the picture by one
black column. In every strip pixel channel the low 4 bits carry the nibble XORed with an LCG stream
(a=1664525, c=1013904223, m=2^32, seed 0, value ``x % 255 & 0x0F``, one value per channel in
row-major order, restarting at 0 for each strip); the high 4 bits are decoration. A decoder crops
fully black borders, takes the low nibbles, finds the all-zero columns and reads left of the first
and right of the last one.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import EmbeddingFileError, TokenSmithError
from .detect import PNG_MAGIC
from .layout import plan_object
from .limits import MAX_DECOMPRESSED_BYTES, MAX_DRAWN_PIXELS, MAX_JSON_BYTES, MAX_JSON_NUMBERS

TEXT_KEY = "sd-ti-embedding"
LCG_A, LCG_C = 1664525, 1013904223
_MASK32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------- shared helpers

_LCG_BLOCK = 1 << 20


def _lcg_jumps(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A_k, C_k)`` for k = 1..count with x_{s+k} = A_k * x_s + C_k (mod 2^32), as uint32.

    Built by doubling; uint32 arithmetic wraps mod 2^32, which is exactly the LCG's modulus.
    """
    mul = np.array([LCG_A], dtype=np.uint32)
    add = np.array([LCG_C], dtype=np.uint32)
    while mul.shape[0] < count:
        step_a, step_c = mul[-1], add[-1]  # the jump of len(mul) steps
        mul, add = np.concatenate([mul, mul * step_a]), np.concatenate([add, add * step_a + step_c])
    return mul[:count], add[:count]


def _lcg_chunks(count: int, block: int = _LCG_BLOCK):
    """The LCG nibble stream in uint8 blocks of at most ``block`` values: memory stays at a few
    blocks however long the stream is."""
    if count <= 0:
        return
    mul, add = _lcg_jumps(min(count, block))
    state = np.uint32(0)
    done = 0
    while done < count:
        n = min(block, count - done)
        xs = mul[:n] * state + add[:n]
        state = xs[-1]
        done += n
        yield ((xs % np.uint32(255)) & np.uint32(0x0F)).astype(np.uint8)


def lcg_nibbles(count: int) -> np.ndarray:
    """The first ``count`` values of the LCG stream, ``(x % 255) & 0x0F``, as uint8."""
    out = np.empty(max(count, 0), dtype=np.uint8)
    pos = 0
    for chunk in _lcg_chunks(count):
        out[pos:pos + chunk.size] = chunk
        pos += chunk.size
    return out


def _decompress(data: bytes, path, what: str) -> bytes:
    """zlib-decompress at most MAX_DECOMPRESSED_BYTES; trailing bytes after the stream are ignored."""
    dec = zlib.decompressobj()
    try:
        out = dec.decompress(data, MAX_DECOMPRESSED_BYTES)
    except zlib.error as exc:
        raise EmbeddingFileError(path, f"{what} is not valid zlib data ({exc})") from None
    if not dec.eof:
        if dec.unconsumed_tail or len(out) >= MAX_DECOMPRESSED_BYTES:
            raise EmbeddingFileError(path, f"{what} decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refused")
        raise EmbeddingFileError(path, f"{what} is truncated (zlib stream does not end)")
    return out


def _nested_to_tensor(value: object, path) -> torch.Tensor:
    """A validated ``{"TORCHTENSOR": ...}`` list: 1-D or rectangular 2-D, numbers only."""
    bad = "a TORCHTENSOR value in the embedding JSON is not a 1-D or rectangular 2-D list of numbers"
    if not isinstance(value, list) or not value:
        raise EmbeddingFileError(path, bad)

    def numeric(row):
        return all(type(x) in (int, float) for x in row)

    if isinstance(value[0], list):
        width = len(value[0])
        if width == 0 or not all(isinstance(r, list) and len(r) == width and numeric(r) for r in value):
            raise EmbeddingFileError(path, bad)
        count = width * len(value)
    else:
        if not numeric(value):
            raise EmbeddingFileError(path, bad)
        count = len(value)
    if count > MAX_JSON_NUMBERS:
        raise EmbeddingFileError(path, f"a tensor in the embedding JSON has {count} numbers (limit {MAX_JSON_NUMBERS})")
    try:
        arr = np.array(value, dtype=np.float64)
    except OverflowError:
        raise EmbeddingFileError(path, bad) from None
    return torch.from_numpy(arr).to(torch.float32)


def parse_embedding_json(text: bytes, path):
    """The A1111 embedding dict (tensors decoded) from JSON bytes."""
    if len(text) > MAX_JSON_BYTES:
        raise EmbeddingFileError(path, f"embedding JSON is {len(text)} bytes (limit {MAX_JSON_BYTES})")
    # json.loads would build every number as a Python object before any tensor is checked:
    # count the separators first (an upper bound on the numbers, cheap on the raw text).
    separators = text.count(b",")
    if separators >= MAX_JSON_NUMBERS:
        raise EmbeddingFileError(path, f"embedding JSON holds about {separators} numbers (limit {MAX_JSON_NUMBERS}); "
                                 "too many for an embedding")

    def hook(d):
        if "TORCHTENSOR" in d:
            return _nested_to_tensor(d["TORCHTENSOR"], path)
        return d

    try:
        return json.loads(text.decode("utf-8"), object_hook=hook)
    except EmbeddingFileError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EmbeddingFileError(path, f"embedding data is not valid JSON ({exc.__class__.__name__})") from None


def embedding_json_object(emb) -> dict:
    """The dict A1111 would store for ``emb`` (tensors left as tensors)."""
    vectors = emb.float_vectors()
    if set(vectors) == {"clip_l", "clip_g"}:
        # A1111 reads SDXL dicts by turning every value into a tensor: keep only the tensors.
        return {"clip_l": vectors["clip_l"], "clip_g": vectors["clip_g"]}
    if len(vectors) != 1:
        raise TokenSmithError(f"a PNG card holds one encoder's vectors or SDXL's pair; got {list(vectors)}")
    obj = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": next(iter(vectors.values()))},
        "name": emb.name,
        "step": emb.step,
    }
    for key in ("sd_checkpoint", "sd_checkpoint_name"):
        obj[key] = emb.metadata.get(key)
    return obj


def embedding_json_bytes(emb) -> bytes:
    def default(o):
        if isinstance(o, torch.Tensor):
            return {"TORCHTENSOR": o.detach().cpu().to(torch.float32).tolist()}
        raise TypeError(type(o).__name__)

    return json.dumps(embedding_json_object(emb), default=default).encode("utf-8")


# ----------------------------------------------------------------------------- PNG chunks

def iter_chunks(data: bytes, path):
    """Yield ``(type, payload)`` for each chunk, checking lengths and CRCs."""
    if not data.startswith(PNG_MAGIC):
        raise EmbeddingFileError(path, "not a PNG file")
    pos = len(PNG_MAGIC)
    while pos < len(data):
        if pos + 8 > len(data):
            raise EmbeddingFileError(path, "PNG is truncated (incomplete chunk header)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise EmbeddingFileError(path, f"PNG is truncated (chunk {ctype!r} runs past the end of the file)")
        payload = data[pos + 8:end]
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if zlib.crc32(ctype + payload) & _MASK32 != crc:
            raise EmbeddingFileError(path, f"PNG is damaged (bad checksum in chunk {ctype!r})")
        yield ctype, payload
        if ctype == b"IEND":
            return
        pos = end + 4
    raise EmbeddingFileError(path, "PNG is truncated (no IEND chunk)")


def find_text(data: bytes, path, key: str = TEXT_KEY) -> bytes | None:
    """The raw value of text chunk ``key`` (tEXt, zTXt or iTXt), or None. The whole chunk list is
    walked (lengths, CRCs, IEND) first, so a truncated or damaged file is reported as such."""
    keyb = key.encode("latin-1")
    found = None
    for ctype, payload in iter_chunks(data, path):
        if found is None and ctype in (b"tEXt", b"zTXt", b"iTXt"):
            name, sep, _ = payload.partition(b"\0")
            if sep and name == keyb:
                found = (ctype, payload)
    if found is None:
        return None
    ctype, payload = found
    _, _, rest = payload.partition(b"\0")
    if ctype == b"tEXt":
        return rest
    if ctype == b"zTXt":
        if not rest or rest[0] != 0:
            raise EmbeddingFileError(path, "zTXt chunk uses an unknown compression method")
        return _decompress(rest[1:], path, "zTXt chunk")
    # iTXt: compression flag, method, language\0, translated keyword\0, text
    if len(rest) < 2:
        raise EmbeddingFileError(path, "iTXt chunk is truncated")
    flag, method = rest[0], rest[1]
    parts = rest[2:].split(b"\0", 2)
    if len(parts) != 3:
        raise EmbeddingFileError(path, "iTXt chunk is malformed")
    text = parts[2]
    if flag:
        if method != 0:
            raise EmbeddingFileError(path, "iTXt chunk uses an unknown compression method")
        text = _decompress(text, path, "iTXt chunk")
    return text


def decode_text_payload(raw: bytes, path):
    if len(raw) > MAX_JSON_BYTES * 4 // 3 + 16:
        raise EmbeddingFileError(path, f"'{TEXT_KEY}' text is {len(raw)} bytes; too large")
    try:
        decoded = base64.b64decode(raw)
    except (binascii.Error, ValueError):
        raise EmbeddingFileError(path, f"'{TEXT_KEY}' text is not valid base64") from None
    return parse_embedding_json(decoded, path)


# ----------------------------------------------------------------------------- drawn data

def _crop_black(arr: np.ndarray) -> np.ndarray:
    """Crop rows / columns that hold no pixel with every channel non-zero (A1111's crop)."""
    mask = (arr > 0).all(axis=2)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return arr[:0, :0]
    return arr[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _drawn_strips(image):
    """The low-nibble strips ``(lower, upper)`` left and right of the picture, or None."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(rgb, dtype=np.uint8)
    cropped = _crop_black(arr)
    del arr
    if cropped.size == 0:
        return None
    black = np.flatnonzero((cropped & 0x0F).any(axis=2).any(axis=0) == 0)
    if black.size < 2:
        return None
    lower, upper = cropped[:, :black[0]], cropped[:, black[-1] + 1:]
    if lower.size == 0 or lower.shape != upper.shape:
        return None
    return lower, upper


def _drawn_byte_chunks(lower: np.ndarray, upper: np.ndarray):
    """The drawn bytes in row-major order, a block of rows at a time, so a caller can stop as soon
    as the zlib stream ends instead of decoding (and building the LCG stream for) whole strips."""
    row = lower.shape[1] * lower.shape[2]
    rows_per = max(1, _LCG_BLOCK // row)
    stream = _lcg_chunks(lower.size, block=rows_per * row)
    for top in range(0, lower.shape[0], rows_per):
        key = next(stream).reshape(-1, lower.shape[1], lower.shape[2])
        lo = (lower[top:top + rows_per] & 0x0F) ^ key
        hi = (upper[top:top + rows_per] & 0x0F) ^ key
        yield ((hi << 4) | lo).astype(np.uint8).tobytes()


def extract_drawn_bytes(image, path) -> bytes | None:
    """The compressed payload drawn beside ``image`` (a PIL image), or None when none is there."""
    strips = _drawn_strips(image)
    if strips is None:
        return None
    return b"".join(_drawn_byte_chunks(*strips))


def _style_nibbles(shape, vector: np.ndarray, reverse: bool) -> np.ndarray:
    """Decoration for the high nibbles: diagonal bands shaded by the vector's magnitudes. Shades
    are 1..15 so every strip pixel stays non-black (A1111's decoder crops black borders)."""
    mags = np.abs(vector.astype(np.float64))[:1024]
    mags = mags[::-1] if reverse else mags
    top = mags.max() if mags.size else 0.0
    shades = (1 + np.nan_to_num(mags / top if top > 0 else mags * 0) * 14).astype(np.uint8)
    if shades.size == 0:
        shades = np.ones(1, dtype=np.uint8)
    h, w, _ = shape
    yy, xx = np.mgrid[0:h, 0:w]
    band = ((xx + yy) // 4) % shades.size
    return np.repeat(shades[band][:, :, None], 3, axis=2)


def draw_data_strips(image, payload: bytes, style_vector: np.ndarray | None = None):
    """A new RGB image: low strip | black column | image | black column | high strip."""
    from PIL import Image

    h = image.size[1]
    if h < 1 or not payload:
        raise TokenSmithError("cannot draw embedding data beside an empty image or with empty data")
    data = np.frombuffer(payload, dtype=np.uint8)
    # A1111 pads to the next multiple of h, then of 3h (always adding at least one step).
    size = data.size + (h - data.size % h)
    size += (h * 3) - size % (h * 3)
    style = np.ones(1) if style_vector is None else np.asarray(style_vector, dtype=np.float64).ravel()
    strips = []
    for nibbles, reverse in ((data & 0x0F, False), (data >> 4, True)):
        block = np.resize(nibbles, size).reshape(h, -1, 3)  # cyclic repeat, as A1111 does
        block = block ^ lcg_nibbles(block.size).reshape(block.shape)
        block = block | (_style_nibbles(block.shape, style, reverse) << 4)
        strips.append(Image.fromarray(block.astype(np.uint8), mode="RGB"))
    low, high = strips
    out = Image.new("RGB", (image.size[0] + low.size[0] + high.size[0] + 2, h), (0, 0, 0))
    out.paste(low, (0, 0))
    out.paste(image.convert("RGB"), (low.size[0] + 1, 0))
    out.paste(high, (low.size[0] + 1 + image.size[0] + 1, 0))
    return out


def draw_embedding(image, emb):
    """``image`` with ``emb`` drawn beside it (A1111's layout)."""
    payload = zlib.compress(embedding_json_bytes(emb), level=9)
    first = next(iter(emb.float_vectors().values()))[0].numpy()
    out = draw_data_strips(image, payload, first)
    # A strip column that happens to read as black would make the data unreadable: check it.
    if extract_drawn_bytes(out, "<drawn image>") is None:
        raise TokenSmithError("the drawn data cannot be read back at this image height; use a taller image")
    return out


# ----------------------------------------------------------------------------- reading

def load_png(data: bytes, path, *, name: str | None = None):
    """``(plan, tensors)`` from a PNG: the text chunk first, else the drawn data."""
    raw = find_text(data, path)
    if raw is not None:
        obj = decode_text_payload(raw, path)
        fmt = "png_text"
    else:
        obj = _read_drawn(data, path)
        fmt = "png_drawn"
    plan, tensors = plan_object(obj, path, name=name, a1111_format=fmt)
    plan.source_format = fmt
    return plan, tensors


def _read_drawn(data: bytes, path):
    from PIL import Image

    no_data = (f"PNG holds no embedding: no '{TEXT_KEY}' text chunk and no data drawn beside the picture")
    try:
        image = Image.open(io.BytesIO(data))
        w, h = image.size
        if w * h > MAX_DRAWN_PIXELS:
            raise EmbeddingFileError(path, f"{no_data} (image of {w}x{h} is too large to scan)")
        image.load()
    except EmbeddingFileError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on damaged images
        raise EmbeddingFileError(path, f"PNG image data cannot be decoded ({exc.__class__.__name__})") from None
    strips = _drawn_strips(image)
    image.close()
    if strips is None:
        raise EmbeddingFileError(path, no_data)
    return parse_embedding_json(_decompress_drawn(_drawn_byte_chunks(*strips), path), path)


def _decompress_drawn(chunks, path) -> bytes:
    """Inflate the drawn zlib stream block by block; stops at its end (the rest of the strip is the
    cyclic repeat), so the work follows the real data size, not the picture's."""
    what = "drawn embedding data"
    dec = zlib.decompressobj()
    out, total = [], 0
    for chunk in chunks:
        try:
            part = dec.decompress(chunk, MAX_DECOMPRESSED_BYTES - total + 1)
        except zlib.error as exc:
            raise EmbeddingFileError(path, f"{what} is not valid zlib data ({exc})") from None
        total += len(part)
        if total > MAX_DECOMPRESSED_BYTES:
            raise EmbeddingFileError(path, f"{what} decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes; refused")
        out.append(part)
        if dec.eof:
            return b"".join(out)
    raise EmbeddingFileError(path, f"{what} is truncated (zlib stream does not end)")


# ----------------------------------------------------------------------------- writing

def _default_picture(emb, size: int = 256):
    """A plain picture derived from the vectors, for cards made without an image."""
    from PIL import Image

    first = next(iter(emb.float_vectors().values())).flatten().numpy().astype(np.float64)
    first = np.nan_to_num(first)
    scale = np.abs(first).max() or 1.0
    vals = ((first[: 3 * 16] / scale) * 0.5 + 0.5) if first.size else np.full(3, 0.5)
    vals = np.resize(vals, 3 * 16).reshape(16, 3)
    tile = (np.clip(vals, 0, 1) * 200 + 30).astype(np.uint8)  # 16 colours, never black
    yy, xx = np.mgrid[0:size, 0:size]
    idx = ((xx // 16) * 3 + (yy // 16) * 5) % 16
    return Image.fromarray(tile[idx], mode="RGB")


def png_card_bytes(emb, image=None, *, draw_data: bool = True) -> bytes:
    """PNG bytes of an A1111-compatible embedding card."""
    from PIL import PngImagePlugin

    picture = _default_picture(emb) if image is None else image.convert("RGB")
    if draw_data:
        picture = draw_embedding(picture, emb)
    info = PngImagePlugin.PngInfo()
    info.add_text(TEXT_KEY, base64.b64encode(embedding_json_bytes(emb)).decode("ascii"))
    buf = io.BytesIO()
    picture.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def write_png_card(emb, path, image=None, *, draw_data: bool = True, overwrite: bool = False) -> Path:
    """Write ``emb`` as an A1111-compatible PNG card (text chunk, plus drawn data unless
    ``draw_data=False``), atomically. Refuses NaN/Inf vectors."""
    from ..writer import atomic_write_bytes, check_finite

    target = Path(path)
    check_finite(emb, target)
    return atomic_write_bytes(target, png_card_bytes(emb, image, draw_data=draw_data), overwrite=overwrite)
