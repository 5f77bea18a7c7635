"""Parse ``.pcir`` text back into a :class:`Circuit` (the inverse of :mod:`pcc.ir.printer`).

Line-oriented: one declaration per line, ``#`` starts a comment. Every problem is a diagnostic at the
offending token (``file:line:col``); all problems of a file are reported together where the parse can
go on. Resources are checked against their sha256 before use.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np

from . import tensorfile
from .circuit import (DISTRIBUTIONS, NUMPY_DTYPES, Block, Circuit, Domain, InputBlock, ProdBlock, SumBlock, Tensor,
                      Variable)
from .diagnostics import Diagnostic, Loc, UserError
from .printer import VERSION, checksum

_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+) | (?P<comment>\#.*) |
    (?P<str>"(?:[^"\\]|\\.)*") |
    (?P<block>%\d+) | (?P<tensor>@[A-Za-z0-9_.]+) |
    (?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)(?![A-Za-z0-9_])) |
    (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\[[0-9,]+\])?) |
    (?P<punct>[=:\[\](){},])
""", re.VERBOSE)


class _Syntax(Exception):
    def __init__(self, col: int, message: str):
        self.col, self.message = col, message


class _Quiet(Exception):
    """The line refers to something whose own declaration failed (already reported)."""


class _Line:
    """A cursor over the tokens of one line."""

    def __init__(self, text: str):
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise _Syntax(pos + 1, f"unexpected character {text[pos]!r}")
            if m.lastgroup not in ("ws", "comment"):
                self.toks.append((m.lastgroup or "", m.group(), pos + 1))
            pos = m.end()
        self.i = 0
        self.end_col = len(text) + 1

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eol", "end of line", self.end_col)

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        k, v, col = self.peek()
        if (kind and k != kind) or (value and v != value):
            want = repr(value) if value else {"block": "a block id like %3", "tensor": "a tensor like @w",
                                              "num": "a number", "name": "a name", "str": "a string"}.get(kind or "", kind)
            raise _Syntax(col, f"expected {want}, found {v!r}")
        self.i += 1
        return v

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] != "str":
            self.i += 1
            return True
        return False

    def col(self) -> int:
        return self.peek()[2]

    def done(self) -> None:
        if self.i < len(self.toks):
            raise _Syntax(self.peek()[2], f"unexpected {self.peek()[1]!r} at end of line")


