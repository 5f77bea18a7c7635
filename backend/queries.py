"""Queries over a compiled circuit: marginals, conditionals, MAP (max-product) and sampling; all batched.

Every function takes a :class:`~pcc.backend.runtime.CircuitModel` and works on its device with plain torch
ops over the model's :class:`~pcc.backend.plan.Plan` (the same rows and block-sparse sum tiles as the
executors); loops run over layers and ops, never over nodes or samples.

Masks are boolean ``[batch, vars]`` arrays with **1 = observed** (evidence / part of the query), the
opposite of ``log_prob``'s ``missing`` mask.

* ``marginal(model, x, mask)``: ``log p(x_mask)`` (the other entries are summed out).
* ``conditional(model, x, evidence_mask, query_mask)``: ``log p(x_Q | x_E) = log p(x_{Q∪E}) − log p(x_E)``.
* ``max_product(model, x, evidence_mask)`` / ``map_state(model, x, evidence_mask)``: the upward max-product
  pass (sums take ``max_j log w_j + v_j``, products add, unobserved inputs take their mode — the most likely
  category, or a Gaussian's mean — observed ones the log-probability of the evidence) and the downward
  argmax pass: from the root, each reached sum follows its argmax edge, products follow all children,
  and every variable is read from the one reached input node over it. The state maximises the circuit's
  max-product value (the most likely *induced tree*); for deterministic circuits that is the MPE state.
* ``sample(model, n, x, evidence_mask)``: ancestral sampling. With evidence, a forward pass with the
  unobserved entries marginalised gives every node's value ``v``; a reached sum picks child edge ``j`` with
  probability ``∝ w_j · exp(v_j)`` (Gumbel-max), products take all children, inputs sample their own
  distribution and observed entries keep the evidence value. This draws exactly from ``p(x_U | x_E)``.

Bad input is a :class:`~pcc.ir.UserError` with a one-line message: data or masks of the wrong shape, a
mask that is not 0/1, observed evidence outside a variable's domain (not an integer in ``0..k-1`` for a
discrete variable, not finite for a real one). **Zero-probability evidence** is defined as an error too:
``conditional``, ``map_state`` and ``sample`` raise ``UserError("evidence has probability zero ...")``
naming the first such row, instead of returning NaN. (``marginal`` simply returns ``-inf`` for it; a
conditional whose query part has probability zero given positive-probability evidence is ``-inf``.)
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pcc.ir import UserError
from pcc.ir.diagnostics import Diagnostic, Loc

from .plan import NEG, PAD, ZERO
from .torch_exec import _SCRATCH, TorchExecutor, _input_forward

__all__ = ["marginal", "conditional", "max_product", "map_state", "sample", "check_evidence"]


def _error(message: str) -> UserError:
    return UserError(Diagnostic(Loc("<input>"), message))


# --------------------------------------------------------------------------------------- input checks


def _tensor(model, a, dtype) -> torch.Tensor:
    t = a if torch.is_tensor(a) else torch.as_tensor(np.asarray(a))
    return t.to(device=model.device_, dtype=dtype)


def _mask(model, mask, shape, name: str) -> torch.Tensor:
    """A boolean mask of exactly ``shape`` from 0/1 (or bool) values."""
    m = mask if torch.is_tensor(mask) else torch.as_tensor(np.asarray(mask))
    if list(m.shape) != list(shape):
        raise _error(f"{name} has shape {list(m.shape)}, the data has shape {list(shape)}")
    if m.dtype != torch.bool:
        mf = m.to(torch.float64)
        if not bool(((mf == 0) | (mf == 1)).all()):
            raise _error(f"{name} must hold only 0 and 1 (1 = observed)")
        m = mf != 0
    return m.to(model.device_)


def check_evidence(model, x: torch.Tensor, observed: torch.Tensor) -> None:
    """Raise a UserError at the first observed entry outside its variable's domain."""
    doms = [v.domain for v in model.circuit.variables]
    k = torch.tensor([float(d.categories) for d in doms], dtype=torch.float64, device=x.device)
    discrete = k > 0
    xd = x.to(torch.float64)
    with torch.no_grad():
        bad = ~torch.isfinite(xd)
        bad |= discrete & ((xd < 0) | (xd > k - 1) | (xd != torch.floor(xd)))
        bad &= observed
    if bool(bad.any()):
        r, j = (int(i) for i in torch.nonzero(bad)[0])
        d, v = doms[j], float(xd[r, j])
        want = "a finite number" if d.categories == 0 else f"an integer in 0..{d.categories - 1}"
        raise _error(f"evidence row {r}, column {j} (variable {model.circuit.variables[j].name}, {d.kind}): "
                     f"value {v:g} is outside the domain (expected {want})")


