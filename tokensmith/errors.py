"""The one family of errors TokenSmith raises on bad input.

Every reader, parser and node turns bad input into a subclass of ``TokenSmithError`` whose
message says what is wrong and how to fix it, so callers (nodes, CLI, routes) can show it as is.
"""

from __future__ import annotations


class TokenSmithError(ValueError):
    """Base class: a clear, user-facing error about bad input or a refused action."""


class EmbeddingFileError(TokenSmithError):
    """An embedding file could not be read or written (names the file and the reason)."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class EmbeddingNameError(TokenSmithError):
    """A name that cannot be used as an embedding file name / prompt keyword."""


class FamilyMismatchError(TokenSmithError):
    """Embeddings, models or encoders of different families were combined."""


class ExpressionError(TokenSmithError):
    """A merge expression could not be parsed or evaluated (says where)."""


class ScheduleError(TokenSmithError):
    """A learning-rate (or clipping) schedule string could not be parsed."""


class TrainingError(TokenSmithError):
    """Training inputs are unusable, or training had to stop (NaN, cancelled...)."""
