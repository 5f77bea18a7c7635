"""The Triton executor: runs a plan's ops with the kernels of :mod:`pcc.backend.kernels`.

Same interface as :class:`pcc.backend.torch_exec.TorchExecutor` (float32). On CUDA the launches are
captured into one CUDA graph per batch size by the runtime; on a CPU machine the same kernels run in
Triton's interpreter (``TRITON_INTERPRET=1``), which is how CI checks them.
"""
from __future__ import annotations

import math
import os

import torch
import triton

from . import kernels as K
from .params import Flows, Params
from .plan import NEG, PAD, ZERO, InputOp, Plan, ProdOp, SumOp

DISTS = {"categorical": 0, "bernoulli": 1, "gaussian": 2}


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class TritonExecutor:
    """Evaluates a :class:`Plan` with Triton kernels; ``precision`` is the ``tl.dot`` input precision."""

    def __init__(self, plan: Plan, device, dtype=torch.float32, precision: str = "ieee"):
        if dtype != torch.float32:
            raise ValueError("the Triton executor computes in float32")
        if torch.device(device).type != "cuda" and not interpreting():
            raise RuntimeError("the Triton executor needs CUDA (or TRITON_INTERPRET=1 on a CPU)")
        self.plan, self.device, self.dtype, self.precision = plan, device, dtype, precision
        i32 = lambda a: torch.as_tensor(a, device=device, dtype=torch.int32).contiguous()  # noqa: E731
        self.layers = []
        for ops in plan.layers:
            launch = []
            for op in ops:
                if isinstance(op, SumOp):
                    launch.append(("sum", op, i32(op.out_rows), i32(op.child_rows), i32(op.weight_ids)))
                elif isinstance(op, ProdOp):
                    launch.append(("prod", op, i32(op.children)))
                else:
                    launch.append(("input", op, i32(op.var), i32(op.prow)))
            self.layers.append(launch)

    def _blocks(self, batch: int) -> tuple[int, int]:
        bb = max(16, min(64, triton.next_power_of_2(batch)))
        return (64 if interpreting() else 32), bb

    def forward(self, p: Params, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """Log-values ``[rows, batch]``; see TorchExecutor.forward."""
        batch, nv = x.shape
        xf, mi = x.to(torch.float32).contiguous(), missing.to(torch.int8).contiguous()
        vals = torch.empty(self.plan.rows, batch, device=self.device, dtype=torch.float32)
        vals[ZERO], vals[NEG], vals[PAD] = 0.0, -math.inf, 0.0
        bn, bb = self._blocks(batch)
        nb = triton.cdiv(batch, bb)
        for ops in self.layers:
            for kind, op, *t in ops:
                if kind == "input":
                    K.input_fwd[(triton.cdiv(op.n, bn), nb)](
                        vals, xf, mi, t[0], t[1], _theta(p, op), op.start, op.n, batch, nv,
                        DIST=DISTS[op.dist], K=op.k, BN=bn, BB=bb)
                elif kind == "prod":
                    K.prod_fwd[(triton.cdiv(op.n, bn), nb)](vals, t[0], op.start, op.n, batch,
                                                            KMAX=op.children.shape[1], BN=bn, BB=bb)
                else:
                    K.sum_fwd[(len(op.out_rows), nb)](vals, p.sum_w, t[0], t[1], t[2], batch, TP=op.tile_p,
                                                      TC=op.tile_c, KC=op.child_rows.shape[1], BB=bb, PAD=PAD,
                                                      PRECISION=self.precision)
        return vals

    def backward(self, p: Params, vals: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, flows: Flows) -> torch.Tensor:
        """Node flows ``[rows, batch]``; parameter flows are added into ``flows``."""
        batch, nv = x.shape
        xf, mi = x.to(torch.float32).contiguous(), missing.to(torch.int8).contiguous()
        f = torch.zeros_like(vals)
        f[self.plan.root_row] = 1.0
        bn, bb = self._blocks(batch)
        nb = triton.cdiv(batch, bb)
        for ops in reversed(self.layers):
            for kind, op, *t in ops:
                if kind == "sum":
                    K.sum_bwd[(len(op.out_rows), nb)](vals, f, p.sum_w, flows.sum_w, t[0], t[1], t[2], batch,
                                                      TP=op.tile_p, TC=op.tile_c, KC=op.child_rows.shape[1],
                                                      BB=bb, PRECISION=self.precision)
                elif kind == "prod":
                    K.prod_bwd[(triton.cdiv(op.n, bn), nb)](f, t[0], op.start, op.n, batch,
                                                            KMAX=op.children.shape[1], BN=bn, BB=bb)
                else:
                    self._input_backward(p, op, t, f, xf, mi, flows, bn, bb)
        f[ZERO], f[NEG], f[PAD] = 0.0, 0.0, 0.0
        return f

    def _input_backward(self, p: Params, op: InputOp, t, f, xf, mi, flows: Flows, bn: int, bb: int) -> None:
        batch, nv = xf.shape
        stats = {"categorical": lambda: flows.cat[op.k], "bernoulli": lambda: flows.bern,
                 "gaussian": lambda: flows.gauss}[op.dist]()
        mass = torch.zeros(op.n, device=self.device, dtype=torch.float32)
        K.input_bwd[(triton.cdiv(op.n, bn), triton.cdiv(batch, bb))](
            f, xf, mi, t[0], t[1], stats, mass, op.start, op.n, batch, nv,
            DIST=DISTS[op.dist], K=op.k, BN=bn, BB=bb)
        prow = t[1].long()
        if op.dist == "categorical":  # a missing entry counts the node's own distribution
            stats.index_add_(0, prow, mass[:, None] * p.cat[op.k][prow])
        elif op.dist == "bernoulli":
            q = p.bern[prow]
            stats.index_add_(0, prow, torch.stack([mass * (1 - q), mass * q], 1))
        else:
            mu, sd = p.gauss[prow, 0], p.gauss[prow, 1]
            stats.index_add_(0, prow, torch.stack([mass, mass * mu, mass * (mu * mu + sd * sd)], 1))


def _theta(p: Params, op: InputOp) -> torch.Tensor:
    return {"categorical": lambda: p.cat[op.k], "bernoulli": lambda: p.bern, "gaussian": lambda: p.gauss}[op.dist]()