def _raw(model, x) -> torch.Tensor:
    raw = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if raw.ndim != 2 or raw.shape[1] != model.num_vars:
        raise _error(f"expected data of shape [batch, {model.num_vars}], got {list(raw.shape)}")
    return raw.to(model.device_)


def _prepare(model, x, mask, name: str = "mask", default: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x in the model's dtype with unobserved entries zeroed, observed mask); shapes and domains checked."""
    raw = _raw(model, x)
    if mask is None:
        obs = torch.full(raw.shape, default, dtype=torch.bool, device=model.device_)
    else:
        obs = _mask(model, mask, raw.shape, name)
    check_evidence(model, raw, obs)
    xs = torch.where(obs, raw.to(torch.float64), torch.zeros((), dtype=torch.float64, device=raw.device))
    return xs.to(model.dtype), obs


def _forward(model, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    return model.executor.forward(model.params, x, ~observed)


def _zero_probability(logp: torch.Tensor, what: str = "evidence") -> None:
    bad = ~(logp > -math.inf)  # -inf or NaN
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
        raise _error(f"{what} has probability zero in row {rows[0]}{more}: the query is undefined there")


# --------------------------------------------------------------------------------------- marginals


@torch.no_grad()
def marginal(model, x, mask=None) -> torch.Tensor:
    """``log p(x_O)`` per row, ``O`` the entries where ``mask`` is 1 (default: all)."""
    xs, obs = _prepare(model, x, mask)
    return _forward(model, xs, obs)[model.plan.root_row]


@torch.no_grad()
def conditional(model, x, evidence_mask, query_mask=None) -> torch.Tensor:
    """``log p(x_Q | x_E)`` per row; ``Q`` defaults to every variable not in the evidence ``E``.

    Rows whose evidence has probability zero raise a UserError (see the module docstring).
    """
    raw = _raw(model, x)
    ev = _mask(model, evidence_mask, raw.shape, "evidence mask")
    q = ~ev if query_mask is None else _mask(model, query_mask, raw.shape, "query mask")
    both = ev | q
    xs, _ = _prepare(model, raw, both)
    den = _forward(model, xs, ev)[model.plan.root_row]
    _zero_probability(den)
    num = _forward(model, xs, both)[model.plan.root_row]
    return num - den


# --------------------------------------------------------------------------------------- plan passes


def _layers(model):
    """The plan's ops as device tensors (the torch executor's tables; built once for other executors)."""
    ex = model.executor
    if isinstance(ex, TorchExecutor):
        return ex.layers
    cached = model.__dict__.get("_query_layers")
    if cached is None:
        cached = TorchExecutor(model.plan, model.device_, model.dtype).layers
        model.__dict__["_query_layers"] = cached
    return cached


def _log_weights(model) -> torch.Tensor:
    w = model.params.sum_w
    return torch.where(w > 0, torch.log(w.clamp_min(1e-300)), torch.full_like(w, -math.inf))


def _mode(meta, prow, p) -> tuple[torch.Tensor, torch.Tensor]:
    """(mode value, log-probability/density at the mode) of every input node ``[n]``."""
    if meta.dist == "categorical":
        best, arg = p.cat[meta.k][prow].max(1)
        return arg.to(p.sum_w.dtype), torch.log(best)
    if meta.dist == "bernoulli":
        q = p.bern[prow]
        return (q > 0.5).to(q.dtype), torch.log(torch.maximum(q, 1 - q))
    mu, sd = p.gauss[prow, 0], p.gauss[prow, 1]
    return mu, -torch.log(sd) - 0.5 * math.log(2 * math.pi)


def _chunks(op, batch: int):
    _, out_rows, child_rows, wids = op
    tp, kc = wids.shape[1], wids.shape[2]
    step = max(1, _SCRATCH // max(1, tp * kc * batch))
    for t in range(0, len(out_rows), step):
        yield out_rows[t : t + step], child_rows[t : t + step], wids[t : t + step]


def _max_values(model, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Max-product log-values ``[rows, batch]`` of every node (unobserved entries maximised out)."""
    p, plan = model.params, model.plan
    logw = _log_weights(model)
    missing = ~observed
    vals = torch.empty(plan.rows, x.shape[0], device=model.device_, dtype=model.dtype)
    vals[ZERO], vals[NEG], vals[PAD] = 0.0, -math.inf, 0.0
    for ops in _layers(model):
        for op in ops:
            if op[0] == "input":
                _, meta, var, prow = op
                _, best = _mode(meta, prow, p)
                miss = missing[:, var].T
                obs = _input_forward(meta, var, prow, p, x, missing)
                vals[meta.start : meta.start + meta.n] = torch.where(miss, best[:, None].expand_as(obs), obs)
            elif op[0] == "prod":
                _, start, kids = op
                vals[start : start + len(kids)] = vals[kids].sum(1)
            else:
                for rows, kids, ids in _chunks(op, x.shape[0]):
                    s = logw[ids][..., None] + vals[kids][:, None, :, :]    # [T, tp, Kc, B]
                    out = s.amax(2)
                    keep = rows != PAD
                    vals[rows[keep]] = out[keep]
    return vals


def _gumbel(shape, like: torch.Tensor, generator) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    tiny = torch.finfo(like.dtype).tiny
    return -torch.log(-torch.log(u.clamp_min(tiny)))


def _draw(meta, prow, p, batch: int, generator) -> torch.Tensor:
    """One sample of every input node's distribution per batch column: ``[n, batch]``."""
    dt = p.sum_w.dtype
    if meta.dist == "categorical":  # inverse CDF: one uniform per (node, sample), not one per category
        cdf = torch.cumsum(p.cat[meta.k][prow], 1)                          # [n, K]
        u = torch.rand((len(prow), batch), generator=generator, device=prow.device, dtype=dt) * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).clamp_max(meta.k - 1).to(dt)
    if meta.dist == "bernoulli":
        u = torch.rand((len(prow), batch), generator=generator, device=prow.device, dtype=dt)
        return (u < p.bern[prow][:, None]).to(dt)
    z = torch.randn((len(prow), batch), generator=generator, device=prow.device, dtype=dt)
    return p.gauss[prow, 0][:, None] + p.gauss[prow, 1][:, None] * z


def _downward(model, vals: torch.Tensor, x: torch.Tensor, observed: torch.Tensor, generator=None,
              random: bool = False) -> torch.Tensor:
    """Walk the layers in reverse from the root: the states ``[batch, vars]`` of the selected subcircuits.

    ``act[row, b]`` counts the selected paths from the root to node ``row`` in sample ``b``. A sum passes its
    count to one child edge: the argmax of ``log w + v`` (MAP, ``vals`` = max-product values) or of
    ``log w + v + Gumbel`` (``random``: sampling, ``vals`` = marginal values); a product to all children.
    Reached inputs give their variable's value: the evidence where observed, else the mode (MAP) or a draw.
    """
    p, plan = model.params, model.plan
    batch = vals.shape[1]
    logw = _log_weights(model)
    act = torch.zeros(plan.rows, batch, device=model.device_, dtype=vals.dtype)
    act[plan.root_row] = 1.0
    state = torch.zeros(plan.num_vars, batch, device=model.device_, dtype=vals.dtype)
    count = torch.zeros_like(state)
    cols = torch.arange(batch, device=model.device_)
    for ops in reversed(_layers(model)):
        for op in ops:
            if op[0] == "sum":
                for rows, kids, ids in _chunks(op, batch):
                    a = act[rows]                                           # [T, tp, B]
                    s = logw[ids][..., None] + vals[kids][:, None, :, :]    # [T, tp, Kc, B]
                    if random:
                        s = s + _gumbel(s.shape, s, generator)
                    arg = s.argmax(2)                                       # [T, tp, B]
                    tp = rows.shape[1]
                    chosen = torch.gather(kids[:, None, :].expand(-1, tp, -1), 2, arg)
                    act.index_put_((chosen.reshape(-1), cols.expand_as(chosen).reshape(-1)), a.reshape(-1),
                                   accumulate=True)
            elif op[0] == "prod":
                _, start, kids = op
                a = act[start : start + len(kids)]
                act.index_add_(0, kids.reshape(-1), a.unsqueeze(1).expand(-1, kids.shape[1], -1).reshape(-1, batch))
            else:
                _, meta, var, prow = op
                a = act[meta.start : meta.start + meta.n]                   # [n, B]
                if random:
                    value = _draw(meta, prow, p, batch, generator)
                else:
                    value = _mode(meta, prow, p)[0][:, None].expand(-1, batch)
                value = torch.where(observed[:, var].T, x[:, var].T.to(value.dtype), value)
                state.index_add_(0, var, torch.where(a > 0, value, torch.zeros_like(value)))
                count.index_add_(0, var, a)
    if not bool((count == 1).all()):
        v, b = (int(i) for i in torch.nonzero(count != 1)[0])
        raise RuntimeError(f"internal error: variable {v} of sample {b} is covered by {int(count[v, b])} selected "
                           "input nodes (expected exactly 1 in a smooth, decomposable circuit)")
    return state.T.contiguous()


# --------------------------------------------------------------------------------------- MAP


@torch.no_grad()
def max_product(model, x=None, evidence_mask=None) -> torch.Tensor:
    """The root's max-product log-value per row: ``max`` over the unobserved entries' induced trees."""
    xs, obs = _evidence_batch(model, x, evidence_mask, 1)
    return _max_values(model, xs, obs)[model.plan.root_row]


@torch.no_grad()
def map_state(model, x=None, evidence_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(state ``[B, V]``, ``log p(state)`` ``[B]``): the max-product (MAP/MPE) completion of the evidence.

    Without ``x``: one unconditioned MAP state (B = 1). With ``x`` ``[B, V]`` and ``evidence_mask`` (1 =
    observed) each row is completed. The returned log-probability is the
    circuit's exact joint ``log p(state)`` (at least the max-product value; equal for deterministic circuits).
    Zero-probability evidence raises a UserError.
    """
    xs, obs = _evidence_batch(model, x, evidence_mask, 1)
    vals = _max_values(model, xs, obs)
    _zero_probability(vals[model.plan.root_row])
    state = _downward(model, vals, xs, obs)
    full = torch.ones_like(obs)
    return state, _forward(model, state.to(model.dtype), full)[model.plan.root_row]


# --------------------------------------------------------------------------------------- sampling


def _evidence_batch(model, x, mask, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evidence ``[n, V]``: none (everything unobserved), one row broadcast to ``n``, or ``n`` rows."""
    if x is None:
        if mask is not None:
            raise _error("an evidence mask was given without evidence values")
        xs = torch.zeros(n, model.num_vars, device=model.device_, dtype=model.dtype)
        return xs, torch.zeros(xs.shape, dtype=torch.bool, device=model.device_)
    if mask is None:
        raise _error("evidence values were given without an evidence mask (1 = observed)")
    raw = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    mask = mask if torch.is_tensor(mask) else torch.as_tensor(np.asarray(mask))
    if raw.ndim == 1 and mask.ndim == 1:
        raw, mask = raw[None], mask[None]
    xs, obs = _prepare(model, raw, mask, "evidence mask")
    return xs, obs


@torch.no_grad()
def sample(model, n: int, x=None, evidence_mask=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples ``[n, V]`` from ``p`` or, with evidence, from ``p(x_U | x_E)``.

    ``x`` is ``[V]``/``[1, V]`` (broadcast to every sample) or ``[n, V]`` (one evidence row per sample) with
    ``evidence_mask`` of the same shape (1 = observed).
    Observed entries of every sample equal the evidence. Zero-probability evidence raises a UserError.
    """
    n = int(n)
    if n < 0:
        raise _error(f"the number of samples must be non-negative, got {n}")
    xs, obs = _evidence_batch(model, x, evidence_mask, n)
    if xs.shape[0] == 1 and n != 1:
        xs, obs = xs.expand(n, -1), obs.expand(n, -1)
    elif xs.shape[0] != n:
        raise _error(f"evidence has {xs.shape[0]} rows: give one row (shared by all samples) or one row per sample ({n})")
    if n == 0:
        return torch.zeros(0, model.num_vars, device=model.device_, dtype=model.dtype)
    vals = _forward(model, xs.contiguous(), obs.contiguous())
    _zero_probability(vals[model.plan.root_row])
    return _downward(model, vals.to(model.dtype), xs, obs, generator, random=True)
