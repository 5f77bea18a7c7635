"""Value rows: where each node's log-value lives (every node its own row, or rows reused once a value is dead).

A node's value is written by its op's forward launch and read by its parents' forward launches; in a
training step also by the backward launches of sum ops (a sum's backward reads its own values and its
children's). Product and input backward launches read flows only. So an input node under products is dead
once those products are computed, and in a forward-only pass (``log_prob``) every value is dead once its
parents are. :func:`compact_values` gives each node a row for just its lifetime (an optimal interval
colouring, as :func:`pcc.backend.flowmap.compact_flows` does for flows); values are stored, never added, so
reused rows need no clearing.

Layouts (the ``values`` argument of the Triton executor's ``forward``/``backward``):

* ``"all"``: every node its own row (:func:`full_values`): queries, node values and node flows;
* ``"train"``: rows live from the node's forward to its last forward or backward reader: training steps;
* ``"root"``: rows live until the last forward reader; only the root's value is kept to the end: ``log_prob``.

Contract of a :class:`ValueMap` ``m`` for plan ``p``: ``m.rows[r]`` is plan row ``r``'s value row; ``ZERO``,
``NEG`` and ``PAD`` map to themselves; two rows share a value row only if their lifetimes are disjoint (a row
freed by a launch is reused from the next launch on), and the root lives to the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .flowmap import backward_order, colour_intervals, forward_order, read_rows, written_rows
from .plan import FIRST_ROW, Plan, SumOp

LAYOUTS = ("all", "train", "root")


@dataclass
class ValueMap:
    """Value row of every plan row and the value buffer's row count."""

    rows: np.ndarray
    size: int


def full_values(plan: Plan) -> ValueMap:
    """Every node keeps its own row."""
    return ValueMap(np.arange(plan.rows, dtype=np.int64), plan.rows)


def lifetimes(plan: Plan, backward: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(start, end)`` per plan row: the time of the launch that writes it and of its last reader.

    Times: forward ops ``0 .. F-1``, then (``backward``) the backward ops ``F ..`` in backward order. The
    root ends after every op; a row nobody reads ends where it starts; reserved rows get ``start = -1``.
    """
    fwd = forward_order(plan)
    start = np.full(plan.rows, -1, dtype=np.int64)
    end = np.full(plan.rows, -1, dtype=np.int64)
    for t, (_, op) in enumerate(fwd):
        start[written_rows(op)] = t
        np.maximum.at(end, read_rows(op), t)
    if backward:
        for t, (_, op) in enumerate(backward_order(plan), start=len(fwd)):
            if isinstance(op, SumOp):  # sum_bwd and sum_bwd_params read the parents' and the children's values
                np.maximum.at(end, np.concatenate([written_rows(op), read_rows(op)]), t)
    end = np.maximum(end, start)
    end[plan.root_row] = 2 * len(fwd)
    start[:FIRST_ROW] = -1
    return start, end


def compact_values(plan: Plan, backward: bool) -> ValueMap:
    """Value rows reused across disjoint lifetimes: ``backward`` for a training step, else a forward pass."""
    start, end = lifetimes(plan, backward)
    node = np.flatnonzero(start >= 0)
    rows = np.arange(plan.rows, dtype=np.int64)
    got, size, _ = colour_intervals(start[node], end[node], FIRST_ROW)
    rows[node] = got
    return ValueMap(rows, size)


def value_map(plan: Plan, layout: str) -> ValueMap:
    """The map of a layout (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"values must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    return full_values(plan) if layout == "all" else compact_values(plan, backward=layout == "train")
