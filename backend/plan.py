"""Plan: the layered IR lowered to buffers, index tables and launch configurations (data, not code).

Node values live in one ``[rows, batch]`` buffer in log space; every scalar node owns a row. Three rows
come first: ``ZERO`` (log 1: padding for products), ``NEG`` (log 0: padding for sum children) and ``PAD``
(padding parents: never written, value 0, flow 0). Parameters are flat per kind:

* ``sum_w``: every sum tensor's weights, flattened, then one 0.0 slot (``pad_slot``) for padded edges
  (float64, or the float32 that :func:`build_plan` was asked for: a float32 model's weights rounded once);
  ``sum_parent[e]`` (int32) names the parent row-group of weight ``e`` (for EM normalisation; tied tensors share),
  kept as its runs (``sum_runs``) and made whole only where asked for (the torch EM update, a saved module).
  A block-sparse tensor whose op tiles are larger than its own tiles is stored by op tiles
  (:class:`TileOrder`, ``Plan.sum_orders``), so that its weights are strided blocks; one that ``block-edges``
  marked ``holes`` as its block's whole matrix, the slots of missing edges zero and in the pad slot's group;
  ``Plan.tensor_values`` reads any tensor back in its own order;
* ``cat[K]``: ``[R, K]`` categorical tables (:class:`Tables`: kept as their blocks' rows until read whole),
  ``bern``: ``[R]`` probabilities, ``gauss``: ``[R, 2]`` (mean, std).

Ops run layer by layer. A :class:`SumOp` covers sum blocks of one layer with a common tile shape: parent
tile ``t`` writes rows ``out_rows[t]`` from its ``kmax`` child tiles ``child_rows[t]`` with weights
``sum_w[weight_ids[t]]`` — the block-sparse form that maps onto ``tl.dot``. Contract: evaluating the ops
in order reproduces the reference interpreter's values (tests check this).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property

import numpy as np

from pcc.ir.circuit import Circuit, InputBlock, SumBlock
from pcc.ir.params import array, prod_table, tied_sums, tile_table

ZERO, NEG, PAD = 0, 1, 2
FIRST_ROW = 3


def ranks(counts: np.ndarray) -> np.ndarray:
    """Each element's position within its group, for consecutive groups of ``counts[g]`` elements
    (``[2, 3]`` gives ``[0, 1, 0, 1, 2]``)."""
    counts = np.asarray(counts)
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def maximal_runs(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(start, length)`` (int64) of the maximal runs of equal elements of ``a``, in order."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    start = np.concatenate([np.zeros(1, dtype=np.int64), _changes(a)])
    return start, np.diff(np.append(start, len(a)))


def value_runs(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`maximal_runs` of ``a`` with each run's value: ``(start, length, value)``."""
    start, length = maximal_runs(a)
    return start, length, a[start]


