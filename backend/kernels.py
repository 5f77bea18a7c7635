"""Triton kernel templates for the plan's ops, specialised by ``tl.constexpr`` (tiles, fan-in, distribution).

Buffers: ``vals``/``flows`` are ``[rows, B]`` float32 row-major (row stride ``B``); ``x`` is ``[B, V]``
float32 and ``miss`` ``[B, V]`` int8. Row offsets are computed in int64 (rows x B can pass 2^31).

Sum layers (forward): per parent tile and batch block, the per-sample maximum ``m`` of the child values,
then ``acc = W @ exp(C - m)`` over the child tiles with ``tl.dot`` and ``log(acc) + m``: one exp per child
value per tile, not per edge. Backward: with ``G = F_parent * exp(m - v_parent)`` (zero where the parent has
no flow) every edge flow is ``W * exp(C - m) * G``, so child flows are ``exp(C - m) * (W^T @ G)`` and
parameter flows ``W * (G @ exp(C - m)^T)``: two more ``tl.dot`` per tile, accumulated with atomics.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG_SQRT_2PI = tl.constexpr(0.9189385332046727)
# exp(80) ~ 5.5e34: clamping m - v at 80 keeps F * exp(m - v) finite; edges it cuts have weights below fp32's range
CLAMP = tl.constexpr(80.0)


@triton.jit
def input_fwd(vals, x, miss, var, prow, theta, start, n, B, V,
              DIST: tl.constexpr, K: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr):
    """Rows ``start + i``: log-probability of ``x[:, var[i]]`` under parameter row ``prow[i]`` (0 if missing)."""
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    v = tl.load(var + i, mask=i < n, other=0)
    r = tl.load(prow + i, mask=i < n, other=0).to(tl.int64)
    xy = tl.load(x + b[None, :].to(tl.int64) * V + v[:, None], mask=ok, other=0.0)
    gone = tl.load(miss + b[None, :].to(tl.int64) * V + v[:, None], mask=ok, other=1) != 0
    if DIST == 0:  # categorical: theta [R, K]
        idx = tl.where(gone, 0, xy.to(tl.int64))
        out = tl.log(tl.load(theta + r[:, None] * K + idx, mask=ok, other=1.0))
    elif DIST == 1:  # bernoulli: theta [R] = P(x = 1)
        q = tl.load(theta + r, mask=i < n, other=0.5)[:, None]
        out = tl.where(xy > 0.5, tl.log(q), tl.log(1.0 - q))
    else:  # gaussian: theta [R, 2] = (mean, std)
        mu = tl.load(theta + r * 2, mask=i < n, other=0.0)[:, None]
        sd = tl.load(theta + r * 2 + 1, mask=i < n, other=1.0)[:, None]
        z = (xy - mu) / sd
        out = -0.5 * z * z - tl.log(sd) - LOG_SQRT_2PI
    out = tl.where(gone, 0.0, out)
    tl.store(vals + (start + i[:, None]).to(tl.int64) * B + b[None, :], out, mask=ok)


@triton.jit
def input_bwd(flows, x, miss, var, prow, stats, mass, start, n, B, V,
              DIST: tl.constexpr, K: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr):
    """EM statistics of input rows: observed entries add their flow to ``stats``; missing ones to ``mass``.

    ``stats`` is ``[R, K]`` counts (categorical), ``[R, 2]`` (bernoulli) or ``[R, 3]`` (gaussian: flow,
    flow*x, flow*x^2); ``mass[i]`` collects node ``i``'s flow on missing entries (expanded on the host).
    """
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    v = tl.load(var + i, mask=i < n, other=0)
    r = tl.load(prow + i, mask=i < n, other=0).to(tl.int64)
    f = tl.load(flows + (start + i[:, None]).to(tl.int64) * B + b[None, :], mask=ok, other=0.0)
    xy = tl.load(x + b[None, :].to(tl.int64) * V + v[:, None], mask=ok, other=0.0)
    gone = tl.load(miss + b[None, :].to(tl.int64) * V + v[:, None], mask=ok, other=1) != 0
    seen = ok & (~gone) & (f != 0.0)
    if DIST == 0:
        tl.atomic_add(stats + r[:, None] * K + xy.to(tl.int64), f, mask=seen)
    elif DIST == 1:
        tl.atomic_add(stats + r[:, None] * 2 + (xy > 0.5).to(tl.int64), f, mask=seen)
    else:
        at = stats + r[:, None] * 3 + tl.zeros((BN, BB), dtype=tl.int64)  # one pointer per (node, sample)
        tl.atomic_add(at, f, mask=seen)
        tl.atomic_add(at + 1, f * xy, mask=seen)
        tl.atomic_add(at + 2, f * xy * xy, mask=seen)
    lost = tl.sum(tl.where(ok & gone, f, 0.0), axis=1)
    tl.atomic_add(mass + i, lost, mask=(i < n) & (lost != 0.0))


@triton.jit
def prod_fwd(vals, children, start, n, B, KMAX: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr):
    """Rows ``start + i``: the sum (log space) of the rows ``children[i, :]``."""
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    acc = tl.zeros((BN, BB), dtype=tl.float32)
    for k in tl.static_range(KMAX):
        c = tl.load(children + i.to(tl.int64) * KMAX + k, mask=i < n, other=0).to(tl.int64)
        acc += tl.load(vals + c[:, None] * B + b[None, :], mask=ok, other=0.0)
    tl.store(vals + (start + i[:, None]).to(tl.int64) * B + b[None, :], acc, mask=ok)


@triton.jit
def prod_bwd(flows, children, start, n, B, KMAX: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr):
    """Every child row receives its product parents' flows (atomics: children are shared)."""
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    f = tl.load(flows + (start + i[:, None]).to(tl.int64) * B + b[None, :], mask=ok, other=0.0)
    for k in tl.static_range(KMAX):
        c = tl.load(children + i.to(tl.int64) * KMAX + k, mask=i < n, other=0).to(tl.int64)
        tl.atomic_add(flows + c[:, None] * B + b[None, :], f, mask=ok & (f != 0.0))


