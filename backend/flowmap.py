"""Flow rows: where each node's flow lives during the backward pass (full, or compact for training).

A training step needs a node's flow only from the first backward op that writes it (its first parent's, in
backward order) to the node's own backward op, which reads it last (input nodes: the input op at the end).
(Values get the same treatment in :mod:`pcc.backend.valuemap`.) :func:`compact_flows` gives each node a flow row for just that interval,
reusing rows whose owners are done, so the flow buffer holds the most flows alive at once (on PD-32 21% of the
rows, on HMMs 34%, on HCLTs about half, on RAT-SPN 58%) instead of one row per node.

Contract of a :class:`FlowMap` ``m`` for plan ``p``:

* ``m.rows[r]`` is value row ``r``'s flow row; ``ZERO``, ``NEG`` and ``PAD`` map to themselves; a node whose
  flow no op writes (it has no path to the root, so its flow is 0) maps to ``PAD``, whose flow is never
  written; two other rows share a flow row only if their intervals are disjoint;
* ``m.zero[key]``: flow rows to clear before op ``key``'s backward; the compact buffer starts uninitialised
  (only its reserved rows and the root's are set), so every row is cleared after its previous owner's last
  read (if any) and before its new owner's first write, unless that write overwrites:
  :func:`overwriting_ops` stores its children's flows instead of adding to them (on HMMs and HCLTs every
  first write does, so nothing is cleared at all; a memset of the whole buffer took 1.1 ms of HCLT-128's
  step at batch 8192);
* ``m.shared``: product ops whose children share the product's flow row (:func:`shared_products`), so the
  compact map runs no backward launch for them: ``m.rows[c] == m.rows[p]`` for each such product row ``p``
  and its children ``c``, one row for the group's joint lifetime (its first write to its last reader);
* the identity map (:func:`full_flows`) clears nothing: every node keeps its own row, and shares none.

Node flows for a user (``node_flows``) use the full map; ``em_step`` and ``accumulate`` the compact one, whose
rows a training step shares with its values in one arena (:mod:`pcc.backend.arena`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .plan import FIRST_ROW, PAD, InputOp, Plan, ProdOp, SumOp

# products whose children only they read share their flow row with them (:func:`shared_products`); off only to
# measure what it saves (bench/profile_step.py --share-flows 0,1)
SHARE = True


@dataclass
class FlowMap:
    """Flow row of every value row, the flow buffer's row count, and the rows cleared before each op."""

    rows: np.ndarray
    size: int
    zero: dict[str, np.ndarray] = field(default_factory=dict)
    overwrite: set[str] = field(default_factory=set)  # :func:`overwriting_ops` of the plan
    shared: set[str] = field(default_factory=set)  # :func:`shared_products`: no backward launch in this map
    scratch: set[str] = field(default_factory=set)  # sum ops whose rows share a product's flow row: G not in place


def forward_order(plan: Plan) -> list[tuple[str, object]]:
    """``(key, op)`` in the order the forward pass runs them; ``key`` names the op's tables in codegen."""
    return [(f"L{li}.{oi}", op) for li, ops in enumerate(plan.layers) for oi, op in enumerate(ops)]


def backward_order(plan: Plan) -> list[tuple[str, object]]:
    """``(key, op)`` in the order the backward pass runs them (last layer first); keys as in codegen."""
    return [(f"L{li}.{oi}", op) for li in range(len(plan.layers) - 1, -1, -1) for oi, op in enumerate(plan.layers[li])]


def written_rows(op) -> np.ndarray:
    """The rows an op computes (a sum op's padding left out). Read-only, made once per op: the compile's
    interval passes ask every op again, a dozen times each (HCLT 512: 0.07 s of filtering child tables)."""
    return _memo(op, "_written", _written)


def read_rows(op) -> np.ndarray:
    """The rows an op's forward launch reads (its children; padding left out, a product's repeats kept; a sum op
    whose parent tiles all read the same child rows gives them once, not once per tile). Read-only, made once
    per op (see :func:`written_rows`)."""
    return _memo(op, "_read", _read)


def _written(op) -> np.ndarray:
    if isinstance(op, SumOp):
        out = op.out_rows.reshape(-1)
        return out[out >= FIRST_ROW]
    return np.arange(op.start, op.start + op.n)


def _read(op) -> np.ndarray:
    if isinstance(op, InputOp):
        return np.zeros(0, dtype=np.int64)
    kids = (op.children if isinstance(op, ProdOp) else op.child_table).reshape(-1)
    return kids[kids >= FIRST_ROW]


def _memo(op, name: str, make) -> np.ndarray:
    """``make(op)`` kept in the op's ``__dict__`` (beside its cached properties, which ``Plan.digest`` and saved
    modules leave out), read-only so that no caller changes what the next one gets."""
    got = op.__dict__.get(name)
    if got is None:
        got = make(op)
        got.flags.writeable = False
        op.__dict__[name] = got
    return got


