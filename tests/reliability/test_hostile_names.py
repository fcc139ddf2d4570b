"""Hostile names on every node and route that takes a name or a path: refused with a clear error (or
handled as documented: TokenSmith names are ASCII letters, digits, '._-' and '/' between subfolders,
never absolute, never '..', no Windows device names), and a file-system scan proves nothing was
written outside the embeddings, output and temp folders.

Every hostile name carries MARK, so a file it might have created anywhere is found by name.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch

from tests.reliability.helpers import MARK, FsWatch, log_since, log_size, pack_tracebacks, run_node, train_inputs

HOSTILE = [
    f"../{MARK}-up",
    f"../../{MARK}-up2",
    f"{'../' * 12}tmp/{MARK}-to-tmp",
    f"{MARK}/../../{MARK}-escape",
    f"/tmp/{MARK}-absolute",
    f"//tmp/{MARK}-double-slash",
    f"C:\\{MARK}-drive",
    f"\\\\server\\share\\{MARK}",
    f"{MARK}\\..\\..\\{MARK}-backslash",
    f"{MARK}\0nul",
    f"{MARK}-" + "x" * 300,
    f"{MARK}/" + "/".join(["d" * 120] * 3),
    f"{MARK}-саt",  # Cyrillic а and с that look like Latin letters
    f"{MARK}-ｃａｔ",  # full-width letters
    f"{MARK}\u202egnp.exe",  # right-to-left override
    f"{MARK}\u200bzero-width",
    f"{MARK} with spaces",
    f"{MARK}\nnewline",
    f"CON/{MARK}",
    f"{MARK}/NUL",
    f"{MARK}/com1.txt",
    f"aux.{MARK}",
    f"{MARK}.pt",
    f"{MARK}.png",
    f".{MARK}-hidden",
    f"{MARK}.",
    f"{MARK}/",
    f"{MARK}//double",
    f"~/{MARK}",
    f"$HOME/{MARK}",
    f"{MARK}*?<>|\"",
]


@pytest.fixture
def scene(base, embeddings_dir, tmp_path_factory):
    """A base folder with an existing embedding, a folder named like an embedding, and a symlinked
    subfolder that leads outside; watched from here on."""
    outside = tmp_path_factory.mktemp("outside-target")
    link = embeddings_dir / "linked"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    (embeddings_dir / "a-folder.safetensors").mkdir(exist_ok=True)
    watch = FsWatch(base)
    yield {"outside": outside, "watch": watch}
    assert not any(outside.iterdir()), f"written through the symlink: {list(outside.iterdir())}"
    watch.assert_only_allowed_writes()


def _emb(pack, n=1):
    Embedding = pack("tokensmith.embedding").Embedding
    return Embedding({"clip_l": torch.randn(n, 768, generator=torch.Generator().manual_seed(n))}, name="x")


def _tokensmith_error(pack):
    return pack("tokensmith.errors").TokenSmithError


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_train_node_name(pack, node_classes, model_runs, sd1, scene, name):
    runs = model_runs(sd1)
    with pytest.raises(_tokensmith_error(pack)) as info:
        run_node(node_classes["TokenSmithTrainEmbedding"], **train_inputs(sd1, name=name))
    assert type(info.value).__name__ == "EmbeddingNameError", info.value
    assert runs.total == 0, runs.counts


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_save_node_name(pack, node_classes, scene, name):
    with pytest.raises(_tokensmith_error(pack)) as info:
        run_node(node_classes["TokenSmithSaveEmbedding"], embedding=_emb(pack), name=name, overwrite=True)
    assert type(info.value).__name__ == "EmbeddingNameError", info.value


@pytest.mark.parametrize("name", HOSTILE + ["../outside.safetensors", "/etc/passwd", "linked/x.safetensors"],
                         ids=range(len(HOSTILE) + 3))
def test_load_node_file(pack, node_classes, scene, name):
    load = node_classes["TokenSmithLoadEmbedding"]
    assert load.validate_inputs(file=name) is not True
    with pytest.raises(_tokensmith_error(pack)):
        run_node(load, file=name)


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_merge_expression_names(pack, node_classes, scene, name):
    quoted = "`" + name.replace("`", "``") + "`"
    with pytest.raises(_tokensmith_error(pack)):
        run_node(node_classes["TokenSmithMergeEmbeddings"], operation="mean", expression=f"{quoted} * 0.5")


def test_prompt_node_reports_hostile_references_as_missing(node_classes, scene):
    for name in HOSTILE:
        text = f"a photo of embedding:{name} in a field"
        out = run_node(node_classes["TokenSmithPrompt"], text=text, convert_keywords=True)
        prompt, warnings = out.result
        assert isinstance(prompt, str)
        # nothing outside the folders is ever reported as found
        assert not warnings.startswith("ok:"), (name, warnings)


RESUME_NAMES = [HOSTILE[0], HOSTILE[4], HOSTILE[9], HOSTILE[10], f"{MARK}.pt", "linked/x"]


@pytest.mark.parametrize("name", RESUME_NAMES, ids=range(len(RESUME_NAMES)))
def test_train_node_resume_from(pack, node_classes, sd1, scene, name):
    with pytest.raises(_tokensmith_error(pack)) as info:
        run_node(node_classes["TokenSmithTrainEmbedding"],
                 **train_inputs(sd1, name="resume-hostile", resume_from=name, steps=1))
    assert "resume_from" in str(info.value) or type(info.value).__name__ == "EmbeddingNameError", info.value


def test_collisions_are_refused_or_replace_as_asked(pack, node_classes, sd1, embeddings_dir, scene):
    save = node_classes["TokenSmithSaveEmbedding"]
    run_node(save, embedding=_emb(pack, 1), name="collide", overwrite=True)
    path = embeddings_dir / "collide.safetensors"
    first = path.read_bytes()
    with pytest.raises(_tokensmith_error(pack), match="exists"):
        run_node(save, embedding=_emb(pack, 2), name="collide", overwrite=False)
    assert path.read_bytes() == first
    # a trailing .safetensors names the same file
    with pytest.raises(_tokensmith_error(pack), match="exists"):
        run_node(save, embedding=_emb(pack, 2), name="collide.safetensors", overwrite=False)
    run_node(save, embedding=_emb(pack, 2), name="collide", overwrite=True)
    read = pack("tokensmith.formats").read_embedding
    assert read(path).num_vectors == 2
    # a folder where the file would go
    with pytest.raises(_tokensmith_error(pack), match="folder"):
        run_node(save, embedding=_emb(pack), name="a-folder", overwrite=True)
    # the training node refuses an existing name before any work, unless overwrite is on
    with pytest.raises(_tokensmith_error(pack), match="overwrite"):
        run_node(node_classes["TokenSmithTrainEmbedding"], **train_inputs(sd1, name="collide", overwrite=False))
    # a symlinked subfolder that leads out of the embeddings folder
    with pytest.raises(_tokensmith_error(pack), match="outside"):
        run_node(save, embedding=_emb(pack), name="linked/escape", overwrite=True)
    leftovers = [p.name for p in embeddings_dir.rglob("*.tmp")]
    assert not leftovers, leftovers


def test_valid_subfolder_names_stay_inside(pack, node_classes, embeddings_dir, scene):
    out = run_node(node_classes["TokenSmithSaveEmbedding"], embedding=_emb(pack), name="sub/dir/fine-name_1.0",
                   overwrite=True)
    assert out.result[0] == "embedding:sub/dir/fine-name_1.0"
    assert (embeddings_dir / "sub" / "dir" / "fine-name_1.0.safetensors").is_file()


def _cli(capsys, *args) -> tuple[int, str]:
    from tokensmith import cli

    code = cli.main(list(args))
    return code, capsys.readouterr().err


def test_cli_paths(tmp_path, capsys):
    """The CLI writes where its user says, and refuses what the docs say it refuses (exit 1, 'error: ...')."""
    from tokensmith.embedding import Embedding
    from tokensmith.writer import write_embedding_file

    src = write_embedding_file(Embedding({"clip_l": torch.ones(1, 768)}, name="src"), tmp_path / "src.safetensors")
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    cases = {
        "existing file": ["convert", str(src), str(existing)],
        "a folder": ["convert", str(src), str(tmp_path)],
        "not safetensors": ["convert", str(src), str(tmp_path / f"{MARK}.pt")],
        "missing folder": ["convert", str(src), str(tmp_path / f"{MARK}-no-such-dir" / "x.safetensors")],
        "missing input": ["inspect", str(tmp_path / f"{MARK}-missing.pt")],
        "absolute nonsense": ["inspect", f"/nonexistent/{MARK}"],
        "card over a file": ["card", str(src), str(existing)],
    }
    for label, args in cases.items():
        code, err = _cli(capsys, *args)
        assert code == 1 and err.startswith("error: "), (label, code, err)
    assert existing.read_bytes() == b"keep me"
    assert not [p for p in tmp_path.rglob("*") if MARK in p.name or p.suffix == ".tmp"]


def test_cli_output_name_too_long(tmp_path, capsys):
    from tokensmith.embedding import Embedding
    from tokensmith.writer import write_embedding_file

    src = write_embedding_file(Embedding({"clip_l": torch.ones(1, 768)}, name="src"), tmp_path / "src.safetensors")
    problems = []
    for command, ext in (("convert", ".safetensors"), ("card", ".png")):
        target = tmp_path / (MARK + "x" * 300 + ext)
        try:
            code, err = _cli(capsys, command, str(src), str(target))
        except Exception as exc:  # collected: the assertion below reports it
            problems.append(f"{command}: {type(exc).__name__}: {exc}"[:200])
            continue
        if code != 1 or not err.startswith("error: "):
            problems.append(f"{command}: exit {code}, {err[:200]}")
    assert not problems, problems


# ----------------------------------------------------------------------------- the HTTP route


def _info(server, name):
    url = server.url + "/tokensmith/embeddings/info?" + urllib.parse.urlencode({"name": name})
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_info_route_refuses_hostile_names(rel_server):
    base = rel_server.base
    # a real embedding outside the embeddings folder that a hostile name might reach
    from tokensmith.embedding import Embedding
    from tokensmith.writer import write_embedding_file

    secret = base / "outside-secret.safetensors"
    if not secret.exists():
        write_embedding_file(Embedding({"clip_l": torch.ones(1, 768)}, name="secret"), secret)
    watch = FsWatch(base, allowed=("models/embeddings", "output", "temp", "user", "server.log"))
    log_start = log_size(rel_server)
    names = HOSTILE + ["../outside-secret", "../../outside-secret", str(secret), str(secret)[:-len(".safetensors")],
                       "%2e%2e/outside-secret", "..%2Foutside-secret", ""]
    for name in names:
        status, body = _info(rel_server, name)
        assert status in (400, 404), (name, status, body)
        assert set(body) == {"error"} and body["error"], (name, body)  # an error, never a file's facts
    listing = rel_server.get("/tokensmith/embeddings")
    assert all(MARK not in e["name"] and "secret" not in e["name"] for e in listing)
    watch.assert_only_allowed_writes()
    assert not pack_tracebacks(log_since(rel_server, log_start))


def test_train_node_through_the_server_refuses_hostile_names(rel_server):
    from devkit.make_checkpoint import CHECKPOINT_NAME
    from devkit.server import error_message

    watch = FsWatch(rel_server.base, allowed=("models/embeddings", "output", "temp", "user", "server.log"))
    for name in (f"../../{MARK}-server", f"/tmp/{MARK}-server", f"{MARK}\0x", f"CON/{MARK}"):
        graph = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
            "2": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": "ts_rings"}},
            "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {
                "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "images": ["2", 0], "name": name,
                "init_text": "ring", "num_vectors": 1, "template": "object", "steps": 1, "learning_rate": "5e-3",
                "batch_size": 1, "seed": 0, "overwrite": True, "validate_every": 0}},
        }
        entry = rel_server.run(graph, timeout=300)
        message = error_message(entry) or ""
        assert entry["status"]["status_str"] == "error", (name, entry["status"])
        assert "EmbeddingNameError" in message, message
    watch.assert_only_allowed_writes()
    assert not [n for n in os.listdir("/tmp") if MARK in n]
