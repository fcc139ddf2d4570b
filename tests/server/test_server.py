"""The pack in a real ComfyUI server: node listing, a training workflow through /prompt on the
real-architecture SD1.5 checkpoint, the trained embedding used by a KSampler in the same graph."""

from __future__ import annotations

import json
import urllib.request

import pytest

from devkit import comfy_host
from devkit.make_checkpoint import CHECKPOINT_NAME
from devkit.server import error_message

pytestmark = pytest.mark.slow

TOKENSMITH_NODES = {"TokenSmithTrainEmbedding", "TokenSmithLossGraph", "TokenSmithLoadTrainingPictures"}


def train_and_sample_workflow(name: str, steps: int = 3) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "2": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": "ts_rings"}},
        "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "images": ["2", 0], "captions": ["2", 1],
            "name": name, "init_text": "ring", "num_vectors": 2, "template": "custom",
            "custom_template": "a photo of [name], [filewords]", "steps": steps, "learning_rate": "5e-3",
            "batch_size": 1, "seed": 0, "overwrite": True, "validate_every": 0}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": ["3", 1], "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "tokensmith_test"}},
    }


def test_object_info_lists_every_tokensmith_node(server):
    info = server.get("/object_info")
    ours = {k for k in info if k.startswith("TokenSmith")}
    assert TOKENSMITH_NODES <= ours, ours
    train = info["TokenSmithTrainEmbedding"]
    assert {"model", "clip", "name", "steps"} <= set(train["input"]["required"])
    assert {"vae", "images", "latents", "masks", "captions"} <= set(train["input"]["optional"])
    log = server.log_tail(200000)
    # nothing that names the pack's own files (by resolved location, not by a word in a path) failed
    failed_imports = [line for line in log.splitlines() if "IMPORT FAILED" in line or "Cannot import" in line]
    ours = [line for line in failed_imports if comfy_host.names_pack_path(line)]
    assert not ours, ours
    tracebacks = [b for b in log.split("Traceback (most recent call last):")[1:] if comfy_host.frames_in_pack(b)]
    assert not tracebacks, tracebacks[0][:2000]


def test_train_through_prompt_and_use_embedding_in_ksampler(server):
    entry = server.run(train_and_sample_workflow("server-ring"), timeout=900)
    assert error_message(entry) is None, error_message(entry) + "\n" + server.log_tail()
    assert entry["status"]["status_str"] == "success"
    images = entry["outputs"]["9"]["images"]
    assert len(images) == 1
    saved = server.base / "models" / "embeddings" / "server-ring.safetensors"
    assert saved.is_file()
    log = server.log_tail(50000)
    assert "embedding:server-ring does not exist" not in log
    assert "shape mismatch" not in log
    listed = {e["name"]: e for e in server.get("/tokensmith/embeddings")}
    assert listed["server-ring"]["family"] == "sd1"
    assert listed["server-ring"]["encoders"] == {"clip_l": [2, 768]}
    runs = server.get("/tokensmith/runs")
    assert runs and runs[-1]["name"] == "server-ring" and runs[-1]["finished"]
    assert [e["step"] for e in runs[-1]["events"] if "step" in e][-1] == 3


def test_embeddings_route_checks_names(server):
    req = urllib.request.Request(server.url + "/tokensmith/embeddings/info?name=../../etc/passwd")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400
    body = json.loads(err.value.read())  # read once: a second read gives b""
    assert set(body) == {"error"}, body
    assert "'..' are not allowed" in body["error"], body


# The Train node's inputs people set on every run (issue: the node shows ~38 widgets); the rest fold away.
TRAIN_BASICS = {"model", "clip", "vae", "images", "name", "init_text", "num_vectors", "template", "steps",
                "learning_rate", "batch_size", "seed", "overwrite", "latents", "masks", "captions"}


