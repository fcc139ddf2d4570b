"""The one place TokenSmith reaches into ComfyUI's internals.

Everything that depends on how ComfyUI builds its tokenizers, text encoders, ModelPatcher and
model sampling lives here, so a ComfyUI change breaks one module (and `check_host()`, which a
test calls and which names the ComfyUI version) rather than the whole pack.

What it provides:
- encoders_of / clip_family / model_family: which text encoders a CLIP has, which family a MODEL is;
- token_table, text_to_vectors: the vocabulary's input vectors (init text, nearest tokens, merges);
- PromptRows: template prompts tokenized by ComfyUI's own tokenizer, with slots for the vectors;
- trainable_graph: the context in which gradients can reach the vectors through the frozen,
  shared model (alias weights instead of inference tensors; out-of-place CLIP layers; the training
  attention, per call), undone after;
- encode_tokens / encode_batch / denoise: the text encoder and the diffusion model's x0 prediction;
- encode_distribution: the VAE's latents (and their spread) for the training pictures;
- embedding folders and the host version.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import comfy.clip_model
import comfy.ldm.modules.attention
import comfy.ldm.modules.diffusionmodules.openaimodel
import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import comfy.ops
import comfy.sd1_clip
import folder_paths
import torch

from .tokensmith.comfy_reads import Slot
from .tokensmith.embedding import family_name, family_of
from .tokensmith.errors import EmbeddingNameError, FamilyMismatchError, TrainingError
from .tokensmith.lean_backward import Conv2dInputGrad, GegluProduct, GroupNormSiLU
from .tokensmith.names import safe_join
from .tokensmith.objective import Objective, objective_for

log = logging.getLogger("tokensmith")

SLOT_NAME = "tokensmith_slot"  # the placeholder embedding that marks where trainable vectors go
_SLOT_BASE = 7919.0  # slot row i is filled with _SLOT_BASE + i: a value no real embedding holds


def host_version() -> str:
    try:
        import comfyui_version

        return comfyui_version.__version__
    except ImportError:
        return "unknown"


@functools.cache
def host_takes_advanced_inputs() -> bool:
    """Whether this host's V3 inputs accept `advanced=True` (newer front ends fold such inputs
    away); older hosts refuse the keyword, so it is only passed where it is known."""
    from comfy_api.latest import io

    return "advanced" in inspect.signature(io.Input.__init__).parameters


def advanced_input() -> dict:
    """Keyword arguments that mark a node input as advanced on hosts that know the flag."""
    return {"advanced": True} if host_takes_advanced_inputs() else {}


def check_host() -> list[str]:
    """The internals this module relies on that the running ComfyUI lacks (empty when all is well)."""
    missing = []

    def need(obj, attr, what):
        if not hasattr(obj, attr):
            missing.append(what)

    need(comfy.sd1_clip, "SDTokenizer", "comfy.sd1_clip.SDTokenizer")
    need(comfy.sd1_clip, "SDClipModel", "comfy.sd1_clip.SDClipModel")
    need(comfy.sd1_clip, "load_embed", "comfy.sd1_clip.load_embed")
    need(comfy.clip_model, "CLIPLayer", "comfy.clip_model.CLIPLayer")
    need(comfy.clip_model, "CLIPTextModel", "comfy.clip_model.CLIPTextModel")
    need(comfy.model_management, "load_models_gpu", "comfy.model_management.load_models_gpu")
    need(comfy.model_management, "soft_empty_cache", "comfy.model_management.soft_empty_cache")
    need(comfy.model_management, "throw_exception_if_processing_interrupted",
         "comfy.model_management.throw_exception_if_processing_interrupted")
    need(comfy.model_management, "InterruptProcessingException", "comfy.model_management.InterruptProcessingException")
    need(comfy.model_sampling, "EPS", "comfy.model_sampling.EPS")
    need(comfy.model_sampling, "V_PREDICTION", "comfy.model_sampling.V_PREDICTION")
    need(comfy.model_base.BaseModel, "apply_model", "comfy.model_base.BaseModel.apply_model")
    need(folder_paths, "get_folder_paths", "folder_paths.get_folder_paths")
    need(folder_paths, "recursive_search", "folder_paths.recursive_search")
    need(folder_paths, "filter_files_extensions", "folder_paths.filter_files_extensions")
    need(comfy.ldm.modules.diffusionmodules.openaimodel, "ResBlock",
         "comfy.ldm.modules.diffusionmodules.openaimodel.ResBlock")
    need(comfy.ldm.modules.attention, "BasicTransformerBlock", "comfy.ldm.modules.attention.BasicTransformerBlock")
    need(comfy.ldm.modules.attention, "attention_pytorch", "comfy.ldm.modules.attention.attention_pytorch")
    if not _code_mentions(getattr(comfy.ldm.modules.attention, "wrap_attn", None), "optimized_attention_override"):
        missing.append("comfy.ldm.modules.attention.wrap_attn honouring transformer_options['optimized_attention_override']")
    tok = getattr(comfy.sd1_clip, "SDTokenizer", None)
    if tok is not None:
        for attr in ("tokenize_with_weights", "_try_get_embedding"):
            need(tok, attr, f"comfy.sd1_clip.SDTokenizer.{attr}")
    layer = getattr(comfy.clip_model, "CLIPLayer", None)
    if layer is not None:
        params = list(inspect.signature(layer.forward).parameters)
        if params[:4] != ["self", "x", "mask", "optimized_attention"]:
            missing.append(f"comfy.clip_model.CLIPLayer.forward(x, mask, optimized_attention) (has {params})")
    return missing


def _code_mentions(fn, name: str) -> bool:
    # whether a function's code (nested functions included) uses this string or name
    code = getattr(fn, "__code__", None)
    stack = [code] if code is not None else []
    while stack:
        c = stack.pop()
        if name in c.co_consts or name in c.co_names:
            return True
        stack.extend(k for k in c.co_consts if isinstance(k, type(c)))
    return False


# ---------------------------------------------------------------------------------------------
# Encoders and families


@dataclass(frozen=True)
class Encoder:
    key: str  # clip_l / clip_h / clip_g: the key ComfyUI reads from embedding files
    token_key: str  # the key of this encoder's rows in clip.tokenize() output ("l", "g", "h")
    tokenizer: object  # comfy.sd1_clip.SDTokenizer
    model: object  # comfy.sd1_clip.SDClipModel
    width: int
    attr: str = ""  # the tokenizer's attribute on clip.tokenizer when it is not `key` (Chroma: clip_t5xxl)


def encoders_of(clip) -> list[Encoder]:
    """The text encoders of a ComfyUI CLIP, in ComfyUI's embedding-key terms."""
    out = []
    tokenizer = clip.tokenizer
    model = clip.cond_stage_model
    for attr in ("clip_l", "clip_h", "clip_g"):
        tok = getattr(tokenizer, attr, None)
        enc = getattr(model, attr, None)
        if tok is None or enc is None or not hasattr(tok, "embedding_key"):
            continue
        out.append(Encoder(tok.embedding_key, tok.embedding_key.removeprefix("clip_"), tok, enc, tok.embedding_size))
    out += _other_encoders(clip)  # T5 / LLM encoders (SD3, Flux, Chroma, Z-Image, Qwen-Image); none for SD1/SD2/SDXL
    if not out:
        raise FamilyMismatchError(
            "this CLIP has no CLIP-L, CLIP-H, CLIP-G, T5-XXL, Qwen3-4B or Qwen2.5-7B text encoder: TokenSmith "
            "trains embeddings for SD1.x, SD2.x, SDXL, SD3, Flux.1, Chroma, Z-Image and Qwen-Image"
        )
    return out


def clip_family(clip) -> str:
    return family_of(e.key for e in encoders_of(clip))


_MODEL_CONTEXT_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def model_family(model) -> str:
    """sd1 / sd2 / sdxl for a MODEL (ModelPatcher), from its config; 'unknown' otherwise."""
    base = model.model
    if isinstance(base, comfy.model_base.SDXL):
        return "sdxl"
    flow = _flow_model_family(base)  # sd3 / flux (dev and schnell) / chroma / zimage / qwen_image
    if flow is not None:
        return flow
    if type(base) is not comfy.model_base.BaseModel:
        return "unknown"
    context = base.model_config.unet_config.get("context_dim")
    return _MODEL_CONTEXT_FAMILY.get(context, "unknown")


