"""Custom socket types shared by TokenSmith's nodes."""

from comfy_api.latest import io

from ..comfy_adapter import advanced_input

# A tokensmith.embedding.Embedding: vectors per text encoder plus name and metadata.
Embedding = io.Custom("EMBEDDING")
# A training history: tokensmith TrainingHistory (loss, validation loss, learning rate, norms per step).
LossHistory = io.Custom("TOKENSMITH_LOSS")

CATEGORY = "TokenSmith"

# Spread into the inputs most people leave alone: newer front ends fold them under "advanced".
ADV = advanced_input()
