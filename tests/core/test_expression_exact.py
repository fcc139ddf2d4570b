"""Merge expressions word for word and character for character: parse errors with their column and
what was found, token index edges, the text unparse prints (plain names stay plain, factors lose a
trailing .0, special tokens keep their digits), and fp32 results whatever torch's default dtype is."""

from __future__ import annotations

import pytest
import torch

from tokensmith.errors import ExpressionError
from tokensmith.expression import (
    MAX_INTERMEDIATE_VECTORS,
    MAX_RESOLVED_VECTORS,
    MAX_ROLL,
    MAX_TOKEN_ID,
    AddStep,
    Chain,
    Concat,
    Name,
    Roll,
    Scale,
    Sum,
    Text,
    TokenRef,
    evaluate,
    parse,
    unparse,
)


def _message(text):
    with pytest.raises(ExpressionError) as info:
        parse(text)
    return str(info.value)


def test_parse_errors_word_for_word():
    expected_operand = "expected text in quotes, an embedding name or '(', found"
    assert _message("'a' +") == f"column 6: {expected_operand} the end of the expression"
    assert _message("* 'a'") == f"column 1: {expected_operand} '*'"
    assert _message("'a' 5") == "column 5: unexpected number 5; expected + - = or a postfix * / : , here"


def test_token_index_refusals_and_edges():
    assert _message("'a',1.5") == "column 5: a token index must be a whole number, found 1.5"
    assert _message("'a',01") == (
        "column 5: token index 01 has leading zeros; only 00, 000 and 0000 are special tokens")
    assert _message(f"'a',{MAX_TOKEN_ID + 1}") == f"column 5: token index {MAX_TOKEN_ID + 1} is too large"
    assert parse(f"'a',{MAX_TOKEN_ID}") == Chain(Text("a"), (Concat(TokenRef(MAX_TOKEN_ID)),))


@pytest.mark.parametrize("name", ["cat", "my-emb", "X-X", "a.b.c", "v1.5-x_2"])
def test_plain_names_print_without_backticks(name):
    assert unparse(parse(name)) == name


@pytest.mark.parametrize("text", ["`a.-b`", "`a..b`", "`bad hands 5`", "`-x`"])
def test_names_the_tokenizer_would_split_keep_their_backticks(text):
    assert unparse(parse(text)) == text


def test_unparse_prints_numbers_and_special_tokens_as_written():
    for text in ("'a'*2/100", "'a'*2.5", "'a'*-3L", "'a',00,000,0000,5", "'a' + 'b' =*0.5:3:+1", "'a':+0"):
        assert unparse(parse(text)) == text


def test_a_sum_nested_first_in_a_sum_prints_flat():
    # the parser would have flattened it; printed flat it parses to that flattened tree
    inner = Sum(Name("a"), (AddStep("+", Name("b")),))
    nested = Sum(inner, (AddStep("-", Name("c")),))
    assert unparse(nested) == "a + b - c"


def _one(text):
    return {"clip_l": torch.tensor([[1.0, 2.0]], dtype=torch.float32)}


def test_evaluation_errors_name_the_operands_column():
    with pytest.raises(ExpressionError) as info:
        evaluate("'a' + 'b',5", _one, _one)
    assert str(info.value) == "column 11: token 5 needs a token vocabulary, which is not available here"


def test_empty_text_beside_an_operand_gives_fp32_even_when_torch_defaults_to_float64(float64_default):
    # evaluate promises an fp32 embedding; a host process may have changed torch's default dtype
    def text(t):
        return {"clip_l": torch.tensor([[1.0, 2.0]], dtype=torch.float32)}

    for expr in ("'','a'", "'' + 'a'"):
        out = evaluate(expr, text, text).vectors["clip_l"]
        assert out.dtype == torch.float32, expr


def _eval_message(expr, resolve_text=_one, resolve_name=_one):
    with pytest.raises(ExpressionError) as info:
        evaluate(expr, resolve_text, resolve_name)
    return str(info.value)


@pytest.mark.parametrize(("result", "says"), [
    ([[1.0, 2.0]], "gave list, not an embedding"),
    ({}, "gave no vectors"),
    ({"clip_l": torch.ones(3)}, "gave a bad tensor for 'clip_l'; expected [n, width]"),
    ({"clip_l": torch.ones(1, 2), "clip_g": torch.ones(2, 3)}, "gave different vector counts per encoder"),
    ({"clip_l": torch.tensor([[1.0, float("inf")]])}, "contains NaN or infinite values"),
])
def test_a_bad_resolver_result_is_refused_at_its_column(result, says):
    assert _eval_message("'a' + 'b'", lambda t: _one(t) if t == "a" else result) == f"column 7: text 'b' {says}"


