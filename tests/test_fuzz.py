"""Fuzzing: mutated .pc programs and .pcir files load or fail with a diagnostic, never anything else.

Mutations of real inputs (the examples and printed IR of random circuits): deleted and inserted spans,
swapped and duplicated lines, tokens replaced by other tokens or by extreme numbers, random bytes. The
contract: the call returns a verified circuit or raises :class:`UserError`; every other exception, and
any example slower than the hypothesis deadline, is a bug.
"""
from __future__ import annotations

import os

from conftest import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from randgen import random_circuits

from pcc.frontend import load_text
from pcc.ir import UserError, parse_text, to_text, verify
from pcc.ir.diagnostics import Diagnostic, Loc
from pcc.ir.verify import VerifyError

PC_SOURCES = [p.read_text() for p in EXAMPLES]
PCIR_SOURCES = [to_text(c) for c in random_circuits(11, 6)]
TOKENS = ["(", ")", "[", "]", "{", "}", ",", "=", "..", ":", "#", '"', "-", "*", "/", "%", "0", "1", "-1",
          "99999999999", "1e999", "0.5", "nan", "inf", "var", "let", "for", "in", "root", "seed", "include",
          "tensors", "input", "prod", "sum", "n=", "tie=", "table=", "tiles=", "block=", "params=", "categorical",
          "bernoulli", "gaussian", "real", "binary", "X[0]", "%0", "%99", "@w", "tensor", "random(seed=1)",
          "resource(sha256=\"00\")", "f64[2]", "i64[1, 2]", "\n", " ", "\t", "\x00", "é", "\\"]
EXAMPLES_PER_FUZZER = int(os.environ.get("PCC_FUZZ_EXAMPLES", "150"))  # CI: bounded; raise it for a campaign
SETTINGS = settings(max_examples=EXAMPLES_PER_FUZZER, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, sources: list[str]) -> str:
    text = draw(st.sampled_from(sources))
    for _ in range(draw(st.integers(1, 4))):
        text = draw(st.sampled_from([_delete, _insert, _swap_lines, _duplicate_line, _replace_number]))(draw, text)
    return text


def _pos(draw, text: str) -> int:
    return draw(st.integers(0, max(0, len(text))))


def _delete(draw, text: str) -> str:
    i = _pos(draw, text)
    return text[:i] + text[i + draw(st.integers(1, 40)):]


def _insert(draw, text: str) -> str:
    i = _pos(draw, text)
    return text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]


def _swap_lines(draw, text: str) -> str:
    lines = text.split("\n")
    a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[a], lines[b] = lines[b], lines[a]
    return "\n".join(lines)


def _duplicate_line(draw, text: str) -> str:
    lines = text.split("\n")
    a = draw(st.integers(0, len(lines) - 1))
    return "\n".join(lines[: a + 1] + [lines[a]] + lines[a + 1:])


def _replace_number(draw, text: str) -> str:
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    if not digits:
        return text
    i = draw(st.sampled_from(digits))
    return text[:i] + draw(st.sampled_from(["0", "-3", "12345678901", "2.5", "1e6"])) + text[i + 1:]


def _loads_or_diagnoses(fn, text: str) -> None:
    try:
        circuit = fn(text)
    except UserError as e:
        assert e.diagnostics and all(d.message for d in e.diagnostics)
        assert e.render()  # rendering a diagnostic never fails either
        return
    verify(circuit)


@SETTINGS
@given(mutated(PC_SOURCES))
def test_mutated_pc_programs(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("fuzz")  # reuse.pc includes parts/pair.pc: give it one
    (folder / "parts").mkdir()
    (folder / "parts" / "pair.pc").write_text((EXAMPLES[0].parent / "parts" / "pair.pc").read_text())
    _loads_or_diagnoses(lambda t: load_text(t, str(folder / "fuzz.pc")), text)


def test_resource_tensor_line_with_trailing_text_is_diagnosed():
    """Found by the fuzzer below: a resource tensor's line with text after it declared no tensor but left it
    waiting for its resource, and resolving that raised a KeyError instead of the line's diagnostic."""
    text = ('pcir 1\nvar X0 : categorical(3)\n'
            'tensor @t2 : f64[2, 3] =resource(sha256="00") [[0.25, 0.6, 0.15], [0.68, 0.03, 0.29]]\n'
            '%0 = input X0 categorical n=2 params=@t2 name="b0"\nroot %0\n')
    try:
        parse_text(text, "fuzz.pcir")
    except UserError as e:
        assert "fuzz.pcir:3:47: error: unexpected '[' at end of line" in e.render()
    else:
        raise AssertionError("no diagnostic")


@SETTINGS
@given(mutated(PCIR_SOURCES))
def test_mutated_pcir_files(text):
    def parse_and_verify(t):
        c = parse_text(t, "fuzz.pcir")
        try:
            verify(c)
        except VerifyError as e:  # as `pcc check` does: an invalid IR file is the user's error
            raise UserError(Diagnostic(Loc("fuzz.pcir"), "invalid IR:\n" + e.render())) from None
        return c
    _loads_or_diagnoses(parse_and_verify, text)


@settings(max_examples=EXAMPLES_PER_FUZZER, deadline=2000)
@given(st.binary(max_size=300))
def test_random_bytes(raw):
    text = raw.decode("utf-8", errors="replace")
    _loads_or_diagnoses(lambda t: load_text(t, "bytes.pc"), text)
    _loads_or_diagnoses(lambda t: parse_text(t, "bytes.pcir"), text)


def test_huge_sizes_are_diagnosed_not_allocated():
    for src, fragment in [("var X[100000000000] : binary\n", "too many variables"),
                          ("var X : binary\nfor i in 0..1000000000000 { let k = i }\n", "unroll to more than"),
                          ("var X : binary\nfor i in 0..12345678901 { a[i] = prod(b[i]) }\n", "unroll to more than"),
                          ("var X : categorical(1000000000000)\na = input(X, categorical, n=1)\nroot a\n", None)]:
        try:
            load_text(src, "big.pc")
        except UserError as e:
            assert fragment is None or fragment in e.render()
        except MemoryError:  # pragma: no cover - the bug this test exists for
            raise AssertionError(f"allocation instead of a diagnostic: {src!r}")
