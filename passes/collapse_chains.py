"""``collapse-chains``: fold sum-of-sum into one sum and product-of-product into one flat product.

Pre: a verified circuit.
Post: the distribution is unchanged (exactly, up to float64 rounding of the multiplied weights), and
  * no product has a product child (products are flattened; a shared inner product stays for its other
    users, its children are referenced directly),
  * no sum has a sum child that is used by that sum alone, unless folding it would grow the sum edges
    by more than ``max_growth`` (or ``shared`` is set, which folds shared sum children too),
  * blocks left unused by the folding are removed.
Folding ``S`` over child ``T``: S's weights on T's nodes are multiplied through T's weights
(``W_S[:, T] @ W_T``); the edge pattern is the boolean product of the two patterns, kept block-sparse
at the gcd of the block sizes when it is not dense.

A ``T`` that passes its one child through (identity weights; PyJuice's compile puts ~1,100 of them into PD) is
bypassed without the matrix products: S reads T's child in T's place and keeps its own values, where that is
exactly what the products would give (:func:`_bypass_keeps`); otherwise it is folded like any other child.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

from pcc.ir.circuit import Circuit, ProdBlock, SumBlock, Tensor, ir_dtype, tensor_stem
from pcc.ir.params import dense_mask, dense_weights, gather_tiles, prod_table, scatter_tiles

from .dce import remove_unreachable
from .manager import Pass, register

_MAX_DENSE = 1 << 26  # largest [n, C] matrix the folding materialises


@register
@dataclass
class CollapseChains(Pass):
    """Folds same-type chains; see the module docstring for the contract."""

    name = "collapse-chains"
    max_growth: float = 1.0
    shared: bool = False

    def run(self, circuit: Circuit) -> Circuit:
        # Who uses each block, kept current as blocks change their children: recomputing it after every
        # fold was quadratic (PD after PyJuice's compile has ~1000 pass-through sums to fold: 9 s).
        users = [set(u) for u in circuit.users()]
        for i, b in enumerate(circuit.blocks):
            if isinstance(b, ProdBlock):
                _rewire(users, i, b, _flatten_product, circuit, b)
            elif isinstance(b, SumBlock):
                while (found := self._foldable_child(circuit, i, b, users)) is not None:
                    t, how = found
                    if isinstance(how, tuple):  # _fold_matrices' result
                        _rewire(users, i, b, _fold_sum, circuit, b, t, how)
                    else:  # T passes child ``how`` through
                        _rewire(users, i, b, _bypass, circuit, b, t, how)
        return remove_unreachable(circuit)

    def _foldable_child(self, circuit: Circuit, i: int, s: SumBlock, users: list[set[int]]) -> tuple | None:
        """``(t, how)``: a child ``t`` to fold, and how: T's child where S may just read it in T's place
        (:func:`_bypass_keeps`), else :func:`_fold_matrices` of the fold (kept for the rewrite)."""
        for t in dict.fromkeys(s.children):
            child = circuit.blocks[t]
            if not isinstance(child, SumBlock) or (not self.shared and users[t] != {i}):
                continue
            old = circuit.tensors[s.params].size + circuit.tensors[child.params].size
            total = sum(circuit.child_sizes(s)) - s.children.count(t) * child.n + sum(circuit.child_sizes(child))
            if s.n * total > _MAX_DENSE:
                continue
            through = _passed_through(circuit, child)
            if through is not None and _bypass_keeps(circuit, s, t, through):
                return t, through
            folded = _fold_matrices(circuit, s, t)
            if int(folded[0].sum()) <= self.max_growth * old:
                return t, folded
        return None


def _passed_through(circuit: Circuit, t: SumBlock) -> int | None:
    """The child that sum block ``t`` passes through unchanged (one child of ``t``'s size, identity weights,
    concrete), else None."""
    if len(t.children) != 1 or circuit.blocks[t.children[0]].n != t.n or circuit.tensors[t.params].is_random:
        return None
    w = circuit.tensors[t.params].data
    if t.tiles is None:
        return t.children[0] if np.array_equal(w, np.eye(t.n)) else None
    tiles = circuit.tensors[t.tiles].data
    diagonal = (len(tiles) == t.n // t.block and np.array_equal(tiles[:, 0], tiles[:, 1])
                and np.array_equal(np.sort(tiles[:, 0]), np.arange(len(tiles))))
    return t.children[0] if diagonal and np.array_equal(w, np.broadcast_to(np.eye(t.block), w.shape)) else None


def _bypass_keeps(circuit: Circuit, s: SumBlock, t: int, through: int) -> bool:
    """Whether :func:`_bypass` gives exactly what :func:`_fold_sum` would make of the fold (``W_S[:, T] @ I`` is
    ``W_S[:, T]`` bitwise, and the pattern is S's own): ``t`` appears once and ``through`` not at all among S's
    children, S's weights are concrete, and S is dense (all ones times T's pattern is all ones), or tiled at
    T's block size (its tiles over T's nodes are then unions of T's diagonal tiles), which is the gcd the fold
    re-tiles at, without covering the whole grid (the fold makes that dense)."""
    if s.children.count(t) != 1 or through in s.children or circuit.tensors[s.params].is_random:
        return False
    if s.tiles is None:
        return True
    inner = circuit.blocks[t]
    if inner.tiles is None or inner.block != s.block or gcd(s.n, *circuit.child_sizes(s), s.block) != s.block:
        return False
    rows, cols = s.n // s.block, sum(circuit.child_sizes(s)) // s.block
    return len(circuit.tensors[s.tiles].data) < rows * cols


def _bypass(circuit: Circuit, s: SumBlock, t: int, through: int) -> None:
    """S reads ``through`` in child ``t``'s place (see :func:`_bypass_keeps`), with new tensors as the fold gives
    (tied weights come apart the same way): S's own values, its tiles in the fold's row-major order."""
    s.children = tuple(through if k == t else k for k in s.children)
    w = circuit.tensors[s.params].data
    if s.tiles is None:
        return _store(circuit, s, w)
    tiles = circuit.tensors[s.tiles].data
    order = np.argsort(tiles[:, 0] * (sum(circuit.child_sizes(s)) // s.block) + tiles[:, 1], kind="stable")
    _store(circuit, s, w[order], tiles[order], s.block)


def _rewire(users: list[set[int]], i: int, b, rewrite, *args) -> None:
    """Run ``rewrite(*args)``, which may change the children of block ``i`` (``b``), and update ``users``."""
    before = b.children
    rewrite(*args)
    if b.children != before:
        for c in before:
            users[c].discard(i)
        for c in b.children:
            users[c].add(i)


def _flatten_product(circuit: Circuit, p: ProdBlock) -> None:
    """Replace every product child of ``p`` by that child's children (index tables composed)."""
    if not any(isinstance(circuit.blocks[c], ProdBlock) for c in p.children):
        return
    table = prod_table(circuit, p)
    kids, cols = [], []
    for j, c in enumerate(p.children):
        child = circuit.blocks[c]
        if isinstance(child, ProdBlock):
            inner = prod_table(circuit, child)[table[:, j]]  # [n, k_child]
            kids.extend(child.children)
            cols.extend(inner.T)
        else:
            kids.append(c)
            cols.append(table[:, j])
    p.children = tuple(kids)
    new = np.stack(cols, axis=1).astype(np.int64)
    aligned = all(circuit.blocks[k].n == p.n for k in kids) and np.all(new == np.arange(p.n)[:, None])
    p.table = None if aligned else _put(circuit, (p.table or tensor_stem(p.name)) + ".flat", new)


