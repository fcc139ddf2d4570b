"""What the fuzz targets share: the seeded random source of a case, interesting numbers and
characters, byte mutators, text mutation and the short key of a refusal."""

from __future__ import annotations

import random
import re
import struct

INTERESTING_INTS = (0, 1, 2, 7, 255, 256, 767, 768, 769, 1024, 1280, 4096, 65535, 2**31 - 1, 2**31, 2**32 - 1,
                    2**32, 2**40, 2**53, 2**62, 2**63 - 1, -1, -2**31, -2**63)
UNICODE_SAMPLES = ("ｃａｔ", "с", "а", "е", "℮", "İ", "ß", "ǅ", "٣", "²", "①", "\u200b", "\u202e", "\ufeff", "\u0301",
                   "🐱", "\U0010ffff", "\ud800", "\x00", "\x7f", "\n", "\r", "\t", "ﬁ", "Ω", "Å", "𝟘", "\u3000")


def case_rng(target: str, seed: int, index: int) -> random.Random:
    return random.Random(f"{target}:{seed}:{index}")


def _pos(rng: random.Random, data: bytes) -> int:
    # Bias towards the start, where headers live.
    if not data:
        return 0
    if rng.random() < 0.5:
        return rng.randrange(min(len(data), 256))
    return rng.randrange(len(data))


def flip_bits(rng, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if buf:
            buf[_pos(rng, buf)] ^= 1 << rng.randrange(8)
    return bytes(buf)


def set_bytes(rng, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if buf:
            buf[_pos(rng, buf)] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x2E, 0x0A, rng.randrange(256)))
    return bytes(buf)


def truncate(rng, data: bytes) -> bytes:
    if len(data) < 2:
        return data[:0]
    if rng.random() < 0.3:
        return data[: len(data) - rng.randint(1, min(64, len(data) - 1))]
    return data[: rng.randrange(len(data))]


def insert_bytes(rng, data: bytes) -> bytes:
    at = _pos(rng, data)
    return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]


def delete_chunk(rng, data: bytes) -> bytes:
    if len(data) < 2:
        return data
    at = _pos(rng, data)
    return data[:at] + data[at + rng.randint(1, 256):]


def duplicate_chunk(rng, data: bytes) -> bytes:
    if not data:
        return data
    at = _pos(rng, data)
    chunk = data[at:at + rng.randint(1, 512)]
    to = rng.randrange(len(data) + 1)
    return data[:to] + chunk * rng.randint(1, 4) + data[to:]


def interesting_int(rng, data: bytes) -> bytes:
    if len(data) < 8:
        return data
    value = rng.choice(INTERESTING_INTS)
    width, fmt = rng.choice(((2, "<H"), (4, "<I"), (8, "<Q"), (4, ">I")))
    at = rng.randrange(len(data) - width + 1)
    packed = struct.pack(fmt, value % (1 << (8 * width)))
    return data[:at] + packed + data[at + width:]


BYTE_MUTATORS = (flip_bits, set_bytes, truncate, insert_bytes, delete_chunk, duplicate_chunk, interesting_int)


def mutate_bytes(rng, data: bytes, rounds: int | None = None) -> bytes:
    for _ in range(rng.randint(1, 3) if rounds is None else rounds):
        data = rng.choice(BYTE_MUTATORS)(rng, data)
    return data


def random_unicode(rng, max_len: int = 40) -> str:
    out = []
    for _ in range(rng.randint(0, max_len)):
        r = rng.random()
        if r < 0.4:
            out.append(chr(rng.randrange(32, 127)))
        elif r < 0.7:
            out.append(rng.choice(UNICODE_SAMPLES))
        else:
            cp = rng.randrange(0x110000)
            out.append(chr(cp))
    return "".join(out)


def mutate_text(rng, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        at = rng.randrange(len(chars) + 1)
        if op == 0:
            chars.insert(at, rng.choice(list("'\"`()+-*/:,=.eELG0123456789 ") + list(UNICODE_SAMPLES)))
        elif op == 1 and chars:
            del chars[min(at, len(chars) - 1)]
        elif op == 2 and chars:
            chars[min(at, len(chars) - 1)] = chr(rng.randrange(0x3000))
        else:
            chars[at:at] = list(text[: rng.randint(0, 20)])
    return "".join(chars)


def reason_key(exc) -> str:
    text = getattr(exc, "reason", None) or str(exc)
    text = re.sub(r"\d+", "N", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    return type(exc).__name__ + ":" + text[:60]
