"""The .pc abstract syntax tree: small dataclasses, every node carrying its source :class:`Loc`.

Built from Lark's parse tree by :class:`ToAst` (Lark objects never leave the frontend). ``dump`` prints
a tree as indented text for ``pcc compile --emit ast``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Union

from lark import Transformer, v_args

from pcc.ir.diagnostics import Loc


@dataclass(slots=True)
class Num:
    """An integer or float literal."""

    value: int | float
    loc: Loc


@dataclass(slots=True)
class Ref:
    """A name with optional indices: ``x``, ``x[i]``, ``p[i, j+1]``."""

    name: str
    index: list["Expr"] | None
    loc: Loc


@dataclass(slots=True)
class Spread:
    """``x[lo..hi]``: the nodes ``x[lo]``, ..., ``x[hi-1]`` as several arguments."""

    name: str
    lo: "Expr"
    hi: "Expr"
    loc: Loc


@dataclass(slots=True)
class BinOp:
    """Integer (or float) arithmetic: ``+ - * / %``."""

    op: str
    left: "Expr"
    right: "Expr"
    loc: Loc


@dataclass(slots=True)
class Neg:
    """Unary minus."""

    operand: "Expr"
    loc: Loc


@dataclass(slots=True)
class ListLit:
    """A nested list literal of numbers (inline parameters, index tables, tile lists)."""

    items: list["Value"]
    loc: Loc


@dataclass(slots=True)
class TensorRef:
    """``tensor("name")``: a named tensor of the file declared by ``tensors "..."``."""

    key: str
    loc: Loc


Expr = Union[Num, Ref, BinOp, Neg]
Value = Union[Expr, ListLit, TensorRef]


@dataclass(slots=True)
class KwArg:
    """``key=value`` inside a call."""

    key: str
    value: Value
    loc: Loc


@dataclass(slots=True)
class Call:
    """``input(...)``, ``prod(...)`` or ``sum(...)``: positional refs/spreads and keyword arguments."""

    kind: str
    args: list[Union[Ref, Spread, KwArg]]
    loc: Loc


@dataclass(slots=True)
class Include:
    """``include "other.pc"``: the other file's statements, in place, in the same namespace."""

    path: str
    loc: Loc


@dataclass(slots=True)
class Seed:
    """``seed N``: the seed for random parameter initialisation."""

    value: Expr
    loc: Loc


@dataclass(slots=True)
class Tensors:
    """``tensors "file.safetensors"``: the sidecar file that ``tensor("name")`` reads."""

    path: str
    loc: Loc


@dataclass(slots=True)
class Let:
    """``let NAME = expr``: a named integer constant."""

    name: str
    value: Expr
    loc: Loc


@dataclass(slots=True)
class DomainSpec:
    """``binary``, ``real`` or ``categorical(K)``."""

    kind: str
    arg: Expr | None
    loc: Loc


@dataclass(slots=True)
class VarDecl:
    """``var X : domain`` or ``var X[d0, d1, ...] : domain`` (one variable per index)."""

    name: str
    dims: list[Expr] | None
    domain: DomainSpec
    loc: Loc


@dataclass(slots=True)
class NodeDecl:
    """``target = call``: declares one node block."""

    target: Ref
    call: Call
    loc: Loc


@dataclass(slots=True)
class For:
    """``for i in lo..hi { ... }``: the body once per integer in [lo, hi)."""

    var: str
    lo: Expr
    hi: Expr
    body: list["Stmt"]
    loc: Loc


@dataclass(slots=True)
class Root:
    """``root ref``: the circuit's output node block (a single node)."""

    ref: Ref
    loc: Loc


Stmt = Union[Include, Seed, Tensors, Let, VarDecl, NodeDecl, For, Root]


@dataclass(slots=True)
class Program:
    """The statements of one source file."""

    file: str
    stmts: list[Stmt]


