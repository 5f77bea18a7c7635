"""Malformed inputs give located diagnostics, never tracebacks.

Every case writes a malformed ``.pc`` file (or ``.pcir`` text) and checks, for the first diagnostic:

(a) its exact ``file:line:col``;
(b) a distinctive part of its message;
(c) that ``UserError.render()`` shows the offending source line with a caret under that column.

Unless a case says otherwise it also checks that the input produces exactly one diagnostic: a single
mistake must not be followed by follow-on errors (docs/language.md, "Errors"). The tests describe the
behaviour a user should get; they were not adjusted to the current output where that output is wrong.
"""
from __future__ import annotations

import json
import re
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pcc.frontend import load_file
from pcc.ir import (Circuit, Domain, InputBlock, ProdBlock, SumBlock, Tensor, UserError, Variable,
                    parse_text, to_text)
from pcc.ir import tensorfile

# --- helpers ---------------------------------------------------------------------------------------


def _src(text: str) -> str:
    """Dedent a source snippet and drop the first newline, so line 1 is the first written line."""
    return textwrap.dedent(text).lstrip("\n")


def write(tmp_path: Path, text: str, name: str = "main.pc") -> Path:
    """Write the (dedented) ``text`` to ``tmp_path/name`` and return the path."""
    path = tmp_path / name
    path.write_text(_src(text), encoding="utf-8")
    return path


def _matches(message: str, fragment: str | re.Pattern) -> bool:
    if isinstance(fragment, re.Pattern):
        return fragment.search(message) is not None
    return fragment in message


def check_rendered(err: UserError, file: str, line: int, col: int, source_line: str) -> None:
    """(c): the rendering has ``file:line:col: error:``, then the source line, then a caret under col."""
    rendered = err.render()
    lines = rendered.splitlines()
    head = f"{file}:{line}:{col}: error: "
    at = [i for i, ln in enumerate(lines) if ln.startswith(head)]
    assert at, f"no line starting with {head!r} in:\n{rendered}"
    i = at[0]
    assert i + 2 < len(lines), f"no source line and caret after the header in:\n{rendered}"
    shown, caret = lines[i + 1], lines[i + 2]
    assert caret.strip() == "^" and caret.startswith("    "), f"no caret line in:\n{rendered}"
    pos = caret.index("^")
    if len(source_line) <= 100:
        assert shown == "    " + source_line, f"source line not shown in:\n{rendered}"
        assert pos == 4 + col - 1, f"caret under column {pos - 3}, expected {col}:\n{rendered}"
    else:  # long lines are cut to a window around the column: the caret must sit on the same text
        want = source_line[col - 1 : col + 11]
        assert shown[pos : pos + len(want)] == want, f"caret not under column {col}:\n{rendered}"


def check(err: UserError, file: str | Path, line: int, col: int, *fragments: str | re.Pattern,
          source: str | None = None, count: int | None = 1) -> None:
    """Assert (a), (b), (c) for the first diagnostic of ``err``, then the number of diagnostics."""
    file = str(file)
    assert err.diagnostics, "UserError without diagnostics"
    d = err.diagnostics[0]
    assert (d.loc.file, d.loc.line, d.loc.col) == (file, line, col), \
        f"first diagnostic at {d.loc.file}:{d.loc.line}:{d.loc.col}, expected {file}:{line}:{col}\n{err.render()}"
    for f in fragments:
        assert _matches(d.message, f), f"message {d.message!r} lacks {f!r}\n{err.render()}"
    text = source if source is not None else Path(file).read_text(encoding="utf-8")
    src_lines = text.splitlines()
    check_rendered(err, file, line, col, src_lines[line - 1] if line <= len(src_lines) else "")
    if count is not None:
        assert len(err.diagnostics) == count, \
            f"expected {count} diagnostic(s), got {len(err.diagnostics)}:\n{err.render()}"


def pc_error(path: Path) -> UserError:
    """Load ``path`` and return the UserError it must raise (any other exception fails the test)."""
    with pytest.raises(UserError) as info:
        load_file(path)
    return info.value


def expect(path: Path, line: int, col: int, *fragments: str | re.Pattern, count: int | None = 1,
           file: Path | None = None) -> UserError:
    err = pc_error(path)
    check(err, file or path, line, col, *fragments, count=count)
    return err


H = "var X[2] : binary\n"  # line 1 of most cases


# --- syntax errors ---------------------------------------------------------------------------------


