"""The ``pickles`` target: hostile pickles (code-running globals), mutated and wrapped as zip /
legacy / bare pickles, then read by the embedding readers (``formats.run_format_case``); marker
files must never appear. Also the pickle and torch zip mutators the ``formats`` target uses."""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import zipfile

from devkit.fuzzing.shared import (
    INTERESTING_INTS,
    duplicate_chunk,
    flip_bits,
    mutate_bytes,
    random_unicode,
    truncate,
)

TORCH_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


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


def _utf8(text: str) -> str:
    """``text`` with lone surrogates replaced, for places that must encode it (zip entry names)."""
    return text.encode("utf-8", "replace").decode("utf-8")


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


def make_pickles_case(rng, hostile: list[bytes]) -> bytes:
    data = rng.choice(hostile)
    if rng.random() < 0.7:
        data = mutate_torch_zip(rng, data) if data.startswith(b"PK") else mutate_pickle(rng, data)
    return data
