"""Builders for embedding files laid out the way other tools write them (A1111, kohya, diffusers,
OneTrainer LoRA bundles, A1111 PNG cards). Shared by the core tests, other suites and fuzzers.

The PNG "drawn data" builder here is deliberately a plain, loop-by-loop implementation of A1111's
layout (per-value LCG generator, np.resize padding), independent of TokenSmith's vectorised
decoder, so the two check each other.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

WIDTHS = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280, "t5xxl": 4096}
A1111_TOKEN_ID = 265  # A1111 always stores {'*': 265} as string_to_token


def vectors(n: int = 2, width: int = 768, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, width, generator=g) * 0.02).to(dtype)


def a1111_dict(vec: torch.Tensor, name: str = "golden", step: int | None = 500,
               checkpoint: str | None = "abcdef1234", checkpoint_name: str | None = "v1-5-pruned") -> dict:
    """What A1111's Embedding.save() passes to torch.save."""
    return {
        "string_to_token": {"*": A1111_TOKEN_ID},
        "string_to_param": {"*": vec},
        "name": name,
        "step": step,
        "sd_checkpoint": checkpoint,
        "sd_checkpoint_name": checkpoint_name,
    }


def _patch_location(raw: bytes, location: str) -> bytes:
    """Rewrite the pickled storage location 'cpu' (BINUNICODE) as ``location``, as if the
    tensors had been saved from that device."""
    old = b"X\x03\x00\x00\x00cpu"
    new = b"X" + struct.pack("<I", len(location)) + location.encode()
    assert old in raw, "storage location not found in pickle"
    return raw.replace(old, new)


def _rewrite_zip(path: Path, patch) -> None:
    with zipfile.ZipFile(path) as zin:
        entries = [(info.filename, zin.read(info.filename)) for info in zin.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for fname, data in entries:
            zout.writestr(fname, patch(data) if fname.endswith("data.pkl") else data)
    path.write_bytes(buf.getvalue())


def torch_file(path, obj, *, legacy: bool = False, location: str | None = None) -> Path:
    """torch.save(obj) as the zip (default) or legacy layout; ``location`` e.g. 'cuda:0' makes
    the file look saved from a GPU."""
    path = Path(path)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    if location is not None:
        if legacy:
            path.write_bytes(_patch_location(path.read_bytes(), location))
        else:
            _rewrite_zip(path, lambda data: _patch_location(data, location))
    return path


def a1111_pt(path, vec=None, *, legacy=False, location=None, **kw) -> Path:
    return torch_file(path, a1111_dict(vectors() if vec is None else vec, **kw), legacy=legacy, location=location)


def a1111_parameterdict_pt(path, vec=None, *, legacy=False, name="old") -> Path:
    """The early textual-inversion layout: string_to_param is a torch.nn.ParameterDict."""
    vec = vectors() if vec is None else vec
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vec.clone())})
    return torch_file(path, {"string_to_token": {"*": A1111_TOKEN_ID}, "string_to_param": params, "name": name},
                      legacy=legacy)


def kohya_safetensors(path, vec=None, metadata: dict[str, str] | None = None) -> Path:
    save_file({"emb_params": (vectors() if vec is None else vec).contiguous()}, str(path), metadata=metadata)
    return Path(path)


def sdxl_safetensors(path, l_vec=None, g_vec=None) -> Path:
    l_vec = vectors(2, 768, 1) if l_vec is None else l_vec
    g_vec = vectors(l_vec.shape[0], 1280, 2) if g_vec is None else g_vec
    save_file({"clip_g": g_vec.contiguous(), "clip_l": l_vec.contiguous()}, str(path))
    return Path(path)


def sdxl_pt(path, l_vec=None, g_vec=None, *, legacy=False) -> Path:
    l_vec = vectors(2, 768, 1) if l_vec is None else l_vec
    g_vec = vectors(l_vec.shape[0], 1280, 2) if g_vec is None else g_vec
    return torch_file(path, {"clip_l": l_vec, "clip_g": g_vec}, legacy=legacy)


