"""TokenSmithPrompt: prompt text in, prompt text out, with `embedding:` references made to work.

The rewriting is tokensmith.prompt_fix; what each encoder of the connected CLIP reads from a file is
tokensmith.comfy_reads. This node reads its inputs, the embeddings folders and the CLIP's tokenizers
(through the adapter), and shapes the outputs.
"""

from __future__ import annotations

import os

from comfy_api.latest import io, ui

from .. import comfy_adapter as adapter
from ..tokensmith.comfy_reads import prompt_warnings
from ..tokensmith.errors import TokenSmithError
from ..tokensmith.formats import read_header
from ..tokensmith.prompt_fix import PREFIX, EmbeddingIndex, PromptReport, fix_prompt, problem_lines
from .sockets import CATEGORY


def _index() -> EmbeddingIndex:
    return EmbeddingIndex.from_files(adapter.embedding_files(), adapter.embedding_path)


def _file_state(path: str | None):
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class TokenSmithPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenSmithPrompt",
            display_name="Embedding Prompt (TokenSmith)",
            category=CATEGORY,
            description=(
                "Prompt text in, prompt text out. Makes `embedding:NAME` references work with ComfyUI's parser "
                "(spaces around them, `embedding:x:1.2` weights, case), can turn bare keywords that match embedding "
                "files into `embedding:NAME` (the A1111 habit), warns about missing files and about embeddings "
                "that the connected CLIP cannot use (e.g. SD1 files on SDXL), and re-runs the text encoder "
                "when a referenced file changes on disk."
            ),
            inputs=[
                io.String.Input("text", multiline=True, default="",
                                tooltip="Your prompt. `embedding:NAME` or (with convert_keywords) just NAME."),
                io.Boolean.Input("convert_keywords", default=False,
                                 tooltip="Turn bare words that match an embedding file name into embedding:NAME, "
                                         "as A1111 does. Off: only existing embedding: references are fixed."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional: the CLIP this prompt goes to, to warn about embeddings it "
                                      "cannot use (SD1 files on SDXL, SD2 files on SD1...)."),
            ],
            outputs=[
                io.String.Output("prompt", tooltip="The fixed prompt, for a CLIP Text Encode's text input."),
                io.String.Output("warnings", tooltip="One line per problem found and per change made."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, text=None, convert_keywords=False, clip=None, **_):
        # ComfyUI only passes constant inputs here. With the text known: the referenced files' size and
        # mtime; with a linked text: every embedding file's, so a retrained file is never served stale.
        index = _index()
        if isinstance(text, str):
            report = fix_prompt(text, index, bool(convert_keywords))
            names = sorted(set(report.found.values()) | set(report.missing))
            state = [(n, _file_state(index.paths.get(n))) for n in names]
            if convert_keywords:
                state.append(("*names", tuple(sorted(index.paths))))
            return (text, bool(convert_keywords), tuple(state))
        return tuple(sorted((n, _file_state(p)) for n, p in index.paths.items()))

    @classmethod
    def execute(cls, text: str, convert_keywords: bool = False, clip=None) -> io.NodeOutput:
        index = _index()
        report = fix_prompt(text, index, convert_keywords)
        lines = problem_lines(report, index)
        if clip is not None and report.found:
            lines += cls._clip_warnings(clip, report, index)
        if not lines and report.referenced:
            lines.append("ok: " + ", ".join(PREFIX + n for n in dict.fromkeys(report.referenced)))
        warnings = "\n".join(lines)
        return io.NodeOutput(report.text, warnings, ui=ui.PreviewText(warnings or "no embeddings referenced"))

    @staticmethod
    def _clip_warnings(clip, report: PromptReport, index: EmbeddingIndex) -> list[str]:
        slots = adapter.embedding_slots(clip)
        if not slots:
            return ["clip: this CLIP has no tokenizer that reads embedding: names"]
        lines = []
        for name in dict.fromkeys(report.found.values()):
            try:
                header = read_header(index.paths[name])
            except TokenSmithError as exc:
                lines.append(f"unreadable: {PREFIX}{name}: {exc}")
                continue
            widths = {k: d for k, (_, d) in header["encoders"].items()}
            lines += [f"mismatch: {w}" for w in prompt_warnings(name, widths, slots, header.get("stored_order"))]
        return lines


NODES = [TokenSmithPrompt]
