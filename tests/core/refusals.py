"""A refusal asserted word for word: the whole message, not a part of it."""

from __future__ import annotations

import re

import pytest

from tokensmith.errors import TrainingError


def refused(message: str, error: type[Exception] = TrainingError):
    return pytest.raises(error, match=f"^{re.escape(message)}$")
