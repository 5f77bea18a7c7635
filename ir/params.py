"""Parameter tensors: seeded random initialisation, materialisation, and per-node normalisation.

A random tensor is drawn from ``numpy.random.default_rng(seed)`` according to the role of the first block
that uses it (all users of a tied tensor have the same role and shape), so the same seed always gives the
same values. Index tables are never random.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .circuit import Block, Circuit, InputBlock, ProdBlock, SumBlock


def derive_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed for the tensor named ``name`` under the global ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def array(circuit: Circuit, name: str) -> np.ndarray:
    """The values of tensor ``name`` (float64, float32 for an ``f32`` tensor, or int64), drawing a random one on
    first use. Code that computes with parameters reads them as float64 (:func:`dense_weights` does)."""
    t = circuit.tensors[name]
    if t.data is not None:
        return t.data
    if t.cache is None:
        t.cache = draw_random(_owner(circuit, name), circuit, t.shape, t.seed or 0)
    return t.cache


def _owner(circuit: Circuit, name: str) -> Block:
    for b in circuit.blocks:
        if getattr(b, "params", None) == name:
            return b
    raise KeyError(f"random tensor @{name} is used by no block")


def draw_random(block: Block, circuit: Circuit, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Normalised random parameters for ``block``'s role (categorical rows, bernoulli p, gaussian, sum rows)."""
    rng = np.random.default_rng(seed)
    if isinstance(block, InputBlock):
        if block.dist == "bernoulli":
            return rng.uniform(0.05, 0.95, size=shape)
        if block.dist == "gaussian":
            out = np.empty(shape)
            out[:, 0] = rng.normal(size=shape[0])
            out[:, 1] = rng.uniform(0.5, 1.5, size=shape[0])
            return out
        return normalize_rows(rng.exponential(size=shape))
    if isinstance(block, SumBlock):
        return normalize_sum(circuit, block, rng.exponential(size=shape))
    raise TypeError("product blocks have no parameters")


def normalize_rows(w: np.ndarray) -> np.ndarray:
    """Rows of ``w`` scaled to sum to one (rows of zeros stay zero)."""
    s = w.sum(axis=-1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0)


def tied_sums(circuit: Circuit) -> set[str]:
    """The sum tensors that more than one sum block reads (tied parameters)."""
    seen: set[str] = set()
    tied: set[str] = set()
    for b in circuit.blocks:
        if isinstance(b, SumBlock):
            (tied if b.params in seen else seen).add(b.params)
    return tied


def tile_table(circuit: Circuit, block: SumBlock) -> np.ndarray:
    """The ``[m, 2]`` (parent tile, child tile) table of a block-sparse sum."""
    assert block.tiles is not None
    return array(circuit, block.tiles)


def parent_totals(circuit: Circuit, block: SumBlock, w: np.ndarray) -> np.ndarray:
    """Per parent node, the sum of its edge weights (``[n]``)."""
    if block.tiles is None:
        return w.sum(axis=1, dtype=np.float64)  # float32 weights summed in float64, as float64 ones are
    b = block.block
    rows = tile_table(circuit, block)[:, :1] * b + np.arange(b)  # [m, b]: the parent node of every tile row
    per_tile = w.sum(axis=2, dtype=np.float64)  # [m, b]
    # bincount adds in tile order, as np.add.at did (the same float64 sums, bit for bit), many times faster
    return np.bincount(rows.reshape(-1), weights=per_tile.reshape(-1), minlength=block.n).astype(np.float64, copy=False)


def normalize_sum(circuit: Circuit, block: SumBlock, w: np.ndarray) -> np.ndarray:
    """Weights of a sum block scaled so that every parent's edges sum to one."""
    if block.tiles is None:
        return normalize_rows(w)
    totals = parent_totals(circuit, block, w).reshape(block.n // block.block, block.block)
    rows = tile_table(circuit, block)[:, 0]
    t = totals[rows][:, :, None]
    return np.divide(w, t, out=np.zeros_like(w), where=t > 0)


def dense_weights(circuit: Circuit, block: SumBlock) -> np.ndarray:
    """A sum block's weights as a dense float64 ``[n, C]`` matrix (zeros where there is no edge)."""
    w = array(circuit, block.params).astype(np.float64, copy=False)
    if block.tiles is None:
        return w
    return scatter_tiles(tile_table(circuit, block), w, block.n, sum(circuit.child_sizes(block)), block.block)


def dense_mask(circuit: Circuit, block: SumBlock) -> np.ndarray:
    """Which (parent, child) pairs are edges of a sum block, as a ``[n, C]`` boolean matrix."""
    total = sum(circuit.child_sizes(block))
    if block.tiles is None:
        return np.ones((block.n, total), dtype=bool)
    tiles = tile_table(circuit, block)
    ones = np.ones((len(tiles), block.block, block.block), dtype=bool)
    return scatter_tiles(tiles, ones, block.n, total, block.block)


def scatter_tiles(tiles: np.ndarray, values: np.ndarray, n: int, total: int, b: int) -> np.ndarray:
    """Place ``[m, b, b]`` tile values into a dense ``[n, total]`` matrix (tiles may not repeat)."""
    out = np.zeros((n // b, b, total // b, b), dtype=values.dtype)
    out[tiles[:, 0], :, tiles[:, 1], :] = values
    return out.reshape(n, total)


def gather_tiles(dense: np.ndarray, tiles: np.ndarray, b: int) -> np.ndarray:
    """The ``[m, b, b]`` tiles of a dense matrix named by a tile table (inverse of scatter_tiles)."""
    n, total = dense.shape
    return dense.reshape(n // b, b, total // b, b)[tiles[:, 0], :, tiles[:, 1], :]


def prod_table(circuit: Circuit, block: ProdBlock) -> np.ndarray:
    """A product block's ``[n, k]`` index table (aligned products give ``arange`` columns)."""
    if block.table is not None:
        return array(circuit, block.table)
    return np.repeat(np.arange(block.n, dtype=np.int64)[:, None], len(block.children), axis=1)


def randomize(circuit: Circuit, seed: int, zero_fraction: float = 0.0) -> None:
    """Replace every parameter tensor by concrete random values (ties stay tied), in place.

    Used by tests and property checks to exercise passes on arbitrary parameters; ``zero_fraction`` of
    the sum weights are set to zero to exercise zero-weight edges.
    """
    rng = np.random.default_rng(seed)
    for name, t in circuit.tensors.items():
        owner = next((b for b in circuit.blocks if getattr(b, "params", None) == name), None)
        if owner is None:
            continue
        values = draw_random(owner, circuit, t.shape, int(rng.integers(2**62)))
        if isinstance(owner, SumBlock) and zero_fraction > 0:
            values = _drop_edges(circuit, owner, values, rng.random(values.shape) >= zero_fraction)
        t.dtype, t.data, t.seed, t.cache = "f64", values, None, None


def _drop_edges(circuit: Circuit, block: SumBlock, w: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Zero the weights where ``keep`` is False, except for parents that would lose every edge."""
    dead = parent_totals(circuit, block, w * keep) == 0
    if block.tiles is None:
        keep = keep | dead[:, None]
    else:
        rows = tile_table(circuit, block)[:, :1] * block.block + np.arange(block.block)  # [m, b]
        keep = keep | dead[rows][:, :, None]
    return normalize_sum(circuit, block, w * keep)
