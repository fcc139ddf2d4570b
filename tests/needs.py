"""What a test does when something it needs (a browser, a library, a kernel feature, mount rights) is
missing: on a developer's machine it is skipped with the reason; under ``CI=true`` it fails, because
CI installs everything it can (``make test`` runs scripts/install_browser.sh as root) and a skip
there would hide a test that never ran."""

from __future__ import annotations

import importlib
import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing(reason: str):
    """Skip (or, under CI=true, fail) the calling test because ``reason``."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing requirement is a failure, not a skip)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def importorfail(module: str):
    """``pytest.importorskip`` that fails under CI=true (usable at module level)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing(f"could not import {module!r}: {exc}")
