"""Triton kernels of dense sum ops, as matrix products with a per-sample shift.

A dense op (``SumOp.dense``) is ``G`` independent groups; in group ``g`` every one of ``P`` parents reads the
same ``C`` children, and the weights are one strided block, ``W_g[p, c] = sum_w[base_g + p * stride + c]``
(an HMM's transitions: one group; an HCLT layer: one group per tree node). A group shares one log-sum-exp
shift per sample across all its parents, so its three products are plain GEMMs whose operands are
exponentiated once as they are loaded:

* forward: ``v_p = log(W @ exp(C - m)) + m`` with ``m`` the per-sample maximum child value;
* child flows: ``F_c = exp(C - s) * (W^T @ G)`` with ``G = F_p exp(s - v_p)`` and ``s`` the per-sample
  minimum of ``v_p - log F_p`` over parents with flow (so ``G <= 1``, and the parent that carries the most
  flow per unit of value has ``G = 1``);
* parameter flows: ``W * (G @ exp(C - s)^T)``, summed over the batch.

The generic kernels (:mod:`.kernels`) instead keep a running maximum per parent tile and rescale their
partial sums as it grows, and redo the shift per parent tile in the backward pass; on an H100 the plain
product is 2-3x faster at HMM 4096's shape (``bench/dense_gemm_probe.py``). The shift is reduced over row
chunks in parallel (:func:`dense_shift`) and the chunks combined in one small launch (:func:`dense_combine`).
The products read both operands contiguously along the contraction: the forward's child values and the
backward's ``G`` are written transposed (``[B, C]``, ``[B, P]``) by the passes before them.

Groups of at most one tile of parents (PD's regions, HCLT's tree nodes at up to 64 latents) read every child
value once in the forward anyway, so :func:`dense_fwd_onepass` reads them straight from their rows with a running
maximum instead (no shift pass, no transposed copy), and :func:`dense_shift_scale` computes the backward's shift
and ``G`` in one pass over the parents (``codegen.DENSE_ONEPASS_P``, ``codegen.DENSE_FUSED_P``).

Programs cover ``BM x BN`` output tiles in groups of ``GROUP`` rows of tiles (so that the tiles running at
once share operand rows in L2), looping over the contraction in ``BK`` steps; the op's group is the grid's
last axis. Row tables are ``[G, P]`` (parents) and ``[G, C]`` (children), scratch buffers ``[G, ...]``.
The groups' weight bases come from a table; ``WALIGN`` (a power of two dividing every base) tells the compiler
what a scalar base argument told it before: without it the weight loads were not vectorised and HMM 4096's
step at 512 took 132.5 instead of 107.9 ms.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .kernels import CLAMP, _add_flows, _dot, running_log, running_max, scaled_flow, shift_key, wait_for_prior_grid


def scratch(vals, t: dict, key: str, rows: int, B: int):
    """A ``[rows, B]`` scratch for op ``key``'s forward: the value buffer's rows from ``t[key + ".spare"]`` on,
    where the layout has rows free while the op runs (a training arena, :mod:`pcc.backend.arena`) and they
    suffice, else new memory."""
    at = t.get(key + ".spare", 0)
    if at and at + rows <= vals.shape[0]:
        return vals[at:at + rows]
    return vals.new_empty(rows, B)


def group_chunks(groups: int, rows: int, most: int) -> list[tuple[int, int]]:
    """``(first group, groups)`` of each chunk of a dense op's ``groups`` groups of ``rows`` rows, each chunk at
    most ``most`` rows (at least one group): the backward's scratch is one chunk's (codegen.DENSE_SCRATCH)."""
    per = max(1, most // rows)
    return [(g0, min(per, groups - g0)) for g0 in range(0, groups, per)]


@triton.jit
def _tile(M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP: tl.constexpr):
    """``(m, n)``: the program's output tile, grouped so that ``GROUP`` tile rows run together."""
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    per_group = GROUP * grid_n
    first = (pid // per_group) * GROUP
    rows = tl.minimum(grid_m - first, GROUP)
    return first + (pid % per_group) % rows, (pid % per_group) // rows


@triton.jit
def _weight_base(w_base, g, WALIGN: tl.constexpr):
    """Group ``g``'s weight base from the table, with its alignment: without ``multiple_of`` the compiler no
    longer knows what a scalar base argument told it, and the weight loads lose their vector width."""
    return tl.multiple_of(tl.load(w_base + g), WALIGN)


@triton.jit
def dense_shift(vals, flows, rows, frows, part, vt, n, B, FORWARD: tl.constexpr, CHUNK: tl.constexpr,
                BN: tl.constexpr, BB: tl.constexpr, FOLDED: tl.constexpr = False, PDL: tl.constexpr = 0):
    """``part[g, j, b]``: over rows ``rows[g, j * CHUNK ..]`` (of ``n`` per group), the maximum value
    (``FORWARD``) or the minimum of ``v - log F`` over the rows with flow (flow rows ``frows``), for batch block
    ``program_id(1)`` of group ``program_id(2)``. ``FORWARD`` also writes the values transposed,
    ``vt[g, b, i] = v[rows[g, i], b]``: the forward product then reads its exponentiated operand contiguously
    along the contraction, as the tensor cores want it. ``FOLDED`` (forward): a child's value is the sum of the
    rows ``rows`` and ``frows`` name, a product's two children (:mod:`pcc.backend.folding`)."""
    wait_for_prior_grid(PDL)
    j, g = tl.program_id(0), tl.program_id(2).to(tl.int64)
    rows, frows, vt = rows + g * n, frows + g * n, vt + g * B * n
    part += (g * tl.num_programs(0) + j) * B
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    inb = b < B
    if FORWARD:
        red = tl.full((BB,), float("-inf"), dtype=tl.float32)
    else:
        red = tl.full((BB,), float("inf"), dtype=tl.float32)
    for i0 in tl.static_range(0, CHUNK, BN):
        i = j * CHUNK + i0 + tl.arange(0, BN)
        ok = (i < n)[:, None] & inb[None, :]
        r = tl.load(rows + i, mask=i < n, other=0).to(tl.int64)
        v = tl.load(vals + r[:, None] * B + b[None, :], mask=ok, other=float("-inf"))
        if FOLDED:  # (0 + v_a) + v_b, as prod_fwd adds them
            r2 = tl.load(frows + i, mask=i < n, other=0).to(tl.int64)
            v += tl.load(vals + r2[:, None] * B + b[None, :], mask=ok, other=0.0)
        if FORWARD:
            red = tl.maximum(red, tl.max(v, axis=0))
            tl.store(vt + b[None, :].to(tl.int64) * n + i[:, None], v, mask=ok)
        else:
            fr = tl.load(frows + i, mask=i < n, other=0).to(tl.int64)
            f = tl.load(flows + fr[:, None] * B + b[None, :], mask=ok, other=0.0)
            red = tl.minimum(red, tl.min(shift_key(v, f), axis=0))
    tl.store(part + b, red, mask=inb)


@triton.jit
def dense_combine(part, shift, B, NPART: tl.constexpr, FORWARD: tl.constexpr, BB: tl.constexpr,
                  PDL: tl.constexpr = 0):
    """``shift[g, b]``: the shift of batch column ``b`` of group ``g = program_id(1)`` from :func:`dense_shift`'s
    ``NPART`` chunk results (0 where no row counts: every child is -inf, or no parent has flow). A launch of its
    own: combining the 64 chunks in every product program cost HMM 4096's forward 11 of its 58 ms."""
    wait_for_prior_grid(PDL)
    b = tl.program_id(0) * BB + tl.arange(0, BB)
    g = tl.program_id(1).to(tl.int64)
    part, shift = part + g * NPART * B, shift + g * B
    if FORWARD:
        red = tl.full((BB,), float("-inf"), dtype=tl.float32)
        for j in tl.static_range(NPART):
            red = tl.maximum(red, tl.load(part + j * B + b, mask=b < B, other=float("-inf")))
    else:
        red = tl.full((BB,), float("inf"), dtype=tl.float32)
        for j in tl.static_range(NPART):
            red = tl.minimum(red, tl.load(part + j * B + b, mask=b < B, other=float("inf")))
    tl.store(shift + b, _finite_or_zero(red), mask=b < B)


@triton.jit
def _finite_or_zero(red):
    """A reduced shift, 0 where no row counted (the reduction's ±inf start survived)."""
    return tl.where((red == float("inf")) | (red == float("-inf")), 0.0, red)


@triton.jit
def dense_fwd(vals, sum_w, out_rows, vt, shift, w_base, w_stride, B, P: tl.constexpr, C: tl.constexpr,
              BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr, STAGES: tl.constexpr,
              GROUP: tl.constexpr, WALIGN: tl.constexpr, PDL: tl.constexpr = 0):
    """Parent rows ``out_rows[g]``: ``log(W_g @ exp(C - m)) + m``, the child values read transposed from
    ``vt[g]`` (``[B, C]``, :func:`dense_shift`) and ``m`` from ``shift[g]``; ``g = program_id(1)``."""
    wait_for_prior_grid(PDL)
    g = tl.program_id(1).to(tl.int64)
    out_rows, vt, shift = out_rows + g * P, vt + g * B * C, shift + g * B
    w_base = _weight_base(w_base, g, WALIGN)
    pm, pn = _tile(P, B, BM, BN, GROUP)
    p = pm * BM + tl.arange(0, BM)
    b = pn * BN + tl.arange(0, BN)
    m = tl.load(shift + b, mask=b < B, other=0.0)
    at_w = sum_w + w_base + p[:, None].to(tl.int64) * w_stride
    at_v = vt + b[None, :].to(tl.int64) * C
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in tl.range(0, C, BK, num_stages=STAGES):
        c = k + tl.arange(0, BK)
        w = tl.load(at_w + c[None, :], mask=(p < P)[:, None] & (c < C)[None, :], other=0.0)
        cv = tl.load(at_v + c[:, None], mask=(c < C)[:, None] & (b < B)[None, :], other=float("-inf"))
        acc += _dot(w, tl.exp(cv - m[None, :]), PRECISION)
    rows = tl.load(out_rows + p, mask=p < P, other=0).to(tl.int64)
    tl.store(vals + rows[:, None] * B + b[None, :], tl.log(acc) + m[None, :], mask=(p < P)[:, None] & (b < B)[None, :])


@triton.jit
def dense_scale(vals, flows, out_rows, fout, shift, gt, P, B, BN: tl.constexpr, BB: tl.constexpr,
                PDL: tl.constexpr = 0):
    """``gt[g, b, p] = F_p exp(s - v_p)`` (0 where ``F_p = 0``), transposed (``[B, P]``: the products read it
    contiguously along the parents), with ``s`` from ``shift[g]``, ``g = program_id(2)``. A scratch: the parents'
    flow rows are left as they are (node flows stay readable)."""
    wait_for_prior_grid(PDL)
    g = tl.program_id(2).to(tl.int64)
    out_rows, fout, shift, gt = out_rows + g * P, fout + g * P, shift + g * B, gt + g * B * P
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i < P)[:, None] & (b < B)[None, :]
    s = tl.load(shift + b, mask=b < B, other=0.0)
    v, f = _parents(vals, flows, out_rows, fout, i, b, P, B, ok)
    tl.store(gt + b[None, :].to(tl.int64) * P + i[:, None], scaled_flow(f, v, s[None, :]), mask=ok)


