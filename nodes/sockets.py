"""Custom socket types shared by TokenSmith's nodes."""

from comfy_api.latest import io

from ..comfy_adapter import advanced_input

# A tokensmith.embedding.Embedding: vectors per text encoder plus name and metadata. Prefixed like the
# loss, so another pack's "EMBEDDING" never plugs in. Workflows saved when it was "EMBEDDING" still
# load, connect and run: the front end takes slot types from the node definition when it loads a
# saved node, links carry no checked type, and the server compares the node classes' own types
# (tests/browser/test_old_workflows.py).
Embedding = io.Custom("TOKENSMITH_EMBEDDING")
# A training history: tokensmith TrainingHistory (loss, validation loss, learning rate, norms per step).
LossHistory = io.Custom("TOKENSMITH_LOSS")

CATEGORY = "TokenSmith"

# Spread into the inputs most people leave alone: newer front ends fold them under "advanced".
ADV = advanced_input()
