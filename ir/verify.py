"""The IR verifier: structure, index bounds, smoothness, decomposability and normalised parameters.

Contract: ``verify(c)`` returns None for a valid circuit and otherwise raises :class:`VerifyError`
listing every problem found, each naming the offending block and showing the IR around it. Checks run
at block granularity (scopes are bitmasks, payload checks are vectorised numpy), so they are cheap next
to the edges they cover. Random tensors are normalised by construction and not re-read.

Value checks (finite, in range, normalised) read every parameter, so their results are remembered by the
arrays they read for as long as those arrays live (:class:`ValueChecks`): tensor payloads are immutable
(``Circuit.copy`` shares them), so a pass that leaves a tensor alone does not pay for it again. A pipeline
verifies after each of its passes; only the tensors a pass made are read.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .circuit import FLOAT_TYPES, NUMPY_DTYPES, Block, Circuit, InputBlock, ProdBlock, SumBlock, scope_names, scopes
from .params import parent_totals
from .printer import _block_line

TOLERANCE = 1e-6


@dataclass(slots=True)
class Problem:
    """One verifier finding; ``block`` is None for circuit-level problems."""

    block: int | None
    message: str


class VerifyError(Exception):
    """The circuit violates an IR invariant; ``problems`` lists each finding with its block."""

    def __init__(self, circuit: Circuit, problems: list[Problem]):
        self.circuit, self.problems = circuit, problems
        super().__init__(self.render())

    def render(self) -> str:
        """Each problem as ``block %i (name): message`` followed by the IR lines around that block."""
        return "\n".join(_render(self.circuit, p) for p in self.problems)


def _render(c: Circuit, p: Problem) -> str:
    if p.block is None:
        return f"error: {p.message}"
    b = c.blocks[p.block]
    label = f"%{p.block}" + (f" ({b.name})" if b.name else "")
    lines = [f"error: block {label}: {p.message}"]
    for i in range(max(0, p.block - 2), min(len(c.blocks), p.block + 3)):
        mark = ">" if i == p.block else " "
        lines.append(f"  {mark} {_block_line(i, c.blocks[i], c)}")
    return "\n".join(lines)


class ValueChecks:
    """Value-check results by the identity of the arrays they read, dropped when an array is freed.

    Contract: ``get(arrays, params, check)`` returns ``check()``'s result for these very arrays (and these
    hashable ``params``), calling ``check`` only the first time. Sound because tensor payloads are never
    written in place; an array whose id is reused after it is freed is a different key (its weak
    reference no longer answers the old object).
    """

    def __init__(self) -> None:
        self._results: dict[tuple, tuple[tuple[weakref.ref, ...], list[str]]] = {}

    def get(self, arrays: tuple[np.ndarray, ...], params: tuple, check: Callable[[], list[str]]) -> list[str]:
        key = tuple(id(a) for a in arrays) + params
        hit = self._results.get(key)
        if hit is not None and all(r() is a for r, a in zip(hit[0], arrays)):
            return hit[1]
        result = check()
        drop = lambda _ref, key=key, results=self._results: results.pop(key, None)  # noqa: E731
        self._results[key] = (tuple(weakref.ref(a, drop) for a in arrays), result)
        return result

    def __len__(self) -> int:
        return len(self._results)


VALUE_CHECKS = ValueChecks()


def verify(circuit: Circuit, check_values: bool = True) -> None:
    """Raise VerifyError unless ``circuit`` satisfies every IR invariant."""
    problems = _circuit_problems(circuit)
    if not problems:
        problems = _block_problems(circuit, check_values)
    if not problems and circuit.attrs.get("layered"):
        problems = _layer_problems(circuit)
    if problems:
        raise VerifyError(circuit, problems)


def _circuit_problems(c: Circuit) -> list[Problem]:
    out = []
    if not c.blocks:
        return [Problem(None, "the circuit has no blocks")]
    if not 0 <= c.root < len(c.blocks):
        return [Problem(None, f"root %{c.root} is not a block")]
    if c.blocks[c.root].n != 1:
        out.append(Problem(c.root, f"the root must be a single node, but has n={c.blocks[c.root].n}"))
    for i, b in enumerate(c.blocks):
        if b.n < 1:
            out.append(Problem(i, f"n={b.n}: a block needs at least one node"))
        if not isinstance(b, InputBlock) and not b.children:
            out.append(Problem(i, "an inner block needs at least one child"))
        bad = [k for k in b.children if not 0 <= k < i]
        if bad:
            out.append(Problem(i, f"child %{bad[0]} does not precede the block (cycle or bad order)"))
    return out


def _block_problems(c: Circuit, check_values: bool) -> list[Problem]:
    sc = scopes(c)
    roles: dict[str, str] = {}
    out: list[Problem] = []
    for i, b in enumerate(c.blocks):
        try:
            msgs = _check_block(c, b, sc, roles, check_values)
        except KeyError as e:
            msgs = [f"undefined tensor @{e.args[0]}"]
        out.extend(Problem(i, m) for m in msgs)
    return out


def _check_block(c: Circuit, b: Block, sc: list[int], roles: dict, check_values: bool) -> list[str]:
    if isinstance(b, InputBlock):
        return _check_input(c, b, roles, check_values)
    if isinstance(b, ProdBlock):
        return _check_prod(c, b, sc)
    return _check_sum(c, b, sc, roles, check_values)


def _role(roles: dict[str, str], name: str, role: str) -> list[str]:
    seen = roles.setdefault(name, role)
    if seen != role:
        return [f"tensor @{name} is tied between blocks of different roles ({seen} and {role})"]
    return []


def _check_tensor(c: Circuit, name: str, dtypes: tuple[str, ...], shape: tuple[int, ...], what: str) -> list[str]:
    t = c.tensors[name]
    if t.dtype not in dtypes:
        return [f"{what} @{name} must be {' or '.join(dtypes)}, not {t.dtype}"]
    if t.data is not None and t.data.dtype != NUMPY_DTYPES[t.dtype]:  # what the text would print and read back
        return [f"{what} @{name} is declared {t.dtype} but holds {t.data.dtype} values"]
    if tuple(t.shape) != tuple(shape):
        return [f"{what} @{name} has shape {list(t.shape)}, expected {list(shape)}"]
    return []


def _check_input(c: Circuit, b: InputBlock, roles: dict, check_values: bool) -> list[str]:
    if not 0 <= b.var < len(c.variables):
        return [f"variable index {b.var} out of range"]
    dom = c.variables[b.var].domain
    if not dom.accepts(b.dist):
        return [f"a {b.dist} input cannot model variable {c.variables[b.var].name} of domain {dom}"]
    shape = {"categorical": (b.n, dom.categories), "bernoulli": (b.n,), "gaussian": (b.n, 2)}[b.dist]
    errs = _role(roles, b.params, f"{b.dist}{list(shape)}") or _check_tensor(c, b.params, FLOAT_TYPES, shape, "parameters")
    t = c.tensors[b.params]
    if errs or not check_values or t.is_random:
        return errs
    return input_values(b.dist, t.data)


def input_value_problems(dist: str, p: np.ndarray) -> list[str]:
    """Why input parameters ``p`` are invalid for ``dist`` (empty when they are fine)."""
    lo, hi = _value_range(p)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ["parameters hold NaN or infinity"]
    if dist == "gaussian":
        return [] if np.all(p[:, 1] > 0) else ["gaussian standard deviations must be positive"]
    if lo < 0 or hi > 1:
        return ["probabilities must lie in [0, 1]"]
    if dist == "categorical":
        bad = np.flatnonzero(np.abs(p.sum(axis=1, dtype=np.float64) - 1) > TOLERANCE)  # f32 rows: in float64
        if len(bad):
            return [f"categorical probabilities of node {bad[0]} sum to {p[bad[0]].sum():.6g}, not 1"]
    return []


def _value_range(a: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of ``a`` (NaN when it holds a NaN; 0 for an empty array): two passes, no temporaries."""
    if a.size == 0:
        return 0.0, 0.0
    return float(a.min()), float(a.max())


