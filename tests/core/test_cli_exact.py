"""Exact behaviour of ``python -m tokensmith``: the parser's program name, description, commands,
every option's help text and kind, the required command, --version; the folder listing line for
line; what inspect keeps (path, dtypes, stored dtypes, the picked bundle); convert's LoRA metadata,
--name, --overwrite and its report line; card's --image, --no-draw, --overwrite and its refusal of
a picture it cannot open; Ctrl-C's exit status."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch
from PIL import Image

import tokensmith
from tests.core import golden
from tokensmith import cli
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding, read_header
from tokensmith.report import human_size


def _subparsers(parser):
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def test_the_program_and_its_description():
    parser = cli.build_parser()
    assert (parser.prog, parser.description) == ("python -m tokensmith", "TokenSmith embedding tools")


def test_the_commands_and_what_each_is_for():
    action = _subparsers(cli.build_parser())
    assert action.dest == "command" and action.required is True
    assert {a.dest: a.help for a in action._choices_actions} == {
        "inspect": "describe an embedding file, or list a folder of them",
        "convert": "convert any readable embedding to TokenSmith safetensors",
        "card": "write an A1111-compatible PNG card holding the embedding",
    }


NAME_HELP = "pick a bundled embedding / diffusers token by name"


def test_every_options_help_text():
    choices = _subparsers(cli.build_parser()).choices
    helps = {cmd: {a.dest: a.help for a in p._actions if a.dest != "help"} for cmd, p in choices.items()}
    assert helps == {
        "inspect": {"path": "an embedding file (any supported format) or a folder", "json": "print one JSON object",
                    "name": NAME_HELP},
        "convert": {"input": None, "output": "the .safetensors file to write",
                    "to": "sdxl: L vectors + zero G vectors; sd1: keep the L side; sd3: clip_l + clip_g kept, zero "
                          "t5xxl vectors",
                    "overwrite": "replace OUTPUT if it exists", "name": NAME_HELP},
        "card": {"input": None, "output": "the .png file to write",
                 "image": "picture to use (default: a pattern made from the vectors)",
                 "no_draw": "text chunk only, no data drawn beside the picture", "overwrite": None, "name": NAME_HELP},
    }


def test_switches_are_off_unless_given_and_targets_are_checked():
    parser = cli.build_parser()
    a = parser.parse_args(["inspect", "x"])
    assert (a.json, a.name) == (False, None) and a.func is cli.cmd_inspect
    assert parser.parse_args(["inspect", "x", "--json", "--name", "n"]).json is True
    c = parser.parse_args(["convert", "i", "o"])
    assert (c.overwrite, c.to) == (False, None) and parser.parse_args(["convert", "i", "o", "--overwrite"]).overwrite
    k = parser.parse_args(["card", "i", "o"])
    assert (k.no_draw, k.overwrite, k.image) == (False, False, None)
    k = parser.parse_args(["card", "i", "o", "--no-draw", "--overwrite"])
    assert (k.no_draw, k.overwrite) == (True, True)
    assert parser.parse_args(["convert", "i", "o", "--to", "sd3"]).to == "sd3"


def test_an_unknown_target_and_a_missing_command_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", "i", "o", "--to", "sd9"])
    assert e.value.code == 2 and "argument --to: invalid choice: 'sd9'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m tokensmith: error: the following arguments are required: command")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"tokensmith {tokensmith.__version__}\n"


def test_ctrl_c_exits_130(monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_inspect", interrupted)
    assert cli.main(["inspect", "x"]) == 130


# ---------------------------------------------------------------- inspect


def test_the_folder_listing_line_for_line(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("not an embedding")
    good = golden.kohya_safetensors(tmp_path / "b.pt.safetensors")
    sdxl = golden.sdxl_safetensors(tmp_path / "c.safetensors")
    with pytest.raises(EmbeddingFileError) as e:
        read_header(tmp_path / "a.txt")
    reason = e.value.reason
    assert cli.main(["inspect", str(tmp_path)]) == 0
    w = len("b.pt.safetensors")
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path}: 3 files, 2 readable",
        f"  {'a.txt':<{w}}  error: {reason}",
        f"  {'b.pt.safetensors':<{w}}  {'safetensors_emb_params':<22} {'sd1':<7} clip_l 2x768  "
        f"{human_size(os.path.getsize(good))}",
        f"  {'c.safetensors':<{w}}  {'sdxl':<22} {'sdxl':<7} clip_l 2x768 + clip_g 2x1280  "
        f"{human_size(os.path.getsize(sdxl))}",
    ]


def test_names_shorter_than_four_characters_are_padded_to_four(tmp_path, capsys):
    golden.kohya_safetensors(tmp_path / "k")
    cli.main(["inspect", str(tmp_path)])
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("  k     safetensors_emb_params ")


def test_the_folder_json_names_the_folder_and_leaves_out_each_files_path(tmp_path, capsys):
    golden.kohya_safetensors(tmp_path / "k.safetensors")
    cli.main(["inspect", str(tmp_path), "--json"])
    text = capsys.readouterr().out
    out = json.loads(text)
    assert out["folder"] == str(tmp_path) and "path" not in out["files"][0]
    assert text == json.dumps(out, indent=2) + "\n"


def test_a_file_report_keeps_its_path_dtypes_and_stored_dtypes(tmp_path, capsys):
    path = golden.kohya_safetensors(tmp_path / "h.safetensors", golden.vectors(2, 768).half())
    assert cli.main(["inspect", str(path), "--json"]) == 0
    text = capsys.readouterr().out
    out = json.loads(text)
    assert out["path"] == str(path) and out["dtypes"] == {"clip_l": "float16"}
    assert out["stats"]["clip_l"]["stored_dtype"] == "float16"
    assert text == json.dumps(out, indent=2) + "\n"


def _bundle(tmp_path):
    a, b = golden.vectors(2, 768, 1), golden.vectors(1, 768, 2)
    return golden.lora_bundle(tmp_path / "lora.safetensors", {"first": a, "second": b}), a, b


def test_inspect_picks_the_named_bundle(tmp_path, capsys):
    path, a, b = _bundle(tmp_path)
    assert cli.main(["inspect", str(path), "--json", "--name", "second"]) == 0
    assert json.loads(capsys.readouterr().out)["encoders"] == {"clip_l": [1, 768]}


# ---------------------------------------------------------------- convert and card


def test_convert_keeps_only_the_bundle_key_of_a_loras_metadata_and_picks_by_name(tmp_path, capsys):
    path, a, b = _bundle(tmp_path)
    source = read_embedding(path, name="second")
    out = tmp_path / "second.safetensors"
    assert cli.main(["convert", str(path), str(out), "--name", "second"]) == 0
    assert capsys.readouterr().out == f"wrote {out} (sd1: clip_l 1x768)\n"
    back = read_embedding(out)
    assert torch.equal(back.vectors["clip_l"], b)
    kept = {k for k in source.metadata if k == "bundle"}
    assert kept == {"bundle"} and back.metadata["bundle"] == source.metadata["bundle"]
    assert not [k for k in back.metadata if k.startswith("ss_")]


def test_convert_keeps_the_metadata_of_other_formats(tmp_path):
    src = golden.kohya_safetensors(tmp_path / "k.safetensors", metadata={"ss_output_name": "kept", "bundle": "x"})
    out = tmp_path / "o.safetensors"
    assert cli.main(["convert", str(src), str(out)]) == 0
    assert read_embedding(out).metadata["ss_output_name"] == "kept"


def test_convert_overwrites_only_when_asked_and_lists_every_encoder(tmp_path, capsys):
    src = golden.sdxl_safetensors(tmp_path / "xl.safetensors")
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"old")
    assert cli.main(["convert", str(src), str(out)]) == 1
    capsys.readouterr()
    assert cli.main(["convert", str(src), str(out), "--overwrite"]) == 0
    assert capsys.readouterr().out == f"wrote {out} (sdxl: clip_l 2x768, clip_g 2x1280)\n"


def test_card_with_a_picture_without_drawn_data_and_overwrite(tmp_path, capsys):
    src = golden.kohya_safetensors(tmp_path / "k.safetensors")
    picture = tmp_path / "p.png"
    Image.new("RGBA", (40, 30), (10, 200, 30, 128)).save(picture)
    out = tmp_path / "card.png"
    out.write_bytes(b"old")
    assert cli.main(["card", str(src), str(out), "--image", str(picture), "--no-draw"]) == 1
    capsys.readouterr()
    assert cli.main(["card", str(src), str(out), "--image", str(picture), "--no-draw", "--overwrite"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    with Image.open(out) as card:
        assert card.size == (40, 30) and card.mode == "RGB"
        assert card.getpixel((0, 0)) == (10, 200, 30)
    drawn = tmp_path / "drawn.png"
    assert cli.main(["card", str(src), str(drawn), "--image", str(picture)]) == 0
    with Image.open(drawn) as card:
        assert card.size != (40, 30)


def test_card_picks_the_named_bundle(tmp_path):
    path, a, b = _bundle(tmp_path)
    out = tmp_path / "card.png"
    assert cli.main(["card", str(path), str(out), "--name", "second", "--no-draw"]) == 0
    assert torch.equal(read_embedding(out).vectors["clip_l"], b)


def test_card_refuses_a_picture_it_cannot_open(tmp_path, capsys):
    src = golden.kohya_safetensors(tmp_path / "k.safetensors")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    with pytest.raises(OSError) as e:
        Image.open(bad)
    assert cli.main(["card", str(src), str(tmp_path / "c.png"), "--image", str(bad)]) == 1
    assert capsys.readouterr().err == f"error: {bad}: cannot open the image ({e.value})\n"