def _input_options(node: dict) -> dict:
    return {name: (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            for part in ("required", "optional") for name, spec in node["input"].get(part, {}).items()}


def v3_inputs_take_advanced() -> bool:
    """Read from the host's own source (not through the adapter under test): whether its V3 Input
    takes `advanced` (v0.33.0's does; v0.3.75's does not, though its classic nodes use the key)."""
    import ast

    source = (comfy_host.host_path() / "comfy_api" / "latest" / "_io.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "Input":
            init = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
            return "advanced" in [a.arg for a in init.args.args + init.args.kwonlyargs]
    raise AssertionError("no V3 Input class in the host's comfy_api")


def test_rarely_used_inputs_are_advanced_where_the_host_knows_the_flag(server):
    info = server.get("/object_info")
    host_has_flag = v3_inputs_take_advanced()
    train = _input_options(info["TokenSmithTrainEmbedding"])
    advanced = {name for name, opts in train.items() if opts.get("advanced")}
    if host_has_flag:
        assert advanced == set(train) - TRAIN_BASICS, sorted(advanced ^ (set(train) - TRAIN_BASICS))
        assert _input_options(info["TokenSmithInspectEmbedding"])["top_k"].get("advanced") is True
    else:
        ours = [(k, n) for k, node in info.items() if k.startswith("TokenSmith")
                for n, opts in _input_options(node).items() if "advanced" in opts]
        assert not ours, f"this host does not know 'advanced', yet these inputs carry it: {ours}"


def test_a_port_taken_before_the_bind_means_a_new_start(tmp_path, monkeypatch):
    """free_port's race: another process takes the port between the pick and ComfyUI's bind. The start
    notices (ComfyUI exits with 'address already in use'), picks another port and starts again, and it
    only counts as started when the server answering is its own (its argv names this base folder)."""
    import socket

    from devkit import server as server_mod

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    picks = []
    real_free_port = server_mod.free_port

    def racing_free_port():
        picks.append(taken if not picks else real_free_port())
        return picks[-1]

    monkeypatch.setattr(server_mod, "free_port", racing_free_port)
    srv = server_mod.ComfyServer(tmp_path / "race_base")
    try:
        srv.start()
        assert picks[0] == taken and len(picks) == 2, picks
        assert srv.port == picks[1] != taken
        assert str(srv.base) in srv.get("/system_stats")["system"]["argv"]
        assert "already in use" in srv.log_tail(200000).lower()
    finally:
        srv.stop()
        holder.close()


def test_info_route_and_listing_follow_a_retrained_file(server):
    """GET /tokensmith/embeddings/info answers 200 with the file's facts (family, shape, step, hashes
    computed here), and after the file is retrained (same name and size, new contents, a later mtime)
    both the info route and the listing give the new file's facts, not a cached old answer."""
    import hashlib
    import os

    import torch

    from tokensmith.embedding import Embedding
    from tokensmith.writer import save_embedding

    folder = server.base / "models" / "embeddings"

    def write(value, step):
        emb = Embedding({"clip_l": torch.full((3, 768), value)}, name="info-check", step=step)
        path = save_embedding(emb, folder, "info-check", overwrite=True)
        return path, hashlib.sha256(path.read_bytes()).hexdigest()

    def facts():
        with urllib.request.urlopen(server.url + "/tokensmith/embeddings/info?name=info-check", timeout=30) as resp:
            assert resp.status == 200
            info = json.loads(resp.read())
        listed = {e["name"]: e for e in server.get("/tokensmith/embeddings")}["info-check"]
        return info, listed

    path, sha = write(0.1, 10)
    info, listed = facts()
    assert info["name"] == "info-check" and info["family"] == "sd1", info
    assert info["encoders"] == {"clip_l": [3, 768]} and str(info["step"]) == "10", info
    assert info["sha256"].lower() == sha and info["hash"].lower() == sha[:10], info
    assert listed["sha256"].lower() == sha and listed["prompt"] == "embedding:info-check", listed

    before = os.stat(path)
    path, new_sha = write(0.2, 20)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))  # retrained later
    assert path.stat().st_size == before.st_size and new_sha != sha
    info, listed = facts()
    assert str(info["step"]) == "20" and info["sha256"].lower() == new_sha, info
    assert listed["sha256"].lower() == new_sha and str(listed["step"]) == "20", listed
