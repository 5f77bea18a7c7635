"""A differentiable float64 copy of the reference interpreter (torch, straight from the IR).

Independent of the plan and the executors, so autograd through it gives the flows to check them against:
node flows are gradients w.r.t. a zero offset added to every block's values; parameter flows are
``theta * d(sum log p)/d theta`` on observed entries plus, on missing ones, the input node's flow times
its own distribution (the E-step of EM with missing data); gaussian statistics come from offsets scaled
by x and x^2.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pcc.ir import Circuit, InputBlock, ProdBlock
from pcc.ir.params import array, dense_mask, dense_weights, prod_table


class Reference:
    """Leaves: ``theta[name]`` for every parameter tensor; ``offset[i]`` ([B, n]) for every block."""

    def __init__(self, circuit: Circuit, x: np.ndarray, missing: np.ndarray):
        self.c, self.x, self.miss = circuit, torch.tensor(x), torch.tensor(missing)
        self.theta: dict[str, torch.Tensor] = {}
        self.bern: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.gstat: dict[int, list[torch.Tensor]] = {}
        self.missing_mass: dict[int, torch.Tensor] = {}  # input block -> leaf whose grad is its flow on missing entries
        for b in circuit.blocks:
            name = getattr(b, "params", None)
            if isinstance(b, InputBlock) and b.dist == "bernoulli":
                p = torch.tensor(array(circuit, name))
                self.bern.setdefault(name, ((1 - p).requires_grad_(), p.clone().requires_grad_()))
            elif isinstance(b, InputBlock) and b.dist == "gaussian":
                self.theta.setdefault(name, torch.tensor(array(circuit, name)))
            elif name is not None:
                w = dense_weights(circuit, b) if b.kind == "sum" else array(circuit, name)
                self.theta.setdefault(name, torch.tensor(w).requires_grad_())
        batch = len(x)
        self.offset = [torch.zeros(batch, b.n, dtype=torch.float64, requires_grad=True) for b in circuit.blocks]

    def log_likelihood(self) -> torch.Tensor:
        vals: list[torch.Tensor] = []
        for i, b in enumerate(self.c.blocks):
            if isinstance(b, InputBlock):
                v = self._input(i, b)
            elif isinstance(b, ProdBlock):
                t = torch.tensor(prod_table(self.c, b))
                v = sum(vals[c][:, t[:, j]] for j, c in enumerate(b.children))
            else:
                child = torch.cat([vals[c] for c in b.children], 1)
                logw = torch.where(torch.tensor(dense_mask(self.c, b)), torch.log(self.theta[b.params]), -torch.inf)
                v = torch.logsumexp(child[:, None, :] + logw[None], -1)
            vals.append(v + self.offset[i])
        return vals[self.c.root][:, 0]

    def _input(self, i: int, b: InputBlock) -> torch.Tensor:
        col, miss = self.x[:, b.var], self.miss[:, b.var]
        if b.dist in ("categorical", "bernoulli"):
            if b.dist == "categorical":
                out = torch.log(self.theta[b.params]).T[torch.where(miss, 0, col.long())]
            else:
                q0, q1 = self.bern[b.params]
                out = torch.where((col > 0.5)[:, None], torch.log(q1)[None], torch.log(q0)[None])
            mass = torch.zeros(b.n, dtype=torch.float64, requires_grad=True)
            self.missing_mass[i] = mass
            return torch.where(miss[:, None], mass[None].expand(len(col), -1), out)
        else:
            p = self.theta[b.params]
            z = (col[:, None] - p[:, 0]) / p[:, 1]
            out = -0.5 * z * z - torch.log(p[:, 1]) - 0.5 * math.log(2 * math.pi)
            stats = [torch.zeros(b.n, dtype=torch.float64, requires_grad=True) for _ in range(4)]
            self.gstat[i] = stats
            out = torch.where(miss[:, None], torch.zeros_like(out), out)
            obs = (~miss).to(torch.float64)[:, None]
            return out + obs * (stats[0] + stats[1] * col[:, None] + stats[2] * col[:, None] ** 2) + (1 - obs) * stats[3]
        return torch.where(miss[:, None], torch.zeros_like(out), out)


def expected_input_flows(ref: Reference, name: str) -> np.ndarray:
    """EM statistics of an input tensor: ``theta * grad`` plus missing-entry flow times ``theta``."""
    users = [i for i, b in enumerate(ref.c.blocks) if isinstance(b, InputBlock) and b.params == name]
    if name in ref.bern:
        q0, q1 = ref.bern[name]
        theta, flow = torch.stack([q0, q1], 1), torch.stack([q0 * q0.grad, q1 * q1.grad], 1)
    else:
        theta = ref.theta[name]
        flow = theta * theta.grad
    for i in users:
        flow = flow + ref.missing_mass[i].grad[:, None] * theta
    return flow.detach().numpy()
