"""Seeded input generators, mutators and a runner for TokenSmith's fuzz tests.

Every case is made from ``random.Random(f"{target}:{seed}:{index}")``, so any single input can be
rebuilt from its (target, seed, index) and a failure found by a long run can be replayed alone:

    python -m devkit.fuzzing repro formats --seed 0 --index 1234 --seeds DIR

Targets (each maps an input to calls of the core; only TokenSmithError may come out of them):

- ``formats``     bytes of embedding files (seed files of every layout, then byte mutations and
                  structure-aware ones: safetensors header lies, zip records, pickle opcodes, PNG
                  chunks and their JSON) -> ``read_header`` + ``read_embedding``
- ``pickles``     hostile pickles (code-running globals), mutated and wrapped as zip / legacy / bare
                  pickles -> the same readers; marker files must never appear
- ``expression``  merge expressions (grammar-made, mutated, random unicode) -> parse / unparse /
                  evaluate
- ``schedule``    learning-rate schedule strings and step counts -> parse_schedule / value
- ``templates``   template presets, custom templates, captions, tag shaping, TrainConfig values
- ``names``       embedding names -> validate_name / safe_join

The runner measures each case's peak memory above the resident size before it (``VmHWM`` reset
through ``/proc/self/clear_refs``; where that is not possible, the process peak) and its time.

    python -m devkit.fuzzing run --count 3000 --seed 0 --seeds DIR --workdir DIR --report FILE
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import pickle
import random
import re
import resource
import struct
import sys
import time
import traceback
import zipfile
import zlib
from collections import Counter
from pathlib import Path

TARGETS = ("formats", "pickles", "expression", "schedule", "templates", "names")
# Share of the total input budget per target (file formats cost the most per input and matter most).
WEIGHTS = {"formats": 0.35, "pickles": 0.08, "expression": 0.25, "schedule": 0.12, "templates": 0.10, "names": 0.10}
DEFAULT_EXAMPLES = 3000  # `make test`; `make fuzz` sets TOKENSMITH_FUZZ_EXAMPLES=100000
MEMORY_BOUND_MB = 256
SLOW_CASE_S = 10.0  # inputs slower than this are listed in the report (a figure; tests assert no duration)

INTERESTING_INTS = (0, 1, 2, 7, 255, 256, 767, 768, 769, 1024, 1280, 4096, 65535, 2**31 - 1, 2**31, 2**32 - 1,
                    2**32, 2**40, 2**53, 2**62, 2**63 - 1, -1, -2**31, -2**63)
UNICODE_SAMPLES = ("ｃａｔ", "с", "а", "е", "℮", "İ", "ß", "ǅ", "٣", "²", "①", "\u200b", "\u202e", "\ufeff", "\u0301",
                   "🐱", "\U0010ffff", "\ud800", "\x00", "\x7f", "\n", "\r", "\t", "ﬁ", "Ω", "Å", "𝟘", "\u3000")
TORCH_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


def budget(total: int) -> dict[str, int]:
    """Inputs per target for a total budget (the shares add up to at least ``total``)."""
    return {t: max(1, math.ceil(total * WEIGHTS[t])) for t in TARGETS}


def examples_from_env() -> int:
    raw = os.environ.get("TOKENSMITH_FUZZ_EXAMPLES", "").strip()
    return int(raw) if raw else DEFAULT_EXAMPLES


def case_rng(target: str, seed: int, index: int) -> random.Random:
    return random.Random(f"{target}:{seed}:{index}")


# ============================================================================ memory


class PeakMeter:
    """Peak resident memory of one piece of work, in MB above the resident size before it."""

    def __init__(self):
        self.per_case = self._can_reset()

    @staticmethod
    def _status() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])  # kB
        return out

    def _can_reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._status()
            return True
        except OSError:
            return False

    def start(self) -> float:
        if self.per_case:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident size
            return self._status()["VmRSS"] / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def growth(self, start: float) -> float:
        if self.per_case:
            return self._status()["VmHWM"] / 1024 - start
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start


# ============================================================================ byte mutators


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


def _utf8(text: str) -> str:
    """``text`` with lone surrogates replaced, for places that must encode it (zip entry names)."""
    return text.encode("utf-8", "replace").decode("utf-8")


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


# ============================================================================ pickles and torch zip files


def pickle_ops(data: bytes):
    """``[(opcode name, arg, pos)]`` of a pickle, or None when it does not parse."""
    import pickletools

    try:
        return [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data)]
    except Exception:  # damaged pickles are expected here
        return None


def _encode_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _op_length(data: bytes, ops, i: int) -> int:
    return (ops[i + 1][2] if i + 1 < len(ops) else len(data)) - ops[i][2]


def mutate_pickle(rng, data: bytes, ops=None) -> bytes:
    """Opcode-aware mutation: integers (shapes, numel, offsets) and strings (keys, dtypes, locations)."""
    ops = pickle_ops(data) if ops is None else ops
    if not ops:
        return mutate_bytes(rng, data)
    ints = [i for i, (name, _, _) in enumerate(ops) if name in ("BININT", "BININT1", "BININT2", "LONG1", "INT")]
    strs = [i for i, (name, _, _) in enumerate(ops) if name in ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE",
                                                                  "BINSTRING", "SHORT_BINSTRING")]
    choice = rng.randrange(6)
    if choice <= 1 and ints:
        i = rng.choice(ints)
        start, length = ops[i][2], _op_length(data, ops, i)
        value = rng.choice(INTERESTING_INTS + (ops[i][1] * 2 if isinstance(ops[i][1], int) else 0,))
        return data[:start] + _encode_int(value) + data[start + length:]
    if choice == 2 and strs:
        i = rng.choice(strs)
        start, length = ops[i][2], _op_length(data, ops, i)
        text = rng.choice(("cuda:0", "meta", "mps", "cpu", "storage", "FloatStorage", "string_to_param", "*",
                           "emb_params", "clip_g", "../../x", "", random_unicode(rng, 8), "x" * 5000))
        raw = text.encode("utf-8", "surrogatepass")
        return data[:start] + b"X" + struct.pack("<I", len(raw)) + raw + data[start + length:]
    if choice == 3:  # cut at an opcode boundary
        i = rng.randrange(len(ops))
        return data[: ops[i][2]]
    if choice == 4:  # drop or repeat one opcode
        i = rng.randrange(len(ops))
        start, length = ops[i][2], _op_length(data, ops, i)
        chunk = data[start:start + length]
        return data[:start] + (chunk * rng.randint(2, 3) if rng.random() < 0.5 else b"") + data[start + length:]
    return mutate_bytes(rng, data)


def zip_entries(data: bytes):
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    except Exception:
        return None


def build_zip(entries, compress: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, payload in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = (compress or {}).get(name, zipfile.ZIP_STORED)
            zf.writestr(info, payload)
    return buf.getvalue()


def patch_zip_sizes(rng, data: bytes) -> bytes:
    """Lie about a record's sizes in the local header and/or the central directory."""
    buf = bytearray(data)
    spots = [m.start() for m in re.finditer(rb"PK\x01\x02|PK\x03\x04", data)]
    if not spots:
        return mutate_bytes(rng, data)
    at = rng.choice(spots)
    value = rng.choice((0, 1, 0xFFFFFFFF, 0xFFFFFFF0, 2**31, len(data), rng.randrange(1 << 24)))
    if buf[at + 2:at + 4] == b"\x01\x02":
        field = rng.choice((20, 24, 28, 42))  # compressed size, uncompressed size, name length, local offset
    else:
        field = rng.choice((18, 22, 26))
    width = 2 if field in (26, 28) else 4
    if at + field + width <= len(buf):
        struct.pack_into("<H" if width == 2 else "<I", buf, at + field, value % (1 << (8 * width)))
    return bytes(buf)