def overwriting_ops(plan: Plan) -> set[str]:
    """Keys of the ops that write their children's first flows and each child row once (no atomics): their
    backward kernels store child flows rather than add them to a cleared row (one load fewer per flow, and
    no clearing of reused rows in the compact map)."""
    order = backward_order(plan)
    return _overwriting(order, _lifetimes(plan, order)[1])


def _overwriting(order: list, first: np.ndarray) -> set[str]:
    keys = set()
    for t, (key, op) in enumerate(order):
        if isinstance(op, InputOp) or op.child_atomics:
            continue
        kids = (op.children if isinstance(op, ProdOp) else op.child_tiles[0]).reshape(-1)
        if (first[kids[kids >= FIRST_ROW]] == t).all():
            keys.add(key)
    return keys


def full_flows(plan: Plan) -> FlowMap:
    """Every node keeps its own flow row (what ``node_flows`` returns)."""
    return FlowMap(np.arange(plan.rows, dtype=np.int64), plan.rows)


def shared_products(plan: Plan) -> tuple[set[str], np.ndarray]:
    """``(keys, group)``: product ops whose children can hold their flow in the product's own flow row, and per
    value row the row whose flow row it uses (``group[c] = p`` for each child ``c`` of such a product row ``p``,
    ``group[r] = r`` elsewhere).

    A product passes its flow unchanged to each child slot, so a child whose only reader is that one slot has
    the product's flow: the product's backward launch would only copy it (HCLT's and an HMM's products of an
    input and sums: a launch per layer). Taken: product ops without gathers, not the root's, whose every child
    row is read by one slot in the whole plan and is an input's or a sum's. (A sum op among those children
    must not turn its flow rows into ``G`` in place, which its siblings would read later: it puts ``G`` in a
    scratch, :attr:`FlowMap.scratch`.)
    """
    readers = np.zeros(plan.rows, dtype=np.int64)
    ok = np.zeros(plan.rows, dtype=bool)  # rows a shared product may take as children
    for _, op in forward_order(plan):
        np.add.at(readers, read_rows(op), 1)
        if isinstance(op, (InputOp, SumOp)):
            ok[written_rows(op)] = True
    ok &= readers == 1
    group = np.arange(plan.rows, dtype=np.int64)
    keys = set()
    for key, op in forward_order(plan):
        if not isinstance(op, ProdOp) or op.gathers or op.child_atomics or op.start <= plan.root_row < op.start + op.n:
            continue
        real = op.children >= FIRST_ROW
        if ok[op.children[real]].all():
            keys.add(key)
            group[op.children[real]] = np.broadcast_to(np.arange(op.start, op.start + op.n)[:, None], real.shape)[real]
    return keys, group


def compact_flows(plan: Plan) -> FlowMap:
    """Flow rows reused across disjoint lifetimes (see the module docstring): an optimal interval colouring of
    the groups of :func:`shared_products` (a group lives from its product's first flow to its last reader).

    Rows are handed out at each op's time, taking free rows before new ones, so the buffer has exactly as
    many rows as the most flows alive at one time (plus the three reserved rows).
    """
    live = flow_intervals(plan)
    got, size, prev = colour_intervals(live.start, live.end, FIRST_ROW)
    return flows_from(plan, live, got, size, prev)


@dataclass
class FlowIntervals:
    """What :func:`compact_flows` colours: the lifetimes ``[start, end]`` (backward op times, the root's flow
    ``start`` -1) of the flow rows of value rows ``node`` (a shared product's children take its row, ``group``),
    and the rows no op writes a flow to (``unwritten``)."""

    node: np.ndarray
    start: np.ndarray
    end: np.ndarray
    group: np.ndarray
    member: np.ndarray
    unwritten: np.ndarray
    shared: set[str]
    overwriting: set[str]


def flow_intervals(plan: Plan) -> FlowIntervals:
    """The lifetimes a compact flow map colours (:class:`FlowIntervals`)."""
    order = backward_order(plan)
    shared, group = shared_products(plan) if SHARE else (set(), np.arange(plan.rows, dtype=np.int64))
    own, first = _lifetimes(plan, order)
    # the generated code is the same for both maps, and node flows (the full map) run the shared products'
    # launches: overwriting is what those launches may do there
    overwriting = _overwriting(order, first)
    own, first = group_lifetimes(own, first, group)
    member = group != np.arange(plan.rows)  # rows that use their product's flow row
    # a node no op writes a flow to (none on its path to the root: its flow is 0) reads PAD's zero row
    unwritten = (own >= 0) & (first == len(order))
    node = np.flatnonzero((own >= 0) & (first < len(order)) & ~member)
    return FlowIntervals(node, first[node], own[node], group, member, unwritten, shared, overwriting)


