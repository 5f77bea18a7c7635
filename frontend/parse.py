"""Source text → AST. The only module that touches Lark: its exceptions become diagnostics here.

Syntax errors are collected with Lark's LALR error recovery (skip the offending token and go on), so
several mistakes in one file are reported together; the messages name what was expected in words.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from lark import Lark, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from pcc.ir.diagnostics import Diagnostic, Loc, UserError

from .ast import Program, ToAst

_MAX_SYNTAX_ERRORS = 10

_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "EQUAL": "'='",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "COLON": "':'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'",
    "PERCENT": "'%'", "DOMAIN_KIND": "a domain (binary, real, categorical)", "$END": "end of file",
    "__ANON_0": "'..'", "DOTDOT": "'..'",
}


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = files("pcc.frontend").joinpath("pc.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_source(text: str, file: str) -> Program:
    """Parse one file's text; raises UserError with every syntax error found."""
    if not text.strip():
        raise UserError(Diagnostic(Loc(file, 1, 1), "empty file: expected variable and node declarations and a root", text))
    errors: list[Diagnostic] = []

    def recover(e: UnexpectedInput) -> bool:
        if not errors or (e.line, e.column) != (errors[-1].loc.line, errors[-1].loc.col):
            errors.append(_diagnostic(e, text, file))
        return len(errors) < _MAX_SYNTAX_ERRORS

    try:
        tree = _parser().parse(text, on_error=recover)
    except UnexpectedInput as e:  # errors Lark cannot recover from (bad characters, end of file)
        errors.append(_diagnostic(e, text, file))
        tree = None
    if errors:
        raise UserError(_first_per_line(errors))
    try:
        return ToAst(file).transform(tree)
    except VisitError as e:  # only a bug in ToAst can get here
        raise RuntimeError(f"internal error building the AST of {file}: {e.orig_exc}") from e


def _first_per_line(errors: list[Diagnostic]) -> list[Diagnostic]:
    """Keep the first error of each line: recovery inside one line mostly produces echoes."""
    seen: set[int] = set()
    out = []
    for d in errors:
        if d.loc.line not in seen:
            seen.add(d.loc.line)
            out.append(d)
    return out


def _diagnostic(e: UnexpectedInput, text: str, file: str) -> Diagnostic:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedCharacters):
        message = f"unexpected character {e.char!r}"
    elif isinstance(e, UnexpectedEOF):
        line, col = _end(text)
        message = f"unexpected end of file, expected {_expected(e.expected)}"
    elif isinstance(e, UnexpectedToken):
        if e.token.type == "$END":
            line, col = _end(text)
            message = f"unexpected end of file, expected {_expected(e.expected)}"
        else:
            message = f"unexpected {_describe(e.token)}, expected {_expected(e.expected)}"
    else:
        message = "syntax error"
    return Diagnostic(Loc(file, line, col), message, text)


def _end(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").split("\n")
    return len(lines), len(lines[-1]) + 1


def _describe(token) -> str:
    return f"{token.value!r}" if token.type not in ("STRING",) else f"string {token.value}"


def _expected(names) -> str:
    words = sorted({_WORDS.get(n, _keyword(n)) for n in names})
    if len(words) > 6:
        return "a statement (var, let, seed, tensors, include, for, root, or NAME = call)" if "'var'" in words else ", ".join(words[:6]) + ", ..."
    return " or ".join(words) if len(words) <= 2 else ", ".join(words[:-1]) + " or " + words[-1]


def _keyword(name: str) -> str:
    return "'" + name.lower() + "'"
