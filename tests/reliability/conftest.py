"""Fixtures for the reliability suite: an in-process ComfyUI with the pack and tiny models of each
family (as tests/host), real servers on the SD1.5-architecture checkpoint (as tests/server), and
tools to watch what a piece of work does: forward hooks that count model runs, a file-system
snapshot, and resident memory / thread counts of a server process."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import comfy_host
from tests.reliability.helpers import ModelRuns, running_server, server_base

# ----------------------------------------------------------------------------- in-process ComfyUI


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability_base")
    comfy_host.start_in_process(base)
    return base


@pytest.fixture
def base(comfy_base):
    """The in-process base directory, with ComfyUI's folders pointed at it (another suite in the same
    session may have pointed them elsewhere)."""
    comfy_host.set_base_directory(comfy_base)
    return comfy_base


@pytest.fixture
def embeddings_dir(base):
    import folder_paths

    path = Path(folder_paths.get_folder_paths("embeddings")[0])
    folder_paths.filename_list_cache.clear()
    return path


@pytest.fixture
def model_runs():
    opened = []

    def watch(*model_sets) -> ModelRuns:
        runs = ModelRuns(*model_sets)
        opened.append(runs)
        return runs

    yield watch
    for runs in opened:
        runs.close()


# ----------------------------------------------------------------------------- file-system watch


# ----------------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def rel_server(tmp_path_factory, checkpoint_file):
    """One server shared by the route, name and cancel tests (the checkpoint, and a small ring dataset
    in input/ts_rings). Tests that kill a server or soak one start their own."""
    base = server_base(tmp_path_factory, checkpoint_file, "rel_server")
    with running_server(base) as srv:
        yield srv


