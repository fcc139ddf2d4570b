"""Shared fixtures of the core tests (no ComfyUI)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64_default():
    """torch's default dtype set to float64 for one test (a host process may have changed it)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)
