"""Compiled modules: ``pcc compile model.pc -o DIR`` writes an importable package; ``pcc.load(DIR)`` reads it.

Layout of ``DIR``::

    __init__.py          `import DIR; model = DIR.load()` (a thin call into pcc.load)
    header.json          source, pipeline, pcc version, plan digest
    model.pcir           the final layered IR (+ model.pcir.safetensors: its large tensors)
    plan.safetensors     the plan: index tables and parameter tables, ops described in the header
    plan.txt             the plan, printed
    kernels.py           the generated kernel launches (what the Triton executor runs)

Files are written into a temporary folder beside ``DIR`` and moved into place at the end, so a failed
compile never leaves half a module.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from pcc import __version__
from pcc.ir import Circuit, UserError
from pcc.ir import tensorfile
from pcc.ir.diagnostics import Diagnostic, Loc

from .codegen import generate
from .plan import InputOp, Plan, ProdOp, SumOp, TileOrder, build_plan, value_runs

MODULE_FORMAT = "pcc-module-17"  # 2: the backward schedule reads flow-row tables; 3: value-row tables (layouts);
# 4: kernel arguments changed (categorical counts take the table, not a mass buffer; flattened grids);
# 5: dense sum ops store (base, stride) (``SumOp.strided``) instead of a weight-id table; 6: dense kernels
# take groups (base tables, a group grid axis, WALIGN) and categorical-count tiles carry their end row;
# 7: block-sparse sum tensors may be stored by op tiles (``Plan.sum_orders``); 8: by rows of op tiles, and
# training steps compute products of sums again in the backward (``valuemap.recomputed``: new launches, tables);
# 9: inputs (and products of inputs and sums) computed again too; input ops in pieces below their readers;
# categorical counts take a batch-range count (``splits``); 10: categorical inputs that only products read are
# computed by those products in the training and log_prob layouts (``backend.fusion``: new launches, tables)
# 11: a sum op whose parent tiles all read the same child rows has a one-row child table (SAME_CHILDREN)
# 12: products whose children share their flow row run their backward for node flows only (flowmap.shared_products)
# 13: grouped dense ops run their backward in chunks of groups (dense_kernels.group_chunks, codegen.DENSE_SCRATCH)
# 14: chunked dense backwards take each chunk's batch split from codegen.most_splits (imported by the code)
# 15: every backward op clears the flow rows its table names (a training step's values and flows share one
# arena, backend.arena, whose clearing points depend on the value rows too)
# 16: the backward takes ``em`` (a mini-batch EM step's categorical updates in the counting launches,
# codegen.em_tables); generic sum launches may pass TRANS (codegen.SUM_TRANSPOSED_BELOW)
# 17: generic sum launches pass no TRANS (the transposed sum products were removed: no gain on an H100)
_INIT = '''"""A circuit compiled by pcc {version} from {source}. Load it with `load()`."""
from pathlib import Path


def load(device=None, executor="auto"):
    """The runtime model (a torch.nn.Module) of this compiled circuit."""
    import pcc
    return pcc.load(Path(__file__).parent, device=device, executor=executor)
'''


def write_module(circuit: Circuit, out: str | Path, source: str = "", pipeline: str = "") -> Plan:
    """Write the module folder for a layered circuit (atomically replacing ``out``)."""
    from pcc.api import write_ir
    out = Path(out)
    if out.exists() and not (out / "header.json").exists():
        raise UserError(Diagnostic(Loc(str(out)), "exists and is not a pcc module; refusing to overwrite it"))
    plan = build_plan(circuit)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else "."))
    try:
        write_ir(circuit, tmp / "model.pcir")
        save_plan(plan, tmp / "plan.safetensors")
        header = {"format": MODULE_FORMAT, "pcc": __version__, "source": source, "pipeline": pipeline,
                  "plan_digest": plan.digest()}
        (tmp / "header.json").write_text(json.dumps(header, indent=2) + "\n")
        (tmp / "plan.txt").write_text(plan.describe())
        (tmp / "kernels.py").write_text(generate(plan, source=source, pipeline=pipeline))
        (tmp / "__init__.py").write_text(_INIT.format(version=__version__, source=source or "(in memory)"))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan


def load_module_circuit(folder: str | Path) -> Circuit:
    """The layered IR of a module folder."""
    from pcc.api import read_ir
    _header(Path(folder))
    return read_ir(Path(folder) / "model.pcir")


def load_module(folder: str | Path, device=None, executor: str = "auto"):
    """The runtime model of a module folder, using its stored plan and generated kernels."""
    from .runtime import CircuitModel
    folder = Path(folder)
    header = _header(folder)
    plan = load_plan(folder / "plan.safetensors")
    if plan.digest() != header.get("plan_digest"):
        raise UserError(Diagnostic(Loc(str(folder)), "plan.safetensors does not match header.json (damaged module?)"))
    kernels = (folder / "kernels.py").read_text(encoding="utf-8")
    return CircuitModel(load_module_circuit(folder), device, executor=executor, plan=plan, kernels=kernels)


def _header(folder: Path) -> dict:
    try:
        header = json.loads((folder / "header.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(Diagnostic(Loc(str(folder)), f"not a pcc module folder: {e}")) from None
    if header.get("format") != MODULE_FORMAT:
        raise UserError(Diagnostic(Loc(str(folder)), f"unsupported module format {header.get('format')!r}"))
    return header


def save_plan(plan: Plan, path: Path) -> None:
    """Every array of a plan in one safetensors file; scalars and op kinds in its metadata."""
    arrays: dict[str, np.ndarray] = {"sum_w": plan.sum_w, "sum_parent": plan.sum_parent, "bern": plan.bern,
                                     "gauss": plan.gauss, "block_rows": np.asarray(plan.block_rows)}
    arrays.update({f"cat{k}": v for k, v in plan.cat.items()})
    ops = []
    for li, layer in enumerate(plan.layers):
        for oi, op in enumerate(layer):
            key = f"L{li}.{oi}"
            scalars = {}
            for name, v in ((f.name, getattr(op, f.name)) for f in fields(op)):  # not cached properties
                if isinstance(v, np.ndarray):
                    arrays[f"{key}.{name}"] = v
                elif isinstance(v, tuple):  # SumOp.strided: its arrays apart, a template with None in their place
                    arrays.update({f"{key}.{name}.{i}": x for i, x in enumerate(v) if isinstance(x, np.ndarray)})
                    scalars[name] = [None if isinstance(x, np.ndarray) else x for x in v]
                else:
                    scalars[name] = v
            ops.append({"layer": li, "kind": type(op).__name__, **scalars})
    orders = {}
    for name, o in plan.sum_orders.items():  # TileOrder: its tile table apart, the scalars in the metadata
        arrays[f"order.{name}"] = o.tiles
        orders[name] = [o.block, o.n, o.total, o.tile_p, o.tile_c]
    meta = {"num_vars": plan.num_vars, "domains": plan.domains, "rows": plan.rows, "root_row": plan.root_row,
            "sum_groups": plan.sum_groups, "tensor_slots": plan.tensor_slots, "sum_orders": orders,
            "layers": len(plan.layers), "ops": ops}
    tensorfile.save(path, arrays, {"plan": json.dumps(meta)})


def load_plan(path: Path) -> Plan:
    """The Plan saved by :func:`save_plan`."""
    arrays, header = tensorfile.load_with_metadata(path)
    meta = json.loads(header["plan"])
    layers: list[list] = [[] for _ in range(meta["layers"])]
    kinds = {"InputOp": InputOp, "ProdOp": ProdOp, "SumOp": SumOp}
    counts = [0] * meta["layers"]
    for op in meta["ops"]:
        li = op.pop("layer")
        key = f"L{li}.{counts[li]}"
        counts[li] += 1
        parts = {k[len(key) + 1:]: v for k, v in arrays.items() if k.startswith(key + ".")}
        for name, template in [(k, v) for k, v in op.items() if isinstance(v, list)]:
            op[name] = tuple(parts.pop(f"{name}.{i}") if x is None else x for i, x in enumerate(template))
        layers[li].append(kinds[op.pop("kind")](**op, **parts))
    cats = {int(k[3:]): v for k, v in arrays.items() if k.startswith("cat")}
    return Plan(meta["num_vars"], [tuple(d) for d in meta["domains"]], meta["rows"], meta["root_row"], layers,
                [int(r) for r in arrays["block_rows"]], arrays["sum_w"], _runs(arrays["sum_parent"]),
                meta["sum_groups"],
                cats, arrays["bern"], arrays["gauss"], {k: tuple(v) for k, v in meta["tensor_slots"].items()},
                {k: TileOrder(arrays[f"order.{k}"], *v) for k, v in meta["sum_orders"].items()})


def _runs(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A saved ``sum_parent`` (the pad slot last) as the plan's ``sum_runs``."""
    start, length, group = value_runs(parent[:-1])
    return start, length, group.astype(np.int32)
