"""Triton kernels for the EM update of sum weights and categorical tables (the fused form of
:class:`pcc.backend.params.EMUpdate`'s torch ops).

The torch update makes about a dozen edge-sized passes (an atomic ``index_add_`` by group, three gathers of
group values, element-wise ops, the blend); on an H100 they took 2.7-2.8 ms of a 19 ms step on HCLT-256 and
PD-128. Here the edges are cut into *runs*: contiguous edges that share a normalisation group, at most ``CH``
long (:func:`edge_runs`). One kernel sums each run's flows into its group's total (one atomic per run, not
per edge); a second reads each run's flows and weights once and writes the blended weights. A categorical
table is normalised row by row in one pass. Arithmetic is the torch update's: ``new = (f + a / fanin) /
(total + a)`` where ``total + a > 0``, else the old value; ``w <- new`` at step 1, else
``(1 - step) w + step new``. The pseudocount and the step take the table's dtype before any arithmetic
(:func:`in_dtype_of`).
"""
from __future__ import annotations

import numpy as np
import triton
import triton.language as tl

from .plan import ranks, value_runs

RUN = 64  # longest run: 64 edges are a 256-byte row of fp32 flows, a full coalesced load per row
RUNS_PER_PROGRAM = 32
# runs whose start and length are multiples of this many edges are launched apart, with that alignment as a
# hint: their loads and stores become 16-byte vectors (fp32). A start read from memory is otherwise of unknown
# alignment, and every edge a 4-byte access.
ALIGN = 4