def _check_prod(c: Circuit, b: ProdBlock, sc: list[int]) -> list[str]:
    errs = []
    seen = 0
    for k in b.children:
        if seen & sc[k]:
            errs.append(f"not decomposable: child %{k} shares variables {scope_names(c, seen & sc[k])} with an earlier child")
        seen |= sc[k]
    sizes = c.child_sizes(b)
    if b.table is None:
        if any(s != b.n for s in sizes):
            errs.append(f"an aligned product needs children of size n={b.n}, got sizes {sizes}")
        return errs
    errs += _check_tensor(c, b.table, ("i64",), (b.n, len(b.children)), "index table")
    if not errs:
        table = c.tensors[b.table].data
        if table is None:
            return ["index table must be concrete, not random"]
        over = np.flatnonzero((table < 0).any(axis=0) | (table >= np.array(sizes)).any(axis=0))
        errs += [f"index table column {j} points outside child %{b.children[j]} (size {sizes[j]})" for j in over]
    return errs


def _check_sum(c: Circuit, b: SumBlock, sc: list[int], roles: dict, check_values: bool) -> list[str]:
    first = sc[b.children[0]]
    errs = [f"not smooth: child %{k} has scope {scope_names(c, sc[k])}, child %{b.children[0]} has {scope_names(c, first)}"
            for k in b.children[1:] if sc[k] != first]
    total = sum(c.child_sizes(b))
    if b.tiles is None:
        shape: tuple[int, ...] = (b.n, total)
    else:
        tile_errs = check_tiles(c, b, total)
        if tile_errs:
            return errs + tile_errs
        shape = (len(c.tensors[b.tiles].data), b.block, b.block)
    errs += _role(roles, b.params, f"sum{list(shape)}") or _check_tensor(c, b.params, FLOAT_TYPES, shape, "weights")
    t = c.tensors[b.params]
    if errs or not check_values or t.is_random:
        return errs
    # remembered by what they read: tied blocks share one tensor (an HMM's 128 steps would otherwise re-check
    # the same million weights 128 times), and so do the circuits before and after a pass
    return weight_values(c, b, t.data)


