"""SD3 in a real ComfyUI server: a real-architecture SD3 checkpoint (full CLIP-L and CLIP-G, no T5; random
weights) loaded by CheckpointLoaderSimple trains an embedding through /prompt, and embedding:NAME changes
the latent KSampler samples against the same prompt without it."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from devkit.dataset import write_dataset
from devkit.make_checkpoint import SD3_CHECKPOINT_NAME, ensure_sd3_checkpoint
from devkit.server import ComfyServer, error_message, status_messages

pytestmark = pytest.mark.slow

NAME = "sd3-server-ring"
PREFIX = "a photo of"
# label -> the CLIPTextEncode, KSampler and SaveLatent nodes of each sampled latent
SAMPLED = {"with": ("10", "11", "12"), "again": ("13", "14", "15"), "without": ("20", "21", "22")}


@pytest.fixture(scope="module")
def sd3_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("sd3_server_base")
    (base / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(ensure_sd3_checkpoint(), base / "models" / "checkpoints" / SD3_CHECKPOINT_NAME)
    write_dataset(base / "input" / "ts_sd3_rings", count=2, size=64)
    # no node cache: two nodes with equal inputs both run, so the repeat below is a real second sampling
    srv = ComfyServer(base, extra_args=["--cache-none"]).start()
    yield srv
    srv.stop()
    assert srv.proc.poll() is not None, "the server process is still running"


def _sample(ids: tuple[str, str, str], text, label: str) -> dict:
    encode, sampler, save = ids
    return {
        encode: {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
        sampler: {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 7, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": [encode, 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        save: {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": f"ts_sd3/{label}"}},
    }


def train_and_sample_workflow(steps: int = 2) -> dict:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD3_CHECKPOINT_NAME}},
        "2": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": "ts_sd3_rings"}},
        "3": {"class_type": "TokenSmithTrainEmbedding", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "images": ["2", 0], "captions": ["2", 1],
            "name": NAME, "init_text": "ring", "num_vectors": 2, "template": "custom",
            "custom_template": "a photo of [name], [filewords]", "steps": steps, "learning_rate": "5e-3",
            "batch_size": 1, "seed": 0, "overwrite": True, "validate_every": 0}},
        # the trainer's prompt output (embedding:NAME) orders the encodes after the file is written
        "4": {"class_type": "StringConcatenate", "inputs": {"string_a": PREFIX, "string_b": ["3", 1],
                                                            "delimiter": " "}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    graph.update(_sample(SAMPLED["with"], ["4", 0], "with"))
    graph.update(_sample(SAMPLED["again"], ["4", 0], "again"))
    # what ComfyUI encodes when it drops embedding:NAME (a missing file, a key it cannot use)
    graph.update(_sample(SAMPLED["without"], PREFIX, "without"))
    return graph


def _latent(server, entry: dict, save_node: str) -> torch.Tensor:
    (saved,) = entry["outputs"][save_node]["latents"]
    path = server.base / "output" / saved["subfolder"] / saved["filename"]
    return load_file(str(path))["latent_tensor"].float()


def test_sd3_checkpoint_trains_through_prompt_and_the_embedding_steers_sampling(sd3_server):
    server = sd3_server
    entry = server.run(train_and_sample_workflow(), timeout=1200)
    assert error_message(entry) is None, error_message(entry) + "\n" + server.log_tail()
    assert entry["status"]["status_str"] == "success"
    cached = [node for kind, data in status_messages(entry) if kind == "execution_cached" for node in data["nodes"]]
    assert not {ids[1] for ids in SAMPLED.values()} & set(cached), cached

    saved = server.base / "models" / "embeddings" / f"{NAME}.safetensors"
    assert saved.is_file()
    vectors = load_file(str(saved))
    assert {"clip_l", "clip_g"} <= set(vectors), sorted(vectors)
    assert tuple(vectors["clip_l"].shape) == (2, 768) and tuple(vectors["clip_g"].shape) == (2, 1280)
    log = server.log_tail(200000)
    assert f"embedding:{NAME} does not exist" not in log
    assert "shape mismatch" not in log

    latents = {label: _latent(server, entry, ids[2]) for label, ids in SAMPLED.items()}
    for label, lat in latents.items():
        assert lat.shape == (1, 16, 8, 8), (label, lat.shape)
        assert torch.isfinite(lat).all(), label
    # the same prompt sampled twice is bitwise the same latent: what makes "differs" below mean the embedding
    assert torch.equal(latents["with"], latents["again"])
    diff = (latents["with"] - latents["without"]).abs().max().item()
    assert diff > 1e-3, f"embedding:{NAME} left the sampled latent as the prompt without it (max diff {diff})"