def edge_runs(parent: np.ndarray, longest: int = RUN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start, length, group)`` of maximal runs of equal ``parent`` (cut to ``longest`` edges), in order.

    Dense sum blocks give one run per parent row (cut in pieces), tiled ones one per row of a weight tile.
    """
    return cut_runs(*value_runs(parent), longest)


def cut_runs(start: np.ndarray, length: np.ndarray, group: np.ndarray,
             longest: int = RUN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs ``(start, length, group)`` with those longer than ``longest`` cut into pieces of at most that many
    edges, in order: ``(start int64, length int32, group int32)``."""
    pieces = -(-length // longest)
    cut = np.repeat(start, pieces) + ranks(pieces) * longest
    size = np.minimum(np.repeat(start + length, pieces) - cut, longest)
    return cut.astype(np.int64), size.astype(np.int32), np.repeat(group, pieces).astype(np.int32)


def aligned_classes(start: np.ndarray, length: np.ndarray, group: np.ndarray,
                    align: int | None = None) -> list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The runs split into ``(alignment, (start, length, group))`` classes, each launched on its own: the runs
    whose start and length are multiples of ``align`` (default :data:`ALIGN`; all of them on PD and HCLT: rows
    of 64 and 32-wide tiles), then the others with alignment 1. Empty classes are left out; each keeps the
    runs' order. ``align=1``: one class, no hint."""
    align = align or ALIGN
    fits = (start % align == 0) & (length % align == 0)
    return [(a, (start[m], length[m], group[m])) for a, m in ((align, fits), (1, ~fits)) if m.any()]


@triton.jit
def _run_block(start, length, group, n, CH: tl.constexpr, BR: tl.constexpr, ALIGN: tl.constexpr):
    """Offsets ``[BR, CH]`` and mask of this program's runs, with their groups. ``ALIGN``: every run's start and
    length are multiples of it (:func:`aligned_classes`), which lets the accesses be vectors."""
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    ok = r < n
    s = tl.multiple_of(tl.load(start + r, mask=ok, other=0), ALIGN)
    ln = tl.multiple_of(tl.load(length + r, mask=ok, other=0), ALIGN)
    g = tl.load(group + r, mask=ok, other=0)
    col = tl.arange(0, CH)
    return s[:, None] + col[None, :], col[None, :] < ln[:, None], g, ok


@triton.jit
def em_totals(flow, totals, start, length, group, n, CH: tl.constexpr, BR: tl.constexpr, ALIGN: tl.constexpr):
    """``totals[g] += sum of flow over each run of group g``."""
    offs, mask, g, ok = _run_block(start, length, group, n, CH, BR, ALIGN)
    f = tl.load(flow + offs, mask=mask, other=0.0)
    tl.atomic_add(totals + g, tl.sum(f, 1), mask=ok, sem="relaxed")


@triton.jit
def in_dtype_of(x, table):
    """Scalar argument ``x`` as a value of ``table``'s element type. Compiled, Triton passes a Python float as an
    fp32 argument, so this changes nothing there (a float64 table gets the fp32-rounded value, as by promotion);
    in the CPU interpreter the argument is the Python float itself, which would otherwise enter the arithmetic
    as an fp32 constant (``a / fanin`` in fp32), so float64 tables now get the exact value there, and the
    interpreter's float64 tests can hold the fused update to the torch update's float64 arithmetic."""
    return tl.full((), x, table.dtype.element_ty)


@triton.jit
def em_sums(w, flow, totals, fanin, start, length, group, n, a, step, CH: tl.constexpr, BR: tl.constexpr,
            ALIGN: tl.constexpr):
    """Each run's weights from its flows and its group's total (see the module docstring)."""
    a, step = in_dtype_of(a, w), in_dtype_of(step, w)
    offs, mask, g, ok = _run_block(start, length, group, n, CH, BR, ALIGN)
    denom = tl.load(totals + g, mask=ok, other=0.0) + a
    bias = a / tl.load(fanin + g, mask=ok, other=1.0)
    f = tl.load(flow + offs, mask=mask, other=0.0)
    old = tl.load(w + offs, mask=mask, other=0.0)
    safe = tl.where(denom > 0, denom, 1.0)
    new = tl.where(denom[:, None] > 0, (f + bias[:, None]) / safe[:, None], old)
    tl.store(w + offs, tl.where(step >= 1.0, new, old * (1.0 - step) + new * step), mask=mask)


@triton.jit
def em_cat(table, counts, rows, k, a, step, KP: tl.constexpr, BR: tl.constexpr):
    """Categorical rows ``[rows, k]``: ``new = (c + a / k) / (sum c + a)`` where that sum is positive, blended."""
    a, step = in_dtype_of(a, table), in_dtype_of(step, table)
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    col = tl.arange(0, KP)
    mask = (r[:, None] < rows) & (col[None, :] < k)
    offs = r[:, None].to(tl.int64) * k + col[None, :]
    c = tl.load(counts + offs, mask=mask, other=0.0)
    old = tl.load(table + offs, mask=mask, other=0.0)
    total = tl.sum(c, 1) + a
    safe = tl.where(total > 0, total, 1.0)
    new = tl.where(total[:, None] > 0, (c + a / k) / safe[:, None], old)
    tl.store(table + offs, tl.where(step >= 1.0, new, old * (1.0 - step) + new * step), mask=mask)


def launch_sums(w, flow, totals, fanin, classes, a: float, step: float) -> None:
    """Totals, then weights, over the runs: ``classes`` is :func:`aligned_classes`' list, as device tensors."""
    for align, (start, length, group) in classes:
        grid = (triton.cdiv(len(start), RUNS_PER_PROGRAM),)
        em_totals[grid](flow, totals, start, length, group, len(start), CH=RUN, BR=RUNS_PER_PROGRAM, ALIGN=align)
    for align, (start, length, group) in classes:  # every total is complete before a weight is written
        grid = (triton.cdiv(len(start), RUNS_PER_PROGRAM),)
        em_sums[grid](w, flow, totals, fanin, start, length, group, len(start), float(a), float(step), CH=RUN,
                      BR=RUNS_PER_PROGRAM, ALIGN=align)


def launch_cat(table, counts, a: float, step: float) -> None:
    """One categorical table's update in place."""
    rows, k = table.shape
    if not rows:
        return
    kp = triton.next_power_of_2(k)
    br = max(1, min(64, 4096 // kp))
    em_cat[(triton.cdiv(rows, br),)](table, counts, rows, k, float(a), float(step), KP=kp, BR=br)
