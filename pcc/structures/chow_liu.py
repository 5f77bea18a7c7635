"""Chow–Liu trees: the maximum spanning tree of the pairwise mutual information of data columns.

Discrete columns (values ``0 .. K_i - 1``) use the plug-in estimate of a *smoothed* joint distribution:
a pseudocount ``a`` is spread evenly over the cells of every table, so for columns ``i`` and ``j``

    p_ij(u, w) = (count_ij(u, w) + a / (K_i K_j)) / (N + a),      p_i(u) = (count_i(u) + a / K_i) / (N + a).

The smoothed marginals are exactly the marginals of the smoothed joint, so every estimate is a true
KL divergence (>= 0) and ``MI = H_i + H_j - H_ij``. All pairs are computed at once with numpy, by one
of two exact counting methods chosen by cost:

* ``onehot`` (few values per column): the joint counts of all pairs are one matrix product of the one-hot
  data with itself (``[sum K, N] @ [N, sum K]``), in row chunks;
* ``sort`` (many values, e.g. 784 pixels x 256 grey levels, where the one-hot product would need 10^14
  flops): for each column ``i``, the pair codes ``x_i * K + x_j`` of every later column ``j`` are sorted
  row-wise and the run lengths are the non-empty cells' counts; empty cells all share one smoothed
  value, so they are accounted for in closed form. Columns are spread over a few threads (numpy's sort
  releases the GIL).

Real-valued columns use the Gaussian mutual information ``-0.5 * log(1 - rho^2)`` of the correlation
coefficient ``rho`` (``kind="gaussian"``), or are cut into ``bins`` equal-frequency bins and treated as
discrete. Rows beyond ``max_rows`` (default 20000) are subsampled without replacement with a fixed seed.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import networkx as nx
import numpy as np

MAX_ROWS = 20000
_ONEHOT_MAX_MEAN_K = 4.0  # above this mean number of values per column, sorting beats the one-hot product
_CHUNK_ELEMS = 1 << 24  # elements of the largest scratch array of the one-hot product
_PAIR_CHUNK_ELEMS = 1 << 20  # pair codes sorted per step (small: the scratch stays in cache)


def infer_num_cats(x: np.ndarray, num_cats: int | list[int] | None = None) -> list[int]:
    """Values per column: ``num_cats`` (one K for all, or a list), else ``max value + 1`` of each column.

    Raises ``ValueError`` when a column holds a negative, non-integer or too large value.
    """
    x = _as_2d(x)
    _check_discrete(x)
    v = x.shape[1]
    observed = (x.max(axis=0).astype(np.int64) + 1) if x.shape[0] else np.ones(v, dtype=np.int64)
    if num_cats is None:
        return [max(1, int(k)) for k in observed]
    ks = [int(num_cats)] * v if np.isscalar(num_cats) else [int(k) for k in num_cats]
    if len(ks) != v:
        raise ValueError(f"num_cats has {len(ks)} entries for {v} columns")
    bad = [i for i in range(v) if observed[i] > ks[i]]
    if bad:
        i = bad[0]
        raise ValueError(f"column {i} holds the value {observed[i] - 1}, outside 0..{ks[i] - 1} (num_cats)")
    return ks


def mutual_information(x: np.ndarray, num_cats: int | list[int] | None = None, pseudocount: float = 1.0, *,
                       kind: str = "auto", bins: int | None = None, max_rows: int | None = MAX_ROWS,
                       seed: int = 0, method: str = "auto", threads: int | None = None) -> np.ndarray:
    """The ``[V, V]`` symmetric matrix of pairwise mutual information (nats) of the columns of ``x``.

    ``kind``: ``"discrete"``, ``"gaussian"`` (real data, from correlations) or ``"auto"`` (discrete when
    every value is a non-negative integer, else gaussian). ``bins`` cuts real columns into that many
    equal-frequency bins and makes the estimate discrete. ``method`` (``"auto"``, ``"onehot"``,
    ``"sort"``) picks the counting method of the discrete estimate; both give the same numbers.
    The diagonal is 0.
    """
    x = subsample(_as_2d(x), max_rows, seed)
    kind = _resolve_kind(x, kind, bins)
    if kind == "gaussian":
        return gaussian_mutual_information(x)
    if bins is not None:
        x, num_cats = quantile_bins(x, bins), bins
    ks = np.array(infer_num_cats(x, num_cats), dtype=np.int64)
    if pseudocount < 0:
        raise ValueError(f"pseudocount must be >= 0, got {pseudocount}")
    xi = x.astype(np.int64)
    if method == "auto":
        method = "onehot" if ks.mean() <= _ONEHOT_MAX_MEAN_K else "sort"
    if method == "onehot":
        joint = _joint_terms_onehot(xi, ks, pseudocount)
    elif method == "sort":
        joint = _joint_terms_sorted(xi, ks, pseudocount, threads)
    else:
        raise ValueError(f"unknown method {method!r} (auto, onehot, sort)")
    return _mi_from_terms(xi, ks, pseudocount, joint)


def chow_liu_tree(x: np.ndarray, num_cats: int | list[int] | None = None, pseudocount: float = 1.0, *,
                  kind: str = "auto", bins: int | None = None, max_rows: int | None = MAX_ROWS,
                  seed: int = 0) -> nx.Graph:
    """The Chow–Liu tree of the columns of ``x``: a maximum spanning tree of pairwise mutual information.

    Nodes are the column indices ``0 .. V-1``; each edge's ``weight`` is its mutual information (nats).
    ``tree.graph["description"]`` says how the tree was estimated (for headers of generated files).
    Options as in :func:`mutual_information`.
    """
    x = _as_2d(x)
    rows = x.shape[0]
    used = rows if max_rows is None else min(rows, max_rows)
    x = subsample(x, max_rows, seed)
    resolved = _resolve_kind(x, kind, bins)
    mi = mutual_information(x, num_cats, pseudocount, kind=resolved, bins=bins, max_rows=None)
    tree = maximum_spanning_tree(mi)
    tree.graph["description"] = _describe(resolved, pseudocount, bins, used, rows, seed)
    return tree


def maximum_spanning_tree(weights: np.ndarray) -> nx.Graph:
    """networkx's maximum spanning tree of the complete graph with the given symmetric edge weights."""
    v = weights.shape[0]
    complete = nx.Graph()
    complete.add_nodes_from(range(v))
    iu, ju = np.triu_indices(v, k=1)
    complete.add_weighted_edges_from(zip(iu.tolist(), ju.tolist(), weights[iu, ju].tolist()))
    return nx.maximum_spanning_tree(complete, algorithm="kruskal")


