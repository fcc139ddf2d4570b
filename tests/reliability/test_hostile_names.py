"""Hostile names on every node and route that takes a name or a path: refused with a clear error (or
handled as documented: TokenSmith names are ASCII letters, digits, '._-' and '/' between subfolders,
never absolute, never '..', no Windows device names), and a file-system scan proves nothing was
written outside the embeddings, output and temp folders.

Every hostile name carries MARK, so a file it might have created anywhere is found by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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
    link = embeddings_dir / "linked"
    if not link.is_symlink():
        link.symlink_to(tmp_path_factory.mktemp("outside-target"), target_is_directory=True)
    outside = link.resolve()  # the folder the link made by an earlier test leads to, checked below
    (embeddings_dir / "a-folder.safetensors").mkdir(exist_ok=True)
    watch = FsWatch(base)
    yield {"outside": outside, "watch": watch}
    assert not any(outside.iterdir()), f"written through the symlink: {list(outside.iterdir())}"
    watch.assert_only_allowed_writes()


PLANTED = 7.25  # every vector entry of the embeddings planted where hostile names lead: found by value


def _escapes(root: str, rel: str) -> bool:
    """Whether ``root/rel`` means a file outside ``root``: absolute, through '..', or through a symlink."""
    if "\0" in rel:
        return False
    full = os.path.realpath(os.path.join(root, rel))
    return os.path.commonpath([os.path.realpath(root), full]) != os.path.realpath(root)


def _targets(root: str, rel: str) -> list[str]:
    """Where a lookup of ``rel`` in ``root`` could land when the name leads out: where the OS resolves
    it (outside the folder, in /tmp, behind the symlink), and the file inside the folder that ComfyUI's
    own lookup reads it as (folder_paths.get_full_path rewrites '../x' to 'x' and '/tmp/x' to 'tmp/x')."""
    if not _escapes(root, rel):
        return []
    return [os.path.realpath(os.path.join(root, rel)),
            os.path.join(root, os.path.relpath(os.path.join("/", rel), "/"))]


@pytest.fixture
def planted(pack, scene, embeddings_dir, base):
    """A valid embedding (every entry PLANTED) at each target of each hostile name that leads out
    (with and without .safetensors). Made after the scene's snapshot and removed, unchanged, before
    its write scan, so the scan still sees every write the nodes make."""
    root = str(embeddings_dir)
    Embedding = pack("tokensmith.embedding").Embedding
    data = pack("tokensmith.writer").serialize_embedding(Embedding({"clip_l": torch.full((1, 768), PLANTED)},
                                                                   name="planted"))
    names = HOSTILE + ["../outside.safetensors", "/etc/passwd", "linked/x.safetensors", "linked/x"]
    made, dirs = {}, []
    try:
        yield from _plant(root, names, data, made, dirs, (str(base), "/tmp", str(scene["outside"])), scene)
    finally:
        changed = [t for t in made if not os.path.isfile(t) or open(t, "rb").read() != data]
        for target in made:
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    assert not changed, f"planted files changed: {changed}"


def _plant(root, names, data, made, dirs, allowed, scene):
    for name in names:
        for rel in {name, name + ".safetensors"}:
            for target in _targets(root, rel):
                if target in made or os.path.lexists(target) or not target.startswith(allowed):
                    continue
                parent = os.path.dirname(target)
                try:
                    if not os.path.isdir(parent):
                        if not parent.startswith(root + os.sep):
                            continue
                        missing = parent
                        while not os.path.isdir(os.path.dirname(missing)):
                            missing = os.path.dirname(missing)
                        os.makedirs(parent)
                        dirs.append(missing)
                    with open(target, "xb") as fh:
                        fh.write(data)
                except OSError:  # a name the file system cannot hold (too long...): nothing to plant there
                    continue
                made[target] = data
    assert any(t.startswith("/tmp/") for t in made) and any(t.startswith(str(scene["outside"])) for t in made)
    assert any(t.startswith(root + os.sep) for t in made), made
    yield made


def _is_planted(emb) -> bool:
    return any(bool((v == PLANTED).all()) for v in emb.vectors.values())


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


def test_planted_files_are_valid_and_found_by_their_own_names(pack, node_classes, embeddings_dir, planted):
    """Control for the tests below: a planted file inside the folder loads, by its real name, with the
    planted vectors (so a refusal below is the name check's, not a broken or unreachable file)."""
    import folder_paths

    folder_paths.filename_list_cache.clear()
    inside = [t for t in planted if t.startswith(str(embeddings_dir) + os.sep) and t.endswith(".safetensors")]
    assert inside, planted
    rel = os.path.relpath(inside[0], embeddings_dir)
    assert node_classes["TokenSmithLoadEmbedding"].validate_inputs(file=rel) is True
    assert _is_planted(run_node(node_classes["TokenSmithLoadEmbedding"], file=rel).result[0])
    quoted = "`" + rel[: -len(".safetensors")] + "`"
    merged = run_node(node_classes["TokenSmithMergeEmbeddings"], operation="mean", expression=f"{quoted} * 1").result[0]
    assert _is_planted(merged)


LOAD_NAMES = HOSTILE + ["../outside.safetensors", "/etc/passwd", "linked/x.safetensors"]


@pytest.mark.parametrize("name", LOAD_NAMES, ids=range(len(LOAD_NAMES)))
def test_load_node_file(pack, node_classes, embeddings_dir, planted, name):
    """Refused, with the name error where the name leads out of the folder (a valid embedding waits
    at every place it could lead); the planted vectors never load."""
    load = node_classes["TokenSmithLoadEmbedding"]
    assert load.validate_inputs(file=name) is not True
    with pytest.raises(_tokensmith_error(pack)) as info:
        out = run_node(load, file=name)
        assert not _is_planted(out.result[0]), f"{name!r} loaded a planted file"
    if _targets(str(embeddings_dir), name):
        assert type(info.value).__name__ == "EmbeddingNameError", info.value
        message = str(info.value)
        assert "points outside the folder" in message or "absolute path is not allowed" in message, message


@pytest.mark.parametrize("name", HOSTILE + ["linked/x"], ids=range(len(HOSTILE) + 1))
def test_merge_expression_names(pack, node_classes, embeddings_dir, planted, name):
    quoted = "`" + name.replace("`", "``") + "`"
    with pytest.raises(_tokensmith_error(pack)) as info:
        out = run_node(node_classes["TokenSmithMergeEmbeddings"], operation="mean", expression=f"{quoted} * 0.5")
        assert not _is_planted(out.result[0]), f"{name!r} merged a planted file"
    if _targets(str(embeddings_dir), name + ".safetensors"):
        # the expression says where (an ExpressionError at the name's column) and passes the name error on
        message = str(info.value)
        assert "points outside the folder" in message or "absolute path is not allowed" in message, message


def test_prompt_node_reports_hostile_references_as_missing(node_classes, planted):
    for name in HOSTILE + ["linked/x"]:
        text = f"a photo of embedding:{name} in a field"
        out = run_node(node_classes["TokenSmithPrompt"], text=text, convert_keywords=True)
        prompt, warnings = out.result
        assert isinstance(prompt, str)
        # nothing outside the folders is ever reported as found
        assert not warnings.startswith("ok:"), (name, warnings)


RESUME_NAMES = [HOSTILE[0], HOSTILE[4], HOSTILE[9], HOSTILE[10], f"{MARK}.pt", "linked/x"]


@pytest.mark.parametrize("name", RESUME_NAMES, ids=range(len(RESUME_NAMES)))
def test_train_node_resume_from(pack, node_classes, sd1, model_runs, planted, name):
    """Refused before any work: the name error for every name but the harmless, absent MARK.pt (then
    "no embedding named"); a planted embedding is never resumed from."""
    runs = model_runs(sd1)
    with pytest.raises(_tokensmith_error(pack)) as info:
        run_node(node_classes["TokenSmithTrainEmbedding"],
                 **train_inputs(sd1, name="resume-hostile", resume_from=name, steps=1))
    if name == f"{MARK}.pt":
        assert "resume_from: no embedding named" in str(info.value), info.value
    else:
        assert type(info.value).__name__ == "EmbeddingNameError", info.value
    assert runs.total == 0, runs.counts


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
