"""Using embeddings in prompts: Pick Embedding (a file from the embeddings folders -> `embedding:NAME`
text) and Text Encode with Embedding (an EMBEDDING used in a prompt without saving it first).
Thin V3 nodes over tokensmith.use and the adapter."""

from __future__ import annotations

from comfy_api.latest import io, ui

from .. import comfy_adapter
from ..tokensmith.embedding import Embedding
from ..tokensmith.errors import TokenSmithError
from ..tokensmith.names import validate_name
from ..tokensmith.use import PREFIX, keyword_of_file, prompt_reference
from .sockets import CATEGORY
from .sockets import Embedding as EmbeddingSocket


def _files() -> list[str]:
    # ComfyUI's own list: the files its `embedding:NAME` look-up can read (no PNG cards)
    return sorted(comfy_adapter.embedding_files())


class PickEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithPickEmbedding",
            display_name="Pick Embedding (TokenSmith)",
            category=CATEGORY,
            description=(
                "Pick an embedding from the embeddings folders; outputs its prompt text, embedding:NAME, or "
                "(embedding:NAME:1.2) with a weight, to join with your prompt (e.g. core's Concatenate) before a "
                "CLIP Text Encode."
            ),
            inputs=[
                io.Combo.Input("embedding", options=_files(),
                               tooltip="A file in the embeddings folders (the ones ComfyUI's embedding: look-up "
                                       "reads). After adding files press R (Refresh Node Definitions) or reload "
                                       "the page."),
                io.Float.Input("weight", default=1.0, min=0.0, max=5.0, step=0.05,
                               tooltip="Prompt weight: 1 gives embedding:NAME, any other value (embedding:NAME:W). "
                                       "Above 1 for more of it, below 1 when it takes over the picture. It weights "
                                       "the encoder's output, not the vectors."),
            ],
            outputs=[io.String.Output("prompt", tooltip="embedding:NAME or (embedding:NAME:W), for a prompt.")],
        )

    @classmethod
    def validate_inputs(cls, embedding) -> bool | str:
        try:
            keyword_of_file(embedding)
            found = comfy_adapter.embedding_path(embedding)
        except TokenSmithError as exc:
            return str(exc)
        if found is None:
            return (f"embedding file {embedding!r} was not found in the embeddings folders; pick one from the list "
                    "(refresh the page if you just added or renamed it)")
        return True

    @classmethod
    def execute(cls, embedding: str, weight: float = 1.0) -> io.NodeOutput:
        text = prompt_reference(keyword_of_file(embedding), weight)
        return io.NodeOutput(text, ui=ui.PreviewText(text))


class EncodeWithEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithEncodeWithEmbedding",
            display_name="Text Encode with Embedding (TokenSmith)",
            category=CATEGORY,
            description=(
                "CLIP Text Encode in which embedding:KEYWORD means the connected EMBEDDING (from Merge, Convert, "
                "Embedding From Text, Load or Train), without saving it first. The conditioning is the one CLIP "
                "Text Encode gives once the embedding is saved as KEYWORD. Weights work as usual: "
                "(embedding:KEYWORD:1.2); other embedding: names in the text are read from the folders."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP to encode with (SD1.x, SD2.x or SDXL; the embedding's "
                                              "family)."),
                EmbeddingSocket.Input("embedding", tooltip="The vectors that embedding:KEYWORD stands for."),
                io.String.Input("keyword", default="draft",
                                tooltip="The name the text uses for the embedding: letters, digits, . _ - (and /). "
                                        "Not the name of a saved file (the node says so)."),
                io.String.Input("text", multiline=True, default="a photo of embedding:draft",
                                tooltip="The prompt, with embedding:KEYWORD where the vectors go (spaces around it, "
                                        "or (embedding:KEYWORD:1.2) for a weight)."),
            ],
            outputs=[io.Conditioning.Output("conditioning", tooltip="For a sampler's positive or negative input.")],
        )

    @classmethod
    def execute(cls, clip, embedding: Embedding, keyword: str, text: str) -> io.NodeOutput:
        name = validate_name(keyword.strip() if isinstance(keyword, str) else keyword)
        if clip is None:
            raise TokenSmithError("no CLIP connected: connect the CLIP output of your checkpoint loader")
        conditioning, used = comfy_adapter.encode_with_vectors(clip, text or "", name, embedding.float_vectors())
        if used == 0:
            raise TokenSmithError(f"the text does not use {PREFIX}{name}: write it where the vectors go, e.g. "
                                  f"'a photo of {PREFIX}{name} on a table' (a space before and after it)")
        places = used // max(1, embedding.num_vectors)
        summary = (f"{PREFIX}{name}: {embedding.num_vectors} vector(s) of {embedding.name or 'an unsaved embedding'} "
                   f"in {places} place(s)")
        return io.NodeOutput(conditioning, ui=ui.PreviewText(summary))


NODES = [PickEmbedding, EncodeWithEmbedding]
