"""Inspect Embedding on a T5 CLIP says which tensor of a loaded file T5 reads: the file's first (ComfyUI's
fallback for a key the file lacks), which for a .pt written clip_l first is clip_l, not the clip_g that
TokenSmith's own files hold first."""

from __future__ import annotations

import json
import os
import uuid

import torch


def test_t5_reads_the_files_first_tensor(tiny, node_classes, embeddings_dir):
    import folder_paths

    clip = tiny("flux").clip
    name = f"order-{uuid.uuid4().hex[:8]}.pt"
    path = os.path.join(embeddings_dir, name)
    torch.save({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, path)
    folder_paths.filename_list_cache.clear()
    try:
        with torch.inference_mode():
            loaded = node_classes["TokenSmithLoadEmbedding"].execute(file=name).result[0]
            data = json.loads(node_classes["TokenSmithInspectEmbedding"].execute(embedding=loaded, clip=clip,
                                                                                 top_k=0).result[1])
    finally:
        os.remove(path)
        folder_paths.filename_list_cache.clear()
    assert data["clip"]["per_encoder"]["t5xxl"]["reads"] == "clip_l"
