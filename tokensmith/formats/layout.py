"""Which keys of a file hold the embedding, for every key layout other tools write.

Works on shapes only, so the same rules serve the header-only listing (``read_header``) and the
full read (``read_embedding``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..embedding import CLIP_ENCODERS, ENCODER_WIDTHS, WIDTH_TO_ENCODER
from ..errors import EmbeddingFileError

BUNDLE_PREFIX = "bundle_emb."
A1111_METADATA_KEYS = ("name", "step", "sd_checkpoint", "sd_checkpoint_name")


@dataclass
class Plan:
    """Where the vectors are: ``keys`` maps encoder -> key in the container (or a path of keys)."""

    source_format: str
    keys: dict[str, object]
    metadata: dict[str, str] = field(default_factory=dict)
    step: int | None = None


def encoder_for_width(width: int, path, what: str) -> str:
    enc = WIDTH_TO_ENCODER.get(width)
    if enc is None:
        known = ", ".join(f"{w} ({k})" for k, w in ENCODER_WIDTHS.items())
        raise EmbeddingFileError(path, f"{what} has width {width}, which matches no known text encoder ({known})")
    return enc


def check_shape(shape: tuple[int, ...], path, what: str) -> tuple[int, int]:
    """(vectors, width) for a 1-D or 2-D embedding tensor; refuses anything else."""
    if len(shape) == 1:
        n, d = 1, shape[0]
    elif len(shape) == 2:
        n, d = shape
    else:
        raise EmbeddingFileError(path, f"{what} has shape {list(shape)}; an embedding tensor must be 1-D or 2-D")
    if n < 1 or d < 1:
        raise EmbeddingFileError(path, f"{what} is empty (shape {list(shape)})")
    return n, d


def parse_step(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    # isdecimal, not isdigit: int() refuses digits such as "²"; one minus sign only ("--3" is no number)
    if isinstance(value, str) and value.strip().removeprefix("-").isdecimal():
        return int(value.strip())
    return None


def _strip_token(key: str) -> str:
    return key[1:-1] if len(key) > 2 and key.startswith("<") and key.endswith(">") else key


def _bundles(shapes: dict[str, tuple[int, ...]], path) -> dict[str, dict[str, str]]:
    """``{bundle name: {encoder: key}}`` from ``bundle_emb.<name>.<encoder>`` and
    ``bundle_emb.<name>.string_to_param.<token>`` keys, in file order."""
    bundles: dict[str, dict[str, str]] = {}
    for key, shape in shapes.items():
        if not key.startswith(BUNDLE_PREFIX):
            continue
        rest = key[len(BUNDLE_PREFIX):]
        if ".string_to_param." in rest:
            bname = rest.split(".string_to_param.", 1)[0]
            _, width = check_shape(shape, path, f"tensor {key!r}")
            enc = encoder_for_width(width, path, f"tensor {key!r}")
        else:
            bname, _, enc = rest.rpartition(".")
            if enc not in ENCODER_WIDTHS or not bname:
                continue
        if bname:
            bundles.setdefault(bname, {})[enc] = key
    return bundles


def plan_flat(shapes: dict[str, tuple[int, ...]], path, *, name: str | None = None,
              metadata: dict[str, str] | None = None) -> Plan:
    """Pick the embedding keys of a flat ``{key: tensor}`` container (safetensors, or a pickled dict)."""
    metadata = dict(metadata or {})
    step = parse_step(metadata.get("step"))
    is_ours = metadata.get("tool", "").startswith("tokensmith")

    if "emb_params" in shapes:  # kohya / Civitai, and our own single-encoder files
        _, width = check_shape(shapes["emb_params"], path, "tensor 'emb_params'")
        enc = encoder_for_width(width, path, "tensor 'emb_params'")
        declared = metadata.get("encoders", "")
        if is_ours and declared in ENCODER_WIDTHS and ENCODER_WIDTHS[declared] == width:
            enc = declared
        return Plan("tokensmith" if is_ours else "safetensors_emb_params", {enc: "emb_params"}, metadata, step)

    encoder_keys = [k for k in shapes if k in ENCODER_WIDTHS]
    if encoder_keys:
        for key in encoder_keys:
            _, width = check_shape(shapes[key], path, f"tensor {key!r}")
            # CLIP widths are fixed; the other keys name an encoder kind whose width varies between models
            # (ComfyUI's Cosmos reads 1024-wide t5xxl vectors, SD3 and Flux 4096-wide ones): the key decides
            if key in CLIP_ENCODERS and width != ENCODER_WIDTHS[key]:
                raise EmbeddingFileError(path, f"tensor {key!r} has width {width}, but {key} vectors are "
                                         f"{ENCODER_WIDTHS[key]} wide")
        keys = {k: k for k in encoder_keys}
        fmt = "sdxl" if set(keys) == {"clip_l", "clip_g"} else "per_encoder"
        return Plan("tokensmith" if is_ours else fmt, keys, metadata, step)

    bundles = _bundles(shapes, path)
    if bundles:
        chosen = name if name in bundles else next(iter(bundles))
        metadata["bundle"] = chosen
        if len(bundles) > 1:
            metadata["bundles"] = ",".join(bundles)
        return Plan("lora_bundle", dict(bundles[chosen]), metadata, step)

    if not shapes:
        raise EmbeddingFileError(path, "file holds no tensors")
    if len(shapes) == 1:
        key = next(iter(shapes))
    else:
        matches = [k for k in shapes if name is not None and _strip_token(k) == _strip_token(name)]
        if not matches:
            listed = ", ".join(repr(k) for k in list(shapes)[:5])
            more = f" and {len(shapes) - 5} more" if len(shapes) > 5 else ""
            raise EmbeddingFileError(
                path, f"file holds {len(shapes)} tensors ({listed}{more}) and none is an embedding key "
                f"(emb_params, {', '.join(ENCODER_WIDTHS)}, bundle_emb.*); if it is a diffusers file with "
                "several tokens, pass the token as the name")
        key = matches[0]
    _, width = check_shape(shapes[key], path, f"tensor {key!r}")
    metadata.setdefault("token", key)
    return Plan("diffusers", {encoder_for_width(width, path, f"tensor {key!r}"): key}, metadata, step)


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def plan_object(obj: object, path, *, name: str | None = None, a1111_format: str = "a1111_pt"):
    """Plan for a pickled / JSON object: A1111's ``{'string_to_param': {...}, 'name', 'step', ...}``
    or a flat ``{key: tensor}`` dict (kohya .pt, SDXL .pt, diffusers .bin).

    Returns ``(plan, tensors)`` where ``plan.keys`` maps encoder -> key of ``tensors``.
    """
    if not isinstance(obj, dict):
        raise EmbeddingFileError(path, f"file holds a {type(obj).__name__}, not a dictionary of embedding tensors")
    meta = {}
    for key in A1111_METADATA_KEYS:
        text = _scalar_text(obj.get(key))
        if text is not None:
            meta[key] = text
    step = parse_step(obj.get("step"))

    if "string_to_param" in obj:
        params = obj["string_to_param"]
        if not isinstance(params, dict):
            raise EmbeddingFileError(path, f"'string_to_param' is a {type(params).__name__}, not a dictionary")
        if len(params) != 1:
            raise EmbeddingFileError(path, f"'string_to_param' holds {len(params)} terms; an embedding file has one")
        token, tensor = next(iter(params.items()))
        if not isinstance(tensor, torch.Tensor):
            raise EmbeddingFileError(path, f"string_to_param[{token!r}] is not a tensor")
        _, width = check_shape(tuple(tensor.shape), path, f"string_to_param[{token!r}]")
        enc = encoder_for_width(width, path, f"string_to_param[{token!r}]")
        key = f"string_to_param.{token}"
        return Plan(a1111_format, {enc: key}, meta, step), {key: tensor}

    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise EmbeddingFileError(path, "file holds no tensors (not an embedding)")
    plan = plan_flat({k: tuple(v.shape) for k, v in tensors.items()}, path, name=name, metadata=meta)
    plan.step = step if step is not None else plan.step
    return plan, tensors