def per_encoder_safetensors(path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Path(path)


def diffusers_bin(path, token="<golden>", vec=None) -> Path:
    """diffusers' learned_embeds.bin: {token: [d]} (one vector) or {token: [n, d]}."""
    return torch_file(path, {token: vectors(1, 768)[0] if vec is None else vec})


def diffusers_safetensors(path, token="<golden>", vec=None) -> Path:
    save_file({token: (vectors(1, 768)[0] if vec is None else vec).contiguous()}, str(path))
    return Path(path)


def lora_bundle(path, bundles: dict[str, dict[str, torch.Tensor] | torch.Tensor], *, lora_width=8) -> Path:
    """A LoRA file with embeddings bundled the OneTrainer way. A bundle given as a tensor is
    stored as ``bundle_emb.<name>.string_to_param.*``; a dict as ``bundle_emb.<name>.<encoder>``."""
    g = torch.Generator().manual_seed(7)
    sd = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(lora_width, 320, generator=g),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(320, lora_width, generator=g),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(float(lora_width)),
    }
    for name, value in bundles.items():
        if isinstance(value, torch.Tensor):
            sd[f"bundle_emb.{name}.string_to_param.*"] = value
        else:
            for enc, t in value.items():
                sd[f"bundle_emb.{name}.{enc}"] = t
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"ss_network_module": "networks.lora"})
    return Path(path)


# ----------------------------------------------------------------------------- PNG (A1111)

def _tensor_json(obj):
    if isinstance(obj, torch.Tensor):
        return {"TORCHTENSOR": obj.detach().cpu().numpy().tolist()}
    raise TypeError(type(obj).__name__)


def embedding_json(data: dict) -> bytes:
    return json.dumps(data, default=_tensor_json).encode()


def picture(w: int = 64, h: int = 48, seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(30, 230, size=(h, w, 3), dtype=np.uint8), mode="RGB")


def png_text(path, data: dict, *, image=None, chunk: str = "tEXt", key: str = "sd-ti-embedding") -> Path:
    """A PNG carrying base64(JSON) in a tEXt (A1111's choice), zTXt or iTXt chunk."""
    value = base64.b64encode(embedding_json(data)).decode("ascii")
    info = PngImagePlugin.PngInfo()
    if chunk == "tEXt":
        info.add_text(key, value)
    elif chunk == "zTXt":
        info.add_text(key, value, zip=True)
    elif chunk == "iTXt":
        info.add_itxt(key, value, zip=True)
    else:
        raise ValueError(chunk)
    (picture() if image is None else image).save(path, format="PNG", pnginfo=info)
    return Path(path)


def lcg_values(count: int) -> list[int]:
    """A1111's generator, one value at a time: x = (a x + c) mod 2^32, yield x % 255."""
    out, seed = [], 0
    for _ in range(count):
        seed = (1664525 * seed + 1013904223) % 2**32
        out.append(seed % 255)
    return out


def _xor_lcg(block: np.ndarray) -> np.ndarray:
    rand = np.array(lcg_values(block.size), dtype=np.uint8).reshape(block.shape)
    return block.astype(np.uint8) ^ (rand & 0x0F)


def draw_payload(image: Image.Image, payload: bytes) -> Image.Image:
    """A1111's insert_image_data_embed layout (with a flat decoration in the high nibbles)."""
    d, h = 3, image.size[1]
    arr = np.frombuffer(payload, np.uint8)
    size = arr.shape[0] + (h - (arr.shape[0] % h))
    size = size + ((h * d) - (size % (h * d)))
    low = _xor_lcg(np.resize(arr & 0x0F, size).reshape((h, -1, d))) | 0x50
    high = _xor_lcg(np.resize(arr >> 4, size).reshape((h, -1, d))) | 0xA0
    im_low, im_high = Image.fromarray(low, mode="RGB"), Image.fromarray(high, mode="RGB")
    out = Image.new("RGB", (image.size[0] + im_low.size[0] + im_high.size[0] + 2, h), (0, 0, 0))
    out.paste(im_low, (0, 0))
    out.paste(image, (im_low.size[0] + 1, 0))
    out.paste(im_high, (im_low.size[0] + 1 + image.size[0] + 1, 0))
    return out


def png_drawn(path, data: dict | None = None, *, image=None, payload: bytes | None = None) -> Path:
    """A PNG with the embedding drawn beside the picture and NO text chunk (as after a site strips
    metadata). ``payload`` overrides the zlib(JSON) bytes (for hostile cases)."""
    if payload is None:
        payload = zlib.compress(embedding_json(data), level=9)
    draw_payload(picture() if image is None else image, payload).save(path, format="PNG")
    return Path(path)