def parse_file(path: str | Path) -> Circuit:
    """Parse a ``.pcir`` file (and its sidecar, if it names one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(Diagnostic(Loc(str(path)), f"cannot read IR file: {e}")) from None
    return parse_text(text, str(path))


def parse_text(text: str, filename: str = "<pcir>", sidecar: dict[str, np.ndarray] | None = None) -> Circuit:
    """Parse ``.pcir`` text; ``filename`` names it in diagnostics and anchors a relative sidecar path.

    ``sidecar`` supplies the tensors of an ``external`` line directly (a checkpoint holds them itself).
    """
    parser = _Parser(text, filename)
    parser.given_sidecar = sidecar
    return parser.run()


class _Parser:
    def __init__(self, text: str, filename: str):
        self.text, self.file = text, filename
        self.diags: list[Diagnostic] = []
        self.vars: list[Variable] = []
        self.var_ids: dict[str, int] = {}
        self.tensors: dict[str, Tensor] = {}
        self.pending: dict[str, tuple[str, int]] = {}  # tensor -> (sha256, line) awaiting bytes
        self.blocks: list[Block] = []
        self.labels: dict[str, int] = {}
        self.root: int | None = None
        self.attrs: dict[str, Any] = {}
        self.sidecar: dict[str, np.ndarray] | None = None
        self.given_sidecar: dict[str, np.ndarray] | None = None
        self.resources: dict[str, tuple[str, int, int]] = {}
        self.bad_tensors: set[str] = set()
        self.bad_vars: set[str] = set()

    def error(self, line: int, col: int, message: str) -> None:
        self.diags.append(Diagnostic(Loc(self.file, line, col), message, self.text))

    def run(self) -> Circuit:
        lines = self.text.splitlines()
        header_seen, in_resources = False, False
        for no, raw in enumerate(lines, 1):
            try:
                tok = _Line(raw)
                if not tok.toks:
                    continue
                if in_resources:
                    in_resources = self._resource_line(tok, no)
                elif not header_seen:
                    self._header(tok)
                    header_seen = True
                else:
                    in_resources = self._statement(tok, no)
            except _Syntax as e:
                self.error(no, e.col, e.message)
                self._poison(raw)
                if not header_seen:  # not a .pcir file (or another version): nothing else is meaningful
                    raise UserError(self.diags) from None
            except _Quiet:
                self._poison(raw)
        if not header_seen:
            self.error(1, 1, f"not a .pcir file: expected 'pcir {VERSION}' as the first line")
        elif in_resources:
            self.error(len(lines), 1, "unterminated resources section (missing '}')")
        return self._finish(len(lines))

    def _poison(self, raw: str) -> None:
        """Mark what a failed line declares so that its later uses are not reported again."""
        m = re.match(r"\s*(?:(%\d+)\s*=|tensor\s+@([A-Za-z0-9_.]+)|var\s+(\S+))", raw)
        if m and m.group(1):
            self.labels.setdefault(m.group(1), None)
        elif m and m.group(2):
            self.bad_tensors.add(m.group(2))
        elif m and m.group(3):
            self.bad_vars.add(m.group(3))

    def _header(self, tok: _Line) -> None:
        if tok.peek()[1] != "pcir":
            raise _Syntax(1, f"not a .pcir file: expected 'pcir {VERSION}' as the first line")
        tok.take("name", "pcir")
        col = tok.col()
        if tok.take("num") != str(VERSION):
            raise _Syntax(col, f"unsupported .pcir version (this pcc reads version {VERSION})")
        tok.done()

    def _statement(self, tok: _Line, no: int) -> bool:
        kind, word, col = tok.peek()
        if kind == "block":
            self._block(tok, no)
        elif word == "var":
            self._var(tok, no)
        elif word == "tensor":
            self._tensor(tok, no)
        elif word == "root":
            tok.take()
            self.root = self._ref(tok, no)
            tok.done()
        elif word == "attributes":
            tok.take()
            self.attrs = self._attrs(tok)
            tok.done()
        elif word == "external":
            tok.take()
            self._external(tok, no)
        elif word == "resources":
            tok.take()
            tok.take(value="{")
            tok.done()
            return True
        else:
            raise _Syntax(col, f"expected a declaration (var, tensor, %N = ..., root), found {word!r}")
        return False

    def _var(self, tok: _Line, no: int) -> None:
        tok.take()
        col = tok.col()
        name = tok.take("name")
        tok.take(value=":")
        dcol = tok.col()
        dom = tok.take("name")
        if dom == "categorical":
            tok.take(value="(")
            k = self._int(tok)
            tok.take(value=")")
            if k < 1:
                raise _Syntax(dcol, "categorical domain needs at least one category")
            domain = Domain("categorical", k)
        elif dom in ("binary", "real"):
            domain = Domain(dom, 2 if dom == "binary" else 0)
        else:
            raise _Syntax(dcol, f"unknown domain {dom!r} (expected binary, real or categorical(K))")
        tok.done()
        if name in self.var_ids:
            raise _Syntax(col, f"variable {name!r} declared twice")
        self.var_ids[name] = len(self.vars)
        self.vars.append(Variable(name, domain))

    def _tensor(self, tok: _Line, no: int) -> None:
        tok.take()
        col = tok.col()
        name = tok.take("tensor")[1:]
        tok.take(value=":")
        dcol = tok.col()
        dtype = tok.take("name")
        dtype, _, packed = dtype.partition("[")  # "f64[4,8]" lexes as one indexed name
        if dtype not in NUMPY_DTYPES:
            raise _Syntax(dcol, f"unknown tensor type {dtype!r} (expected f64, f32 or i64)")
        shape = self._packed_shape(packed, dcol + len(dtype)) if packed else self._shape(tok)
        tok.take(value="=")
        vcol = tok.col()
        if name in self.tensors:
            raise _Syntax(col, f"tensor @{name} declared twice")
        t, sha = Tensor(dtype, shape), None
        if tok.accept("random"):
            tok.take(value="(")
            tok.take("name", "seed")
            tok.take(value="=")
            t.seed = self._int(tok)
            tok.take(value=")")
        elif tok.accept("resource"):
            tok.take(value="(")
            tok.take("name", "sha256")
            tok.take(value="=")
            sha = _unquote(tok.take("str"))
            tok.take(value=")")
        else:
            t.data = self._literal(tok, dtype, shape, vcol)
        tok.done()
        self.tensors[name] = t
        if sha is not None:  # only for a tensor that parsed: a line with trailing text declares none
            self.pending[name] = (sha, no)

    @staticmethod
    def _packed_shape(packed: str, col: int) -> tuple[int, ...]:
        """The dimensions of a shape that lexed with its type as one name (``f64[4,8]``: ``packed`` is ``4,8]``)."""
        dims = packed[:-1].split(",")
        if not packed.endswith("]") or not all(d.isdigit() for d in dims):
            raise _Syntax(col, f"malformed tensor shape [{packed} (expected [n, m, ...] of integers)")
        return tuple(int(d) for d in dims)

    def _shape(self, tok: _Line) -> tuple[int, ...]:
        tok.take(value="[")
        dims = [self._int(tok)]
        while tok.accept(","):
            dims.append(self._int(tok))
        tok.take(value="]")
        return tuple(dims)

    def _literal(self, tok: _Line, dtype: str, shape: tuple[int, ...], col: int) -> np.ndarray:
        flat: list[float] = []

        def nested(depth: int) -> None:
            tok.take(value="[")
            count = 0
            while True:
                if depth + 1 < len(shape):
                    nested(depth + 1)
                else:
                    flat.append(float(tok.take("num")))
                count += 1
                if not tok.accept(","):
                    break
            tok.take(value="]")
            if count != shape[depth]:
                raise _Syntax(col, f"literal does not match the declared shape {list(shape)}")

        nested(0)
        arr = np.array(flat, dtype=np.float64).reshape(shape)
        if dtype == "i64":
            if not np.all(arr == np.round(arr)):
                raise _Syntax(col, "i64 tensor literal holds a non-integer")
            return arr.astype(np.int64)
        return arr.astype(NUMPY_DTYPES[dtype], copy=False)  # f32: the text's double rounded once

    def _external(self, tok: _Line, no: int) -> None:
        col = tok.col()
        rel = _unquote(tok.take("str"))
        tok.done()
        if self.given_sidecar is not None:
            self.sidecar = self.given_sidecar
            return
        path = Path(self.file).parent / rel
        try:
            self.sidecar = tensorfile.load(path)
        except UserError as e:
            raise _Syntax(col, e.diagnostics[0].message + f" ({path})") from None

    def _block(self, tok: _Line, no: int) -> None:
        col = tok.col()
        label = tok.take("block")
        tok.take(value="=")
        kcol = tok.col()
        kind = tok.take("name")
        if self.labels.get(label) is not None:
            raise _Syntax(col, f"block {label} defined twice")
        if kind == "input":
            block: Block = self._input(tok, no)
        elif kind in ("prod", "sum"):
            block = self._inner(tok, no, kind, kcol)
        else:
            raise _Syntax(kcol, f"unknown block kind {kind!r} (expected input, prod or sum)")
        tok.done()
        self.labels[label] = len(self.blocks)
        self.blocks.append(block)

    def _input(self, tok: _Line, no: int) -> InputBlock:
        vcol = tok.col()
        var = tok.take("name")
        if var not in self.var_ids:
            if var in self.bad_vars:
                raise _Quiet
            raise _Syntax(vcol, f"undefined variable {var!r}")
        dcol = tok.col()
        dist = tok.take("name")
        if dist not in DISTRIBUTIONS:
            raise _Syntax(dcol, f"unknown distribution {dist!r}")
        opts = self._options(tok, no, {"n", "params", "name"})
        self._require(opts, ("n", "params"), dcol)
        return InputBlock(self.var_ids[var], dist, opts["n"], opts["params"], opts.get("name", ""), opts.get("attrs", {}))

    def _inner(self, tok: _Line, no: int, kind: str, kcol: int) -> Block:
        tok.take(value="(")
        kids = [self._ref(tok, no)]
        while tok.accept(","):
            kids.append(self._ref(tok, no))
        tok.take(value=")")
        if kind == "prod":
            opts = self._options(tok, no, {"n", "table", "name"})
            self._require(opts, ("n",), kcol)
            return ProdBlock(tuple(kids), opts["n"], opts.get("table"), opts.get("name", ""), opts.get("attrs", {}))
        opts = self._options(tok, no, {"n", "params", "tiles", "block", "name"})
        self._require(opts, ("n", "params"), kcol)
        if ("tiles" in opts) != ("block" in opts):
            raise _Syntax(kcol, "a block-sparse sum needs both tiles=@T and block=B")
        return SumBlock(tuple(kids), opts["n"], opts["params"], opts.get("tiles"), opts.get("block", 1),
                        opts.get("name", ""), opts.get("attrs", {}))

    def _options(self, tok: _Line, no: int, allowed: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        while tok.peek()[0] == "name":
            col = tok.col()
            key = tok.take("name")
            if key not in allowed:
                raise _Syntax(col, f"unknown option {key!r} (expected one of {', '.join(sorted(allowed))})")
            tok.take(value="=")
            vcol = tok.col()
            if key in ("params", "table", "tiles"):
                opts[key] = tok.take("tensor")[1:]
                if opts[key] in self.bad_tensors:
                    raise _Quiet
                if opts[key] not in self.tensors:
                    raise _Syntax(vcol, f"undefined tensor @{opts[key]}")
            elif key == "name":
                opts[key] = _unquote(tok.take("str"))
            else:
                opts[key] = self._int(tok)
        if tok.peek()[1] == "{":
            opts["attrs"] = self._attrs(tok)
        return opts

    def _require(self, opts: dict[str, Any], keys: tuple[str, ...], col: int) -> None:
        missing = [k for k in keys if k not in opts]
        if missing:
            raise _Syntax(col, f"missing option {missing[0]}=")

    def _attrs(self, tok: _Line) -> dict[str, Any]:
        tok.take(value="{")
        out: dict[str, Any] = {}
        while not tok.accept("}"):
            key = tok.take("name")
            tok.take(value="=")
            kind, word, col = tok.peek()
            tok.take()
            if kind == "str":
                out[key] = _unquote(word)
            elif kind == "num":
                out[key] = int(word) if re.fullmatch(r"[-+]?\d+", word) else float(word)
            else:
                raise _Syntax(col, f"attribute value must be a number or a string, found {word!r}")
            if not tok.accept(","):
                tok.take(value="}")
                break
        return out

    def _ref(self, tok: _Line, no: int) -> int:
        col = tok.col()
        label = tok.take("block")
        if label not in self.labels:
            raise _Syntax(col, f"block {label} is used before it is defined")
        if self.labels[label] is None:  # its definition failed, already reported
            raise _Quiet
        return self.labels[label]

    def _int(self, tok: _Line) -> int:
        col = tok.col()
        word = tok.take("num")
        if not re.fullmatch(r"[-+]?\d+", word):
            raise _Syntax(col, f"expected an integer, found {word!r}")
        return int(word)

    def _resource_line(self, tok: _Line, no: int) -> bool:
        if tok.accept("}"):
            tok.done()
            return False
        col = tok.col()
        name = tok.take("tensor")[1:]
        tok.take(value="=")
        scol = tok.col()
        self.resources[name] = (_unquote(tok.take("str")), no, scol)
        tok.done()
        if name not in self.pending:
            raise _Syntax(col, f"resource @{name} is not referenced by any tensor")
        return True

    def _finish(self, last_line: int) -> Circuit:
        for name, (sha, line) in self.pending.items():
            self._resolve(name, sha, line)
        if self.root is None and not self.diags:
            self.error(last_line or 1, 1, "no 'root %N' line")
        if self.diags:
            raise UserError(self.diags)
        return Circuit(self.vars, self.blocks, self.tensors, self.root or 0, self.attrs)

    def _resolve(self, name: str, sha: str, line: int) -> None:
        t = self.tensors[name]
        if name in self.resources:
            data, rline, rcol = self.resources[name]
            try:
                raw = base64.b64decode(data, validate=True)
            except ValueError:
                return self.error(rline, rcol, f"resource @{name} is not valid base64")
            dtype = NUMPY_DTYPES[t.dtype]
            width = np.dtype(dtype).itemsize
            if len(raw) != t.size * width:
                return self.error(rline, rcol, f"resource @{name} has {len(raw)} bytes, expected {t.size * width}")
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(t.shape)
        elif self.sidecar is not None and name in self.sidecar:
            arr = self.sidecar[name]
            if arr.shape != t.shape:
                return self.error(line, 1, f"tensor @{name} has shape {list(arr.shape)} in the sidecar, declared {list(t.shape)}")
            arr = arr.astype(NUMPY_DTYPES[t.dtype], copy=False)  # the sidecar's own dtype: no copy
        else:
            return self.error(line, 1, f"tensor @{name} references a resource that is not present")
        if checksum(arr) != sha:
            return self.error(line, 1, f"tensor @{name} does not match its sha256 checksum (file tampered or truncated?)")
        t.data = arr


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])