def prediction_type(model) -> str:
    """'eps' or 'v', from the model's (possibly patched) model_sampling."""
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.V_PREDICTION):
        return "v"
    if isinstance(sampling, comfy.model_sampling.EPS) and type(sampling).calculate_denoised is comfy.model_sampling.EPS.calculate_denoised:
        return "eps"
    if is_flow_model(model):
        return "flow"  # velocity prediction (SD3, Flux, Chroma, Z-Image, Qwen-Image): FlowMatching
    raise TrainingError(
        f"this model samples with {type(sampling).__name__}: TokenSmith trains eps- and v-prediction models "
        "(SD1.x, SD2.x, SDXL) only"
    )


def training_objective(model) -> Objective:
    """The training loss for this model's sampling (tokensmith.objective), chosen from its own
    model_sampling: a new kind of sampling maps to its Objective here and in prediction_type."""
    return objective_for(prediction_type(model))


# ---------------------------------------------------------------------------------------------
# Vocabulary


def token_table(encoder: Encoder) -> torch.Tensor:
    """The encoder's input token vectors [vocab, width] (the shared weight; do not modify)."""
    return encoder.model.transformer.get_input_embeddings().weight


def token_ids(encoder: Encoder, text: str) -> list[int]:
    """Token ids of plain text, without start/end tokens."""
    ids = encoder.tokenizer.tokenizer(text)["input_ids"]
    start = encoder.tokenizer.tokens_start
    end = -1 if encoder.tokenizer.tokenizer_adds_end_token else None
    return list(ids[start:end])


def text_to_vectors(clip, text: str) -> dict[str, torch.Tensor]:
    """The input vectors of text's tokens per encoder, fp32 CPU copies ({key: [k, width]})."""
    out = {}
    for enc in encoders_of(clip):
        ids = token_ids(enc, text)
        table = token_table(enc)
        out[enc.key] = table[torch.tensor(ids, dtype=torch.long, device=table.device)].detach().float().cpu().clone()
    return out


def token_strings(encoder: Encoder, ids) -> list[str]:
    inv = encoder.tokenizer.inv_vocab
    return [inv.get(int(i), f"<{int(i)}>").replace("</w>", "") for i in ids]


def encoder_by_key(clip, key: str) -> Encoder | None:
    return next((e for e in encoders_of(clip) if e.key == key), None)


def _tokenizers(clip) -> Iterator[tuple[str, object]]:
    # (attribute, SDTokenizer) for each text encoder's tokenizer: clip_l, clip_g, t5xxl, qwen3_4b, ...
    for attr, tok in vars(clip.tokenizer).items():
        if isinstance(tok, comfy.sd1_clip.SDTokenizer):
            yield attr, tok


def embedding_slots(clip) -> list[Slot]:
    """Every tokenizer of a CLIP as `embedding:NAME` meets it: the key and width it reads from embedding
    files, whether it looks names up at all (it has an embeddings folder) and whether the CLIP loaded its
    encoder (SD3 without T5 keeps the T5 tokenizer but not the model)."""
    slots = []
    for attr, tok in _tokenizers(clip):
        encoder = _encoder_model(clip, attr)
        slots.append(Slot(tok.embedding_key, _input_width(tok, encoder), tok.embedding_directory is not None,
                          encoder is not None))
    return slots


def _encoder_model(clip, tokenizer_attr: str):
    # the encoder model beside a tokenizer: the same attribute name (clip_l, t5xxl, qwen3_4b), or without
    # the clip_ prefix (PixArt/Chroma: tokenizer clip_t5xxl, model t5xxl); None when the CLIP lacks it
    model = clip.cond_stage_model
    for name in (tokenizer_attr, tokenizer_attr.removeprefix("clip_")):
        encoder = getattr(model, name, None)
        if encoder is not None:
            return encoder
    return None


def _input_width(tok, encoder) -> int:
    # ComfyUI drops spliced vectors whose width differs from the encoder's input embeddings (process_tokens);
    # the tokenizer's embedding_size says the same for full-size models, not for small test models
    transformer = getattr(encoder, "transformer", None)
    table = transformer.get_input_embeddings() if hasattr(transformer, "get_input_embeddings") else None
    weight = getattr(table, "weight", None)
    return int(weight.shape[-1]) if isinstance(weight, torch.Tensor) else int(tok.embedding_size)


def text_encoders(clip) -> list[Encoder]:
    """Every loaded text encoder of a CLIP (CLIP-L/H/G, T5, LLM encoders), for vocabulary look-ups."""
    out = []
    for attr, tok in _tokenizers(clip):
        enc = _encoder_model(clip, attr)
        if enc is not None:
            out.append(Encoder(tok.embedding_key, attr.removeprefix("clip_"), tok, enc, _input_width(tok, enc)))
    return out


def vocabulary_norms(encoder: Encoder) -> dict[str, float]:
    """Median, mean and max L2 norm of the encoder's token vectors (the 'typical' norm)."""
    norms = token_table(encoder).detach().float().norm(dim=-1)
    return {"median": float(norms.median()), "mean": float(norms.mean()), "max": float(norms.max()),
            "min": float(norms.min())}


