"""The Triton executor: runs the launch schedule that :mod:`pcc.backend.codegen` generates for a plan.

Same interface as :class:`pcc.backend.torch_exec.TorchExecutor` (float32). The generated source is
compiled once per executor (or read from a compiled module's ``kernels.py``), so what runs is the code a
user can read. On CUDA the runtime captures whole training steps into CUDA graphs; on a CPU machine the
same kernels run in Triton's interpreter (``TRITON_INTERPRET=1``), which is how CI checks them.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import triton

from . import arena
from .arena import joint_maps
from .codegen import DOT_PRECISION, em_tables, flow_tables, generate, tables, value_tables
from .flowmap import compact_flows, full_flows
from .fusion import fused_inputs, fusing
from .params import Flows, Params
from .plan import FIRST_ROW, NEG, PAD, ZERO, Plan
from .valuemap import LAYOUTS, level, schedule, value_map


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# programmatic dependent launch (Hopper and later; kernels.wait_for_prior_grid): how each launch of a step may
# start its programs while the launch before it finishes. 0: never. 1 (PDL_WAIT): a launch's programs start as
# the previous launch's programs exit. 2 (PDL_ONE_WAVE): as 1, but a launch of at most one program per SM lets
# the next launch start at once (its programs then wait on free SMs). 3 (PDL_EARLY): every launch lets the next
# start at once. Mode 1 by default: on an H100, in paired A/Bs, it took 3-4% off the launch-bound steps (HCLT 64,
# 128 and 256 at 512) and left the rest within 1% (PD 32 at 512, PD 64 at 8192, HMM 4096 at 512); mode 3 slowed
# HMM 1024 by 15% (docs/benchmarks.md, fourteenth and fifteenth rounds). Devices without PDL run mode 0.
PDL_OFF, PDL_WAIT, PDL_ONE_WAVE, PDL_EARLY = 0, 1, 2, 3
PDL = PDL_WAIT


def pdl_capable(device) -> bool:
    """True where launches can overlap their start-up with the previous launch: CUDA, compute capability 9+."""
    device = torch.device(device)
    return device.type == "cuda" and not interpreting() and torch.cuda.get_device_capability(device)[0] >= 9


class PDLKernels:
    """A kernel module (``kernels``, ``dense_kernels``) whose launches carry programmatic dependent launch:
    ``module.kernel[grid](...)`` gets Triton's ``launch_pdl=True`` and the kernel's ``PDL`` constexpr
    (:func:`~.kernels.wait_for_prior_grid`): 1, wait for the previous launch first; 2, also let the next launch
    start at once, which ``mode`` :data:`PDL_EARLY` does for every launch and :data:`PDL_ONE_WAVE` for grids of at
    most ``sms`` programs. Everything else in the module is passed through. Every kernel the generated code
    launches takes ``PDL``, so one that did not would fail loudly, not race."""

    def __init__(self, module, mode: int = PDL_EARLY, sms: int = 0):
        self._module, self._kernels, self._mode, self._sms = module, {}, mode, sms

    def __getattr__(self, name: str):
        found = getattr(self._module, name)
        if not isinstance(found, triton.runtime.jit.KernelInterface):
            return found
        if name not in self._kernels:
            self._kernels[name] = _PDLKernel(found, self._mode, self._sms)
        return self._kernels[name]


class _PDLKernel:
    def __init__(self, kernel, mode: int, sms: int):
        self._kernel, self._mode, self._sms = kernel, mode, sms

    def _trigger(self, grid) -> int:
        """The kernel's ``PDL`` for this grid: 2 where the next launch may start at once, else 1."""
        if self._mode == PDL_EARLY:
            return 2
        one_wave = self._mode == PDL_ONE_WAVE and isinstance(grid, tuple) and math.prod(grid) <= self._sms
        return 2 if one_wave else 1

    def __getitem__(self, grid):
        launch, pdl = self._kernel[grid], self._trigger(grid)
        return lambda *args, **kwargs: launch(*args, PDL=pdl, launch_pdl=True, **kwargs)


TABLE_ALIGN = 16  # elements (64 bytes): every table starts 16-byte aligned, as Triton's pointer specialisation assumes