def _fold_matrices(circuit: Circuit, s: SumBlock, t: int):
    """(mask, (children, weights)) of ``s`` with child ``t`` folded in, over the new (deduplicated) children."""
    inner = circuit.blocks[t]
    sizes = circuit.child_sizes(s)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    ms, ws = dense_mask(circuit, s), dense_weights(circuit, s)
    mt, wt = dense_mask(circuit, inner), dense_weights(circuit, inner)
    pieces: dict[int, list] = {}
    for j, c in enumerate(s.children):
        seg = slice(starts[j], starts[j + 1])
        if c == t:
            # 0/1 matrices: float64 counts are exact (< 2**53) and go through BLAS, unlike int64 products
            reach = ms[:, seg].astype(np.float64) @ mt.astype(np.float64) > 0
            _add_inner(circuit, inner, pieces, reach, ws[:, seg] @ wt)
        else:
            _accumulate(pieces, c, ms[:, seg], ws[:, seg])
    kids = list(pieces)
    mask = np.concatenate([pieces[k][0] for k in kids], axis=1)
    w = np.concatenate([pieces[k][1] for k in kids], axis=1)
    return mask, (kids, w)


def _add_inner(circuit: Circuit, inner: SumBlock, pieces: dict, mask: np.ndarray, w: np.ndarray) -> None:
    starts = np.concatenate([[0], np.cumsum(circuit.child_sizes(inner))])
    for j, c in enumerate(inner.children):
        seg = slice(starts[j], starts[j + 1])
        _accumulate(pieces, c, mask[:, seg], w[:, seg])


