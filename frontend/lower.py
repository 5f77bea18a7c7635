"""AST → IR: evaluate constants and loops, resolve names, check semantics, build the Circuit.

Contract: ``load_file``/``load_text`` return a Circuit that passes :func:`pcc.ir.verify`, or raise a
UserError holding *every* semantic error of the program (one per source position, sorted), each at the
offending token. A statement with an error still defines its name (as "poisoned"), so later uses of it
do not produce follow-on errors.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pcc.ir import tensorfile
from pcc.ir.circuit import (DISTRIBUTIONS, Circuit, Domain, InputBlock, ProdBlock, SumBlock, Tensor, Variable, ir_dtype,
                             scope_names, tensor_stem)
from pcc.ir.diagnostics import Diagnostic, Loc, UserError
from pcc.ir.params import derive_seed
from pcc.ir.verify import check_tiles, input_values, verify, weight_values

from . import ast as A
from .parse import parse_source

_KWARGS = {"input": {"n", "params", "tie", "block"}, "prod": {"n", "table", "block"},
           "sum": {"n", "params", "tie", "block", "tiles"}}
Key = tuple[str, tuple[int, ...]]
_MAX_VARIABLES = 1 << 24
_MAX_STATEMENTS = 5_000_000


class _Bad(Exception):
    """The current statement has an error that was already reported."""


def load_file(path: str | Path) -> Circuit:
    """Parse and lower a .pc file (and its includes) into a verified Circuit."""
    return _Lowering().run(str(path), None)


def load_text(text: str, file: str = "<string>") -> Circuit:
    """Parse and lower .pc source text; ``file`` names it in diagnostics and anchors includes."""
    return _Lowering().run(file, text)


def parse_ast(path: str | Path) -> A.Program:
    """The AST of one file (includes not expanded), for ``pcc compile --emit ast``."""
    path = str(path)
    return parse_source(_read(path, Loc(path, 0, 0)), path)


def _read(path: str, at: Loc) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(Diagnostic(at, f"no such file: {path}")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(Diagnostic(at, f"cannot read {path}: {e}")) from None


def _targets(stmts: list) -> set[str]:
    """Base names of the nodes declared in ``stmts`` (nested loops included)."""
    out: set[str] = set()
    for st in stmts:
        if isinstance(st, A.NodeDecl):
            out.add(st.target.name)
        elif isinstance(st, A.For):
            out |= _targets(st.body)
    return out


def _key_text(key: Key) -> str:
    name, idx = key
    return name + (f"[{', '.join(map(str, idx))}]" if idx else "")


class _Lowering:
    def __init__(self) -> None:
        self.diags: dict[tuple, Diagnostic] = {}
        self.sources: dict[str, str] = {}
        self.consts: dict[str, int | float] = {}
        self.variables: list[Variable] = []
        self.var_ids: dict[Key, int] = {}
        self.nodes: dict[Key, int | None] = {}
        self.node_lines: dict[Key, str] = {}
        self.poisoned: set[str] = set()  # base names whose declaration failed: uses stay quiet
        self.incomplete = False  # an include failed: undefined names may be defined there
        self.tensor_file_broken = False
        self.loop_locals: list[set[str]] = []
        self.var_dims: dict[str, tuple[int, ...]] = {}
        self.budget = _MAX_STATEMENTS  # statements elaborated, loops unrolled: a runaway loop stops
        self.blocks: list = []
        self.scopes: list[int] = []
        self.tensors: dict[str, Tensor] = {}
        self.roles: dict[str, str] = {}  # tensor -> what it parameterises (ties must match)
        self.seed = 0
        self.tensor_file: dict[str, np.ndarray] | None = None
        self.root: tuple[int | None, A.Root] | None = None
        self.includes: list[str] = []

    # --- driver ---------------------------------------------------------------------------------

    def err(self, loc: Loc, message: str) -> None:
        """Report an error; only the first error at each source position is kept (loops repeat them)."""
        self.diags.setdefault((loc.file, loc.line, loc.col), Diagnostic(loc, message, self.sources.get(loc.file)))

    def run(self, file: str, text: str | None) -> Circuit:
        try:
            self.include(file, text, Loc(file, 0, 0))
        except UserError as e:
            for d in e.diagnostics:
                self.diags.setdefault((d.loc.file, d.loc.line, d.loc.col), d)
        if self.root is None and not self.diags:
            lines = self.sources.get(file, "").rstrip("\n").split("\n")
            self.err(Loc(file, len(lines), 1), "no root: name the circuit's output with 'root NAME'")
        if self.diags:
            raise UserError(list(self.diags.values()))
        return self.finish()

    def include(self, file: str, text: str | None, at: Loc) -> None:
        if text is None:
            text = _read(file, at)
        self.sources[file] = text
        self.includes.append(str(Path(file).resolve()) if not file.startswith("<") else file)
        try:
            self.stmts(parse_source(text, file).stmts)
        finally:
            self.includes.pop()

    def finish(self) -> Circuit:
        for name, t in self.tensors.items():
            if t.data is None:
                t.seed = derive_seed(self.seed, name)
        circuit = Circuit(self.variables, self.blocks, self.tensors, self.root[0])  # type: ignore[index]
        verify(circuit)  # a failure here is a frontend bug: reported as an internal error
        return circuit

    def stmts(self, stmts: list) -> None:
        for s in stmts:
            self.budget -= 1
            if self.budget < 0:
                self.err(s.loc, f"the program unrolls to more than {_MAX_STATEMENTS:,} statements (a runaway loop?)")
                raise UserError(list(self.diags.values()))
            try:
                getattr(self, "stmt_" + type(s).__name__.lower())(s)
            except _Bad:
                pass

    # --- statements -----------------------------------------------------------------------------

    def stmt_include(self, s: A.Include) -> None:
        path = str(Path(s.loc.file).parent / s.path)
        resolved = str(Path(path).resolve())
        if resolved in self.includes:
            chain = " -> ".join(Path(p).name for p in self.includes[self.includes.index(resolved):])
            return self.err(s.loc, f"include cycle: {chain} -> {Path(path).name}")
        if Path(path).is_dir():
            return self.err(s.loc, f"cannot include a folder: {path}")
        if not Path(path).is_file():
            self.incomplete = True  # its names are unknown: later "undefined" errors would be noise
            return self.err(s.loc, f"included file not found: {path}")
        try:
            self.include(path, None, s.loc)
        except UserError as e:  # keep checking the including file; the included one's errors are kept
            for d in e.diagnostics:
                self.diags.setdefault((d.loc.file, d.loc.line, d.loc.col), d)
            self.incomplete = True

    def stmt_seed(self, s: A.Seed) -> None:
        self.seed = self.int_expr(s.value, "the seed", minimum=0)

    def stmt_tensors(self, s: A.Tensors) -> None:
        path = Path(s.loc.file).parent / s.path
        try:
            self.tensor_file = tensorfile.load(path)  # in the file's dtypes: float_array decides what to keep
        except UserError as e:
            self.tensor_file = None
            self.tensor_file_broken = True
            self.err(s.loc, e.diagnostics[0].message + f": {path}")

    def stmt_let(self, s: A.Let) -> None:
        if s.name in self.consts:
            return self.err(s.loc, f"constant '{s.name}' is already defined")
        self.consts[s.name] = self.eval(s.value)
        if self.loop_locals:
            self.loop_locals[-1].add(s.name)

    def stmt_vardecl(self, s: A.VarDecl) -> None:
        self.poisoned.add(s.name)  # until the declaration is complete, uses of it stay quiet
        domain = self.domain(s.domain)
        dims = [self.int_expr(d, "a variable dimension", minimum=1) for d in s.dims or []]
        self.poisoned.discard(s.name)
        if s.name in self.var_dims:
            return self.err(s.loc, f"variable '{s.name}' is already declared")
        if math.prod(dims) > _MAX_VARIABLES - len(self.variables):
            return self.err(s.loc, f"too many variables: a circuit may have at most {_MAX_VARIABLES:,}")
        self.var_dims[s.name] = tuple(dims)
        for idx in np.ndindex(*dims) if dims else [()]:
            key = (s.name, tuple(int(i) for i in idx))
            self.var_ids[key] = len(self.variables)
            self.variables.append(Variable(_key_text(key).replace(" ", ""), domain))

    def domain(self, d: A.DomainSpec) -> Domain:
        if d.kind == "categorical":
            if d.arg is None:
                self.err(d.loc, "categorical needs its number of values: categorical(K)")
                raise _Bad
            return Domain("categorical", self.int_expr(d.arg, "the number of categories", minimum=1))
        if d.arg is not None:
            self.err(d.loc, f"domain '{d.kind}' takes no argument")
            raise _Bad
        return Domain(d.kind, 2 if d.kind == "binary" else 0)

    def stmt_for(self, s: A.For) -> None:
        try:
            lo, hi = self.int_expr(s.lo, "a loop bound"), self.int_expr(s.hi, "a loop bound")
            if s.var in self.consts:
                self.err(s.loc, f"loop variable '{s.var}' shadows a constant")
                raise _Bad
        except _Bad:
            self.poisoned.update(_targets(s.body))  # the body never ran: its names stay quiet
            raise
        if (hi - lo) * max(1, len(s.body)) > self.budget:
            self.err(s.loc, f"this loop runs {hi - lo:,} times: the program would unroll to more than {_MAX_STATEMENTS:,} statements")
            self.poisoned.update(_targets(s.body))
            raise _Bad
        self.loop_locals.append(set())
        try:
            for i in range(lo, hi):
                self.consts[s.var] = i
                errors = len(self.diags)
                self.stmts(s.body)
                if len(self.diags) > errors:  # reported once; later iterations would only repeat it
                    self.poisoned.update(_targets(s.body))
                    break
                for name in self.loop_locals[-1]:  # `let` inside a loop body is per iteration
                    self.consts.pop(name, None)
                self.loop_locals[-1].clear()
        finally:
            self.consts.pop(s.var, None)
            self.loop_locals.pop()

    def stmt_root(self, s: A.Root) -> None:
        if self.root is not None:
            return self.err(s.loc, f"a circuit has one root; the first is declared at line {self.root[1].loc.line}")
        self.root = (None, s)
        block = self.blocks[self.node(s.ref)]
        if block.n != 1:
            return self.err(s.ref.loc, f"the root must be a single node, but '{block.name}' has n={block.n}")
        self.root = (self.nodes[self.key(s.ref)], s)

    def stmt_nodedecl(self, s: A.NodeDecl) -> None:
        key = self.key(s.target)
        if key in self.nodes:
            return self.err(s.target.loc, f"node '{_key_text(key)}' is already defined (at {self.node_lines[key]})")
        self.nodes[key], self.node_lines[key] = None, f"{s.loc.file}:{s.loc.line}"  # poisoned until built
        call = s.call
        if call.kind not in _KWARGS:
            return self.err(call.loc, f"unknown node kind '{call.kind}' (expected input, prod or sum)")
        pos, kw = self.split_args(call)
        block, scope = getattr(self, "build_" + call.kind)(key, call, pos, kw)
        block.name = _key_text(key)
        self.nodes[key] = len(self.blocks)
        self.blocks.append(block)
        self.scopes.append(scope)

    # --- node blocks ----------------------------------------------------------------------------

    def split_args(self, call: A.Call) -> tuple[list, dict[str, A.KwArg]]:
        pos, kw = [], {}
        for a in call.args:
            if not isinstance(a, A.KwArg):
                if kw:
                    self.err(a.loc, "positional arguments must come before keyword arguments")
                pos.append(a)
            elif a.key not in _KWARGS[call.kind]:
                self.err(a.loc, f"unknown argument '{a.key}' for {call.kind} (expected {', '.join(sorted(_KWARGS[call.kind]))})")
            elif a.key in kw:
                self.err(a.loc, f"argument '{a.key}' given twice")
            else:
                kw[a.key] = a
        return pos, kw

    def build_input(self, key: Key, call: A.Call, pos: list, kw: dict) -> tuple[InputBlock, int]:
        if len(pos) != 2 or not all(isinstance(p, A.Ref) for p in pos):
            self.err(call.loc, "input takes a variable and a distribution: input(X, categorical, n=N)")
            raise _Bad
        var = self.variable(pos[0])
        dist = pos[1].name
        if pos[1].index is not None or dist not in DISTRIBUTIONS:
            self.err(pos[1].loc, f"unknown distribution '{dist}' (expected {', '.join(DISTRIBUTIONS)})")
            raise _Bad
        domain = self.variables[var].domain
        if not domain.accepts(dist):
            need = {"bernoulli": "a binary", "gaussian": "a real", "categorical": "a categorical or binary"}[dist]
            self.err(pos[1].loc, f"a {dist} input needs {need} variable, but '{self.variables[var].name}' is {domain}")
            raise _Bad
        n = self.size(call, kw)
        shape = {"categorical": (n, domain.categories), "bernoulli": (n,), "gaussian": (n, 2)}[dist]
        params = self.params(key, kw, shape, f"input:{dist}", ".p", lambda p: input_values(dist, p))
        return InputBlock(var, dist, n, params, attrs=self.block_attr(kw, n)), 1 << var

    def build_prod(self, key: Key, call: A.Call, pos: list, kw: dict) -> tuple[ProdBlock, int]:
        kids = self.children(call, pos)
        scope = 0
        for cid, loc, name in kids:
            if scope & self.scopes[cid]:
                self.err(loc, f"product children must have disjoint scopes: '{name}' shares {scope_names(self._vars(), scope & self.scopes[cid])} with an earlier child")
                raise _Bad
            scope |= self.scopes[cid]
        sizes = [self.blocks[c].n for c, _, _ in kids]
        table = None
        if "table" in kw:
            arr = self.int_table(kw["table"], len(kids), "table", "one column per child")
            bad = [j for j in range(len(kids)) if arr[:, j].min() < 0 or arr[:, j].max() >= sizes[j]]
            if bad:
                self.err(kw["table"].loc, f"table column {bad[0]} indexes outside child '{kids[bad[0]][2]}' (size {sizes[bad[0]]})")
                raise _Bad
            table = self.add_tensor(tensor_stem(_key_text(key)) + ".table", Tensor("i64", arr.shape, data=arr))
            n = len(arr)
        elif len(set(sizes)) > 1:
            self.err(call.loc, f"aligned product needs children of equal size, got {', '.join(f'{nm}: {s}' for (_, _, nm), s in zip(kids, sizes))} (give table=[...] to pair them explicitly)")
            raise _Bad
        else:
            n = sizes[0]
        if "n" in kw and self.size(call, kw) != n:
            self.err(kw["n"].loc, f"n={self.size(call, kw)} does not match the product's {n} nodes")
            raise _Bad
        return ProdBlock(tuple(c for c, _, _ in kids), n, table, attrs=self.block_attr(kw, n)), scope

    def build_sum(self, key: Key, call: A.Call, pos: list, kw: dict) -> tuple[SumBlock, int]:
        kids = self.children(call, pos)
        first, _, first_name = kids[0]
        for cid, loc, name in kids[1:]:
            if self.scopes[cid] != self.scopes[first]:
                vs = self._vars()
                self.err(loc, f"sum children must have the same scope: '{name}' covers {scope_names(vs, self.scopes[cid])}, '{first_name}' covers {scope_names(vs, self.scopes[first])}")
                raise _Bad
        n = self.size(call, kw)
        total = sum(self.blocks[c].n for c, _, _ in kids)
        block = SumBlock(tuple(c for c, _, _ in kids), n, "")
        shape: tuple[int, ...] = (n, total)
        if "tiles" in kw:
            block.block = self.int_expr(kw["block"].value, "block", minimum=1) if "block" in kw else 1
            tiles = self.int_table(kw["tiles"], 2, "tiles", "(parent tile, child tile) pairs")
            block.tiles = self.add_tensor(tensor_stem(_key_text(key)) + ".tiles", Tensor("i64", tiles.shape, data=tiles))
            probe = Circuit(self.variables, self.blocks, self.tensors, 0)
            problems = check_tiles(probe, block, total)
            if problems:
                self.err(kw["tiles"].loc, problems[0].replace(f"tile table @{block.tiles}", "tiles"))
                raise _Bad
            shape = (len(tiles), block.block, block.block)
        else:
            block.attrs = self.block_attr(kw, n)

        def check(w: np.ndarray) -> list[str]:
            # the checks read the weights from w and only the tile table from the circuit (no copy of the
            # tensor table per sum: that was quadratic in the number of blocks)
            return weight_values(Circuit(self.variables, self.blocks, self.tensors, 0), block, w)

        block.params = self.params(key, kw, shape, "sum", ".w", check)
        return block, self.scopes[first]

    def block_attr(self, kw: dict, n: int) -> dict[str, Any]:
        if "block" not in kw:
            return {}
        b = self.int_expr(kw["block"].value, "block", minimum=1)
        if n % b:
            self.err(kw["block"].loc, f"block={b} must divide the number of nodes n={n}")
            raise _Bad
        return {"block": b}

    def size(self, call: A.Call, kw: dict) -> int:
        if "n" not in kw:
            self.err(call.loc, f"{call.kind} needs n=N, its number of nodes")
            raise _Bad
        return self.int_expr(kw["n"].value, "n", minimum=1)

    def children(self, call: A.Call, pos: list) -> list[tuple[int, Loc, str]]:
        out, bad = [], False
        for p in pos:
            try:
                refs = self.spread(p) if isinstance(p, A.Spread) else [(self.key(p), p.loc)]
                for key, loc in refs:
                    out.append((self.node_key(key, loc), loc, _key_text(key)))
            except _Bad:  # keep going: every undefined child is reported, not just the first
                bad = True
        if bad:
            raise _Bad
        if not out:
            self.err(call.loc, f"{call.kind} needs at least one child node")
            raise _Bad
        return out

    def spread(self, s: A.Spread) -> list[tuple[Key, Loc]]:
        lo, hi = self.int_expr(s.lo, "a range bound"), self.int_expr(s.hi, "a range bound")
        if hi <= lo:
            self.err(s.loc, f"empty range {s.name}[{lo}..{hi}]")
            raise _Bad
        return [((s.name, (i,)), s.loc) for i in range(lo, hi)]

    # --- parameters -----------------------------------------------------------------------------

    def params(self, key: Key, kw: dict, shape: tuple[int, ...], role: str, suffix: str, check) -> str:
        if "params" in kw and "tie" in kw:
            self.err(kw["tie"].loc, "give either params= or tie=, not both")
            raise _Bad
        if "tie" in kw:
            return self.tie(kw["tie"], shape, role)
        name = tensor_stem(_key_text(key)) + suffix
        if "params" not in kw:
            return self.add_tensor(name, Tensor("f64", shape), role)
        arr = self.float_array(kw["params"])
        if arr.shape != shape:
            self.err(kw["params"].loc, f"params has shape {list(arr.shape)}, expected {list(shape)}")
            raise _Bad
        problems = check(arr)
        if problems:
            self.err(kw["params"].loc, "invalid params: " + problems[0])
            raise _Bad
        return self.add_tensor(name, Tensor(ir_dtype(arr), shape, data=arr), role)

    def tie(self, kwarg: A.KwArg, shape: tuple[int, ...], role: str) -> str:
        if not isinstance(kwarg.value, A.Ref):
            self.err(kwarg.loc, "tie= takes the name of a node whose parameters to share")
            raise _Bad
        other = self.blocks[self.node(kwarg.value)]
        name = getattr(other, "params", None)
        if name is None or self.roles.get(name) != role or self.tensors[name].shape != shape:
            what = "a product (no parameters)" if name is None else f"{self.roles.get(name)} {list(self.tensors[name].shape)}"
            self.err(kwarg.value.loc, f"cannot tie to '{other.name}': it is {what}, this node needs {role} {list(shape)}")
            raise _Bad
        return name

    def add_tensor(self, name: str, t: Tensor, role: str = "") -> str:
        self.tensors[name] = t
        self.roles[name] = role
        return name

    def float_array(self, kwarg: A.KwArg) -> np.ndarray:
        v = kwarg.value
        if isinstance(v, A.TensorRef):
            if self.tensor_file_broken:
                raise _Bad
            if self.tensor_file is None:
                self.err(v.loc, "tensor(...) needs a tensors file: declare 'tensors \"FILE.safetensors\"' first")
                raise _Bad
            if v.key not in self.tensor_file:
                self.err(v.loc, f"tensor '{v.key}' is not in the tensors file")
                raise _Bad
            arr = self.tensor_file[v.key]
            # float32 is kept (an f32 tensor: no float64 copy of a converted model's 935 MiB), the rest is float64;
            # the loader's arrays are already copies, so a float64 one is used as it is
            return arr if arr.dtype == np.float32 else arr.astype(np.float64, copy=False)
        if isinstance(v, A.ListLit):
            return self.literal(v)
        return np.array([float(self.eval(v))])

    def int_table(self, kwarg: A.KwArg, width: int, what: str, meaning: str) -> np.ndarray:
        arr = self.float_array(kwarg)
        if arr.ndim != 2 or arr.shape[1] != width or len(arr) == 0:
            self.err(kwarg.loc, f"{what} must be a non-empty list of rows of {width} integers ({meaning}), got shape {list(arr.shape)}")
            raise _Bad
        if not np.all(np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2.0**62)):
            self.err(kwarg.loc, f"{what} must hold integers")
            raise _Bad
        return arr.astype(np.int64)

    def literal(self, lit: A.ListLit) -> np.ndarray:
        def walk(v):
            return [walk(i) for i in v.items] if isinstance(v, A.ListLit) else float(self.eval(v))

        try:
            return np.array(walk(lit), dtype=np.float64)
        except ValueError:
            self.err(lit.loc, "nested lists must be rectangular (every row the same length)")
            raise _Bad from None

    # --- names and expressions ------------------------------------------------------------------

    def _vars(self) -> Circuit:
        return Circuit(self.variables, [], {}, 0)

    def key(self, ref: A.Ref) -> Key:
        return ref.name, tuple(self.int_expr(i, "an index") for i in ref.index or [])

    def node(self, ref: A.Ref) -> int:
        return self.node_key(self.key(ref), ref.loc)

    def node_key(self, key: Key, loc: Loc) -> int:
        if key not in self.nodes:
            if key[0] in self.poisoned or self.incomplete:
                raise _Bad
            hint = " (it is a variable; wrap it in input(...))" if key in self.var_ids else ""
            self.err(loc, f"undefined node '{_key_text(key)}'{hint}")
            raise _Bad
        block = self.nodes[key]
        if block is None:  # its declaration had an error, already reported
            raise _Bad
        return block

    def variable(self, ref: A.Ref) -> int:
        key = self.key(ref)
        if key not in self.var_ids:
            if ref.name in self.poisoned or self.incomplete:
                raise _Bad
            dims = self.var_dims.get(ref.name)
            if dims is not None:
                shape = "a single variable" if not dims else "an array of shape [" + ", ".join(map(str, dims)) + "]"
                self.err(ref.loc, f"index out of range: '{_key_text(key)}' does not exist, '{ref.name}' is {shape}")
                raise _Bad
            self.err(ref.loc, f"undefined variable '{_key_text(key)}'")
            raise _Bad
        return self.var_ids[key]

    def int_expr(self, e: A.Expr, what: str, minimum: int | None = None) -> int:
        v = self.eval(e)
        if not isinstance(v, int):
            self.err(e.loc, f"{what} must be an integer, got {v}")
            raise _Bad
        if minimum is not None and v < minimum:
            self.err(e.loc, f"{what} must be at least {minimum}, got {v}")
            raise _Bad
        return v

    def eval(self, e: A.Expr) -> int | float:
        if isinstance(e, A.Num):
            return e.value
        if isinstance(e, A.Neg):
            return -self.eval(e.operand)
        if isinstance(e, A.BinOp):
            return self.binop(e, self.eval(e.left), self.eval(e.right))
        if isinstance(e, A.Ref) and e.index is None and e.name in self.consts:
            return self.consts[e.name]
        if isinstance(e, (A.ListLit, A.TensorRef)):
            self.err(e.loc, "expected a number here")
            raise _Bad
        what = "a node" if (e.name, ()) in self.nodes or e.index else "not defined"
        self.err(e.loc, f"'{e.name}' is {what}: expected a number or a constant")
        raise _Bad

    def binop(self, e: A.BinOp, a: int | float, b: int | float) -> int | float:
        if e.op in "/%" and b == 0:
            self.err(e.loc, "division by zero")
            raise _Bad
        if e.op == "+":
            return a + b
        if e.op == "-":
            return a - b
        if e.op == "*":
            return a * b
        if e.op == "%":
            return a % b
        return a // b if isinstance(a, int) and isinstance(b, int) else a / b
