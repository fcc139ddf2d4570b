import zlib

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tokensmith.embedding import MAX_VECTORS, Embedding
from tokensmith.errors import EmbeddingNameError, ExpressionError
from tokensmith.expression import MAX_DEPTH, MAX_LENGTH, Chain, Name, Sum, Text, evaluate, parse, unparse

# ---------------------------------------------------------------- small, hand-checkable resolvers

TABLE = {
    "a": [[1.0, 2.0]],
    "b": [[10.0, 20.0], [30.0, 40.0]],
    "c": [[100.0, 0.0], [0.0, 100.0], [5.0, 5.0]],
}


def text1(text):
    return {"clip_l": torch.tensor(TABLE[text])}


def name1(name):
    if name == "missing":
        raise EmbeddingNameError("no embedding called 'missing'")
    if name == "wide":
        return Embedding(vectors={"clip_l": torch.ones(1, 3)})
    return Embedding(vectors={"clip_l": torch.tensor(TABLE[name]) * -1})


def ev(expr, **kw):
    return evaluate(expr, text1, name1, **kw).vectors["clip_l"].tolist()


# ---------------------------------------------------------------- operators, by hand


def test_plain_operand():
    assert ev("'a'") == [[1.0, 2.0]]
    assert ev('"b"') == [[10.0, 20.0], [30.0, 40.0]]
    assert ev("a") == [[-1.0, -2.0]]


def test_add_and_subtract_zero_pad():
    assert ev("'a' + 'b'") == [[11.0, 22.0], [30.0, 40.0]]
    assert ev("'a'-'b'") == [[-9.0, -18.0], [-30.0, -40.0]]
    assert ev("'b' - 'a' + 'a'") == [[10.0, 20.0], [30.0, 40.0]]


def test_scale_and_divide_left_to_right():
    assert ev("'a'*3") == [[3.0, 6.0]]
    assert ev("'a'/4") == [[0.25, 0.5]]
    assert ev("'a'*3/2") == [[1.5, 3.0]]
    assert ev("'a' * -1") == [[-1.0, -2.0]]
    assert ev("'a'*1e1") == [[10.0, 20.0]]
    assert ev("'a'*.5") == [[0.5, 1.0]]
    assert ev("'a'*2.5E-1") == [[0.25, 0.5]]


def test_postfix_binds_to_its_operand_only():
    assert ev("'a' + 'b'*0") == [[1.0, 2.0], [0.0, 0.0]]


def test_crop_pad_roll():
    assert ev("'c':2") == [[100.0, 0.0], [0.0, 100.0]]
    assert ev("'a':3") == [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]
    assert ev("'c':+1") == [[5.0, 5.0], [100.0, 0.0], [0.0, 100.0]]
    assert ev("'c':-1") == [[0.0, 100.0], [5.0, 5.0], [100.0, 0.0]]
    assert ev("'a':2:+1") == [[0.0, 0.0], [1.0, 2.0]]


def test_concat_and_its_order():
    assert ev("'a','b'") == [[1.0, 2.0], [10.0, 20.0], [30.0, 40.0]]
    assert ev("'a','a'*2") == [[2.0, 4.0], [2.0, 4.0]]  # the join happens before the later *2
    assert ev("'a'*2,'a'") == [[2.0, 4.0], [1.0, 2.0]]
    assert ev("'a',('a'*2)") == [[1.0, 2.0], [2.0, 4.0]]
    assert ev("'a',b") == [[1.0, 2.0], [-10.0, -20.0], [-30.0, -40.0]]