@triton.jit
def _parents(vals, flows, out_rows, fout, i, b, P, B, ok):
    """``(v, f)``: the values and flows of a group's parents ``i`` (rows ``out_rows[i]``, flow rows ``fout[i]``)
    over batch columns ``b``, 0 outside ``ok``."""
    r = tl.load(out_rows + i, mask=i < P, other=0).to(tl.int64)
    fr = tl.load(fout + i, mask=i < P, other=0).to(tl.int64)
    f = tl.load(flows + fr[:, None] * B + b[None, :], mask=ok, other=0.0)
    v = tl.load(vals + r[:, None] * B + b[None, :], mask=ok, other=0.0)
    return v, f


@triton.jit
def dense_bwd(vals, flows, sum_w, gt, shift, child_rows, child_b, child_frows, w_base, w_stride, B,
              P: tl.constexpr, C: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
              PRECISION: tl.constexpr, STAGES: tl.constexpr, GROUP: tl.constexpr, WALIGN: tl.constexpr,
              OVERWRITE: tl.constexpr, FOLDED: tl.constexpr = False, PDL: tl.constexpr = 0):
    """Child flows ``exp(C - s) * (W_g^T @ G)`` (``G`` transposed in ``gt[g]``) into flow rows ``child_frows[g]``,
    ``g = program_id(1)`` (each written by one program: a dense op's children are distinct, also across its
    groups; ``OVERWRITE``: their first flows, stored rather than added). ``FOLDED``: a child's value is the sum
    of the rows ``child_rows`` and ``child_b`` name (:mod:`pcc.backend.folding`)."""
    wait_for_prior_grid(PDL)
    g = tl.program_id(1).to(tl.int64)
    gt, shift, child_rows, child_frows = gt + g * B * P, shift + g * B, child_rows + g * C, child_frows + g * C
    child_b += g * C
    w_base = _weight_base(w_base, g, WALIGN)
    pm, pn = _tile(C, B, BM, BN, GROUP)
    c = pm * BM + tl.arange(0, BM)
    b = pn * BN + tl.arange(0, BN)
    at_w = sum_w + w_base + c[:, None]
    at_g = gt + b[None, :].to(tl.int64) * P
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in tl.range(0, P, BK, num_stages=STAGES):
        p = k + tl.arange(0, BK)
        wt = tl.load(at_w + p[None, :].to(tl.int64) * w_stride, mask=(c < C)[:, None] & (p < P)[None, :], other=0.0)
        gp = tl.load(at_g + p[:, None], mask=(p < P)[:, None] & (b < B)[None, :], other=0.0)
        acc += _dot(wt, gp, PRECISION)
    ok = (c < C)[:, None] & (b < B)[None, :]
    s = tl.load(shift + b, mask=b < B, other=0.0)
    r = tl.load(child_rows + c, mask=c < C, other=0).to(tl.int64)
    cv = tl.load(vals + r[:, None] * B + b[None, :], mask=ok, other=float("-inf"))
    if FOLDED:
        r2 = tl.load(child_b + c, mask=c < C, other=0).to(tl.int64)
        cv += tl.load(vals + r2[:, None] * B + b[None, :], mask=ok, other=0.0)
    fr = tl.load(child_frows + c, mask=c < C, other=0).to(tl.int64)
    _add_flows(flows + fr[:, None] * B + b[None, :], tl.exp(tl.minimum(cv - s[None, :], CLAMP)) * acc, ok, OVERWRITE)


