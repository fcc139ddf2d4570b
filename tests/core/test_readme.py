"""The README's user path holds: the install clones the repository named in pyproject.toml into the
folder name the pack goes by, the quick start comes first and quotes the trainer's real defaults,
and every `make` command it gives is a Makefile target."""

import re
from pathlib import Path

from tokensmith.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_install_clones_the_repository_into_ComfyUI_TokenSmith():
    # [project.urls] Repository (read by hand: tomllib is Python 3.11+, the pack supports 3.10)
    url = re.search(r'^Repository = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M).group(1)
    install = section("Install")
    assert f"git clone {url} ComfyUI-TokenSmith" in install
    assert "custom_nodes" in install and "ComfyUI-TokenSmith/requirements.txt" in install
    assert not re.search(r"<[a-z][^>]*>", install), "a placeholder is left in the install section"


def test_quick_start_comes_first_and_quotes_the_real_defaults():
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    assert headings[:2] == ["Install", "Quick start: an embedding from your own pictures"]
    quick = section("Quick start: an embedding from your own pictures")
    defaults = TrainConfig()
    assert f"default {defaults.steps} steps" in quick
    assert f"`{defaults.learning_rate}`" in quick
    for step in ("Folder", "Sizes", "Captions", "Node", "Steps", "How long", "Where the file lands", "Use it"):
        assert f"**{step}" in quick, step
    assert "models/embeddings/" in quick and "(embedding:" in quick  # where it lands, how to weight it


def test_every_make_command_in_the_readme_is_a_target():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE))
    # in code: `make demo` inline, or a line of a shell block
    used = set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", README, flags=re.MULTILINE))
    assert {"demo", "test"} <= used
    assert used <= targets, used - targets