def gaussian_mutual_information(x: np.ndarray) -> np.ndarray:
    """``-0.5 * log(1 - rho^2)`` for every pair of columns (constant columns: 0)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("real data must be finite (no NaN or infinity)")
    centred = x - x.mean(axis=0)
    norms = np.sqrt((centred * centred).sum(axis=0))
    norms[norms == 0] = np.inf  # a constant column is uncorrelated with everything
    rho = (centred.T @ centred) / np.outer(norms, norms)
    rho2 = np.clip(rho * rho, 0.0, 1.0 - 1e-12)
    mi = -0.5 * np.log1p(-rho2)
    np.fill_diagonal(mi, 0.0)
    return mi


def quantile_bins(x: np.ndarray, bins: int) -> np.ndarray:
    """Each real column cut into ``bins`` equal-frequency bins: integers ``0 .. bins-1``."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    x = np.asarray(x, dtype=np.float64)
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.quantile(x, qs, axis=0)  # [bins-1, V]
    return np.stack([np.searchsorted(edges[:, j], x[:, j], side="right") for j in range(x.shape[1])], axis=1)


def subsample(x: np.ndarray, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """At most ``max_rows`` rows of ``x``, drawn without replacement with ``seed`` (order kept)."""
    if max_rows is None or x.shape[0] <= max_rows:
        return x
    rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=max_rows, replace=False))
    return x[rows]


# --- discrete estimate -------------------------------------------------------------------------------

def _mi_from_terms(x: np.ndarray, ks: np.ndarray, a: float, joint: np.ndarray) -> np.ndarray:
    """MI from ``joint[i, j] = sum over cells of (c + b) log(c + b)`` (smoothed counts, all cells)."""
    n = x.shape[0]
    m = n + a
    marg = np.array([_xlogx(np.bincount(x[:, i], minlength=ks[i]) + a / ks[i]).sum() for i in range(len(ks))])
    # H = log M - S / M for every table, so MI = H_i + H_j - H_ij = (S_ij - S_i - S_j) / M + log M
    mi = (joint - marg[:, None] - marg[None, :]) / m + np.log(m) if m > 0 else np.zeros_like(joint)
    mi = np.maximum(mi, 0.0)  # exact math gives >= 0; clip rounding noise
    np.fill_diagonal(mi, 0.0)
    return mi