def read_drawn_payload(image: Image.Image) -> bytes:
    """A1111's extract_image_data_embed, plainly: crop black borders, low nibbles, split at the
    black columns, un-XOR, join nibbles. Used to check TokenSmith's own encoder."""
    arr = np.array(image.convert("RGB"), dtype=np.uint8)
    mask = (arr > 0).all(2)
    rows, cols = np.where(mask.any(1))[0], np.where(mask.any(0))[0]
    arr = arr[rows.min():rows.max() + 1, cols.min():cols.max() + 1] & 0x0F
    black = np.where(arr.sum(axis=(0, 2)) == 0)[0]
    lower = _xor_lcg(arr[:, :black.min(), :])
    upper = _xor_lcg(arr[:, black.max() + 1:, :])
    return ((upper << 4) | lower).flatten().tobytes()


# ----------------------------------------------------------------------------- hostile files

class _RunsCode:
    """Pickles as a call to os.system: loading it with a plain unpickler would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pt(path, marker, *, layout: str = "zip") -> Path:
    """A .pt whose pickle would run ``touch marker`` (zip / legacy torch layouts, or a bare pickle)."""
    payload = {"string_to_param": {"*": vectors()}, "evil": _RunsCode(marker)}
    if layout == "pickle":
        Path(path).write_bytes(pickle.dumps(payload, protocol=4))
        return Path(path)
    return torch_file(path, payload, legacy=(layout == "legacy"))


def safetensors_raw(path, header: dict, data: bytes = b"", *, header_len: int | None = None) -> Path:
    """A safetensors file from a hand-written header (for malformed cases)."""
    raw = json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    Path(path).write_bytes(struct.pack("<Q", n) + raw + data)
    return Path(path)


def png_with_chunk(path, ctype: bytes, payload: bytes, image=None) -> Path:
    """A PNG with one extra raw chunk (before IEND), correct CRC."""
    buf = io.BytesIO()
    (picture() if image is None else image).save(buf, format="PNG")
    raw = buf.getvalue()
    iend = raw.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))
    Path(path).write_bytes(raw[:iend] + chunk + raw[iend:])
    return Path(path)


def all_goldens(folder) -> dict[str, tuple[Path, str, dict[str, torch.Tensor]]]:
    """One file of every supported layout: ``{label: (path, expected source_format, vectors)}``."""
    folder = Path(folder)
    v = vectors(3, 768, 11)
    l2, g2 = vectors(2, 768, 12), vectors(2, 1280, 13)
    t5 = vectors(2, 4096, 14)
    h = vectors(4, 1024, 15)
    d1 = vectors(1, 768, 16)
    out = {
        "a1111_zip": (a1111_pt(folder / "a1111_zip.pt", v), "a1111_pt", {"clip_l": v}),
        "a1111_legacy": (a1111_pt(folder / "a1111_legacy.pt", v, legacy=True), "a1111_pt", {"clip_l": v}),
        "a1111_paramdict": (a1111_parameterdict_pt(folder / "old.pt", v), "a1111_pt_parameterdict", {"clip_l": v}),
        "kohya_l": (kohya_safetensors(folder / "kohya_l.safetensors", v), "safetensors_emb_params", {"clip_l": v}),
        "kohya_h": (kohya_safetensors(folder / "kohya_h.safetensors", h), "safetensors_emb_params", {"clip_h": h}),
        "sdxl_st": (sdxl_safetensors(folder / "sdxl.safetensors", l2, g2), "sdxl", {"clip_l": l2, "clip_g": g2}),
        "sdxl_pt": (sdxl_pt(folder / "sdxl.pt", l2, g2), "sdxl", {"clip_l": l2, "clip_g": g2}),
        "t5": (per_encoder_safetensors(folder / "t5.safetensors", {"t5xxl": t5}), "per_encoder", {"t5xxl": t5}),
        "diffusers_bin": (diffusers_bin(folder / "learned_embeds.bin", "<cat>", d1[0]), "diffusers", {"clip_l": d1}),
        "diffusers_st": (diffusers_safetensors(folder / "diff.safetensors", "<cat>", v), "diffusers", {"clip_l": v}),
        "lora_bundle": (lora_bundle(folder / "lora.safetensors", {"mytok": {"clip_l": l2, "clip_g": g2}}),
                        "lora_bundle", {"clip_l": l2, "clip_g": g2}),
        "png_text": (png_text(folder / "card.png", a1111_dict(v)), "png_text", {"clip_l": v}),
        "png_drawn": (png_drawn(folder / "drawn.png", a1111_dict(v)), "png_drawn", {"clip_l": v}),
    }
    return out
