"""The real ComfyUI server with the pack, driven by Debian's headless Chromium through Playwright.

Skips (with the reason) when /usr/bin/chromium or the playwright package is missing, and fails
instead under CI=true (tests/needs.py): install them with `bash scripts/install_browser.sh` (root) and
`pip install -r requirements-test.txt`.
Screenshots go to test-artifacts/browser/ ($TOKENSMITH_ARTIFACTS/browser/ when set).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from devkit.comfy_host import REPO_ROOT
from devkit.workflows import CHROMIUM, DEMO_FOLDER, NEGATIVE_FOLDER, RECORD_EVENTS, skip_first_visit
from tests.needs import in_ci, missing

# the host matrix gives each host a folder of its own (scripts/test_hosts.py)
ARTIFACTS = Path(os.environ.get("TOKENSMITH_ARTIFACTS") or REPO_ROOT / "test-artifacts") / "browser"


def _missing() -> str | None:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        return "Debian's chromium is not installed: run `bash scripts/install_browser.sh` as root"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed: pip install -r requirements-test.txt"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            if reason and not in_ci():
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _browser_present():
    """Under CI=true a missing browser fails each browser test (outside CI they are skipped above)."""
    reason = _missing()
    if reason:
        missing(reason)


def write_old_pt(path: Path) -> Path:
    """An A1111-style .pt (what Convert Embedding reads), made here with torch.save."""
    import torch

    gen = torch.Generator().manual_seed(5)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 768, generator=gen) * 0.02},
                "name": "tokensmith-old", "step": 500, "sd_checkpoint": None, "sd_checkpoint_name": None}, path)
    return path


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser_server(tmp_path_factory):
    from devkit.dataset import write_dataset
    from devkit.demo import pick_threads, write_negative_dataset
    from devkit.make_checkpoint import CHECKPOINT_NAME, SD3_CHECKPOINT_NAME, ensure_checkpoint, ensure_sd3_checkpoint
    from devkit.server import ComfyServer

    base = tmp_path_factory.mktemp("browser_base")
    (base / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(ensure_checkpoint(), base / "models" / "checkpoints" / CHECKPOINT_NAME)
    # the SD3 example runs on the SD3-architecture one (CLIP-L + CLIP-G, no T5)
    os.symlink(ensure_sd3_checkpoint(), base / "models" / "checkpoints" / SD3_CHECKPOINT_NAME)
    write_dataset(base / "input" / DEMO_FOLDER, count=3, size=64)
    write_negative_dataset(base / "input" / NEGATIVE_FOLDER, count=3, size=64)
    (base / "models" / "embeddings").mkdir(parents=True)
    write_old_pt(base / "models" / "embeddings" / "tokensmith-old.pt")
    skip_first_visit(base)
    # on a busy machine one torch thread trains faster than two fighting for the cores (see devkit.demo)
    threads = pick_threads()
    saved = os.environ.get("OMP_NUM_THREADS")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        server = ComfyServer(base).start()
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser_context():
    from devkit.workflows import open_browser

    with open_browser() as context:
        yield context


class ConsoleLog:
    def __init__(self, page):
        self.entries: list[tuple[str, str]] = []
        page.on("console", lambda m: self.entries.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.entries.append(("pageerror", f"{e}\n{getattr(e, 'stack', '')}")))

    def tokensmith_errors(self) -> list[str]:
        return [text for kind, text in self.entries
                if kind in ("error", "pageerror") and "tokensmith" in text.lower()]


@pytest.fixture(scope="module")
def page(browser_context, browser_server):
    from devkit.workflows import new_comfy_page

    def record(new_page):
        new_page.tokensmith_console = ConsoleLog(new_page)

    pg = new_comfy_page(browser_context, browser_server.url, viewport=(1500, 950), before=record)
    pg.evaluate(RECORD_EVENTS)
    yield pg
    pg.close()