@triton.jit
def dense_params(vals, gt, shift, sum_w, wflow, child_rows, child_b, w_base, w_stride, B, P: tl.constexpr,
                 C: tl.constexpr, STEPS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                 PRECISION: tl.constexpr, STAGES: tl.constexpr, GROUP: tl.constexpr, WALIGN: tl.constexpr,
                 ATOMIC: tl.constexpr, FOLDED: tl.constexpr = False, PDL: tl.constexpr = 0):
    """Parameter flows ``W_g * (G @ exp(C - s)^T)`` (``G`` transposed in ``gt[g]``, ``g = program_id(2)``) of one
    ``BM x BN`` weight tile over batch blocks ``j, j + split, ...`` (``j = program_id(1)``, ``STEPS`` of them: the
    batch size is compiled in, as Triton's interpreter cannot loop to a runtime bound). ``ATOMIC``: the batch is
    split over programs, whose sums meet in atomics; otherwise each weight's flow is one read-add-write (a
    dense op's weights are distinct, also across its groups). ``FOLDED``: as in :func:`dense_bwd`."""
    wait_for_prior_grid(PDL)
    g = tl.program_id(2).to(tl.int64)
    gt, shift, child_rows, child_b = gt + g * B * P, shift + g * B, child_rows + g * C, child_b + g * C
    w_base = _weight_base(w_base, g, WALIGN)
    pm, pn = _tile(P, C, BM, BN, GROUP)
    p = pm * BM + tl.arange(0, BM)
    c = pn * BN + tl.arange(0, BN)
    r = tl.load(child_rows + c, mask=c < C, other=0).to(tl.int64)
    if FOLDED:
        r2 = tl.load(child_b + c, mask=c < C, other=0).to(tl.int64)
    split = tl.num_programs(1)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for step in tl.range(0, STEPS, num_stages=STAGES):
        bk = (step * split + tl.program_id(1)) * BK + tl.arange(0, BK)
        gp = tl.load(gt + bk[None, :].to(tl.int64) * P + p[:, None], mask=(p < P)[:, None] & (bk < B)[None, :], other=0.0)
        s = tl.load(shift + bk, mask=bk < B, other=0.0)
        cv = tl.load(vals + r[None, :] * B + bk[:, None], mask=(c < C)[None, :] & (bk < B)[:, None], other=float("-inf"))
        if FOLDED:
            cv += tl.load(vals + r2[None, :] * B + bk[:, None], mask=(c < C)[None, :] & (bk < B)[:, None], other=0.0)
        acc += _dot(gp, tl.exp(tl.minimum(cv - s[:, None], CLAMP)), PRECISION)
    ok = (p < P)[:, None] & (c < C)[None, :]
    at = w_base + p[:, None].to(tl.int64) * w_stride + c[None, :]
    f = tl.load(sum_w + at, mask=ok, other=0.0) * acc
    if ATOMIC:
        tl.atomic_add(wflow + at, f, mask=ok & (f != 0.0), sem="relaxed")
    else:
        tl.store(wflow + at, tl.load(wflow + at, mask=ok, other=0.0) + f, mask=ok)


