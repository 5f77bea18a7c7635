"""Random small circuits for property tests.

Every structural choice goes through ``draw(lo, hi)`` (an integer in [lo, hi]), so hypothesis can
shrink failures (``draw = lambda lo, hi: data.draw(st.integers(lo, hi))``) and plain numpy can drive it
too. The circuits exercise every IR feature: all three distributions, aligned and table products,
dense and block-sparse sums, several children, sum-of-sum and product-of-product chains, shared
blocks (DAGs), tied parameters and duplicate input blocks.
"""
from __future__ import annotations

import itertools
from math import gcd
from typing import Callable

import numpy as np

from pcc.ir import Circuit, Domain, InputBlock, ProdBlock, SumBlock, Tensor, Variable, scopes
from pcc.ir.params import randomize

Draw = Callable[[int, int], int]


def random_circuit(draw: Draw, max_vars: int = 4, real_vars: bool = True) -> Circuit:
    """A valid circuit with concrete random parameters; see the module docstring."""
    g = _Gen(draw)
    for v in range(draw(1, max_vars)):
        g.variable(v, real_vars)
    for _ in range(draw(2, 10)):
        [g.prod, g.sum, g.chain_sum, g.chain_prod, g.duplicate_input][draw(0, 4)]()
    g.close()
    c = Circuit(g.vars, g.blocks, g.tensors, len(g.blocks) - 1)
    randomize(c, draw(0, 2**31), zero_fraction=0.2 if draw(0, 3) == 0 else 0.0)
    return c


def random_circuits(seed: int, count: int, **kw) -> list[Circuit]:
    """``count`` circuits driven by numpy (for quick loops outside hypothesis)."""
    rng = np.random.default_rng(seed)
    return [random_circuit(lambda lo, hi: int(rng.integers(lo, hi + 1)), **kw) for _ in range(count)]


class _Gen:
    def __init__(self, draw: Draw):
        self.draw = draw
        self.vars: list[Variable] = []
        self.blocks: list = []
        self.tensors: dict[str, Tensor] = {}

    def pick(self, items: list):
        return items[self.draw(0, len(items) - 1)]

    def add(self, block) -> int:
        block.name = f"b{len(self.blocks)}"
        self.blocks.append(block)
        return len(self.blocks) - 1

    def tensor(self, dtype: str, shape: tuple, data=None) -> str:
        name = f"t{len(self.tensors)}"
        self.tensors[name] = Tensor(dtype, shape, data=data, seed=None if data is not None else len(self.tensors))
        return name

    def scope_of(self, i: int) -> int:
        return scopes(Circuit(self.vars, self.blocks[: i + 1], self.tensors, i))[i]

    def variable(self, v: int, real_vars: bool) -> None:
        kind = self.draw(0, 2 if real_vars else 1)
        dom = [Domain("binary", 2), Domain("categorical", 3), Domain("real", 0)][kind]
        self.vars.append(Variable(f"X{v}", dom))
        self.input(v)

    def input(self, v: int) -> int:
        dom = self.vars[v].domain
        dist = {"binary": self.pick(["bernoulli", "categorical"]), "categorical": "categorical", "real": "gaussian"}[dom.kind]
        n = self.draw(1, 4)
        shape = {"bernoulli": (n,), "categorical": (n, dom.categories), "gaussian": (n, 2)}[dist]
        return self.add(InputBlock(v, dist, n, self.tensor("f64", shape)))

    def duplicate_input(self) -> None:
        inputs = [i for i, b in enumerate(self.blocks) if isinstance(b, InputBlock)]
        b = self.blocks[self.pick(inputs)]
        self.add(InputBlock(b.var, b.dist, b.n, b.params))  # ties the tensor: dedupe merges it

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.blocks)):
            out.setdefault(self.scope_of(i), []).append(i)
        return out

    def prod(self, kids: list[int] | None = None) -> int | None:
        if kids is None:
            kids = self.disjoint(self.draw(2, 3))
            if len(kids) < 2:
                return None
        sizes = [self.blocks[k].n for k in kids]
        if len(set(sizes)) == 1 and self.draw(0, 1):
            return self.add(ProdBlock(tuple(kids), sizes[0]))
        n = self.draw(1, 5)
        table = np.array([[self.draw(0, s - 1) for s in sizes] for _ in range(n)], dtype=np.int64)
        return self.add(ProdBlock(tuple(kids), n, self.tensor("i64", table.shape, table)))

    def disjoint(self, k: int) -> list[int]:
        chosen, seen = [], 0
        for _ in range(k * 3):
            i = self.draw(0, len(self.blocks) - 1)
            s = self.scope_of(i)
            if not s & seen:
                chosen.append(i)
                seen |= s
            if len(chosen) == k:
                break
        return chosen

    def sum(self, kids: list[int] | None = None, n: int | None = None) -> int:
        if kids is None:
            group = self.pick(list(self.groups().values()))
            kids = [self.pick(group) for _ in range(self.draw(1, 3))]
        n = n or self.draw(1, 4)
        sizes = [self.blocks[k].n for k in kids]
        total = sum(sizes)
        b = gcd(n, *sizes)
        if b > 1 and self.draw(0, 1):
            return self.add(self.sparse(kids, n, total, b))
        tie = [blk.params for blk in self.blocks if isinstance(blk, SumBlock) and blk.tiles is None
               and self.tensors[blk.params].shape == (n, total)]
        params = self.pick(tie) if tie and self.draw(0, 2) == 0 else self.tensor("f64", (n, total))
        return self.add(SumBlock(tuple(kids), n, params))

    def sparse(self, kids: list[int], n: int, total: int, b: int) -> SumBlock:
        rows, cols = n // b, total // b
        grid = list(itertools.product(range(rows), range(cols)))
        keep = [t for t in grid if self.draw(0, 1)]
        for r in range(rows):  # every parent tile needs at least one child tile
            if not any(t[0] == r for t in keep):
                keep.append((r, self.draw(0, cols - 1)))
        tiles = np.array(sorted(keep), dtype=np.int64)
        return SumBlock(tuple(kids), n, self.tensor("f64", (len(tiles), b, b)), self.tensor("i64", tiles.shape, tiles), b)

    def chain_sum(self) -> None:
        sums = [i for i, blk in enumerate(self.blocks) if isinstance(blk, SumBlock)]
        if sums:
            self.sum([self.pick(sums)])

    def chain_prod(self) -> None:
        prods = [i for i, blk in enumerate(self.blocks) if isinstance(blk, ProdBlock)]
        if not prods:
            return
        p = self.pick(prods)
        rest = [i for i in range(len(self.blocks)) if not self.scope_of(i) & self.scope_of(p)]
        if rest:
            self.prod([p, self.pick(rest)])

    def close(self) -> None:
        """Cover every variable with disjoint blocks, multiply them, and mix into a single root."""
        parts, seen = [], 0
        for i in range(len(self.blocks) - 1, -1, -1):
            s = self.scope_of(i)
            if not s & seen:
                parts.append(i)
                seen |= s
        top = parts[0] if len(parts) == 1 else self.prod(parts)
        self.sum([top], n=1)