def _loc(file: str, meta_or_token: Any) -> Loc:
    return Loc(file, getattr(meta_or_token, "line", 0) or 0, getattr(meta_or_token, "column", 0) or 0)


class ToAst(Transformer):
    """Lark tree → AST dataclasses, attaching ``Loc(file, line, col)`` to every node."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _l(self, meta: Any) -> Loc:
        return _loc(self.file, meta)

    def start(self, items: list) -> Program:
        return Program(self.file, list(items))

    @v_args(meta=True)
    def include(self, meta, items):
        return Include(items[0][1:-1], self._l(items[0]))

    @v_args(meta=True)
    def seed(self, meta, items):
        return Seed(items[0], self._l(meta))

    @v_args(meta=True)
    def tensors(self, meta, items):
        return Tensors(items[0][1:-1], self._l(items[0]))

    @v_args(meta=True)
    def let(self, meta, items):
        return Let(str(items[0]), items[1], self._l(meta))

    @v_args(meta=True)
    def var(self, meta, items):
        dims = items[1] if len(items) == 3 else None
        return VarDecl(str(items[0]), dims, items[-1], self._l(items[0]))

    def dims(self, items):
        return list(items)

    @v_args(meta=True)
    def domain(self, meta, items):
        return DomainSpec(str(items[0]), items[1] if len(items) > 1 else None, self._l(meta))

    @v_args(meta=True)
    def node(self, meta, items):
        return NodeDecl(items[0], items[1], self._l(meta))

    @v_args(meta=True)
    def for_(self, meta, items):
        return For(str(items[0]), items[1], items[2], list(items[3:]), self._l(meta))

    @v_args(meta=True)
    def root(self, meta, items):
        return Root(items[0], self._l(meta))

    @v_args(meta=True)
    def call(self, meta, items):
        return Call(str(items[0]), [a for a in items[1:] if a is not None], self._l(meta))

    @v_args(meta=True)
    def kwarg(self, meta, items):
        return KwArg(str(items[0]), items[1], self._l(meta))

    @v_args(meta=True)
    def spread(self, meta, items):
        return Spread(str(items[0]), items[1], items[2], self._l(meta))

    @v_args(meta=True)
    def ref(self, meta, items):
        return Ref(str(items[0]), list(items[1:]) or None, self._l(meta))

    @v_args(meta=True)
    def list(self, meta, items):
        return ListLit([i for i in items if i is not None], self._l(meta))

    @v_args(meta=True)
    def tensor_ref(self, meta, items):
        return TensorRef(items[0][1:-1], self._l(meta))

    def _bin(op):  # noqa: N805 - a factory for the arithmetic rules
        @v_args(meta=True)
        def rule(self, meta, items):
            return BinOp(op, items[0], items[1], self._l(meta))
        return rule

    add, sub, mul, div, mod = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("%")

    @v_args(meta=True)
    def neg(self, meta, items):
        return Neg(items[0], self._l(meta))

    def int(self, items):
        return Num(int(items[0]), _loc(self.file, items[0]))

    def float(self, items):
        return Num(float(items[0]), _loc(self.file, items[0]))


setattr(ToAst, "for", ToAst.for_)


def dump(node: Any, indent: int = 0) -> str:
    """An indented, readable rendering of an AST (``pcc compile --emit ast``)."""
    pad = "  " * indent
    if isinstance(node, list):
        return "\n".join(dump(n, indent) for n in node)
    if not is_dataclass(node):
        return pad + repr(node)
    loc = getattr(node, "loc", None)
    head = f"{pad}{type(node).__name__}" + (f" @{loc.line}:{loc.col}" if loc else "")
    parts = [head]
    for f in fields(node):
        if f.name in ("loc",):
            continue
        v = getattr(node, f.name)
        if isinstance(v, (list, Program)) or is_dataclass(v):
            parts.append(f"{pad}  {f.name}:")
            parts.append(dump(v, indent + 2))
        else:
            parts.append(f"{pad}  {f.name}: {v!r}")
    return "\n".join(p for p in parts if p)

