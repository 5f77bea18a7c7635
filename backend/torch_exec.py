"""The plain-torch executor of a plan: forward log-values, backward flows, parameter flows.

Runs anywhere torch runs (the default on machines without CUDA) and is the second oracle for the Triton
kernels. Sum layers use the same block-sparse tiles as the kernels: per parent tile, the child values are
shifted by their per-sample maximum, exponentiated once and multiplied by the weight tile (``bmm``).
Flows are exact: edge flow ``w * exp(v_child - v_parent) * F_parent`` (zero where the parent has no flow).
Work is chunked over parent tiles so scratch memory stays bounded.
"""
from __future__ import annotations

import math

import torch

from .params import Flows, Params, expected_missing_stats
from .plan import NEG, PAD, ZERO, InputOp, Plan, ProdOp, SumOp

_SCRATCH = 1 << 24  # elements per chunk of [tiles, parents, children, batch] scratch


class TorchExecutor:
    """Evaluates a :class:`Plan` with torch tensor ops on ``device``."""

    capturable = False  # boolean-mask writes have data-dependent shapes: not capturable in CUDA graphs
    fused_em = False  # the EM update stays in torch ops (no Triton on a plain CPU)

    def __init__(self, plan: Plan, device, dtype=torch.float32):
        self.plan, self.device, self.dtype = plan, device, dtype
        dev = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        self.layers = []
        for ops in plan.layers:
            converted = []
            for op in ops:
                if isinstance(op, SumOp):
                    converted.append(("sum", dev(op.out_rows), dev(op.child_rows), dev(op.weight_ids)))
                elif isinstance(op, ProdOp):
                    converted.append(("prod", op.start, dev(op.children)))
                else:
                    converted.append(("input", op, dev(op.var), dev(op.prow)))
            self.layers.append(converted)

    def root_row(self, values: str = "all") -> int:
        """The root's row (every layout keeps each node in its own row here)."""
        return self.plan.root_row

    # --- forward ----------------------------------------------------------------------------------

    def forward(self, p: Params, x: torch.Tensor, missing: torch.Tensor, values: str = "all") -> torch.Tensor:
        """Log-values ``[rows, batch]`` of every node for data ``x [batch, vars]`` (``missing`` marginalised);
        every layout (``values``) is ``"all"`` here."""
        vals = torch.empty(self.plan.rows, x.shape[0], device=self.device, dtype=self.dtype)
        vals[ZERO], vals[NEG], vals[PAD] = 0.0, -math.inf, 0.0
        for ops in self.layers:
            for op in ops:
                if op[0] == "input":
                    _, meta, var, prow = op
                    vals[meta.start : meta.start + meta.n] = _input_forward(meta, var, prow, p, x, missing)
                elif op[0] == "prod":
                    _, start, kids = op
                    vals[start : start + len(kids)] = vals[kids].sum(1)
                else:
                    self._sum_forward(vals, p, *op[1:])
        return vals

    def _sum_forward(self, vals, p: Params, out_rows, child_rows, wids) -> None:
        batch = vals.shape[1]
        step = max(1, _SCRATCH // max(1, child_rows.shape[1] * batch))
        for t in range(0, len(out_rows), step):
            cv = vals[child_rows[t : t + step]]                      # [T, Kc, B]
            m = cv.amax(1, keepdim=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            acc = torch.bmm(p.sum_w[wids[t : t + step]], torch.exp(cv - m))  # [T, tp, B]
            out = torch.log(acc) + m
            rows = out_rows[t : t + step]
            keep = rows != PAD
            vals[rows[keep]] = out[keep]

    # --- backward ---------------------------------------------------------------------------------

    def backward(self, p: Params, vals: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, flows: Flows,
                 node_flows: bool = True, values: str = "all") -> torch.Tensor:
        """Node flows ``[rows, batch]`` (d log p / d log v); parameter flows are added into ``flows``.

        ``node_flows`` and ``values`` are accepted for the Triton executor's interface: this reference always
        keeps every value and every flow in the node's own row.
        """
        f = torch.zeros_like(vals)
        f[self.plan.root_row] = torch.isfinite(vals[self.plan.root_row]).to(f.dtype)  # p(x) = 0: no flow
        for ops in reversed(self.layers):
            for op in ops:
                if op[0] == "sum":
                    self._sum_backward(vals, f, p, flows, *op[1:])
                elif op[0] == "prod":
                    _, start, kids = op
                    fn = f[start : start + len(kids)]
                    f.index_add_(0, kids.reshape(-1), fn.unsqueeze(1).expand(-1, kids.shape[1], -1).reshape(-1, fn.shape[1]))
                else:
                    _, meta, var, prow = op
                    _input_backward(meta, var, prow, p, x, missing, f[meta.start : meta.start + meta.n], flows)
        f[ZERO], f[NEG], f[PAD] = 0.0, 0.0, 0.0
        return f

    def _sum_backward(self, vals, f, p: Params, flows: Flows, out_rows, child_rows, wids) -> None:
        batch = vals.shape[1]
        tp, kc = wids.shape[1], wids.shape[2]
        step = max(1, _SCRATCH // max(1, tp * kc * batch))
        for t in range(0, len(out_rows), step):
            rows, kids, ids = out_rows[t : t + step], child_rows[t : t + step], wids[t : t + step]
            fn, vn, cv = f[rows], vals[rows], vals[kids]               # [T,tp,B], [T,tp,B], [T,Kc,B]
            ratio = torch.exp(cv[:, None, :, :] - vn[:, :, None, :])   # [T,tp,Kc,B]
            edge = p.sum_w[ids][..., None] * ratio * fn[:, :, None, :]
            edge = torch.where((fn > 0)[:, :, None, :], edge, torch.zeros_like(edge))
            flows.sum_w.index_add_(0, ids.reshape(-1), edge.sum(-1).reshape(-1))
            f.index_add_(0, kids.reshape(-1), edge.sum(1).reshape(-1, batch))


def _observed(x: torch.Tensor, missing: torch.Tensor, var: torch.Tensor):
    xv = x[:, var].T                                   # [n, B]
    miss = missing[:, var].T
    return torch.where(miss, torch.zeros_like(xv), xv), miss


def _input_forward(meta: InputOp, var, prow, p: Params, x, missing) -> torch.Tensor:
    xv, miss = _observed(x, missing, var)
    if meta.dist == "categorical":
        out = torch.log(p.cat[meta.k][prow[:, None], xv.long()])
    elif meta.dist == "bernoulli":
        q = p.bern[prow][:, None]
        out = torch.where(xv > 0.5, torch.log(q), torch.log1p(-q))
    else:
        mu, sd = p.gauss[prow, 0][:, None], p.gauss[prow, 1][:, None]
        z = (xv - mu) / sd
        out = -0.5 * z * z - torch.log(sd) - 0.5 * math.log(2 * math.pi)
    return torch.where(miss, torch.zeros_like(out), out)


def _input_backward(meta: InputOp, var, prow, p: Params, x, missing, fn, flows: Flows) -> None:
    """Expected sufficient statistics: observed entries count their value, missing ones the node's own distribution."""
    xv, miss = _observed(x, missing, var)
    obs_f = torch.where(miss, torch.zeros_like(fn), fn)
    if meta.dist == "categorical":
        table = flows.cat[meta.k]
        table.view(-1).index_add_(0, (prow[:, None] * meta.k + xv.long()).reshape(-1), obs_f.reshape(-1))
    elif meta.dist == "bernoulli":
        one = (xv > 0.5).to(fn.dtype)
        flows.bern.index_add_(0, prow, torch.stack([(obs_f * (1 - one)).sum(1), (obs_f * one).sum(1)], 1))
    else:
        flows.gauss.index_add_(0, prow, torch.stack([obs_f.sum(1), (obs_f * xv).sum(1), (obs_f * xv * xv).sum(1)], 1))
    expected_missing_stats(meta.dist, meta.k, prow, torch.where(miss, fn, torch.zeros_like(fn)).sum(1), p, flows)
