"""Products folded into the loads of the sums that read them: product rows a layout never stores.

A product of two children has the log-value ``v_a + v_b``. A sum that reads it can add the two child rows as it
loads its children (``FOLDED`` in ``kernels.sum_fwd``, ``sum_bwd``, ``sum_bwd_params`` and
``dense_kernels.dense_shift``, ``dense_bwd``, ``dense_params``) instead of reading a row the product op wrote.
Where a layout (:mod:`pcc.backend.valuemap`) needs the product's value for nothing else, the product op has no
rows and no value launch there: PD's partitions (each a product of two regions) wrote and read back a row per
product and sample, 20 of PD 128's 133 ms step at batch 8192 on an H100 (forward and recomputation).

* ``"root"`` (``log_prob``) folds every product op that qualifies;
* ``"train"`` those the backward would compute again (:func:`~pcc.backend.valuemap.recomputed`): they are then
  neither stored nor computed again; the sums' forward and backward launches add their children's rows. Their
  flows are unchanged: the sums' backward writes the product's flow row, and the product's backward passes it on;
* ``"all"`` (queries, node values and flows) none: every node keeps its row.

Contract: with :data:`FOLD` on, :func:`candidates` names the product ops of exactly two child slots, not the
root's, not computing fused inputs (:mod:`pcc.backend.fusion`), whose rows only sum ops read.
:func:`pair_rows` gives, per plan row, the two rows a sum's folded load adds: a folded product's two children,
or the row itself and ``ZERO`` (whose value is 0). ``(0 + v_a) + v_b`` is the product's value bitwise, as
``prod_fwd`` adds it, so folding changes no result.
"""
from __future__ import annotations

import numpy as np

from .flowmap import forward_order, read_rows, written_rows
from .fusion import state
from .plan import ZERO, Plan, ProdOp, SumOp

# off only to measure what folding saves (bench/profile_step.py --fold-products 0,1)
FOLD = True


def candidates(plan: Plan) -> frozenset[str]:
    """Product ops a layout may fold (see the module docstring); none with :data:`FOLD` off."""
    if not FOLD:
        return frozenset()
    fused = state(plan)  # what fusion decided for the current setting: its products do not fold
    cached = plan.__dict__.get("_fold_candidates")
    if cached is None or cached[0] is not fused:
        cached = plan.__dict__["_fold_candidates"] = (fused, _candidates(plan, frozenset(fused.products)))
    return cached[1]


def _candidates(plan: Plan, fused: frozenset[str]) -> frozenset[str]:
    by_sums = np.zeros(plan.rows, dtype=bool)  # read by a sum op
    other = np.zeros(plan.rows, dtype=bool)  # read by a product or input op: not only sums read it
    for _, op in forward_order(plan):
        (by_sums if isinstance(op, SumOp) else other)[read_rows(op)] = True
    keys = set()
    for key, op in forward_order(plan):
        if not isinstance(op, ProdOp) or op.children.shape[1] != 2 or key in fused:
            continue
        rows = written_rows(op)
        if not (op.start <= plan.root_row < op.start + op.n) and not other[rows].any() and by_sums[rows].any():
            keys.add(key)
    return frozenset(keys)


def folded(plan: Plan, layout: str, again: dict[str, str] | None = None) -> frozenset[str]:
    """The product ops layout ``layout`` folds; ``again``: what its backward computes again (``"train"``)."""
    if layout == "root":
        return candidates(plan)
    if layout == "train":
        return frozenset(k for k in candidates(plan) if k in (again or {}))
    return frozenset()


def pair_rows(plan: Plan, keys: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` per plan row: the children of a row of the product ops ``keys``, else the row and ``ZERO``."""
    a = np.arange(plan.rows, dtype=np.int64)
    b = np.full(plan.rows, ZERO, dtype=np.int64)
    for key, op in forward_order(plan):
        if key in keys:
            a[written_rows(op)], b[written_rows(op)] = op.children[:, 0], op.children[:, 1]
    return a, b


def folded_mask(plan: Plan, keys: frozenset[str]) -> np.ndarray:
    """Per plan row: written by one of the product ops ``keys``."""
    mask = np.zeros(plan.rows, dtype=bool)
    for key, op in forward_order(plan):
        if key in keys:
            mask[written_rows(op)] = True
    return mask
