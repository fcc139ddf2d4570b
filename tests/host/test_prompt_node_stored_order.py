"""Embedding Prompt on a T5 CLIP reads the order a file holds its tensors in: T5 has no key of its own
in an SDXL file and gets the file's first tensor (ComfyUI's fallback), which for a .pt written clip_l
first is clip_l, not the clip_g that TokenSmith's own files hold first."""

from __future__ import annotations

import os
import uuid

import torch


def test_the_fallback_tensor_is_the_files_first(tiny, node_classes, embeddings_dir):
    import folder_paths

    clip = tiny("flux").clip
    name = f"order-{uuid.uuid4().hex[:8]}"
    path = os.path.join(embeddings_dir, f"{name}.pt")
    torch.save({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, path)
    folder_paths.filename_list_cache.clear()
    try:
        with torch.inference_mode():
            warnings = node_classes["TokenSmithPrompt"].execute(text=f"embedding:{name}", convert_keywords=False,
                                                                clip=clip).result[1]
    finally:
        os.remove(path)
        folder_paths.filename_list_cache.clear()
    assert "no t5xxl key, falls back to the first tensor (clip_l)" in warnings, warnings