def upload_tables(arrays: dict[str, object], device) -> dict[str, torch.Tensor]:
    """Every index table as a contiguous int32 tensor of its own shape on ``device``, sent in one copy.

    The tables are packed into one host buffer (each starting at a multiple of :data:`TABLE_ALIGN`
    elements) that goes to the device at once; the returned tensors are views of that one buffer. A model
    has hundreds to thousands of tables, and one host-to-device copy each cost a synchronising transfer
    apiece. Values are converted to int32 as ``torch.as_tensor(..., dtype=torch.int32)`` does. One array
    object given under several names is sent once, and its tensors are one view.
    """
    flat = {k: np.asarray(v).reshape(-1) for k, v in arrays.items()}
    starts, total, seen = {}, 0, {}
    for k, a in flat.items():
        if id(arrays[k]) in seen:
            starts[k] = starts[seen[id(arrays[k])]]
            continue
        seen[id(arrays[k])] = k
        starts[k] = total
        total += -(-len(a) // TABLE_ALIGN) * TABLE_ALIGN
    host = np.zeros(max(total, 1), dtype=np.int32)
    for k in seen.values():  # each array once
        a = flat[k]
        host[starts[k]:starts[k] + len(a)] = a  # numpy's unsafe cast: int64 wraps to int32 as torch's does
    buffer = torch.from_numpy(host).to(device)
    return {k: buffer[starts[k]:starts[k] + len(a)].view(np.shape(arrays[k])) for k, a in flat.items()}


class TritonExecutor:
    """Evaluates a :class:`Plan` with Triton kernels; ``precision`` is the ``tl.dot`` input precision."""

    capturable = True  # fixed shapes, no host synchronisation: a whole step can be a CUDA graph
    fused_em = True  # the EM update runs as Triton kernels too (pcc.backend.em_kernels)

    def __init__(self, plan: Plan, device, dtype=torch.float32, precision: str = DOT_PRECISION, source: str | None = None,
                 fill: int | None = None, recompute: bool | str = True, fuse_inputs: bool | None = None):
        if dtype != torch.float32:
            raise ValueError("the Triton executor computes in float32")
        if torch.device(device).type != "cuda" and not interpreting():
            raise RuntimeError("the Triton executor needs CUDA (or TRITON_INTERPRET=1 on a CPU)")
        if source is not None and fuse_inputs:
            raise ValueError("fused inputs need kernels generated with them, not a module's kernels.py")
        self.plan, self.device, self.dtype = plan, device, dtype
        # inputs fused into products (pcc.backend.fusion): layouts and code agree; a module's kernels.py was
        # generated without fusion, whatever fusion.FUSE says now
        with fusing(False if source is not None else fuse_inputs):
            self.fuse_inputs = bool(fused_inputs(plan))
            self._build(plan, device, precision, source, fill, recompute)

    def _build(self, plan: Plan, device, precision: str, source: str | None, fill: int | None,
               recompute: bool | str) -> None:
        """The generated code, the layouts' value maps, the flow maps and every index table on ``device``."""
        again = schedule(plan)  # what the generated code may compute again: the same for every layout's tables
        known = again[0] if level(recompute) == "all" else None  # schedule() has level "all" worked out already
        # a training step's values and flows share one arena (pcc.backend.arena): its value and flow maps together
        self.joint = arena.JOINT
        joint = joint_maps(plan, recompute, known) if self.joint else None
        self.compact = joint[1] if joint else compact_flows(plan)
        self.source = source or generate(plan, precision, fill=fill, flow_map=self.compact, plan_schedule=again)
        namespace: dict = {}
        exec(compile(self.source, "<pcc generated kernels>", "exec"), namespace)  # our own generated code
        # categorical tables a mini-batch EM step updates in the backward (codegen.em_tables), as the code has them
        self.em_tables = frozenset(k for k in em_tables(plan) if f"table {k} updated here" in self.source)
        self.pdl = PDL if PDL and pdl_capable(device) else PDL_OFF
        if self.pdl:  # the generated functions read K and D from this namespace when they run
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            namespace["K"], namespace["D"] = (PDLKernels(namespace[m], PDL, sms) for m in "KD")
        self.schedule = namespace
        # value rows per layout (pcc.backend.valuemap) and flow rows: each node's own (node flows) and the compact
        # rows of a training step; the tables repeat row numbers (a few int32 per node, next to B floats per node)
        # recompute (valuemap.level): what training steps compute again in the backward instead of keeping
        self.values = {layout: joint[0] if joint and layout == "train" else value_map(plan, layout, recompute, known)
                       for layout in LAYOUTS}
        arrays = {"shared:" + k: v for k, v in tables(plan).items()}
        for layout, vmap in self.values.items():
            arrays.update({f"{layout}:{k}": v for k, v in value_tables(plan, vmap, again).items()})
        for name, fmap in (("own:", full_flows(plan)), ("compact:", self.compact)):
            arrays.update({name + k: v for k, v in flow_tables(plan, fmap).items()})
        up = upload_tables(arrays, device)
        part = lambda n: {k[len(n):]: v for k, v in up.items() if k.startswith(n)}  # noqa: E731
        shared = part("shared:")
        self.tv = {layout: {**shared, **part(layout + ":")} for layout in LAYOUTS}
        for layout, vmap in self.values.items():  # Python ints, not tables: the generated code slices with them
            self.tv[layout].update({f"{key}.spare": at for key, at in vmap.spare.items()})
        self.t = self.tv["all"]
        self.f = {True: part("own:"), False: part("compact:")}

    def root_row(self, values: str = "all") -> int:
        """The root's row in a value buffer of layout ``values``."""
        return int(self.values[values].rows[self.plan.root_row])

    def _blocks(self, batch: int) -> tuple[int, int]:
        bb = max(16, min(64, triton.next_power_of_2(batch)))
        return (64 if interpreting() else 32), bb

    def _inputs(self, x: torch.Tensor, missing: torch.Tensor):
        """The data and mask transposed to ``[V, B]`` (the kernels read a variable's samples contiguously)."""
        return x.to(torch.float32).t().contiguous(), missing.to(torch.int8).t().contiguous()

    def forward(self, p: Params, x: torch.Tensor, missing: torch.Tensor, values: str = "all") -> torch.Tensor:
        """Log-values ``[rows, batch]``; see TorchExecutor.forward. ``values``: the layout
        (:mod:`~.valuemap`): ``"all"`` every node's row (``plan.rows`` rows), ``"train"`` those a training
        step's backward reads, ``"root"`` just the root's value at the end (its row: :meth:`root_row`)."""
        xf, mi = self._inputs(x, missing)
        vals = self._uninitialised(self.values[values].size, xf)  # a training step's arena: its flows too
        vals[ZERO], vals[NEG], vals[PAD] = 0.0, -math.inf, 0.0
        self.schedule["forward"](vals, xf, mi, self.tv[values], p, x.shape[0], *self._blocks(x.shape[0]))
        return vals

    @staticmethod
    def _uninitialised(rows: int, like: torch.Tensor) -> torch.Tensor:
        """A ``[rows, batch]`` buffer like ``like`` (``[., batch]`` float32) whose contents are garbage (tests fill
        it with NaN to prove nothing reads a row before it is written)."""
        return like.new_empty(rows, like.shape[1])

    def backward(self, p: Params, vals: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, flows: Flows,
                 node_flows: bool = True, values: str = "all",
                 em: tuple[float, float] | None = None) -> torch.Tensor | None:
        """Node flows ``[rows, batch]``; parameter flows are added into ``flows``. ``vals`` come from
        ``forward`` with the same ``values`` layout (``"all"`` or ``"train"``).

        ``node_flows=False`` (training) keeps each flow only while it is alive, in a buffer of
        ``self.compact.size`` rows (:func:`~.flowmap.compact_flows`), and returns None.
        ``em`` (training only): ``(pseudocount, step)`` of a mini-batch EM step; the categorical tables of
        :attr:`em_tables` then get their update in the backward, and ``flows`` need not hold counts of them.
        """
        if em is not None and node_flows:
            raise ValueError("an EM step's update in the backward needs node_flows=False")
        if values == "root" or vals.shape[0] != self.values[values].size:
            raise ValueError(f"backward needs the values of forward(values={values!r}), got {vals.shape[0]} rows")
        xf, mi = self._inputs(x, missing)
        fmap = self.compact if not node_flows else None
        if fmap:  # compact rows are cleared or overwritten before their first write (flowmap): no memset
            # a training step's flows are its arena's rows from FIRST_ROW on (pcc.backend.arena)
            f = vals[FIRST_ROW:] if self.joint and values == "train" else self._uninitialised(fmap.size, vals)
            f[ZERO], f[NEG], f[PAD] = 0.0, 0.0, 0.0
        else:
            f = vals.new_zeros(self.plan.rows, vals.shape[1])
        root = int(fmap.rows[self.plan.root_row]) if fmap else self.plan.root_row
        f[root] = torch.isfinite(vals[self.root_row(values)]).to(f.dtype)  # p(x) = 0: no flow
        self.schedule["backward"](vals, f, xf, mi, self.tv[values], self.f[node_flows], p, flows, x.shape[0],
                                  *self._blocks(x.shape[0]), scaled=not node_flows,
                                  em=None if em is None else (float(em[0]), float(em[1])))
        if not node_flows:
            return None
        f[ZERO], f[NEG], f[PAD] = 0.0, 0.0, 0.0
        return f
