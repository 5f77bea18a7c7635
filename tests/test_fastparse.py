"""The hand-written fast parser builds exactly Lark's AST, or gives up and lets Lark parse.

Contract under test (frontend/fastparse.py): ``try_parse(text)`` is either None or equal — every node,
every source location — to what Lark's path (``parse_with_lark``) returns; it never accepts a program
Lark rejects. Checked on the examples, docs/language.md's snippets, random programs drawn from the
grammar (names spelled like keywords and domain words included), and mutations of them.
"""
from __future__ import annotations

import re

import pytest
from conftest import EXAMPLES, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from pcc.frontend import parse_source
from pcc.frontend.fastparse import try_parse
from pcc.frontend.parse import parse_with_lark
from pcc.ir import UserError

DOC_SNIPPETS = re.findall(r"```pc[^\n]*\n(.*?)```", (ROOT / "docs" / "language.md").read_text(), re.S)
SOURCES = [p.read_text() for p in EXAMPLES] + DOC_SNIPPETS
PLAIN_NAMES = ["a", "b_1", "X", "K", "x9", "n", "sum", "prod", "input", "categorical", "real", "binary", "rooty",
               "tensorsx"]
NAMES = PLAIN_NAMES * 8 + ["tensor", "in", "root"]  # keyword-spelled names now and then (Lark's cases)


def lark_or_error(text: str):
    try:
        return parse_with_lark(text, "f.pc")
    except UserError:
        return "error"


def assert_agrees(text: str) -> None:
    fast = try_parse(text, "f.pc")
    if fast is not None:
        assert fast == lark_or_error(text), text


@pytest.mark.parametrize("text", SOURCES, ids=range(len(SOURCES)))
def test_examples_and_docs_take_the_fast_path_with_lark_s_ast(text: str) -> None:
    fast = try_parse(text, "f.pc")
    assert fast is not None and fast == parse_with_lark(text, "f.pc")


def test_locations_follow_lark_s_containers() -> None:
    """A binary operation starts at its left operand's '(' (Lark's container), a unary one at its '-'."""
    text = "let a = (1 + 2) * 3\nlet b =  -(a) - 1 # c\n\r\nlet c = 1"
    fast = try_parse(text, "f.pc")
    assert fast == parse_with_lark(text, "f.pc")
    assert (fast.stmts[0].value.loc.col, fast.stmts[0].value.left.loc.col) == (9, 10)
    assert fast.stmts[1].value.loc.col == 10


@pytest.mark.parametrize("text", ["tensor = sum(a, n=1)", "var in : binary", "var X : binaryx = sum(a, n=1)",
                                  "x = sum(a, n=1)\nroot é", "x = sum(a, n=1"])
def test_gives_up_where_lark_reads_otherwise_or_fails(text: str) -> None:
    """Keyword-spelled names, run-on domain words, stray characters and errors go to Lark."""
    assert try_parse(text, "f.pc") is None


def test_parse_source_still_reports_lark_s_diagnostics() -> None:
    with pytest.raises(UserError) as e:
        parse_source("var X : binary\nx = sum(a, n=1\nroot x\n", "f.pc")
    assert e.value.diagnostics[0].render().startswith("f.pc:3:1: error: unexpected 'root'")


def test_keyword_named_node_is_parsed_by_lark() -> None:
    program = parse_source("tensor = sum(a, n=1)\n", "f.pc")
    assert program.stmts[0].target.name == "tensor"


# --- random programs from the grammar ------------------------------------------------------------

SPACE = st.sampled_from([" ", "", "  ", "\n", " # c\n", "\t", " // x\n"])
NUMBER = st.sampled_from(["0", "7", "42", "007", "1.5", "2e3", "3.0E-1"])


def _expr(leaf):
    return st.recursive(leaf, lambda e: st.one_of(
        st.tuples(st.just("-"), SPACE, e).map("".join),
        st.tuples(st.just("("), e, SPACE, st.just(")")).map("".join),
        st.tuples(e, SPACE, st.sampled_from("+-*/%"), SPACE, e).map("".join)), max_leaves=6)


NAME = st.sampled_from(NAMES)
PLAIN_REF = st.one_of(NAME, st.tuples(NAME, st.just("["), NUMBER, st.just("]")).map("".join))
EXPR = _expr(st.one_of(NUMBER, PLAIN_REF))
INDICES = st.lists(EXPR, min_size=1, max_size=2).map(",".join)
REF = st.one_of(NAME, st.tuples(NAME, INDICES).map(lambda t: f"{t[0]}[{t[1]}]"))
VALUE = st.recursive(st.one_of(EXPR, st.just('tensor( "x.y")')),
                     lambda v: st.lists(v, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"), max_leaves=5)
ARG = st.one_of(REF, st.tuples(NAME, SPACE, VALUE).map(lambda t: f"{t[0]}{t[1]}={t[2]}"),
                st.tuples(NAME, EXPR, EXPR).map(lambda t: f"{t[0]}[{t[1]} .. {t[2]}]"))
DOMAIN = st.one_of(st.sampled_from(["binary", "real", "categorical", "binaryx"]),
                   EXPR.map(lambda e: f"categorical({e})"))
SIMPLE = st.one_of(
    st.just('include "a.pc"'), st.just('tensors "t.safetensors"'), EXPR.map(lambda e: f"seed {e}"),
    st.tuples(NAME, EXPR).map(lambda t: f"let {t[0]} = {t[1]}"),
    st.tuples(NAME, st.lists(EXPR, max_size=3), DOMAIN).map(
        lambda t: f"var {t[0]}{'[' + ', '.join(t[1]) + ']' if t[1] else ''} : {t[2]}"),
    REF.map(lambda r: f"root {r}"),
    st.tuples(REF, SPACE, NAME, st.lists(ARG, max_size=4)).map(lambda t: f"{t[0]}{t[1]}= {t[2]}({', '.join(t[3])})"))
STMT = st.recursive(SIMPLE, lambda s: st.tuples(NAME, EXPR, EXPR, st.lists(s, max_size=3)).map(
    lambda t: f"for {t[0]} in {t[1]}..{t[2]} {{\n" + "\n".join(t[3]) + "\n}"), max_leaves=4)
PROGRAM = st.lists(st.tuples(SPACE, STMT).map("".join), min_size=1, max_size=5).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(PROGRAM)
def test_random_programs_agree(text: str) -> None:
    assert_agrees(text)


INSERTS = ["(", ")", "[", "]", "{", "}", ",", "=", "..", ":", "-", "*", "0", "1.5", "in", "root", "tensor", "\n", "#",
           "é"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SOURCES), st.data())
def test_mutated_programs_agree(text: str, data) -> None:
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:pos] + text[pos + data.draw(st.integers(1, 4)):]
        else:
            text = text[:pos] + data.draw(st.sampled_from(INSERTS)) + text[pos:]
    assert_agrees(text)
