"""A corpus of pickles that run code (os/posix/nt.system, subprocess, builtins exec/eval/open,
getattr/__import__ chains, INST/OBJ/NEWOBJ opcodes, STACK_GLOBAL, memo tricks, ParameterDict
decoys, persistent ids), as bare pickles and inside zip and legacy torch files: TokenSmith's
readers, the CLI and the folder listing refuse every one and nothing runs (no marker file appears,
the canary file and folder stay)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devkit.comfy_host import REPO_ROOT
from devkit.fuzzing.pickles import hostile_files, hostile_pickles
from tokensmith import cli
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding, read_header

# Corpus entries that, loaded by a plain unpickler, create a marker file (checked below, so the
# corpus is known to be live and the tests that load it through TokenSmith can fail).
LIVE = ("p0_os_system", "p0_posix_system", "subprocess_check_call", "subprocess_run", "subprocess_getoutput",
        "builtins_exec", "builtins_eval", "__builtin___eval", "builtins_open", "getattr_import_os_system",
        "importlib_import_module", "inst_posix_system", "obj_posix_system", "proto2_system", "proto4_system",
        "proto5_nested_in_embedding", "proto3_memo", "pickle_loads_inner")


def _marker_state(markers) -> tuple[list[str], bool, bool]:
    ran = sorted(p.name for p in markers.iterdir() if p.name not in ("canary", "canary_dir"))
    return ran, (markers / "canary").is_file(), (markers / "canary_dir").is_dir()


@pytest.fixture
def corpus(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "canary").touch()
    (markers / "canary_dir").mkdir()
    folder = tmp_path / "files"
    folder.mkdir()
    for name, data in hostile_files(markers):
        (folder / name).write_bytes(data)
    return folder, markers


def test_the_corpus_is_live(tmp_path):
    """Control: a plain pickle.loads (in a throwaway child process) does run these payloads."""
    markers = tmp_path / "live"
    markers.mkdir()
    bodies = dict(hostile_pickles(markers))
    folder = tmp_path / "bodies"
    folder.mkdir()
    for label in LIVE:
        (folder / label).write_bytes(bodies[label])
    # Deliberately unsafe, only here: this proves the payloads work when nothing stops them.
    code = ("import pickle, sys, pathlib\n"
            "for p in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
            "    try:\n"
            "        pickle.loads(p.read_bytes())\n"
            "    except Exception:\n"
            "        pass\n")
    subprocess.run([sys.executable, "-c", code, str(folder)], cwd=tmp_path, timeout=120, check=True,
                   capture_output=True)
    ran = {p.name for p in markers.iterdir()}
    expected = {"ran_p0_os", "ran_p0_posix", "ran_sub_check_call", "ran_sub_run", "ran_sub_getoutput", "ran_builtins_exec",
                "ran_builtins_eval", "ran___builtin___eval", "ran_open", "ran_getattr", "ran_importlib", "ran_inst",
                "ran_obj", "ran_proto2", "ran_proto4", "ran_proto5", "ran_memo3", "ran_inner"}
    assert expected <= ran, sorted(expected - ran)


def test_every_hostile_file_is_refused_and_runs_nothing(corpus):
    folder, markers = corpus
    files = sorted(folder.iterdir())
    assert len(files) > 100
    refused = 0
    for path in files:
        for reader in (read_header, read_embedding):
            with pytest.raises(EmbeddingFileError) as info:
                reader(path)
            assert path.name in str(info.value)
            refused += "refused" in info.value.reason
        ran, canary, canary_dir = _marker_state(markers)
        assert not ran and canary and canary_dir, (path.name, ran, canary, canary_dir)
    # every torch container (zip / legacy) reached the restricted unpickler and was refused as such
    containers = [p for p in files if ".zip." in p.name or ".legacy." in p.name]
    assert refused >= 2 * len(containers), (refused, len(containers))


def test_cli_lists_a_hostile_folder_without_running_anything(corpus):
    folder, markers = corpus
    out = subprocess.run([sys.executable, "-m", "tokensmith", "inspect", str(folder), "--json"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    assert listing["count"] == len(list(folder.iterdir())) and listing["readable"] == 0
    assert all(f["error"] for f in listing["files"])
    for path in list(folder.iterdir())[:10]:
        assert cli.main(["inspect", str(path)]) == 1
        assert cli.main(["convert", str(path), str(folder.parent / "out.safetensors")]) == 1
    assert not (folder.parent / "out.safetensors").exists()
    ran, canary, canary_dir = _marker_state(markers)
    assert not ran and canary and canary_dir, ran
