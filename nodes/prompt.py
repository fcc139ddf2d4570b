"""TokenSmithPrompt: prompt text in, prompt text out, with `embedding:` references made to work.

ComfyUI's tokenizer (comfy/sd1_clip.py) only sees `embedding:NAME` when the prefix starts a
segment or follows a space/newline, takes the name up to the next whitespace, and otherwise drops
the word with a log line nobody reads. This node rewrites the common near-misses into the form that
parser accepts, optionally turns bare A1111-style keywords into `embedding:NAME`, and reports what it
changed and what will not work (missing files, encoder mismatches such as SD1 files on SDXL).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field

from comfy_api.latest import io, ui

from .types import CATEGORY

PREFIX = "embedding:"
# Extensions ComfyUI's loader adds by itself: `embedding:NAME` finds NAME.safetensors / .pt / .bin.
_RESOLVABLE = (".safetensors", ".pt", ".bin")
# Characters that end a name in practice (ComfyUI itself only stops at whitespace).
_NAME_RE = re.compile(r"[^\s,()\[\]{}|:;]+")
_WEIGHT_RE = re.compile(r":(-?\d+(?:\.\d*)?|-?\.\d+)")
_WORD_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")
_WORD_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-:\\")
_TRAILING_PUNCT = ".!?;"


@dataclass
class EmbeddingIndex:
    """The embeddings ComfyUI can find: prompt name (relative, no extension) -> full path."""

    paths: dict[str, str]
    _lower: dict[str, list[str]] = field(init=False)
    _base: dict[str, list[str]] = field(init=False)

    def __post_init__(self):
        self._lower, self._base = {}, {}
        for name in self.paths:
            self._lower.setdefault(name.lower(), []).append(name)
            self._base.setdefault(name.rsplit("/", 1)[-1].lower(), []).append(name)

    @classmethod
    def from_files(cls, files: list[str], resolve) -> EmbeddingIndex:
        paths = {}
        for rel in files:
            rel_slash = rel.replace(os.sep, "/")
            root, ext = os.path.splitext(rel_slash)
            key = root if ext.lower() in _RESOLVABLE else rel_slash
            path = resolve(rel)
            if path and key not in paths:  # ComfyUI tries .safetensors before .pt/.bin; the listing is sorted
                paths[key] = path
        return cls(paths)

    def exact(self, name: str) -> str | None:
        """The indexed name ComfyUI resolves `embedding:name` to (extension written out or not)."""
        if name in self.paths:
            return name
        root, ext = os.path.splitext(name)
        if ext.lower() in _RESOLVABLE and root in self.paths:
            return root
        return None

    def case_fix(self, name: str) -> str | None:
        """The one indexed name that differs from `name` only in case (None when zero or several)."""
        hits = self._lower.get(name.lower(), [])
        return hits[0] if len(hits) == 1 else None

    def keyword(self, word: str) -> str | None:
        """A1111 habit: a bare word that is an embedding's file name (any case, any subfolder) if unique."""
        hits = self._lower.get(word.lower()) or self._base.get(word.lower(), [])
        return hits[0] if len(hits) == 1 else None

    def suggest(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, list(self.paths), n=3, cutoff=0.6)


@dataclass
class PromptReport:
    text: str
    referenced: list[str]  # names as written after the fixes (existing or not), in order of appearance
    found: dict[str, str]  # referenced name -> indexed name
    changes: list[str]
    missing: list[str]


def _depth_at(text: str) -> list[int]:
    """Parenthesis depth before each character, as ComfyUI's parse_parentheses counts it
    (escaped \\( and \\) are text)."""
    depth, out, i = 0, [], 0
    while i < len(text):
        ch = text[i]
        out.append(depth)
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "()":
            out.append(depth)
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        i += 1
    out.append(depth)
    return out


def convert_keywords(text: str, index: EmbeddingIndex) -> tuple[str, list[str]]:
    """Bare words that name an embedding file become `embedding:NAME` (whole words only)."""
    out, changes, pos = [], [], 0
    for m in _WORD_RE.finditer(text):
        start, end = m.span()
        before = text[start - 1] if start else ""
        after = text[end] if end < len(text) else ""
        if before in _WORD_CHARS or (after and after in _WORD_CHARS - {":", ".", "/", "-"}):
            continue  # part of a longer token, a weight, or already `embedding:...`
        word = m.group(0).rstrip(".")
        if word == "embedding" and after == ":":
            continue
        hit = index.keyword(word)
        if hit is None:
            continue
        end = start + len(word)
        sep = " " if before and not before.isspace() and before != "(" else ""
        out.append(text[pos:start] + sep + PREFIX + hit)
        changes.append(f"'{word}' -> '{PREFIX}{hit}'")
        pos = end
    out.append(text[pos:])
    return "".join(out), changes