def check_tiles(c: Circuit, b: SumBlock, total: int) -> list[str]:
    """Why a block-sparse sum's tile table is invalid (empty when fine); the table's contents are read once
    per array and grid (:data:`VALUE_CHECKS`), as parameter values are."""
    if b.block < 1 or b.n % b.block or total % b.block:
        return [f"block={b.block} must divide n={b.n} and the children's total size {total}"]
    t = c.tensors[b.tiles]
    if t.dtype != "i64" or len(t.shape) != 2 or t.shape[1] != 2 or t.data is None:
        return [f"tile table @{b.tiles} must be a concrete i64 [m, 2] tensor"]
    rows, cols = b.n // b.block, total // b.block
    found = VALUE_CHECKS.get((t.data,), ("tiles", rows, cols), lambda: _tile_grid_problems(t.data, rows, cols))
    return [f"tile table @{b.tiles} {m}" for m in found]


def _tile_grid_problems(tiles: np.ndarray, rows: int, cols: int) -> list[str]:
    """What is wrong with the ``[m, 2]`` tile table ``tiles`` of a ``rows x cols`` grid (messages without the name)."""
    if len(tiles) and (tiles.min() < 0 or tiles[:, 0].max() >= rows or tiles[:, 1].max() >= cols):
        return [f"has a tile outside the {rows}x{cols} tile grid"]
    keys = np.sort(tiles[:, 0] * cols + tiles[:, 1])  # sorted 1-D keys: a repeat is two equal neighbours
    if np.any(keys[1:] == keys[:-1]):
        return ["lists a tile twice"]
    covered = np.zeros(rows, dtype=bool)
    covered[tiles[:, 0]] = True
    if not covered.all():
        empty = int(np.argmin(covered))  # the first parent tile without a child tile
        return [f"gives parent tile {empty} no child tile (its nodes would have no edges)"]
    return []


def input_values(dist: str, p: np.ndarray) -> list[str]:
    """:func:`input_value_problems`, remembered by the array (:data:`VALUE_CHECKS`): lowering checks each
    tensor it reads with this, and the verifier that follows it then reads none of them again."""
    return VALUE_CHECKS.get((p,), ("input", dist), lambda: input_value_problems(dist, p))


def weight_values(c: Circuit, b: SumBlock, w: np.ndarray) -> list[str]:
    """:func:`weight_value_problems` of ``w`` as ``b``'s weights, remembered as :func:`input_values` is (the
    totals depend on the weights and, for tiled sums, on the tile table and the block size)."""
    arrays = (w,) if b.tiles is None else (w, c.tensors[b.tiles].data)
    return VALUE_CHECKS.get(arrays, ("sum", b.n, b.block if b.tiles is not None else 1),
                            lambda: weight_value_problems(c, b, w))


def weight_value_problems(c: Circuit, b: SumBlock, w: np.ndarray) -> list[str]:
    """Why sum weights ``w`` are invalid: negative, non-finite or not normalised per node."""
    lo, hi = _value_range(w)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
        return ["weights must be finite and non-negative"]
    totals = parent_totals(c, b, w)
    bad = np.flatnonzero(np.abs(totals - 1) > TOLERANCE)
    if len(bad):
        return [f"weights of node {bad[0]} sum to {totals[bad[0]]:.6g}, not 1 (not normalised)"]
    return []


def _layer_problems(c: Circuit) -> list[Problem]:
    """Layered IR: inputs in layer 0, products odd, sums even, children strictly lower, order by layer."""
    out, prev = [], 0
    for i, b in enumerate(c.blocks):
        layer = b.attrs.get("layer")
        if not isinstance(layer, int):
            out.append(Problem(i, "layered IR: block has no integer 'layer' attribute"))
            continue
        parity = {"input": None, "prod": 1, "sum": 0}[b.kind]
        if (parity is None and layer != 0) or (parity is not None and (layer < 1 or layer % 2 != parity)):
            out.append(Problem(i, f"layered IR: a {b.kind} block cannot sit in layer {layer}"))
        low = [k for k in b.children if c.blocks[k].attrs.get("layer", -1) >= layer]
        if low:
            out.append(Problem(i, f"layered IR: child %{low[0]} is not in a lower layer"))
        if layer < prev:
            out.append(Problem(i, "layered IR: blocks are not ordered by layer"))
        prev = max(prev, layer)
    return out
