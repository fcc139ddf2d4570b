"""``python -m tokensmith``: two real subprocess runs, the rest through ``cli.main`` in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.core import golden
from tokensmith.cli import main
from tokensmith.formats import read_embedding

REPO = Path(__file__).resolve().parents[2]


def run_module(*args):
    return subprocess.run([sys.executable, "-m", "tokensmith", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_subprocess_inspect_json(tmp_path):
    vec = golden.vectors(2, 768, 3)
    path = golden.a1111_pt(tmp_path / "bad-hands.pt", vec, legacy=False, location="cuda:0", step=1500)
    proc = run_module("inspect", path, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["format"] == "a1111_pt" and out["family"] == "sd1" and out["name"] == "bad-hands"
    assert out["step"] == 1500 and out["encoders"] == {"clip_l": [2, 768]}
    assert out["metadata"]["sd_checkpoint_name"] == "v1-5-pruned"
    import hashlib

    assert out["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    norms = torch.linalg.vector_norm(vec.double(), dim=-1).tolist()
    assert out["stats"]["clip_l"]["norms"] == pytest.approx(norms)


def test_refused_file_exits_1_with_the_error_on_stderr(tmp_path, capsys):
    # In-process: an exception escaping main() would fail this test, so no traceback can reach users.
    marker = tmp_path / "marker"
    path = golden.malicious_pt(tmp_path / "evil.pt", marker)
    assert main(["inspect", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and "refused" in captured.err and "evil.pt" in captured.err
    assert not marker.exists()


def test_inspect_unknown_step_is_null(tmp_path, capsys):
    path = golden.kohya_safetensors(tmp_path / "k.safetensors")
    assert main(["inspect", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] is None and out["format"] == "safetensors_emb_params" and out["metadata"] == {}


def test_inspect_text_report(tmp_path, capsys):
    path = golden.sdxl_safetensors(tmp_path / "xl.safetensors")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "family: sdxl" in text and "clip_g: 2 x 1280" in text and "vector norms" in text


def test_inspect_folder_lists_headers(tmp_path, capsys):
    goldens = golden.all_goldens(tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    golden.kohya_safetensors(sub / "nested.safetensors")
    (tmp_path / "notes.txt").write_text("not an embedding")
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    files = {f["file"]: f for f in out["files"]}
    assert out["count"] == len(goldens) + 2 and out["readable"] == len(goldens) + 1
    assert "error" in files["notes.txt"]
    assert files["sub/nested.safetensors"]["encoders"] == {"clip_l": [2, 768]}
    for path, fmt, _ in goldens.values():
        assert files[path.name]["format"] == fmt
    assert main(["inspect", str(tmp_path)]) == 0
    assert "readable" in capsys.readouterr().out


def test_convert_to_sdxl_and_back(tmp_path, capsys):
    vec = golden.vectors(3, 768, 4)
    src = golden.png_text(tmp_path / "card.png", golden.a1111_dict(vec))
    out = tmp_path / "out" / "xl.safetensors"
    out.parent.mkdir()
    assert main(["convert", str(src), str(out), "--to", "sdxl"]) == 0
    xl = read_embedding(out)
    assert xl.source_format == "tokensmith" and xl.shapes() == {"clip_l": [3, 768], "clip_g": [3, 1280]}
    assert torch.equal(xl.vectors["clip_l"], vec) and not xl.vectors["clip_g"].any()
    assert xl.metadata["converted_from"] == "png_text (sd1)"
    assert main(["convert", str(out), str(out), "--to", "sd1"]) == 1
    assert "exists" in capsys.readouterr().err
    back = tmp_path / "sd1.safetensors"
    assert main(["convert", str(out), str(back), "--to", "sd1"]) == 0
    assert read_embedding(back).shapes() == {"clip_l": [3, 768]}


def test_convert_refuses_non_safetensors_output_and_bad_family(tmp_path, capsys):
    src = golden.kohya_safetensors(tmp_path / "h.safetensors", golden.vectors(2, 1024))
    assert main(["convert", str(src), str(tmp_path / "o.pt")]) == 1
    assert "safetensors only" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--to", "sdxl"]) == 1
    assert "SD1" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_card_command(tmp_path):
    src = golden.kohya_safetensors(tmp_path / "k.safetensors", golden.vectors(2, 768, 8))
    out = tmp_path / "k.png"
    assert main(["card", str(src), str(out)]) == 0
    emb = read_embedding(out)
    assert emb.source_format == "png_text" and torch.equal(emb.vectors["clip_l"], golden.vectors(2, 768, 8))