def test_equals_prefix_applies_to_everything_so_far():
    assert ev("'a' + 'b' =*2") == [[22.0, 44.0], [60.0, 80.0]]
    assert ev("'a' + 'b' *2") == [[21.0, 42.0], [60.0, 80.0]]
    assert ev("'a' + 'b' =/2 + 'a'") == [[6.5, 13.0], [15.0, 20.0]]
    assert ev("'a' + 'b' =:1") == [[11.0, 22.0]]
    assert ev("'a' + 'b' =:+1") == [[30.0, 40.0], [11.0, 22.0]]
    assert ev("'a' + 'b' =*2*0.5") == [[11.0, 22.0], [30.0, 40.0]]
    # the README's equivalence: 'a'/2 + 'b'/2 + '':1 - 'd'  ==  'a'+'b' =* 0.5 + 'c'*0 + 'd'*-1
    assert ev("'a'/2 + 'b'/2 + '':1 - 'c'") == ev("'a'+'b' =* 0.5 + 'b'*0 + 'c'*-1")


def test_parentheses():
    assert ev("('a' + 'b')*2") == ev("'a' + 'b' =*2")
    assert ev("'c' - ('a' + 'a')") == [[98.0, -4.0], [0.0, 100.0], [5.0, 5.0]]


def test_empty_text_takes_widths_from_neighbours():
    assert ev("'':2 + 'a'") == [[1.0, 2.0], [0.0, 0.0]]
    assert ev("'','a'") == [[1.0, 2.0]]
    with pytest.raises(ExpressionError, match="widths"):
        ev("'':2")
    with pytest.raises(ExpressionError, match="zero vectors"):
        ev("''")
    with pytest.raises(ExpressionError, match="zero vectors"):
        ev("'a':0")


def test_token_indices():
    def token(t):
        return {"clip_l": torch.tensor([[7.0, float(t) if isinstance(t, int) else -7.0]])}

    assert evaluate("'a',5,00", text1, name1, token).vectors["clip_l"].tolist() == [[1, 2], [7, 5], [7, -7]]
    with pytest.raises(ExpressionError, match="token vocabulary"):
        ev("'a',5")
    seen = []
    evaluate("'',0000,000,00,0", text1, name1, lambda t: seen.append(t) or token(t))
    assert seen == ["start", "end", "pad", 0]


def sdxl_text(text):
    return {"clip_l": torch.ones(2, 2), "clip_g": torch.ones(2, 3)}


def test_one_sided_scaling():
    out = evaluate("'x'*2L/4G", sdxl_text, name1)
    assert out.vectors["clip_l"].tolist() == [[2.0, 2.0]] * 2
    assert out.vectors["clip_g"].tolist() == [[0.25] * 3] * 2
    out = evaluate("'x' * 3 G", sdxl_text, name1)
    assert out.vectors["clip_g"].tolist() == [[3.0] * 3] * 2
    with pytest.raises(ExpressionError, match="clip_g"):
        ev("'a'*2G")


def test_family_mismatch_names_the_column():
    with pytest.raises(ExpressionError, match=r"column 5: .*different families"):
        ev("'a' + wide")
    with pytest.raises(ExpressionError, match="different families"):
        evaluate("'x',a", sdxl_text, text1)


def test_resolver_errors_name_the_column():
    with pytest.raises(ExpressionError, match=r"column 7: embedding 'missing': no embedding"):
        ev("'a' + missing")


def test_each_operand_resolved_once():
    calls = []

    def counting(text):
        calls.append(text)
        return text1(text)

    evaluate("'a' + 'a'*2 + ('a','b')", counting, name1)
    assert sorted(calls) == ["a", "b"]