def mutate_torch_zip(rng, data: bytes) -> bytes:
    entries = zip_entries(data)
    if not entries:
        return mutate_bytes(rng, data)
    choice = rng.randrange(7)
    if choice == 0:
        return patch_zip_sizes(rng, data)
    entries = list(entries)
    if choice in (1, 2):  # the pickle inside
        for i, (name, payload) in enumerate(entries):
            if name.endswith("data.pkl"):
                entries[i] = (name, mutate_pickle(rng, payload))
        return build_zip(entries)
    if choice == 3:  # a storage record
        recs = [i for i, (name, _) in enumerate(entries) if "/data/" in name]
        if recs:
            i = rng.choice(recs)
            entries[i] = (entries[i][0], rng.choice((truncate, duplicate_chunk, flip_bits))(rng, entries[i][1]))
        return build_zip(entries)
    if choice == 4:  # names: drop, rename, add
        i = rng.randrange(len(entries))
        if rng.random() < 0.4:
            del entries[i]
        else:
            name = rng.choice(("../evil/data.pkl", "/abs/data.pkl", "x/data.pkl", entries[i][0] + "\x00",
                               entries[i][0].replace("/", "\\"), _utf8(random_unicode(rng, 6)) + "/data.pkl", ""))
            entries.insert(rng.randrange(len(entries) + 1), (name, entries[i][1]))
        return build_zip(entries)
    if choice == 5:  # records deflated (small inflated sizes only: big ones are the dedicated bomb test)
        comp = {name: zipfile.ZIP_DEFLATED for name, _ in entries if rng.random() < 0.5}
        recs = [i for i, (name, _) in enumerate(entries) if "/data/" in name]
        if recs and rng.random() < 0.5:
            i = rng.choice(recs)
            entries[i] = (entries[i][0], b"\0" * rng.choice((8, 4096, 1 << 20, 4 << 20)))
        return build_zip(entries, comp)
    return mutate_bytes(rng, data)