def _joint_terms_onehot(x: np.ndarray, ks: np.ndarray, a: float) -> np.ndarray:
    """All joint tables by one-hot matrix products, in row chunks; returns the symmetric ``[V, V]`` sums."""
    n, v = x.shape
    offsets = np.concatenate([[0], np.cumsum(ks)[:-1]])
    total = int(ks.sum())
    dtype = np.float32 if n < (1 << 24) else np.float64  # counts stay exact integers
    onehot = np.zeros((n, total), dtype=dtype)
    onehot[np.arange(n)[:, None], x + offsets] = 1.0
    col_k = np.repeat(ks, ks).astype(np.float64)  # K of the column owning each one-hot column
    out = np.empty((v, v))
    step = max(1, _CHUNK_ELEMS // max(1, max(total, n)))
    for c0 in range(0, v, step):
        c1 = min(v, c0 + step)
        lo, hi = offsets[c0], offsets[c1 - 1] + ks[c1 - 1]
        counts = (onehot[:, lo:hi].T @ onehot).astype(np.float64)  # [rows of columns c0..c1, total]
        terms = _xlogx(counts + a / np.outer(col_k[lo:hi], col_k))
        rows = np.add.reduceat(terms, offsets[c0:c1] - lo, axis=0)
        out[c0:c1] = np.add.reduceat(rows, offsets, axis=1)
    return (out + out.T) / 2  # the two triangles differ only by rounding; keep the result symmetric


def _joint_terms_sorted(x: np.ndarray, ks: np.ndarray, a: float, threads: int | None) -> np.ndarray:
    """All joint tables by sorting pair codes; returns the symmetric ``[V, V]`` sums."""
    n, v = x.shape
    kmax = int(ks.max()) if v else 1
    code_dtype = np.uint16 if kmax * kmax <= 1 << 16 else np.uint32 if kmax * kmax <= 1 << 32 else np.uint64
    xt = np.ascontiguousarray(x.T.astype(code_dtype))
    out = np.zeros((v, v))
    workers = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, sums in pool.map(lambda i: (i, _pairs_of_column(xt, i, kmax, ks, a)), range(v - 1)):
            out[i, i + 1:] = sums
    return out + out.T


def _pairs_of_column(xt: np.ndarray, i: int, kmax: int, ks: np.ndarray, a: float) -> np.ndarray:
    """``sum over cells (c + b) log(c + b)`` of the tables of column ``i`` with each later column.

    A table's non-empty cells are the runs of its sorted pair codes. Most runs are single rows (many
    values) or there are few runs (few values), so only runs of two or more rows are extracted; the
    single rows are counted from the number of distinct codes.
    """
    n = xt.shape[1]
    out = np.empty(xt.shape[0] - i - 1)
    step = max(1, _PAIR_CHUNK_ELEMS // max(1, n))
    for j0 in range(i + 1, xt.shape[0], step):
        j1 = min(xt.shape[0], j0 + step)
        codes = np.sort(xt[i] * xt.dtype.type(kmax) + xt[j0:j1], axis=1)  # [pairs, N], rows sorted
        same = np.zeros(codes.shape, dtype=bool)  # same[p, k]: row k+1 repeats row k (last column False,
        np.equal(codes[:, 1:], codes[:, :-1], out=same[:, :-1])  # so runs never cross tables)
        edges = np.diff(same.view(np.int8).ravel(), prepend=0, append=0)
        first, last = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        multi = last - first + 1  # rows in each cell holding two or more rows
        pair = first // n
        distinct = n - np.count_nonzero(same, axis=1)  # non-empty cells of each table
        num_multi = np.bincount(pair, minlength=j1 - j0)
        cells = ks[i] * ks[j0:j1]
        b = a / cells  # the pseudocount share of one cell of each table
        out[j0 - i - 1: j1 - i - 1] = (np.bincount(pair, weights=_xlogx(multi + b[pair]), minlength=j1 - j0)
                                       + (distinct - num_multi) * _xlogx(1.0 + b)
                                       + (cells - distinct) * _xlogx(b))
    return out


def _xlogx(c: np.ndarray | float) -> np.ndarray:
    """``c * log(c)`` with ``0 log 0 = 0``."""
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c > 0, c * np.log(np.where(c > 0, c, 1.0)), 0.0)


# --- helpers -----------------------------------------------------------------------------------------

def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"data must be a 2-d array [rows, columns], got shape {x.shape}")
    return x


def _is_discrete(x: np.ndarray) -> bool:
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
        return bool(x.size == 0 or x.min() >= 0)
    return bool(np.all(np.isfinite(x)) and np.all(x >= 0) and np.all(x == np.round(x)))


def _check_discrete(x: np.ndarray) -> None:
    if not _is_discrete(x):
        raise ValueError("discrete data must hold non-negative integers (for real data use kind='gaussian' "
                         "or bins=)")


def _resolve_kind(x: np.ndarray, kind: str, bins: int | None) -> str:
    if kind not in ("auto", "discrete", "gaussian"):
        raise ValueError(f"unknown kind {kind!r} (auto, discrete, gaussian)")
    if bins is not None:
        if kind == "gaussian":
            raise ValueError("bins= makes the estimate discrete; it cannot be combined with kind='gaussian'")
        return "discrete"
    if kind == "auto":
        return "discrete" if _is_discrete(x) else "gaussian"
    return kind


def _describe(kind: str, a: float, bins: int | None, used: int, rows: int, seed: int) -> str:
    if kind == "gaussian":
        how = "Gaussian mutual information -0.5*log(1 - rho^2)"
    elif bins is not None:
        how = f"discrete mutual information of {bins} equal-frequency bins per column, pseudocount {a:g}"
    else:
        how = f"discrete mutual information, pseudocount {a:g}"
    sample = f"{used} rows" if used == rows else f"{used} of {rows} rows (subsampled, seed {seed})"
    return f"Chow-Liu tree, the maximum spanning tree of pairwise {how}, estimated on {sample}"
