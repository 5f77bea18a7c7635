"""``dense_kernels.dense_fwd_onepass``'s running maximum on values the circuits in other tests do not reach:
children 100+ nats apart in different contraction steps (the sums rescaled as the maximum grows), a first step
whose children are all -inf, samples with no finite child at all, and folded children (two rows each)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import triton

from pcc.backend import dense_kernels as D


def _reference(vals: np.ndarray, w: np.ndarray, kids: np.ndarray, kids_b: np.ndarray | None) -> np.ndarray:
    """``log(W @ exp(C))`` per group in float64, C a child's row (plus its second row where folded)."""
    cv = vals[kids] + (vals[kids_b] if kids_b is not None else 0.0)  # [G, C, B]
    m = np.max(cv, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.einsum("gpc,gcb->gpb", w, np.exp(cv - m))) + m


@pytest.mark.parametrize("folded", [False, True], ids=["rows", "folded"])
def test_running_maximum_matches_float64(folded):
    rng = np.random.default_rng(3)
    G, P, C, B = 2, 24, 80, 40  # C: three steps of BK=32, the last one short; B: a short batch block
    rows = 2 * G * C + 8
    vals = rng.normal(0.0, 3.0, size=(rows, B))
    kids = rng.permutation(rows)[: 2 * G * C].reshape(2, G, C)
    a, b = kids[0], kids[1] if folded else None
    vals[a[:, :32], :10] = -np.inf  # samples 0-9: the first step's children all -inf (the maximum starts late)
    vals[a[:, 40:], 10:20] += 120.0  # samples 10-19: the last steps' children 120 nats above the first ones'
    vals[a[0], 20:23] = -np.inf  # samples 20-22 of group 0: no finite child
    w = rng.random((G, P, C))
    w /= w.sum(axis=2, keepdims=True)
    want = _reference(vals, w, a, b)
    t = lambda x, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(x), dtype=dt)  # noqa: E731
    out_rows = np.arange(G * P).reshape(G, P) + rows  # the parents' rows, after the children's
    buf = t(np.concatenate([vals, np.zeros((G * P, B))]))
    sum_w = t(w.reshape(-1))
    D.dense_fwd_onepass[(triton.cdiv(B, 16), G)](
        buf, sum_w, t(out_rows, torch.int32), t(a, torch.int32), t(b if folded else a, torch.int32),
        t(np.arange(G) * P * C, torch.int32), C, B, P=P, C=C, BP=32, BN=16, BK=32, PRECISION="ieee", STAGES=1,
        WALIGN=1, FOLDED=folded)
    got = buf[rows:].double().numpy().reshape(G, P, B)
    assert np.array_equal(np.isneginf(got), np.isneginf(want)) and np.isneginf(want[0, :, 20:23]).all()
    finite = np.isfinite(want)
    assert np.abs(got[finite] - want[finite]).max() <= 1e-5 * max(1.0, np.abs(want[finite]).max())
