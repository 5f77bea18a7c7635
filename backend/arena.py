"""One buffer for a training step's values and flows: rows reused across both kinds of lifetime.

A training step's value rows (:func:`pcc.backend.valuemap.compact_values`, layout ``"train"``) are most alive
at the end of the forward pass, its flow rows (:func:`pcc.backend.flowmap.compact_flows`) late in the backward,
when most values are dead: the top layers' values die with their sums' backward, just as the flows of the
layers below come alive. Two buffers each hold their own most rows alive at once; one buffer holds the most
rows of both alive at once, which is less (on the harness's converted models: RAT-SPN 50% fewer rows, HCLT 13%,
PD 12%). Both are ``[rows, batch]`` float32, and every kernel addresses them through row tables, so only the row
numbers change.

The arena: rows ``0 .. 2`` are the value buffer's reserved rows (``ZERO``, ``NEG``, ``PAD``), rows ``3 .. 5``
the flow buffer's, then the shared rows. The values are the arena itself; the flows are the view from row 3 on
(``arena[FIRST_ROW:]``), so flow row ``r`` is arena row ``r + 3`` and the flow map's reserved rows stay 0, 1, 2.

Contract of :func:`joint_maps`: a value map and a compact flow map that are each valid alone (the same rows
read and written by the same launches as :func:`~.valuemap.compact_values` and :func:`~.flowmap.compact_flows`
give) and, placed in one arena, never give one arena row to a value and a flow alive at the same time. Times:
the value lifetimes' (forward op ``t``, backward op ``F + t``); a flow lives from its first writer's backward op
(the root's from ``F - 1``: it is set after the forward) to its last reader's. A flow row reused from a value
is cleared before its first write as a fresh row is (the flow map's ``zero``), unless that write overwrites.

While a dense op runs in the forward, the arena's rows above every row a value has taken so far hold nothing
(``ValueMap.spare``; flows' and recomputed values' rows come in the backward): the forward's largest scratch, a
dense op's transposed child values (``[G, B, C]``, PD 128's up to 2.0 GiB at batch 8192; groups of at most
``codegen.DENSE_ONEPASS_P`` parents take none), is taken from there where it
fits, else (a large one) from the first run of rows free while the op runs (RAT-SPN's: the rows of its inputs,
dead by then), else from new memory (:func:`pcc.backend.dense_kernels.scratch`); otherwise it would sit on top
of the whole arena.
"""
from __future__ import annotations

import numpy as np

from .flowmap import FlowMap, colour_intervals, flow_intervals, flows_from, forward_order
from .plan import FIRST_ROW, Plan, SumOp
from .valuemap import ValueMap, value_intervals, values_from

# training steps keep values and flows in one arena (off: two buffers, only to measure what it saves with
# bench/profile_step.py --joint-rows 0,1)
JOINT = True
# a dense op's forward scratch of at least 1/RUN_SEARCH of the arena that the top rows cannot take is looked for
# among the rows in use (:func:`_spare_rows`): each search is a pass over every lifetime, too slow for every op of
# an HMM 4096 (its scratch is small anyway)
RUN_SEARCH = 100


def joint_maps(plan: Plan, recompute: bool | str = True,
               again: dict[str, str] | None = None) -> tuple[ValueMap, FlowMap]:
    """The ``"train"`` value map and the compact flow map of one arena (see the module docstring): the value
    map's ``size`` is the arena's rows, the flow map's ``size`` those of the view from row ``FIRST_ROW`` on."""
    values = value_intervals(plan, True, recompute, again)
    flows = flow_intervals(plan)
    fwd = len(forward_order(plan))
    start = np.concatenate([values.start, np.maximum(flows.start, -1) + fwd])  # the root's flow: from F - 1
    end = np.concatenate([values.end, flows.end + fwd])
    got, size, prev = colour_intervals(start, end, 2 * FIRST_ROW)
    n = len(values.node)
    vmap = values_from(plan, values, got[:n], size)
    vmap.spare = _spare_rows(plan, start, end, got, size, fwd)
    # a flow row's previous owner, in backward op times (a value dead within the forward: before the backward)
    before = np.where(prev[n:] >= 0, np.maximum(prev[n:] - fwd, -1), prev[n:])
    fmap = flows_from(plan, flows, got[n:] - FIRST_ROW, size - FIRST_ROW, before)
    return vmap, fmap


def _spare_rows(plan: Plan, start: np.ndarray, end: np.ndarray, rows: np.ndarray, size: int,
                fwd: int) -> dict[str, int]:
    """Per dense sum op, the first of a run of arena rows that hold nothing while the op runs in the forward and
    can take its scratch (``G * C`` rows), where one is found; ``start``, ``end``, ``rows``: every lifetime's.

    First the rows above every row a value has taken by then (the op's own included): colouring hands out a new
    row only when no freed one is left, so none has been used yet, and none will be until the op is done. Where
    those are too few and the scratch is large (at least 1/:data:`RUN_SEARCH` of the arena), the first run of
    free rows long enough among the rows in use (RAT-SPN's inputs take the top rows first, and are dead by its
    first dense op). Otherwise the top row, which :func:`~pcc.backend.dense_kernels.scratch` finds too short."""
    first = start < fwd  # first lives: written in the forward (second lives come in the backward)
    top = np.full(fwd, 2 * FIRST_ROW, dtype=np.int64)
    np.maximum.at(top, start[first], rows[first] + 1)
    top = np.maximum.accumulate(top)
    out = {}
    for t, (key, op) in enumerate(forward_order(plan)):
        if isinstance(op, SumOp) and op.dense is not None:
            need, at = op.dense.groups * op.dense.C, int(top[t])
            if at + need > size and need * RUN_SEARCH >= size:
                at = _free_run(start, end, rows, size, t, need) or at
            out[key] = at
    return out


def _free_run(start: np.ndarray, end: np.ndarray, rows: np.ndarray, size: int, t: int, need: int) -> int | None:
    """The first row of the first ``need`` consecutive arena rows that no lifetime covers at time ``t`` (None:
    no such run)."""
    busy = np.zeros(size + 1, dtype=bool)
    busy[:2 * FIRST_ROW] = busy[size] = True  # the reserved rows, and a sentinel past the end
    busy[rows[(start <= t) & (end >= t)]] = True
    edges = np.flatnonzero(np.diff(busy.astype(np.int8)))  # a free run starts after a -1 and ends at a +1
    starts, ends = edges[0::2] + 1, edges[1::2] + 1
    long = np.flatnonzero(ends - starts >= need)
    return int(starts[long[0]]) if len(long) else None
