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
* ``"train"``: rows live from the node's forward to its last forward or backward reader: training steps.
  Some ops are not kept for the backward (:func:`recomputed`): products whose readers are all sums and
  whose children are sums or inputs (PD's and RAT-SPN's partitions, an HMM's and an HCLT's products of an
  input and sums: most of their rows), and the inputs the backward reads. Their values die with their last
  forward reader and are computed again in the backward, inputs first, just before the first sum op that
  reads them there, into rows that live until their last backward reader (``ValueMap.back``). Sum children
  are alive then anyway (a sum's backward reads its own values), and the inputs' second lives are as short
  as their readers' backward allows;
* ``"root"``: rows live until the last forward reader; only the root's value is kept to the end: ``log_prob``.

Folded products (:mod:`pcc.backend.folding`): in ``"root"`` every candidate, in ``"train"`` the candidates the
backward would compute again, have no rows (``ValueMap.folded``); the sums that read them read the product's
two children in their place, in the forward and (training) the backward, so those children live until then.

Contract of a :class:`ValueMap` ``m`` for plan ``p``: ``m.rows[r]`` is plan row ``r``'s value row; ``ZERO``,
``NEG`` and ``PAD`` map to themselves, and the rows of fused inputs (``m.fused``, :mod:`.fusion`) map to
``ZERO`` in the training and log_prob layouts, where no launch writes or reads them, and so do the rows of folded
products (``m.folded``) in the layouts that fold them; two rows share a value
row only if their lifetimes are disjoint (a row freed by a launch is reused from the next launch on), and the
root lives to the end. ``m.back[r]`` is the row the backward pass reads ``r`` from (``m.rows[r]`` but for
recomputed ops), and ``m.recompute`` maps the key of each sum op to the input and product ops (in that order)
whose rows are computed again just before its backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .folding import folded, folded_mask, pair_rows
from .fusion import fused_inputs, fused_mask
from .flowmap import backward_order, colour_intervals, forward_order, read_rows, written_rows
from .plan import FIRST_ROW, ZERO, InputOp, Plan, ProdOp, SumOp

LAYOUTS = ("all", "train", "root")
# what a training step computes again in the backward instead of keeping (:func:`recomputed`); "sums" by default:
# "all" saves more memory (HCLT 32 at 512: 204 -> 161 MiB) but costs 10-18% of HCLT's step on an H100
LEVELS = ("off", "sums", "all")


@dataclass
class ValueMap:
    """Value row of every plan row and the value buffer's row count."""

    rows: np.ndarray
    size: int
    back: np.ndarray | None = None  # the backward pass's rows (None: ``rows``)
    recompute: dict[str, list[str]] = field(default_factory=dict)  # sum op key -> input and product op keys
    fused: frozenset[str] = frozenset()  # input ops without rows here (:mod:`.fusion`): their rows map to ZERO
    folded: frozenset[str] = frozenset()  # product ops without rows here (:mod:`.folding`): ZERO too
    train: bool = False  # a training layout: its backward reads the folded products' children too
    # dense sum op key -> the first row from which the buffer holds nothing while that op runs in the forward
    # (a training arena's rows, pcc.backend.arena): its scratch may lie there
    spare: dict[str, int] = field(default_factory=dict)

    @property
    def back_rows(self) -> np.ndarray:
        return self.rows if self.back is None else self.back


def full_values(plan: Plan) -> ValueMap:
    """Every node keeps its own row."""
    return ValueMap(np.arange(plan.rows, dtype=np.int64), plan.rows)


def recomputed(plan: Plan, level: str = "sums") -> dict[str, str]:
    """Ops computed again in a training step's backward: ``{op key: key of the sum op before whose backward it
    runs}``, in forward order (an op's children come before it), which is the order they run in there.

    ``level`` (:data:`LEVELS`): ``"sums"`` takes the product ops whose rows only sum ops read and whose children
    are sums, reserved rows or fused inputs (:mod:`.fusion`); ``"all"`` also the input ops whose rows the
    backward reads (sums' children, or children of products taken) and, where that leaves fewer rows, products
    whose children are inputs too;
    ``"off"`` nothing. The root's op is never taken. Each runs just before the first sum op (in backward order)
    that reads it or reads a product taken that reads it. Why: a sum's values are kept for its own backward
    anyway, and an input's are a gather from its parameters, so computing these again costs launches and saves
    every row they held between their forward and their backward readers (PD's and RAT-SPN's partitions; with
    ``"all"``, an HMM's or an HCLT's products of an input and sums, and those inputs).
    """
    if level not in LEVELS:
        raise ValueError(f"recompute must be one of {', '.join(LEVELS)}, not {level!r}")
    if level == "off":
        return {}
    fwd = forward_order(plan)
    is_sum, is_input = np.zeros(plan.rows, dtype=bool), np.zeros(plan.rows, dtype=bool)
    other = np.zeros(plan.rows, dtype=bool)  # a product or input op reads it
    for _, op in fwd:
        if isinstance(op, SumOp):
            is_sum[written_rows(op)] = True
        elif isinstance(op, InputOp):
            is_input[written_rows(op)] = True
        else:
            other[read_rows(op)] = True
    root = lambda op: op.start <= plan.root_row < op.start + op.n  # noqa: E731
    prods = [(key, op) for key, op in fwd if isinstance(op, ProdOp) and not other[written_rows(op)].any()
             and not root(op)]
    fused = fused_inputs(plan)
    inputs = [key for key, op in fwd if isinstance(op, InputOp) and not root(op) and key not in fused]
    is_kid = is_sum | fused_mask(plan)  # fused inputs are computed by their products anyway
    is_kid[:FIRST_ROW] = True

    def taken(kids: np.ndarray) -> dict[str, str]:  # products of ``kids`` rows, then (level "all") inputs
        first = _first_sum_readers(plan, [key for key, op in prods if kids[op.children].all()])
        if level == "all":
            first.update(_first_sum_readers(plan, inputs, first))
        return {key: first[key] for key, _ in fwd if key in first}

    if level == "sums":
        return taken(is_kid)
    # products of inputs too where that leaves fewer rows (it does when inputs come in pieces; min keeps the first)
    return min(taken(is_kid), taken(is_kid | is_input), key=lambda again: _train_size(plan, again))


def _train_size(plan: Plan, again: dict[str, str]) -> int:
    """The training layout's value rows with the ops of ``again`` computed again."""
    start, end = lifetimes(plan, True, again)
    node = start >= 0
    if not node.any():
        return 0
    span = int(end[node].max()) + 2  # alive at t: started at or before t, not ended before t (the colouring's size)
    began, ended = np.bincount(start[node], minlength=span), np.bincount(end[node] + 1, minlength=span)
    return int((np.cumsum(began) - np.cumsum(ended)).max())


def _first_sum_readers(plan: Plan, keys: list[str], products: dict[str, str] | None = None) -> dict[str, str]:
    """``{key: the first sum op in backward order whose backward reads rows of op key}`` for the ops ``keys``;
    ``products`` (product key -> the sum op it is computed again before) count as reading their children
    there. Ops no backward reads are left out."""
    owner = _owners(plan, keys)
    ops = dict(forward_order(plan))
    again = by_first_reader(products or {})
    first: dict[str, str] = {}
    for key, op in backward_order(plan):
        read = [read_rows(ops[p]) for p in again.get(key, [])]
        if isinstance(op, SumOp):
            read += [written_rows(op), read_rows(op)]
        if read:  # bincount, not unique: a sum's child rows repeat once per parent tile
            for i in np.flatnonzero(np.bincount(owner[np.concatenate(read)] + 1, minlength=len(keys) + 1)[1:]):
                first.setdefault(keys[i], key)
    return first


def schedule(plan: Plan) -> tuple[dict[str, str], set[str]]:
    """``(again, readers)``: :func:`recomputed` at level ``"all"`` and its :func:`back_readers`, what codegen's
    launches and tables follow, whatever a layout recomputes: a launch runs only where the layout's tables carry
    its ``brows`` (every lower level's ops are among these, before the same sum ops), and the ``b``-tables of a
    layout that keeps a row just repeat it."""
    again = recomputed(plan, "all")
    return again, back_readers(plan, again)


def level(recompute: bool | str) -> str:
    """A ``recompute`` argument as one of :data:`LEVELS` (True: ``"sums"``, False: ``"off"``)."""
    if recompute is True or recompute is False:
        return "sums" if recompute else "off"
    if recompute not in LEVELS:
        raise ValueError(f"recompute must be True, False or one of {', '.join(LEVELS)}, not {recompute!r}")
    return recompute


def by_first_reader(again: dict[str, str]) -> dict[str, list[str]]:
    """``{sum op key: the op keys computed again just before its backward, in ``again``'s order}`` (inverted)."""
    out: dict[str, list[str]] = {}
    for pkey, skey in again.items():
        out.setdefault(skey, []).append(pkey)
    return out


def back_readers(plan: Plan, again: dict[str, str]) -> set[str]:
    """Keys of the sum ops whose backward reads rows of the ops in ``again`` (:func:`recomputed`):
    they read their children through the backward rows (``ValueMap.back``)."""
    owner = _owners(plan, list(again))
    return {key for key, op in forward_order(plan) if isinstance(op, SumOp) and (owner[read_rows(op)] >= 0).any()}


def _owners(plan: Plan, keys: list[str]) -> np.ndarray:
    """Per plan row, the index in ``keys`` of the op that writes it (-1: none of them)."""
    owner = np.full(plan.rows, -1, dtype=np.int64)
    where = {key: i for i, key in enumerate(keys)}
    for key, op in forward_order(plan):
        if key in where:
            owner[written_rows(op)] = where[key]
    return owner


def lifetimes(plan: Plan, backward: bool, again: dict[str, str] | None = None,
              fold: frozenset[str] = frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """``(start, end)`` per plan row, then per row of :func:`again_rows` (the ops in ``again``,
    :func:`recomputed`) for its second life: the time of the launch that writes it and of its last reader.

    Times: forward ops ``0 .. F-1``, then (``backward``) the backward ops ``F ..`` in backward order; an
    op in ``again`` runs again at the time of the sum op named there. The root ends after every op;
    a row nobody reads ends where it starts; reserved rows, fused inputs' rows and the rows of the folded
    product ops ``fold`` (:mod:`.folding`) get ``start = -1``; the sums that read a folded product read its two
    children instead, in both passes.
    """
    fwd = forward_order(plan)
    again = again or {}
    start = np.full(plan.rows, -1, dtype=np.int64)
    end = np.full(plan.rows, -1, dtype=np.int64)
    pa, pb = pair_rows(plan, fold)
    for t, (key, op) in enumerate(fwd):
        if key in fold:  # no forward launch: its readers add its children's rows
            continue
        start[written_rows(op)] = t
        read = read_rows(op)
        if fold and isinstance(op, SumOp):
            read = np.concatenate([pa[read], pb[read]])
        np.maximum.at(end, read, t)
    second = again_rows(plan, again)
    start2, end2 = np.full(len(second), -1, dtype=np.int64), np.full(len(second), -1, dtype=np.int64)
    if backward:
        _backward_reads(plan, again, second, len(fwd), end, start2, end2, (pa, pb) if fold else None)
    end = np.maximum(end, start)
    end[plan.root_row] = 2 * len(fwd)
    start[:FIRST_ROW] = -1
    start[fused_mask(plan)] = -1  # no rows: their products compute them (pcc.backend.fusion)
    start[folded_mask(plan, fold)] = -1  # no rows: their readers add their children (pcc.backend.folding)
    return np.concatenate([start, start2]), np.concatenate([end, np.maximum(end2, start2)])


def again_rows(plan: Plan, again: dict[str, str]) -> np.ndarray:
    """The rows of the ops in ``again``, in forward order of the ops: the order of their second lives."""
    parts = [written_rows(op) for key, op in forward_order(plan) if key in again]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _backward_reads(plan: Plan, again: dict[str, str], second: np.ndarray, fwd: int, end: np.ndarray,
                    start2: np.ndarray, end2: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Extend ``end`` (first lives) and ``end2`` (second lives of rows ``second``) to the sum ops' backward
    reads, and start each second life at its recomputation (``start2``); times as in :func:`lifetimes`.
    ``pairs``: :func:`~.folding.pair_rows` of the folded products, whose readers read their children instead."""
    where = np.full(plan.rows, -1, dtype=np.int64)  # plan row -> index of its second life
    where[second] = np.arange(len(second))
    when = {key: t for t, (key, _) in enumerate(backward_order(plan), start=fwd)}
    for key, op in forward_order(plan):
        if key in again:
            start2[where[written_rows(op)]] = when[again[key]]
    ops, before = dict(forward_order(plan)), by_first_reader(again)
    for t, (key, op) in enumerate(backward_order(plan), start=fwd):
        # products computed again here read their children; sum_bwd and sum_bwd_params read the parents' and
        # the children's values
        read = [read_rows(ops[p]) for p in before.get(key, []) if isinstance(ops[p], ProdOp)]
        if isinstance(op, SumOp):
            kids = read_rows(op)
            read += [written_rows(op)] + ([kids] if pairs is None else [pairs[0][kids], pairs[1][kids]])
        if read:
            read = np.concatenate(read)
            np.maximum.at(end2, where[read[where[read] >= 0]], t)
            np.maximum.at(end, read[where[read] < 0], t)


@dataclass
class ValueIntervals:
    """What :func:`compact_values` colours: the lifetimes ``[start, end]`` (op times, :func:`lifetimes`) of the
    plan's rows, then of the second lives of the ops computed again (``again``), for the rows ``node`` that
    get a row (``start >= 0``), and the folded product ops (``fold``)."""

    node: np.ndarray
    start: np.ndarray
    end: np.ndarray
    again: dict[str, str]
    fold: frozenset[str]
    backward: bool


def value_intervals(plan: Plan, backward: bool, recompute: bool | str = True,
                    again: dict[str, str] | None = None) -> ValueIntervals:
    """The lifetimes :func:`compact_values` colours (:class:`ValueIntervals`)."""
    first = (recomputed(plan, level(recompute)) if again is None else again) if backward else {}
    fold = folded(plan, "train" if backward else "root", first)
    first = {k: v for k, v in first.items() if k not in fold}  # folded products are never stored, nor recomputed
    start, end = lifetimes(plan, backward, first, fold)
    node = np.flatnonzero(start >= 0)
    return ValueIntervals(node, start[node], end[node], first, fold, backward)


def values_from(plan: Plan, live: ValueIntervals, got: np.ndarray, size: int) -> ValueMap:
    """The :class:`ValueMap` of ``live`` coloured into rows ``got`` of a ``size``-row buffer."""
    rows = np.arange(plan.rows + len(again_rows(plan, live.again)), dtype=np.int64)
    rows[live.node] = got
    rows[:plan.rows][fused_mask(plan)] = ZERO  # never written nor read in this layout (pcc.backend.fusion)
    rows[:plan.rows][folded_mask(plan, live.fold)] = ZERO  # nor these, in either pass (pcc.backend.folding)
    if not live.again:
        return ValueMap(rows[:plan.rows], size, fused=fused_inputs(plan), folded=live.fold, train=live.backward)
    back = rows[:plan.rows].copy()
    back[again_rows(plan, live.again)] = rows[plan.rows:]
    return ValueMap(rows[:plan.rows], size, back, by_first_reader(live.again), fused_inputs(plan), live.fold,
                    live.backward)


def compact_values(plan: Plan, backward: bool, recompute: bool | str = True,
                   again: dict[str, str] | None = None) -> ValueMap:
    """Value rows reused across disjoint lifetimes: ``backward`` for a training step (with the ops of
    :func:`recomputed` at :func:`level` ``recompute`` computed again there; ``again``: that dict, where the
    caller has it already), else a forward pass."""
    live = value_intervals(plan, backward, recompute, again)
    got, size, _ = colour_intervals(live.start, live.end, FIRST_ROW)
    return values_from(plan, live, got, size)


def value_map(plan: Plan, layout: str, recompute: bool | str = True, again: dict[str, str] | None = None) -> ValueMap:
    """The map of a layout (see the module docstring); ``recompute`` (:func:`level`) picks what a training
    step computes again in its backward: False keeps every value it reads (more rows, no second launches).
    ``again``: :func:`recomputed` at that level, where the caller has it already."""
    if layout not in LAYOUTS:
        raise ValueError(f"values must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    return full_values(plan) if layout == "all" else compact_values(plan, layout == "train", recompute, again)