def test_result_is_new_fp32_embedding():
    src = {"clip_l": torch.tensor([[1.0, 2.0]], dtype=torch.float16)}
    out = evaluate("'a'*2", lambda t: src, name1)
    assert out.vectors["clip_l"].dtype == torch.float32
    assert src["clip_l"].tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(
    ("expr", "column", "words"),
    [
        ("", 1, "empty expression"),
        ("'a' +", 6, "expected text in quotes"),
        ("'a' 'b'", 5, "unexpected text"),
        ("'a", 1, "never closed"),
        ("('a'", 5, "expected ')'"),
        ("'a')", 4, "without a matching"),
        ("'a'*", 5, "expected a number"),
        ("'a'/0", 5, "division by zero"),
        ("'a':1.5", 5, "whole number"),
        ("'a':-x", 6, "whole number"),
        ("'a':76", 5, "more than 75"),
        ("'a' =,'b'", 6, "cannot be used with ','"),
        ("'a' = 'b'", 7, "after '='"),
        ("'a'*1e999", 5, "finite"),
        ("'a' # 'b'", 5, "unexpected character"),
        ("3 + 'a'", 1, "a number can only follow"),
        ("'a',007", 5, "leading zeros"),
        ("'a'*2X", 6, "unexpected name"),
    ],
)
def test_parse_errors_say_where_and_what(expr, column, words):
    with pytest.raises(ExpressionError) as info:
        parse(expr)
    message = str(info.value)
    assert message.startswith(f"column {column}:"), message
    assert words in message, message