def fix_prompt(text: str, index: EmbeddingIndex, keywords: bool = False) -> PromptReport:
    """Rewrite `embedding:` references so ComfyUI's parser resolves them; see the module docstring."""
    changes: list[str] = []
    if keywords:
        text, kw_changes = convert_keywords(text, index)
        changes += [f"keyword {c}" for c in kw_changes]
    depth = _depth_at(text)
    out, pos = [], 0
    referenced, found, missing = [], {}, []
    for m in re.finditer(re.escape(PREFIX), text):
        start = m.start()
        if start < pos:
            continue
        name_m = _NAME_RE.match(text, m.end())
        raw = name_m.group(0) if name_m else ""
        end = m.end() + len(raw)
        name = raw
        if name and index.exact(name) is None:
            # `embedding:name.` at the end of a sentence: the dot is punctuation, not part of the name
            stripped = name.rstrip(_TRAILING_PUNCT)
            if stripped != name and index.exact(stripped) is not None:
                name, end = stripped, m.end() + len(stripped)
        if name and index.exact(name) is None:
            fixed_case = index.case_fix(name)
            if fixed_case is not None:
                changes.append(f"'{PREFIX}{name}' -> '{PREFIX}{fixed_case}' (file names are case-sensitive)")
                name = fixed_case
        piece = PREFIX + name
        weight_m = _WEIGHT_RE.match(text, end) if name else None
        group_weight = False
        if weight_m:
            after_weight = text[weight_m.end()] if weight_m.end() < len(text) else ""
            if after_weight != ")" or depth[start] == 0:
                # `embedding:x:1.2` outside a (group:weight): the weight would be read as part of the name
                piece = f"({piece}{weight_m.group(0)})"
                end = weight_m.end()
                changes.append(f"'{PREFIX}{name}{weight_m.group(0)}' -> '{piece}'")
            else:
                group_weight = True  # `(... embedding:x:1.2)`: the group's weight, ComfyUI reads it
        wrapped = piece.startswith("(")
        before = text[start - 1] if start else ""
        lead = ""
        if not wrapped and before and not before.isspace() and before not in "()":
            lead = " "  # ComfyUI only splits on ' embedding:' or '\nembedding:'
            changes.append(f"space added before '{PREFIX}{name}' (after '{before}')")
        nxt = text[end] if end < len(text) else ""
        trail = ""
        after_nxt = text[end + 1] if end + 1 < len(text) else " "
        comma_ok = nxt == "," and after_nxt.isspace()  # ComfyUI retries `name,` without the comma itself
        if not wrapped and not group_weight and name and nxt and not nxt.isspace() and nxt != ")" and not comma_ok:
            trail = " "  # `embedding:x,red`: ComfyUI would look for a file named 'x,red'
            changes.append(f"space added after '{PREFIX}{name}' (before '{nxt}')")
        out.append(text[pos:start] + lead + piece + trail)
        pos = end
        if name:
            referenced.append(name)
            hit = index.exact(name)
            if hit is None:
                missing.append(name)
            else:
                found[name] = hit
    out.append(text[pos:])
    return PromptReport("".join(out), referenced, found, changes, list(dict.fromkeys(missing)))


def encoder_warnings(name: str, emb_encoders: dict, clip_keys: list[str], clip_family: str) -> list[str]:
    """What ComfyUI will drop when this embedding meets this CLIP (ComfyUI reads, per encoder, the key
    of that encoder or else the file's first tensor, and ignores it when the width differs)."""
    have = set(emb_encoders)
    dropped = [k for k in clip_keys if k not in have]
    if not dropped:
        return []
    family = {"clip_l": "SD1", "clip_h": "SD2", "clip_g": "SDXL-G"}
    kind = "+".join(family.get(k, k) for k in emb_encoders) or "unknown"
    if len(dropped) == len(clip_keys):
        return [f"{PREFIX}{name} is a {kind} embedding ({', '.join(emb_encoders)}); this {clip_family.upper()} "
                f"CLIP has {', '.join(clip_keys)}: ComfyUI will ignore it entirely. Use an embedding made for "
                f"{clip_family.upper()} (or train one with TokenSmith on this checkpoint)."]
    return [f"{PREFIX}{name} is a {kind} embedding ({', '.join(emb_encoders)}) used on {clip_family.upper()}: only "
            f"{', '.join(k for k in clip_keys if k in have)} gets it, {', '.join(dropped)} ignores it "
            "(ComfyUI logs 'shape mismatch'). An SDXL embedding needs both clip_l and clip_g vectors."]


def _index() -> EmbeddingIndex:
    from .. import comfy_adapter as adapter

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
        lines = [f"changed: {c}" for c in report.changes]
        for name in report.missing:
            close = index.suggest(name)
            hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
            lines.append(f"missing: {PREFIX}{name} is not in models/embeddings; ComfyUI will drop it.{hint}")
        if clip is not None and report.found:
            lines += cls._clip_warnings(clip, report, index)
        if not lines and report.referenced:
            lines.append("ok: " + ", ".join(PREFIX + n for n in dict.fromkeys(report.referenced)))
        warnings = "\n".join(lines)
        return io.NodeOutput(report.text, warnings, ui=ui.PreviewText(warnings or "no embeddings referenced"))

    @staticmethod
    def _clip_warnings(clip, report: PromptReport, index: EmbeddingIndex) -> list[str]:
        from .. import comfy_adapter as adapter
        from ..tokensmith.errors import TokenSmithError
        from ..tokensmith.formats import read_header

        try:
            encoders = adapter.encoders_of(clip)
        except TokenSmithError as exc:
            return [f"clip: {exc}"]
        keys = [e.key for e in encoders]
        family = adapter.clip_family(clip)
        lines = []
        for name in dict.fromkeys(report.found.values()):
            try:
                header = read_header(index.paths[name])
            except TokenSmithError as exc:
                lines.append(f"unreadable: {PREFIX}{name}: {exc}")
                continue
            lines += [f"mismatch: {w}" for w in encoder_warnings(name, header.get("encoders", {}), keys, family)]
        return lines


NODES = [TokenSmithPrompt]
