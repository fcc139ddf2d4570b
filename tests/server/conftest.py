"""A real ComfyUI server (`main.py --cpu`) on loopback with the pack and the SD1.5-architecture
checkpoint (random weights) in its models/checkpoints folder."""

from __future__ import annotations

import os

import pytest

from devkit.dataset import write_dataset
from devkit.make_checkpoint import CHECKPOINT_NAME
from devkit.server import ComfyServer


@pytest.fixture(scope="session")
def server(tmp_path_factory, checkpoint_file):
    base = tmp_path_factory.mktemp("server_base")
    (base / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(checkpoint_file, base / "models" / "checkpoints" / CHECKPOINT_NAME)
    write_dataset(base / "input" / "ts_rings", count=3, size=64)
    srv = ComfyServer(base).start()
    yield srv
    srv.stop()
    assert srv.proc.poll() is not None, "the server process is still running"
