"""``block-edges``: choose each sum block's tensor-core tile and group its edges into dense tiles.

A sum block's weights form an ``[n, C]`` matrix (dense, or block-sparse in ``block x block`` tiles). The
backend multiplies it in ``tile_p x tile_c`` tiles with ``tl.dot``, which needs tiles of at least 16 on
each side. For every sum this pass picks the (tile_p, tile_c) among powers of two in
[min_tile, max_tile] that minimises the padded edges (ties go to the larger tile), and records
``tile_p``, ``tile_c``, ``tiles`` (dense tiles to multiply) and ``fill`` (real edges / padded edges).
:func:`exec_tiles` recomputes the tile list.

A block-sparse sum whose edges fill at least ``1 / max_holes`` of its whole ``[n, C]`` matrix is marked
``holes=1`` and tiled as a dense one (the default, :data:`MAX_HOLES`, is 1.5; ``max-holes=1`` holes none).
The backend stores it as that matrix, the missing edges as weights held at zero (its *holes*), and runs it as
a dense sum (on the dense kernels' matrix products where the work is large). A converted PD region's sum is
one: its two (or four) parent tiles of 32 each read 4 of the region's 5 products, different ones, so as
block-sparse tiles it runs on the generic kernels; as a 64 x 320 matrix with 20% holes, on the matrix
products that the other region sums take.

Pre: a verified circuit (usually layered). Post: every sum block carries those four attributes (and
``holes`` where it has them); the structure and the distribution are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcc.ir.circuit import Circuit, SumBlock
from pcc.ir.params import tied_sums, tile_table

from .manager import Pass, register


# the default max_holes, in percent (matrix slots per edge); 100: no sum is holed. 150 holes converted PD's region
# sums of 5 and 6 products (80% and 67% filled; 200 would hole all). On an H100 (docs/benchmarks.md, twenty-fourth
# round) PD 128's step at 512 went 8.79 -> 7.62 ms from 100 to 150, PD 64's 3.40 -> 3.33; PD 64 at 8192 was
# 43.86 ms at 100, 43.82 at 150 and 45.90 at 200
MAX_HOLES = 150


@register
@dataclass
class BlockEdges(Pass):
    """Annotates sums with tile sizes and dense-tile counts; see the module docstring."""

    name = "block-edges"
    min_tile: int = 16
    max_tile: int = 64
    max_holes: float = 0.0  # a block-sparse sum with at most this many matrix slots per edge: holes=1 (0:
    # MAX_HOLES / 100)

    def run(self, circuit: Circuit) -> Circuit:
        sizes = [s for s in (16, 32, 64, 128, 256) if self.min_tile <= s <= self.max_tile] or [self.min_tile]
        holes = self.max_holes or MAX_HOLES / 100
        tied = tied_sums(circuit)
        for b in circuit.blocks:  # a tied tensor keeps its tiles: its other readers may not fill the same places
            if isinstance(b, SumBlock):
                _annotate(circuit, b, sizes, 0.0 if b.params in tied else holes)
        return circuit


def _annotate(circuit: Circuit, b: SumBlock, sizes: list[int], max_holes: float) -> None:
    edges = circuit.tensors[b.params].size
    holes = b.tiles is not None and edges < b.n * sum(circuit.child_sizes(b)) <= max_holes * edges
    count = _tile_counter(circuit, b, sizes, dense=holes)
    best = None
    for tp in sizes:
        for tc in sizes:
            padded = count(tp, tc) * tp * tc
            key = (padded, -tp * tc)
            if best is None or key < best[0]:
                best = (key, tp, tc, padded)
    _, tp, tc, padded = best
    b.attrs.update(tile_p=tp, tile_c=tc, tiles=padded // (tp * tc), fill=round(edges / padded, 4))
    if holes:
        b.attrs["holes"] = 1
    else:
        b.attrs.pop("holes", None)


def _tile_counter(circuit: Circuit, b: SumBlock, sizes: list[int], dense: bool = False):
    """``count(tile_p, tile_c)``: ``len(exec_tiles(circuit, b, tile_p, tile_c))`` for sizes in ``sizes``
    (``dense``: the tiles of the block's whole matrix, its holes included).

    Dense sums are counted by arithmetic; block-sparse ones compute each size's tile spans once, not once
    per (tile_p, tile_c) pair (this pass tries every pair on every sum).
    """
    total = sum(circuit.child_sizes(b))
    if b.tiles is None or dense:
        return lambda tp, tc: -(-b.n // tp) * -(-total // tc)
    fine = tile_table(circuit, b)
    prows = {t: _spans(fine[:, 0], b.block, t) for t in sizes}
    pcols = {t: _spans(fine[:, 1], b.block, t) for t in sizes}
    return lambda tp, tc: len(_coarse_keys(prows[tp], pcols[tc], -(-total // tc)))


def exec_tiles(circuit: Circuit, b: SumBlock, tile_p: int, tile_c: int) -> np.ndarray:
    """``[m, 2]`` (parent tile, child tile) pairs of ``tile_p x tile_c`` tiles holding at least one edge."""
    total = sum(circuit.child_sizes(b))
    if b.tiles is None or b.attrs.get("holes"):
        rows, cols = -(-b.n // tile_p), -(-total // tile_c)
        return np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    fine = tile_table(circuit, b)
    prow = _spans(fine[:, 0], b.block, tile_p)  # [m, sp]: coarse parent tiles each fine tile touches, -1 padded
    pcol = _spans(fine[:, 1], b.block, tile_c)
    ncols = -(-total // tile_c)
    keys = _coarse_keys(prow, pcol, ncols)
    return np.stack([keys // ncols, keys % ncols], 1)


def _coarse_keys(prow: np.ndarray, pcol: np.ndarray, ncols: int) -> np.ndarray:
    """The sorted distinct ``parent tile * ncols + child tile`` keys of the coarse tiles the spans cover."""
    keys = (prow[:, :, None] * ncols + pcol[:, None, :])[(prow[:, :, None] >= 0) & (pcol[:, None, :] >= 0)]
    return np.unique(keys)  # one integer per coarse tile: sorting 1-D keys is far cheaper than unique rows


def _spans(index: np.ndarray, block: int, tile: int) -> np.ndarray:
    """For fine tiles at ``index`` (of ``block`` nodes each), the coarse ``tile``-sized tiles they overlap."""
    lo, hi = index * block // tile, (index * block + block - 1) // tile
    width = int((hi - lo).max(initial=0)) + 1
    out = lo[:, None] + np.arange(width)[None, :]
    return np.where(out <= hi[:, None], out, -1)