def random_inputs(circuit: Circuit, rng: np.random.Generator, batch: int = 16, missing: float = 0.25):
    """Random data ``[batch, V]`` in every variable's domain, and a random missing mask."""
    cols = []
    for v in circuit.variables:
        k = v.domain.categories
        cols.append(rng.normal(size=batch) if k == 0 else rng.integers(0, k, size=batch).astype(float))
    x = np.stack(cols, axis=1)
    return x, rng.random(x.shape) < missing


def all_assignments(circuit: Circuit) -> np.ndarray:
    """Every joint assignment of an all-discrete circuit, ``[prod K, V]``."""
    ks = [v.domain.categories for v in circuit.variables]
    return np.array(list(itertools.product(*[range(k) for k in ks])), dtype=float)


def _builder() -> tuple[list, dict[str, Tensor], Callable, Callable]:
    """``(blocks, tensors, add, tensor)`` for a hand-built circuit: ``add(block)`` names it ``b<i>`` and returns its
    index, ``tensor(dtype, shape, data=None)`` adds ``t<i>`` (seeded by its index when it has no data)."""
    blocks: list = []
    tensors: dict[str, Tensor] = {}

    def add(block) -> int:
        block.name = f"b{len(blocks)}"
        blocks.append(block)
        return len(blocks) - 1

    def tensor(dtype: str, shape: tuple, data=None) -> str:
        name = f"t{len(tensors)}"
        tensors[name] = Tensor(dtype, shape, data=data, seed=None if data is not None else len(tensors))
        return name
    return blocks, tensors, add, tensor