def test_limits():
    with pytest.raises(ExpressionError, match="limit is 4000"):
        parse("'a'" + " + 'a'" * (MAX_LENGTH // 6 + 1))
    parse("(" * MAX_DEPTH + "'a'" + ")" * MAX_DEPTH)
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse("(" * (MAX_DEPTH + 1) + "'a'" + ")" * (MAX_DEPTH + 1))
    many = ",".join(["'c'"] * 26)  # 78 vectors
    with pytest.raises(ExpressionError, match="over the limit of 75"):
        ev(many)
    assert len(ev(many + ":75")) == MAX_VECTORS


def test_names_with_dashes_and_backticks():
    assert parse("bad-hands-5") == Name("bad-hands-5")
    assert parse("a - b") == Sum(Name("a"), parse("a - b").rest)
    assert parse("`my emb`*2") == Chain(Name("my emb"), parse("x*2").steps)
    assert unparse(parse("`my emb`")) == "`my emb`"
    assert parse("'it''s'") == Text("it's")
    assert parse('"say ""hi"""') == Text('say "hi"')


# ---------------------------------------------------------------- property tests

WL, WG = 3, 4


def _seeded(kind, key, n):
    g = torch.Generator().manual_seed(zlib.crc32(f"{kind}:{key}".encode()))
    return {"clip_l": torch.randn(n, WL, generator=g), "clip_g": torch.randn(n, WG, generator=g)}


def fake_text(text):
    return _seeded("text", text, 1 + len(text) % 3)


def fake_name(name):
    if name.startswith("sd1"):
        return {"clip_l": torch.ones(1, WL)}
    return Embedding(vectors=_seeded("name", name, 1 + len(name) % 2))


def fake_token(token):
    return _seeded("token", token, 1)


def _pad(v, n):
    return {k: torch.cat([t[:n], torch.zeros(max(0, n - t.shape[0]), t.shape[1])]) for k, t in v.items()}


def _count(v):
    return v["clip_l"].shape[0]


WS = st.sampled_from(["", " ", "  ", "\n"])
FACTORS = ["2", "0.5", "-1", ".25", "1e-1", "2.5E+0", "+3", "-0.75", "10", "1.", "0"]


@st.composite
def leaf(draw):
    kind = draw(st.sampled_from(["text", "text", "name"]))
    if kind == "text":
        text = draw(st.text(alphabet="abc xyz'\"", min_size=1, max_size=5))
        quote = draw(st.sampled_from(["'", '"']))
        return quote + text.replace(quote, quote * 2) + quote, fake_text(text)
    name = draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,4}(-[a-z0-9]{1,3})?", fullmatch=True))
    assume(not name.startswith("sd1"))
    return name, {k: t.clone() for k, t in Embedding(vectors=fake_name(name).vectors).vectors.items()}


@st.composite
def op(draw):
    kind = draw(st.sampled_from(["*", "/", ":", ":+", ":-"]))
    ws = draw(WS)
    if kind in "*/":
        choices = [f for f in FACTORS if not (kind == "/" and float(f) == 0)]
        num = draw(st.sampled_from(choices))
        side = draw(st.sampled_from(["", "", "L", "G"]))
        factor = float(num) if kind == "*" else 1 / float(num)
        enc = {"L": "clip_l", "G": "clip_g"}.get(side)

        def apply(v):
            return {k: (t * factor if enc in (None, k) else t) for k, t in v.items()}

        return f"{kind}{ws}{num}{side}", apply
    if kind == ":":
        n = draw(st.integers(1, 8))
        return f":{ws}{n}", lambda v: _pad(v, n)
    shift = draw(st.integers(0, 5))
    signed = shift if kind == ":+" else -shift
    return f"{kind}{shift}", lambda v: {k: torch.roll(t, signed, 0) for k, t in v.items()}


@st.composite
def term(draw, depth):
    src, val = draw(primary(depth))
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            text, fn = draw(op())
            src, val = src + text, fn(val)
        else:
            if draw(st.integers(0, 4)) == 0:
                idx = draw(st.integers(0, 300))
                s2, v2 = str(idx), fake_token(idx)
            else:
                s2, v2 = draw(primary(depth))
            if _count(val) + _count(v2) > 60:
                continue
            src = src + "," + draw(WS) + s2
            val = {k: torch.cat([val[k], v2[k]]) for k in val}
    return src, val


@st.composite
def primary(draw, depth):
    if depth > 0 and draw(st.integers(0, 3)) == 0:
        src, val = draw(expr(depth - 1))
        return "(" + draw(WS) + src + draw(WS) + ")", val
    return draw(leaf())


@st.composite
def expr(draw, depth=2):
    src, val = draw(term(depth))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["+", "-", "="]))
        if kind == "=":
            text, fn = draw(op())
            src, val = f"{src} ={draw(WS)}{text}", fn(val)
            continue
        s2, v2 = draw(term(depth))
        n = max(_count(val), _count(v2))
        a, b = _pad(val, n), _pad(v2, n)
        sign = 1.0 if kind == "+" else -1.0
        src, val = f"{src} {kind} {s2}", {k: a[k] + sign * b[k] for k in a}
    return src, val


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr())
def test_generated_expressions_match_reference_and_round_trip(case):
    src, expected = case
    ast = parse(src)
    out = evaluate(ast, fake_text, fake_name, fake_token)
    assert set(out.vectors) == {"clip_l", "clip_g"}
    for k in expected:
        assert out.vectors[k].shape == expected[k].shape, src
        assert torch.allclose(out.vectors[k], expected[k], rtol=1e-5, atol=1e-5), src
    # printing the tree back and parsing it again gives the same tree
    again = parse(unparse(ast))
    assert again == ast, src
    assert unparse(again) == unparse(ast)


NOISE = st.one_of(
    st.text(alphabet="'\"`()+-*/:,= .0123456789eELGab_\n", max_size=40),
    st.text(max_size=30),
)


def _check_random(text):
    try:
        ast = parse(text)
    except ExpressionError:
        return
    assert parse(unparse(ast)) == ast
    try:
        out = evaluate(ast, fake_text, fake_name, fake_token)
    except ExpressionError:
        return
    assert 1 <= out.num_vectors <= MAX_VECTORS


@settings(max_examples=500, deadline=None)
@given(NOISE)
def test_random_strings_only_raise_expression_error(text):
    _check_random(text)


@pytest.mark.parametrize(
    "text", ["²", "'a'*²", "'a':٣", "٣", "a.-b", "a..b", "'a'*1e", "`", "``", "'a'*2L2", "()", "'a',(", "=*2", "-'a'"]
)
def test_awkward_inputs_only_raise_expression_error(text):
    _check_random(text)


def test_total_resolved_vectors_are_bounded():
    def big(text):
        return {"clip_l": torch.zeros(1000, 2)}

    expr = " + ".join(f"'t{i}':1" for i in range(9))
    with pytest.raises(ExpressionError, match="in total"):
        evaluate(expr, big, name1)