def flows_from(plan: Plan, live: FlowIntervals, got: np.ndarray, size: int, prev: np.ndarray) -> FlowMap:
    """The :class:`FlowMap` of ``live`` coloured into rows ``got`` of a ``size``-row buffer, ``prev[i]`` the
    backward op time at which row ``got[i]``'s previous owner was last read (below 0: none in the backward)."""
    order = backward_order(plan)
    rows = np.arange(plan.rows, dtype=np.int64)
    rows[live.unwritten] = PAD
    rows[live.node] = got
    rows[live.member] = rows[live.group[live.member]]
    # the buffer starts uninitialised (no memset of [rows, batch]): a row needs clearing before its owner's first
    # write, after its previous owner's last read, unless an overwriting op writes it first; the root's flow
    # (start -1) is set before the pass
    stored = np.array([key in live.overwriting for key, _ in order] + [False])
    start = live.start
    clear = (start >= 0) & ~stored[start]
    zero = _clear_points(prev[clear] + 1, start[clear], got[clear], order)
    scratch = {key for key, op in order if isinstance(op, SumOp) and live.member[written_rows(op)].any()}
    return FlowMap(rows, size, zero, live.overwriting, live.shared, scratch)


def group_lifetimes(own: np.ndarray, first: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_lifetimes` of the groups of :func:`shared_products`: every member gets its group's first write
    (the product's) and last reader (the latest member's own op)."""
    own = own.copy()
    np.maximum.at(own, group, own)
    return own[group], first[group]


def colour_intervals(start: np.ndarray, end: np.ndarray, first: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Rows from ``first`` on for the intervals ``[start[i], end[i]]`` (op times), reused once an owner is done.

    Rows are handed out at each start time, free rows (their owners ended before that time) before new
    ones, so the rows used, ``size - first``, are the most intervals alive at one time: an optimal colouring
    of an interval graph. Returns ``(rows, size, prev)``, ``prev[i]`` the end of the row's previous owner
    (-2 for a fresh row).
    """
    rows = np.empty(len(start), dtype=np.int64)
    prev = np.full(len(start), -2, dtype=np.int64)
    by_start, by_end = np.argsort(start, kind="stable"), np.argsort(end, kind="stable")
    starts, ends = start[by_start], end[by_end]
    # the free rows are a stack (freed rows pushed on top, taken from the top) in two preallocated arrays: a
    # list grown by concatenation copied every free row at each start time (HMM 4096's 1.56M rows: 0.15 s)
    free, free_end, top = np.empty(len(start), dtype=np.int64), np.empty(len(start), dtype=np.int64), 0
    size, done = first, 0
    for t in np.unique(starts):
        upto = np.searchsorted(ends, t, side="left")  # owners whose last op ran before t
        if upto > done:
            gone = by_end[done:upto]
            free[top:top + len(gone)], free_end[top:top + len(gone)] = rows[gone], end[gone]
            top, done = top + len(gone), upto
        want = by_start[np.searchsorted(starts, t, side="left"):np.searchsorted(starts, t, side="right")]
        take = min(top, len(want))
        rows[want[:take]], prev[want[:take]] = free[top - take:top], free_end[top - take:top]
        top -= take
        rows[want[take:]] = np.arange(size, size + len(want) - take, dtype=np.int64)
        size += len(want) - take
    return rows, size, prev


def _lifetimes(plan: Plan, order: list) -> tuple[np.ndarray, np.ndarray]:
    """``(own, first)`` per value row: the time of the op that owns the row (-1: none) and of the first op
    that writes its flow (the root: -1, before any op; unwritten rows: a time past the end)."""
    own = np.full(plan.rows, -1, dtype=np.int64)
    first = np.full(plan.rows, len(order), dtype=np.int64)
    for t, (_, op) in enumerate(order):
        own[written_rows(op)] = t
        np.minimum.at(first, read_rows(op), t)
    own[:FIRST_ROW] = -1
    first[plan.root_row] = -1
    return own, first


def _clear_points(lo: np.ndarray, hi: np.ndarray, rows: np.ndarray, order: list) -> dict[str, np.ndarray]:
    """Clear each reused row at one op time in its window ``[lo, hi]``, with as few distinct times as possible.

    The fewest points that stab every window: take windows by their right end, and put a point at that end
    whenever the window does not already contain the last point (each point is one small launch).
    """
    if not len(rows):
        return {}
    pairs, inverse = np.unique(np.stack([hi, lo]), axis=1, return_inverse=True)  # sorted by right end
    inverse = inverse.reshape(-1)
    point = np.empty(pairs.shape[1], dtype=np.int64)
    last = -10
    for j, (h, l) in enumerate(pairs.T):
        if l > last:
            last = h
        point[j] = last
    at = point[inverse]
    return {order[int(t)][0]: np.sort(rows[at == t]) for t in np.unique(at)}