def legacy_stream(obj_pickle: bytes, *, where: str = "object") -> bytes:
    """A torch legacy (non-zip) file whose ``where`` pickle is ``obj_pickle``: magic, protocol,
    sys_info, object, storage keys, as torch._legacy_load reads them in turn."""
    magic = pickle.dumps(TORCH_LEGACY_MAGIC_NUMBER, protocol=2)
    proto = pickle.dumps(1001, protocol=2)
    info = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    obj = pickle.dumps({}, protocol=2)
    keys = pickle.dumps([], protocol=2)
    parts = {"magic": magic, "protocol": proto, "sys_info": info, "object": obj, "keys": keys}
    parts[where] = obj_pickle
    return b"".join(parts[k] for k in ("magic", "protocol", "sys_info", "object", "keys"))


# ============================================================================ hostile pickles


def _v(text: str) -> bytes:
    """Protocol-0 UNICODE argument (text must not hold a newline)."""
    return b"V" + text.encode("raw_unicode_escape") + b"\n"


def _short_binunicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def hostile_pickles(marker_dir) -> list[tuple[str, bytes]]:
    """Pickles that run code (or touch the file system) when loaded by a plain unpickler.

    Each writes a file named after its label inside ``marker_dir`` when it runs, or removes the
    canary file ``marker_dir/canary`` / folder ``marker_dir/canary_dir``. Nothing here is ever
    loaded by TokenSmith with a plain unpickler: the test proves the opposite.
    """
    d = str(marker_dir)
    out: list[tuple[str, bytes]] = []

    def m(label: str) -> str:
        return os.path.join(d, f"ran_{label}")

    def add(label: str, body: bytes) -> None:
        out.append((label, body))

    # Protocol 0 text: GLOBAL + REDUCE
    for mod, fn in (("os", "system"), ("posix", "system"), ("nt", "system")):
        add(f"p0_{mod}_{fn}", b"c" + f"{mod}\n{fn}\n".encode() + b"(" + _v(f"touch {m(f'p0_{mod}')}") + b"tR.")
    for fn in ("check_call", "Popen", "run", "call", "check_output", "getoutput"):
        arg = (b"(" + _v("touch") + _v(m(f"sub_{fn}")) + b"l") if fn != "getoutput" else _v(f"touch {m('sub_' + fn)}")
        add(f"subprocess_{fn}", b"csubprocess\n" + fn.encode() + b"\n(" + arg + b"tR.")
    for mod in ("builtins", "__builtin__"):
        for fn in ("exec", "eval"):
            label = f"{mod}_{fn}"
            code = f"open({m(label)!r}, 'w').close()"
            add(label, b"c" + f"{mod}\n{fn}\n".encode() + b"(" + _v(code) + b"tR.")
    add("builtins_open", b"cbuiltins\nopen\n(" + _v(m("open")) + _v("w") + b"tR.")
    add("getattr_import_os_system",
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(" + _v("os") + b"tR" + _v("system") + b"tR("
        + _v(f"touch {m('getattr')}") + b"tR.")
    add("importlib_import_module",
        b"cbuiltins\ngetattr\n(cimportlib\nimport_module\n(" + _v("os") + b"tR" + _v("system") + b"tR("
        + _v(f"touch {m('importlib')}") + b"tR.")
    add("os_remove_canary", b"cos\nremove\n(" + _v(os.path.join(d, "canary")) + b"tR.")
    add("shutil_rmtree_canary", b"cshutil\nrmtree\n(" + _v(os.path.join(d, "canary_dir")) + b"tR.")
    add("os_rename_canary", b"cos\nrename\n(" + _v(os.path.join(d, "canary")) + _v(m("renamed")) + b"tR.")
    # INST and OBJ call the class / function with the marked arguments.
    add("inst_posix_system", b"(" + _v(f"touch {m('inst')}") + b"iposix\nsystem\n.")
    add("obj_posix_system", b"(cposix\nsystem\n" + _v(f"touch {m('obj')}") + b"o.")
    # Binary protocols: STACK_GLOBAL (4+), NEWOBJ, nested inside an embedding dict, memo tricks.
    for proto in (2, 3, 4, 5):
        head = b"\x80" + bytes([proto])
        if proto >= 4:
            glob = _short_binunicode("posix") + _short_binunicode("system") + b"\x93"
        else:
            glob = b"cposix\nsystem\n"
        call = glob + b"(" + _v(f"touch {m(f'proto{proto}')}") + b"tR"
        add(f"proto{proto}_system", head + call + b".")
        add(f"proto{proto}_nested_in_embedding",
            head + b"}(" + _v("string_to_param") + b"}(" + _v("*") + call + b"u" + _v("name") + _v("x") + b"u.")
        add(f"proto{proto}_memo", head + glob + b"q\x00h\x00(" + _v(f"touch {m(f'memo{proto}')}") + b"tR.")
    add("newobj_popen", b"\x80\x02csubprocess\nPopen\n(" + _v("touch") + _v(m("newobj")) + b"l\x85\x81.")
    inner = b"cposix\nsystem\n(" + _v(f"touch {m('inner')}") + b"tR."
    add("pickle_loads_inner", b"\x80\x03cpickle\nloads\nB" + struct.pack("<I", len(inner)) + inner + b"\x85R.")
    add("copyreg_reconstructor",
        b"\x80\x02ccopyreg\n_reconstructor\n(csubprocess\nPopen\ncbuiltins\nobject\nNtR.")
    add("ext_opcode", b"\x80\x02\x82\x01.")
    add("torch_load", b"\x80\x02ctorch\nload\n(" + _v(m("torch_load")) + b"tR.")
    add("torch_hub_load", b"\x80\x02ctorch.hub\nload\n(" + _v("x/y") + _v("z") + b"tR.")
    add("numpy_load", b"\x80\x02cnumpy\nload\n(" + _v(m("np")) + b"tR.")
    add("build_setstate", b"\x80\x02ccollections\nOrderedDict\n)R}(" + _v("__reduce__") + b"K\x00ub.")
    # ParameterDict first (which makes TokenSmith retry with its stand-in allowed), code after it.
    pd = b"ctorch.nn.modules.container\nParameterDict\n)\x81}(" + _v("_parameters") + b"}ub"
    evil = b"cposix\nsystem\n(" + _v(f"touch {m('after_paramdict')}") + b"tR"
    add("paramdict_then_system", b"\x80\x02}(" + _v("string_to_param") + pd + _v("evil") + evil + b"u.")
    add("system_then_paramdict", b"\x80\x02}(" + _v("evil") + evil + _v("string_to_param") + pd + b"u.")
    add("paramdict_setstate_system",
        b"\x80\x02ctorch.nn.modules.container\nParameterDict\n)\x81}(" + _v("_parameters") + evil + b"ub.")
    # persistent ids: the zip loader's persistent_load fed a code-running global
    add("persid_global", b"\x80\x02(" + _v("storage") + b"cposix\nsystem\n" + _v("0") + _v("cpu") + b"K\x01tQ.")
    return out


def hostile_files(marker_dir) -> list[tuple[str, bytes]]:
    """Every hostile pickle as a bare pickle, inside a torch zip file, and inside a legacy torch file
    (as the object, and as the sys_info record that is read first)."""
    files = []
    template_zip = _template_torch_zip()
    for label, body in hostile_pickles(marker_dir):
        files.append((f"{label}.bare.pt", body))
        if not body.startswith(b"\x80"):  # a PROTO opcode first makes a text pickle look like a binary one
            files.append((f"{label}.bare_proto.pt", b"\x80\x02" + body))
        entries = [(name, body if name.endswith("data.pkl") else payload) for name, payload in template_zip]
        files.append((f"{label}.zip.pt", build_zip(entries)))
        files.append((f"{label}.legacy.pt", legacy_stream(body)))
        if label.startswith(("p0_", "proto2")):
            files.append((f"{label}.legacy_sysinfo.pt", legacy_stream(body, where="sys_info")))
    return files


_TEMPLATE_ZIP = None


def _template_torch_zip():
    global _TEMPLATE_ZIP
    if _TEMPLATE_ZIP is None:
        import torch

        buf = io.BytesIO()
        torch.save({"emb_params": torch.zeros(1, 768)}, buf)
        _TEMPLATE_ZIP = zip_entries(buf.getvalue())
    return _TEMPLATE_ZIP


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


# ============================================================================ the formats target


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
        first = "header refused: " + _reason_key(exc)
    try:
        emb = read_embedding(path, name=rng.choice((None, None, "<cat>", "mytok", "x")))
    except TokenSmithError as exc:
        return "refused", f"{first} / {_reason_key(exc)}"
    check_embedding(emb, header)
    return "read", first


def _reason_key(exc) -> str:
    text = getattr(exc, "reason", None) or str(exc)
    text = re.sub(r"\d+", "N", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    return type(exc).__name__ + ":" + text[:60]


# ============================================================================ parsers


_EXPR_NAMES = ("a", "b", "cat", "EasyNegative", "sdxl", "sd2", "missing", "nan", "bad", "big", "L", "G", "x.y-z",
               "ｃａｔ", "_", "n0")


def _num_text(rng) -> str:
    return rng.choice(("0", "1", "2", "0.5", ".5", "5.", "1e3", "1E-3", "2.5e-1", "1e308", "1e309", "1e-320", "0.0",
                       "00", "000", "0000", "007", "123456789", "1234567890", str(rng.randint(0, 100)),
                       f"{rng.random():.6g}", "75", "76", "1e", "9" * 30))


def _expr_gen(rng, depth: int = 0) -> str:
    ws = lambda: rng.choice(("", "", " ", "  ", "\n", "\t"))  # noqa: E731

    def primary():
        r = rng.random()
        if r < 0.35:
            q = rng.choice("'\"")
            body = rng.choice(("a", "b", "cat", "a photo", "", "it''s", "x" * rng.randint(0, 50), "日本", "a b c d e",
                               random_unicode(rng, 6).replace(q, "")))
            return q + body + q
        if r < 0.6:
            return rng.choice(_EXPR_NAMES)
        if r < 0.7:
            return "`" + rng.choice(("bad hands 5", "a`b".replace("`", "``"), " x ", "ü")) + "`"
        if depth < 6:
            return "(" + ws() + _expr_gen(rng, depth + 1) + ws() + ")"
        return "'a'"

    def postfix():
        r = rng.random()
        if r < 0.3:
            return rng.choice("*/") + ws() + rng.choice(("", "-", "+")) + _num_text(rng) + rng.choice(("", "", "L", "G"))
        if r < 0.5:
            return ":" + rng.choice(("", "+", "-")) + _num_text(rng)
        return "," + ws() + (primary() if rng.random() < 0.8 else _num_text(rng))

    term = primary() + "".join(ws() + postfix() for _ in range(rng.choice((0, 0, 1, 2, 4))))
    for _ in range(rng.choice((0, 0, 1, 2, 3))):
        r = rng.random()
        if r < 0.75:
            term += ws() + rng.choice("+-") + ws() + primary() + "".join(postfix() for _ in range(rng.randint(0, 2)))
        else:
            term += ws() + "=" + "".join(rng.choice(("*2", "/2", ":3", ":+1", ":-1", "*0.5L", ",'a'"))
                                         for _ in range(rng.randint(1, 2)))
    return term


def _mutate_text(rng, text: str) -> str:
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


def make_expression_case(rng) -> str:
    from tokensmith.expression import MAX_DEPTH, MAX_LENGTH

    r = rng.random()
    if r < 0.55:
        return _expr_gen(rng)
    if r < 0.8:
        return _mutate_text(rng, _expr_gen(rng))
    if r < 0.9:
        return random_unicode(rng, 60)
    k = rng.choice((MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 5000))
    return rng.choice((
        "(" * k + "'a'" + ")" * k,
        "'a'" + ",'a'" * rng.choice((74, 75, 1100)),
        "'a'" + "+'a'" * 3000,
        "'" + "x" * (MAX_LENGTH - 2) + "'",
        "'" + "x" * (MAX_LENGTH - 1) + "'",
        "'a'" + ":+999999999" * 3 + "*1e308" * 30,
        "big" + ",big" * 20,
        "'a':75,'a':75",
    ))


def _expr_resolvers():
    import torch

    from tokensmith.embedding import Embedding
    from tokensmith.errors import EmbeddingNameError

    def rows(seed: int, n: int, widths: dict[str, int]):
        g = torch.Generator().manual_seed(seed)
        return {k: torch.randn(n, w, generator=g) for k, w in widths.items()}

    def text(t: str):
        words = t.split()
        return rows(len(t), min(len(words), 12), {"clip_l": 8, "clip_g": 12})

    def name(n: str):
        if n == "missing":
            raise EmbeddingNameError(f"no embedding named {n!r}")
        if n == "nan":
            return {"clip_l": torch.full((1, 8), float("nan")), "clip_g": torch.zeros(1, 12)}
        if n == "bad":
            return "not an embedding"
        if n == "big":
            return {"clip_l": torch.zeros(600, 8), "clip_g": torch.zeros(600, 12)}
        if n == "sd2":
            return Embedding(vectors=rows(2, 2, {"clip_h": 10}))
        if n == "sdxl":
            return Embedding(vectors=rows(3, 2, {"clip_l": 8, "clip_g": 12}))
        if n in ("L", "G"):
            return Embedding(vectors=rows(4, 1, {"clip_l": 8}))
        return Embedding(vectors=rows(len(n), 1 + len(n) % 3, {"clip_l": 8, "clip_g": 12}))

    def token(t):
        if isinstance(t, int) and t > 49407:
            raise EmbeddingNameError(f"token {t} is outside the vocabulary")
        return rows(7, 1, {"clip_l": 8, "clip_g": 12})

    return text, name, token


_RESOLVERS = None


def run_expression_case(text: str) -> tuple[str, str]:
    from tokensmith.embedding import MAX_VECTORS
    from tokensmith.errors import TokenSmithError
    from tokensmith.expression import evaluate, parse, unparse

    global _RESOLVERS
    if _RESOLVERS is None:
        _RESOLVERS = _expr_resolvers()
    try:
        ast = parse(text)
    except TokenSmithError as exc:
        return "refused", "parse: " + _reason_key(exc)
    printed = unparse(ast)
    assert parse(printed) == ast, f"round trip changed the tree: {printed!r}"
    try:
        emb = evaluate(ast, *_RESOLVERS)
    except TokenSmithError as exc:
        return "refused", "evaluate: " + _reason_key(exc)
    assert 1 <= emb.num_vectors <= MAX_VECTORS, emb.shapes()
    return "evaluated", ""


_GOOD_RATES = ("0.005", "5e-3", "1e-3", ".5", "5.", "0", "1E-4", "+1", "2.5e-2", "1e-10")
_BAD_RATES = ("-1", "1e400", "nan", "inf", "1_000", "٣", "１", "0x10", "", " ", "1e", "e5", "1.2.3", "1,5")


def _schedule_text(rng) -> str:
    def rate():
        if rng.random() < 0.85:
            return rng.choice(_GOOD_RATES + (f"{rng.random():.4g}",))
        return rng.choice(_BAD_RATES)

    counter = [0]

    def step():
        if rng.random() < 0.85:  # mostly increasing steps, so whole lists parse
            counter[0] += rng.randint(1, 500)
            return str(counter[0])
        return rng.choice(("-1", "0", "+5", "1e3", "1.5", "", "999999999999", "٣", "1000000001"))
    shape = rng.random()
    if shape < 0.15:
        return rate() + rng.choice((" -> ", "->", "-> ->")) + rate()
    parts = []
    count = rng.choice((1, 1, 2, 3, 5, 100, 101))
    for i in range(count):
        p = rate()
        if i < count - 1 or rng.random() < 0.3:
            p += ":" + step()
        if rng.random() < 0.03:
            p += ":" + step()
        parts.append(p)
    text = rng.choice((",", ", ", " ,")).join(parts)
    if rng.random() < 0.15:
        text = _mutate_text(rng, text)
    if rng.random() < 0.02:
        text = text * rng.choice((50, 500))
    return text


def make_schedule_case(rng):
    total = rng.choice((1, 2, 10, 100, 1000, 5000, 5000, 1_000_000_000, 1_000_000_001, 0, -1, True, 2.5,
                        rng.randint(1, 5000)))
    warmup = rng.choice((0, 0, 0, 0, 1, 5, 99, 100, 1000, -1, True, rng.randint(0, 200)))
    shape = rng.choice(("steps", "steps", "steps", "constant", "cosine", "linear", "", None))
    spec = _schedule_text(rng) if rng.random() < 0.97 else rng.choice((None, 5, b"0.1", ["1e-3"]))
    return spec, total, warmup, shape


def run_schedule_case(case) -> tuple[str, str]:
    from tokensmith.errors import TokenSmithError
    from tokensmith.schedule import parse_schedule

    spec, total, warmup, shape = case
    try:
        sched = parse_schedule(spec, total, warmup, shape)
    except TokenSmithError as exc:
        return "refused", _reason_key(exc)
    for step in sorted({1, 2, warmup if isinstance(warmup, int) and warmup > 0 else 1, total, total + 1,
                        min(total * 3, 10**12)}):
        value = sched.value(int(step))
        assert math.isfinite(value) and value >= 0, (step, value)
    assert isinstance(sched.describe(), str)
    for bad in (0, -1, True, 1.5):
        try:
            sched.value(bad)
        except TokenSmithError:
            continue
        raise AssertionError(f"value({bad!r}) was accepted")
    return "parsed", sched.shape


def make_templates_case(rng):
    from tokensmith.train_config import TrainConfig

    kind = rng.randrange(4)
    if kind == 0:
        preset = rng.choice(("object", "style", "negative", "custom", "custom", "Object", "", random_unicode(rng, 5)))
        lines = [rng.choice(("a photo of [name]", "[name], [filewords]", "[filewords]", "", "   ", "[NAME]",
                             "[name" , random_unicode(rng, 20), "[name]" * 3, "x" * 2100))
                 for _ in range(rng.choice((0, 1, 3, 20, 1001)))]
        return ("template_lines", preset, rng.choice(("\n", "\r\n", "\r", "\u2028")).join(lines))
    if kind == 1:
        lines = [rng.choice(("red ring, blue dot", "", " ", random_unicode(rng, 30), "a,,b", ",,,"))
                 for _ in range(rng.choice((0, 1, 2, 3, 5)))]
        return ("split_captions", rng.choice(("\n", "\r\n", "\x0b", "\x1c")).join(lines), rng.choice((0, 1, 3, 5, -1)))
    if kind == 2:
        tags = ", ".join(rng.choice(("red", "ring", "", " ", "[name]", "[filewords]", random_unicode(rng, 8)))
                         for _ in range(rng.randint(0, 12)))
        return ("shape", tags, rng.random() < 0.5, rng.choice((0.0, 0.3, 0.95, 1.0, -1.0, float("nan"), 2.0)),
                rng.choice((0, 1, 3, -2, 100)), rng.choice(("a photo of [name], [filewords]", "[filewords]", "[name]",
                                                            ", , [filewords] ,", random_unicode(rng, 10))))
    fields = TrainConfig.__dataclass_fields__
    values = {}
    for name in rng.sample(sorted(fields), rng.randint(1, 6)):
        default = fields[name].default
        if isinstance(default, bool):
            values[name] = rng.random() < 0.5
        elif isinstance(default, int):
            values[name] = rng.choice((0, 1, -1, 75, 76, 2**31, 257, 256, default))
        elif isinstance(default, float):
            values[name] = rng.choice((0.0, -0.1, 1.0, 0.95, float("nan"), float("inf"), 1e308, default))
        else:
            values[name] = rng.choice(("", "custom", "auto", "fp16", "bf16", "none", "median", "cosine", "../x", "a b",
                                       random_unicode(rng, 8), default))
    return ("config", values)


def run_templates_case(case) -> tuple[str, str]:
    from tokensmith.errors import TokenSmithError
    from tokensmith.templates import render, shape_caption, split_captions, template_lines
    from tokensmith.train_config import TrainConfig

    kind = case[0]
    try:
        if kind == "template_lines":
            lines = template_lines(case[1], case[2])
            assert lines and all(isinstance(x, str) and "[name]" in x for x in lines), lines[:3]
        elif kind == "split_captions":
            caps = split_captions(case[1], case[2])
            assert len(caps) == max(0, case[2]) or not case[1].strip(), (len(caps), case[2])
        elif kind == "shape":
            _, tags, shuffle, dropout, keep, template = case
            out = shape_caption(tags, random.Random(0), shuffle, dropout, keep)
            assert isinstance(out, str)
            prompt = render(template, out)
            assert isinstance(prompt, str)
            assert prompt.count("[name]") >= template.count("[name]"), (template, prompt)
        else:
            TrainConfig(**case[1]).validate()
    except TokenSmithError as exc:
        return "refused", f"{kind}: {_reason_key(exc)}"
    return "ok", kind


def make_names_case(rng) -> str:
    r = rng.random()
    if r < 0.3:
        return random_unicode(rng, 30)
    parts = []
    for _ in range(rng.randint(1, 4)):
        parts.append(rng.choice(("ok", "my-emb_1.2", "..", ".", "", ".hidden", "trail.", "CON", "con.txt", "LPT9", "a b",
                                 "ｃａｔ", "cаt", "x" * 129, "x" * 128, "a\0b", "C:", "\\\\server", "~", "$HOME",
                                 "%APPDATA%", "name.pt", "name.safetensors", "-rf", "a\\b", random_unicode(rng, 5))))
    sep = rng.choice(("/", "/", "\\", "//", "/../", "/./"))
    text = sep.join(parts)
    if rng.random() < 0.2:
        text = rng.choice(("/", "../", "../../", "C:\\", "\\", "/tmp/", "~/")) + text
    if rng.random() < 0.05:
        text = text * 20
    return text


def _encodable(text: str) -> bool:
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return True


def run_names_case(name: str, root: Path) -> tuple[str, str]:
    from tokensmith.errors import TokenSmithError
    from tokensmith.names import safe_join, validate_name

    try:
        clean = validate_name(name)
        assert re.fullmatch(r"[A-Za-z0-9._/-]+", clean), clean
        assert ".." not in clean.split("/") and not clean.startswith("/") and len(clean) <= 255, clean
        target = safe_join(root, clean + ".safetensors")
        assert os.path.commonpath([str(root.resolve()), str(target)]) == str(root.resolve()), target
        first = "valid"
    except TokenSmithError as exc:
        first = "name refused: " + _reason_key(exc)
    if not _encodable(name):
        return "refused", first  # lone surrogates in safe_join: a separate, known case (tests/fuzz/test_bounds.py)
    try:
        target = safe_join(root, name)
        base = str(root.resolve())
        assert os.path.commonpath([base, str(target)]) == base and str(target) != base, target
        return "joined", first
    except TokenSmithError as exc:
        return "join-refused", f"{first} / {_reason_key(exc)}"


# ============================================================================ runner


class Context:
    def __init__(self, seeds_dir, workdir, marker_dir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.marker_dir = Path(marker_dir) if marker_dir else self.workdir / "markers"
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.seeds = Seeds(seeds_dir) if seeds_dir else None
        self._hostile = None
        self.names_root = self.workdir / "names_root"
        self.names_root.mkdir(exist_ok=True)
        # What the hostile pickles would delete: both must still be there after a run.
        (self.marker_dir / "canary").touch()
        (self.marker_dir / "canary_dir").mkdir(exist_ok=True)

    @property
    def hostile(self):
        if self._hostile is None:
            self._hostile = [body for _, body in hostile_files(self.marker_dir)]
        return self._hostile


def make_case(target: str, rng, ctx: Context):
    if target == "formats":
        return make_format_case(rng, ctx.seeds)
    if target == "pickles":
        data = rng.choice(ctx.hostile)
        if rng.random() < 0.7:
            data = mutate_torch_zip(rng, data) if data.startswith(b"PK") else mutate_pickle(rng, data)
        return data
    if target == "expression":
        return make_expression_case(rng)
    if target == "schedule":
        return make_schedule_case(rng)
    if target == "templates":
        return make_templates_case(rng)
    if target == "names":
        return make_names_case(rng)
    raise ValueError(target)


def run_case(target: str, case, rng, ctx: Context) -> tuple[str, str]:
    if target in ("formats", "pickles"):
        return run_format_case(case, ctx.workdir, rng)
    if target == "expression":
        return run_expression_case(case)
    if target == "schedule":
        return run_schedule_case(case)
    if target == "templates":
        return run_templates_case(case)
    return run_names_case(case, ctx.names_root)


def run_target(target: str, seed: int, count: int, ctx: Context, progress_fd: int | None = None,
               shard: int = 0, shards: int = 1) -> dict:
    """Run cases ``shard, shard + shards, ...`` below ``count``; returns counts, escapes (anything but a
    TokenSmithError, or a broken property), the largest per-case memory growth and time."""
    import warnings

    meter = PeakMeter()
    outcomes: Counter = Counter()
    distinct: set[str] = set()  # how many different ways the cases ended: a rough view of coverage
    escapes, over_memory, slow = [], [], []
    max_growth, max_growth_index = 0.0, None
    max_time, max_time_index = 0.0, None
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in range(shard, count, shards):
            if progress_fd is not None:
                os.pwrite(progress_fd, f"{target} {seed} {index}\n".ljust(64).encode(), 0)
            rng = case_rng(target, seed, index)
            case = make_case(target, rng, ctx)
            mem0 = meter.start()
            t0 = time.perf_counter()
            try:
                category, detail = run_case(target, case, rng, ctx)
            except Exception as exc:  # collected and reported, never swallowed
                category, detail = "ESCAPE", type(exc).__name__
                if len(escapes) < 20:
                    escapes.append({"index": index, "type": type(exc).__name__, "message": str(exc)[:300],
                                    "traceback": traceback.format_exc(limit=-4)[-1500:], "input": _describe_case(case)})
            elapsed = time.perf_counter() - t0
            growth = meter.growth(mem0)
            outcomes[category] += 1
            distinct.add(f"{category} {detail}"[:120])
            if growth > max_growth:
                max_growth, max_growth_index = growth, index
            if growth > MEMORY_BOUND_MB and len(over_memory) < 20:
                over_memory.append({"index": index, "growth_mb": round(growth, 1), "input": _describe_case(case)})
            if elapsed > max_time:
                max_time, max_time_index = elapsed, index
            if elapsed > SLOW_CASE_S and len(slow) < 20:
                slow.append({"index": index, "seconds": round(elapsed, 2), "input": _describe_case(case)})
    return {
        "target": target, "seed": seed, "count": len(range(shard, count, shards)),
        "wall_s": round(time.perf_counter() - started, 3),
        "outcomes": dict(outcomes), "distinct_outcomes": len(distinct), "escapes": escapes,
        "escape_count": outcomes.get("ESCAPE", 0),
        "over_memory": over_memory, "max_growth_mb": round(max_growth, 1), "max_growth_index": max_growth_index,
        "slow": slow, "max_case_s": round(max_time, 3), "max_case_index": max_time_index,
        "per_case_memory": meter.per_case,
    }


def _describe_case(case) -> str:
    if isinstance(case, (bytes, bytearray)):
        return f"{len(case)} bytes: {bytes(case[:80])!r}..."
    return repr(case)[:300]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run targets and write a JSON report")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--count", type=int, default=None, help="total inputs (split by WEIGHTS); default from env")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="folder of seed files (needed by the formats target)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--markers", help="folder the hostile pickles would write into")
    p.add_argument("--report", required=True)
    p.add_argument("--shard", type=int, default=0, help="this process runs case indices shard, shard + shards, ...")
    p.add_argument("--shards", type=int, default=1)
    r = sub.add_parser("repro", help="rebuild and run one case, showing any exception")
    r.add_argument("target", choices=TARGETS)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--index", type=int, required=True)
    r.add_argument("--seeds")
    r.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    if args.command == "repro":
        import tempfile

        ctx = Context(args.seeds, args.workdir or tempfile.mkdtemp(prefix="tokensmith-fuzz-"), None)
        rng = case_rng(args.target, args.seed, args.index)
        case = make_case(args.target, rng, ctx)
        print("input:", _describe_case(case))
        print("outcome:", *run_case(args.target, case, rng, ctx))
        return 0

    total = args.count if args.count is not None else examples_from_env()
    shares = budget(total)
    targets = [t for t in args.targets.split(",") if t]
    ctx = Context(args.seeds, args.workdir, args.markers)
    progress = os.open(os.path.join(args.workdir, "progress"), os.O_RDWR | os.O_CREAT, 0o644)
    # Warm-up: imports and first-use allocations must not count as a case's memory.
    for target in targets:
        run_target(target, args.seed + 10_000, 3, ctx)
    report = {"total_budget": total, "baseline_rss_mb": round(PeakMeter._status()["VmRSS"] / 1024, 1), "targets": {}}
    started = time.perf_counter()
    for target in targets:
        report["targets"][target] = run_target(target, args.seed, shares[target], ctx, progress, args.shard, args.shards)
        with open(args.report, "w") as fh:  # written after every target, so a crash leaves what was done
            json.dump(report, fh, indent=1)
    report["wall_s"] = round(time.perf_counter() - started, 2)
    report["inputs"] = sum(t["count"] for t in report["targets"].values())
    with open(args.report, "w") as fh:
        json.dump(report, fh, indent=1)
    os.close(progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
