"""Parameter and flow tensors of a plan on a device, and the EM update (torch, shared by all executors).

EM (per normalisation group g of a sum, or row of an input table), with flows ``f`` and pseudocount ``a``:
``theta_new = (f + a / fanin_g) / (sum_g f + a)`` for sums; ``(c + a / K) / (sum c + a)`` for categorical;
``(c1 + a / 2) / (c0 + c1 + a)`` for bernoulli; gaussian mean and second moment are blended with the
current values with weight ``a``. Mini-batch EM moves ``theta <- (1 - s) theta + s theta_new`` (step ``s``);
full-batch EM accumulates flows over the data and applies one update with ``s = 1``. Groups that received
no flow and no pseudocount keep their parameters.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .em_kernels import aligned_classes, cut_runs, launch_cat, launch_sums
from .plan import Plan

MIN_STD = 1e-3


@dataclass
class Params:
    """Parameter tables on a device (see :class:`pcc.backend.plan.Plan`)."""

    sum_w: torch.Tensor
    cat: dict[int, torch.Tensor]
    bern: torch.Tensor
    gauss: torch.Tensor

    @staticmethod
    def from_plan(plan: Plan, device, dtype=torch.float32) -> "Params":
        """The plan's parameter tables as new ``dtype`` tensors on ``device``: copies, never views of the plan's
        arrays (``torch.as_tensor`` of a float64 array on the CPU was one, so training such a model rewrote the
        plan's, and every model of that plan shared one table)."""
        t = lambda a: torch.tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
        return Params(t(plan.sum_w), {k: _stacked(plan.cat.parts[k], dtype, device) for k in plan.cat},
                      t(plan.bern), t(plan.gauss))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name → tensor map (for saving)."""
        out = {"sum_w": self.sum_w, "bern": self.bern, "gauss": self.gauss}
        out.update({f"cat{k}": v for k, v in self.cat.items()})
        return out


STAGE_BYTES = 32 << 20  # host staging for a table's upload to a GPU: the most fresh host memory it touches


def _stacked(blocks: list[np.ndarray], dtype: torch.dtype, device, stage_bytes: int | None = None) -> torch.Tensor:
    """The row blocks of a table as one ``dtype`` tensor on ``device``, never the whole table in the blocks'
    dtype on the way. On the CPU numpy's concatenation converts the blocks into the table itself. Elsewhere
    (``stage_bytes``, default :data:`STAGE_BYTES` off the CPU) runs of blocks are converted into one reused
    host buffer of that many bytes and copied into the device's table: HCLT 256's 196 MiB table, or HCLT 512's
    392 MiB, was first written into as much fresh host memory, only to be copied to the GPU and freed."""
    try:
        like = torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:  # a dtype numpy lacks (bfloat16): through torch
        return torch.cat([torch.as_tensor(b, dtype=dtype) for b in blocks]).to(device)
    device = torch.device(device)
    if stage_bytes is None and device.type == "cpu":
        return torch.from_numpy(np.concatenate(blocks, dtype=like))
    rows, shape = sum(len(b) for b in blocks), blocks[0].shape[1:]
    out = torch.empty((rows, *shape), dtype=dtype, device=device)
    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * like.itemsize)
    stage = np.empty((max(1, min(rows, (stage_bytes or STAGE_BYTES) // row_bytes)), *shape), dtype=like)
    row = 0
    for run in _runs_within(blocks, len(stage)):
        n = sum(len(b) for b in run)
        if n > len(stage):  # one block longer than the stage: converted on its own (a copy only if its dtype differs)
            host = np.asarray(run[0], dtype=like)
        else:
            host = np.concatenate(run, out=stage[:n], casting="same_kind")
        out[row:row + n].copy_(torch.from_numpy(host))  # a synchronous copy: the stage is free again after it
        row += n
    return out


def _runs_within(blocks: list[np.ndarray], rows: int) -> Iterator[list[np.ndarray]]:
    """Consecutive blocks in runs of at most ``rows`` rows; a longer block is a run of its own."""
    run: list[np.ndarray] = []
    size = 0
    for b in blocks:
        if run and size + len(b) > rows:
            yield run
            run, size = [], 0
        run.append(b)
        size += len(b)
    if run:
        yield run


@dataclass
class Flows:
    """Accumulated parameter flows, shaped like :class:`Params` (bernoulli: [R, 2]; gaussian: [R, 3])."""

    sum_w: torch.Tensor
    cat: dict[int, torch.Tensor]
    bern: torch.Tensor
    gauss: torch.Tensor

    @staticmethod
    def zeros_like(p: Params, without: frozenset[int] = frozenset()) -> "Flows":
        """Zero flows for ``p`` (``without``: categorical tables that get no counts here)."""
        z = torch.zeros_like
        dev, dt = p.sum_w.device, p.sum_w.dtype
        return Flows(z(p.sum_w), {k: z(v) for k, v in p.cat.items() if k not in without},
                     torch.zeros(len(p.bern), 2, device=dev, dtype=dt), torch.zeros(len(p.gauss), 3, device=dev, dtype=dt))

    def zero_(self) -> None:
        for t in [self.sum_w, self.bern, self.gauss, *self.cat.values()]:
            t.zero_()

    def all(self) -> list[torch.Tensor]:
        """Every flow tensor (e.g. to all-reduce across processes)."""
        return [self.sum_w, self.bern, self.gauss, *[self.cat[k] for k in sorted(self.cat)]]


class EMUpdate:
    """The closed-form EM update of a plan's parameters from accumulated flows (in place).

    ``fused``: sum weights and categorical tables are updated by Triton kernels (:mod:`pcc.backend.em_kernels`,
    two edge-sized passes instead of about a dozen); otherwise by torch ops. Both compute the same formulas.
    """

    def __init__(self, plan: Plan, device, fused: bool = False):
        self.fused = fused
        self.groups = plan.sum_groups + 1  # the pad slot is its own group
        if fused:  # runs of edges by group, the pad slot's group left out (it and the holes stay zero)
            # the plan's runs (no edge-sized parent array: Plan.sum_parent), cut for the kernels; runs of holes
            # split at tensor ends (the only difference from the runs of sum_parent) are left out here anyway
            start, length, group = cut_runs(*plan.sum_runs)
            # each group's edges counted from its runs (a few per group), not from every edge's id again: one
            # pass over the edges fewer (HCLT 512: 142M), the same counts; the pad slot adds one to its group
            fanin = torch.as_tensor(np.bincount(group, weights=length, minlength=self.groups).astype(np.int64))
            fanin[plan.sum_groups] += 1
            real = group != plan.sum_groups
            self.runs = [(align, tuple(torch.as_tensor(a, device=device) for a in runs))
                         for align, runs in aligned_classes(start[real], length[real], group[real])]
        else:  # int32 group ids: 4 bytes per edge instead of 8 (plans stay below 2^31 groups; built ones are int32)
            # torch's bincount, not numpy's: numpy first copies int32 ids to int64 (an edge-sized array, 0.76 s
            # for PD 128's 38.8M edges on the dev CPU)
            fanin = torch.bincount(torch.as_tensor(plan.sum_parent), minlength=self.groups)
            self.parent = torch.as_tensor(np.asarray(plan.sum_parent, dtype=np.int32), device=device)
        self.fanin = fanin.to(device)

    def apply(self, p: Params, f: Flows, step: float = 1.0, pseudocount: float = 0.0) -> None:
        """``p <- (1 - step) p + step * EM(f, pseudocount)``; ``f.sum_w`` may be used as scratch (clear it after).
        Categorical tables without counts in ``f`` are left as they are (a training step's backward updated
        them: ``TritonExecutor.backward``'s ``em``)."""
        if self.fused:
            totals = torch.zeros(self.groups, dtype=p.sum_w.dtype, device=p.sum_w.device)
            launch_sums(p.sum_w, f.sum_w, totals, self.fanin.to(p.sum_w.dtype), self.runs, pseudocount, step)
            for k, counts in f.cat.items():
                launch_cat(p.cat[k], counts, pseudocount, step)
        else:
            self._sums(p.sum_w, f.sum_w, pseudocount, step)  # the pad slot's group stays zero
            for k, counts in f.cat.items():
                _blend(p.cat[k], _normalise(counts, pseudocount, p.cat[k]), step)
        if len(p.bern):
            c = f.bern
            new = (c[:, 1] + pseudocount / 2) / (c.sum(1) + pseudocount)
            _blend(p.bern, torch.where(c.sum(1) + pseudocount > 0, new, p.bern), step)
        if len(p.gauss):
            _blend(p.gauss, _gauss(p.gauss, f.gauss, pseudocount), step)

    def _sums(self, w: torch.Tensor, flow: torch.Tensor, a: float, step: float) -> None:
        """Sum weights in place, reusing ``flow`` as scratch (it is cleared before the next accumulation).

        Per edge: ``new = (f + a / fanin) / (total + a)`` where the group's ``total + a > 0``, else the old
        weight; then ``w <- (1 - step) w + step new``. Two edge-sized passes and no edge-sized temporaries.
        """
        totals = torch.zeros(self.groups, dtype=w.dtype, device=w.device).index_add_(0, self.parent, flow)
        per_group = torch.where(totals + a > 0, 1.0 / (totals + a).clamp_min(1e-300), 0.0)  # group-sized
        keep = (per_group == 0).to(w.dtype)  # 1 where the group gets no update
        per_group[-1], keep[-1] = 0.0, 0.0  # the pad slot's group (the pad slot, holed tensors' holes): zero
        bias = a / self.fanin.to(w.dtype)
        flow.add_(bias[self.parent]).mul_(per_group[self.parent])  # flow now holds the new weights (0 if kept)
        flow.add_(keep[self.parent] * w)  # kept groups: the old weight
        _blend(w, flow, step)

def _normalise(counts: torch.Tensor, a: float, old: torch.Tensor) -> torch.Tensor:
    total = counts.sum(1, keepdim=True) + a
    return torch.where(total > 0, (counts + a / counts.shape[1]) / total.clamp_min(1e-300), old)


def _gauss(old: torch.Tensor, stats: torch.Tensor, a: float) -> torch.Tensor:
    mu0, sd0 = old[:, 0], old[:, 1]
    n = stats[:, 0] + a
    mu = (stats[:, 1] + a * mu0) / n.clamp_min(1e-300)
    m2 = (stats[:, 2] + a * (mu0 * mu0 + sd0 * sd0)) / n.clamp_min(1e-300)
    sd = (m2 - mu * mu).clamp_min(MIN_STD**2).sqrt()
    return torch.where((n > 0)[:, None], torch.stack([mu, sd], 1), old)


def _blend(target: torch.Tensor, new: torch.Tensor, step: float) -> None:
    if step >= 1.0:
        target.copy_(new)
    else:
        target.mul_(1 - step).add_(new, alpha=step)


def expected_missing_stats(dist: str, k: int, prow: torch.Tensor, mass: torch.Tensor, p: Params, fl: Flows) -> None:
    """A missing entry's flow counts the input node's own distribution (the E-step with missing data).

    ``mass[i]`` is node ``i``'s flow summed over the samples where its variable is missing.
    """
    prow = prow.long()
    if dist == "categorical":
        fl.cat[k].index_add_(0, prow, mass[:, None] * p.cat[k][prow])
    elif dist == "bernoulli":
        q = p.bern[prow]
        fl.bern.index_add_(0, prow, torch.stack([mass * (1 - q), mass * q], 1))
    else:
        mu, sd = p.gauss[prow, 0], p.gauss[prow, 1]
        fl.gauss.index_add_(0, prow, torch.stack([mass, mass * mu, mass * (mu * mu + sd * sd)], 1))