def test_syntax_missing_closing_paren(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1\nroot a\n")
    err = expect(p, 3, 1, "unexpected 'root'", "')'")
    # no '[' is open, so ']' must not be offered as a way to continue
    assert "']'" not in err.diagnostics[0].message, err.render()


def test_syntax_unexpected_token(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1))\nroot a\n")
    # after a complete statement a new statement is expected (no '{' is open)
    expect(p, 2, 32, "unexpected ')'", "expected a statement")


def test_syntax_bad_character(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, $n=1)\nroot a\n")
    expect(p, 2, 28, "unexpected character '$'")


def test_syntax_unexpected_end_of_file(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1)\nroot\n")
    expect(p, 3, 5, "unexpected end of file", "a name")


def test_syntax_unclosed_loop_at_end_of_file(tmp_path):
    p = write(tmp_path, "var X : binary\nfor i in 0..2 {\n    a[i] = input(X, bernoulli, n=1)\n")
    # the fix is a missing '}': the message must say so
    expect(p, 3, 36, "unexpected end of file", "'}'")


def test_syntax_string_where_number_expected_no_cascade(tmp_path):
    p = write(tmp_path, H + 'a = input(X[0], bernoulli, n="3")\nroot a\n')
    # the correct 'root a' on line 3 must not get an error of its own
    expect(p, 2, 30, 'unexpected string "3"')


def test_several_syntax_errors_reported_together(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=1))
        b = input(X[1] bernoulli, n=1)
        c = input(X[0], bernoulli, $n=1)
        root a
        """))
    err = pc_error(p)
    locs = [(d.loc.line, d.loc.col) for d in err.diagnostics]
    assert locs == [(2, 32), (3, 16), (4, 28)], err.render()
    assert "unexpected ')'" in err.diagnostics[0].message
    assert "unexpected 'bernoulli'" in err.diagnostics[1].message
    assert "unexpected character '$'" in err.diagnostics[2].message
    src = p.read_text().splitlines()
    for d in err.diagnostics:
        check_rendered(err, str(p), d.loc.line, d.loc.col, src[d.loc.line - 1])


# --- names -----------------------------------------------------------------------------------------


def test_undefined_node(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1)\np = prod(a, b)\nroot p\n")
    expect(p, 3, 13, "undefined node 'b'")


def test_undefined_variable(tmp_path):
    p = write(tmp_path, H + "a = input(Y, bernoulli, n=1)\nroot a\n")
    expect(p, 2, 11, "undefined variable 'Y'")


def test_variable_used_as_child(tmp_path):
    p = write(tmp_path, H + "p = prod(X[0], X[1])\nroot p\n")
    err = expect(p, 2, 10, "undefined node 'X[0]'", "it is a variable", count=2)  # both children are wrong
    assert "undefined node 'X[1]'" in err.diagnostics[1].message and err.diagnostics[1].loc.col == 16


def test_variable_index_out_of_range(tmp_path):
    p = write(tmp_path, H + "a = input(X[2], bernoulli, n=1)\nroot a\n")
    # X is declared (as X[0..1]): the message must say the index is out of range, not that X is undefined
    expect(p, 2, 11, "X", re.compile(r"out of (its )?range|outside|out of bounds|range"))


def test_duplicate_node(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1)\na = input(X[1], bernoulli, n=1)\nroot a\n")
    # the message points back to the first definition (line 2)
    expect(p, 3, 1, "node 'a' is already defined", re.compile(r"line 2\b|main\.pc:2\b"))


def test_duplicate_variable(tmp_path):
    p = write(tmp_path, "var Y : binary\nvar Y : real\na = input(Y, bernoulli, n=1)\nroot a\n")
    expect(p, 2, 5, "variable 'Y' is already declared")


def test_duplicate_variable_array_then_scalar(tmp_path):
    # "no name may be defined twice in the same namespace": X is already the name of an array
    p = write(tmp_path, H + "var X : binary\na = input(X[0], bernoulli, n=1)\nroot a\n")
    expect(p, 2, 5, "'X'", "already declared")


def test_duplicate_constant(tmp_path):
    p = write(tmp_path, _src("""
        let K = 2
        let K = 3
        var X : binary
        a = input(X, bernoulli, n=K)
        s = sum(a, n=1)
        root s
        """))
    expect(p, 2, 1, "constant 'K' is already defined")


def test_undefined_constant(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=K)\nroot a\n")
    expect(p, 2, 30, "'K' is not defined")


def test_node_used_as_number(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1)\nb = input(X[1], bernoulli, n=a)\nroot a\n")
    expect(p, 3, 30, "'a' is a node", "expected a number")


# --- structure: scopes, domains, shapes ------------------------------------------------------------


def test_product_children_overlap_in_scope(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=2)
        b = input(X[0], bernoulli, n=2)
        p = prod(a, b)
        s = sum(p, n=1)
        root s
        """))
    expect(p, 4, 13, "disjoint scopes", "'b'", "{X[0]}")