def tile_ordered_circuit() -> Circuit:
    """Block-sparse sums whose op tiles (``block-edges``) are larger than their own tiles, so the plan stores
    their weights by op tiles (:class:`pcc.backend.plan.TileOrder`): two parent tiles of 16 over different
    pairs of child tiles (op tiles 16 x 32), pairs of parent tiles over the same children (32 x 64), a sum
    tied to the first over other children, and ``block=8`` tiles of a 24 x 40 sum whose op tiles (32 x 16)
    are cut short. Four categorical variables; the sums of X0, X1 and of X2, X3 meet in products."""
    dom = Domain("categorical", 4)
    blocks, tensors, add, tensor = _builder()

    def sparse(kids: tuple, n: int, block: int, tiles: list[tuple[int, int]], params: str | None = None) -> int:
        table = np.array(tiles, dtype=np.int64)
        params = params or tensor("f64", (len(table), block, block))
        return add(SumBlock(kids, n, params, tensor("i64", table.shape, table), block))

    def products(v: int) -> tuple:
        x = [[add(InputBlock(u, "categorical", 32, tensor("f64", (32, 4)))) for _ in range(2)] for u in (v, v + 1)]
        return tuple(add(ProdBlock((x[0][a], x[1][b]), 32)) for a, b in ((0, 0), (1, 1), (0, 1), (1, 0)))

    left, right = products(0), products(2)
    crossed = [(0, 0), (0, 1), (0, 4), (0, 5), (1, 2), (1, 3), (1, 6), (1, 7)]
    halves = [(r, c) for r in range(4) for c in ((0, 1, 2, 3) if r < 2 else (4, 5, 6, 7))]
    s1 = sparse(left, 32, 16, crossed)
    tied = sparse(right, 32, 16, crossed, blocks[s1].params)
    small = add(ProdBlock(tuple(add(InputBlock(v, "categorical", 8, tensor("f64", (8, 4)))) for v in (0, 1)), 8))
    cut = sparse((left[0], small), 24, 8, [(r, c) for r in range(3) for c in range(5)])
    tops = [add(ProdBlock((s1, tied), 32)),
            add(ProdBlock((sparse(left, 64, 16, halves), sparse(right, 64, 16, halves)), 64)),
            add(ProdBlock((cut, add(SumBlock(right, 24, tensor("f64", (24, 128))))), 24))]
    add(SumBlock(tuple(tops), 1, tensor("f64", (1, 120))))
    c = Circuit([Variable(f"X{v}", dom) for v in range(4)], blocks, tensors, len(blocks) - 1)
    randomize(c, 7)
    return c


def shared_halves_circuit(reads: tuple[tuple[int, ...], ...] = ((0, 1, 3, 4), (0, 1, 2, 4))) -> Circuit:
    """Sums whose two parent tiles read different subsets of their children, sharing some (a converted PD
    region's, from PyJuice's ``juice.compile``): two 64-node sums over five 64-node products each, in 32 x 32
    tiles, parent tile ``t`` reading the products ``reads[t]``. The default, products 0, 1, 3, 4 and 0, 1, 2, 4,
    fills 80% of each sum's 64 x 320 matrix, which ``block-edges`` marks ``holes`` at ``max-holes`` 1.25 or
    more, the default included (stored whole, run as one dense group per sum); :func:`sparse_halves_circuit`'s
    fill stays below the default. Otherwise 32 x 64 op tiles whose children the two parent tiles share. Four
    categorical variables."""
    dom = Domain("categorical", 4)
    blocks, tensors, add, tensor = _builder()

    halves = [(t, c) for t, products in enumerate(reads) for p in products for c in (2 * p, 2 * p + 1)]
    table = np.array(halves, dtype=np.int64)

    def region(v: int) -> int:
        kids = tuple(add(ProdBlock(tuple(add(InputBlock(u, "categorical", 64, tensor("f64", (64, 4))))
                                         for u in (v, v + 1)), 64)) for _ in range(5))
        return add(SumBlock(kids, 64, tensor("f64", (len(table), 32, 32)), tensor("i64", table.shape, table), 32))

    top = add(ProdBlock((region(0), region(2)), 64))
    add(SumBlock((top,), 1, tensor("f64", (1, 64))))
    c = Circuit([Variable(f"X{v}", dom) for v in range(4)], blocks, tensors, len(blocks) - 1)
    randomize(c, 11)
    return c


def sparse_halves_circuit() -> Circuit:
    """:func:`shared_halves_circuit` with parent tiles reading products 0, 1, 3 and 0, 2, 4: 60% of each sum's
    matrix, 1.67 slots per edge, above ``block-edges``' default ``max-holes`` (1.5), so its tiles stay
    block-sparse and run on the generic kernels, the two parent tiles sharing child tiles (product 0's)."""
    return shared_halves_circuit(((0, 1, 3), (0, 2, 4)))