def _changes(a: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Indices ``i >= 1`` where ``a[i] != a[i - 1]``, in order. Compared a chunk at a time into one small buffer:
    a whole edge-sized comparison took 0.33 s over HCLT 512's 142M sum edges on the development CPU, the
    chunked one 0.05 s (the same result)."""
    buf, out = np.empty(min(chunk, max(len(a) - 1, 0)), dtype=bool), []
    for lo in range(0, len(a) - 1, chunk):
        hi = min(len(a) - 1, lo + chunk)
        np.not_equal(a[lo + 1:hi + 1], a[lo:hi], out=buf[:hi - lo])
        out.append(np.flatnonzero(buf[:hi - lo]) + (lo + 1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


@dataclass
class InputOp:
    """Rows ``start .. start+n`` hold ``dist`` inputs over ``var[i]`` with parameter row ``prow[i]``."""

    dist: str
    k: int
    start: int
    var: np.ndarray
    prow: np.ndarray

    @property
    def n(self) -> int:
        return len(self.var)

    def var_runs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(first rows, lengths)`` of the runs of consecutive rows that share one variable."""
        runs = np.concatenate([[0], np.flatnonzero(np.diff(self.var)) + 1])
        return runs, np.diff(np.concatenate([runs, [self.n]]))

    def var_tiles(self, size: int) -> np.ndarray:
        """``[T, 2]``: first row and end row (exclusive) of tiles of at most ``size`` consecutive rows that
        share one variable.

        A tile ends at ``size`` rows or where the variable changes, whichever comes first; the kernel masks
        rows past that end, so one variable's column of the data serves the whole tile. (The end is explicit:
        a mask by "same variable" also took rows of a later run of that variable within ``size`` rows, as in
        RAT-SPN's repetitions, and counted them twice.)
        """
        runs, lengths = self.var_runs()
        per_run = -(-lengths // size)
        first = np.repeat(runs, per_run) + size * ranks(per_run)
        end = np.minimum(first + size, np.repeat(runs + lengths, per_run))
        return np.stack([first, end], axis=1)


@dataclass
class ProdOp:
    """Rows ``start .. start+n``: each the sum (log space) of its ``children`` rows (``ZERO``-padded)."""

    start: int
    children: np.ndarray  # [n, k] int

    @property
    def n(self) -> int:
        return len(self.children)

    @cached_property  # asked for by every pass over the plan's ops (1,400 times in HMM 1024's compile)
    def shared_children(self) -> bool:
        """True when a child row has several parents in this op (its flows then need atomics)."""
        return _repeats(self.children, ZERO)

    @property
    def child_atomics(self) -> bool:
        """Whether the backward pass adds flows into this op's children atomically (shared, not gathered)."""
        return self.shared_children and not self.gathers

    @property
    def gathers(self) -> bool:
        """Whether the backward pass gathers each shared child's flow from its parents (``child_parents``)
        instead of adding product flows into it atomically."""
        return self.shared_children and self.child_parents is not None

    @cached_property
    def child_parents(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The op seen from its children, for a backward pass that gathers instead of adding atomically.

        ``(rows [U], parents [U, D])``: the distinct child rows (``ZERO`` left out) and, for each, the
        products (indices ``0 .. n-1``) that read it, padded with -1. ``None`` when the padded table would
        be over four times the edges (a few children with many parents), where atomics stay cheaper.
        """
        kids = self.children.reshape(-1)
        real = kids != ZERO
        owner = np.repeat(np.arange(self.n), self.children.shape[1])[real]
        rows, inverse, counts = np.unique(kids[real], return_inverse=True, return_counts=True)
        if not len(rows) or len(rows) * counts.max() > 4 * len(owner):
            return None
        order = np.argsort(inverse, kind="stable")
        rank = ranks(counts)
        parents = np.full((len(rows), int(counts.max())), -1, dtype=np.int64)
        parents[inverse[order], rank] = owner[order]
        return rows, parents


def pow2_alignment(cap: int, *arrays: np.ndarray) -> int:
    """The largest power of two up to ``cap`` (a power of two) that divides every entry of ``arrays``: the
    alignment, in elements, that a kernel may assume of offsets built from them."""
    bits = cap
    for a in arrays:
        bits |= int(np.bitwise_or.reduce(np.asarray(a, dtype=np.int64).ravel() | cap))
    return bits & -bits


@dataclass
class SumOp:
    """Block-sparse sum layer: ``T`` parent tiles of ``tile_p`` rows, each over ``kmax`` child tiles.

    The weights of parent tile ``t`` are ``sum_w[weight_ids[t]]``. They are given either as that table
    (``table``) or, for dense sums, as ``strided = (base, stride, pad_slot)`` (see :attr:`affine`): HMM 4096's
    table would be 2.1·10^9 int64 (17 GB), so it is only built when something asks for ``weight_ids``.
    """

    tile_p: int
    tile_c: int
    out_rows: np.ndarray    # [T, tile_p]            (PAD where the tile is short)
    child_rows: np.ndarray  # [T, kmax * tile_c]     (NEG where padded)
    table: np.ndarray | None = None  # [T, tile_p, kmax * tile_c] into sum_w (pad_slot where no edge)
    strided: tuple[np.ndarray, np.ndarray, int] | None = None  # (base [T, kmax], stride [T, kmax], pad_slot)

    def __post_init__(self) -> None:
        if (self.table is None) == (self.strided is None):
            raise ValueError("a SumOp needs exactly one of a weight-id table and a strided layout")
        if self.strided is not None:  # the form :attr:`affine` gives (masking is idempotent: loaded plans too)
            base, stride, pad = self.strided
            self.strided = (*self._masked(base, stride), pad)

    @property
    def kmax(self) -> int:
        return self.child_rows.shape[1] // self.tile_c

    @property
    def padded_edges(self) -> int:
        """Weight slots of the padded tiles, ``T * tile_p * kmax * tile_c`` (edges plus padding)."""
        return self.out_rows.size * self.child_rows.shape[1]

    @cached_property
    def weight_ids(self) -> np.ndarray:
        """``[T, tile_p, kmax * tile_c]`` weight index of every (parent, child) slot; pad_slot where no edge."""
        if self.table is not None:
            return self.table
        base, stride, pad = self.strided
        t, tp, tc = len(self.out_rows), self.tile_p, self.tile_c
        ids = (base[:, None, :, None] + np.arange(tp)[None, :, None, None] * stride[:, None, :, None]
               + np.arange(tc))
        return np.where(self._edges(slice(0, t)), ids, pad).reshape(t, tp, self.kmax * tc)

    def _edges(self, span: slice) -> np.ndarray:
        """``[t, tile_p, kmax, tile_c]``: which slots of parent tiles ``span`` pair a real parent and a real child."""
        real_child = (self.child_rows[span] != NEG).reshape(-1, self.kmax, self.tile_c)
        return (self.out_rows[span] != PAD)[:, :, None, None] & real_child[:, None, :, :]

    def _slot_real(self, span: slice = slice(None)) -> np.ndarray:
        """``[t, kmax]``: whether child slot ``k`` of parent tiles ``span`` holds a real child (its first column;
        child tiles are padded at the end only)."""
        return (self.child_rows[span] != NEG).reshape(-1, self.kmax, self.tile_c)[:, :, 0]

    def _masked(self, base: np.ndarray, stride: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(base, stride)`` [T, kmax] with 0 where the slot's first parent and first child are not both real
        (base) or its second parent and first child (stride): the one form both weight layouts share."""
        real_child, real_parent = self._slot_real(), self.out_rows != PAD
        base = np.where(real_parent[:, 0, None] & real_child, base, 0)
        if self.tile_p == 1:
            return base, np.zeros_like(base)
        return base, np.where(real_parent[:, 1, None] & real_child, stride, 0)

    @cached_property
    def same_children(self) -> bool:
        """True when the op has several parent tiles and every one reads the same child rows in the same order
        (an HMM's transitions): the device then holds one row of the child table (``SAME_CHILDREN`` in the sum
        kernels), not ``T`` copies of it: HMM 4096's were 127 MiB per value layout."""
        rows = self.child_rows
        return len(rows) > 1 and bool((rows == rows[0]).all())

    @property
    def child_table(self) -> np.ndarray:
        """The child rows as the device holds them: ``child_rows``, or its first row where every parent tile
        reads the same ones (:attr:`same_children`)."""
        return self.child_rows[:1] if self.same_children else self.child_rows

    @cached_property
    def child_tiles(self) -> tuple[np.ndarray, np.ndarray]:
        """The op seen from its children, for the backward pass without atomics.

        ``(rows [U, tile_c], uses [U, R])``: the ``U`` distinct child tiles (all-padding ones left out) and,
        for each, the flat indices ``t * kmax + k`` of the (parent tile, child slot) pairs that read it,
        padded with -1.
        """
        table = self.child_table  # with same children, one tile's row stands for all: kmax tiles, not T * kmax
        rows, inverse = np.unique(table.reshape(-1, self.tile_c), axis=0, return_inverse=True)
        inverse = np.tile(inverse.reshape(-1), len(self.child_rows) // len(table))
        keep = ~(rows == NEG).all(axis=1)
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=len(rows))
        uses = np.full((len(rows), max(int(counts.max()), 1)), -1, dtype=np.int64)
        rank = ranks(counts)
        uses[inverse[order], rank] = order
        return rows[keep], uses[keep]

    @cached_property
    def shared_children(self) -> bool:
        """True when a child row lies in several distinct child tiles (child flows then need atomics)."""
        return _repeats(self.child_tiles[0], NEG)

    @property
    def child_atomics(self) -> bool:
        """Whether the backward pass adds flows into this op's children atomically."""
        return self.shared_children

    @cached_property
    def affine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(base [T, kmax], stride [T, kmax])`` when every weight tile is a strided block of ``sum_w``.

        That is: for each parent tile ``t`` and child slot ``k``, the edge of parent ``p`` and child ``c`` of
        the tile has weight ``sum_w[base + p * stride + c]``, and exactly the pairs of a real parent (not
        ``PAD``) and a real child (not ``NEG``) are edges. Dense sums and aligned block-sparse ones (HCLT,
        HMM, PD, RAT-SPN) are like this; kernels then compute weight addresses instead of gathering them
        through ``weight_ids`` (whose loads dominated the sum kernels). ``None`` when some tile is not.
        Where entries are masked (no edge in the slot's first row or column) they are 0.
        """
        if self.strided is not None:
            return self.strided[0], self.strided[1]
        ids = self.table.reshape(len(self.out_rows), self.tile_p, self.kmax, self.tile_c)
        if not (ids[:, 0, :, 0] >= 0).all():
            return None
        base, stride = self._masked(ids[:, 0, :, 0], ids[:, min(1, self.tile_p - 1), :, 0] - ids[:, 0, :, 0])
        pad = self.table.max() if self.table.size else 0  # the pad slot is the largest id
        # checked a few parent tiles at a time: the [t, tp, kmax, tc] guesses of HMM-1024 would take GBs
        t = len(self.out_rows)
        step = max(1, (1 << 20) // max(1, self.tile_p * self.child_rows.shape[1]))
        for lo in range(0, t, step):
            span = slice(lo, min(t, lo + step))
            guess = (base[span, None, :, None] + np.arange(self.tile_p)[None, :, None, None] * stride[span, None, :, None]
                     + np.arange(self.tile_c))
            if not np.array_equal(np.where(self._edges(span), guess, pad), ids[span]):
                return None
        return base, stride

    @cached_property
    def walign(self) -> int:
        """4 where the generic kernels may load weight rows as 16-byte vectors, else 1 (their ``WALIGN``): the op
        is :attr:`affine` with every base and stride a multiple of 4, and in each child tile the padding
        children (``NEG``) fill whole aligned runs of 4 columns (the edge mask is constant over each run)."""
        if self.affine is None or self.tile_c % 4 or pow2_alignment(4, *self.affine) < 4:
            return 1
        for rows in (self.child_rows, self.child_tiles[0]):  # the forward's child slots, the backward's tiles
            if _mixed_runs_of_4(rows == NEG):
                return 1
        return 4

    @cached_property
    def pairable(self) -> bool:
        """Whether parent tiles ``2t`` and ``2t + 1`` can run as one tile of ``2 * tile_p`` rows (``sum_fwd``'s
        ``PAIR``): an even number of affine tiles, each pair over the same child tiles, the second's weights
        continuing the first's strided block (dense sums: ``base + tile_p * stride``)."""
        if self.affine is None or len(self.out_rows) % 2:
            return False
        base, stride = self.affine
        first, second = slice(0, None, 2), slice(1, None, 2)
        if not np.array_equal(self.child_rows[first], self.child_rows[second]):
            return False
        real = (self.out_rows[second, 0] != PAD)[:, None] & self._slot_real(second)  # the second tile's edge slots
        follows = (base[second] == base[first] + self.tile_p * stride[first]) & (stride[second] == stride[first])
        return bool(np.where(real, follows, True).all())

    @cached_property
    def bwd_pairable(self) -> bool:
        """:attr:`pairable`, and every child tile's uses come in adjacent pairs ``(2t, k), (2t + 1, k)`` (or
        padding pairs), so ``sum_bwd`` can read two parent tiles per iteration (its ``PAIR``)."""
        if not self.pairable:
            return False
        uses = self.child_tiles[1]
        if uses.shape[1] % 2:
            return False
        first, second = uses[:, 0::2], uses[:, 1::2]
        real = first >= 0
        even = (first // self.kmax) % 2 == 0
        return bool(np.where(real, even & (second == first + self.kmax), second < 0).all())

    @cached_property
    def dense(self) -> Dense | None:
        """The op as :class:`Dense` groups when it is one: consecutive runs of ``n`` parent tiles that read the
        same child tiles, each run (group ``g``) with ``P`` parents (the first ``P`` slots of its tiles, the rest
        ``PAD``) over ``C`` distinct children (the first ``C`` columns, the rest ``NEG``), parent ``p``'s weight
        of child ``c`` at ``sum_w[base_g + p * stride + c]``; ``P``, ``C``, ``n`` and ``stride`` the same in every
        group, and no child row and no weight shared by two groups. Such ops run as plain matrix products, one
        per group (:mod:`.dense_kernels`): an HMM's transitions are one group, an HCLT layer one per tree node."""
        if self.affine is None:
            return None
        n = _run_length(self.child_rows)
        if n is None:
            return None
        firsts, parents = self.child_rows[::n], self.out_rows.reshape(-1, n * self.tile_p)
        groups = len(firsts)
        C, P = int((firsts[0] != NEG).sum()), int((parents[0] != PAD).sum())
        if not P or not C or groups > MAX_GROUPS or not (firsts[:, :C] != NEG).all() or not (parents[:, :P] != PAD).all():
            return None
        if (firsts[:, C:] != NEG).any() or (parents[:, P:] != PAD).any() or _repeats(firsts[:, :C], NEG):
            return None
        base, stride = self.affine
        bases = base[::n, 0].astype(np.int64)
        if P == 1:
            s0 = 0
        elif self.tile_p == 1:  # a one-row tile has no stride of its own: the next tile's base gives it
            s0 = int(base[1, 0] - base[0, 0])
        else:
            s0 = int(stride[0, 0])
        t, k = np.arange(n)[None, :, None], np.arange(self.kmax)[None, None, :]
        want = (bases[:, None, None] + t * self.tile_p * s0 + k * self.tile_c).reshape(base.shape)
        want_base, want_stride = self._masked(want, np.full(base.shape, s0))
        if not (np.array_equal(base, want_base) and np.array_equal(stride, want_stride)):
            return None
        dense = Dense(bases, s0, P, C)
        return dense if dense.disjoint_weights() else None

    def dense_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(parents [G, P], children [G, C])``: the rows of a :attr:`dense` op's groups, in weight order."""
        d = self.dense
        n = len(self.out_rows) // d.groups
        return self.out_rows.reshape(d.groups, -1)[:, :d.P], self.child_rows[::n, :d.C]


MAX_GROUPS = 65535  # a CUDA grid's y and z extents: the dense kernels' group axis


@dataclass(frozen=True, eq=False)
class Dense:
    """A dense sum op's groups (:attr:`SumOp.dense`): group ``g``'s ``P x C`` weights at
    ``sum_w[bases[g] + p * stride + c]``."""

    bases: np.ndarray  # [G] int64
    stride: int
    P: int
    C: int

    @property
    def groups(self) -> int:
        return len(self.bases)

    @property
    def edges(self) -> int:
        return self.groups * self.P * self.C

    @property
    def align(self) -> int:
        """The largest power of two up to 16 that divides every base (the kernels' ``WALIGN``)."""
        return pow2_alignment(16, self.bases)

    def key(self) -> tuple:
        """A comparable summary: ``(G, first base, stride, P, C)``."""
        return self.groups, int(self.bases[0]), self.stride, self.P, self.C

    def disjoint_weights(self) -> bool:
        """Whether no weight slot lies in two groups' blocks (each block spans ``(P - 1) * stride + C`` slots
        from its base; a stride below ``C`` would overlap rows within a block too)."""
        if self.P > 1 and self.stride < self.C:
            return False
        order = np.sort(self.bases)
        return bool((np.diff(order) >= (self.P - 1) * self.stride + self.C).all())


def _run_length(rows: np.ndarray) -> int | None:
    """``n`` when ``rows`` ([T, ...]) is runs of ``n`` equal consecutive rows, each run unlike the next; else None."""
    change = np.flatnonzero((rows[1:] != rows[:-1]).any(axis=1)) + 1
    starts = np.concatenate([[0], change, [len(rows)]])
    lengths = np.diff(starts)
    return int(lengths[0]) if len(lengths) and (lengths == lengths[0]).all() else None


def _mixed_runs_of_4(flags: np.ndarray) -> bool:
    """Whether some aligned run of 4 consecutive entries of the boolean ``flags`` (size a multiple of 4) is
    neither all true nor all false. Each run is read as one uint32 (its four bytes: 0 or 0x01010101 when
    uniform). HMM 4096's compile profile showed 0.23 s in numpy's ``any``/``all`` over runs; words are about 40x
    faster on a 128 x 4096 table."""
    words = np.ascontiguousarray(flags, dtype=np.bool_).reshape(-1).view(np.uint32)
    return bool(((words != 0) & (words != 0x01010101)).any())


def _repeats(rows: np.ndarray, pad: int) -> bool:
    """Whether any row other than ``pad`` occurs more than once in ``rows``."""
    real = rows[rows != pad]
    if not len(real):
        return False
    # a count per row value, not np.unique: its sort took 0.7 s of converted PD 128's compile
    return bool(np.bincount(real - real.min()).max() > 1)


class Tables(Mapping):
    """Parameter tables by key (a categorical table per category count), each kept as the row blocks it was
    placed in, in order (``parts[k]``: the circuit's own arrays, not to be written), and concatenated only where
    read whole (``tables[k]``: a new array, cached).

    A compile converts the blocks into the device's table one by one (:meth:`pcc.backend.params.Params.from_plan`),
    so the whole float64 table is never made on the way: HCLT 128's is 205 MB, whose first touch of fresh memory
    took 0.3 s of a process's first compile on the development CPU."""

    def __init__(self, parts: dict[int, list[np.ndarray]]):
        self.parts = parts
        self._whole: dict[int, np.ndarray] = {}

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self._whole:
            self._whole[k] = np.concatenate(self.parts[k])
        return self._whole[k]

    def __iter__(self) -> Iterator[int]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def rows(self, k: int) -> int:
        """Table ``k``'s row count, without concatenating it."""
        return sum(len(b) for b in self.parts[k])


@dataclass
class Plan:
    """Everything the executors need; see the module docstring."""

    num_vars: int
    domains: list[tuple[str, int]]
    rows: int
    root_row: int
    layers: list[list]
    block_rows: list[int]                 # first row of each IR block
    sum_w: np.ndarray
    sum_runs: tuple[np.ndarray, np.ndarray, np.ndarray]  # (start, length, group): see sum_parent
    sum_groups: int
    cat: Mapping[int, np.ndarray] = field(default_factory=dict)  # a Tables after __post_init__
    bern: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gauss: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    tensor_slots: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # name -> (kind, start, size)
    sum_orders: dict[str, "TileOrder"] = field(default_factory=dict)  # sum tensors stored by op tiles

    def __post_init__(self) -> None:
        if not isinstance(self.cat, Tables):  # whole tables (a loaded module's): one block each
            self.cat = Tables({k: [v] for k, v in self.cat.items()})
        self._parent: np.ndarray | None = None

    @property
    def sum_parent(self) -> np.ndarray:
        """Per weight slot, its parent row-group (int32; the pad slot's: ``sum_groups``), made from ``sum_runs``
        on first use: the executors' EM update reads only the runs, so a GPU model never makes this edge-sized
        array (HCLT 512: 543 MiB of host memory)."""
        if self._parent is None:
            start, length, group = self.sum_runs
            self._parent = np.empty(int(length.sum()) + 1, dtype=np.int32)
            self._parent[:-1] = np.repeat(group, length)
            self._parent[-1] = self.sum_groups
        return self._parent

    @property
    def pad_slot(self) -> int:
        return len(self.sum_w) - 1

    def tensor_values(self, name: str, table):
        """Tensor ``name``'s slice of ``table`` (its parameter table, or flows laid out like it), flat, in the
        tensor's own order (numpy or torch, as ``table``); sum tensors stored by op tiles are put back."""
        _, start, size = self.tensor_slots[name]
        part = table[start : start + size]
        order = self.sum_orders.get(name)
        if order is None:
            return part
        pos = order.positions()
        return part[pos] if isinstance(part, np.ndarray) else part[_torch_index(pos, part)]

    def describe(self) -> str:
        """The plan as text (``pcc compile --emit plan``): buffers, parameter tables, ops per layer."""
        out = [f"plan: {self.rows} value rows x batch ({FIRST_ROW} reserved: ZERO, NEG, PAD); root row {self.root_row}",
               f"  sum weights: {len(self.sum_w) - 1} (+1 pad slot) in {self.sum_groups} normalisation groups"]
        out += [f"  categorical[{k}] table: {self.cat.rows(k)} rows" for k in sorted(self.cat)]
        if len(self.bern):
            out.append(f"  bernoulli table: {len(self.bern)} rows")
        if len(self.gauss):
            out.append(f"  gaussian table: {len(self.gauss)} rows")
        for i, ops in enumerate(self.layers):
            out.append(f"layer {i}:")
            out += ["  " + _describe_op(op) for op in ops]
        return "\n".join(out) + "\n"

    def digest(self) -> str:
        """A content hash of the structure (tables and shapes), for caching compiled modules."""
        h = hashlib.sha256(json.dumps([self.rows, self.domains]).encode())
        for ops in self.layers:
            for op in ops:
                for v in (getattr(op, f.name) for f in fields(op)):  # not the cached properties in vars(op)
                    for part in (v if isinstance(v, tuple) else (v,)):  # SumOp.strided is a tuple of arrays
                        h.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
        return h.hexdigest()


def _describe_op(op) -> str:
    if isinstance(op, InputOp):
        return f"input {op.dist}(k={op.k}) rows [{op.start}, {op.start + op.n}) grid=(ceil({op.n}/BLOCK_N), ceil(B/BLOCK_B))"
    if isinstance(op, ProdOp):
        return f"prod rows [{op.start}, {op.start + op.n}) fan-in {op.children.shape[1]} grid=(ceil({op.n}/BLOCK_N), ceil(B/BLOCK_B))"
    return (f"sum {op.out_rows.shape[0]} parent tiles of {op.tile_p} x {op.kmax} child tiles of {op.tile_c} "
            f"(padded edges {op.padded_edges}) grid=({op.out_rows.shape[0]}, ceil(B/BLOCK_B))")


def build_plan(circuit: Circuit, weights: type = np.float64) -> Plan:
    """Lower a layered, verified circuit (after ``layerize`` and ``block-edges``) to a Plan.

    ``weights``: the dtype of ``sum_w``. A float32 model asks for float32 (:class:`~pcc.backend.runtime.
    CircuitModel`): its weights are then rounded once, as they are written, and no float64 table of every edge is
    made on the way (HCLT 512's would be 1.1 GB)."""
    if not circuit.attrs.get("layered"):
        raise ValueError("build_plan needs layered IR: run the default pipeline first")
    rows = _assign_rows(circuit)
    params = _ParamTables(circuit)
    layers: list[list] = [[] for _ in range(circuit.attrs["layers"])]
    groups: dict[tuple, list[int]] = {}
    for i, b in enumerate(circuit.blocks):
        key = (b.attrs["layer"], b.kind, b.attrs["group"], b.attrs.get("tile_p", 0), b.attrs.get("tile_c", 0),
               b.params in params.holed if isinstance(b, SumBlock) else False)  # holed: dense ops of their own
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
        layers[key[0]].append(_make_op(circuit, members, rows, params, key[1]))
    layers = sink_inputs(layers, rows[-1])
    return Plan(
        num_vars=len(circuit.variables), domains=[(v.domain.kind, v.domain.k) for v in circuit.variables],
        rows=rows[-1], root_row=rows[circuit.root], layers=layers, block_rows=rows[:-1],
        sum_w=params.sum_w(weights), sum_runs=params.sum_runs(), sum_groups=params.groups,
        cat=params.cat_tables(), bern=params.bern_table(), gauss=params.gauss_table(),
        tensor_slots=params.slots, sum_orders=params.orders)


# at most this many pieces per input op (each piece: one launch forward, one backward). Measured on an H100
# (bench/results/input_chunks_2026-12-05_h100.txt): 8 pieces take HMM 256's peak at batch 8192 from 3120 to 2232
# MiB for 19.1 -> 20.1 ms a step, HMM 1024's and HMM 4096's at 512 from 829 to 607 and 3701 to 2813 MiB for
# under 1.2%; 32 pieces save 2-4% more memory but cost HMM 256 at 8192 63% of its step (small count grids)
INPUT_CHUNKS = 8


def sink_inputs(layers: list[list], rows: int) -> list[list]:
    """Input ops cut into up to :data:`INPUT_CHUNKS` pieces of consecutive rows, each moved from layer 0 to the
    layer just below its first reader.

    Contract: every piece still lies below all of its readers (so every executor, running layers in order
    forward and in reverse backward, computes it before they read it and takes its flows after they wrote them),
    and the pieces together hold exactly the op's rows. Why: an input's value then lives from just before its
    first reader, and, more to the point, its flow from its readers' backward to its own piece's categorical
    counts instead of to the end of the pass: an HMM's emission flows all stayed alive until the one counting
    launch at the end (a third of HMM 256's training rows).
    """
    first = _first_readers(layers, rows)
    out = [list(ops) for ops in layers]
    out[0] = [op for op in layers[0] if not isinstance(op, InputOp)]
    for op in layers[0]:
        if isinstance(op, InputOp):
            for piece, target in _pieces(op, first[op.start:op.start + op.n]):
                out[target].append(piece)
    return out


def _first_readers(layers: list[list], rows: int) -> np.ndarray:
    """Per row, the lowest layer of an op that reads it (``len(layers)`` where none does)."""
    first = np.full(rows, len(layers), dtype=np.int64)
    for li in range(len(layers) - 1, -1, -1):  # lower layers last: their readings stand
        for op in layers[li]:
            kids = op.child_rows if isinstance(op, SumOp) else getattr(op, "children", None)
            if kids is not None:
                first[kids.reshape(-1)] = li
    return first


def _pieces(op: InputOp, first: np.ndarray) -> list[tuple[InputOp, int]]:
    """``op`` cut where its rows' first readers change, merged back to at most INPUT_CHUNKS pieces of about
    equal size; each piece goes to the layer below its earliest reader (0 when a row has none above 0)."""
    cuts = np.flatnonzero(np.diff(first)) + 1
    if len(cuts) >= INPUT_CHUNKS:  # keep the cuts nearest to equal sizes
        want = np.arange(1, INPUT_CHUNKS) * op.n / INPUT_CHUNKS
        cuts = np.unique(cuts[np.clip(np.searchsorted(cuts, want), 0, len(cuts) - 1)])
    bounds = np.concatenate([[0], cuts, [op.n]]).astype(np.int64)
    return [(InputOp(op.dist, op.k, op.start + int(a), op.var[a:b], op.prow[a:b]), max(0, int(first[a:b].min()) - 1))
            for a, b in zip(bounds[:-1], bounds[1:])]


def _torch_index(pos: np.ndarray, like):
    import torch
    return torch.as_tensor(pos, device=like.device)


def _assign_rows(circuit: Circuit) -> list[int]:
    starts = np.cumsum([FIRST_ROW] + [b.n for b in circuit.blocks])
    return [int(s) for s in starts]


def _make_op(circuit: Circuit, members: list[int], rows: list[int], params: "_ParamTables", kind: str):
    if kind == "input":
        return _input_op(circuit, members, rows, params)
    if kind == "prod":
        return _prod_op(circuit, members, rows)
    return _sum_op(circuit, members, rows, params)


def _input_op(circuit: Circuit, members: list[int], rows: list[int], params: "_ParamTables") -> InputOp:
    blocks = [circuit.blocks[i] for i in members]
    var = np.concatenate([np.full(b.n, b.var) for b in blocks])
    prow = np.concatenate([params.input_rows(b) + np.arange(b.n) for b in blocks])
    first = blocks[0]
    k = circuit.variables[first.var].domain.categories
    assert all(rows[m + 1] == rows[m] + circuit.blocks[m].n for m in members)
    return InputOp(first.dist, k, rows[members[0]], var.astype(np.int64), prow.astype(np.int64))


def _prod_op(circuit: Circuit, members: list[int], rows: list[int]) -> ProdOp:
    blocks = [circuit.blocks[i] for i in members]
    kmax = max(len(b.children) for b in blocks)
    children = np.full((sum(b.n for b in blocks), kmax), ZERO, dtype=np.int64)  # ZERO pads short fan-ins
    at = 0
    for b in blocks:
        k = len(b.children)
        first_rows = np.array([rows[c] for c in b.children], dtype=np.int64)
        if b.table is None:  # aligned: node i takes row i of every child
            children[at:at + b.n, :k] = np.arange(b.n, dtype=np.int64)[:, None] + first_rows
        else:
            children[at:at + b.n, :k] = prod_table(circuit, b) + first_rows
        at += b.n
    return ProdOp(rows[members[0]], children)


def _sum_op(circuit: Circuit, members: list[int], rows: list[int], params: "_ParamTables") -> SumOp:
    b0 = circuit.blocks[members[0]]
    tp, tc = b0.attrs.get("tile_p", 16), b0.attrs.get("tile_c", 16)
    tiles = [_sum_tiles(circuit, circuit.blocks[i], rows[i], rows, params, tp, tc) for i in members]
    kmax = max(t.kids.shape[1] for t in tiles)
    out = np.concatenate([t.out_rows for t in tiles]).astype(np.int64, copy=False)
    ends = np.cumsum([len(t.out_rows) for t in tiles])
    spans = [(slice(end - len(t.out_rows), end), t.kids.shape[1], t) for end, t in zip(ends, tiles)]
    # child tiles padded to kmax with NEG rows
    child = np.full((len(out), kmax, tc), NEG, dtype=np.int64)
    for span, k, t in spans:
        child[span, :k] = t.kids
    child = child.reshape(len(out), kmax * tc)
    if all(t.strided is not None for t in tiles):  # dense: addresses, no table (SumOp masks the padding)
        base, stride = np.zeros((len(out), kmax), dtype=np.int64), np.zeros((len(out), kmax), dtype=np.int64)
        for span, k, t in spans:
            base[span, :k], stride[span, :k] = t.strided
        return SumOp(tp, tc, out, child, strided=(base, stride, params.pad_id))
    # weights [T, tp, kmax, tc], each block's written in place (no per-block copy is concatenated)
    wids = np.empty((len(out), tp, kmax, tc), dtype=np.int64)
    for span, k, t in spans:
        t.write_weights(wids[span, :, :k])
        wids[span, :, k:] = params.pad_id
    return SumOp(tp, tc, out, child, wids.reshape(len(out), tp, kmax * tc))


@dataclass
class _BlockTiles:
    """One sum block cut into tiles: ``out_rows`` [T, tp], ``kids`` [T, k, tc], and its weights either as
    ``write_weights(dst)`` (fills ``dst`` [T, tp, k, tc] with ids, ``pad_id`` where no edge) or, dense, as
    ``strided`` (base [T, k], row stride) with edge (i, j) at ``base + i * total + j``."""

    out_rows: np.ndarray
    kids: np.ndarray
    write_weights: object
    strided: tuple[np.ndarray, int] | None = None


def _sum_tiles(circuit: Circuit, b: SumBlock, start: int, rows: list[int], params: "_ParamTables", tp: int,
               tc: int) -> _BlockTiles:
    """The tiles of one sum block (see :class:`_BlockTiles`)."""
    n, total = b.n, sum(circuit.child_sizes(b))
    tn, tcn = -(-n // tp), -(-total // tc)
    child_rows = np.concatenate([rows[c] + np.arange(circuit.blocks[c].n) for c in b.children])
    child_rows = np.pad(child_rows, (0, tcn * tc - total), constant_values=NEG).reshape(tcn, tc)
    out_rows = np.pad(start + np.arange(n), (0, tn * tp - n), constant_values=PAD).reshape(tn, tp)
    if b.tiles is None or b.params in params.holed:  # dense (or holed): every tile holds an edge (or a hole)
        kids = np.broadcast_to(child_rows, (tn, tcn, tc))
        first = params.slots[b.params][1]
        base = first + (np.arange(tn, dtype=np.int64) * tp * total)[:, None] + np.arange(tcn, dtype=np.int64) * tc
        return _BlockTiles(out_rows, kids, lambda dst: _dense_weight_ids(dst, first, n, total, params.pad_id),
                           (base, total))
    ids = params.edge_ids(b)  # [n, C], -1 where there is no edge
    ids = np.pad(ids, ((0, tn * tp - n), (0, tcn * tc - total)), constant_values=-1)
    grid = ids.reshape(tn, tp, tcn, tc)
    present = (grid >= 0).any(axis=(1, 3))  # [tn, tcn]
    counts = present.sum(axis=1)
    k = int(counts.max())
    pt, ct = np.nonzero(present)
    rank = ranks(counts)
    sel = np.full((tn, k), -1)
    sel[pt, rank] = ct
    safe = np.maximum(sel, 0)
    kids = np.where(sel[:, :, None] >= 0, child_rows[safe], NEG)
    w = grid.transpose(0, 2, 1, 3)[np.arange(tn)[:, None], safe]  # [tn, k, tp, tc]
    w = np.where((sel[:, :, None, None] >= 0) & (w >= 0), w, params.pad_id)

    def write_weights(dst: np.ndarray) -> None:
        dst[...] = w.transpose(0, 2, 1, 3)
    return _BlockTiles(out_rows, kids, write_weights)


def _dense_weight_ids(dst: np.ndarray, base: int, n: int, total: int, pad_id: int) -> None:
    """Weight ids of a dense ``[n, total]`` sum at ``base`` into ``dst`` [tn, tp, tcn, tc]; pad_id off the matrix.

    Edge (i, j) is weight ``base + i * total + j``; written by one broadcast add, no temporaries.
    """
    tn, tp, tcn, tc = dst.shape
    row_part = (base + np.arange(tn * tp, dtype=np.int64) * total).reshape(tn, tp, 1, 1)
    np.add(row_part, np.arange(tcn * tc, dtype=np.int64).reshape(1, 1, tcn, tc), out=dst)
    if tn * tp > n:  # the last parent tile's rows past n
        dst[tn - 1, n - (tn - 1) * tp:] = pad_id
    if tcn * tc > total:  # the last child tile's columns past total
        dst[:, :, tcn - 1, total - (tcn - 1) * tc:] = pad_id


class _ParamTables:
    """Assigns every parameter tensor a place in the flat tables (tied tensors share one place)."""

    def __init__(self, circuit: Circuit):
        self.circuit = circuit
        self.slots: dict[str, tuple[str, int, int]] = {}
        self.sum_blocks: list[tuple[SumBlock, int]] = []  # (block, its first group), one per sum tensor
        self.sum_size = 0
        self.groups = 0
        self.cat: dict[int, list[np.ndarray]] = {}
        self.bern: list[np.ndarray] = []
        self.gauss: list[np.ndarray] = []
        self.table_rows: dict[int, int] = {}  # id(table list) -> rows placed in it so far
        self.orders: dict[str, TileOrder] = {}  # sum tensors stored by op tiles
        self._positions: dict[str, np.ndarray] = {}  # their TileOrder.positions, for edge_ids
        self.holed: set[str] = set()  # sum tensors stored as their block's whole matrix, with holes
        tied = tied_sums(circuit)  # never holed (block-edges marks none; a hand-written .pcir might)
        for b in circuit.blocks:
            if isinstance(b, SumBlock):
                self._place_sum(b, b.params not in tied)
        self.pad_id = self.sum_size  # the one slot after every weight

    def _place_sum(self, b: SumBlock, untied: bool) -> None:
        if b.params in self.slots:
            return
        size = array(self.circuit, b.params).size
        if b.tiles is not None and b.attrs.get("holes") and untied:  # block-edges' holes: the whole matrix
            total = sum(self.circuit.child_sizes(b))
            order = TileOrder(tile_table(self.circuit, b).astype(np.int64), b.block, b.n, total, b.n, total)
            self._positions[b.params], self.orders[b.params] = order.positions(), order
            self.holed.add(b.params)
            size = b.n * total  # slots: the holes are weights held at zero, in the pad slot's group
        elif b.tiles is not None:
            order = TileOrder.for_block(self.circuit, b)
            if order is not None:  # stored by op tiles: weight j of the tensor goes to offset pos[j]
                self._positions[b.params] = order.positions()
                self.orders[b.params] = order
        self.slots[b.params] = ("sum", self.sum_size, size)
        self.sum_blocks.append((b, self.groups))
        self.sum_size += size
        self.groups += b.n

    def edge_ids(self, b: SumBlock) -> np.ndarray:
        """``[n, C]`` flat weight index of every edge of ``b`` (-1 where there is no edge)."""
        _, base, size = self.slots[b.params]
        if b.tiles is None:
            return (base + np.arange(size)).reshape(b.n, -1)
        total = sum(self.circuit.child_sizes(b))
        tiles = tile_table(self.circuit, b)
        ids = np.full((b.n // b.block, b.block, total // b.block, b.block), -1, dtype=np.int64)
        offsets = self._positions.get(b.params)  # a tied block reads its tensor through the same placement
        offsets = np.arange(size) if offsets is None else offsets
        ids[tiles[:, 0], :, tiles[:, 1], :] = (base + offsets).reshape(len(tiles), b.block, b.block)
        return ids.reshape(b.n, total)

    def input_rows(self, b: InputBlock) -> int:
        """First parameter row of input block ``b`` in its distribution's table."""
        if b.params not in self.slots:
            p = array(self.circuit, b.params)
            table = {"categorical": lambda: self.cat.setdefault(p.shape[1], []), "bernoulli": lambda: self.bern,
                     "gaussian": lambda: self.gauss}[b.dist]()
            placed = self.table_rows.get(id(table), 0)  # a running count: summing the list each time was quadratic
            self.slots[b.params] = (b.dist, placed, len(p))
            self.table_rows[id(table)] = placed + len(p)
            table.append(p)
        return self.slots[b.params][1]

    # sum_w is written in place, tensor by tensor (sum_runs' parents a tensor at a time): PD 128 has 38.8M weights,
    # and on the dev CPU every edge-sized temporary (a placed copy per tensor, a concatenation, an int64 parent
    # array) took 0.1-0.7 s
    def sum_w(self, dtype: type = np.float64) -> np.ndarray:
        out = np.empty(self.sum_size + 1, dtype=dtype)
        for b, _ in self.sum_blocks:
            _, start, size = self.slots[b.params]
            self._fill(out[start:start + size], b.params, array(self.circuit, b.params).reshape(-1), (-1,), 0.0)
        out[-1] = 0.0
        return out

    def sum_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(start, length, group)``: the maximal runs of slots of one parent row-group, tensor by tensor (a run
        of hole slots may end at a tensor's end and go on in the next; no row-group's does). Each tensor's
        parents are written into one reused buffer of the largest tensor's size, never all of them at once: an
        int32 per weight (HCLT 512: 543 MiB) that only these runs were read from."""
        if not self.sum_blocks:
            z = np.zeros(0, dtype=np.int64)
            return z, z, z.astype(np.int32)
        buf = np.empty(max(self.slots[b.params][2] for b, _ in self.sum_blocks), dtype=np.int32)
        starts, lengths, groups = [], [], []
        for b, first in self.sum_blocks:
            _, base, size = self.slots[b.params]
            part = buf[:size]
            if b.tiles is None:  # [n, fan-in]: row i is group first + i
                rows, shape = (first + np.arange(b.n))[:, None], (b.n, size // max(b.n, 1))
            else:  # [m, block, block]: row i of tile t is group first + (parent tile of t) * block + i
                rows = (first + tile_table(self.circuit, b)[:, 0:1] * b.block + np.arange(b.block))[:, :, None]
                shape = (len(rows), b.block, b.block)
            self._fill(part, b.params, rows, shape, self.groups)  # holes: the pad slot's group (EM leaves them 0)
            start, length, group = value_runs(part)
            starts.append(start + base)
            lengths.append(length)
            groups.append(group)
        return np.concatenate(starts), np.concatenate(lengths), np.concatenate(groups).astype(np.int32)

    def _fill(self, part: np.ndarray, name: str, values: np.ndarray, shape: tuple, holes) -> None:
        """Tensor ``name``'s slot ``part`` (of ``sum_w``, or a buffer the slot's size): ``values`` (in the
        tensor's own order, broadcast to ``shape``) in their places, and ``holes`` in a holed tensor's others."""
        if name in self.holed:  # the whole slot first: the weights are written over it next
            part[:] = holes
        pos = self._positions.get(name)
        if pos is None:
            part.reshape(shape)[...] = values
            return
        order = self.orders[name]
        if not order.whole_rows:
            part[pos.reshape(shape)] = values
            return
        # whole tile rows at once: numpy moves a row per index instead of an element (PD 128: 1.0 -> 0.2 s)
        g, whole = order.block, values.reshape(shape) if -1 in shape else np.broadcast_to(values, shape)
        part.reshape(-1, g)[pos[::g] // g] = whole.reshape(-1, g)

    def cat_tables(self) -> Tables:
        return Tables(self.cat)

    def bern_table(self) -> np.ndarray:
        return np.concatenate(self.bern) if self.bern else np.zeros(0)

    def gauss_table(self) -> np.ndarray:
        return np.concatenate(self.gauss) if self.gauss else np.zeros((0, 2))


@dataclass(frozen=True, eq=False)
class TileOrder:
    """How a block-sparse sum tensor is stored in ``sum_w`` when its op's tiles are larger than its own.

    The tensor holds ``[m, block, block]`` tiles (``tiles`` [m, 2]: parent tile, child tile, in ``block``
    units). The op that runs it multiplies ``tile_p x tile_c`` tiles; where one of those spans several of the
    tensor's tiles, the tensor's order would make its weights a patchwork, read through an index table. Stored
    instead row of op tiles by row (one parent tile's fan-in, row-major, its op tiles side by side), every op
    tile is one strided block (:attr:`SumOp.affine`) and kernels compute weight addresses; a parent tile's whole
    fan-in is one block too, so ops whose parent tiles share their children run as matrix products
    (:attr:`SumOp.dense`).
    Used only when every op tile that holds an edge is full: every pair of a real parent and a real child in it
    is an edge (otherwise the block would have holes that are not edges).
    """

    tiles: np.ndarray  # [m, 2] int64
    block: int
    n: int
    total: int
    tile_p: int
    tile_c: int

    @staticmethod
    def for_block(circuit: Circuit, b: SumBlock) -> "TileOrder | None":
        """The order for sum block ``b`` (after ``block-edges``), or None where its own order serves: its op
        tiles are no larger than its tiles (those are strided blocks already) or some op tile is not full."""
        tp, tc = b.attrs.get("tile_p", 16), b.attrs.get("tile_c", 16)
        if tp <= b.block and tc <= b.block:
            return None
        order = TileOrder(tile_table(circuit, b).astype(np.int64), b.block, b.n, sum(circuit.child_sizes(b)), tp, tc)
        return order if order.full() else None

    def _coarse(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per weight ``(e, i, j)`` ([m, block, 1] and [m, 1, block] arrays, broadcast): its op tile row ``P``
        and column ``Q`` and its row and column inside that tile."""
        g, i = self.block, np.arange(self.block)
        p = (self.tiles[:, 0, None] * g + i)[:, :, None]
        c = (self.tiles[:, 1, None] * g + i)[:, None, :]
        return p // self.tile_p, c // self.tile_c, p % self.tile_p, c % self.tile_c

    def _sizes(self, P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Real rows and columns of op tiles ``(P, Q)`` (the last row and column of tiles may be cut short)."""
        return np.minimum(self.tile_p, self.n - P * self.tile_p), np.minimum(self.tile_c, self.total - Q * self.tile_c)

    @property
    def whole_rows(self) -> bool:
        """Whether :meth:`positions` keeps each tile row (``block`` weights) whole: contiguous, starting on a
        multiple of ``block``. So it does where an op tile's columns are a multiple of ``block``: the row then
        lies in one op tile, and every offset before it (rows, widths, earlier tiles) is a multiple of
        ``block``."""
        return self.tile_c % self.block == 0

    def _keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(keys, which, counts)``: the op tiles holding edges as sorted ``P * cols + Q`` keys, each weight's
        index into them (``[m, block, block]``, or ``[m, 1, 1]`` where each tile lies in one op tile) and how many
        weights each holds."""
        P, Q, _, _ = self._coarse()
        per = 1
        if self.tile_p % self.block == 0 and self.tile_c % self.block == 0:  # each tile lies in one op tile: count
            P, Q, per = P[:, :1], Q[:, :, :1], self.block * self.block  # tiles, not weights (PD 128: 43M keys)
        cols = -(-self.total // self.tile_c)
        keys, inverse, counts = np.unique((P * cols + Q).reshape(-1), return_inverse=True, return_counts=True)
        return keys, inverse.reshape(P.shape[0], P.shape[1], Q.shape[2]), counts * per

    def full(self) -> bool:
        """Whether every op tile that holds an edge has an edge for each pair of its real rows and columns."""
        keys, _, counts = self._keys()
        cols = -(-self.total // self.tile_c)
        rows, width = self._sizes(keys // cols, keys % cols)
        return bool(np.array_equal(counts, rows * width))

    def positions(self) -> np.ndarray:
        """``pos`` [m * block * block]: where (from the tensor's first slot) its flat weight ``j`` is stored.

        A row of op tiles (one parent tile) is one row-major block, its tiles side by side in child order: each
        op tile is then a strided block (row stride: the row's width), and a parent tile's whole fan-in is one
        too, which :attr:`SumOp.dense` needs to run the op as matrix products (PD's region sums)."""
        keys, which, _ = self._keys()
        cols = -(-self.total // self.tile_c)
        rows, width = self._sizes(keys // cols, keys % cols)
        first = np.concatenate([[True], keys[1:] // cols != keys[:-1] // cols])  # keys sort by parent tile
        row = np.cumsum(first) - 1
        row_width = np.bincount(row, weights=width).astype(np.int64)
        row_start = np.concatenate([[0], np.cumsum(rows[first] * row_width)[:-1]])
        left = np.cumsum(width) - width  # columns of the row's earlier tiles
        base = row_start[row] + left - left[first][row]
        _, _, r, c = self._coarse()
        pos = base[which] + r * row_width[row][which] + c
        return np.broadcast_to(pos, (len(self.tiles), self.block, self.block)).reshape(-1).astype(np.int64)