@triton.jit
def dense_shift_scale(vals, flows, out_rows, fout, shift, gt, B, P: tl.constexpr, BP: tl.constexpr,
                      BB: tl.constexpr, PDL: tl.constexpr = 0):
    """The backward's shift and ``G`` of a group whose ``P`` parents fit one block (``BP >= P``) in one pass:
    ``shift[g, b]`` (:func:`dense_shift` and :func:`dense_combine`'s) and ``gt[g, b, p]`` (:func:`dense_scale`'s)
    for batch block ``program_id(0)`` of group ``g = program_id(1)``. The parents' values and flows are read once,
    not once for the shift and again for ``G``, and no chunk results are written and combined."""
    wait_for_prior_grid(PDL)
    g = tl.program_id(1).to(tl.int64)
    out_rows, fout, shift, gt = out_rows + g * P, fout + g * P, shift + g * B, gt + g * B * P
    i = tl.arange(0, BP)
    b = tl.program_id(0) * BB + tl.arange(0, BB)
    ok = (i < P)[:, None] & (b < B)[None, :]
    v, f = _parents(vals, flows, out_rows, fout, i, b, P, B, ok)
    red = tl.min(shift_key(v, f), axis=0)
    s = _finite_or_zero(red)
    tl.store(shift + b, s, mask=b < B)
    tl.store(gt + b[None, :].to(tl.int64) * P + i[:, None], scaled_flow(f, v, s[None, :]), mask=ok)


