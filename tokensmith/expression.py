"""Merge expressions: a small language that builds an embedding from texts and embeddings.

The syntax follows the A1111 "embedding-merge" extension, read by a hand-written tokenizer and
recursive-descent parser (never ``eval``), with parentheses and bare embedding names added.

Operands
    ``'cat'`` or ``"cat"``  text, turned into input token vectors by ``resolve_text`` (no BOS/EOS,
                            no transformer pass). A doubled quote inside is a literal quote:
                            ``'it''s'``. Empty text ``''`` is zero vectors.
    ``EasyNegative``        an embedding name (letters, digits, ``_``, and ``.``/``-`` inside,
                            starting with a letter or ``_``), turned into vectors by
                            ``resolve_name``. Put spaces around a minus between two names
                            (``a - b``), since ``a-b`` is one name. Any other name goes in
                            backticks: `` `bad hands 5` ``.
    ``( ... )``             a parenthesised sub-expression.

Postfix operations on a term, applied left to right (whitespace is allowed anywhere between tokens)
    ``*x`` / ``/x``   multiply / divide every vector by the number ``x`` (ints, floats, exponents,
                      signs: ``*-1``, ``/2.5e-1``). A trailing ``L``, ``G`` or ``T`` (``*0.5L``)
                      scales only the clip_l, clip_g or t5xxl side (SDXL, SD3, Flux.1).
    ``:N``            crop to N vectors or zero-pad up to N (0 <= N <= 75).
    ``:+N`` / ``:-N`` circular shift along the vector axis (+1 moves vector i to i+1).
    ``,X``            concatenate: X's vectors after the current ones. X is a text, a name, a
                      parenthesised expression, or (as in the original) a token index such as
                      ``'',256``; ``00`` / ``000`` / ``0000`` are the pad / end / start tokens.
                      Token indices need the optional ``resolve_token`` callback.

Because postfix steps run left to right, ``,`` joins before any later step: ``'a','b'*2``
doubles both parts, while ``'a'*2,'b'`` doubles only ``a`` and ``'a',('b'*2)`` only ``b``.

Sums, lowest precedence, left to right
    ``A + B`` / ``A - B``  element-wise sum / difference, the shorter side zero-padded at the end.
    ``=op``                (``=*x``, ``=/x``, ``=:N``, ``=:+N``, ``=:-N``, optionally followed by
                           more plain postfix operations) applies to the result of everything to
                           its left in the same expression or parenthesis, as in the original:
                           ``'a'+'b' =*0.5 + 'c'`` is ``('a'+'b')*0.5 + 'c'``; a plain ``*0.5``
                           there would scale only ``'b'``. ``=`` cannot precede ``,``.

Differences from the original: parentheses, bare/backtick names, ``"..."`` quotes and ``,`` before
any operand are additions; ``L``/``G``/``T`` pick the encoder by key (clip_l / clip_g / t5xxl) rather than by
width, and naming a side the operand lacks is an error instead of a silent no-op; mixing families
is an error.

Errors are :class:`ExpressionError` with the 1-based column and what was expected. Limits:
4,000 characters, 64 nested parentheses, at most 75 vectors in the result (1,024 on the way),
finite factors, no division by zero; a result with zero vectors is an error.

Example: ``'greg rutkowski'/4 + 'gustav dore'*0.75``, ``'a'+'b' =/2``, ``EasyNegative:4, 'blur'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from .embedding import MAX_VECTORS, Embedding
from .errors import ExpressionError, TokenSmithError
from .merge import add_rows, check_same_family, concat_rows, pad_rows, roll_rows, scale_rows

MAX_LENGTH = 4000
MAX_DEPTH = 64
MAX_INTERMEDIATE_VECTORS = 1024
MAX_RESOLVED_VECTORS = 8192  # all distinct operands together, to bound memory
MAX_ROLL = 1_000_000
MAX_TOKEN_ID = 10_000_000
SIDE_KEYS = {"L": "clip_l", "G": "clip_g", "T": "t5xxl"}
SPECIAL_TOKENS = {"00": "pad", "000": "end", "0000": "start"}
_SPECIAL_TEXT = {v: k for k, v in SPECIAL_TOKENS.items()}

Resolved = Embedding | Mapping[str, torch.Tensor]


# ---------------------------------------------------------------- AST
# Positions are 1-based columns, kept out of equality so re-parsed trees compare equal.


@dataclass(frozen=True)
class Text:
    text: str
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Name:
    name: str
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class TokenRef:
    """A vocabulary token by index (int) or one of "pad", "end", "start"."""

    token: int | str
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Scale:
    factor: float
    divide: bool = False
    side: str | None = None  # "L", "G" or "T"
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Resize:
    n: int
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Roll:
    shift: int
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Concat:
    operand: Node
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Chain:
    """A term: ``head`` followed by postfix steps (Scale, Resize, Roll, Concat), left to right."""

    head: Node
    steps: tuple
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class AddStep:
    op: str  # "+" or "-"
    operand: Node
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Whole:
    """``=op op...``: operations on everything accumulated so far."""

    ops: tuple
    pos: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Sum:
    first: Node
    rest: tuple  # AddStep | Whole
    pos: int = field(default=0, compare=False, repr=False)


Node = Text | Name | TokenRef | Chain | Sum
Ast = Node
Op = Scale | Resize | Roll


# ---------------------------------------------------------------- tokenizer

_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DIGITS = frozenset("0123456789")
_PUNCT = set("+-*/:,()=")


@dataclass
class _Tok:
    kind: str  # "str", "name", "num", "punct", "end"
    value: str
    pos: int  # 1-based column


def _err(pos: int, message: str) -> ExpressionError:
    return ExpressionError(f"column {pos}: {message}")


def _is_name_start(ch: str) -> bool:
    return ch == "_" or ch.isalpha()


def _is_name_char(ch: str) -> bool:
    return ch == "_" or ch.isalnum()


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        col = i + 1
        if ch in "'\"`":
            quote, j, parts = ch, i + 1, []
            while True:
                k = text.find(quote, j)
                if k < 0:
                    what = "name" if quote == "`" else "text"
                    raise _err(col, f"{what} opened with {quote} here is never closed; add a closing {quote}")
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == quote:  # doubled quote = literal quote
                    parts.append(quote)
                    j = k + 2
                    continue
                i = k + 1
                break
            value = "".join(parts)
            if quote == "`":
                if not value.strip():
                    raise _err(col, "empty name in backticks; write an embedding name between them")
                toks.append(_Tok("name", value, col))
            else:
                toks.append(_Tok("str", value, col))
            continue
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            m = _NUMBER.match(text, i)
            toks.append(_Tok("num", m.group(0), col))
            i = m.end()
            continue
        if _is_name_start(ch):
            j = i + 1
            while j < n and (_is_name_char(text[j]) or (text[j] in ".-" and j + 1 < n and _is_name_char(text[j + 1]))):
                j += 1
            toks.append(_Tok("name", text[i:j], col))
            i = j
            continue
        if ch in _PUNCT:
            toks.append(_Tok("punct", ch, col))
            i += 1
            continue
        raise _err(col, f"unexpected character {ch!r}; expected text in quotes, a name, a number or one of + - * / : , ( ) =")
    toks.append(_Tok("end", "", n + 1))
    return toks


# ---------------------------------------------------------------- parser


def _describe(tok: _Tok) -> str:
    if tok.kind == "end":
        return "the end of the expression"
    if tok.kind == "str":
        return f"text {tok.value!r}"
    if tok.kind == "name":
        return f"name {tok.value!r}"
    if tok.kind == "num":
        return f"number {tok.value}"
    return f"{tok.value!r}"


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def is_punct(self, *chars: str) -> bool:
        tok = self.peek()
        return tok.kind == "punct" and tok.value in chars

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise _err(1, "empty expression; write e.g. 'cat' + 'dog'")
        node = self.expr(0)
        tok = self.peek()
        if tok.kind != "end":
            hint = "')' without a matching '('" if tok.value == ")" else _describe(tok)
            raise _err(tok.pos, f"unexpected {hint}; expected + - = or a postfix * / : , here")
        return node

    def expr(self, depth: int) -> Node:
        first = self.term(depth)
        start = first.pos
        rest = []
        while True:
            tok = self.peek()
            if self.is_punct("+", "-"):
                self.take()
                rest.append(AddStep(tok.value, self.term(depth), pos=tok.pos))
            elif self.is_punct("="):
                self.take()
                if not self.is_punct("*", "/", ":"):
                    nxt = self.peek()
                    extra = " ('=' cannot be used with ',')" if nxt.value == "," else ""
                    raise _err(nxt.pos, f"expected * / or : after '=', found {_describe(nxt)}{extra}")
                ops = [self.op()]
                while self.is_punct("*", "/", ":"):
                    ops.append(self.op())
                rest.append(Whole(tuple(ops), pos=tok.pos))
            else:
                break
        if not rest:
            return first
        if isinstance(first, Sum):  # "(a+b)+c" is the same left fold as "a+b+c"
            return Sum(first.first, first.rest + tuple(rest), pos=start)
        return Sum(first, tuple(rest), pos=start)

    def term(self, depth: int) -> Node:
        head = self.primary(depth)
        steps = []
        while True:
            if self.is_punct("*", "/", ":"):
                steps.append(self.op())
            elif self.is_punct(","):
                tok = self.take()
                steps.append(Concat(self.concat_operand(depth), pos=tok.pos))
            else:
                break
        if not steps:
            return head
        if isinstance(head, Chain):  # "('a'*2)*3" is the same chain as "'a'*2*3"
            return Chain(head.head, head.steps + tuple(steps), pos=head.pos)
        return Chain(head, tuple(steps), pos=head.pos)

    def primary(self, depth: int) -> Node:
        tok = self.peek()
        if tok.kind == "str":
            self.take()
            return Text(tok.value, pos=tok.pos)
        if tok.kind == "name":
            self.take()
            return Name(tok.value, pos=tok.pos)
        if self.is_punct("("):
            if depth + 1 > MAX_DEPTH:
                raise _err(tok.pos, f"parentheses nested deeper than {MAX_DEPTH}; simplify the expression")
            self.take()
            node = self.expr(depth + 1)
            close = self.peek()
            if not self.is_punct(")"):
                raise _err(close.pos, f"expected ')' to close the '(' at column {tok.pos}, found {_describe(close)}")
            self.take()
            return node
        hint = ""
        if tok.kind == "num":
            hint = " (a number can only follow * / : or ',')"
        raise _err(tok.pos, f"expected text in quotes, an embedding name or '(', found {_describe(tok)}{hint}")

    def concat_operand(self, depth: int) -> Node:
        tok = self.peek()
        if tok.kind == "num":
            self.take()
            return TokenRef(self.token_index(tok), pos=tok.pos)
        return self.primary(depth)

    def token_index(self, tok: _Tok) -> int | str:
        if not tok.value.isdigit():
            raise _err(tok.pos, f"a token index must be a whole number, found {tok.value}")
        if tok.value in SPECIAL_TOKENS:
            return SPECIAL_TOKENS[tok.value]
        if len(tok.value) > 1 and tok.value[0] == "0":
            raise _err(tok.pos, f"token index {tok.value} has leading zeros; only 00, 000 and 0000 are special tokens")
        value = int(tok.value)
        if value > MAX_TOKEN_ID:
            raise _err(tok.pos, f"token index {value} is too large")
        return value

    def integer(self, what: str) -> tuple[int, _Tok]:
        tok = self.peek()
        if tok.kind != "num" or not tok.value.isdigit():
            raise _err(tok.pos, f"expected a whole number for {what}, found {_describe(tok)}")
        self.take()
        if len(tok.value) > 9:
            raise _err(tok.pos, f"number {tok.value} for {what} is too large")
        return int(tok.value), tok

    def op(self) -> Op:
        tok = self.take()
        if tok.value in "*/":
            divide = tok.value == "/"
            sign = 1.0
            if self.is_punct("+", "-"):
                sign = -1.0 if self.take().value == "-" else 1.0
            num = self.peek()
            if num.kind != "num":
                raise _err(num.pos, f"expected a number after {tok.value!r}, found {_describe(num)}")
            self.take()
            value = sign * float(num.value)
            if not math.isfinite(value):
                raise _err(num.pos, f"number {num.value} is too large; factors must be finite")
            if divide and value == 0:
                raise _err(num.pos, "division by zero; use *0 to zero the vectors")
            side = None
            nxt = self.peek()
            if nxt.kind == "name" and nxt.value in SIDE_KEYS:
                self.take()
                side = nxt.value
            return Scale(value, divide, side, pos=tok.pos)
        # ":" crop/pad or roll
        if self.is_punct("+", "-"):
            sign = -1 if self.take().value == "-" else 1
            value, num = self.integer("the shift after ':+' or ':-'")
            if value > MAX_ROLL:
                raise _err(num.pos, f"shift {value} is too large")
            return Roll(sign * value, pos=tok.pos)
        value, num = self.integer("the vector count after ':'")
        if value > MAX_VECTORS:
            raise _err(num.pos, f"':{value}' asks for more than {MAX_VECTORS} vectors")
        return Resize(value, pos=tok.pos)


def parse(text: str) -> Ast:
    """Parse a merge expression into an AST (raises ExpressionError with the column on bad input)."""
    if not isinstance(text, str):
        raise ExpressionError(f"a merge expression must be text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    return _Parser(text).parse()


# ---------------------------------------------------------------- unparse


def _fmt_number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _quote(text: str, quote: str = "'") -> str:
    return quote + text.replace(quote, quote * 2) + quote


def _fmt_name(name: str) -> str:
    plain = (
        name
        and _is_name_start(name[0])
        and _is_name_char(name[-1])
        and all(_is_name_char(c) or c in ".-" for c in name)
        and not any(a in ".-" and b in ".-" for a, b in zip(name, name[1:], strict=False))
    )
    return name if plain else _quote(name, "`")


def _fmt_op(op: Op) -> str:
    if isinstance(op, Scale):
        return ("/" if op.divide else "*") + _fmt_number(op.factor) + (op.side or "")
    if isinstance(op, Resize):
        return f":{op.n}"
    return f":{'+' if op.shift >= 0 else '-'}{abs(op.shift)}"


def _primary(node: Node) -> str:
    if isinstance(node, Text):
        return _quote(node.text)
    if isinstance(node, Name):
        return _fmt_name(node.name)
    if isinstance(node, TokenRef):
        return _SPECIAL_TEXT[node.token] if isinstance(node.token, str) else str(node.token)
    return "(" + unparse(node) + ")"


def unparse(ast: Ast) -> str:
    """Print an AST back as expression text; ``parse(unparse(a)) == a`` for any parsed ``a``."""
    if isinstance(ast, Sum):
        parts = [_term(ast.first, in_sum=True)]
        for step in ast.rest:
            if isinstance(step, AddStep):
                parts.append(f" {step.op} {_term(step.operand)}")
            else:
                parts.append(" =" + "".join(_fmt_op(op) for op in step.ops))
        return "".join(parts)
    return _term(ast)


def _term(node: Node, in_sum: bool = False) -> str:
    if isinstance(node, Chain):
        # A Chain head that is itself a Chain or a Sum needs parentheses to stay the same tree.
        parts = [_primary(node.head)]
        for step in node.steps:
            if isinstance(step, Concat):
                parts.append("," + _primary(step.operand))
            else:
                parts.append(_fmt_op(step))
        return "".join(parts)
    if isinstance(node, Sum):
        # A Sum as the first operand of a Sum is flattened by the parser; elsewhere it needs parentheses.
        return unparse(node) if in_sum else "(" + unparse(node) + ")"
    return _primary(node)


# ---------------------------------------------------------------- evaluation


@dataclass
class _Value:
    """Vectors per encoder, or ``rows=None`` for zeros whose widths are not known yet (from ``''``)."""

    rows: dict[str, torch.Tensor] | None
    n: int


def _as_rows(result: object, what: str, pos: int) -> dict[str, torch.Tensor]:
    if isinstance(result, Embedding):
        source = result.vectors
    elif isinstance(result, Mapping):
        source = result
    else:
        raise _err(pos, f"{what} gave {type(result).__name__}, not an embedding")
    if not source:
        raise _err(pos, f"{what} gave no vectors")
    rows = {}
    for k, t in source.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise _err(pos, f"{what} gave a bad tensor for {k!r}; expected [n, width]")
        rows[str(k)] = t.detach().to(device="cpu", dtype=torch.float32).clone()
    if len({t.shape[0] for t in rows.values()}) != 1:
        raise _err(pos, f"{what} gave different vector counts per encoder")
    if not all(torch.isfinite(t).all() for t in rows.values()):
        raise _err(pos, f"{what} contains NaN or infinite values")
    return rows


class _Evaluator:
    def __init__(self, resolve_text, resolve_name, resolve_token):
        self.resolvers = {"text": resolve_text, "name": resolve_name, "token": resolve_token}
        self.cache: dict[tuple, dict[str, torch.Tensor]] = {}
        self.resolved_vectors = 0

    def resolve(self, kind: str, key, pos: int, label: str) -> _Value:
        cache_key = (kind, key)
        if cache_key not in self.cache:
            fn = self.resolvers[kind]
            if fn is None:
                raise _err(pos, f"{label} needs a token vocabulary, which is not available here")
            try:
                result = fn(key)
            except TokenSmithError as e:
                raise _err(pos, f"{label}: {e}") from e
            rows = _as_rows(result, label, pos)
            n = next(iter(rows.values())).shape[0]
            self.check_size(n, pos, label)
            self.resolved_vectors += n
            if self.resolved_vectors > MAX_RESOLVED_VECTORS:
                raise _err(pos, f"the operands hold over {MAX_RESOLVED_VECTORS} vectors in total; simplify the expression")
            self.cache[cache_key] = rows
        rows = self.cache[cache_key]
        n = next(iter(rows.values())).shape[0]
        return _Value({k: t.clone() for k, t in rows.items()}, n)

    @staticmethod
    def check_size(n: int, pos: int, what: str) -> None:
        if n > MAX_INTERMEDIATE_VECTORS:
            raise _err(pos, f"{what} has {n} vectors, over the working limit of {MAX_INTERMEDIATE_VECTORS}")

    def value_of(self, node: Node) -> _Value:
        if isinstance(node, Text):
            if node.text == "":
                return _Value(None, 0)
            return self.resolve("text", node.text, node.pos, f"text {node.text!r}")
        if isinstance(node, Name):
            return self.resolve("name", node.name, node.pos, f"embedding {node.name!r}")
        if isinstance(node, TokenRef):
            return self.resolve("token", node.token, node.pos, f"token {node.token}")
        if isinstance(node, Chain):
            value = self.value_of(node.head)
            for step in node.steps:
                if isinstance(step, Concat):
                    value = self.combine(value, self.value_of(step.operand), "concat", step.pos)
                else:
                    value = self.apply(value, step)
            return value
        if isinstance(node, Sum):
            value = self.value_of(node.first)
            for step in node.rest:
                if isinstance(step, AddStep):
                    value = self.combine(value, self.value_of(step.operand), step.op, step.pos)
                else:
                    for op in step.ops:
                        value = self.apply(value, op)
            return value
        raise ExpressionError(f"not an expression node: {type(node).__name__}")

    def apply(self, value: _Value, op: Op) -> _Value:
        if isinstance(op, Resize):
            return _Value(None if value.rows is None else pad_rows(value.rows, op.n), op.n)
        if value.rows is None:  # zeros stay zeros under scaling and rolling
            return value
        if isinstance(op, Roll):
            return _Value(roll_rows(value.rows, op.shift), value.n)
        factor = 1.0 / op.factor if op.divide else op.factor
        encoder = SIDE_KEYS[op.side] if op.side else None
        if encoder is not None and encoder not in value.rows:
            raise _err(op.pos, f"{_fmt_op(op)} scales only {encoder}, but this part has {', '.join(value.rows)}; "
                               f"drop the {op.side} to scale all of it")
        if not math.isfinite(factor):
            raise _err(op.pos, f"{_fmt_op(op)} gives a factor that is not finite")
        return _Value(scale_rows(value.rows, factor, encoder), value.n)

    def combine(self, a: _Value, b: _Value, how: str, pos: int) -> _Value:
        n = a.n + b.n if how == "concat" else max(a.n, b.n)
        self.check_size(n, pos, "the concatenation" if how == "concat" else "the sum")
        if a.rows is None and b.rows is None:
            return _Value(None, n)
        ra = a.rows if a.rows is not None else _zeros_like(b.rows, a.n)
        rb = b.rows if b.rows is not None else _zeros_like(a.rows, b.n)
        try:
            check_same_family(ra, rb, what="the two sides")
        except TokenSmithError as e:
            raise _err(pos, str(e)) from e
        if how == "concat":
            return _Value(concat_rows(ra, rb), n)
        return _Value(add_rows(ra, rb, 1.0 if how == "+" else -1.0), n)


def _zeros_like(rows: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(n, t.shape[1], dtype=torch.float32) for k, t in rows.items()}


def evaluate(
    text_or_ast: str | Ast,
    resolve_text: Callable[[str], Resolved],
    resolve_name: Callable[[str], Resolved],
    resolve_token: Callable[[int | str], Resolved] | None = None,
) -> Embedding:
    """Evaluate a merge expression (text or parsed AST) into a new fp32 Embedding.

    ``resolve_text(text)`` and ``resolve_name(name)`` return an Embedding or ``{encoder: [n, d]}``
    (n may be 0 for text). ``resolve_token(index)`` (index an int or "pad"/"end"/"start") is only
    needed for token indices after ``,``. A TokenSmithError from a callback becomes an
    ExpressionError naming the column; each distinct operand is resolved once per call.
    """
    ast = parse(text_or_ast) if isinstance(text_or_ast, str) else text_or_ast
    value = _Evaluator(resolve_text, resolve_name, resolve_token).value_of(ast)
    if value.n == 0:
        raise ExpressionError("the expression gives zero vectors; an embedding needs at least one (check ':0' or '')")
    if value.rows is None:
        raise ExpressionError(
            "the expression has only empty text '', so the vector widths are unknown; add a text or embedding"
        )
    if value.n > MAX_VECTORS:
        raise ExpressionError(
            f"the expression gives {value.n} vectors, over the limit of {MAX_VECTORS}; crop it with ':{MAX_VECTORS}'"
        )
    return Embedding(vectors=value.rows)
