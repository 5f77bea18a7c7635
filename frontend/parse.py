"""Source text → AST. The only module that touches Lark: its exceptions become diagnostics here.

Valid programs are parsed by :mod:`.fastparse` (the same AST, much faster); anything it does not accept
is parsed by Lark, so every diagnostic comes from here. Syntax errors are collected with Lark's LALR error
recovery (skip the offending token and go on), so several mistakes in one file are reported together; the
messages name what was expected in words.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

from lark import Lark, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from pcc.ir.diagnostics import Diagnostic, Loc, UserError

from .ast import Program, ToAst
from .fastparse import try_parse

_MAX_SYNTAX_ERRORS = 10

_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "EQUAL": "'='",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "COLON": "':'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'",
    "PERCENT": "'%'", "DOMAIN_KIND": "a domain (binary, real, categorical)", "$END": "end of file",
    "__ANON_0": "'..'",
}


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = files("pcc.frontend").joinpath("pc.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_source(text: str, file: str) -> Program:
    """Parse one file's text; raises UserError with every syntax error found.

    After a syntax error the offending line is blanked and the file parsed again, so independent
    mistakes on other lines are reported together. A line with unbalanced brackets (or an error at the
    end of the file) stops the search: what follows would only echo the first error.
    """
    if not text.strip():
        raise UserError(Diagnostic(Loc(file, 1, 1), "empty file: expected variable and node declarations and a root", text))
    program = try_parse(text, file)  # the fast path for valid programs; None sends the text to Lark
    if program is not None:
        return program
    return parse_with_lark(text, file)


def parse_with_lark(text: str, file: str) -> Program:
    """Parse with Lark (the reference parser; its errors are the diagnostics); see :func:`parse_source`."""
    errors: list[Diagnostic] = []
    attempt = text
    while len(errors) < _MAX_SYNTAX_ERRORS:
        try:
            tree = _parser().parse(attempt)
            break
        except UnexpectedInput as e:
            d = _diagnostic(e, text, file)
            errors.append(d)
            attempt = _blank_line(attempt, d.loc.line) if _can_skip(e, attempt, d.loc.line) else None
            if attempt is None:
                break
    if errors:
        raise UserError(errors)
    try:
        return ToAst(file).transform(tree)
    except VisitError as e:  # only a bug in ToAst can get here
        raise RuntimeError(f"internal error building the AST of {file}: {e.orig_exc}") from e


def _can_skip(e: UnexpectedInput, text: str, line: int) -> bool:
    """Whether blanking the error's line leaves a file whose later errors are independent ones."""
    if isinstance(e, UnexpectedEOF) or getattr(getattr(e, "token", None), "type", "") == "$END":
        return False
    lines = text.split("\n")
    if "{" in lines[line - 1] or "}" in lines[line - 1]:
        return False  # blanking would unbalance a loop body
    code = re.sub(r'"[^"\n]*"|#[^\n]*|//[^\n]*', "", "\n".join(lines[: line - 1]))
    return code.count("(") == code.count(")") and code.count("[") == code.count("]")


def _blank_line(text: str, line: int) -> str:
    lines = text.split("\n")
    lines[line - 1] = " " * len(lines[line - 1])
    return "\n".join(lines)


def _diagnostic(e: UnexpectedInput, text: str, file: str) -> Diagnostic:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedCharacters):
        message = f"unexpected character {e.char!r}"
    elif isinstance(e, UnexpectedEOF):
        line, col = _end(text)
        message = f"unexpected end of file, expected {_expected(e.expected)}"
    elif isinstance(e, UnexpectedToken):
        accepts = getattr(e, "accepts", None) or e.expected  # accepts is exact, expected may over-report
        if e.token.type == "$END":
            line, col = _end(text)
            message = f"unexpected end of file, expected {_expected(accepts)}"
        else:
            message = f"unexpected {_describe(e.token)}, expected {_expected(accepts)}"
    else:
        message = "syntax error"
    return Diagnostic(Loc(file, line, col), message, text)


def _end(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").split("\n")
    return len(lines), len(lines[-1]) + 1


def _describe(token) -> str:
    return f"{token.value!r}" if token.type not in ("STRING",) else f"string {token.value}"


_STATEMENT = {"'var'", "'let'", "'seed'", "'tensors'", "'include'", "'for'", "'root'"}


def _expected(names) -> str:
    words = {_WORDS.get(n, _keyword(n)) for n in names}
    if _STATEMENT <= words:  # the start of a statement: say so in words, keep anything else (like '}')
        rest = sorted(words - _STATEMENT - {"a name", "end of file"})
        words = set(rest) | {"a statement (var, let, seed, tensors, include, for, root or NAME = ...)"}
    ordered = sorted(words)
    return " or ".join(ordered) if len(ordered) <= 2 else ", ".join(ordered[:-1]) + " or " + ordered[-1]


def _keyword(name: str) -> str:
    return "'" + name.lower() + "'"