def test_sum_children_differ_in_scope(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=2)
        b = input(X[1], bernoulli, n=2)
        s = sum(a, b, n=1)
        root s
        """))
    expect(p, 4, 12, "same scope", "'b' covers {X[1]}")


def test_bernoulli_on_categorical_variable(tmp_path):
    p = write(tmp_path, "var C : categorical(3)\na = input(C, bernoulli, n=1)\nroot a\n")
    expect(p, 2, 14, "bernoulli input needs a binary variable", "categorical(3)")


def test_gaussian_on_binary_variable(tmp_path):
    p = write(tmp_path, "var B : binary\na = input(B, gaussian, n=1)\nroot a\n")
    expect(p, 2, 14, "gaussian input needs a real variable", "'B' is binary")


def test_categorical_on_real_variable(tmp_path):
    p = write(tmp_path, "var R : real\na = input(R, categorical, n=1)\nroot a\n")
    expect(p, 2, 14, "categorical input needs", "'R' is real")


def test_inline_params_wrong_shape(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2, params=[0.5, 0.5, 0.5])\ns = sum(a, n=1)\nroot s\n")
    expect(p, 2, 33, "params has shape [3], expected [2]")


def test_inline_params_ragged(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2)\ns = sum(a, n=1, params=[[0.5], [0.2, 0.3]])\nroot s\n")
    expect(p, 3, 24, "rectangular")


def test_product_table_wrong_width(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=2)
        b = input(X[1], bernoulli, n=2)
        p = prod(a, b, table=[[0, 0, 0], [1, 1, 1]])
        s = sum(p, n=1)
        root s
        """))
    expect(p, 4, 16, "rows of 2 integers", "[2, 3]")


def test_aligned_product_children_of_different_sizes(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=2)
        b = input(X[1], bernoulli, n=3)
        p = prod(a, b)
        s = sum(p, n=1)
        root s
        """))
    expect(p, 4, 5, "equal size", "a: 2, b: 3")


def test_product_table_index_out_of_range(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=2)
        b = input(X[1], bernoulli, n=2)
        p = prod(a, b, table=[[0, 0], [1, 2]])
        s = sum(p, n=1)
        root s
        """))
    expect(p, 4, 16, "table column 1", "'b' (size 2)")


def test_sum_weights_not_normalised(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2)\ns = sum(a, n=1, params=[[0.5, 0.6]])\nroot s\n")
    expect(p, 3, 17, "sum to 1.1", "not normalised")


def test_sum_weights_negative(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2)\ns = sum(a, n=1, params=[[1.5, -0.5]])\nroot s\n")
    expect(p, 3, 17, "non-negative")


def test_bernoulli_probability_negative(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2, params=[0.5, -0.1])\ns = sum(a, n=1)\nroot s\n")
    expect(p, 2, 33, "probabilities must lie in [0, 1]")


def test_categorical_row_not_normalised(tmp_path):
    p = write(tmp_path, "var C : categorical(3)\na = input(C, categorical, n=1, params=[[0.2, 0.2, 0.2]])\nroot a\n")
    expect(p, 2, 32, "node 0 sum to 0.6")


# --- calls -----------------------------------------------------------------------------------------


def test_unknown_keyword_argument(tmp_path):
    p = write(tmp_path, "var X : binary\na = input(X, bernoulli, n=1, size=3)\nroot a\n")
    expect(p, 2, 30, "unknown argument 'size'", "block, n, params, tie")


def test_argument_given_twice(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1, n=2)\nroot a\n")
    expect(p, 2, 33, "argument 'n' given twice")


def test_positional_after_keyword(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], n=1, bernoulli)\nroot a\n")
    expect(p, 2, 22, "positional arguments must come before keyword arguments")


def test_unknown_distribution(tmp_path):
    p = write(tmp_path, "var X : binary\na = input(X, poisson, n=1)\nroot a\n")
    expect(p, 2, 14, "unknown distribution 'poisson'")


