"""Assertions shared by tests and the reliability suite."""

from __future__ import annotations

import torch


def weights_snapshot(model_set) -> dict[str, torch.Tensor]:
    """Copies of every UNet and text-encoder tensor, to prove training changed none of them."""
    out = {}
    with torch.inference_mode():
        for prefix, module in (("unet.", model_set.model.model), ("clip.", model_set.clip.cond_stage_model)):
            for k, v in module.state_dict().items():
                out[prefix + k] = v.clone()
    return out


def assert_same_weights(before: dict, model_set) -> None:
    after = weights_snapshot(model_set)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"weights changed: {changed[:5]}"
