"""A hand-written parser for valid ``.pc`` programs: the same AST as Lark's path, ten times faster.

Converted PyJuice models are thousands of lines (a PD over MNIST: ~80,000 tokens), and Lark's LALR parser
with position propagation spends ~15 µs per token on them: most of ``pcc.compile``. This module tokenises
with one regular expression and parses ``pc.lark``'s grammar by recursive descent, building the
:mod:`pcc.frontend.ast` nodes directly, with the source locations Lark's ``propagate_positions`` gives
them (a rule starts at its first token, or at the ``(`` of a parenthesised first operand).

Contract: :func:`try_parse` returns the very ``Program`` that Lark's path (``parse.py``) builds, or None
whenever it meets anything it is not sure about — a syntax error, a keyword used as a name, a domain
word run into other letters, a non-ASCII character. Then ``parse.py`` parses with Lark, whose errors are
the diagnostics users see; so this parser never reports errors and never changes them. Tests compare
both parsers' ASTs on every example, documentation snippet and fuzzed program.
"""
from __future__ import annotations

import re

from pcc.ir.diagnostics import Loc

from . import ast as A

# Lark's terminals, in the order its lexer tries them: comments first (widest), FLOAT (priority 2) before
# INT, strings as in pc.lark; whitespace is %import common.WS. Anything else (a stray character) is the
# "bad" group: Lark reports it, so this parser gives up.
_TOKEN = re.compile(r"""
    (?P<ws>[ \t\f\r\n]+)
  | (?P<comment>\#[^\n]*|//[^\n]*)
  | (?P<float>[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)
  | (?P<int>[0-9]+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"[^"\n]*")
  | (?P<op>\.\.|[=\[\](){},:+\-*/%])
  | (?P<bad>.)
""", re.VERBOSE | re.DOTALL)

# pc.lark's keywords. Lark's contextual lexer reads them as names where its parser state cannot take the
# keyword; rather than mirror that state by state, a name spelled like a keyword sends the file to Lark.
KEYWORDS = frozenset({"include", "seed", "tensors", "let", "var", "for", "in", "root", "tensor"})
DOMAINS = frozenset({"binary", "real", "categorical"})
_STATEMENTS = frozenset({"include", "seed", "tensors", "let", "var", "for", "root"})


class _GiveUp(Exception):
    """Not a program this parser is sure about: let Lark parse it."""


def try_parse(text: str, file: str) -> A.Program | None:
    """The AST of ``text`` exactly as Lark's path would build it, or None to say "use Lark"."""
    try:
        return _Parser(text, file).program()
    except (_GiveUp, IndexError, RecursionError):  # IndexError: ran past the last token
        return None


def _tokens(text: str) -> tuple[list[str], list[str], list[int]]:
    """Parallel lists (kind, text, start offset) of the significant tokens, then an ``end`` token.

    ``kind`` is ``float``, ``int``, ``name`` (keywords included), ``string``, or an operator's own text.
    """
    kinds, values, starts = [], [], []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ws" or kind == "comment":
            continue
        if kind == "bad":
            raise _GiveUp
        value = m.group()
        kinds.append(value if kind == "op" else kind)
        values.append(value)
        starts.append(m.start())
    kinds.append("end")
    values.append("")
    starts.append(len(text))
    return kinds, values, starts


