"""Fault injection: SIGKILL in the middle of saves and of training, and a full disk during a save.

What must hold afterwards: every file in models/embeddings is complete and loadable (the old version
or the new one, never a part of either); a temporary file left by a killed write is never listed as
an embedding (by ComfyUI or TokenSmith); a full disk gives a clear error and keeps the old file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from devkit.make_checkpoint import CHECKPOINT_NAME
from tests.needs import missing
from tests.reliability.helpers import running_server, server_base, wait_for
from tokensmith.embedding import Embedding
from tokensmith.errors import EmbeddingFileError
from tokensmith.formats import read_embedding
from tokensmith.writer import atomic_write_bytes, serialize_embedding


def _embedding(seed: int, n: int = 75) -> Embedding:
    g = torch.Generator().manual_seed(seed)
    return Embedding({"clip_l": torch.randn(n, 768, generator=g), "clip_g": torch.randn(n, 1280, generator=g)},
                     name=f"v{seed}")


def temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def check_folder(folder: Path, versions: dict[str, list[Embedding]] | None = None) -> int:
    """Every embedding file in ``folder`` reads; where ``versions`` names a file, it equals one of them
    exactly. Returns the number of files checked."""
    import folder_paths

    exts = folder_paths.folder_names_and_paths["embeddings"][1]
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]
    for path in files:
        emb = read_embedding(path)  # raises on a partial file
        if versions and path.stem in versions:
            assert any(all(torch.equal(emb.vectors[k], v.vectors[k]) for k in v.vectors) for v in versions[path.stem]), \
                f"{path.name} matches neither the old nor the new version"
    for tmp in temp_leftovers(folder):
        # ComfyUI lists only these extensions; a killed write's temp file is hidden and ends in .tmp
        assert os.path.splitext(tmp.name)[1].lower() not in exts and tmp.name.startswith("."), tmp.name
    return len(files)


# ----------------------------------------------------------------------------- the writer, killed


def test_sigkill_during_atomic_saves(base, tmp_path):
    """A forked writer loops over saves (overwrites and new files, 1 MB each, fsync'd); it is killed the
    moment a temporary file shows, i.e. inside a save. Repeated; each time every file is whole."""
    folder = tmp_path / "embeddings"
    folder.mkdir()
    old, new = _embedding(1), _embedding(2)
    payloads = [serialize_embedding(old), serialize_embedding(new)]
    atomic_write_bytes(folder / "same.safetensors", payloads[0], overwrite=True)
    rng = random.Random(0)
    hits = 0
    trials = 12
    for trial in range(trials):
        pid = os.fork()
        if pid == 0:  # the child only writes; it never returns to pytest
            try:
                i = 0
                while True:
                    atomic_write_bytes(folder / "same.safetensors", payloads[i % 2], overwrite=True)
                    with contextlib.suppress(EmbeddingFileError):
                        atomic_write_bytes(folder / f"new-{trial}-{i}.safetensors", payloads[i % 2])
                    i += 1
            finally:
                os._exit(0)
        delay = rng.uniform(0.0, 0.05)
        time.sleep(delay)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(e.name.endswith(".tmp") for e in os.scandir(folder)):
                hits += 1
                break
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        checked = check_folder(folder, {"same": [old, new], **{f"new-{trial}-{i}": [old, new] for i in range(10_000)}})
        assert checked >= 1
    print(f"{hits} of {trials} kills landed inside a save")
    # most kills landed inside a save (a temporary file existed at that moment)
    assert hits >= trials // 2, f"only {hits} of {trials} kills landed inside a save"


# ----------------------------------------------------------------------------- a full disk


class _FullDisk:
    """A file object that writes part of the data, then fails the way a full disk does."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def _save_node(node_classes, pack, emb_vectors, name, overwrite):
    Embedding_ = pack("tokensmith.embedding").Embedding
    with torch.inference_mode():
        return node_classes["TokenSmithSaveEmbedding"].execute(embedding=Embedding_(emb_vectors, name=name), name=name,
                                                               overwrite=overwrite)


def test_full_disk_during_a_save_keeps_the_old_file(pack, node_classes, embeddings_dir, monkeypatch):
    """ENOSPC injected at the file-write level (the writer's file object), not in product code."""
    _save_node(node_classes, pack, {"clip_l": torch.ones(2, 768)}, "full-disk", overwrite=True)
    path = embeddings_dir / "full-disk.safetensors"
    old = path.read_bytes()
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        return _FullDisk(real_fdopen(fd, *args, **kwargs))

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(pack("tokensmith.errors").EmbeddingFileError, match="No space left on device"):
        _save_node(node_classes, pack, {"clip_l": torch.zeros(40, 768)}, "full-disk", overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert not temp_leftovers(embeddings_dir)
    _save_node(node_classes, pack, {"clip_l": torch.zeros(40, 768)}, "full-disk", overwrite=True)  # space again
    assert read_embedding(path).num_vectors == 40


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (needs root); skipped where mounting is not allowed (a failure under CI=true)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tokensmith-test", str(mnt)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        missing(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode})")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_really_full_disk_during_a_save(pack, node_classes, base, tiny_tmpfs, monkeypatch):
    """The same on a real, tiny file system: the kernel says ENOSPC."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embeddings",
                        ([str(tiny_tmpfs)], folder_paths.folder_names_and_paths["embeddings"][1]))
    _save_node(node_classes, pack, {"clip_l": torch.ones(1, 768)}, "keep", overwrite=True)
    path = tiny_tmpfs / "keep.safetensors"
    old = path.read_bytes()
    with pytest.raises(pack("tokensmith.errors").EmbeddingFileError, match="No space left on device"):
        _save_node(node_classes, pack, {"clip_l": torch.zeros(30, 768)}, "keep", overwrite=True)  # 92 KB > 64 KiB
    assert path.read_bytes() == old
    assert not temp_leftovers(tiny_tmpfs)
    with pytest.raises(pack("tokensmith.errors").EmbeddingFileError, match="No space left on device"):
        _save_node(node_classes, pack, {"clip_l": torch.zeros(30, 768)}, "other", overwrite=False)
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["keep.safetensors"]


# ----------------------------------------------------------------------------- a server, killed


def _train_graph(name: str, steps: int, save_every: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "2": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": "ts_rings"}},
        "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "images": ["2", 0], "captions": ["2", 1],
            "name": name, "init_text": "ring", "num_vectors": 4, "template": "object", "steps": steps,
            "learning_rate": "5e-3", "batch_size": 1, "seed": 0, "overwrite": True, "validate_every": 0,
            "save_every": save_every}},
    }


def _save_burst_graph(count: int) -> dict:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "2": {"class_type": "TokenSmithEmbeddingFromText", "inputs": {
            "clip": ["1", 1], "text": " ".join(["a red ring on a blue table"] * 10)}},
    }
    for i in range(count):
        graph[str(10 + i)] = {"class_type": "TokenSmithSaveEmbedding", "inputs": {
            "embedding": ["2", 0], "name": f"burst-{i % 4}", "overwrite": True}}
    return graph


def _kill_when(srv, predicate, timeout: float) -> None:
    wait_for(predicate, timeout=timeout, interval=0.002, what="the moment to kill")
    srv.kill()


def _tmp_in(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(e.name.endswith(".tmp") for e in it)


def _steps(srv, name) -> int:
    runs = [r for r in srv.get("/tokensmith/runs") if r["name"] == name]
    return max((e.get("step", 0) for e in runs[-1]["events"]), default=0) if runs else 0


@pytest.mark.slow  # three server starts on the real-architecture checkpoint
def test_server_killed_during_training_and_during_saves(tmp_path_factory, checkpoint_file, base):
    root = server_base(tmp_path_factory, checkpoint_file, "killed_server")
    emb_dir = root / "models" / "embeddings"
    kills = []

    # 1. killed in the middle of a training step (after a few steps and snapshot saves)
    with running_server(root) as srv:
        srv.queue(_train_graph("killed", steps=500, save_every=2))
        wait_for(lambda: _steps(srv, "killed") >= 3, timeout=600, what="step 3")
        time.sleep(random.Random(1).uniform(0.0, 0.3))
        kills.append(("mid-training", _tmp_in(emb_dir)))
        srv.kill()
    assert check_folder(emb_dir) >= 1, "no snapshot was saved before the kill"

    # 2. killed the moment a snapshot save is under way (save_every=1: a save after each step)
    with running_server(root) as srv:
        srv.queue(_train_graph("killed", steps=500, save_every=1))
        wait_for(lambda: _steps(srv, "killed") >= 2, timeout=600, what="step 2")
        _kill_when(srv, lambda: _tmp_in(emb_dir), timeout=120)
        kills.append(("mid-snapshot-save", True))
    check_folder(emb_dir)

    # 3. killed during a burst of Save Embedding nodes (the same four names overwritten again and again);
    #    bursts are queued until one is caught with a save under way
    with running_server(root) as srv:
        caught = False
        for attempt in range(20):
            graph = _save_burst_graph(60)
            graph["2"]["inputs"]["text"] += f" {attempt}"  # a new cache key, so the nodes run again
            prompt_id = srv.queue(graph)
            next_check = time.monotonic()
            while not caught:
                if _tmp_in(emb_dir):
                    srv.kill()
                    caught = True
                elif time.monotonic() >= next_check:
                    if prompt_id in srv.get(f"/history/{prompt_id}"):
                        break  # this burst ended before a save was caught: queue another
                    next_check = time.monotonic() + 0.2
            if caught:
                break
        assert caught, "no save was caught under way in 20 bursts"
        kills.append(("mid-node-save", attempt))
    check_folder(emb_dir)

    # A fresh server lists every file as a readable embedding and no temporary file at all.
    with running_server(root) as srv:
        comfy_list = srv.get("/embeddings")
        ours = srv.get("/tokensmith/embeddings")
    assert not [n for n in comfy_list if ".tmp" in n or n.startswith(".")], comfy_list
    assert ours and not [e for e in ours if e.get("error")], [e for e in ours if e.get("error")]
    assert not list((root / "temp").glob("tokensmith-slot-*"))
    state = root / "output" / "tokensmith_state"
    if state.exists():
        import safetensors.torch

        for f in state.glob("*.safetensors"):
            safetensors.torch.load_file(f)  # the optimizer state is written atomically too
    print("kills:", kills)
