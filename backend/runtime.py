"""The runtime model: a ``torch.nn.Module`` that evaluates, trains (EM) and saves a compiled circuit.

``CircuitModel(layered_circuit)`` builds the plan, puts the parameters on a device and picks an executor:
the Triton kernels on CUDA, the plain-torch executor elsewhere (or when asked). Training is EM:

* ``em_step(x)``: mini-batch EM — flows of this batch, then ``theta <- (1-s) theta + s EM(flows)``;
* ``accumulate(x)`` over a data set, then ``em_update()``: full-batch EM (one update from all flows).

``to_circuit()`` writes the current parameters back into the IR; checkpoints are that IR plus its tensors
in one safetensors file, written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pcc import __version__
from pcc.ir import Circuit, Tensor, UserError, parse_text, print_circuit, verify
from pcc.ir import tensorfile
from pcc.ir.diagnostics import Diagnostic, Loc

from .codegen import DOT_PRECISION
from .params import EMUpdate, Flows, Params
from .plan import Plan, build_plan
from .torch_exec import TorchExecutor

CHECKPOINT_FORMAT = "pcc-checkpoint-1"


MAX_FORWARD_GRAPHS = 4  # forward graphs kept (one per batch size) before the oldest is dropped


def pick_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when available, else CPU; a CUDA request without CUDA is a user error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(Diagnostic(Loc("<command line>"), "--device cuda was asked for, but CUDA is not available"))
    return device


def make_executor(plan: Plan, device: torch.device, dtype: torch.dtype, kind: str = "auto", kernels: str | None = None,
                  precision: str = DOT_PRECISION, recompute: bool | str = True, fuse_inputs: bool | None = None):
    """The Triton executor on CUDA (``auto``/``triton``), the plain-torch one otherwise (``precision``: Triton's
    matrix products, see :data:`pcc.backend.codegen.PRECISIONS`; ``recompute``: what training steps compute again
    in the backward instead of keeping, :func:`pcc.backend.valuemap.level`; ``fuse_inputs``: inputs computed by
    the products that read them, :mod:`pcc.backend.fusion`; None: its default)."""
    if kind == "triton" or (kind == "auto" and device.type == "cuda"):
        from .triton_exec import TritonExecutor
        return TritonExecutor(plan, device, dtype, precision=precision, source=kernels, recompute=recompute,
                              fuse_inputs=fuse_inputs)
    return TorchExecutor(plan, device, dtype)


class CircuitModel(torch.nn.Module):
    """A compiled circuit on a device; see the module docstring for its contract."""

    def __init__(self, circuit: Circuit, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 executor: str = "auto", plan: Plan | None = None, kernels: str | None = None,
                 precision: str = DOT_PRECISION, recompute: bool | str = True, fuse_inputs: bool | None = None):
        super().__init__()
        self.circuit = circuit
        # a float32 model's plan holds float32 weights (the same values: Params rounds float64 ones once too)
        self.plan = plan or build_plan(circuit, weights=np.float32 if dtype == torch.float32 else np.float64)
        self.device_ = pick_device(device)
        self.dtype = dtype
        self.params = Params.from_plan(self.plan, self.device_, dtype)
        self.executor = make_executor(self.plan, self.device_, dtype, executor, kernels, precision, recompute,
                                      fuse_inputs)
        self.em = EMUpdate(self.plan, self.device_, fused=self.executor.fused_em)
        self._flows: Flows | None = None  # made on first use (accumulate); em_step keeps its own (_step_flows)
        self._em_flows: tuple[frozenset, Flows] | None = None
        self.accumulated = 0
        self.use_graphs = self.executor.capturable
        self._graphs: dict = {}
        self._pool = None  # one memory pool for all of this model's graphs (see _capture)

    @property
    def executor(self):
        """The executor running the model's passes. Replacing it drops the captured CUDA graphs: they replay the
        old executor's launches over its index tables, which are freed with it (a replay then reads garbage)."""
        return self._executor

    @executor.setter
    def executor(self, executor) -> None:
        self._executor = executor
        self._graphs = {}
        if hasattr(self, "em"):  # a replacement (not the constructor's first executor): match its abilities
            self.use_graphs = self.use_graphs and executor.capturable
            if self.em.fused != executor.fused_em:  # the update's tables are built once, for one kind
                self.em = EMUpdate(self.plan, self.device_, fused=executor.fused_em)

    @property
    def flows(self) -> Flows:
        """The parameter flows ``accumulate`` adds to and ``em_update`` applies (made on first use)."""
        if self._flows is None:
            self._flows = Flows.zeros_like(self.params)
        return self._flows

    def _step_flows(self, tables: frozenset[int]) -> Flows:
        """The parameter flows of an ``em_step`` whose backward updates the categorical ``tables`` itself: no
        counts of those (the largest parameter tables: HCLT 64's is 51 MiB beside 13 MiB of sum weights)."""
        if self._em_flows is None or self._em_flows[0] != tables:
            self._em_flows = (tables, Flows.zeros_like(self.params, without=tables))
        return self._em_flows[1]

    def _em_tables(self, batch: int) -> frozenset[int]:
        """Categorical tables a mini-batch EM step of ``batch`` samples updates in its backward
        (:func:`pcc.backend.codegen.em_tables`, up to :data:`~pcc.backend.codegen.CAT_EM_MAX_BATCH` samples)."""
        from .codegen import CAT_EM_MAX_BATCH
        return getattr(self.executor, "em_tables", frozenset()) if batch <= CAT_EM_MAX_BATCH else frozenset()

    @property
    def num_vars(self) -> int:
        return self.plan.num_vars

    def _inputs(self, x, missing) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, device=self.device_, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.num_vars:
            raise UserError(Diagnostic(Loc("<input>"), f"expected data of shape [batch, {self.num_vars}], got {list(x.shape)}"))
        if missing is None:  # nothing to blank out: the data itself, not a copy (it sat on the step's peak)
            return x, torch.zeros(x.shape, dtype=torch.bool, device=self.device_)
        m = torch.as_tensor(missing, device=self.device_).bool()
        if m.shape != x.shape:
            raise UserError(Diagnostic(Loc("<input>"), f"missing mask has shape {list(m.shape)}, data has {list(x.shape)}"))
        return torch.where(m, torch.zeros_like(x), x), m

    @torch.no_grad()
    def log_prob(self, x, missing=None) -> torch.Tensor:
        """``log p(x)`` per row ``[batch]``; entries where ``missing`` is true are marginalised."""
        x, m = self._inputs(x, missing)
        if self.use_graphs and self.device_.type == "cuda":
            return self._replay(("forward", x.shape[0]), x, m, self._root_values)
        return self._root_values(x, m)

    forward = log_prob

    def _root_values(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # a copy of the root row: a view would keep the whole [rows, batch] value buffer alive (in a graph, for good)
        vals = self.executor.forward(self.params, x, m, values="root")  # rows reused once dead (pcc.backend.valuemap)
        return vals[self.executor.root_row("root")].clone()

    @torch.no_grad()
    def node_flows(self, x, missing=None) -> torch.Tensor:
        """Node flows ``[rows, batch]`` (d log p / d log v per node); parameter flows are not kept."""
        x, m = self._inputs(x, missing)
        vals = self.executor.forward(self.params, x, m)
        return self.executor.backward(self.params, vals, x, m, Flows.zeros_like(self.params))

    @torch.no_grad()
    def accumulate(self, x, missing=None) -> torch.Tensor:
        """Add this batch's parameter flows to the accumulator; returns the batch's log-likelihoods."""
        x, m = self._inputs(x, missing)
        if self.accumulated == 0:  # a new accumulation: em_step leaves its own batch's flows (or EM scratch) behind
            self.flows.zero_()
        vals = self.executor.forward(self.params, x, m, values="train")
        self.executor.backward(self.params, vals, x, m, self.flows, node_flows=False, values="train")
        self.accumulated += x.shape[0]
        return vals[self.executor.root_row("train")].clone()

    @torch.no_grad()
    def em_update(self, step_size: float = 1.0, pseudocount: float = 0.0) -> None:
        """Apply the EM update from the accumulated flows, then clear them."""
        self.em.apply(self.params, self.flows, step_size, pseudocount)
        self.flows.zero_()
        self.accumulated = 0

    @torch.no_grad()
    def em_step(self, x, missing=None, step_size: float = 1.0, pseudocount: float = 0.0) -> torch.Tensor:
        """One mini-batch EM step on ``x``; returns the batch's log-likelihoods before the update.

        On CUDA with the Triton executor (``use_graphs``) the whole step — forward, backward, EM update — is captured once
        per (batch size, step size, pseudocount) into a CUDA graph and replayed.
        """
        x, m = self._inputs(x, missing)
        if self.use_graphs and self.device_.type == "cuda":
            return self._graph_step(x, m, step_size, pseudocount)
        return self._step(x, m, step_size, pseudocount)

    def _step(self, x: torch.Tensor, m: torch.Tensor, step_size: float, pseudocount: float) -> torch.Tensor:
        tables = self._em_tables(x.shape[0])
        flows = self._step_flows(tables) if tables else self.flows
        flows.zero_()
        vals = self.executor.forward(self.params, x, m, values="train")
        # those tables' counts go straight into their update, in the counting launches (Triton executor only)
        em = {"em": (pseudocount, step_size)} if tables else {}
        self.executor.backward(self.params, vals, x, m, flows, node_flows=False, values="train", **em)
        ll = vals[self.executor.root_row("train")].clone()
        del vals  # the value buffer is free before the update's parameter-sized temporaries exist
        self.em.apply(self.params, flows, step_size, pseudocount)
        return ll

    def _graph_step(self, x: torch.Tensor, m: torch.Tensor, step_size: float, pseudocount: float) -> torch.Tensor:
        # the warm-up runs the same kernels with step 0, which leaves the parameters exactly as they are
        return self._replay(("step", x.shape[0], step_size, pseudocount), x, m,
                            lambda sx, sm: self._step(sx, sm, step_size, pseudocount),
                            warm=lambda sx, sm: self._step(sx, sm, 0.0, pseudocount))

    def _replay(self, key: tuple, x: torch.Tensor, m: torch.Tensor, body, warm=None) -> torch.Tensor:
        """Run ``body(x, m)`` as a CUDA graph captured once per ``key`` (a few forward graphs are kept).

        ``warm`` (default ``body``) runs before the capture to compile the kernels; it must not change state.
        """
        if key not in self._graphs:
            forward_keys = [k for k in self._graphs if k[0] == "forward"]
            if key[0] == "forward" and len(forward_keys) >= MAX_FORWARD_GRAPHS:
                del self._graphs[forward_keys[0]]  # each graph holds a value buffer for its batch size
            self._graphs[key] = self._capture(x, m, body, warm or body)
        graph, sx, sm, out = self._graphs[key]
        sx.copy_(x)
        sm.copy_(m)
        graph.replay()
        return out.clone()

    def _capture(self, x: torch.Tensor, m: torch.Tensor, body, warm):
        """Warm up (compiling kernels) on a side stream, then capture ``body``.

        All graphs of the model share one memory pool: a graph's buffers (values, flows) are freed when its
        capture ends, so the next capture reuses them, and the model holds the largest graph's buffers rather
        than every graph's. That is safe because no graph reads another's buffers: each replay's only output
        is copied out at once (``_replay``), and inputs, parameters and flows live outside the pool.
        """
        sx, sm = x.clone(), m.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                warm(sx, sm)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            out = body(sx, sm)
        return graph, sx, sm, out

    def to_circuit(self) -> Circuit:
        """The IR with the current parameters written into its tensors (concrete float64)."""
        c = self.circuit.copy()
        tables = {"sum": self.params.sum_w, "bernoulli": self.params.bern, "gaussian": self.params.gauss}
        for name, (kind, _, _) in self.plan.tensor_slots.items():
            t = c.tensors[name]
            src = self.params.cat[t.shape[1]] if kind == "categorical" else tables[kind]
            data = self.plan.tensor_values(name, src).detach().double().cpu().numpy().reshape(t.shape)
            c.tensors[name] = Tensor("f64", t.shape, data=data)  # float64 even where the file gave f32
        return c

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write a checkpoint (IR text + tensors + ``meta``) atomically."""
        save_checkpoint(self.to_circuit(), path, meta)

    # --- queries (see pcc.backend.queries; masks: 1 = observed) ---------------------------------------

    def conditional(self, x, evidence_mask, query_mask=None) -> torch.Tensor:
        """``log p(x_Q | x_E)`` per row (``Q`` defaults to the non-evidence variables)."""
        from .queries import conditional
        return conditional(self, x, evidence_mask, query_mask)

    def map(self, x=None, evidence_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(MAP/MPE state ``[B, V]``, its log-probability ``[B]``) by max-product, given optional evidence."""
        from .queries import map_state
        return map_state(self, x, evidence_mask)

    def sample(self, n: int, x=None, evidence_mask=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` ancestral samples ``[n, V]``, optionally conditioned on evidence."""
        from .queries import sample
        return sample(self, n, x, evidence_mask, generator)


def save_checkpoint(circuit: Circuit, path: str | Path, meta: dict | None = None) -> None:
    """One safetensors file: every tensor, the .pcir text and metadata in its header; atomic."""
    text, _ = print_circuit(circuit, sidecar="checkpoint")
    tensors = {k: t.data for k, t in circuit.tensors.items() if t.data is not None}
    header = {"format": CHECKPOINT_FORMAT, "pcc": __version__, "pcir": text, "meta": json.dumps(meta or {})}
    tensorfile.save(path, tensors, header)


def load_checkpoint(path: str | Path) -> tuple[Circuit, dict]:
    """(circuit, meta) of a checkpoint; a damaged or foreign file is a UserError."""
    path = str(path)
    tensors, header = tensorfile.load_with_metadata(path)
    if header.get("format") != CHECKPOINT_FORMAT or "pcir" not in header:
        raise UserError(Diagnostic(Loc(path), f"not a pcc checkpoint (format {header.get('format')!r}, expected {CHECKPOINT_FORMAT!r})"))
    circuit = parse_text(header["pcir"], path, sidecar=tensors)
    try:
        verify(circuit)
        meta = json.loads(header.get("meta", "{}"))
    except Exception as e:
        raise UserError(Diagnostic(Loc(path), f"damaged checkpoint: {e}")) from None
    return circuit, meta
