"""Exact behaviour of the merge-expression tokenizer and parser's remaining messages: unclosed quotes
and backticks (named by kind, at the opening column), doubled quotes at the very end, empty
backticks, names starting with '_' or holding '.' and '-' only before a name character, the length
limit at its edge, stray ')', empty input, the nesting limit and a misplaced number."""

from __future__ import annotations

import pytest
import torch

from tests.core.refusals import refused
from tokensmith.errors import ExpressionError, TokenSmithError
from tokensmith.expression import MAX_DEPTH, MAX_LENGTH, evaluate, parse


@pytest.mark.parametrize("text, message", [
    ("`abc", "column 1: name opened with ` here is never closed; add a closing `"),
    ("'a' + \"b", "column 7: text opened with \" here is never closed; add a closing \""),
    ("'a' + 'b", "column 7: text opened with ' here is never closed; add a closing '"),
    ("'a''", "column 1: text opened with ' here is never closed; add a closing '"),
    ("'a' + ` `", "column 7: empty name in backticks; write an embedding name between them"),
    ("", "column 1: empty expression; write e.g. 'cat' + 'dog'"),
    ("   ", "column 1: empty expression; write e.g. 'cat' + 'dog'"),
    ("'a')", "column 4: unexpected ')' without a matching '('; expected + - = or a postfix * / : , here"),
    ("'a' + 2", "column 7: expected text in quotes, an embedding name or '(', found number 2 (a number can only "
                "follow * / : or ',')"),
])
def test_parse_errors_word_for_word(text, message):
    with refused(message, ExpressionError):
        parse(text)


def test_a_doubled_quote_at_the_end_is_a_literal_quote():
    assert parse("'a'''") == parse('"a\'"')


def test_names_may_start_with_an_underscore():
    assert parse("_x + y") == parse("`_x` + `y`")


def test_a_dot_or_dash_belongs_to_a_name_only_before_a_name_character():
    assert parse("a- b") == parse("a - b")
    assert parse("a.b-c") == parse("`a.b-c`")


def test_the_length_limit_at_its_edge():
    assert parse("a" + " " * (MAX_LENGTH - 1)) == parse("a")
    with refused(f"expression is {MAX_LENGTH + 1} characters long; the limit is {MAX_LENGTH}", ExpressionError):
        parse("a" + " " * MAX_LENGTH)


def test_the_nesting_limit_at_its_edge_names_the_column_of_the_parenthesis_too_many():
    deepest = "(" * MAX_DEPTH + "'a'" + ")" * MAX_DEPTH
    assert parse(deepest) == parse("'a'")
    with refused(f"column {MAX_DEPTH + 1}: parentheses nested deeper than {MAX_DEPTH}; simplify the expression",
                 ExpressionError):
        parse("(" + deepest + ")")


def test_a_name_in_backticks_is_reported_at_its_column():
    def missing(name):
        raise TokenSmithError("no such file")

    with refused("column 7: embedding 'my dog': no such file", ExpressionError):
        evaluate("'a' + `my dog`", lambda text: {"clip_l": torch.zeros(1, 4)}, missing)
