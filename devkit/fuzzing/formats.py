"""The ``formats`` target: bytes of embedding files (seed files of every layout, then byte mutations
and structure-aware ones: safetensors header lies, zip records, pickle opcodes, PNG chunks and their
JSON) -> ``read_header`` + ``read_embedding``; a successful read must give well-formed vectors."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import zlib
from pathlib import Path

from devkit.fuzzing.pickles import TORCH_LEGACY_MAGIC_NUMBER, mutate_pickle, mutate_torch_zip, pickle_ops
from devkit.fuzzing.shared import INTERESTING_INTS, mutate_bytes, random_unicode, reason_key, truncate

# ============================================================================ JSON mutators


def deep_json(rng) -> object:
    depth = rng.choice((50, 500, 990, 1100, 5000, 100_000))
    kind = rng.choice("[{")
    text = ("[" * depth + "]" * depth) if kind == "[" else ('{"a":' * depth + "1" + "}" * depth)
    return text


def mutate_json_value(rng, value, depth: int = 0):
    """A structurally mutated copy of a JSON-like value."""
    r = rng.random()
    if depth > 6 or r < 0.08:
        return rng.choice((None, True, False, 0, -1, 1.5, 1e308, -0.0, 2**64, "", "x" * rng.randint(0, 300),
                           random_unicode(rng, 10), [], {}, [[]], {"TORCHTENSOR": [[1.0]]}))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            p = rng.random()
            if p < 0.05:
                continue  # drop a key
            if p < 0.10:
                k = rng.choice((k + "x", random_unicode(rng, 6), "", "__metadata__", "string_to_param"))
            out[k] = mutate_json_value(rng, v, depth + 1) if rng.random() < 0.35 else v
        if rng.random() < 0.1:
            out[random_unicode(rng, 8)] = mutate_json_value(rng, None, depth + 1)
        return out
    if isinstance(value, list):
        if not value:
            return [rng.choice((0, 1.0, "a", [], None))] * rng.randint(0, 3)
        p = rng.random()
        if p < 0.1:
            return value[: rng.randrange(len(value))]
        if p < 0.2:
            return value + value[: rng.randint(1, len(value))]
        if p < 0.3 and all(isinstance(x, (int, float)) for x in value[:8]):
            return [rng.choice((float("nan"), float("inf"), 1e39, -1e39, 0, True, "1", None)) if rng.random() < 0.2 else x
                    for x in value]
        return [mutate_json_value(rng, v, depth + 1) if rng.random() < 0.1 else v for v in value]
    if isinstance(value, bool) or value is None:
        return rng.choice((None, True, False, 0, 1))
    if isinstance(value, int):
        return rng.choice(INTERESTING_INTS + (value + 1, value - 1, float(value), str(value), [value]))
    if isinstance(value, float):
        return rng.choice((float("nan"), float("inf"), -value, value * 1e30, 0.0, int(value), str(value)))
    if isinstance(value, str):
        return rng.choice((value + random_unicode(rng, 4), value[:-1], "", random_unicode(rng, 12), value * 3, 1))
    return value


def dumps_json(rng, value) -> bytes:
    # allow_nan: NaN / Infinity literals are what a hostile writer would put there
    text = json.dumps(value, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.1:
        text = " " * rng.randint(0, 64) + text + " " * rng.randint(0, 64)
    return text.encode("utf-8", "surrogatepass")


# ============================================================================ safetensors

def safetensors_parts(data: bytes):
    """``(header dict, tensor bytes)`` of a well-formed safetensors file, or None."""
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + n])
    except ValueError:
        return None
    return (header, data[8 + n:]) if isinstance(header, dict) else None


def build_safetensors(header_bytes: bytes, body: bytes, header_len: int | None = None) -> bytes:
    n = len(header_bytes) if header_len is None else header_len
    return struct.pack("<Q", n % (1 << 64)) + header_bytes + body


def mutate_safetensors(rng, data: bytes) -> bytes:
    parts = safetensors_parts(data)
    if parts is None:
        return mutate_bytes(rng, data)
    header, body = parts
    keys = [k for k in header if k != "__metadata__"]
    choice = rng.randrange(10)
    if choice == 0:  # header-length lie
        raw = dumps_json(rng, header)
        lie = rng.choice((0, 1, len(raw) - 1, len(raw) + 1, len(raw) + len(body), len(raw) + len(body) + 1,
                          100_000_001, 2**32, 2**63, 2**64 - 1, rng.randrange(1 << 20)))
        return build_safetensors(raw, body, lie)
    if choice == 1 and keys:  # huge or odd claimed shape, offsets kept or made to match
        key = rng.choice(keys)
        entry = dict(header[key]) if isinstance(header[key], dict) else {}
        shape = rng.choice(([2**40, 768], [2**31, 2**31], [0, 768], [1, 2, 768], [768], [-1, 768], [1.5, 768],
                            ["2", 768], [], [2**63, 2], [1, 1024], [1, 1280], [1, 4096], [75, 768], [76, 768]))
        entry["shape"] = shape
        if rng.random() < 0.5:
            size = 4
            try:
                count = math.prod(int(d) for d in shape)
            except (TypeError, ValueError):
                count = 1
            entry["data_offsets"] = [0, count * size]
        header = {**header, key: entry}
        return build_safetensors(dumps_json(rng, header), body)
    if choice == 2 and keys:  # offset lies
        key = rng.choice(keys)
        entry = dict(header[key]) if isinstance(header[key], dict) else {}
        begin = rng.choice((0, -1, 1, len(body), len(body) + 1, 2**62, 2**64))
        end = rng.choice((0, -1, len(body), len(body) + 1, 2**62, begin - 1, begin + 4))
        entry["data_offsets"] = rng.choice(([begin, end], [begin], [begin, end, 0], "0,4", [float(begin), end]))
        header = {**header, key: entry}
        return build_safetensors(dumps_json(rng, header), body)
    if choice == 3 and keys:  # dtype
        key = rng.choice(keys)
        entry = dict(header[key]) if isinstance(header[key], dict) else {}
        entry["dtype"] = rng.choice(("F16", "BF16", "F64", "I64", "BOOL", "U8", "F8_E4M3", "C64", "f32", "", 32,
                                     None, random_unicode(rng, 4)))
        header = {**header, key: entry}
        return build_safetensors(dumps_json(rng, header), body)
    if choice == 4:  # deep nesting inside the header
        nested = deep_json(rng).encode()
        raw = b'{"__metadata__": {"x": ' + nested + b"}}" if rng.random() < 0.5 else nested
        return build_safetensors(raw, body)
    if choice == 5:  # many keys / long keys / unicode keys
        many = dict(header)
        for i in range(rng.choice((10, 100, 1000))):
            many[f"k{i}" + (random_unicode(rng, 3) if i % 97 == 0 else "")] = {"dtype": "F32", "shape": [0],
                                                                                "data_offsets": [0, 0]}
        if rng.random() < 0.3:
            many["k" * rng.choice((1000, 100_000))] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        return build_safetensors(dumps_json(rng, many), body)
    if choice == 6:  # structural JSON mutation
        return build_safetensors(dumps_json(rng, mutate_json_value(rng, header)), body)
    if choice == 7:  # metadata oddities
        meta = rng.choice(({"step": "1e999"}, {"step": "-5"}, {"tool": "tokensmith", "encoders": "clip_h"},
                           {"tool": 5}, {"a": {"b": 1}}, [], "text", {"step": 2**70}, {"bundle": random_unicode(rng)}))
        return build_safetensors(dumps_json(rng, {**header, "__metadata__": meta}), body)
    if choice == 8:  # body length changes
        body = truncate(rng, body) if rng.random() < 0.5 else body + rng.randbytes(rng.randint(1, 64))
        return build_safetensors(dumps_json(rng, header), body)
    return mutate_bytes(rng, data)


# ============================================================================ PNG

def png_chunks(data: bytes):
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    pos, out = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        out.append((ctype, payload))
        pos += 12 + length
        if ctype == b"IEND":
            break
    return out


def chunk_bytes(ctype: bytes, payload: bytes, crc: int | None = None, length: int | None = None) -> bytes:
    crc = zlib.crc32(ctype + payload) & 0xFFFFFFFF if crc is None else crc
    size = len(payload) if length is None else length % (1 << 32)
    return struct.pack(">I", size) + ctype + payload + struct.pack(">I", crc)


def build_png(chunks) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk_bytes(t, p) for t, p in chunks)


def text_chunk(key: bytes, value: bytes, kind: str = "tEXt") -> tuple[bytes, bytes]:
    if kind == "tEXt":
        return b"tEXt", key + b"\0" + value
    if kind == "zTXt":
        return b"zTXt", key + b"\0\0" + zlib.compress(value)
    return b"iTXt", key + b"\0\x01\0\0\0" + zlib.compress(value)


def small_png(rng, w: int | None = None, h: int | None = None) -> list:
    w = w or rng.randint(1, 64)
    h = h or rng.randint(1, 64)
    raw = b"".join(b"\0" + rng.randbytes(3 * w) for _ in range(h))
    return [(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")]


def _embedding_json_from_png(chunks):
    for ctype, payload in chunks:
        if ctype == b"tEXt" and payload.startswith(b"sd-ti-embedding\0"):
            try:
                return json.loads(base64.b64decode(payload.split(b"\0", 1)[1]))
            except ValueError:
                return None
    return None


def mutate_png(rng, data: bytes) -> bytes:
    chunks = png_chunks(data)
    if not chunks:
        return mutate_bytes(rng, data)
    key = b"sd-ti-embedding"
    choice = rng.randrange(11)
    if choice == 0:  # chunk length lie, CRC left as it was
        i = rng.randrange(len(chunks))
        ctype, payload = chunks[i]
        lie = rng.choice((0, len(payload) + 1, len(payload) - 1, 0x7FFFFFFF, 0xFFFFFFFF))
        rebuilt = b"\x89PNG\r\n\x1a\n" + b"".join(
            chunk_bytes(t, p, length=lie if j == i else None) for j, (t, p) in enumerate(chunks))
        return rebuilt
    if choice == 1:  # payload mutation with a correct CRC (so the decoders see it)
        i = rng.randrange(len(chunks))
        chunks[i] = (chunks[i][0], mutate_bytes(rng, chunks[i][1]))
        return build_png(chunks)
    if choice in (2, 3):  # the embedding JSON, mutated, re-encoded in one of the three text chunks
        obj = _embedding_json_from_png(chunks)
        if obj is None:
            obj = {"string_to_param": {"*": {"TORCHTENSOR": [[0.5] * 768]}}, "name": "x", "step": 1}
        value = base64.b64encode(dumps_json(rng, mutate_json_value(rng, obj)))
        body = [c for c in chunks if not (c[0] in (b"tEXt", b"zTXt", b"iTXt") and c[1].startswith(key))]
        body.insert(1, text_chunk(key, value, rng.choice(("tEXt", "zTXt", "iTXt"))))
        return build_png(body)
    if choice == 4:  # odd JSON documents: deep nesting, big lists, non-objects, bad base64
        doc = rng.choice((
            deep_json(rng).encode(),
            b'{"string_to_param": {"*": {"TORCHTENSOR": [' + b",".join([b"1e-3"] * rng.choice((1, 768, 768, 100_000)))
            + b"]}}}",
            b'{"clip_l": {"TORCHTENSOR": [[1.0]]}, "clip_g": {"TORCHTENSOR": [[1.0, 2.0]]}}',
            b"[]", b"null", b'"text"', b"1e999", b'{"string_to_param": {"*": {"TORCHTENSOR": NaN}}}',
            b'{"TORCHTENSOR": {"TORCHTENSOR": [1]}}',
        ))
        value = base64.b64encode(doc) if rng.random() < 0.9 else rng.choice((b"!!!", b"=" * 5, doc, b"\xff\xfe"))
        return build_png([chunks[0], text_chunk(key, value, rng.choice(("tEXt", "zTXt", "iTXt"))), *chunks[1:]])
    if choice == 5:  # compressed text chunks: unknown methods, truncated streams, bombs (capped at 32 MiB)
        pick = rng.randrange(7)
        if pick == 0:
            payload = key + b"\0\x01" + zlib.compress(b"x" * 100)
        elif pick == 1:
            payload = key + b"\0\0" + zlib.compress(b"A" * 1000)[:-5]
        elif pick == 2:
            payload = key + b"\0\0" + zlib_bomb(rng.choice((1 << 20, 40 << 20)))
        elif pick == 3:
            payload = key + b"\0\x01\x00\0\0" + zlib_bomb(33 << 20)
        else:
            payload = key + rng.choice((b"\0\x01\x07\0\0junk", b"\0", b""))
        ctype = b"iTXt" if pick in (3, 4) else b"zTXt"
        return build_png([chunks[0], (ctype, payload), *chunks[1:]])
    if choice == 6:  # IHDR lies: sizes, depths, colour types (IDAT left as it was)
        ihdr = (b"IHDR", struct.pack(">IIBBBBB", rng.choice((0, 1, 2048, 4097, 2**31 - 1, 2**32 - 1)),
                                     rng.choice((0, 1, 2048, 4097, 2**31 - 1)), rng.choice((1, 8, 16, 3)),
                                     rng.choice((0, 2, 3, 4, 6, 7)), 0, 0, rng.choice((0, 1))))
        return build_png([ihdr, *chunks[1:]])
    if choice == 7:  # drawn data with pixel damage (decode, damage, encode)
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
        except Exception:
            return mutate_bytes(rng, data)
        w, h = im.size
        px = im.load()
        for _ in range(rng.choice((1, 10, 1000))):
            px[rng.randrange(w), rng.randrange(h)] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.3:  # black columns in odd places
            x = rng.randrange(w)
            for y in range(h):
                px[x, y] = (0, 0, 0)
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    if choice == 8:  # drawn payload replaced: random bytes, truncated zlib, JSON that is not an embedding
        payload = rng.choice((rng.randbytes(rng.randint(1, 200)), zlib.compress(b'{"a": 1}'),
                              zlib.compress(b"[" * 5000), zlib.compress(b"x" * 100)[:-3],
                              zlib.compress(dumps_json(rng, {"string_to_param": {"*": {"TORCHTENSOR": [[1.0] * 768]}}}))))
        return draw_payload_png(rng, payload)
    if choice == 9:  # a plain picture, no embedding (or a chunk order shuffle)
        if rng.random() < 0.5:
            return build_png(small_png(rng))
        body = chunks[1:-1]
        rng.shuffle(body)
        return build_png([chunks[0], *body, chunks[-1]])
    return mutate_bytes(rng, data)


_BOMBS: dict[int, bytes] = {}


def zlib_bomb(size: int) -> bytes:
    """zlib data that inflates to ``size`` zero bytes (made once per size)."""
    if size not in _BOMBS:
        comp = zlib.compressobj(9)
        chunk = b"\0" * (1 << 20)
        parts = [comp.compress(chunk) for _ in range(size >> 20)]
        _BOMBS[size] = b"".join(parts) + comp.compress(b"\0" * (size & ((1 << 20) - 1))) + comp.flush()
    return _BOMBS[size]


def draw_payload_png(rng, payload: bytes) -> bytes:
    """A picture with ``payload`` drawn beside it (A1111's layout, via TokenSmith's encoder)."""
    import numpy as np
    from PIL import Image

    from tokensmith.formats.png_fmt import draw_data_strips

    h = rng.choice((8, 24, 48, 96))
    arr = np.asarray(bytearray(rng.randbytes(h * 32 * 3)), dtype=np.uint8).reshape(h, 32, 3) | 0x20
    image = draw_data_strips(Image.fromarray(arr, mode="RGB"), payload)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ============================================================================ cases


class Seeds:
    """Seed files (the golden files of every layout) and their cached parsed forms."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.is_file())
        self.data = [p.read_bytes() for p in self.files]
        self.names = [p.name for p in self.files]
        self._ops: dict[int, list] = {}

    def pick(self, rng) -> tuple[str, bytes, int]:
        i = rng.randrange(len(self.data))
        return self.names[i], self.data[i], i

    def ops(self, i: int):
        if i not in self._ops:
            self._ops[i] = pickle_ops(self.data[i])
        return self._ops[i]


