"""The ``expression`` target: merge expressions (grammar-made, mutated, random unicode) -> parse /
unparse (the round trip must keep the tree) / evaluate."""

from __future__ import annotations

from devkit.fuzzing.shared import mutate_text, random_unicode, reason_key

_EXPR_NAMES = ("a", "b", "cat", "EasyNegative", "sdxl", "sd2", "missing", "nan", "bad", "big", "L", "G", "x.y-z",
               "ｃａｔ", "_", "n0")


def _num_text(rng) -> str:
    return rng.choice(("0", "1", "2", "0.5", ".5", "5.", "1e3", "1E-3", "2.5e-1", "1e308", "1e309", "1e-320", "0.0",
                       "00", "000", "0000", "007", "123456789", "1234567890", str(rng.randint(0, 100)),
                       f"{rng.random():.6g}", "75", "76", "1e", "9" * 30))


def _expr_gen(rng, depth: int = 0) -> str:
    ws = lambda: rng.choice(("", "", " ", "  ", "\n", "\t"))  # noqa: E731

    def primary():
        r = rng.random()
        if r < 0.35:
            q = rng.choice("'\"")
            body = rng.choice(("a", "b", "cat", "a photo", "", "it''s", "x" * rng.randint(0, 50), "日本", "a b c d e",
                               random_unicode(rng, 6).replace(q, "")))
            return q + body + q
        if r < 0.6:
            return rng.choice(_EXPR_NAMES)
        if r < 0.7:
            return "`" + rng.choice(("bad hands 5", "a`b".replace("`", "``"), " x ", "ü")) + "`"
        if depth < 6:
            return "(" + ws() + _expr_gen(rng, depth + 1) + ws() + ")"
        return "'a'"

    def postfix():
        r = rng.random()
        if r < 0.3:
            return rng.choice("*/") + ws() + rng.choice(("", "-", "+")) + _num_text(rng) + rng.choice(("", "", "L", "G"))
        if r < 0.5:
            return ":" + rng.choice(("", "+", "-")) + _num_text(rng)
        return "," + ws() + (primary() if rng.random() < 0.8 else _num_text(rng))

    term = primary() + "".join(ws() + postfix() for _ in range(rng.choice((0, 0, 1, 2, 4))))
    for _ in range(rng.choice((0, 0, 1, 2, 3))):
        r = rng.random()
        if r < 0.75:
            term += ws() + rng.choice("+-") + ws() + primary() + "".join(postfix() for _ in range(rng.randint(0, 2)))
        else:
            term += ws() + "=" + "".join(rng.choice(("*2", "/2", ":3", ":+1", ":-1", "*0.5L", ",'a'"))
                                         for _ in range(rng.randint(1, 2)))
    return term


def make_expression_case(rng) -> str:
    from tokensmith.expression import MAX_DEPTH, MAX_LENGTH

    r = rng.random()
    if r < 0.55:
        return _expr_gen(rng)
    if r < 0.8:
        return mutate_text(rng, _expr_gen(rng))
    if r < 0.9:
        return random_unicode(rng, 60)
    k = rng.choice((MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 5000))
    return rng.choice((
        "(" * k + "'a'" + ")" * k,
        "'a'" + ",'a'" * rng.choice((74, 75, 1100)),
        "'a'" + "+'a'" * 3000,
        "'" + "x" * (MAX_LENGTH - 2) + "'",
        "'" + "x" * (MAX_LENGTH - 1) + "'",
        "'a'" + ":+999999999" * 3 + "*1e308" * 30,
        "big" + ",big" * 20,
        "'a':75,'a':75",
    ))


def _expr_resolvers():
    import torch

    from tokensmith.embedding import Embedding
    from tokensmith.errors import EmbeddingNameError

    def rows(seed: int, n: int, widths: dict[str, int]):
        g = torch.Generator().manual_seed(seed)
        return {k: torch.randn(n, w, generator=g) for k, w in widths.items()}

    def text(t: str):
        words = t.split()
        return rows(len(t), min(len(words), 12), {"clip_l": 8, "clip_g": 12})

    def name(n: str):
        if n == "missing":
            raise EmbeddingNameError(f"no embedding named {n!r}")
        if n == "nan":
            return {"clip_l": torch.full((1, 8), float("nan")), "clip_g": torch.zeros(1, 12)}
        if n == "bad":
            return "not an embedding"
        if n == "big":
            return {"clip_l": torch.zeros(600, 8), "clip_g": torch.zeros(600, 12)}
        if n == "sd2":
            return Embedding(vectors=rows(2, 2, {"clip_h": 10}))
        if n == "sdxl":
            return Embedding(vectors=rows(3, 2, {"clip_l": 8, "clip_g": 12}))
        if n in ("L", "G"):
            return Embedding(vectors=rows(4, 1, {"clip_l": 8}))
        return Embedding(vectors=rows(len(n), 1 + len(n) % 3, {"clip_l": 8, "clip_g": 12}))

    def token(t):
        if isinstance(t, int) and t > 49407:
            raise EmbeddingNameError(f"token {t} is outside the vocabulary")
        return rows(7, 1, {"clip_l": 8, "clip_g": 12})

    return text, name, token


_RESOLVERS = None


def run_expression_case(text: str) -> tuple[str, str]:
    from tokensmith.embedding import MAX_VECTORS
    from tokensmith.errors import TokenSmithError
    from tokensmith.expression import evaluate, parse, unparse

    global _RESOLVERS
    if _RESOLVERS is None:
        _RESOLVERS = _expr_resolvers()
    try:
        ast = parse(text)
    except TokenSmithError as exc:
        return "refused", "parse: " + reason_key(exc)
    printed = unparse(ast)
    assert parse(printed) == ast, f"round trip changed the tree: {printed!r}"
    try:
        emb = evaluate(ast, *_RESOLVERS)
    except TokenSmithError as exc:
        return "refused", "evaluate: " + reason_key(exc)
    assert 1 <= emb.num_vectors <= MAX_VECTORS, emb.shapes()
    return "evaluated", ""
