"""Triton kernel templates for the plan's ops, specialised by ``tl.constexpr`` (tiles, fan-in, distribution).

Buffers: ``vals``/``flows`` are ``[rows, B]`` float32 row-major (row stride ``B``); the data come transposed,
``x`` ``[V, B]`` float32 and ``miss`` ``[V, B]`` int8, so a variable's samples are contiguous (a warp's loads
of one variable over a batch block are one transaction, not one per sample). Row offsets are computed in
int64 (rows x B can pass 2^31).

Sum layers (forward): per parent tile and batch block, the per-sample maximum ``m`` of the child values,
then ``acc = W @ exp(C - m)`` over the child tiles with ``tl.dot`` and ``log(acc) + m``: one exp per child
value per tile, not per edge. Backward: with ``G = F_parent * exp(s - v_parent)`` (zero where the parent has
no flow, ``s`` a per-sample shift) every edge flow is ``W * exp(C - s) * G``, so child flows are
``exp(C - s) * (W^T @ G)`` (one program per parent tile and batch block) and parameter flows
``W * (G @ exp(C - s)^T)`` summed over the batch inside one program per parent tile and child tile.

Atomic adds are ``sem="relaxed"``: they only accumulate, and launches are ordered by the stream (Triton's
default, ``acq_rel``, orders memory around every atomic).

Values are addressed through row tables too (``rows``, ``out_rows``, ``child_rows``, ``children``): a node's
value row depends on the layout (:mod:`pcc.backend.valuemap`). Flows are addressed through flow-row tables
(``frows``, ``fout``, ``tile_frows``, the flow form of a product's children): a training step keeps flows
only while they are alive (:mod:`pcc.backend.flowmap`), so a node's flow row differs from its value row;
``zero_rows`` clears reused flow rows.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

LOG_SQRT_2PI = tl.constexpr(0.9189385332046727)
# exp(80) ~ 5.5e34: clamping m - v at 80 keeps F * exp(m - v) finite; edges it cuts have weights below fp32's range
CLAMP = tl.constexpr(80.0)
# s - v <= -log F keeps F exp(s - v) <= 1; the clamp only matters for subnormal F, whose 1/F is past fp32's range
G_CLAMP = tl.constexpr(87.0)
# sum_bwd unrolls its loop over a child tile's parent tiles up to this many (beyond, compile time explodes)
UNROLL_USES = tl.constexpr(16)
# Triton's CPU interpreter miscomputes bf16 tl.dot, so there "bf16" rounds the operands and multiplies in fp32
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


def _interpreter_loop_bounds() -> None:
    """Let Triton's CPU interpreter take runtime loop bounds (``tl.range(b0, b_end, BB)``).

    Triton 3.6's interpreter makes a ``range`` of a loop's bounds with ``int(scalar.handle.data)``, where
    the data is a one-element array, which numpy 2.4 refuses ("only 0-dimensional arrays can be converted").
    The compiled kernels need ``for`` loops, not ``while`` loops, to pipeline their loads, so the interpreter
    is taught to read the one element (its tensor patches are wrapped, then restored with them).
    """
    from triton.runtime import interpreter

    patch = interpreter._patch_lang_tensor
    if getattr(patch, "_pcc", False):
        return

    def index(self) -> int:
        data = self.handle.data
        assert data.size == 1, "a loop bound must be a scalar"  # as the compiler says of a block
        return int(data.reshape(-1)[0])

    def patched(tensor, scope) -> None:
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", index)

    patched._pcc = True
    interpreter._patch_lang_tensor = patched


if INTERPRETED:
    _interpreter_loop_bounds()


def cat_splits(programs: int, batch: int, fill: int, least: int) -> int:
    """Batch ranges of a categorical-count launch (:func:`input_bwd_cat`) of ``programs`` programs: enough that
    ``programs`` x ranges reach ``fill``, each range at least ``least`` samples; 1 where ``fill`` is 0 or
    already reached. Ranges are whole batch blocks, so a ``least`` below the kernel's block (tests force 16)
    can leave the last ranges empty: their programs count nothing."""
    if fill <= 0 or programs >= fill:
        return 1
    return max(1, min(-(-fill // programs), batch // least))


def batch_block(batch: int, bb: int, tiles: int, fill: int) -> int:
    """A sum launch's batch block: ``bb`` halved (not below 16) while that keeps ``tiles`` x batch blocks
    within ``fill`` (the programs the GPU runs at once).

    A narrow layer (an HMM's 256 states are 4 tiles) would otherwise leave most SMs idle; past one wave,
    smaller blocks only add weight reads. ``fill = 0`` keeps ``bb``.
    """
    while bb > 16 and 2 * tiles * -(-batch // bb) <= fill:
        bb //= 2
    return bb


@triton.jit
def wait_for_prior_grid(PDL: tl.constexpr):
    """Programmatic dependent launch (Hopper; ``triton_exec.PDL``): a kernel launched with ``launch_pdl`` may start
    its programs while the launch before it is still running. ``PDL`` >= 1 waits until that grid has finished and
    its writes are visible; ``PDL`` 2 then lets the next launch start its own programs at once (which wait here
    in turn), while with 1 the next launch starts as this one's programs exit. Every launched kernel calls it
    first, before any load or store, so launches still run in order: what overlaps is a launch's start-up with the
    tail of the one before. With ``PDL`` 0 it is nothing (and the CPU interpreter never sees it).
    """
    if PDL >= 1:
        gdc_wait()
    if PDL == 2:
        gdc_launch_dependents()


@triton.jit
def _bf16(a):
    """``a`` in bfloat16 (in the interpreter: rounded, but kept in float32 for its fp32 ``tl.dot``)."""
    if INTERPRETED:
        out = a.to(tl.bfloat16).to(tl.float32)
    else:
        out = a.to(tl.bfloat16)
    return out


@triton.jit
def _bf16_dot(a, b):
    """A bf16 tensor-core product with fp32 accumulation (the interpreter multiplies the rounded values in fp32)."""
    if INTERPRETED:
        out = tl.dot(_bf16(a), _bf16(b), input_precision="ieee")
    else:
        out = tl.dot(_bf16(a), _bf16(b), out_dtype=tl.float32)
    return out


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """``a @ b`` with fp32 accumulation; ``PRECISION`` is a ``tl.dot`` input precision or ``"bf16"``.

    ``"bf16"`` rounds both operands to bfloat16 (8-bit mantissa, fp32's exponent range, so ``exp`` values
    that fit fp32 fit it too) and runs bf16 tensor-core products: twice tf32's rate, six times tf32x3's.
    ``"bf16x3"`` splits each operand into a bfloat16 head and the bfloat16 of the rest (16 significant bits)
    and adds three bf16 products, leaving out the product of the two rests: about 1e-5 relative, at half of
    tf32x3's tensor-core time (tf32x3 keeps 22 bits).
    """
    if PRECISION == "bf16":
        out = _bf16_dot(a, b)
    elif PRECISION == "bf16x3":
        a_hi, b_hi = _bf16(a), _bf16(b)
        a_lo, b_lo = _bf16(a - a_hi.to(tl.float32)), _bf16(b - b_hi.to(tl.float32))
        out = _bf16_dot(a_lo, b_hi) + _bf16_dot(a_hi, b_lo) + _bf16_dot(a_hi, b_hi)
    else:
        out = tl.dot(a, b, input_precision=PRECISION)
    return out


@triton.jit
def input_fwd(vals, x, miss, var, prow, theta, rows, n, B,
              DIST: tl.constexpr, K: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr, PDL: tl.constexpr = 0):
    """Rows ``rows[i]``: log-probability of ``x[:, var[i]]`` under parameter row ``prow[i]`` (0 if missing).

    Program ``tile * nb + j`` computes rows ``tile * BN ..`` for batch block ``j``: a tile's batch blocks are
    adjacent in the grid, so they read its parameter rows from L2 together (HCLT-128's 100 MB table does not
    fit in L2). Measured on an H100 against the batch-block-major grid, it made no difference (HCLT-128 at
    batch 8192: 3.9 and 3.7 ms), so the kernel's time there is not the table's traffic.
    """
    wait_for_prior_grid(PDL)
    nb = tl.cdiv(B, BB)
    i = (tl.program_id(0) // nb) * BN + tl.arange(0, BN)
    b = (tl.program_id(0) % nb) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    v = tl.load(var + i, mask=i < n, other=0)
    r = tl.load(prow + i, mask=i < n, other=0).to(tl.int64)
    xy = tl.load(x + v[:, None].to(tl.int64) * B + b[None, :], mask=ok, other=0.0)
    gone = tl.load(miss + v[:, None].to(tl.int64) * B + b[None, :], mask=ok, other=1) != 0
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
    at = tl.load(rows + i, mask=i < n, other=0).to(tl.int64)
    tl.store(vals + at[:, None] * B + b[None, :], out, mask=ok)


@triton.jit
def input_bwd(flows, frows, x, miss, var, prow, stats, mass, n, B,
              DIST: tl.constexpr, K: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr, PDL: tl.constexpr = 0):
    """EM statistics of input rows: observed entries add their flow to ``stats``; missing ones to ``mass``.

    ``stats`` is ``[R, K]`` counts (categorical), ``[R, 2]`` (bernoulli) or ``[R, 3]`` (gaussian: flow,
    flow*x, flow*x^2); ``mass[i]`` collects node ``i``'s flow on missing entries (expanded on the host).
    Node ``i``'s flow is flow row ``frows[i]``.
    """
    wait_for_prior_grid(PDL)
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    v = tl.load(var + i, mask=i < n, other=0)
    r = tl.load(prow + i, mask=i < n, other=0).to(tl.int64)
    fr = tl.load(frows + i, mask=i < n, other=0).to(tl.int64)
    f = tl.load(flows + fr[:, None] * B + b[None, :], mask=ok, other=0.0)
    xy = tl.load(x + v[:, None].to(tl.int64) * B + b[None, :], mask=ok, other=0.0)
    gone = tl.load(miss + v[:, None].to(tl.int64) * B + b[None, :], mask=ok, other=1) != 0
    seen = ok & (~gone) & (f != 0.0)
    if DIST == 0:
        tl.atomic_add(stats + r[:, None] * K + xy.to(tl.int64), f, mask=seen, sem="relaxed")
    elif DIST == 1:
        tl.atomic_add(stats + r[:, None] * 2 + (xy > 0.5).to(tl.int64), f, mask=seen, sem="relaxed")
    else:
        at = stats + r[:, None] * 3 + tl.zeros((BN, BB), dtype=tl.int64)  # one pointer per (node, sample)
        tl.atomic_add(at, f, mask=seen, sem="relaxed")
        tl.atomic_add(at + 1, f * xy, mask=seen, sem="relaxed")
        tl.atomic_add(at + 2, f * xy * xy, mask=seen, sem="relaxed")
    lost = tl.sum(tl.where(ok & gone, f, 0.0), axis=1)
    tl.atomic_add(mass + i, lost, mask=(i < n) & (lost != 0.0), sem="relaxed")


@triton.jit
def _count_block(acc, acc_t, f, hot, PRECISION: tl.constexpr, TRANS: tl.constexpr):
    """``(acc + F @ H, acc_t + H^T @ F^T)`` for ``TRANS`` (the other unchanged): one batch block's counts, ``F``
    the flows ``[BN, BB]`` and ``H`` the one-hot ``[BB, KB]``. At ``tf32x3``/``bf16x3`` the flows are split in a
    tf32 high part and the rest (the one-hot is exact in tf32)."""
    if PRECISION == "tf32x3" or PRECISION == "bf16x3":
        hi = (f.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)  # top 11 significant bits
        if TRANS:
            hot_t = tl.trans(hot)
            acc_t += (tl.dot(hot_t, tl.trans(hi), input_precision="tf32")
                      + tl.dot(hot_t, tl.trans(f - hi), input_precision="tf32"))
        else:
            acc += tl.dot(hi, hot, input_precision="tf32") + tl.dot(f - hi, hot, input_precision="tf32")
    elif TRANS:
        acc_t += _dot(tl.trans(hot), tl.trans(f), PRECISION)
    else:
        acc += _dot(f, hot, PRECISION)
    return acc, acc_t


@triton.jit
def input_bwd_cat(flows, frows, x, miss, var, prow, tiles, stats, theta, n, B, splits,
                  K: tl.constexpr, BN: tl.constexpr, KB: tl.constexpr, BB: tl.constexpr, PRECISION: tl.constexpr,
                  KBLOCKS: tl.constexpr, TRANS: tl.constexpr = False, STAGES: tl.constexpr = 1,
                  EM: tl.constexpr = False, a=0.0, step=0.0, PDL: tl.constexpr = 0):
    """Categorical EM counts of one tile of rows over one variable (``tiles[tile]``: its first and end row),
    as a matrix product over the batch.

    ``stats[prow[i], k] += sum_b F[i, b] [x[b, v] = k]``: the one-hot of the data column times the flows,
    ``tl.dot`` over batch blocks in registers, then one atomic per count (tied tables share rows). This
    replaces one contended atomic per (row, sample). A row's flow on missing entries adds that much of its own
    distribution ``theta[prow[i]]`` (the E-step with missing data), in the same atomics. At ``tf32x3`` the
    flows are split into a tf32 high part and the rest (``hi + lo`` keeps ~22 bits), since the one-hot needs no
    split: 2.2x faster than three products on an H100 (bench/cat_sweep.py). ``bf16x3`` does the same.

    Program ``tile * KBLOCKS + j`` counts categories ``j * KB ..`` of its tile: the ``KBLOCKS`` programs that
    read the same flows are adjacent, so they run together and all but one read them from L2 (with the
    category block as the slower grid axis, each tile's flows came from memory ``KBLOCKS`` times: HCLT-128's
    counts at batch 8192 took 12.9 of a 47 ms step).

    ``splits`` (:func:`cat_splits`) cuts the batch into that many ranges of whole ``BB`` blocks, one program
    each (program ``(tile * splits + s) * KBLOCKS + j``): the counts are atomics already, so a launch of few
    tiles (an input piece) need not loop over a whole large batch in few programs.

    ``TRANS`` computes the transposed product, one-hot first (``[KB, BB] @ [BB, BN]``): the same sums, for tiles
    of fewer than 64 rows (HCLT 32's), whose ``BN``-row first operand is below the 64 rows that Hopper's
    warpgroup products take (:data:`pcc.backend.codegen.CAT_TRANSPOSED_BELOW`).

    ``EM`` (a mini-batch EM step; ``splits`` 1, and no two rows of the launch's table share a parameter row, so
    the programs of a tile hold its rows' whole counts): instead of adding the counts into ``stats``, the program
    applies the categorical EM update to its rows and categories of ``theta`` in place, ``new = (c + a / K) /
    (sum c + a)`` where that sum is positive (else the old row), ``theta <- (1 - step) theta + step new``: as
    :func:`pcc.backend.em_kernels.em_cat` does from the counts, with no count table. Each program finds the
    row's ``sum c`` without the other blocks' counts: the flows of the samples whose value is a category (summed
    in the batch loop) plus the missing ones' flows (times the old row's total, 1: rows of categorical
    parameters sum to 1, which loading them checks).

    Every batch block's products run, those of blocks with no sample in the program's categories too: skipping
    them (a branch per block on whether the one-hot has a 1; in MNIST's first 512 test images only 56% of the
    32-sample x 64-category blocks do) made these launches 1.6x slower on an H200 (HCLT 128 at 512: 0.711 ->
    1.111 ms a step, docs/benchmarks.md, twentieth round).
    """
    wait_for_prior_grid(PDL)
    kblock, rest = tl.program_id(0) % KBLOCKS, tl.program_id(0) // KBLOCKS
    tile, s = rest // splits, rest % splits
    per = tl.cdiv(tl.cdiv(B, splits), BB) * BB
    b0 = s * per
    b_end = tl.minimum(B, b0 + per)
    i0 = tl.load(tiles + 2 * tile)
    i = i0 + tl.arange(0, BN)
    v = tl.load(var + i0)
    rows_ok = i < tl.load(tiles + 2 * tile + 1)  # the tile's own rows (InputOp.var_tiles), all of variable v
    fr = tl.load(frows + i, mask=rows_ok, other=0).to(tl.int64)
    k = kblock * KB + tl.arange(0, KB)
    acc = tl.zeros((BN, KB), dtype=tl.float32)
    acc_t = tl.zeros((KB, BN), dtype=tl.float32)  # TRANS: the counts transposed (else unused)
    lost = tl.zeros((BN,), dtype=tl.float32)
    seen = tl.zeros((BN,), dtype=tl.float32)  # EM: flows of the samples counted in some category
    for b_at in tl.range(b0, b_end, BB, num_stages=STAGES):  # a for loop: its loads are pipelined
        b = b_at + tl.arange(0, BB)
        inb = b < b_end
        f = tl.load(flows + fr[:, None] * B + b[None, :], mask=rows_ok[:, None] & inb[None, :], other=0.0)
        xv = tl.load(x + v.to(tl.int64) * B + b, mask=inb, other=-1.0).to(tl.int32)
        gone = tl.load(miss + v.to(tl.int64) * B + b, mask=inb, other=1) != 0
        hot = ((xv[:, None] == k[None, :]) & ~gone[:, None]).to(tl.float32)
        acc, acc_t = _count_block(acc, acc_t, f, hot, PRECISION, TRANS)
        lost += tl.sum(tl.where(gone[None, :], f, 0.0), axis=1)
        if EM:
            seen += tl.sum(tl.where((~gone & (xv >= 0) & (xv < K))[None, :], f, 0.0), axis=1)
    if TRANS:
        acc = tl.trans(acc_t)
    r = tl.load(prow + i, mask=rows_ok, other=0).to(tl.int64)
    ok = rows_ok[:, None] & (k[None, :] < K)
    old = tl.load(theta + r[:, None] * K + k[None, :], mask=ok, other=0.0)
    acc += lost[:, None] * old
    if EM:  # the other blocks' counts (and old entries, rewritten as this reads) are other programs':
        total = seen + lost + a  # missing entries add the old row's total, 1 (a checked parameter)
        safe = tl.where(total > 0, total, 1.0)
        new = tl.where(total[:, None] > 0, (acc + a / K) / safe[:, None], old)
        tl.store(theta + r[:, None] * K + k[None, :], tl.where(step >= 1.0, new, old * (1.0 - step) + new * step),
                 mask=ok)
    else:
        tl.atomic_add(stats + r[:, None] * K + k[None, :], acc, mask=ok & (acc != 0.0), sem="relaxed")


@triton.jit
def _row_sum(buf, table, i, b, ok, n, B, K: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr,
             SKIP: tl.constexpr = -1):
    """``sum_k buf[table[i, k], b]``: the rows a ``[n, K]`` index table names, added (product values in log
    space, or a child's parents' flows). ``SKIP``: the padding row (a row of zeros), which is not read: a
    padded slot costs no memory traffic (PD's gathers are about half padding); -1: every slot is read."""
    acc = tl.zeros((BN, BB), dtype=tl.float32)
    for k in tl.static_range(K):
        r = tl.load(table + i.to(tl.int64) * K + k, mask=i < n, other=0).to(tl.int64)
        acc += tl.load(buf + r[:, None] * B + b[None, :], mask=ok & (r[:, None] != SKIP), other=0.0)
    return acc


@triton.jit
def _add_flows(at, f, mask, OVERWRITE: tl.constexpr):
    """``*at += f`` where ``mask``, without atomics (each row written by one program); ``OVERWRITE``: these are
    the rows' first flows, stored rather than added (:func:`pcc.backend.flowmap.overwriting_ops`)."""
    if OVERWRITE:
        tl.store(at, f, mask=mask)
    else:
        tl.store(at, tl.load(at, mask=mask, other=0.0) + f, mask=mask)


@triton.jit
def prod_fwd(vals, children, rows, n, B, KMAX: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr,
             SKIP: tl.constexpr = -1, PDL: tl.constexpr = 0):
    """Rows ``rows[i]``: the sum (log space) of the rows ``children[i, :]`` (``SKIP``: the padding row, not
    read; see :func:`_row_sum`)."""
    wait_for_prior_grid(PDL)
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    acc = _row_sum(vals, children, i, b, ok, n, B, KMAX, BN, BB, SKIP)
    at = tl.load(rows + i, mask=i < n, other=0).to(tl.int64)
    tl.store(vals + at[:, None] * B + b[None, :], acc, mask=ok)


@triton.jit
def prod_fwd_inputs(vals, children, rows, ivar, iprow, x, miss, theta, n, B, KMAX: tl.constexpr, K: tl.constexpr,
                    BN: tl.constexpr, BB: tl.constexpr, PDL: tl.constexpr = 0):
    """Rows ``rows[i]``: the sum (log space) over slots ``k`` of the row ``children[i, k]`` or, where
    ``ivar[i, k] >= 0``, of the categorical log-probability ``log theta[iprow[i, k], x[:, ivar[i, k]]]`` (0 if
    missing): inputs fused into their products (:mod:`pcc.backend.fusion`) never get a row of their own.

    Slots add in order, and the other term of each is an exact 0 (its load masked off), so the value is bitwise
    what :func:`input_fwd` then :func:`prod_fwd` give."""
    wait_for_prior_grid(PDL)
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    acc = tl.zeros((BN, BB), dtype=tl.float32)
    for k in tl.static_range(KMAX):
        slot = i.to(tl.int64) * KMAX + k
        c = tl.load(children + slot, mask=i < n, other=0).to(tl.int64)
        v = tl.load(ivar + slot, mask=i < n, other=-1)
        r = tl.load(iprow + slot, mask=i < n, other=0).to(tl.int64)
        row = tl.load(vals + c[:, None] * B + b[None, :], mask=ok & (v[:, None] < 0), other=0.0)
        real = ok & (v[:, None] >= 0)
        at = tl.maximum(v, 0).to(tl.int64)[:, None] * B + b[None, :]
        gone = tl.load(miss + at, mask=real, other=1) != 0  # other slots count as missing: log 1
        idx = tl.where(gone, 0, tl.load(x + at, mask=real, other=0.0).to(tl.int64))
        logp = tl.where(gone, 0.0, tl.log(tl.load(theta + r[:, None] * K + idx, mask=real, other=1.0)))
        acc += row + logp
    at = tl.load(rows + i, mask=i < n, other=0).to(tl.int64)
    tl.store(vals + at[:, None] * B + b[None, :], acc, mask=ok)


@triton.jit
def prod_bwd(flows, frows, children, n, B, KMAX: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr,
             ZERO: tl.constexpr, ATOMIC: tl.constexpr, OVERWRITE: tl.constexpr, PDL: tl.constexpr = 0):
    """Every child receives its product parents' flows (product ``i``'s flow row is ``frows[i]``, its
    children's are ``children[i, :]``).

    Atomics when children are shared within the launch; otherwise (``ATOMIC=False``: each child row has one
    parent here) a plain read-add-write, which is several times cheaper, or a plain write (``OVERWRITE``:
    this launch writes the children's first flows, :func:`pcc.backend.flowmap.overwriting_ops`).
    """
    wait_for_prior_grid(PDL)
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    fr = tl.load(frows + i, mask=i < n, other=0).to(tl.int64)
    f = tl.load(flows + fr[:, None] * B + b[None, :], mask=ok, other=0.0)
    for k in tl.static_range(KMAX):
        c = tl.load(children + i.to(tl.int64) * KMAX + k, mask=i < n, other=0).to(tl.int64)
        at = flows + c[:, None] * B + b[None, :]
        if ATOMIC:
            tl.atomic_add(at, f, mask=ok & (f != 0.0), sem="relaxed")
        else:
            _add_flows(at, f, ok & (c[:, None] != ZERO), OVERWRITE)


@triton.jit
def prod_bwd_gather(flows, kids, parents, n, B, D: tl.constexpr, BN: tl.constexpr, BB: tl.constexpr,
                    OVERWRITE: tl.constexpr, SKIP: tl.constexpr = -1, PDL: tl.constexpr = 0):
    """Child ``i`` (flow row ``kids[i]``) receives the flows of its product parents (flow rows
    ``parents[i, :]``, padded with ``PAD``'s zero row, which ``SKIP`` leaves unread): a gather per child, for launches whose children are
    shared. Each child row is written once, so no atomics: on RAT-SPN, whose inputs feed dozens of
    products, contended atomic adds took most of a training step.
    """
    wait_for_prior_grid(PDL)
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    ok = (i[:, None] < n) & (b[None, :] < B)
    acc = _row_sum(flows, parents, i, b, ok, n, B, D, BN, BB, SKIP)
    at = flows + tl.load(kids + i, mask=i < n, other=0).to(tl.int64)[:, None] * B + b[None, :]
    _add_flows(at, acc, ok, OVERWRITE)


@triton.jit
def zero_rows(flows, rows, n, B, BN: tl.constexpr, BB: tl.constexpr, PDL: tl.constexpr = 0):
    """Clear flow rows ``rows[:n]`` (rows a compact flow buffer hands to a new owner)."""
    wait_for_prior_grid(PDL)
    i = tl.program_id(0) * BN + tl.arange(0, BN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    r = tl.load(rows + i, mask=i < n, other=0).to(tl.int64)
    tl.store(flows + r[:, None] * B + b[None, :], tl.zeros((BN, BB), dtype=tl.float32),
             mask=(i[:, None] < n) & (b[None, :] < B))


@triton.jit
def _weight_offsets(wids, wbase, wstride, t, k, TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr,
                    AFFINE: tl.constexpr, WALIGN: tl.constexpr = 1):
    """Offsets ``[TP, TC]`` of parent tile ``t``'s weights over child columns ``k..``, the same in the weight table
    and in its flows.

    ``AFFINE``: the tile is the strided block ``base + p * stride + c`` (``SumOp.affine``), so offsets are
    computed; otherwise they are gathered from ``wids`` (one index load per weight). Callers mask the
    pairs that are not edges (padded parents or children), whose affine offsets are not weights.
    ``WALIGN`` (``SumOp.walign``) divides every base and stride: with 4, the rows' loads are 16-byte vectors.
    """
    p = tl.arange(0, TP)
    c = tl.arange(0, TC)
    if AFFINE:
        j = t * (KC // TC) + k // TC
        base = tl.multiple_of(tl.load(wbase + j).to(tl.int64), WALIGN)
        stride = tl.multiple_of(tl.load(wstride + j).to(tl.int64), WALIGN)
        at = base + p[:, None] * stride + c[None, :]
    else:
        at = tl.load(wids + (t * TP + p[:, None]) * KC + k + c[None, :])
    return at


@triton.jit
def _real_children(c, NEG: tl.constexpr, WALIGN: tl.constexpr):
    """``c != NEG`` as a ``[1, TC]`` edge mask; ``WALIGN`` (``SumOp.walign``): the padding children come in aligned
    runs of that many columns, so the mask is constant over each (which lets the weight loads be vectors)."""
    return tl.max_constancy(c != NEG, WALIGN)[None, :]


@triton.jit
def _child_tile_row(t, SAME_CHILDREN: tl.constexpr):
    """The row of the child table that parent tile ``t`` reads: its own, or the one row all tiles share."""
    if SAME_CHILDREN:
        return t * 0
    return t


@triton.jit
def sum_fwd(vals, sum_w, out_rows, child_rows, child_b, wids, wbase, wstride, B,
            TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, BB: tl.constexpr, PAD: tl.constexpr,
            NEG: tl.constexpr, AFFINE: tl.constexpr, PRECISION: tl.constexpr, STAGES: tl.constexpr,
            PAIR: tl.constexpr = 1, SAME_CHILDREN: tl.constexpr = False, FOLDED: tl.constexpr = False,
            PDL: tl.constexpr = 0, WALIGN: tl.constexpr = 1):
    """One parent tile x one batch block: ``log(W @ exp(C - m)) + m`` in one pass over the child tiles.

    ``m`` is the running per-sample maximum of the child values read so far; when it grows, the partial
    sum is rescaled by ``exp(m_old - m_new) <= 1`` (so every child value is read and exponentiated once).
    The loop over child tiles is software-pipelined (``STAGES`` deep): loads of the next tiles overlap the
    products of this one. ``PAIR = 2``: the program's ``TP`` rows are the plan's parent tiles ``2t`` and
    ``2t + 1``, which must read the same child tiles with weights that continue one strided block
    (``SumOp.pairable``); larger tiles use the tensor cores better where the grid stays full.
    ``SAME_CHILDREN``: ``child_rows`` is one row, which every parent tile reads (``SumOp.same_children``).
    ``FOLDED``: a child's value is the sum of two rows, ``child_rows`` and ``child_b`` (the same shape): the two
    children of a product folded into this load (:mod:`pcc.backend.folding`; ``ZERO`` where a child is a row of
    its own); otherwise ``child_b`` is not read.
    """
    wait_for_prior_grid(PDL)
    t = tl.program_id(0).to(tl.int64)
    tw = t * PAIR  # the plan's tile whose children and weight addresses the program reads
    tc = _child_tile_row(tw, SAME_CHILDREN)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    p = tl.arange(0, TP)
    rows = tl.load(out_rows + t * TP + p).to(tl.int64)
    m = tl.full((BB,), float("-inf"), dtype=tl.float32)
    acc = tl.zeros((TP, BB), dtype=tl.float32)
    for k in tl.range(0, KC, TC, num_stages=STAGES):
        c = tl.load(child_rows + tc * KC + k + tl.arange(0, TC)).to(tl.int64)
        cv = tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf"))
        if FOLDED:  # (0 + v_a) + v_b: bitwise the product's value as prod_fwd adds it
            cb = tl.load(child_b + tc * KC + k + tl.arange(0, TC)).to(tl.int64)
            cv += tl.load(vals + cb[:, None] * B + b[None, :], mask=b[None, :] < B, other=0.0)
        m_new, shift, acc = running_max(m, cv, acc)
        edge = (rows[:, None] != PAD) & _real_children(c, NEG, WALIGN)
        w = tl.load(sum_w + _weight_offsets(wids, wbase, wstride, tw, k, TP, TC, KC, AFFINE, WALIGN), mask=edge,
                    other=0.0)
        acc += _dot(w, tl.exp(cv - shift[None, :]), PRECISION)
        m = m_new
    out = running_log(acc, m)
    tl.store(vals + rows[:, None] * B + b[None, :], out, mask=(rows[:, None] != PAD) & (b[None, :] < B))


@triton.jit
def running_max(m, cv, acc):
    """One step of a one-pass log-sum-exp over child values ``cv`` ``[K, BB]``: ``(m_new, shift, acc)``, the
    running per-sample maximum grown by ``cv``, the shift to exponentiate ``cv`` against (0 while no child is
    finite) and the partial sums ``acc`` ``[P, BB]`` rescaled by ``exp(m - m_new)`` to it (0 before any)."""
    m_new = tl.maximum(m, tl.max(cv, axis=0))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    acc = acc * tl.where(m == float("-inf"), 0.0, tl.exp(m - shift))[None, :]
    return m_new, shift, acc


@triton.jit
def running_log(acc, m):
    """The log-sum-exp ``log(acc) + m`` that :func:`running_max`'s steps leave (``-inf`` where no child was finite)."""
    return tl.log(acc) + tl.where(m == float("-inf"), 0.0, m)[None, :]


@triton.jit
def _parent_scale(vals, flows, out_rows, fout, t, b, B, TP: tl.constexpr):
    """``(G, s, rows)``: ``G = F * exp(s - v)`` of parent tile ``t`` with the per-sample shift ``s`` (the smallest
    ``v - log F`` among parents with flow), and the tile's rows (``PAD`` where short; ``fout`` holds their flow rows).

    A sum's children share its scope, so ``c - s`` stays below ``-log w`` and ``exp(c - s)`` is finite (the
    clamp guards weights below fp32's range); ``s <= v - log F`` keeps ``G <= 1``. Parents without flow give 0.
    """
    rows = tl.load(out_rows + t * TP + tl.arange(0, TP)).to(tl.int64)
    frows = tl.load(fout + t * TP + tl.arange(0, TP)).to(tl.int64)
    g, s = _scale_rows(vals, flows, rows, frows, b, B)
    return g, s, rows


@triton.jit
def sum_scale(vals, flows, out_rows, fout, scale, gbuf, B, TP: tl.constexpr, BB: tl.constexpr,
              SCRATCH: tl.constexpr = False, PDL: tl.constexpr = 0):
    """Training steps, before a sum op's backward: each parent's ``G = F exp(s - v)`` and ``scale[t, b] = s``
    (:func:`_parent_scale`), so the op's launches read ``G`` instead of recomputing it for every child tile.
    ``G`` replaces the parents' flows in place (they are dead after their op), or with ``SCRATCH`` goes to
    ``gbuf`` (``[parent slots, B]``, slot ``t * TP + p``), where the flow row is shared with nodes that read it
    later (:func:`pcc.backend.flowmap.shared_products`)."""
    wait_for_prior_grid(PDL)
    t = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    rows = tl.load(out_rows + t * TP + tl.arange(0, TP)).to(tl.int64)
    frows = tl.load(fout + t * TP + tl.arange(0, TP)).to(tl.int64)
    g, s = _scale_rows(vals, flows, rows, frows, b, B)
    tl.store(_g_at(flows, gbuf, frows, t, b, B, TP, SCRATCH), g, mask=b[None, :] < B)  # PAD's row gets its own 0
    tl.store(scale + t * B + b, s, mask=b < B)


@triton.jit
def _g_at(flows, gbuf, frows, t, b, B, TP: tl.constexpr, SCRATCH: tl.constexpr):
    """Where parent tile ``t``'s ``G`` lies (``[TP, BB]`` pointers): its flow rows, or its slots in ``gbuf``."""
    if SCRATCH:
        return gbuf + (t * TP + tl.arange(0, TP)).to(tl.int64)[:, None] * B + b[None, :]
    return flows + frows[:, None] * B + b[None, :]


@triton.jit
def _parent_g(vals, flows, out_rows, fout, scale, gbuf, t, b, B, TP: tl.constexpr, SCALED: tl.constexpr,
              SCALE_PAIR: tl.constexpr = 1, SCRATCH: tl.constexpr = False):
    """:func:`_parent_scale`'s ``(G, s, rows)``, read back from :func:`sum_scale`'s output when ``SCALED``
    (``SCALE_PAIR = 2``: sum_scale ran on pairs of tiles, so tile ``t``'s shift is pair ``t // 2``'s; ``G`` in
    ``gbuf`` with ``SCRATCH``)."""
    if SCALED:
        rows = tl.load(out_rows + t * TP + tl.arange(0, TP)).to(tl.int64)
        frows = tl.load(fout + t * TP + tl.arange(0, TP)).to(tl.int64)
        g = tl.load(_g_at(flows, gbuf, frows, t, b, B, TP, SCRATCH), mask=b[None, :] < B, other=0.0)
        s = tl.load(scale + (t // SCALE_PAIR) * B + b, mask=b < B, other=0.0)
    else:
        g, s, rows = _parent_scale(vals, flows, out_rows, fout, t, b, B, TP)
    return g, s, rows


@triton.jit
def _scale_rows(vals, flows, rows, frows, b, B):
    """``(G, s)`` of the parent ``rows`` (flow rows ``frows``) over batch columns ``b`` (see :func:`_parent_scale`)."""
    inb = b[None, :] < B
    f = tl.load(flows + frows[:, None] * B + b[None, :], mask=inb, other=0.0)
    v = tl.load(vals + rows[:, None] * B + b[None, :], mask=inb, other=0.0)
    s = tl.min(shift_key(v, f), axis=0)
    s = tl.where(s == float("inf"), 0.0, s)
    return scaled_flow(f, v, s[None, :]), s


@triton.jit
def shift_key(v, f):
    """``v - log F`` of parents with flow (``F > 0``), +inf elsewhere: the backward shift ``s`` is its minimum.

    Then ``G = F exp(s - v) <= 1``, and ``G = 1`` for the parent with the most flow per unit of value. The
    smallest value alone underflowed the main parents' ``G`` to 0 where values spread past ~88 nats while a low
    parent kept some flow (tests/test_backend.py, parents far apart)."""
    return tl.where(f > 0.0, v - tl.log(f), float("inf"))


@triton.jit
def scaled_flow(f, v, s):
    """``G = F exp(s - v)`` (0 where ``F = 0``) for a shift ``s`` from :func:`shift_key` (``s - v <= -log F``)."""
    return tl.where(f > 0.0, f * tl.exp(tl.minimum(s - v, G_CLAMP)), 0.0)


@triton.jit
def _use_flows(vals, flows, sum_w, out_rows, fout, wids, wbase, wstride, uses, scale, gbuf, B, u, r, b, c, cv,
               TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, KMAX: tl.constexpr, R: tl.constexpr,
               PAD: tl.constexpr, NEG: tl.constexpr, AFFINE: tl.constexpr, PRECISION: tl.constexpr,
               SCALED: tl.constexpr, PAIR: tl.constexpr, SCRATCH: tl.constexpr, WALIGN: tl.constexpr):
    """The flows ``[TC, BB]`` that use ``r`` of child tile ``u`` (one parent tile's slot; ``PAIR = 2``: uses
    ``2r`` and ``2r + 1``, parent tiles ``t`` and ``t + 1`` as one tile of ``TP`` rows) sends its children."""
    use = tl.load(uses + u * R + r * PAIR)
    flat = tl.maximum(use, 0).to(tl.int64)
    t, k = flat // KMAX, (flat % KMAX) * TC
    g, s, rows = _parent_g(vals, flows, out_rows, fout, scale, gbuf, t // PAIR, b, B, TP, SCALED, 1, SCRATCH)
    edge = (rows[:, None] != PAD) & _real_children(c, NEG, WALIGN) & (use >= 0)
    w = tl.load(sum_w + _weight_offsets(wids, wbase, wstride, t, k, TP, TC, KC, AFFINE, WALIGN), mask=edge, other=0.0)
    return tl.exp(tl.minimum(cv - s[None, :], CLAMP)) * _dot(tl.trans(w), g, PRECISION)


@triton.jit
def sum_bwd(vals, flows, sum_w, out_rows, fout, wids, wbase, wstride, tile_rows, tile_b, tile_frows, uses, scale,
            gbuf, B, TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, KMAX: tl.constexpr, R: tl.constexpr,
            BB: tl.constexpr, PAD: tl.constexpr, NEG: tl.constexpr, ATOMIC: tl.constexpr, AFFINE: tl.constexpr,
            PRECISION: tl.constexpr, OVERWRITE: tl.constexpr, SCALED: tl.constexpr, PAIR: tl.constexpr = 1,
            SCRATCH: tl.constexpr = False, FOLDED: tl.constexpr = False, PDL: tl.constexpr = 0,
            WALIGN: tl.constexpr = 1):
    """Child flows of one child tile x one batch block: ``sum_t exp(C - s_t) * (W_t^T @ G_t)``.

    The program visits the ``R`` parent tiles that read its child tile (``uses``: flat ``t * KMAX + k``,
    -1 for padding) and writes each child row once, so no atomics are needed unless a child row also lies
    in another child tile of this launch (``ATOMIC``); ``OVERWRITE``: these are the rows' first flows, stored
    rather than added (:func:`pcc.backend.flowmap.overwriting_ops`). (Splitting the ``R`` tiles over programs, with
    atomics, was slower on an H100 on every model tried, HMM-256's 32-program launches included:
    docs/benchmarks.md.) ``PAIR = 2`` (``SumOp.bwd_pairable``): ``TP`` is two parent tiles whose uses come in
    adjacent pairs, read as one (half the iterations and exponentials, products twice as deep). ``FOLDED``: a
    child's value is the sum of the rows ``tile_rows`` and ``tile_b`` name (as in :func:`sum_fwd`); its flow still
    goes to its own flow row (``tile_frows``).
    """
    wait_for_prior_grid(PDL)
    u = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    inb = b[None, :] < B
    c = tl.load(tile_rows + u * TC + tl.arange(0, TC)).to(tl.int64)
    cv = tl.load(vals + c[:, None] * B + b[None, :], mask=inb, other=float("-inf"))
    if FOLDED:
        cb = tl.load(tile_b + u * TC + tl.arange(0, TC)).to(tl.int64)
        cv += tl.load(vals + cb[:, None] * B + b[None, :], mask=inb, other=0.0)
    acc = tl.zeros((TC, BB), dtype=tl.float32)
    if R // PAIR <= UNROLL_USES:  # unrolled: the loads of the next use overlap this one's products
        for r in tl.static_range(R // PAIR):
            acc += _use_flows(vals, flows, sum_w, out_rows, fout, wids, wbase, wstride, uses, scale, gbuf, B, u, r, b, c,
                              cv, TP, TC, KC, KMAX, R, PAD, NEG, AFFINE, PRECISION, SCALED, PAIR, SCRATCH, WALIGN)
    else:  # HMM 4096's 64 uses unrolled took Triton two minutes to compile
        for r in tl.range(0, R // PAIR):
            acc += _use_flows(vals, flows, sum_w, out_rows, fout, wids, wbase, wstride, uses, scale, gbuf, B, u, r, b, c,
                              cv, TP, TC, KC, KMAX, R, PAD, NEG, AFFINE, PRECISION, SCALED, PAIR, SCRATCH, WALIGN)
    at = flows + tl.load(tile_frows + u * TC + tl.arange(0, TC)).to(tl.int64)[:, None] * B + b[None, :]
    real = inb & (c[:, None] != NEG)
    if ATOMIC:
        tl.atomic_add(at, acc, mask=real & (acc != 0.0), sem="relaxed")
    else:
        _add_flows(at, acc, real, OVERWRITE)


@triton.jit
def sum_bwd_params(vals, flows, sum_w, wflow, out_rows, fout, child_rows, child_b, wids, wbase, wstride, B, split,
                   scale, gbuf, TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, BB: tl.constexpr,
                   PAD: tl.constexpr, NEG: tl.constexpr, AFFINE: tl.constexpr, PRECISION: tl.constexpr,
                   SCALED: tl.constexpr, SCALE_PAIR: tl.constexpr = 1, STAGES: tl.constexpr = 3,
                   SAME_CHILDREN: tl.constexpr = False, SCRATCH: tl.constexpr = False, FOLDED: tl.constexpr = False,
                   PDL: tl.constexpr = 0, WALIGN: tl.constexpr = 1):
    """Parameter flows ``W * sum_b G exp(C - s)^T`` of one parent tile x one child tile.

    Program ``(t, k, j)`` sums batch blocks ``j, j + split, ...`` in registers, so each edge gets ``split``
    atomics per step (atomics because tied parameters share slots and splits share edges); ``split`` is
    chosen just large enough to fill the GPU. ``SAME_CHILDREN``, ``FOLDED`` (``child_b``): as in :func:`sum_fwd`.
    """
    wait_for_prior_grid(PDL)
    t = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * TC
    p = tl.arange(0, TP)
    c = tl.load(child_rows + _child_tile_row(t, SAME_CHILDREN) * KC + k + tl.arange(0, TC)).to(tl.int64)
    if FOLDED:
        cb = tl.load(child_b + _child_tile_row(t, SAME_CHILDREN) * KC + k + tl.arange(0, TC)).to(tl.int64)
    acc = tl.zeros((TP, TC), dtype=tl.float32)
    for b0 in tl.range(tl.program_id(2) * BB, B, split * BB, num_stages=STAGES):  # pipelined loads
        b = b0 + tl.arange(0, BB)
        g, s, _ = _parent_g(vals, flows, out_rows, fout, scale, gbuf, t, b, B, TP, SCALED, SCALE_PAIR, SCRATCH)
        cv = tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf"))
        if FOLDED:
            cv += tl.load(vals + cb[:, None] * B + b[None, :], mask=b[None, :] < B, other=0.0)
        e = tl.exp(tl.minimum(cv - s[None, :], CLAMP))
        acc += _dot(g, tl.trans(e), PRECISION)
    edge = (tl.load(out_rows + t * TP + p)[:, None] != PAD) & _real_children(c, NEG, WALIGN)
    at = _weight_offsets(wids, wbase, wstride, t, k, TP, TC, KC, AFFINE, WALIGN)  # the weights' and their flows'
    edge_f = tl.load(sum_w + at, mask=edge, other=0.0) * acc
    tl.atomic_add(wflow + at, edge_f, mask=edge & (edge_f != 0.0), sem="relaxed")