@triton.jit
def _child_max(vals, child_rows, t, b, B, KC: tl.constexpr, TC: tl.constexpr, BB: tl.constexpr):
    """Per-sample maximum over a parent tile's child rows (0 where every child is -inf)."""
    m = tl.full((BB,), float("-inf"), dtype=tl.float32)
    for k in tl.static_range(0, KC, TC):
        c = tl.load(child_rows + t * KC + k + tl.arange(0, TC)).to(tl.int64)
        cv = tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf"))
        m = tl.maximum(m, tl.max(cv, axis=0))
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def sum_fwd(vals, sum_w, out_rows, child_rows, wids, B,
            TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, BB: tl.constexpr, PAD: tl.constexpr,
            PRECISION: tl.constexpr):
    """One parent tile x one batch block: ``log(W @ exp(C - m)) + m``."""
    t = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    p = tl.arange(0, TP)
    m = _child_max(vals, child_rows, t, b, B, KC, TC, BB)
    acc = tl.zeros((TP, BB), dtype=tl.float32)
    for k in tl.static_range(0, KC, TC):
        c = tl.load(child_rows + t * KC + k + tl.arange(0, TC)).to(tl.int64)
        e = tl.exp(tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf")) - m[None, :])
        wi = tl.load(wids + (t * TP + p[:, None]) * KC + k + tl.arange(0, TC)[None, :])
        w = tl.load(sum_w + wi)
        acc += tl.dot(w, e, input_precision=PRECISION)
    rows = tl.load(out_rows + t * TP + p).to(tl.int64)
    out = tl.log(acc) + m[None, :]
    tl.store(vals + rows[:, None] * B + b[None, :], out, mask=(rows[:, None] != PAD) & (b[None, :] < B))


@triton.jit
def sum_bwd(vals, flows, sum_w, wflow, out_rows, child_rows, wids, B,
            TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, BB: tl.constexpr, PRECISION: tl.constexpr):
    """Child flows ``exp(C - m) * (W^T @ G)`` and parameter flows ``W * (G @ exp(C - m)^T)``."""
    t = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    p = tl.arange(0, TP)
    inb = b[None, :] < B
    rows = tl.load(out_rows + t * TP + p).to(tl.int64)
    f = tl.load(flows + rows[:, None] * B + b[None, :], mask=inb, other=0.0)
    v = tl.load(vals + rows[:, None] * B + b[None, :], mask=inb, other=0.0)
    m = _child_max(vals, child_rows, t, b, B, KC, TC, BB)
    g = tl.where(f != 0.0, f * tl.exp(tl.minimum(m[None, :] - v, CLAMP)), 0.0)
    for k in tl.static_range(0, KC, TC):
        c = tl.load(child_rows + t * KC + k + tl.arange(0, TC)).to(tl.int64)
        e = tl.exp(tl.load(vals + c[:, None] * B + b[None, :], mask=inb, other=float("-inf")) - m[None, :])
        wi = tl.load(wids + (t * TP + p[:, None]) * KC + k + tl.arange(0, TC)[None, :])
        w = tl.load(sum_w + wi)
        child_f = e * tl.dot(tl.trans(w), g, input_precision=PRECISION)
        tl.atomic_add(flows + c[:, None] * B + b[None, :], child_f, mask=inb & (child_f != 0.0))
        edge_f = w * tl.dot(g, tl.trans(e), input_precision=PRECISION)
        tl.atomic_add(wflow + wi, edge_f, mask=edge_f != 0.0)