def test_unknown_node_kind(tmp_path):
    p = write(tmp_path, "var X : binary\na = mix(X, n=1)\nroot a\n")
    expect(p, 2, 5, "unknown node kind 'mix'")


def test_sum_without_children(tmp_path):
    p = write(tmp_path, H + "s = sum(n=1)\nroot s\n")
    expect(p, 2, 5, "at least one child")


def test_empty_spread(tmp_path):
    p = write(tmp_path, H + "a[0] = input(X[0], bernoulli, n=1)\np = prod(a[1..1])\nroot p\n")
    expect(p, 3, 10, "empty range a[1..1]")


def test_tie_to_node_of_different_shape(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2)\nb = input(X[1], bernoulli, n=3, tie=a)\ns = sum(a, n=1)\nroot s\n")
    expect(p, 3, 37, "cannot tie to 'a'", "[2]", "[3]")


def test_tie_to_product(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=1)
        b = input(X[1], bernoulli, n=1)
        p = prod(a, b)
        c = input(X[1], bernoulli, n=1, tie=p)
        root p
        """))
    expect(p, 5, 37, "cannot tie to 'p'", "product")


def test_params_and_tie_together(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1)\nb = input(X[0], bernoulli, n=1, params=[0.5], tie=a)\nroot a\n")
    expect(p, 3, 47, "either params= or tie=")


# --- arithmetic and sizes --------------------------------------------------------------------------


def test_division_by_zero_in_index(tmp_path):
    p = write(tmp_path, H + "let Z = 0\na = input(X[1 / Z], bernoulli, n=1)\nroot a\n")
    expect(p, 3, 13, "division by zero")


def test_modulo_by_zero(tmp_path):
    p = write(tmp_path, H + "a = input(X[1 % 0], bernoulli, n=1)\nroot a\n")
    expect(p, 2, 13, "division by zero")


def test_non_integer_size(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2.5)\nt = sum(a, n=1)\nroot t\n")
    expect(p, 2, 30, "n must be an integer", "2.5")


def test_size_zero(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=0)\nroot a\n")
    expect(p, 2, 30, "n must be at least 1")


def test_non_integer_index(tmp_path):
    p = write(tmp_path, H + "a = input(X[0.0], bernoulli, n=1)\nroot a\n")
    expect(p, 2, 13, "an index must be an integer")


def test_negative_seed(tmp_path):
    p = write(tmp_path, H + "seed -1\na = input(X[0], bernoulli, n=1)\nroot a\n")
    expect(p, 2, 6, "the seed must be at least 0")


@pytest.mark.parametrize("decl, col, fragment", [
    ("var X[2.5] : binary", 7, "a variable dimension must be an integer"),
    ("var X[0] : binary", 7, "a variable dimension must be at least 1"),
    ("var X : categorical(0)", 21, "the number of categories must be at least 1"),
    ("var X : categorical", 9, "categorical(K)"),
    ("var X : binary(3)", 9, "takes no argument"),
], ids=["non-integer-dim", "zero-dim", "zero-categories", "categorical-without-K", "binary-with-arg"])
def test_bad_variable_declaration_no_follow_on(tmp_path, decl, col, fragment):
    # the use of X on line 2 must not add an "undefined variable" error to the one real mistake
    use = "X[0]" if "[" in decl else "X"
    p = write(tmp_path, f"{decl}\na = input({use}, categorical, n=2)\ns = sum(a, n=1)\nroot s\n")
    expect(p, 1, col, fragment)


# --- block-sparse sums and block hints -------------------------------------------------------------


def test_tiles_out_of_range(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=4)
        s = sum(a, n=4, block=2, tiles=[[0, 0], [2, 1]])
        t = sum(s, n=1)
        root t
        """))
    expect(p, 3, 26, "outside the 2x2 tile grid")


