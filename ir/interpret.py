"""The reference interpreter: float64 log-likelihoods of a batch, the oracle for every later stage.

Straightforward on purpose: block by block in topological order, values in log space, exact
log-sum-exp per sum node (no shortcut that could lose a zero-weight or underflowing edge).
Missing entries (``missing[b, v]`` true) are marginalised: their input distributions evaluate to 1.
"""
from __future__ import annotations

import numpy as np

from .circuit import Circuit, InputBlock, ProdBlock, SumBlock
from .params import array, dense_mask, dense_weights, prod_table

_CHUNK = 1 << 22  # elements of the [batch, parents, children] scratch per step


def log_likelihood(circuit: Circuit, x: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """``log p(x)`` of every row of ``x`` (``[batch, num_vars]``); returns float64 ``[batch]``."""
    return node_values(circuit, x, missing)[circuit.root][:, 0]


def node_values(circuit: Circuit, x: np.ndarray, missing: np.ndarray | None = None) -> list[np.ndarray]:
    """Log-values ``[batch, n]`` of every block, in block order."""
    x = np.asarray(x, dtype=np.float64)
    if missing is None:
        missing = np.zeros(x.shape, dtype=bool)
    values: list[np.ndarray] = []
    for block in circuit.blocks:
        if isinstance(block, InputBlock):
            values.append(_input(circuit, block, x, missing))
        elif isinstance(block, ProdBlock):
            values.append(_prod(circuit, block, values))
        else:
            values.append(_sum(circuit, block, values))
    return values


def _input(circuit: Circuit, block: InputBlock, x: np.ndarray, missing: np.ndarray) -> np.ndarray:
    p = array(circuit, block.params).astype(np.float64, copy=False)  # f32 parameters: computed in float64
    col = x[:, block.var]
    if block.dist == "gaussian":
        mu, sigma = p[:, 0], p[:, 1]
        z = (col[:, None] - mu) / sigma
        out = -0.5 * z * z - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    else:
        idx = np.where(missing[:, block.var], 0, col).astype(np.int64)
        with np.errstate(divide="ignore"):
            if block.dist == "bernoulli":
                out = np.where(idx[:, None] == 1, np.log(p), np.log1p(-p))
            else:
                out = np.log(p.T[idx])
    return np.where(missing[:, block.var][:, None], 0.0, out)


def _prod(circuit: Circuit, block: ProdBlock, values: list[np.ndarray]) -> np.ndarray:
    table = prod_table(circuit, block)
    out = np.zeros((values[block.children[0]].shape[0], block.n))
    for j, c in enumerate(block.children):
        out = out + values[c][:, table[:, j]]
    return out


def _sum(circuit: Circuit, block: SumBlock, values: list[np.ndarray]) -> np.ndarray:
    child = np.concatenate([values[c] for c in block.children], axis=1)  # [B, C]
    with np.errstate(divide="ignore"):
        logw = np.where(dense_mask(circuit, block), np.log(dense_weights(circuit, block)), -np.inf)
    batch, total = child.shape
    step = max(1, _CHUNK // max(1, batch * total))
    parts = [_logsumexp(child[:, None, :] + logw[None, i : i + step]) for i in range(0, block.n, step)]
    return np.concatenate(parts, axis=1)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """log(sum(exp(a), axis=-1)) that is exact for rows of -inf (result -inf, never NaN)."""
    m = a.max(axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(a - m_safe).sum(axis=-1, keepdims=True)) + m_safe)[..., 0]
