"""User-facing diagnostics: ``file:line:col: error: message`` with the source line and a caret.

Every stage that reads user input (the .pc frontend, the .pcir parser, tensor files) reports problems as
:class:`Diagnostic` records collected in a :class:`UserError`; the CLI prints them and exits with code 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int = 0
    col: int = 0


@dataclass(slots=True)
class Diagnostic:
    """One error message anchored at a source position; ``source`` is the text of the file, if known."""

    loc: Loc
    message: str
    source: str | None = None
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Format as ``file:line:col: error: message`` plus the source line and a caret under the column."""
        where = f"{self.loc.file}:{self.loc.line}:{self.loc.col}" if self.loc.line > 0 else self.loc.file
        head = f"{where}: error: {self.message}"
        lines = [head]
        text = self.source if self.source is not None else _read_quietly(self.loc.file)
        if text is not None and self.loc.line > 0:
            src_lines = text.splitlines()
            if self.loc.line <= len(src_lines):
                line, col = _window(src_lines[self.loc.line - 1].expandtabs(1), self.loc.col)
                lines.append(f"    {line}")
                lines.append("    " + " " * max(col - 1, 0) + "^")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _window(line: str, col: int, width: int = 120) -> tuple[str, int]:
    """Cut very long source lines (base64 resources) to a window around the column."""
    if len(line) <= width:
        return line, col
    start = max(0, col - width // 2)
    return "..." + line[start : start + width] + "...", col - start + 3


def _read_quietly(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


class UserError(Exception):
    """Raised with one or more diagnostics caused by the user's input; the CLI exits with code 1."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.loc.file, d.loc.line, d.loc.col))
        super().__init__(self.render())

    def render(self) -> str:
        """All diagnostics, sorted by position, separated by newlines."""
        return "\n".join(d.render() for d in self.diagnostics)


def error_at(file: str | Path, line: int, col: int, message: str, source: str | None = None) -> UserError:
    """Shorthand for a UserError with a single diagnostic."""
    return UserError(Diagnostic(Loc(str(file), line, col), message, source))


class DiagnosticBag:
    """Collects diagnostics so that all errors of a file are reported together."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, loc: Loc, message: str, source: str | None = None) -> None:
        """Record one error at ``loc``."""
        self.items.append(Diagnostic(loc, message, source))

    def raise_if_any(self) -> None:
        """Raise a UserError holding every recorded diagnostic (sorted), if there is one."""
        if self.items:
            raise UserError(self.items)