def _container(data: bytes) -> str:
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    if data.startswith(b"\x89PNG"):
        return "png"
    if data[:2] == b"\x80\x02" or data[:1] == b"\x80":
        return "pickle"
    if len(data) >= 9 and data[8:9] == b"{":
        return "safetensors"
    return "other"


def make_format_case(rng, seeds: Seeds) -> bytes:
    name, data, i = seeds.pick(rng)
    r = rng.random()
    if r < 0.04:  # raw garbage behind a real magic
        head = rng.choice((b"", b"PK\x03\x04", b"\x89PNG\r\n\x1a\n", b"\x80\x02", b"\x80\x05",
                           struct.pack("<Q", rng.randint(0, 200)) + b"{", TORCH_LEGACY_MAGIC_NUMBER.to_bytes(10, "little")))
        return head + rng.randbytes(rng.randint(0, 400))
    if r < 0.10:  # splice two seeds
        _, other, _ = seeds.pick(rng)
        return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]
    if r < 0.35:
        return mutate_bytes(rng, data)
    kind = _container(data)
    if kind == "safetensors":
        return mutate_safetensors(rng, data)
    if kind == "zip":
        return mutate_torch_zip(rng, data)
    if kind == "pickle":
        return mutate_pickle(rng, data, seeds.ops(i))
    if kind == "png":
        return mutate_png(rng, data)
    return mutate_bytes(rng, data)


