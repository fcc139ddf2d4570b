"""Exact behaviour of the key-layout rules (tokensmith.formats.layout) on shapes and objects made by
hand: each layout's whole Plan (format, keys, metadata, step), every refusal word for word, which
width names which encoder, which shapes are embeddings, which step values count, how a token's
angle brackets are matched, which keys make a LoRA bundle, and which A1111 fields become metadata."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from tests.core.refusals import refused
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding
from tokensmith.formats.layout import (
    Plan,
    _bundles,
    _strip_token,
    check_shape,
    encoder_for_width,
    parse_step,
    plan_flat,
    plan_object,
)

PATH = "/models/embeddings/x.safetensors"
KNOWN = ("768 (clip_l), 1024 (clip_h), 1280 (clip_g), 4096 (t5xxl), 2560 (qwen3_4b), 3584 (qwen25_7b), "
         "2304 (gemma2_2b)")
KEYS = "emb_params, clip_l, clip_h, clip_g, t5xxl, qwen3_4b, qwen25_7b, gemma2_2b, bundle_emb.*"


def refusal(message: str):
    return refused(f"{PATH}: {message}", EmbeddingFileError)


# ------------------------------------------------------------------ widths, shapes, steps, tokens


@pytest.mark.parametrize("width, enc", [(768, "clip_l"), (1024, "clip_h"), (1280, "clip_g"), (4096, "t5xxl"),
                                        (2560, "qwen3_4b"), (3584, "qwen25_7b"), (2304, "gemma2_2b")])
def test_each_known_width_names_its_encoder(width, enc):
    assert encoder_for_width(width, PATH, "tensor 'v'") == enc


def test_an_unknown_width_is_refused_listing_every_known_one():
    with refusal(f"tensor 'v' has width 769, which matches no known text encoder ({KNOWN})") as caught:
        encoder_for_width(769, PATH, "tensor 'v'")
    assert caught.value.path == PATH


@pytest.mark.parametrize("shape, expected", [((768,), (1, 768)), ((1,), (1, 1)), ((3, 768), (3, 768)),
                                             ((1, 1), (1, 1))])
def test_one_and_two_dimensional_shapes_give_vectors_and_width(shape, expected):
    assert check_shape(shape, PATH, "tensor 'v'") == expected


@pytest.mark.parametrize("shape", [(), (1, 2, 768), (1, 1, 1, 1)])
def test_other_ranks_are_refused_with_the_shape(shape):
    with refusal(f"tensor 'v' has shape {list(shape)}; an embedding tensor must be 1-D or 2-D"):
        check_shape(shape, PATH, "tensor 'v'")


@pytest.mark.parametrize("shape", [(0,), (0, 768), (2, 0), (0, 0)])
def test_a_shape_without_vectors_or_width_is_refused_as_empty(shape):
    with refusal(f"tensor 'v' is empty (shape {list(shape)})"):
        check_shape(shape, PATH, "tensor 'v'")


@pytest.mark.parametrize("value, step", [
    (0, 0), (7, 7), (-3, -3), (7.0, 7), (-2.0, -2), ("12", 12), (" 12 ", 12), ("-4", -4), ("0", 0),
    (True, None), (False, None), (7.5, None), (float("inf"), None), ("", None), ("-", None), ("1.5", None),
    ("twelve", None), ("1 2", None), (None, None), ([3], None), ("--3", None), ("\u00b2", None),
    ("- 3", None), ("\u0661\u0662", 12),
])
def test_which_step_values_count(value, step):
    got = parse_step(value)
    assert got == step and type(got) is type(step)


@pytest.mark.parametrize("key, stripped", [("<cat>", "cat"), ("<a>", "a"), ("<>", "<>"), ("<", "<"),
                                           ("<cat", "<cat"), ("cat>", "cat>"), ("cat", "cat"), ("", ""),
                                           ("<<a>>", "<a>")])
def test_only_a_token_within_angle_brackets_loses_them(key, stripped):
    assert _strip_token(key) == stripped


# ----------------------------------------------------------------------------- LoRA bundles


def test_bundle_keys_by_encoder_and_by_token_group_by_name_in_file_order():
    shapes = {"lora_te1.w": (8, 768), "bundle_emb.b.clip_g": (2, 1280), "bundle_emb.b.unet": (4, 4),
              "bundle_emb.a.string_to_param.*": (2, 768), "bundle_emb.b.clip_l": (2, 768),
              "bundle_emb.a.b.clip_h": (1, 1024)}
    assert _bundles(shapes, PATH) == {"b": {"clip_g": "bundle_emb.b.clip_g", "clip_l": "bundle_emb.b.clip_l"},
                                      "a": {"clip_l": "bundle_emb.a.string_to_param.*"},
                                      "a.b": {"clip_h": "bundle_emb.a.b.clip_h"}}
    assert list(_bundles(shapes, PATH)) == ["b", "a", "a.b"]


def test_a_token_bundle_takes_its_encoder_from_the_width_and_its_name_up_to_the_marker():
    shapes = {"bundle_emb.x.y.string_to_param.<t>": (1280,), "bundle_emb.z.string_to_param.a.string_to_param.b": (768,)}
    assert _bundles(shapes, PATH) == {"x.y": {"clip_g": "bundle_emb.x.y.string_to_param.<t>"},
                                      "z": {"clip_l": "bundle_emb.z.string_to_param.a.string_to_param.b"}}


@pytest.mark.parametrize("key", ["bundle_emb.clip_l", "bundle_emb..clip_l", "bundle_emb.a.unet", "bundle_emb.a.",
                                 "bundle_emb.", "Bundle_emb.a.clip_l", "xbundle_emb.a.clip_l", "bundle_emba.clip_l",
                                 "bundle_emb..string_to_param.*", "bundle_emb.a.CLIP_L"])
def test_keys_that_name_no_bundle_and_encoder_are_left_out(key):
    assert _bundles({key: (1, 768)}, PATH) == {}


def test_a_token_bundle_of_unknown_width_or_rank_is_refused_naming_its_key():
    key = "bundle_emb.a.string_to_param.*"
    with refusal(f"tensor {key!r} has width 500, which matches no known text encoder ({KNOWN})"):
        _bundles({key: (2, 500)}, PATH)
    with refusal(f"tensor {key!r} has shape [1, 2, 768]; an embedding tensor must be 1-D or 2-D"):
        _bundles({key: (1, 2, 768)}, PATH)


# ----------------------------------------------------------------------------- flat containers


def test_a_kohya_file_gives_its_whole_plan_and_keeps_the_callers_metadata():
    meta = {"step": "40", "ss_name": "cat"}
    plan = plan_flat({"emb_params": (3, 1024), "other": (5,)}, PATH, metadata=meta)
    assert plan == Plan("safetensors_emb_params", {"clip_h": "emb_params"}, {"step": "40", "ss_name": "cat"}, 40)
    assert plan.metadata is not meta


@pytest.mark.parametrize("tool, fmt", [("tokensmith 0.4.1", "tokensmith"), ("tokensmith", "tokensmith"),
                                       ("TokenSmith 0.4", "safetensors_emb_params"),
                                       ("other tokensmith", "safetensors_emb_params")])
def test_only_a_tool_starting_with_tokensmith_makes_our_format(tool, fmt):
    plan = plan_flat({"emb_params": (768,)}, PATH, metadata={"tool": tool})
    assert plan == Plan(fmt, {"clip_l": "emb_params"}, {"tool": tool}, None)


@pytest.mark.parametrize("declared", ["clip_l", "clip_g", "", "unknown"])
def test_our_single_encoder_file_is_read_by_width_whatever_encoder_it_declares(declared):
    meta = {"tool": "tokensmith 0.4", "encoders": declared, "step": "9"}
    plan = plan_flat({"emb_params": (2, 768)}, PATH, metadata=meta)
    assert plan == Plan("tokensmith", {"clip_l": "emb_params"}, meta, 9)


def test_emb_params_of_unknown_width_or_rank_is_refused():
    with refusal(f"tensor 'emb_params' has width 640, which matches no known text encoder ({KNOWN})"):
        plan_flat({"emb_params": (2, 640)}, PATH)
    with refusal("tensor 'emb_params' has shape [1, 2, 768]; an embedding tensor must be 1-D or 2-D"):
        plan_flat({"emb_params": (1, 2, 768)}, PATH)


def test_emb_params_wins_over_encoder_keys_and_bundles():
    shapes = {"clip_g": (2, 1280), "bundle_emb.a.clip_l": (1, 768), "emb_params": (1, 768)}
    assert plan_flat(shapes, PATH) == Plan("safetensors_emb_params", {"clip_l": "emb_params"}, {}, None)


@pytest.mark.parametrize("shapes, fmt", [
    ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "sdxl"),
    ({"clip_g": (2, 1280), "clip_l": (2, 768), "bundle_emb.a.clip_l": (1, 768)}, "sdxl"),
    ({"clip_g": (1280,)}, "per_encoder"),
    ({"clip_l": (1, 768), "t5xxl": (1, 4096)}, "per_encoder"),
    ({"clip_l": (1, 768), "clip_g": (1, 1280), "t5xxl": (1, 4096)}, "per_encoder"),
    ({"t5xxl": (3, 1024)}, "per_encoder"),
    ({"qwen3_4b": (2, 4096), "notes": (3,)}, "per_encoder"),
])
def test_encoder_keys_are_taken_as_named_in_file_order(shapes, fmt):
    keys = {k: k for k in shapes if not k.startswith(("bundle", "notes"))}
    plan = plan_flat(shapes, PATH, metadata={"step": "3"})
    assert plan == Plan(fmt, keys, {"step": "3"}, 3)
    assert list(plan.keys) == list(keys)


def test_our_encoder_key_files_are_our_format():
    meta = {"tool": "tokensmith 0.4"}
    assert plan_flat({"clip_l": (1, 768), "clip_g": (1, 1280)}, PATH, metadata=meta) == Plan(
        "tokensmith", {"clip_l": "clip_l", "clip_g": "clip_g"}, meta, None)


@pytest.mark.parametrize("key, width", [("clip_l", 1024), ("clip_h", 768), ("clip_g", 768)])
def test_a_clip_key_of_another_width_is_refused(key, width):
    right = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280}[key]
    with refusal(f"tensor {key!r} has width {width}, but {key} vectors are {right} wide"):
        plan_flat({"t5xxl": (1, 4096), key: (1, width)}, PATH)


def test_an_encoder_key_of_another_rank_is_refused():
    with refusal("tensor 't5xxl' has shape [1, 1, 4096]; an embedding tensor must be 1-D or 2-D"):
        plan_flat({"clip_l": (1, 768), "t5xxl": (1, 1, 4096)}, PATH)


def test_a_lora_bundle_named_gives_its_keys_and_the_list_of_bundles():
    shapes = {"bundle_emb.a.clip_l": (1, 768), "bundle_emb.b.clip_l": (2, 768), "bundle_emb.b.clip_g": (2, 1280)}
    meta = {"step": "5"}
    plan = plan_flat(shapes, PATH, name="b", metadata=meta)
    assert plan == Plan("lora_bundle", {"clip_l": "bundle_emb.b.clip_l", "clip_g": "bundle_emb.b.clip_g"},
                        {"step": "5", "bundle": "b", "bundles": "a,b"}, 5)
    assert meta == {"step": "5"}


@pytest.mark.parametrize("name", [None, "c", "bundle_emb.b", ""])
def test_a_name_no_bundle_has_picks_the_first_bundle(name):
    shapes = {"bundle_emb.a.clip_l": (1, 768), "bundle_emb.b.clip_l": (2, 768)}
    assert plan_flat(shapes, PATH, name=name) == Plan("lora_bundle", {"clip_l": "bundle_emb.a.clip_l"},
                                                      {"bundle": "a", "bundles": "a,b"}, None)


def test_a_bundle_token_of_unknown_width_is_refused_naming_the_file():
    with refusal(f"tensor 'bundle_emb.a.string_to_param.*' has width 9, which matches no known text encoder ({KNOWN})"):
        plan_flat({"bundle_emb.a.string_to_param.*": (1, 9)}, PATH)


def test_a_single_bundle_lists_no_bundles():
    plan = plan_flat({"bundle_emb.only.string_to_param.*": (2, 768), "lora_te1.w": (8, 8)}, PATH)
    assert plan == Plan("lora_bundle", {"clip_l": "bundle_emb.only.string_to_param.*"}, {"bundle": "only"}, None)


def test_the_plan_of_a_bundle_does_not_share_the_bundle_table():
    shapes = {"bundle_emb.a.clip_l": (1, 768)}
    first = plan_flat(shapes, PATH)
    first.keys["clip_g"] = "x"
    assert plan_flat(shapes, PATH).keys == {"clip_l": "bundle_emb.a.clip_l"}


def test_a_file_without_tensors_is_refused():
    with refusal("file holds no tensors"):
        plan_flat({}, PATH, metadata={"step": "1"})


@pytest.mark.parametrize("name", [None, "other", "<cat>"])
def test_a_single_tensor_is_a_diffusers_token_whatever_the_name(name):
    plan = plan_flat({"<cat>": (768,)}, PATH, name=name, metadata={"step": "2"})
    assert plan == Plan("diffusers", {"clip_l": "<cat>"}, {"step": "2", "token": "<cat>"}, 2)


def test_a_token_the_metadata_already_names_is_kept():
    plan = plan_flat({"<cat>": (1, 1280)}, PATH, metadata={"token": "kitty"})
    assert plan == Plan("diffusers", {"clip_g": "<cat>"}, {"token": "kitty"}, None)


@pytest.mark.parametrize("name, key", [("b", "<b>"), ("<b>", "<b>"), ("a", "a"), ("<a>", "a"), ("<c>", "<c>")])
def test_several_tokens_are_matched_by_name_with_or_without_brackets(name, key):
    shapes = {"a": (1, 768), "<b>": (2, 1024), "<c>": (1280,)}
    enc = {"a": "clip_l", "<b>": "clip_h", "<c>": "clip_g"}[key]
    assert plan_flat(shapes, PATH, name=name) == Plan("diffusers", {enc: key}, {"token": key}, None)


def test_two_tokens_matching_the_name_give_the_first():
    shapes = {"x": (1, 768), "<cat>": (1, 1024), "cat": (1, 1280)}
    assert plan_flat(shapes, PATH, name="cat") == Plan("diffusers", {"clip_h": "<cat>"}, {"token": "<cat>"}, None)


def test_a_matched_token_of_unknown_width_or_rank_is_refused():
    with refusal(f"tensor '<b>' has width 7, which matches no known text encoder ({KNOWN})"):
        plan_flat({"<a>": (768,), "<b>": (2, 7)}, PATH, name="b")
    with refusal("tensor '<b>' has shape [1, 1, 768]; an embedding tensor must be 1-D or 2-D"):
        plan_flat({"<a>": (768,), "<b>": (1, 1, 768)}, PATH, name="b")
    with refusal("tensor 'only' is empty (shape [0, 768])"):
        plan_flat({"only": (0, 768)}, PATH)


@pytest.mark.parametrize("count, listed", [
    (2, "'t0', 't1'"),
    (5, "'t0', 't1', 't2', 't3', 't4'"),
    (6, "'t0', 't1', 't2', 't3', 't4' and 1 more"),
    (9, "'t0', 't1', 't2', 't3', 't4' and 4 more"),
])
def test_several_tensors_without_a_matching_name_are_refused_listing_five(count, listed):
    shapes = {f"t{i}": (1, 768) for i in range(count)}
    message = (f"file holds {count} tensors ({listed}) and none is an embedding key ({KEYS}); if it is a "
               "diffusers file with several tokens, pass the token as the name")
    for name in (None, "t", "<t9x>"):
        with refusal(message):
            plan_flat(shapes, PATH, name=name)


# ----------------------------------------------------------------------------- pickled objects


def a1111(vec, **fields):
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, **fields}


def test_an_a1111_object_gives_its_whole_plan_and_the_tensor_itself():
    vec = torch.zeros(2, 768)
    plan, tensors = plan_object(a1111(vec, name="cat", step=500, sd_checkpoint="abc", sd_checkpoint_name="v1"), PATH)
    assert plan == Plan("a1111_pt", {"clip_l": "string_to_param.*"},
                        {"name": "cat", "step": "500", "sd_checkpoint": "abc", "sd_checkpoint_name": "v1"}, 500)
    assert list(tensors) == ["string_to_param.*"] and tensors["string_to_param.*"] is vec


def test_the_a1111_format_name_is_the_callers():
    plan, _ = plan_object(a1111(torch.zeros(1280)), PATH, a1111_format="a1111_pt_parameterdict")
    assert plan == Plan("a1111_pt_parameterdict", {"clip_g": "string_to_param.*"}, {}, None)


@pytest.mark.parametrize("value, text", [("x", "x"), (3, "3"), (2.5, "2.5"), (0, "0"), ("", ""),
                                         (None, None), (True, None), (False, None), ([1], None), ({"a": 1}, None),
                                         (torch.ones(1), None)])
def test_only_scalar_a1111_fields_become_metadata_text(value, text):
    fields = {"name": value, "sd_checkpoint": value, "sd_checkpoint_name": value, "other": "kept out"}
    plan, _ = plan_object(a1111(torch.zeros(1, 768), **fields), PATH)
    keys = ("name", "sd_checkpoint", "sd_checkpoint_name")
    assert plan.metadata == ({} if text is None else dict.fromkeys(keys, text))


@pytest.mark.parametrize("step, text, number", [(500, "500", 500), (12.0, "12.0", 12), ("7", "7", 7),
                                                (True, None, None), (None, None, None), (2.5, "2.5", None)])
def test_the_a1111_step_is_kept_as_text_and_as_a_number(step, text, number):
    plan, _ = plan_object(a1111(torch.zeros(1, 768), step=step), PATH)
    assert plan.metadata == ({} if text is None else {"step": text}) and plan.step == number


@pytest.mark.parametrize("obj, kind", [([], "list"), (None, "NoneType"), (torch.zeros(768), "Tensor"),
                                       ("text", "str")])
def test_an_object_that_is_no_dictionary_is_refused_naming_its_type(obj, kind):
    with refusal(f"file holds a {kind}, not a dictionary of embedding tensors"):
        plan_object(obj, PATH)


def test_string_to_param_that_is_no_dictionary_is_refused():
    with refusal("'string_to_param' is a list, not a dictionary"):
        plan_object({"string_to_param": [torch.zeros(1, 768)], "emb_params": torch.zeros(1, 768)}, PATH)


@pytest.mark.parametrize("count", [0, 2])
def test_string_to_param_must_hold_one_term(count):
    params = {f"t{i}": torch.zeros(1, 768) for i in range(count)}
    with refusal(f"'string_to_param' holds {count} terms; an embedding file has one"):
        plan_object({"string_to_param": params}, PATH)


def test_string_to_param_must_hold_a_tensor_of_an_embeddings_shape():
    with refusal("string_to_param['*'] is not a tensor"):
        plan_object({"string_to_param": {"*": [[0.0] * 768]}}, PATH)
    with refusal(f"string_to_param['t'] has width 5, which matches no known text encoder ({KNOWN})"):
        plan_object({"string_to_param": {"t": torch.zeros(1, 5)}}, PATH)
    with refusal("string_to_param['t'] has shape [1, 1, 768]; an embedding tensor must be 1-D or 2-D"):
        plan_object({"string_to_param": {"t": torch.zeros(1, 1, 768)}}, PATH)


def test_a_flat_dict_keeps_only_named_tensors():
    vec = torch.zeros(1, 768)
    plan, tensors = plan_object({"<cat>": vec, 3: torch.zeros(1, 768), "notes": "text", "n": 4}, PATH)
    assert plan == Plan("diffusers", {"clip_l": "<cat>"}, {"token": "<cat>"}, None)
    assert list(tensors) == ["<cat>"] and tensors["<cat>"] is vec


def test_a_flat_dict_with_a1111_fields_gives_them_as_metadata_and_the_step():
    obj = {"emb_params": torch.zeros(2, 1280), "name": "cat", "step": 30.0, "tool": "tokensmith 0.4"}
    plan, _ = plan_object(obj, PATH)
    assert plan == Plan("safetensors_emb_params", {"clip_g": "emb_params"}, {"name": "cat", "step": "30.0"}, 30)


def test_a_flat_dict_picks_the_named_token_or_bundle():
    a, b = torch.zeros(1, 768), torch.ones(1, 768)
    plan, tensors = plan_object({"<a>": a, "<b>": b}, PATH, name="b")
    assert plan == Plan("diffusers", {"clip_l": "<b>"}, {"token": "<b>"}, None) and tensors["<b>"] is b
    plan, _ = plan_object({"bundle_emb.a.clip_l": a, "bundle_emb.b.clip_l": b, "step": 4}, PATH, name="b")
    assert plan == Plan("lora_bundle", {"clip_l": "bundle_emb.b.clip_l"},
                        {"step": "4", "bundle": "b", "bundles": "a,b"}, 4)


def test_a_flat_dicts_refusals_name_the_file():
    with refusal(f"tensor 'emb_params' has width 3, which matches no known text encoder ({KNOWN})"):
        plan_object({"emb_params": torch.zeros(1, 3), "name": "cat"}, PATH)


@pytest.mark.parametrize("obj", [{}, {"name": "cat", "step": 3}, {3: torch.zeros(1, 768)}])
def test_a_dict_without_named_tensors_is_refused(obj):
    with refusal("file holds no tensors (not an embedding)"):
        plan_object(obj, PATH)


@pytest.mark.parametrize("text", ["--3", "\u00b2", "-"])
def test_a_file_whose_step_is_no_number_reads_without_a_step(tmp_path, text):
    # these passed a digits test that int() then refused: read_embedding raised a bare ValueError
    path = tmp_path / "e.safetensors"
    safetensors.torch.save_file({"emb_params": torch.ones(1, 768)}, str(path), metadata={"step": text})
    emb = read_embedding(path)
    assert (emb.step, emb.metadata, emb.source_format) == (None, {"step": text}, "safetensors_emb_params")