def _accumulate(pieces: dict, child: int, mask: np.ndarray, w: np.ndarray) -> None:
    if child in pieces:  # the same child reached twice: its edges merge, their weights add
        m0, w0 = pieces[child]
        pieces[child] = (m0 | mask, w0 + w)
    else:
        pieces[child] = (mask.copy(), w.copy())


def _fold_sum(circuit: Circuit, s: SumBlock, t: int, folded: tuple) -> None:
    """Rewrite ``s`` with child ``t`` folded in (in place), given ``folded = _fold_matrices(circuit, s, t)``;
    new tensors get fresh names."""
    mask, (kids, w) = folded
    s.children = tuple(kids)
    if mask.all():
        return _store(circuit, s, w)
    b = _tile_size(circuit, s, t)
    tiles = np.argwhere(mask.reshape(s.n // b, b, -1, b).any(axis=(1, 3))).astype(np.int64)
    if not np.array_equal(scatter_tiles(tiles, np.ones((len(tiles), b, b), bool), *mask.shape, b), mask):
        b = 1  # the pattern is not tile-structured at b: fall back to scalar tiles (always exact)
        tiles = np.argwhere(mask).astype(np.int64)
    _store(circuit, s, gather_tiles(w, tiles, b), tiles, b)


def _store(circuit: Circuit, s: SumBlock, w: np.ndarray, tiles: np.ndarray | None = None, block: int = 1) -> None:
    """S's new encoding under fresh tensor names: dense weights ``w``, or ``[m, block, block]`` tiles ``w`` at
    ``tiles`` (the tile table first, then the weights: the names a fold and a bypass both give)."""
    stem = tensor_stem(s.name)
    s.block = block
    s.tiles = None if tiles is None else _put(circuit, stem + ".tiles", tiles)
    s.params = _put(circuit, stem + ".w", w)


def _tile_size(circuit: Circuit, s: SumBlock, t: int) -> int:
    g = s.n
    for k in s.children:
        g = gcd(g, circuit.blocks[k].n)
    for blk in (s, circuit.blocks[t]):
        if blk.tiles is not None:
            g = gcd(g, blk.block)
    return g


def _put(circuit: Circuit, base: str, data: np.ndarray) -> str:
    """Add a concrete tensor under a name not yet taken (``base``, ``base.1``, ...)."""
    name, k = base, 0
    while name in circuit.tensors:
        k += 1
        name = f"{base}.{k}"
    # a fold's weights are float64 (dense_weights); a bypass keeps S's own, float32 ones included
    circuit.tensors[name] = Tensor(ir_dtype(data), tuple(data.shape), data=data)
    return name