EXTENSIONS = (".pt", ".safetensors", ".png", ".bin", ".txt", "")


def check_embedding(emb, header) -> None:
    """What a successful read must give: fp32 CPU [n, width] vectors at known widths, and a
    header that agrees with the full read."""
    import torch

    from tokensmith.embedding import ENCODER_WIDTHS

    assert emb.vectors, "no vectors"
    for enc, t in emb.vectors.items():
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type == "cpu", enc
        assert t.dim() == 2 and t.shape[0] >= 1, (enc, tuple(t.shape))
        assert ENCODER_WIDTHS.get(enc) == t.shape[1], (enc, tuple(t.shape))
    if header is not None:
        assert header["encoders"] == emb.shapes(), (header["encoders"], emb.shapes())
        assert header["family"] == emb.family, (header["family"], emb.family)


def run_format_case(data: bytes, workdir: Path, rng) -> tuple[str, str]:
    from tokensmith.errors import TokenSmithError
    from tokensmith.formats import read_embedding, read_header

    path = workdir / ("case" + rng.choice(EXTENSIONS))
    with open(path, "wb") as fh:
        fh.write(data)
    header = None
    try:
        header = read_header(path)
        first = "header"
    except TokenSmithError as exc:
        first = "header refused: " + reason_key(exc)
    try:
        emb = read_embedding(path, name=rng.choice((None, None, "<cat>", "mytok", "x")))
    except TokenSmithError as exc:
        return "refused", f"{first} / {reason_key(exc)}"
    check_embedding(emb, header)
    return "read", first