class _Parser:
    """Recursive descent over pc.lark's rules; each method parses one rule at ``self.i``."""

    def __init__(self, text: str, file: str):
        self.file = file
        self.kinds, self.values, self.starts = _tokens(text)
        self.i = 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.line = 0  # index into line_starts of the last located token (tokens come in order)

    # --- tokens and locations -------------------------------------------------------------------

    def loc(self, i: int) -> Loc:
        """Token ``i``'s 1-based line and column (Lark counts lines by ``\\n`` and columns by characters)."""
        pos, starts, line = self.starts[i], self.line_starts, self.line
        if line + 1 < len(starts) and starts[line + 1] <= pos or starts[line] > pos:
            line = _line_of(starts, pos)
            self.line = line
        return Loc(self.file, line + 1, pos - starts[line] + 1)

    def expect(self, kind: str) -> int:
        """Consume a token of ``kind`` and return its index; anything else gives up."""
        i = self.i
        if self.kinds[i] != kind:
            raise _GiveUp
        self.i = i + 1
        return i

    def name(self) -> int:
        """Consume a NAME that is not spelled like a keyword."""
        i = self.expect("name")
        if self.values[i] in KEYWORDS:
            raise _GiveUp
        return i

    def word(self) -> str:
        """The next token's text when it is a name (keywords included), else ''."""
        return self.values[self.i] if self.kinds[self.i] == "name" else ""

    # --- statements -----------------------------------------------------------------------------

    def program(self) -> A.Program:
        stmts = self.stmts("end")
        return A.Program(self.file, stmts)

    def stmts(self, stop: str) -> list:
        out = []
        while self.kinds[self.i] != stop:
            out.append(self.stmt())
        return out

    def stmt(self):
        word = self.word()
        if word in _STATEMENTS:
            return getattr(self, "stmt_" + word)()
        i = self.i
        target = self.ref()
        self.expect("=")
        return A.NodeDecl(target, self.call(), self.loc(i))

    def stmt_include(self) -> A.Include:
        self.i += 1
        s = self.expect("string")
        return A.Include(self.values[s][1:-1], self.loc(s))

    def stmt_seed(self) -> A.Seed:
        k = self.i
        self.i += 1
        return A.Seed(self.expr(), self.loc(k))

    def stmt_tensors(self) -> A.Tensors:
        self.i += 1
        s = self.expect("string")
        return A.Tensors(self.values[s][1:-1], self.loc(s))

    def stmt_let(self) -> A.Let:
        k = self.i
        self.i += 1
        n = self.name()
        self.expect("=")
        return A.Let(self.values[n], self.expr(), self.loc(k))

    def stmt_var(self) -> A.VarDecl:
        self.i += 1
        n = self.name()
        dims = None
        if self.kinds[self.i] == "[":
            self.i += 1
            dims = self.exprs("]")
        self.expect(":")
        d = self.expect("name")  # Lark's DOMAIN_KIND: the whole word must be a domain (else it splits it)
        if self.values[d] not in DOMAINS:
            raise _GiveUp
        arg = None
        if self.kinds[self.i] == "(":
            self.i += 1
            arg = self.expr()
            self.expect(")")
        return A.VarDecl(self.values[n], dims, A.DomainSpec(self.values[d], arg, self.loc(d)), self.loc(n))

    def stmt_for(self) -> A.For:
        k = self.i
        self.i += 1
        n = self.name()
        if self.word() != "in":
            raise _GiveUp
        self.i += 1
        lo = self.expr()
        self.expect("..")
        hi = self.expr()
        self.expect("{")
        body = self.stmts("}")
        self.i += 1
        return A.For(self.values[n], lo, hi, body, self.loc(k))

    def stmt_root(self) -> A.Root:
        k = self.i
        self.i += 1
        return A.Root(self.ref(), self.loc(k))

    # --- calls ----------------------------------------------------------------------------------

    def call(self) -> A.Call:
        n = self.name()
        self.expect("(")
        args = []
        if self.kinds[self.i] != ")":
            args.append(self.arg())
            while self.kinds[self.i] == ",":
                self.i += 1
                args.append(self.arg())
        self.expect(")")
        return A.Call(self.values[n], args, self.loc(n))

    def arg(self):
        """``ref``, ``spread`` (``NAME[lo..hi]``) or ``kwarg`` (``NAME = value``)."""
        n = self.name()
        kind = self.kinds[self.i]
        if kind == "=":
            self.i += 1
            return A.KwArg(self.values[n], self.value(), self.loc(n))
        if kind != "[":
            return A.Ref(self.values[n], None, self.loc(n))
        self.i += 1
        first = self.expr()
        if self.kinds[self.i] == "..":
            self.i += 1
            hi = self.expr()
            self.expect("]")
            return A.Spread(self.values[n], first, hi, self.loc(n))
        return A.Ref(self.values[n], [first] + self.more_exprs("]"), self.loc(n))

    def value(self):
        """``expr``, a ``[...]`` list of values, or ``tensor("name")``."""
        kind = self.kinds[self.i]
        if kind == "[":
            k = self.i
            self.i += 1
            items = []
            if self.kinds[self.i] != "]":
                items.append(self.value())
                while self.kinds[self.i] == ",":
                    self.i += 1
                    items.append(self.value())
            self.expect("]")
            return A.ListLit(items, self.loc(k))
        if kind == "name" and self.values[self.i] == "tensor":
            k = self.i
            self.i += 1
            self.expect("(")
            s = self.expect("string")
            self.expect(")")
            return A.TensorRef(self.values[s][1:-1], self.loc(k))
        return self.expr()

    def ref(self) -> A.Ref:
        n = self.name()
        index = None
        if self.kinds[self.i] == "[":
            self.i += 1
            index = self.exprs("]")
        return A.Ref(self.values[n], index, self.loc(n))

    # --- expressions ----------------------------------------------------------------------------
    # Each returns (node, start) where start is the token where Lark's "container" of the node begins:
    # the node's own first token, or the "(" of a parenthesised expression. A binary operation is
    # located at its left operand's container start, as Lark's propagate_positions does.

    def exprs(self, close: str) -> list:
        """``expr ("," expr)* close``."""
        return [self.expr()] + self.more_exprs(close)

    def more_exprs(self, close: str) -> list:
        out = []
        while self.kinds[self.i] == ",":
            self.i += 1
            out.append(self.expr())
        self.expect(close)
        return out

    def expr(self):
        return self.sum_()[0]

    def sum_(self):
        node, start = self.term()
        while self.kinds[self.i] in ("+", "-"):
            op = self.kinds[self.i]
            self.i += 1
            right, _ = self.term()
            node = A.BinOp(op, node, right, self.loc(start))
        return node, start

    def term(self):
        node, start = self.factor()
        while self.kinds[self.i] in ("*", "/", "%"):
            op = self.kinds[self.i]
            self.i += 1
            right, _ = self.factor()
            node = A.BinOp(op, node, right, self.loc(start))
        return node, start

    def factor(self):
        i = self.i
        kind = self.kinds[i]
        if kind == "-":
            self.i += 1
            operand, _ = self.factor()
            return A.Neg(operand, self.loc(i)), i
        if kind == "int":
            self.i += 1
            return A.Num(int(self.values[i]), self.loc(i)), i
        if kind == "float":
            self.i += 1
            return A.Num(float(self.values[i]), self.loc(i)), i
        if kind == "(":
            self.i += 1
            node, _ = self.sum_()
            self.expect(")")
            return node, i
        return self.ref(), i


def _line_of(line_starts: list[int], pos: int) -> int:
    """The index of the line holding offset ``pos`` (binary search)."""
    lo, hi = 0, len(line_starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if line_starts[mid] <= pos:
            lo = mid
        else:
            hi = mid - 1
    return lo