def test_evaluation_refusals_word_for_word():
    big = {"clip_l": torch.ones(600, 2)}
    assert _eval_message("'a','a'", lambda t: big) == (
        "column 4: the concatenation has 1200 vectors, over the working limit of 1024")
    assert _eval_message("'a'", lambda t: {"clip_l": torch.ones(1025, 2)}) == (
        "column 1: text 'a' has 1025 vectors, over the working limit of 1024")
    assert _eval_message("'a' *2G") == (
        "column 5: *2G scales only clip_g, but this part has clip_l; drop the G to scale all of it")
    assert _eval_message("'a'/1e-320") == "column 4: /1e-320 gives a factor that is not finite"
    assert _eval_message("'a':0") == (
        "the expression gives zero vectors; an embedding needs at least one (check ':0' or '')")
    assert _eval_message("'':3") == (
        "the expression has only empty text '', so the vector widths are unknown; add a text or embedding")
    assert _eval_message("'a':40,('a':40)") == (
        "the expression gives 80 vectors, over the limit of 75; crop it with ':75'")
    wide = {"clip_l": torch.ones(1, 3)}
    assert _eval_message("'a' + w", resolve_name=lambda n: wide) == (
        "column 5: cannot combine the two sides of different families: clip_l[1x2] vs clip_l[1x3]; "
        "use embeddings made for the same model family (convert one first if needed)")


def test_operands_beyond_the_total_are_refused():
    # each distinct operand is resolved once; their total is bounded, not each one
    many = " + ".join(f"'t{i}'" for i in range(9))
    last = "'t8'"  # the ninth operand passes the total
    assert _eval_message(many, lambda t: {"clip_l": torch.ones(1000, 2)}) == (
        f"column {many.index(last) + 1}: the operands hold over 8192 vectors in total; simplify the expression")


def test_parse_refuses_what_is_not_text_or_too_long():
    with pytest.raises(ExpressionError) as info:
        parse(42)
    assert str(info.value) == "a merge expression must be text, got int"
    with pytest.raises(ExpressionError) as info:
        parse("'" + "a" * 3999 + "'")
    assert str(info.value) == "expression is 4001 characters long; the limit is 4000"


def test_number_length_limit_sits_between_nine_and_ten_digits():
    # nine digits pass the length check and meet the shift limit; ten are refused for their length
    assert _message("'a':+123456789") == "column 6: shift 123456789 is too large"
    assert _message("'a':+1234567890") == (
        "column 6: number 1234567890 for the shift after ':+' or ':-' is too large")


def test_a_sum_is_as_long_as_its_longer_side():
    # two 40-vector sides sum to 40 vectors, within the 75 of a result
    out = evaluate("'a':40 + 'a':40", _one, _one).vectors["clip_l"]
    assert out.shape == (40, 2)
    assert out[0].tolist() == [2.0, 4.0] and out[1:].abs().sum() == 0


def test_empty_texts_joined_keep_their_count_until_an_operand_gives_widths():
    assert _eval_message("'' + ''") == (
        "the expression gives zero vectors; an embedding needs at least one (check ':0' or '')")
    out = evaluate("('':2,''),'a'", _one, _one).vectors["clip_l"]
    assert out.tolist() == [[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]]


def test_one_sided_scaling_lists_every_side_the_part_has():
    def sdxl(t):
        return {"clip_l": torch.ones(1, 2), "clip_g": torch.ones(1, 3)}

    assert _eval_message("'x'*2T", sdxl) == (
        "column 4: *2T scales only t5xxl, but this part has clip_l, clip_g; drop the T to scale all of it")


def test_postfix_refusals_word_for_word_and_the_shift_limit():
    assert _message("'a'/0") == "column 5: division by zero; use *0 to zero the vectors"
    assert _message("'a':+x") == "column 6: expected a whole number for the shift after ':+' or ':-', found name 'x'"
    assert _message("'a':x") == "column 5: expected a whole number for the vector count after ':', found name 'x'"
    assert parse(f"'a':+{MAX_ROLL}") == Chain(Text("a"), (Roll(MAX_ROLL),))
    assert _message(f"'a':-{MAX_ROLL + 1}") == f"column 6: shift {MAX_ROLL + 1} is too large"


def test_a_scale_without_a_side_has_no_side():
    assert parse("'a'*2") == Chain(Text("a"), (Scale(2.0),))
    assert parse("'a'*2").steps[0].side is None


def test_a_resolver_value_that_is_no_tensor_is_refused():
    assert _eval_message("'a'", lambda t: {"clip_l": [[1.0, 2.0]]}) == (
        "column 1: text 'a' gave a bad tensor for 'clip_l'; expected [n, width]")


def test_operands_may_hold_exactly_the_total():
    # eight distinct operands of the working limit each make the total exactly; cropped, they sum fine
    count = MAX_RESOLVED_VECTORS // MAX_INTERMEDIATE_VECTORS
    parts = " + ".join(f"'t{i}':1" for i in range(count))
    out = evaluate(parts, lambda t: {"clip_l": torch.ones(MAX_INTERMEDIATE_VECTORS, 2)}, _one).vectors["clip_l"]
    assert out.tolist() == [[float(count)] * 2]


def test_evaluate_refuses_what_is_no_expression_node():
    with pytest.raises(ExpressionError) as info:
        evaluate(Scale(2.0), _one, _one)
    assert str(info.value) == "not an expression node: Scale"


def test_whole_operations_word_for_word_and_chained():
    assert _message("'a' = 'b'") == "column 7: expected * / or : after '=', found text 'b'"
    assert _message("'a' =,'b'") == "column 6: expected * / or : after '=', found ',' ('=' cannot be used with ',')"
    assert unparse(parse("'a' + 'b' =*2/4")) == "'a' + 'b' =*2/4"
