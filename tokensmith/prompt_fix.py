"""Prompt text made to work with ComfyUI's `embedding:` parser (the logic of the Embedding Prompt node).

ComfyUI's tokenizer (comfy/sd1_clip.py) only sees `embedding:NAME` when the prefix starts a segment or
follows a space/newline, takes the name up to the next whitespace, and otherwise drops the word with a
log line nobody reads. ``fix_prompt`` rewrites the common near-misses into the form that parser accepts,
optionally turns bare A1111-style keywords into `embedding:NAME`, and reports what it changed and which
names no file answers.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field

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


def _resolved_name(text: str, name_start: int, index: EmbeddingIndex, changes: list[str]) -> tuple[str, int]:
    # the name after `embedding:` and where it ends: a trailing full stop dropped, the letter case fixed
    name_m = _NAME_RE.match(text, name_start)
    name = name_m.group(0) if name_m else ""
    end = name_start + len(name)
    if name and index.exact(name) is None:
        # `embedding:name.` at the end of a sentence: the dot is punctuation, not part of the name
        stripped = name.rstrip(_TRAILING_PUNCT)
        if stripped != name and index.exact(stripped) is not None:
            name, end = stripped, name_start + len(stripped)
    if name and index.exact(name) is None:
        fixed_case = index.case_fix(name)
        if fixed_case is not None:
            changes.append(f"'{PREFIX}{name}' -> '{PREFIX}{fixed_case}' (file names are case-sensitive)")
            name = fixed_case
    return name, end


def _spaces(text: str, start: int, end: int, name: str, wrapped: bool, group_weight: bool,
            changes: list[str]) -> tuple[str, str]:
    # the spaces ComfyUI needs before and after a reference
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
    return lead, trail


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
        name, end = _resolved_name(text, m.end(), index, changes)
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
        lead, trail = _spaces(text, start, end, name, piece.startswith("("), group_weight, changes)
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


def problem_lines(report: PromptReport, index: EmbeddingIndex) -> list[str]:
    """The node's report lines for the rewrites and the missing names (with the closest names that exist)."""
    lines = [f"changed: {c}" for c in report.changes]
    for name in report.missing:
        close = index.suggest(name)
        hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        lines.append(f"missing: {PREFIX}{name} is not in models/embeddings; ComfyUI will drop it.{hint}")
    return lines