def test_tiles_listed_twice(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=4)
        s = sum(a, n=4, block=2, tiles=[[0, 0], [0, 0]])
        t = sum(s, n=1)
        root t
        """))
    expect(p, 3, 26, "lists a tile twice")


def test_tiles_block_not_dividing(tmp_path):
    p = write(tmp_path, H + _src("""
        a = input(X[0], bernoulli, n=4)
        s = sum(a, n=3, block=2, tiles=[[0, 0]])
        t = sum(s, n=1)
        root t
        """))
    expect(p, 3, 26, "block=2 must divide n=3")


def test_block_not_dividing_n(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=4)\ns = sum(a, n=3, block=2)\nt = sum(s, n=1)\nroot t\n")
    expect(p, 3, 17, "block=2 must divide the number of nodes n=3")


# --- tensor files ----------------------------------------------------------------------------------

TENSOR_PC = H + 'tensors "w.safetensors"\na = input(X[0], bernoulli, n=2, params=tensor("w"))\ns = sum(a, n=1)\nroot s\n'


def _valid_tensor_bytes(tmp_path: Path) -> bytes:
    good = tmp_path / "good.safetensors"
    tensorfile.save(good, {"w": np.array([0.25, 0.75])})
    return good.read_bytes()


def _raw_tensor_file(header: dict, data: bytes) -> bytes:
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def test_tensor_file_valid_control(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(_valid_tensor_bytes(tmp_path))
    c = load_file(write(tmp_path, TENSOR_PC))
    assert np.allclose(c.tensors["a.p"].data, [0.25, 0.75])


def test_missing_tensor_file(tmp_path):
    p = write(tmp_path, H + 'tensors "nope.safetensors"\na = input(X[0], bernoulli, n=2, params=tensor("w"))\n'
              's = sum(a, n=1)\nroot s\n')
    # one error, at the file name; the use of tensor("w") must not add "not in the tensors file"
    expect(p, 2, 9, "nope.safetensors", re.compile(r"(?i)no such file|not found|cannot read"))


@pytest.mark.parametrize("kind", ["garbage", "shorter-than-8-bytes", "truncated-data", "truncated-header",
                                  "header-not-json", "shape-overflows", "shape-of-booleans"])
def test_malformed_tensor_file(tmp_path, kind):
    valid = _valid_tensor_bytes(tmp_path)
    content = {
        "garbage": b"\x00this is not a safetensors file, just garbage bytes\xff\xfe" * 4,
        "shorter-than-8-bytes": b"abc",
        "truncated-data": valid[:-4],
        "truncated-header": valid[:20],
        "header-not-json": struct.pack("<Q", 8) + b"{notjson",
        # 2**32 * 2**32 elements: the element count overflows int64 (to 0), matching the empty data
        "shape-overflows": _raw_tensor_file({"w": {"dtype": "F64", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, b""),
        # JSON booleans are not dimensions
        "shape-of-booleans": _raw_tensor_file({"w": {"dtype": "F64", "shape": [True], "data_offsets": [0, 8]}}, b"\0" * 8),
    }[kind]
    (tmp_path / "w.safetensors").write_bytes(content)
    # one error at the 'tensors' statement (the file name), no traceback and no follow-on
    # "tensor 'w' is not in the tensors file" for the use on line 3
    expect(write(tmp_path, TENSOR_PC), 2, 9, "malformed tensor file", "w.safetensors")


def test_tensor_name_absent_from_file(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(_valid_tensor_bytes(tmp_path))
    p = write(tmp_path, TENSOR_PC.replace('tensor("w")', 'tensor("v")'))
    expect(p, 3, 40, "tensor 'v' is not in the tensors file")


def test_tensor_from_file_wrong_shape(tmp_path):
    tensorfile.save(tmp_path / "w.safetensors", {"w": np.array([[0.25, 0.75]])})
    expect(write(tmp_path, TENSOR_PC), 3, 33, "params has shape [1, 2], expected [2]")


def test_tensor_without_tensors_statement(tmp_path):
    p = write(tmp_path, H + 'a = input(X[0], bernoulli, n=2, params=tensor("w"))\ns = sum(a, n=1)\nroot s\n')
    expect(p, 2, 40, "needs a tensors file")


# --- includes --------------------------------------------------------------------------------------


def test_include_cycle(tmp_path):
    write(tmp_path, "# part b\ninclude \"a.pc\"\n", name="b.pc")
    a = write(tmp_path, 'var X : binary\ninclude "b.pc"\nx = input(X, bernoulli, n=1)\nroot x\n', name="a.pc")
    expect(a, 2, 9, "include cycle: a.pc -> b.pc -> a.pc", file=tmp_path / "b.pc")


def test_include_self(tmp_path):
    p = write(tmp_path, 'var X : binary\ninclude "main.pc"\nx = input(X, bernoulli, n=1)\nroot x\n')
    expect(p, 2, 9, "include cycle: main.pc -> main.pc")


def test_missing_include(tmp_path):
    p = write(tmp_path, 'var X : binary\ninclude "nothere.pc"\na = input(X, bernoulli, n=1)\nroot a\n')
    expect(p, 2, 9, "included file not found", "nothere.pc")


def test_error_located_in_included_file(tmp_path):
    write(tmp_path, "# a part\n\na = input(X[0], gaussian, n=1)\n", name="part.pc")
    p = write(tmp_path, H + 'include "part.pc"\nroot a\n')
    expect(p, 3, 17, "gaussian input needs a real variable", file=tmp_path / "part.pc")


def test_syntax_error_located_in_included_file(tmp_path):
    write(tmp_path, "a = input(X[0], bernoulli n=1)\n", name="part.pc")
    p = write(tmp_path, H + 'include "part.pc"\nroot a\n')
    expect(p, 1, 27, "unexpected 'n'", file=tmp_path / "part.pc")


# --- whole-file problems ---------------------------------------------------------------------------


def test_empty_file(tmp_path):
    p = tmp_path / "main.pc"
    p.write_text("")
    err = pc_error(p)
    d = err.diagnostics[0]
    assert (d.loc.file, d.loc.line, d.loc.col) == (str(p), 1, 1)
    assert "empty file" in d.message
    assert err.render().splitlines()[0] == f"{p}:1:1: error: {d.message}"
    assert len(err.diagnostics) == 1


def test_whitespace_only_file(tmp_path):
    p = tmp_path / "main.pc"
    p.write_text("\n   \n\n")
    err = pc_error(p)
    check(err, p, 1, 1, "empty file")


def test_no_root(tmp_path):
    p = write(tmp_path, "var X : binary\na = input(X, bernoulli, n=1)\n")
    expect(p, 2, 1, "no root", "root NAME")


def test_two_roots(tmp_path):
    p = write(tmp_path, "var X : binary\na = input(X, bernoulli, n=1)\nroot a\nroot a\n")
    expect(p, 4, 1, "one root", "line 3")


def test_root_with_more_than_one_node(tmp_path):
    p = write(tmp_path, "var X : binary\na = input(X, bernoulli, n=3)\nroot a\n")
    expect(p, 3, 6, "single node", "n=3")


def test_root_undefined(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=1)\nroot zz\n")
    expect(p, 3, 6, "undefined node 'zz'")


# --- several errors, loops, poisoning --------------------------------------------------------------


def test_several_semantic_errors_reported_together_sorted(tmp_path):
    p = write(tmp_path, H + _src("""
        b = input(X[1], poisson, n=1)
        a = input(Y, bernoulli, n=1)
        d = input(X[0], bernoulli, n=2, params=[0.5])
        e = input(X[0], bernoulli, n=1, size=2)
        root q
        """))
    err = pc_error(p)
    got = [(d.loc.line, d.loc.col) for d in err.diagnostics]
    assert got == [(2, 17), (3, 11), (4, 33), (5, 33), (6, 6)], err.render()
    assert got == sorted(got)
    msgs = [d.message for d in err.diagnostics]
    for m, frag in zip(msgs, ["unknown distribution 'poisson'", "undefined variable 'Y'", "params has shape [1]",
                              "unknown argument 'size'", "undefined node 'q'"]):
        assert frag in m, err.render()
    src = p.read_text().splitlines()
    for d in err.diagnostics:
        check_rendered(err, str(p), d.loc.line, d.loc.col, src[d.loc.line - 1])


def test_errors_sorted_by_position_not_discovery_order(tmp_path):
    # in each of these statements the keyword argument is checked before the variable: the report must
    # still list the errors by position
    p = write(tmp_path, H + _src("""
        a = input(Y, bernoulli, n=1, size=3)
        b = input(Z, bernoulli, n=1, size=3)
        root a
        """))
    err = pc_error(p)
    assert [(d.loc.line, d.loc.col) for d in err.diagnostics] == [(2, 11), (2, 30), (3, 11), (3, 30)], err.render()
    assert "undefined variable 'Y'" in err.diagnostics[0].message
    assert "unknown argument 'size'" in err.diagnostics[1].message


def test_error_inside_loop_reported_once(tmp_path):
    p = write(tmp_path, _src("""
        var X[3] : binary
        for i in 0..3 {
            a[i] = input(Y[i], bernoulli, n=1)
        }
        root a[0]
        """))
    expect(p, 3, 18, "undefined variable 'Y[0]'")


def test_error_inside_nested_loop_reported_once(tmp_path):
    p = write(tmp_path, _src("""
        var X[3] : binary
        for i in 0..3 { for j in 0..2 {
            a[i, j] = input(X[i], bernoulli, n=1, size=2)
        } }
        root a[0, 0]
        """))
    expect(p, 3, 43, "unknown argument 'size'")


def test_duplicate_node_inside_loop_reported_once(tmp_path):
    # iterations 1 and 2 both redefine 'a': one diagnostic, not one per iteration
    p = write(tmp_path, "var X : binary\nfor i in 0..3 {\n    a = input(X, bernoulli, n=1)\n}\nroot a\n")
    expect(p, 3, 5, "node 'a' is already defined")


def test_loop_variable_shadowing_constant_no_follow_on(tmp_path):
    p = write(tmp_path, "let i = 2\nvar X : binary\nfor i in 0..2 {\n    a = input(X, bernoulli, n=1)\n}\nroot a\n")
    # one mistake (the loop variable name); 'root a' must not add "undefined node 'a'"
    expect(p, 3, 1, "loop variable 'i' shadows a constant")


def test_invalid_node_produces_no_follow_on_errors(tmp_path):
    p = write(tmp_path, H + "a = input(X[0], bernoulli, n=2)\np = prod(a, a)\ns = sum(p, n=1)\nroot s\n")
    expect(p, 3, 13, "disjoint scopes")


def test_undefined_child_reported_next_to_invalid_sibling(tmp_path):
    # 'a' is invalid (reported on line 2); 'zz' is a second, independent mistake and must be reported too
    p = write(tmp_path, H + "a = input(X[0], gaussian, n=1)\np = prod(a, zz)\nroot p\n")
    err = expect(p, 2, 17, "gaussian input needs a real variable", count=None)
    assert [(d.loc.line, d.loc.col) for d in err.diagnostics] == [(2, 17), (3, 13)], err.render()
    assert "undefined node 'zz'" in err.diagnostics[1].message


# --- .pcir -----------------------------------------------------------------------------------------


def _circuit() -> Circuit:
    """Two categorical inputs of 40 nodes (120-element tensors: printed as base64 resources)."""
    rng = np.random.default_rng(0)
    tensors = {
        "a.p": Tensor("f64", (40, 3), data=rng.dirichlet(np.ones(3), size=40)),
        "b.p": Tensor("f64", (40, 3), data=rng.dirichlet(np.ones(3), size=40)),
        "s.w": Tensor("f64", (1, 40), data=rng.dirichlet(np.ones(40), size=1)),
    }
    variables = [Variable("X0", Domain("categorical", 3)), Variable("X1", Domain("categorical", 3))]
    blocks = [InputBlock(0, "categorical", 40, "a.p", name="a"), InputBlock(1, "categorical", 40, "b.p", name="b"),
              ProdBlock((0, 1), 40, name="p"), SumBlock((2,), 1, "s.w", name="s")]
    return Circuit(variables, blocks, tensors, 3)


@pytest.fixture
def pcir() -> str:
    text = to_text(_circuit())
    assert "resources {" in text and "resource(sha256=" in text
    parse_text(text, "t.pcir")  # the untampered text is valid
    return text


def _line(text: str, needle: str) -> int:
    """1-based number of the first line containing ``needle``."""
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def _col(text: str, line: int, needle: str) -> int:
    return text.splitlines()[line - 1].index(needle) + 1


def ir_error(text: str) -> UserError:
    with pytest.raises(UserError) as info:
        parse_text(text, "t.pcir")
    return info.value


def expect_ir(text: str, line: int, col: int, *fragments, count: int | None = 1) -> UserError:
    err = ir_error(text)
    check(err, "t.pcir", line, col, *fragments, source=text, count=count)
    return err


def test_pcir_missing_header(pcir):
    body = "\n".join(ln for ln in pcir.splitlines() if not ln.startswith(("pcir", "#"))) + "\n"
    # one diagnostic at the first line, not one "expected 'pcir'" per line of the file
    expect_ir(body, 1, 1, "pcir")


def test_pcir_unsupported_version(pcir):
    expect_ir(pcir.replace("pcir 1", "pcir 7", 1), 1, 6, "unsupported .pcir version")


def test_pcir_unknown_block_kind(pcir):
    text = pcir.replace("prod(%0, %1)", "mul(%0, %1)")
    line = _line(text, "mul(")
    # one error; blocks using %2 must not be told that %2 "is used before it is defined"
    expect_ir(text, line, _col(text, line, "mul"), "unknown block kind 'mul'")


def test_pcir_use_before_definition(pcir):
    text = pcir.replace("prod(%0, %1)", "prod(%0, %9)")
    line = _line(text, "%9")
    expect_ir(text, line, _col(text, line, "%9"), "block %9 is used before it is defined")


def test_pcir_undefined_tensor(pcir):
    text = pcir.replace("params=@s.w", "params=@nope")
    line = _line(text, "@nope")
    expect_ir(text, line, _col(text, line, "@nope"), "undefined tensor @nope")


def test_pcir_checksum_mismatch_tampered_data(pcir):
    line = _line(pcir, "@a.p = \"")
    lines = pcir.splitlines(keepends=True)
    i = lines[line - 1].index('"') + 5  # change one base64 character: still valid base64, other bytes
    ch = lines[line - 1][i]
    lines[line - 1] = lines[line - 1][:i] + ("A" if ch != "A" else "B") + lines[line - 1][i + 1:]
    text = "".join(lines)
    decl = _line(text, "tensor @a.p")
    expect_ir(text, decl, 1, "@a.p", "sha256")


def test_pcir_checksum_mismatch_tampered_hash(pcir):
    decl = _line(pcir, "tensor @b.p")
    old = pcir.splitlines()[decl - 1]
    sha = re.search(r'sha256="([0-9a-f]+)"', old).group(1)
    text = pcir.replace(sha, ("0" if sha[0] != "0" else "1") + sha[1:])
    expect_ir(text, decl, 1, "@b.p", "sha256")


def test_pcir_resource_not_base64(pcir):
    line = _line(pcir, "@a.p = \"")
    text = pcir.replace('@a.p = "', '@a.p = "!!', 1)
    # the caret belongs under the offending string, not under the indentation
    expect_ir(text, line, _col(text, line, '"'), "@a.p", "base64")


def test_pcir_resource_wrong_length(pcir):
    line = _line(pcir, "@a.p = \"")
    start = pcir.splitlines()[line - 1].index('"') + 1
    full = pcir.splitlines()[line - 1]
    text = pcir.replace(full, full[:start] + full[start + 8:])  # drop 8 base64 chars = 6 bytes
    expect_ir(text, line, _col(text, line, '"'), "@a.p", "bytes, expected 960")


def test_pcir_truncated_in_resources(pcir):
    text = pcir[: pcir.index("resources {") + len("resources {\n")]
    err = ir_error(text)
    decl = _line(text, "tensor @a.p")
    check(err, "t.pcir", decl, 1, "@a.p", "not present", source=text, count=None)
    assert any("unterminated resources section" in d.message for d in err.diagnostics), err.render()


def test_pcir_unreferenced_resource(pcir):
    text = pcir.replace("resources {\n", 'resources {\n  @zz = "AAAA"\n')
    line = _line(text, "@zz")
    expect_ir(text, line, 3, "resource @zz is not referenced")


def test_pcir_literal_shape_mismatch():
    text = ("pcir 1\nvar X : binary\ntensor @w : f64[2] = [0.5, 0.25, 0.25]\ntensor @v : f64[1, 2] = [[0.5, 0.5]]\n"
            "%0 = input X bernoulli n=2 params=@w\n%1 = sum(%0) n=1 params=@v\nroot %1\n")
    # one error; %0 and %1 must not be reported as using an undefined tensor / an undefined block
    expect_ir(text, 3, 22, "does not match the declared shape [2]")


@pytest.mark.parametrize("shape", ["4,", "4,,2", ",4"])
def test_pcir_malformed_packed_shape(shape):
    """A shape written without spaces lexes with its type as one name (``f64[4,8]``); a malformed one (found by
    tests/test_fuzz.py: ``f64[4,]``) is a diagnostic at its bracket, not a traceback."""
    text = (f"pcir 1\nvar X : binary\ntensor @w : f64[{shape}] = [0.5, 0.5]\n"
            "%0 = input X bernoulli n=2 params=@w\nroot %0\n")
    expect_ir(text, 3, 16, "malformed tensor shape", count=None)


def test_pcir_unexpected_character():
    text = "pcir 1\nvar X : binary ;\ntensor @w : f64[1] = [0.5]\n%0 = input X bernoulli n=1 params=@w\nroot %0\n"
    expect_ir(text, 2, 16, "unexpected character ';'")


def test_pcir_unknown_option(pcir):
    text = pcir.replace('n=40 name="p"', 'n=40 size=3 name="p"')
    line = _line(text, "size=3")
    expect_ir(text, line, _col(text, line, "size"), "unknown option 'size'")
