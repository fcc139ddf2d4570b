"""Tiny real models whose UNet has learned a few words, so that an embedding can matter.

With random weights the prompt barely steers a model, so no embedding could be learned from it.
Here the tiny UNet (ComfyUI's own classes, the text encoder frozen and random) is first trained
for a few hundred steps to draw one fixed latent pattern per word ("a photo of cat" -> the cat
pattern...). Textual inversion on that model then has a concept to find: starting from other
vectors, it should learn vectors that make the UNet draw the target word's pattern, and the
word's own token vectors are the "hidden embedding" that explains the data perfectly.
The trained UNet weights are cached under .cache/ (deterministic for a seed).
"""

from __future__ import annotations

import torch

from .comfy_host import REPO_ROOT, pack_import
from .model_factory import ModelSet, build_tiny

WORDS = ("cat", "dog", "car", "tree")
PROMPT = "a photo of [name]"
LATENT_SIZE = 8  # 64 x 64 pixels
CACHE = REPO_ROOT / ".cache" / "conditioned"


def word_patterns(seed: int = 0) -> dict[str, torch.Tensor]:
    """One fixed, smooth latent pattern [4, 8, 8] per word (unit variance)."""
    gen = torch.Generator().manual_seed(seed + 99)
    out = {}
    for word in WORDS:
        coarse = torch.randn(1, 4, 2, 2, generator=gen)
        fine = torch.nn.functional.interpolate(coarse, size=(LATENT_SIZE, LATENT_SIZE), mode="bilinear",
                                               align_corners=False)
        fine = fine + 0.3 * torch.randn(fine.shape, generator=gen)
        out[word] = (fine / fine.std())[0]
    return out


def concept_latents(word: str, count: int = 8, seed: int = 0, jitter: float = 0.05) -> torch.Tensor:
    """`count` training latents of a word's pattern with a little variation."""
    base = word_patterns(seed)[word]
    gen = torch.Generator().manual_seed(seed + 7)
    return base.unsqueeze(0) + jitter * torch.randn((count, *base.shape), generator=gen)


def _pretrain(family: str, seed: int, steps: int) -> dict[str, torch.Tensor]:
    adapter = pack_import("comfy_adapter")
    patterns = word_patterns(seed)
    ms = build_tiny(family, seed)
    with torch.inference_mode(), adapter.PromptRows(ms.clip, 1) as rows:
        conds = {}
        for word in WORDS:
            tokens = rows.tokens(PROMPT.replace("[name]", word))
            cond, pooled = adapter.encode_tokens(ms.clip, tokens)
            conds[word] = (cond, pooled)
    gen = torch.Generator().manual_seed(seed + 3)
    with torch.inference_mode(False):
        conds = {w: (c.clone(), None if p is None else p.clone()) for w, (c, p) in conds.items()}
        unet = ms.model.model.diffusion_model
        # a trainable copy of the weights (ComfyUI made them under inference mode)
        state = {k: v.clone() for k, v in unet.state_dict().items()}
        with adapter.trainable_graph(ms.model.model):
            params = []
            for name, _ in unet.named_parameters():
                trainable = torch.nn.Parameter(state[name], requires_grad=True)
                module_name, _, leaf = name.rpartition(".")
                unet.get_submodule(module_name)._parameters[leaf] = trainable
                params.append(trainable)
            opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
            words = list(WORDS)
            for _ in range(steps):
                idx = torch.randint(0, len(words), (8,), generator=gen)
                x0 = torch.stack([patterns[words[i]] for i in idx]) + 0.05 * torch.randn(8, 4, LATENT_SIZE, LATENT_SIZE, generator=gen)
                cond = torch.cat([conds[words[i]][0] for i in idx])
                pooled = None if conds[words[0]][1] is None else torch.cat([conds[words[i]][1] for i in idx])
                sigmas = adapter.sample_sigmas(ms.model, torch.rand(8, generator=gen))
                noise = torch.randn(x0.shape, generator=gen)
                xt = adapter.noisy_latents(ms.model, sigmas, noise, x0)
                pred = adapter.denoise(ms.model, xt, sigmas, cond, pooled, (LATENT_SIZE * 8, LATENT_SIZE * 8))
                loss = ((pred - x0) ** 2).mean(dim=(1, 2, 3)).div(sigmas**2 + 1.0).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def build_conditioned(family: str = "sd1", seed: int = 0, steps: int = 400) -> ModelSet:
    """A tiny real model set whose UNet knows WORDS (trained once, then cached)."""
    import safetensors.torch

    path = CACHE / f"{family}-seed{seed}-steps{steps}-v1.safetensors"
    if path.exists():
        state = safetensors.torch.load_file(str(path))
    else:
        state = _pretrain(family, seed, steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        tmp.rename(path)
    ms = build_tiny(family, seed)
    with torch.inference_mode():
        ms.model.model.diffusion_model.load_state_dict(state)
    return ms


def word_vectors(model_set, word: str) -> dict[str, torch.Tensor]:
    """The word's own input vectors per encoder: the embedding that explains its pattern."""
    adapter = pack_import("comfy_adapter")
    return adapter.text_to_vectors(model_set.clip, word)