@triton.jit
def dense_fwd_onepass(vals, sum_w, out_rows, child_rows, child_b, w_base, w_stride, B, P: tl.constexpr,
                      C: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
                      STAGES: tl.constexpr, WALIGN: tl.constexpr, FOLDED: tl.constexpr = False,
                      PDL: tl.constexpr = 0):
    """:func:`dense_fwd` for a group whose ``P`` parents fit one tile (``BP >= P``), in one pass over the children
    and without :func:`dense_shift`: program ``(j, g)`` reads batch block ``j``'s child values straight from their
    rows ``child_rows[g]`` (plus ``child_b[g]``'s where ``FOLDED``) and keeps a running per-sample maximum ``m``,
    rescaling its sums by ``exp(m_old - m)`` as it grows. With one parent tile every child value is read once
    either way, so the shift pass's read and its transposed copy (written, then read again) are saved."""
    wait_for_prior_grid(PDL)
    g = tl.program_id(1).to(tl.int64)
    out_rows, child_rows, child_b = out_rows + g * P, child_rows + g * C, child_b + g * C
    w_base = _weight_base(w_base, g, WALIGN)
    p = tl.arange(0, BP)
    b = tl.program_id(0) * BN + tl.arange(0, BN)
    at_w = sum_w + w_base + p[:, None].to(tl.int64) * w_stride
    m = tl.full((BN,), float("-inf"), dtype=tl.float32)
    acc = tl.zeros((BP, BN), dtype=tl.float32)
    for k in tl.range(0, C, BK, num_stages=STAGES):
        c = k + tl.arange(0, BK)
        ok = (c < C)[:, None] & (b < B)[None, :]
        r = tl.load(child_rows + c, mask=c < C, other=0).to(tl.int64)
        cv = tl.load(vals + r[:, None] * B + b[None, :], mask=ok, other=float("-inf"))
        if FOLDED:  # (0 + v_a) + v_b, as prod_fwd adds them
            r2 = tl.load(child_b + c, mask=c < C, other=0).to(tl.int64)
            cv += tl.load(vals + r2[:, None] * B + b[None, :], mask=ok, other=0.0)
        m, at, acc = running_max(m, cv, acc)
        w = tl.load(at_w + c[None, :], mask=(p < P)[:, None] & (c < C)[None, :], other=0.0)
        acc += _dot(w, tl.exp(cv - at[None, :]), PRECISION)
    rows = tl.load(out_rows + p, mask=p < P, other=0).to(tl.int64)
    tl.store(vals + rows[:, None] * B + b[None, :], running_log(acc, m), mask=(p < P)[:, None] & (b < B)[None, :])