def nearest_tokens(encoder: Encoder, vectors: torch.Tensor, k: int = 10) -> list[list[tuple[str, float]]]:
    """For each vector [n, width]: the k vocabulary tokens with the highest cosine similarity."""
    table = token_table(encoder).detach().float()
    vecs = vectors.detach().float().to(table.device)
    if vecs.shape[-1] != table.shape[-1]:
        raise FamilyMismatchError(f"vectors of width {vecs.shape[-1]} cannot be compared with {encoder.key} "
                                  f"(width {table.shape[-1]})")
    sims = torch.nn.functional.normalize(vecs, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
    top = sims.topk(min(k, table.shape[0]), dim=-1)
    out = []
    for values, ids in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        out.append(list(zip(token_strings(encoder, ids), values, strict=True)))
    return out


def nearest_token_ids(encoder: Encoder, vectors: torch.Tensor) -> torch.Tensor:
    """For each vector [n, width]: the id of the vocabulary token with the highest cosine similarity."""
    table = token_table(encoder).detach().float()
    vecs = vectors.detach().float().to(table.device)
    if vecs.shape[-1] != table.shape[-1]:
        raise FamilyMismatchError(f"vectors of width {vecs.shape[-1]} cannot be compared with {encoder.key} "
                                  f"(width {table.shape[-1]})")
    sims = torch.nn.functional.normalize(vecs, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
    return sims.argmax(dim=-1).cpu()


def special_token_id(encoder: Encoder, which: str) -> int:
    """The id ComfyUI's tokenizer for this encoder puts at the 'start', at the 'end', or as 'pad'
    (SDXL's clip_g pads with 0, the others with the end token)."""
    attr = {"start": "start_token", "end": "end_token", "pad": "pad_token"}.get(which)
    if attr is None:
        raise FamilyMismatchError(f"unknown special token {which!r}; use start, end or pad")
    value = getattr(encoder.tokenizer, attr, None)
    if value is None:
        raise FamilyMismatchError(f"the {encoder.key} tokenizer of this CLIP has no {which} token")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Prompt rows with slots for the trainable vectors


class PromptRows:
    """Prompts tokenized by the CLIP's own tokenizer, with `[name]` turned into vector slots.

    Each prompt is tokenized exactly as CLIPTextEncode would tokenize it with `embedding:NAME` in
    the place of `[name]`, so the conditioning the trainer optimises is the conditioning a user gets
    later from the saved file. The slots are found by a placeholder embedding in a temporary
    folder, searched before the user's embeddings folders.
    """

    def __init__(self, clip, num_vectors: int, slot_name: str = SLOT_NAME):
        self.clip = clip
        self.encoders = encoders_of(clip)
        self.num_vectors = num_vectors
        self.slot_name = slot_name  # a checked embedding name (tokensmith.names); `embedding:SLOT_NAME` is a slot
        self._cache: dict[str, dict] = {}
        self._tmp = tempfile.mkdtemp(prefix="tokensmith-slot-", dir=folder_paths.get_temp_directory())
        import safetensors.torch

        slot = {
            e.key: (_SLOT_BASE + torch.arange(num_vectors, dtype=torch.float32)).unsqueeze(1).repeat(1, e.width)
            for e in self.encoders
        }
        slot_file = os.path.join(self._tmp, slot_name + ".safetensors")  # a checked name: no '..', not absolute
        os.makedirs(os.path.dirname(slot_file), exist_ok=True)
        safetensors.torch.save_file(slot, slot_file)
        # Shallow copies: the user's CLIP keeps its own tokenizer untouched.
        self.tokenizer = copy.copy(clip.tokenizer)
        for e in self.encoders:
            sub = copy.copy(e.tokenizer)
            dirs = e.tokenizer.embedding_directory or []
            if isinstance(dirs, str):
                dirs = [dirs]
            sub.embedding_directory = [self._tmp, *dirs]
            setattr(self.tokenizer, e.attr or e.key, sub)
        # A tokenizer without a loaded encoder (SD3's T5 when the CLIP has none) sees the slot too (it takes
        # the file's first rows, as it would take a user's file; its rows are never encoded) instead of
        # warning that the slot does not exist. SD1/SD2/SDXL have none.
        covered = {e.attr or e.key for e in self.encoders}
        for attr, tok in list(vars(self.tokenizer).items()):
            if (isinstance(tok, comfy.sd1_clip.SDTokenizer) and attr not in covered
                    and tok.embedding_directory is not None):
                sub = copy.copy(tok)
                dirs = [tok.embedding_directory] if isinstance(tok.embedding_directory, str) else tok.embedding_directory
                sub.embedding_directory = [self._tmp, *dirs]
                setattr(self.tokenizer, attr, sub)

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tokens(self, prompt: str) -> dict:
        """ComfyUI token rows for one prompt; slot entries are ("slot", i) markers."""
        if prompt in self._cache:
            return self._cache[prompt]
        if _spaced_slots(self.encoders):
            text = prompt.replace("[name]", f" embedding:{self.slot_name} ")
        else:
            text = prompt.replace("[name]", f"embedding:{self.slot_name}")
        try:
            raw = self.tokenizer.tokenize_with_weights(text, False, **_tokenizer_kwargs(self.clip))
        except RuntimeError as exc:  # Qwen-Image's tokenizer compares every token with its image token id
            keys = ", ".join(e.key for e in self.encoders)
            raise FamilyMismatchError(
                f"ComfyUI {host_version()}'s tokenizer for {keys} cannot take embedding vectors in a prompt "
                f"({exc}); TokenSmith cannot train embeddings for this model on this ComfyUI version") from exc
        marked = {}
        found = {}
        for e in self.encoders:
            rows = []
            count = 0
            for row in raw[e.token_key]:
                new_row = []
                for tok, weight in row:
                    if torch.is_tensor(tok) and tok.numel() > 0 and float(tok.flatten()[0]) >= _SLOT_BASE:
                        idx = int(round(float(tok.flatten()[0]) - _SLOT_BASE))
                        if 0 <= idx < self.num_vectors:
                            new_row.append((("slot", idx), weight))
                            count += 1
                            continue
                    new_row.append((tok, weight))
                rows.append(new_row)
            marked[e.token_key] = rows
            found[e.key] = count
        if any(c == 0 for c in found.values()) and "[name]" in prompt:
            raise TrainingError(f"could not place the vectors in {prompt!r} (found {found})")
        self._cache[prompt] = {**raw, **marked}
        return self._cache[prompt]


def _tokenizer_kwargs(clip) -> dict:
    options = getattr(clip, "tokenizer_options", None) or {}
    return {"tokenizer_options": dict(options)} if options else {}


def fill_slots(tokens: dict, vectors: dict[str, torch.Tensor], encoders: list[Encoder]) -> dict:
    """Token rows with every slot replaced by the matching row of the vectors (keeps the graph)."""
    by_token_key = {e.token_key: vectors[e.key] for e in encoders}
    out = {}
    for key, rows in tokens.items():
        vec = by_token_key.get(key)
        if vec is None:
            out[key] = rows
            continue
        out[key] = [
            [((vec[tok[1]], w) if isinstance(tok, tuple) and tok and tok[0] == "slot" else (tok, w)) for tok, w in row]
            for row in rows
        ]
    return out


def encode_tokens(clip, tokens: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The text encoder on token rows, as CLIP.encode_from_tokens runs it (layer options included)."""
    model = clip.cond_stage_model
    model.reset_clip_options()
    if clip.layer_idx is not None:
        model.set_clip_options({"layer": clip.layer_idx})
    out = model.encode_token_weights(tokens)
    return out[0], out[1]


def _looked_up_file(name: str, encoders: list[Encoder]) -> str | None:
    """A file that `embedding:NAME` finds in an encoder's embeddings folders, by load_embed's rule: NAME, then
    NAME.safetensors/.pt/.bin, in every folder and every subfolder of them, in no fixed order (a set)."""
    expand = getattr(comfy.sd1_clip, "expand_directory_list", lambda dirs: list(dirs))
    for e in encoders:
        dirs = e.tokenizer.embedding_directory or []
        for folder in expand([dirs] if isinstance(dirs, str) else dirs):
            for ext in ("", ".safetensors", ".pt", ".bin"):
                path = os.path.join(folder, name + ext)
                if os.path.isfile(path):
                    return path
    return None


def encode_with_vectors(clip, text: str, keyword: str, vectors: dict[str, torch.Tensor]) -> tuple[list, int]:
    """CLIPTextEncode's conditioning for text in which `embedding:KEYWORD` means the given vectors, no file
    saved: the text goes through the CLIP's own tokenizer with a slot embedding of that name found first
    (PromptRows, in ComfyUI's temp folder), the slots are filled with the vectors and the rows encoded by
    CLIP.encode_from_tokens_scheduled, as CLIPTextEncode does. Other `embedding:` names are read from the
    embeddings folders as usual. Returns the conditioning and how many rows took the vectors."""
    encoders = encoders_of(clip)
    missing = [e.key for e in encoders if e.key not in vectors]
    if missing:
        raise FamilyMismatchError(f"this CLIP reads {', '.join(e.key for e in encoders)}; the embedding has no "
                                  f"{', '.join(missing)} vectors (Convert Embedding makes them)")
    counts = {vectors[e.key].shape[0] for e in encoders}
    if len(counts) != 1:
        raise FamilyMismatchError(f"the embedding's encoders hold different vector counts {sorted(counts)}")
    taken = _looked_up_file(keyword, encoders)
    if taken is not None:
        raise EmbeddingNameError(f"embedding:{keyword} already names {taken}: ComfyUI's look-up could pick either "
                                 "that file or the connected embedding, so use another keyword")
    with PromptRows(clip, counts.pop(), slot_name=keyword) as rows:
        tokens = rows.tokens(text)
        used = sum(1 for row in tokens[encoders[0].token_key] for tok, _w in row
                   if isinstance(tok, tuple) and tok and tok[0] == "slot")
        filled = fill_slots(tokens, vectors, encoders)
        return clip.encode_from_tokens_scheduled(filled), used


def encode_batch(clip, token_sets: list[dict]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Conditioning for several prompts with one pass of each text encoder: (N, tokens, width), pooled (N, width).

    Each prompt alone would cost a full encoder call (docs/performance.md has the figures). ComfyUI's
    encode_token_weights treats extra rows as further 75-token chunks of one prompt, so the prompts'
    rows are joined, encoded once and split back: every row is encoded on its own, so each prompt's
    rows are what it gets alone. encode_token_weights keeps only the first row's pooled
    output; a forward hook on each encoder keeps every row's, and a prompt's pooled is its first
    row's, as for the prompt alone. Every prompt must have the same number of rows.
    """
    if len(token_sets) == 1:
        cond, pooled = encode_tokens(clip, token_sets[0])
        return cond, pooled
    rows = {len(r) for tokens in token_sets for r in tokens.values()}
    if len(rows) != 1:
        raise TrainingError("prompts of different lengths in one batch: keep every prompt within 75 tokens "
                            "(shorten the captions or the template lines)")
    per_prompt = rows.pop()
    joined = {key: [row for tokens in token_sets for row in tokens[key]] for key in token_sets[0]}
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for i, enc in enumerate(e.model for e in encoders_of(clip)):
        def keep(module, args, output, i=i):
            if isinstance(output, tuple) and len(output) > 1 and torch.is_tensor(output[1]):
                captured[i] = output[1]
        hooks.append(enc.register_forward_hook(keep))
    try:
        cond, first_pooled = encode_tokens(clip, joined)
    finally:
        for hook in hooks:
            hook.remove()
    n = len(token_sets)
    cond = cond.reshape(n, cond.shape[1] // n, cond.shape[2])
    if first_pooled is None:
        return cond, None
    for rows_pooled in captured.values():
        # the encoder whose first row ComfyUI returned is the one that gives the pooled output
        if rows_pooled.shape[-1] == first_pooled.shape[-1] and torch.equal(
                rows_pooled[0:1].to(first_pooled.device, first_pooled.dtype), first_pooled):
            return cond, rows_pooled[0:n * per_prompt:per_prompt]
    # A host whose pooled output is not one encoder's first row: encode prompt by prompt.
    pooled = [encode_tokens(clip, tokens)[1] for tokens in token_sets]
    return cond, torch.cat(pooled)


# ---------------------------------------------------------------------------------------------
# Gradients through the frozen, shared model


# Devices where PyTorch's scaled_dot_product_attention is the fastest correct attention for a
# training step. ComfyUI's default on a CPU (also on Apple MPS and older AMD cards) is sub-quadratic
# attention, made for sampling in little memory; a training step through it is slower and autograd
# keeps every chunk's intermediates (figures in docs/performance.md). Other devices (MPS...) keep
# ComfyUI's configured function: unmeasured there.
_SDPA_DEVICES = ("cpu", "cuda", "xpu")


def training_attention(device) -> Callable | None:
    """The attention function training uses on this device: ComfyUI's own attention_pytorch (torch's
    SDPA), or None where ComfyUI's configured function is kept. Sampling is never affected."""
    if torch.device(device).type not in _SDPA_DEVICES:
        return None
    return getattr(comfy.ldm.modules.attention, "attention_pytorch", None)


def _training_attention_override(func, *args, **kwargs):
    # ComfyUI's wrap_attn calls override(configured_function, q, k, v, heads, **kwargs); kwargs hold
    # mask, attn_precision, skip_reshape, transformer_options and the marker that keeps the wrapper
    # from calling the override again (v0.33.0 also unpacks its tensor containers first).
    fast = training_attention(args[0].device)
    return (fast or func)(*args, **kwargs)


def _training_call(owner: int) -> bool:
    # a forward of the training block: its own thread, outside inference mode (ComfyUI samples under
    # inference mode, so a sampler run with the same modules keeps the user's attention)
    return threading.get_ident() == owner and not torch.is_inference_mode_enabled()


def _attention_hook(owner: int):
    """A forward pre-hook for a diffusion model: training calls get transformer_options (a copy) with
    the training attention as ComfyUI's optimized_attention_override, unless one is set already."""
    def hook(module, args, kwargs):
        if not _training_call(owner) or len(args) > 5:  # transformer_options given by position
            return None
        options = dict(kwargs.get("transformer_options") or {})
        if "optimized_attention_override" in options:
            return None  # one set on this model (an attention patch node) wins
        options["optimized_attention_override"] = _training_attention_override
        return args, {**kwargs, "transformer_options": options}

    return hook


def _out_of_place_clip_layer(layer, owner: int):
    # ComfyUI's CLIPLayer adds residuals in place, which autograd cannot differentiate through.
    # CLIP's attention takes no transformer_options: the training attention is passed here instead.
    def forward(x, mask=None, optimized_attention=None):
        if _training_call(owner):
            optimized_attention = training_attention(x.device) or optimized_attention
        x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
        return x + layer.mlp(layer.layer_norm2(x))

    return forward


class _LinearCastInBackward(torch.autograd.Function):
    """F.linear with a weight stored in another dtype (ComfyUI's manual cast: fp16 text-encoder weights,
    fp32 compute on a CPU) that saves the stored weight for backward, not its cast: the cast is made
    again in the backward pass. Same forward; grad_input is the same product (weights and bias take
    no gradient inside trainable_graph)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)  # the model's own storage (an alias): no copy is kept
        return torch.nn.functional.linear(x, weight.to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad.matmul(weight.to(grad.dtype)), None, None


def _casts_stored_weight(module, x) -> bool:
    # Only ComfyUI's plain cast path (no weight patches, LoRA functions, quantized or offloaded weights,
    # no autocast), and only where it would make a cast that autograd keeps.
    w, b = module.weight, module.bias
    return (isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled()
            and not torch.is_autocast_enabled(x.device.type)
            and module.comfy_cast_weights and not module.weight_function and not module.bias_function
            and type(w) in (torch.Tensor, torch.nn.Parameter) and not w.requires_grad
            and w.dtype != x.dtype and w.device == x.device and x.dtype.is_floating_point
            and (b is None or (not b.requires_grad and b.device == x.device and type(b) in (torch.Tensor, torch.nn.Parameter))))


def _linear_saving_stored_weight(module, owner: int):
    """A forward for a comfy.ops Linear: training calls that cast the weight save the stored one
    (_LinearCastInBackward), every other call is ComfyUI's own forward."""
    plain = module.forward

    def forward(x, *args, **kwargs):
        if args or kwargs or not _training_call(owner) or not _casts_stored_weight(module, x):
            return plain(x, *args, **kwargs)
        comfy.ops.run_every_op()
        bias = None if module.bias is None else module.bias.to(x.dtype)
        return _LinearCastInBackward.apply(x, module.weight, bias)

    return forward


def _training_forward(module, owner: int):
    """The forward a frozen layer gets for training calls (keeping less for backward), or None."""
    routes = ((_plain_cast_linear, _linear_saving_stored_weight), (_plain_conv2d, _conv_keeping_no_input),
              (_plain_geglu, _geglu_keeping_projection), (_starts_with_norm_then_silu, _sequential_with_lean_norm))
    for applies, make in routes:
        if applies(module):
            return make(module, owner)
    return None


def _plain_cast_linear(module) -> bool:
    # a Linear whose cast is disable_weight_init's / manual_cast's (not fp8, cuBLAS or other ops classes)
    base = getattr(getattr(comfy.ops, "disable_weight_init", None), "Linear", None)
    return (base is not None and isinstance(module, base) and "forward" not in module.__dict__
            and type(module).forward_comfy_cast_weights is base.forward_comfy_cast_weights
            and type(module).forward is base.forward and hasattr(comfy.ops, "run_every_op"))


def _lean_training_call(owner: int, layer, x) -> bool:
    # a training call of a layer on ComfyUI's plain path: frozen weights in the input's dtype and
    # device, no cast, no weight patches, no autocast, and an input that carries a gradient
    return (_training_call(owner) and torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad
            and not torch.is_autocast_enabled(x.device.type) and not getattr(layer, "comfy_cast_weights", True)
            and not getattr(layer, "weight_function", None) and not getattr(layer, "bias_function", None)
            and all(t is None or (type(t) in (torch.Tensor, torch.nn.Parameter) and not t.requires_grad
                                  and t.dtype == x.dtype and t.device == x.device) for t in (layer.weight, layer.bias)))


def _plain_conv2d(module) -> bool:
    # a comfy.ops Conv2d that runs torch's own conv2d (zero padding, given as numbers)
    base = getattr(getattr(comfy.ops, "disable_weight_init", None), "Conv2d", None)
    return (base is not None and isinstance(module, base) and "forward" not in module.__dict__
            and type(module).forward is base.forward and type(module)._conv_forward is torch.nn.Conv2d._conv_forward
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def _conv_keeping_no_input(module, owner: int):
    """A forward for a comfy.ops Conv2d: training calls of its plain path (no cast, no weight patches)
    keep only the weight for backward (Conv2dInputGrad); every other call is ComfyUI's own forward."""
    plain = module.forward

    def forward(x, *args, **kwargs):
        if args or kwargs or not _lean_training_call(owner, module, x):
            return plain(x, *args, **kwargs)
        getattr(comfy.ops, "run_every_op", lambda: None)()
        return Conv2dInputGrad.apply(x, module.weight, module.bias, module.stride, module.padding, module.dilation,
                                     module.groups)

    return forward


def _plain_geglu(module) -> bool:
    return type(module) is getattr(comfy.ldm.modules.attention, "GEGLU", None) and "forward" not in module.__dict__


def _geglu_keeping_projection(module, owner: int):
    """A forward for ComfyUI's GEGLU: training calls keep the projection only (GegluProduct makes
    gelu(gate) again in backward); every other call is ComfyUI's own forward."""
    plain = module.forward

    def forward(x):
        if not _training_call(owner) or not torch.is_grad_enabled() or not x.requires_grad:
            return plain(x)
        return GegluProduct.apply(module.proj(x))

    return forward


def _starts_with_norm_then_silu(module) -> bool:
    # a ResBlock's in_layers / out_layers: GroupNorm, SiLU, ... (a slice of one is a new Sequential: never patched)
    base = getattr(getattr(comfy.ops, "disable_weight_init", None), "GroupNorm", None)
    return (type(module) is torch.nn.Sequential and "forward" not in module.__dict__ and len(module) >= 2
            and base is not None and isinstance(module[0], base) and type(module[0]).forward is base.forward
            and type(module[1]) is torch.nn.SiLU)


def _sequential_with_lean_norm(seq, owner: int):
    """A forward for a Sequential that starts GroupNorm, SiLU: training calls run the two as one
    GroupNormSiLU (which keeps only the norm's input); every other call is the Sequential's own."""
    plain = seq.forward

    def forward(x):
        norm = seq[0]
        if not _lean_training_call(owner, norm, x):
            return plain(x)
        getattr(comfy.ops, "run_every_op", lambda: None)()
        h = GroupNormSiLU.apply(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        for layer in list(seq)[2:]:
            h = layer(h)
        return h

    return forward


def _alias(t: torch.Tensor) -> torch.Tensor:
    # A normal tensor over an inference tensor's storage: autograd may save it, nothing is copied.
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(), t.size(), t.stride())


@contextlib.contextmanager
def trainable_graph(*modules: torch.nn.Module) -> Iterator[None]:
    """Let gradients flow to inputs of these frozen modules for the duration of the block.

    ComfyUI runs nodes under inference mode and makes its weights there; autograd refuses to save
    such tensors. Inside this block (which leaves inference mode) every parameter and buffer is
    swapped for an alias of the same storage with requires_grad=False, and CLIP layers use an
    out-of-place forward. Linear layers whose weights ComfyUI casts per call (fp16 text encoders on a
    CPU) save the stored weight for backward instead of its cast (_LinearCastInBackward). Frozen
    convolutions, GEGLUs and a ResBlock's GroupNorm + SiLU keep only what the inputs' gradient needs
    (tokensmith.lean_backward; same results). Training calls of the text encoders and diffusion models (this thread,
    outside inference mode) use training_attention() instead of ComfyUI's configured attention: per
    call, through ComfyUI's optimized_attention_override, never by changing the host's setting.
    Everything is put back on exit; the weights' values are never written.
    """
    swapped: list[tuple[dict, str, object]] = []
    patched_layers = []
    hooks = []
    owner = threading.get_ident()
    with torch.inference_mode(False):
        try:
            for root in modules:
                if isinstance(root, comfy.model_base.BaseModel):
                    hooks.append(root.diffusion_model.register_forward_pre_hook(_attention_hook(owner), with_kwargs=True))
                for module in root.modules():
                    for store in (module._parameters, module._buffers):
                        for name, t in list(store.items()):
                            if t is None:
                                continue
                            swapped.append((store, name, t))
                            alias = _alias(t) if t.is_inference() else t.detach()
                            store[name] = torch.nn.Parameter(alias, requires_grad=False) if store is module._parameters else alias
                    if isinstance(module, comfy.clip_model.CLIPLayer) and "forward" not in module.__dict__:
                        module.forward = _out_of_place_clip_layer(module, owner)
                        patched_layers.append(module)
                    elif (training_forward := _training_forward(module, owner)) is not None:
                        module.forward = training_forward
                        patched_layers.append(module)
            with out_of_place_layers(*modules):  # T5's and Flux's in-place residuals (flow-matching families)
                yield
        finally:
            for hook in hooks:
                hook.remove()
            for store, name, original in reversed(swapped):
                store[name] = original
            for layer in patched_layers:
                layer.__dict__.pop("forward", None)


def _recomputed_in_backward(module, copy_inputs: bool = False):
    plain = module.forward

    def on_copies(*args, **kwargs):
        # Flux's and Chroma's blocks add their residual into their input in place: the recomputation
        # must start from the input as it was, so the block works on a copy
        args = tuple(a.clone() if torch.is_tensor(a) else a for a in args)
        kwargs = {k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}
        return plain(*args, **kwargs)

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return plain(*args, **kwargs)
        # ComfyUI updates transformer_options as blocks run: the recomputation must see them as they were
        args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
        return torch.utils.checkpoint.checkpoint(on_copies if copy_inputs else plain, *args, use_reentrant=False,
                                                 **kwargs)

    return forward


# The block lists of the flow-matching families' diffusion models (SD3's MMDiT, Flux.1 and Chroma,
# Z-Image's and Lumina 2's NextDiT, Qwen-Image), each block checkpointed on its own
_DIT_BLOCK_LISTS = ("joint_blocks", "double_blocks", "single_blocks", "noise_refiner", "context_refiner", "layers",
                    "transformer_blocks")


def _checkpointed_blocks(model, clip) -> list[torch.nn.Module]:
    unet = model.model.diffusion_model
    kinds = (comfy.ldm.modules.diffusionmodules.openaimodel.ResBlock, comfy.ldm.modules.attention.BasicTransformerBlock)
    blocks = [m for m in unet.modules() if isinstance(m, kinds)]
    if clip is None or not is_flow_model(model):
        return blocks
    import comfy.text_encoders.llama as llama
    import comfy.text_encoders.t5 as t5

    for attr in _DIT_BLOCK_LISTS:
        block_list = getattr(unet, attr, None)
        if isinstance(block_list, torch.nn.ModuleList):
            blocks.extend(block_list)
    # the large text encoders of these families (T5-XXL, the Qwen LLMs): one checkpoint per layer
    text_kinds = tuple(k for k in (getattr(t5, "T5Block", None), getattr(llama, "TransformerBlock", None)) if k)
    blocks.extend(m for m in clip.cond_stage_model.modules() if isinstance(m, text_kinds))
    return blocks


@contextlib.contextmanager
def checkpointed_unet(model, clip=None) -> Iterator[None]:
    """Gradient checkpointing for the duration of the block: each UNet residual block and
    transformer block keeps only its input and is run again in the backward pass. For the
    flow-matching families (with their CLIP given) each DiT block and each T5 / LLM text-encoder layer.

    Checkpointing the whole UNet as one function saves nothing (the backward pass recomputes every
    activation at once: measured same peak memory, 1.7x the time), so it is done per block. A block whose
    forward training already replaced (an out-of-place layer) is checkpointed around that forward and
    gets it back afterwards.
    """
    blocks = list({id(m): m for m in _checkpointed_blocks(model, clip)}.values())
    flow = clip is not None and is_flow_model(model)
    wrapped = []
    try:
        for module in blocks:
            wrapped.append((module, module.__dict__.get("forward")))
            module.forward = _recomputed_in_backward(module, copy_inputs=flow)
        yield
    finally:
        for module, before in reversed(wrapped):
            if before is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = before


def load_for_training(model, clip) -> None:
    """Load MODEL and CLIP together through ComfyUI's model management (devices, offloading)."""
    comfy.model_management.load_models_gpu([model, clip.patcher])


def free_device_memory() -> None:
    """Give the accelerator's cached blocks back (after running out of memory)."""
    comfy.model_management.soft_empty_cache()


def training_device(model) -> torch.device:
    return model.load_device


def throw_if_interrupted() -> None:
    comfy.model_management.throw_exception_if_processing_interrupted()


def is_interruption(exc: BaseException) -> bool:
    """Whether an exception is ComfyUI's cancel (POST /interrupt), not a failure."""
    return isinstance(exc, comfy.model_management.InterruptProcessingException)


def progress_bar(total: int, node_id: str | None):
    """ComfyUI's progress bar on a node (update_absolute(value, total))."""
    import comfy.utils

    return comfy.utils.ProgressBar(total, node_id=node_id)


def training_graph(model, clip) -> contextlib.AbstractContextManager:
    """trainable_graph over a MODEL's diffusion model and a CLIP's text encoders."""
    return trainable_graph(model.model, clip.cond_stage_model)


# ---------------------------------------------------------------------------------------------
# Diffusion


def sample_sigmas(model, u: torch.Tensor) -> torch.Tensor:
    """Training noise levels: u in [0, 1) maps uniformly over the model's timesteps."""
    sampling = model.get_model_object("model_sampling")
    steps = len(sampling.sigmas) if hasattr(sampling, "sigmas") else 1000
    return sampling.sigma(u * (steps - 1)).to(torch.float32)


def noisy_latents(model, sigmas: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    sampling = model.get_model_object("model_sampling")
    return sampling.noise_scaling(sigmas.view(-1, 1, 1, 1), noise, x0)


def process_latents_in(model, latents: torch.Tensor) -> torch.Tensor:
    return model.model.process_latent_in(latents)


def denoise(model, xt: torch.Tensor, sigmas: torch.Tensor, cond: torch.Tensor, pooled: torch.Tensor | None,
            pixel_size: tuple[int, int]) -> torch.Tensor:
    """The model's x0 prediction for noisy latents, given text conditioning (differentiable in cond)."""
    base = model.model
    kwargs = {}
    if isinstance(base, comfy.model_base.SDXL):
        height, width = pixel_size
        kwargs["y"] = base.encode_adm(pooled_output=pooled, width=width, height=height,
                                      target_width=width, target_height=height)
    transformer_options = dict(model.model_options.get("transformer_options", {}))
    return base.apply_model(xt, sigmas, c_crossattn=cond, transformer_options=transformer_options, **kwargs)


# ---------------------------------------------------------------------------------------------
# Flow-matching families: SD3.x, Flux.1 (dev / schnell), Chroma, Z-Image, Qwen-Image
#
# Their text encoders beside CLIP are T5-XXL and LLMs (Qwen3-4B, Qwen2.5-VL-7B) behind the same
# comfy.sd1_clip.SDTokenizer / SDClipModel interface; the LLM tokenizers wrap the prompt in a chat
# template before `embedding:NAME` is looked up. Their models predict a velocity (comfy.model_sampling.
# CONST) and sample noise levels through a shifted schedule (ModelSamplingDiscreteFlow / ModelSamplingFlux).

_CLIP_KEYS = ("clip_l", "clip_h", "clip_g")

# supported_models config class (by exact type: Flux2, FluxInpaint and ChromaRadiance subclass these and
# are other families) -> TokenSmith's family name (the names of tokensmith.embedding)
_FLOW_MODEL_FAMILIES = {"SD3": "sd3", "Flux": "flux", "FluxSchnell": "flux", "Chroma": "chroma",
                        "ZImage": "zimage", "QwenImage": "qwen_image"}


def _flow_model_family(base) -> str | None:
    import comfy.supported_models

    config = getattr(base, "model_config", None)
    for cls_name, family in _FLOW_MODEL_FAMILIES.items():
        cls = getattr(comfy.supported_models, cls_name, None)
        if cls is not None and type(config) is cls:
            return family
    return None


def guidance_distilled(model) -> bool:
    """Whether the model is sampled without CFG (Flux.1 dev and schnell are guidance-distilled): a negative
    prompt has no effect there."""
    return _flow_model_family(model.model) == "flux"


def takes_guidance(model) -> bool:
    """Whether a Flux-type model has a guidance input (Flux.1 dev: guidance-distilled; schnell has none)."""
    config = getattr(model.model, "model_config", None)
    return bool(getattr(config, "unet_config", {}).get("guidance_embed", False))


def _other_encoders(clip) -> list[Encoder]:
    # The loaded T5 / LLM encoders of a CLIP, beside its CLIP-L/H/G. A tokenizer attribute is matched to
    # its model: the same attribute (SD3, Flux, Z-Image, Qwen-Image), or the attribute without "clip_"
    # (PixArt/Chroma: tokenizer.clip_t5xxl, model.t5xxl); the token rows' key is the latter.
    out = []
    model = clip.cond_stage_model
    for attr, tok in vars(clip.tokenizer).items():
        if not isinstance(tok, comfy.sd1_clip.SDTokenizer) or tok.embedding_key in _CLIP_KEYS:
            continue
        token_key = attr.removeprefix("clip_")
        enc = getattr(model, attr, None) or getattr(model, token_key, None)
        if enc is None or not hasattr(enc, "transformer"):
            continue  # a tokenizer whose encoder is not loaded (SD3 without T5)
        width = int(enc.transformer.get_input_embeddings().weight.shape[-1])
        out.append(Encoder(tok.embedding_key, token_key, tok, enc, width, attr))
    return out


def unreadable_encoders(clip) -> list[str]:
    """The T5 / LLM encoders of this CLIP whose tokenizer does not look up `embedding:NAME` at all: this
    ComfyUI built it without an embeddings folder, so CLIPTextEncode reads the words as plain text.
    (v0.3.75: Z-Image's qwen3_4b and Qwen-Image's qwen25_7b; v0.33.0: qwen25_7b.)"""
    return [e.key for e in _other_encoders(clip) if e.tokenizer.embedding_directory is None]


def check_embedding_use(clip) -> None:
    """Refuse, with the reason, a CLIP whose prompts cannot use a trained embedding by name."""
    keys = unreadable_encoders(clip)
    if keys:
        raise FamilyMismatchError(
            f"ComfyUI {host_version()} does not look up embedding:NAME for the {', '.join(keys)} text encoder "
            "(its tokenizer is made without an embeddings folder), so an embedding trained for it could not be "
            "used in a prompt; TokenSmith cannot train embeddings for this model on this ComfyUI version")


# family -> the tokenizer class of the CLIP ComfyUI loads for it (checkpoint, TripleCLIPLoader, DualCLIPLoader
# flux, CLIPLoader chroma / lumina2 / qwen_image)
_FLOW_TOKENIZERS = {"sd3": "SD3Tokenizer", "flux": "FluxTokenizer", "chroma": "PixArtTokenizer",
                    "zimage": "ZImageTokenizer", "qwen_image": "QwenImageTokenizer"}


def flow_family(model, clip) -> str | None:
    """For a flow-matching MODEL, the family it and the CLIP share, checked: the CLIP is the one ComfyUI
    loads for that family and its prompts can use embedding:NAME (check_embedding_use). None for other
    models (SD1.x, SD2.x, SDXL are checked by the trainer)."""
    family = _flow_model_family(model.model)
    if family is None:
        return None
    tokenizer = type(clip.tokenizer).__name__
    if tokenizer != _FLOW_TOKENIZERS[family]:
        raise FamilyMismatchError(
            f"MODEL is {family_name(family)} but this CLIP is not its text encoder (tokenizer {tokenizer}): connect "
            "the CLIP from the same checkpoint, or the text encoders loaded for this model")
    check_embedding_use(clip)
    return family


def _spaced_slots(encoders: list[Encoder]) -> bool:
    # SD1/SD2/SDXL prompts put the slot as " embedding:NAME " (CLIP's tokenizer ignores the extra
    # spaces). The T5 / LLM tokenizers keep spaces as tokens: the slot must stand exactly where the user
    # writes embedding:NAME, so their prompts get "embedding:NAME" in the place of [name].
    return all(e.key in _CLIP_KEYS for e in encoders)


def encode_conditioning(clip, tokens: dict) -> tuple[torch.Tensor, dict]:
    """The text encoder on token rows as core's CLIPTextEncode runs it: the conditioning and its dict
    (pooled_output, and what the encoder adds: the LLM encoders' attention_mask)."""
    model = clip.cond_stage_model
    model.reset_clip_options()
    if clip.layer_idx is not None:
        model.set_clip_options({"layer": clip.layer_idx})
    out = model.encode_token_weights(tokens)
    extra = {"pooled_output": out[1]}
    if len(out) > 2:
        extra.update(out[2])
    return out[0], extra


def encode_prompts(clip, token_sets: list[dict]) -> list[tuple[torch.Tensor, dict]]:
    """Conditioning per prompt (T5 and the LLM encoders do not pad prompts to one length, so prompts are
    encoded one by one)."""
    return [encode_conditioning(clip, tokens) for tokens in token_sets]


def latents_for_model(model, latents: torch.Tensor) -> torch.Tensor:
    """Image latents [B, C, H, W] in the layout the model takes (Qwen-Image's Wan latents are video
    latents [B, C, T, H, W]), as comfy.sample.fix_empty_latent_channels does."""
    fmt = model.get_model_object("latent_format")
    if getattr(fmt, "latent_dimensions", 2) == 3 and latents.ndim == 4:
        return latents.unsqueeze(2)
    return latents


def is_flow_model(model) -> bool:
    """Whether the model predicts a flow velocity (comfy.model_sampling.CONST), from its (possibly
    patched) model_sampling."""
    sampling = model.get_model_object("model_sampling")
    return isinstance(sampling, comfy.model_sampling.CONST) and \
        type(sampling).calculate_denoised is comfy.model_sampling.CONST.calculate_denoised


def flow_sigmas(model, u: torch.Tensor) -> torch.Tensor:
    """Training noise levels for a flow model: u in [0, 1) through the model's own percent_to_sigma,
    i.e. uniform times through the schedule's shift (SD3 3.0, Z-Image 3.0, Flux dev's 1.15, a patched
    ModelSamplingSD3/Flux node's value), as core's TrainLoraNode draws them."""
    sampling = model.get_model_object("model_sampling")
    return torch.tensor([float(sampling.percent_to_sigma(float(p))) for p in u.flatten()], dtype=torch.float32)


def _flow_model_conds(model, cond: torch.Tensor, extra: dict, xt: torch.Tensor, guidance: float | None) -> dict:
    # What ComfyUI's sampler passes to apply_model for this conditioning (comfy.samplers.encode_model_conds):
    # the model's own extra_conds on the conditioning dict, made into batch values the way calc_cond_batch does
    base = model.model
    params = dict(extra)  # pooled_output None included, as the conditioning dict carries it
    if guidance is not None:
        params["guidance"] = guidance
    params.update(cross_attn=cond, device=xt.device, noise=xt, prompt_type="positive",
                  width=xt.shape[-1] * 8, height=xt.shape[-2] * 8)
    out = {}
    for key, value in base.extra_conds(**params).items():
        processed = value.process_cond(batch_size=xt.shape[0], device=xt.device, area=None)
        out[key] = processed.concat([])
    return out


def flow_denoise(model, xt: torch.Tensor, sigmas: torch.Tensor, conditioning: list[tuple[torch.Tensor, dict]],
                 guidance: float | None = None) -> torch.Tensor:
    """The flow model's x0 prediction for noisy latents (differentiable in the conditioning).

    conditioning: (cond, extra) per sample, as encode_conditioning gives them; each goes through the
    model's own extra_conds as ComfyUI's sampler sends it (SD3's pooled `y`, Flux's guidance and pooled
    vector, Z-Image's token count and attention mask...). Prompts encode to different lengths: samples
    with equal shapes share one model call. `guidance` sets Flux dev's guidance input (None: the model's
    default, 3.5 for Flux, as a prompt without a FluxGuidance node samples).
    """
    if len(conditioning) != xt.shape[0]:
        raise TrainingError(f"got {len(conditioning)} conditionings for {xt.shape[0]} latents")
    base = model.model
    options = dict(model.model_options.get("transformer_options", {}))
    sigmas = sigmas.to(xt.device, torch.float32)
    groups: dict[tuple, list[int]] = {}
    for i, (cond, extra) in enumerate(conditioning):
        shapes = (tuple(cond.shape),) + tuple((k, tuple(v.shape)) for k, v in sorted(extra.items()) if torch.is_tensor(v))
        groups.setdefault(shapes, []).append(i)
    out: list[torch.Tensor | None] = [None] * xt.shape[0]
    for idx in groups.values():
        cond = torch.cat([conditioning[i][0] for i in idx]).to(xt.device)
        extra = {k: (torch.cat([conditioning[i][1][k] for i in idx]).to(xt.device) if torch.is_tensor(v) else v)
                 for k, v in conditioning[idx[0]][1].items()}
        xt_g = xt[idx]
        kwargs = _flow_model_conds(model, cond, extra, xt_g, guidance)
        pred = base.apply_model(xt_g, sigmas[idx], transformer_options=dict(options), **kwargs)
        for j, i in enumerate(idx):
            out[i] = pred[j:j + 1]
    return torch.cat(out)


FLOW_MATCHING = objective_for("flow")


def flow_loss(model, x0: torch.Tensor, conditioning: list[tuple[torch.Tensor, dict]], sigmas: torch.Tensor,
              noise: torch.Tensor, guidance: float | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One flow-matching training loss on the model's own model_sampling (differentiable in the conditioning).

    x0: processed latents (process_latents_in, latents_for_model), one per conditioning entry; sigmas from
    flow_sigmas; noise like x0. xt is the sampling's own noise_scaling; the loss is FlowMatching's.
    """
    if not is_flow_model(model):
        raise TrainingError(f"this model samples with {type(model.get_model_object('model_sampling')).__name__}, "
                            "not flow matching")
    x0_pred = flow_prediction(model, x0, conditioning, sigmas, noise, guidance)
    return FLOW_MATCHING.loss(x0_pred, x0, sigmas, mask=mask)


def flow_prediction(model, x0: torch.Tensor, conditioning: list[tuple[torch.Tensor, dict]], sigmas: torch.Tensor,
                    noise: torch.Tensor, guidance: float | None = None) -> torch.Tensor:
    """The flow model's x0 prediction for x0 noised to sigmas by the model's own noise_scaling (what
    the Objective's loss reads; differentiable in the conditioning)."""
    sampling = model.get_model_object("model_sampling")
    sigmas = sigmas.to(x0.device, torch.float32)
    xt = sampling.noise_scaling(sigmas, noise.to(x0.device), x0)
    return flow_denoise(model, xt, sigmas, conditioning, guidance)


def _out_of_place_t5_attention(layer):
    # comfy/text_encoders/t5.py adds residuals in place (x += output), which autograd cannot
    # differentiate through (the layer norm saved x); the same computation, out of place
    def forward(x, mask=None, past_bias=None, optimized_attention=None):
        output, past_bias = layer.SelfAttention(layer.layer_norm(x), mask=mask, past_bias=past_bias,
                                                optimized_attention=optimized_attention)
        return x + output, past_bias

    return forward


def _out_of_place_t5_ff(layer):
    def forward(x):
        return x + layer.DenseReluDense(layer.layer_norm(x))

    return forward


def _out_of_place_llama_block(block):
    # v0.33.0's comfy/text_encoders/llama.py TransformerBlock writes its output into its input
    # (torch.add(residual, x, out=x)), which autograd refuses; v0.3.75's adds out of place (None: keep it)
    if "past_key_value" not in inspect.signature(type(block).forward).parameters:
        return None

    def forward(x, attention_mask=None, freqs_cis=None, optimized_attention=None, past_key_value=None):
        h, present = block.self_attn(hidden_states=block.input_layernorm(x), attention_mask=attention_mask,
                                     freqs_cis=freqs_cis, optimized_attention=optimized_attention,
                                     past_key_value=past_key_value)
        x = x + h
        return x + block.mlp(block.post_attention_layernorm(x)), present

    return forward


def _norm_of_a_copy(norm):
    # Flux's DoubleStreamBlock / SingleStreamBlock (Flux, Chroma) add residuals in place (img += ...)
    # after their LayerNorm saved that tensor for backward; a training call normalises a copy instead
    plain = type(norm).forward

    def forward(x, *args, **kwargs):
        if torch.is_grad_enabled() and x.requires_grad:
            x = x.clone()
        return plain(norm, x, *args, **kwargs)

    return forward


_FLUX_BLOCK_NORMS = ("img_norm1", "img_norm2", "txt_norm1", "txt_norm2", "pre_norm")


@contextlib.contextmanager
def out_of_place_layers(*modules: torch.nn.Module) -> Iterator[None]:
    """For the duration of the block, the in-place residual adds of the flow-matching families' modules
    stop breaking backward: T5's layers (and v0.33.0's Llama/Qwen blocks) add out of place, Flux's
    blocks' norms read a copy (trainable_graph enters it). Nothing changes numerically. Where the host has it (v0.33.0),
    comfy.model_management.in_training is set as core's TrainLoraNode sets it: its fused rope kernels
    (comfy_kitchen apply_rope, rms_rope in Flux / Lumina 2) have no backward, and the flag selects
    the plain torch code."""
    import comfy.ldm.flux.layers as flux_layers
    import comfy.text_encoders.llama as llama
    import comfy.text_encoders.t5 as t5

    mm = comfy.model_management
    had_flag = hasattr(mm, "in_training")
    was_training = getattr(mm, "in_training", False)

    kinds = {getattr(t5, "T5LayerSelfAttention", None): _out_of_place_t5_attention,
             getattr(t5, "T5LayerFF", None): _out_of_place_t5_ff,
             getattr(llama, "TransformerBlock", None): _out_of_place_llama_block}
    kinds.pop(None, None)
    flux_blocks = tuple(c for c in (getattr(flux_layers, "DoubleStreamBlock", None),
                                    getattr(flux_layers, "SingleStreamBlock", None)) if c is not None)
    patched = []
    try:
        if had_flag:
            mm.in_training = True
        for root in modules:
            for module in root.modules():
                targets = []
                make = kinds.get(type(module))
                forward = make(module) if make is not None else None
                if forward is not None:
                    targets.append((module, forward))
                if flux_blocks and isinstance(module, flux_blocks):
                    for attr in _FLUX_BLOCK_NORMS:
                        norm = getattr(module, attr, None)
                        if isinstance(norm, torch.nn.Module):
                            targets.append((norm, _norm_of_a_copy(norm)))
                for target, forward in targets:
                    if "forward" not in target.__dict__:
                        target.forward = forward
                        patched.append(target)
        yield
    finally:
        if had_flag:
            mm.in_training = was_training
        for module in patched:
            module.__dict__.pop("forward", None)


def encode_images(vae, images: torch.Tensor) -> torch.Tensor:
    """VAE latents (posterior mean, as ComfyUI's VAEEncode) for an IMAGE batch [B, H, W, C]."""
    return vae.encode(images[:, :, :, :3])


# ---------------------------------------------------------------------------------------------
# Sampling previews with the current vectors


def sample_latents(model, clip, tokens: dict, negative_tokens: dict, seed: int, steps: int, cfg: float,
                   height: int, width: int, batch: int = 1, guidance: float | None = None) -> torch.Tensor:
    """Latents from ComfyUI's own sampler (euler, normal) for the given (slot-filled) prompt rows.
    `guidance`: Flux.1 dev's guidance value, set on the conditioning as core's FluxGuidance node does
    (None: the model's default)."""
    import comfy.sample

    def conditioning(tok):
        if is_flow_model(model):  # the whole conditioning dict, as CLIPTextEncode gives it (Chroma needs pooled_output: None)
            cond, extra = encode_conditioning(clip, tok)
            if guidance is not None:
                extra = {**extra, "guidance": guidance}
            return [[cond, extra]]
        cond, pooled = encode_tokens(clip, tok)
        extra = {"pooled_output": pooled} if pooled is not None else {}
        return [[cond, extra]]

    with torch.no_grad():
        clip.load_model()
        positive = conditioning(tokens)
        negative = conditioning(negative_tokens)
        # the model's latent channels and layout (16 for the flow-matching families), as EmptyLatentImage +
        # comfy.sample.fix_empty_latent_channels give them
        latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([batch, 4, height // 8, width // 8]))
        noise = comfy.sample.prepare_noise(latent, seed)
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                                   denoise=1.0, seed=seed, disable_pbar=True)


def sample_preview(model, clip, vae, tokens: dict, negative_tokens: dict, seed: int, steps: int, cfg: float,
                   height: int, width: int, guidance: float | None = None) -> torch.Tensor:
    """An IMAGE [1, H, W, 3] sampled with the given prompt rows and decoded by the VAE."""
    samples = sample_latents(model, clip, tokens, negative_tokens, seed, steps, cfg, height, width, guidance=guidance)
    with torch.no_grad():
        return vae.decode(samples)


# ---------------------------------------------------------------------------------------------
# Folders


def embedding_folders() -> list[str]:
    return list(folder_paths.get_folder_paths("embeddings"))


def primary_embedding_folder() -> str:
    folders = embedding_folders()
    if not folders:
        raise TrainingError("ComfyUI has no embeddings folder configured (check extra_model_paths.yaml)")
    return folders[0]


def embedding_files() -> list[str]:
    """Every embedding file name ComfyUI lists (relative, with extension)."""
    return list(folder_paths.get_filename_list("embeddings"))


def embedding_path(name: str, *, refuse_outside: bool = False) -> str | None:
    """The full path of a listed embedding (None when ComfyUI does not list it).

    A name that leads out of the embeddings folders (absolute, '..', a symlinked subfolder or file
    that leads out) is never looked up: None, or with ``refuse_outside`` the EmbeddingNameError
    saying so. (ComfyUI's own lookup would quietly read '../x' as the folder's 'x', '/tmp/x' as
    'tmp/x', and follow the symlink.)"""
    try:
        for folder in embedding_folders():
            safe_join(folder, name)
    except EmbeddingNameError:
        if refuse_outside:
            raise
        return None
    return folder_paths.get_full_path("embeddings", name)


def embedding_card_files() -> list[str]:
    """A1111 PNG embeddings (.png) in the embeddings folders, relative names; ComfyUI's own list
    leaves them out because its prompt parser cannot read them."""
    found: set[str] = set()
    for folder in embedding_folders():
        files, _ = folder_paths.recursive_search(folder, excluded_dir_names=[".git"])
        found.update(folder_paths.filter_files_extensions(files, {".png"}))
    return sorted(found)


def temp_folder() -> str:
    return folder_paths.get_temp_directory()


def output_folder() -> str:
    return folder_paths.get_output_directory()


def input_folder() -> str:
    """ComfyUI's input folder (where its Load Image and dataset loaders read)."""
    return folder_paths.get_input_directory()


def checkpoint_files() -> list[str]:
    """Every checkpoint file name ComfyUI lists (what Load Checkpoint offers)."""
    return list(folder_paths.get_filename_list("checkpoints"))


def checkpoint_path(name: str) -> str | None:
    """The full path of a listed checkpoint (None when ComfyUI does not list it)."""
    if name not in checkpoint_files():
        return None
    return folder_paths.get_full_path("checkpoints", name)


def encode_distribution(vae, images: torch.Tensor, spread: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image latent mean and, with `spread`, standard deviation, from one pass of the VAE encoder.

    ComfyUI's VAE.encode returns the posterior mode; on the way the KL autoencoder's quant_conv gives
    the moments (mean and log-variance), which a forward hook keeps. Without `spread`, for VAEs
    without those moments and when ComfyUI fell back to tiled encoding, the spread is zero (every
    latent sampling mode then uses the mean).
    """
    quant_conv = getattr(getattr(vae, "first_stage_model", None), "quant_conv", None)
    moments: list[torch.Tensor] = []
    hook = None
    if spread and isinstance(quant_conv, torch.nn.Module):
        hook = quant_conv.register_forward_hook(lambda module, args, output: moments.append(output.detach()))
    try:
        # one picture per call: on a CPU ComfyUI sizes the VAE's batch by free system memory and
        # encodes them all at once, and that batch's activations were the run's memory peak
        mean = torch.cat([encode_images(vae, images[i:i + 1]) for i in range(images.shape[0])])
    finally:
        if hook is not None:
            hook.remove()
    try:
        logvar = torch.cat(moments).float().chunk(2, dim=1)[1] if moments else None
    except RuntimeError:  # tiles of different sizes
        logvar = None
    if logvar is None or logvar.shape != mean.shape:
        return mean, torch.zeros_like(mean)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0)).to(mean.device)
