"""Inputs fused into the products that read them: rows that the training and ``log_prob`` layouts never store.

A categorical input node's value is one gather, ``log theta[prow, x[b, var]]``. Where only product ops read
an input op's rows, each row by one product (HCLT's and an HMM's inputs; not RAT-SPN's, read by 8 products
each, nor PD's, under products of 16 children), those products can compute it themselves
(``kernels.prod_fwd_inputs``) instead of reading a row that the input op wrote: the input op then has no value
rows and no launch in the ``"train"`` and ``"root"`` layouts (:mod:`pcc.backend.valuemap`), and a product of
such inputs and sums is as cheap to compute again in the backward as a product of sums. The ``"all"`` layout
(queries, node values) keeps every input's row and the products read them as before.

Contract: with :data:`FUSE` on, :func:`fused_inputs` names input ops that are categorical, of one category
count ``K`` (the most common among those that qualify), not the root's, and whose every row is read by exactly
one product slot, of a product op of at most :data:`MAX_FANIN` children, and by nothing else (an input read
by several products would be computed once per reader); :func:`split_children` gives a product op's slots
as value rows or fused input children; :func:`state` holds all of it. The product's log-value is the sum of
both, slot by slot, bitwise as :class:`~pcc.backend.plan.ProdOp` computes it from the input rows.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .flowmap import forward_order, read_rows, written_rows
from .plan import ZERO, InputOp, Plan, ProdOp

# off by default, measured once (bench/results/fuse_inputs_2026-12-05_h100.txt, an H100, a first rule that
# fused every categorical input op only products read): HMM 256 at 8192 trained in 1337 instead of 2232 MiB but
# 22.6 instead of 19.9 ms a step (its products are computed again in the backward); RAT-SPN's inputs, read by 8
# products each, were computed once per reader: 161 instead of 17.6 ms; HCLT 32's fused A/B did not compile
# within its 100 s timeout. Hence the rule now (one reader per input, products of at most MAX_FANIN children);
# it fuses the same 7 input ops of that HMM as the first rule did, so the HMM's figures stand for it
FUSE, MAX_FANIN = False, 8


@contextmanager
def fusing(on: bool | None) -> Iterator[None]:
    """:data:`FUSE` set to ``on`` within the block (None: left as it is): an executor builds its layouts and
    generated code under it (``pcc.compile(..., fuse_inputs=True)``)."""
    global FUSE
    before = FUSE
    FUSE = before if on is None else bool(on)
    try:
        yield
    finally:
        FUSE = before


@dataclass
class Fused:
    """What fusion decided for a plan under the current :data:`FUSE` and :data:`MAX_FANIN`: the fused input
    ops (``inputs``), their category count ``k`` (0: none), each plan row's variable and parameter row if a
    fused input writes it (``var`` -1 and ``prow`` 0 elsewhere), and the product ops that read them
    (``products``: key -> :func:`split_children`'s arrays, the same objects for every layout, so
    ``upload_tables`` sends them once)."""

    inputs: frozenset[str]
    k: int
    var: np.ndarray
    prow: np.ndarray
    products: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @property
    def mask(self) -> np.ndarray:
        return self.var >= 0


def state(plan: Plan) -> Fused:
    """The plan's :class:`Fused`, computed once per setting of :data:`FUSE` and :data:`MAX_FANIN`."""
    cached = plan.__dict__.get("_fused")
    if cached is None or cached[0] != (FUSE, MAX_FANIN):
        cached = ((FUSE, MAX_FANIN), _decide(plan, _choose(plan) if FUSE else frozenset()))
        plan.__dict__["_fused"] = cached
    return cached[1]


def fused_inputs(plan: Plan) -> frozenset[str]:
    """Keys (``L{layer}.{op}``) of the input ops whose rows the training and log_prob layouts leave out."""
    return state(plan).inputs


def fused_mask(plan: Plan) -> np.ndarray:
    """Per plan row: whether a fused input op writes it."""
    return state(plan).mask


def split_children(plan: Plan, op_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(children, var, prow)``, each ``[n, k]`` like the product op's ``children``, for product op ``op_key``
    if it reads fused inputs (else None): slot by slot, either a value row (``children``; var -1) or a fused
    input's variable and parameter row (``children`` ZERO there). The kernel adds the slots in order, as
    ``prod_fwd`` does, so a fused product's value is bitwise the unfused one's."""
    return state(plan).products.get(op_key)


def _choose(plan: Plan) -> frozenset[str]:
    readers = np.zeros(plan.rows, dtype=np.int64)  # product slots that read the row
    other = np.zeros(plan.rows, dtype=bool)  # a sum op, or a product op of fan-in over MAX_FANIN, reads it
    for _, op in forward_order(plan):
        if isinstance(op, ProdOp) and op.children.shape[1] <= MAX_FANIN:
            np.add.at(readers, read_rows(op), 1)
        elif not isinstance(op, InputOp):
            other[read_rows(op)] = True
    fit = {}
    for key, op in forward_order(plan):
        root = isinstance(op, InputOp) and op.start <= plan.root_row < op.start + op.n
        if isinstance(op, InputOp) and op.dist == "categorical" and op.n and not root:
            rows = written_rows(op)
            if (readers[rows] == 1).all() and not other[rows].any():
                fit[key] = op.k
    if not fit:
        return frozenset()
    k = Counter(fit.values()).most_common(1)[0][0]  # one theta table per fused launch
    return frozenset(key for key, kk in fit.items() if kk == k)


def _decide(plan: Plan, keys: frozenset[str]) -> Fused:
    var, prow = np.full(plan.rows, -1, dtype=np.int64), np.zeros(plan.rows, dtype=np.int64)
    k, products = 0, {}
    for key, op in forward_order(plan):
        if key in keys:
            var[op.start:op.start + op.n], prow[op.start:op.start + op.n], k = op.var, op.prow, op.k
        elif isinstance(op, ProdOp) and keys:
            mask = var[op.children] >= 0  # inputs come before their readers in forward order
            if mask.any():
                products[key] = (np.where(mask, ZERO, op.children), np.where(mask, var[op.children], -1),
                                 np.where(mask, prow[op.children], 0))
    return Fused(keys, k, var, prow, products)
