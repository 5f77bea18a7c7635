"""Rows of a training step's buffers: values and flows in two buffers, or in one arena (pcc.backend.arena), and
where each dense op's forward scratch lies at a batch size. Needs no GPU.

Run: ``python bench/arena_rows.py model.pc ...`` (``.pc`` files), or ``python bench/arena_rows.py --mnist
PATH/t10k-images-idx3-ubyte.gz --config rat64,pd64`` (harness configurations, built by PyJuice and converted as
bench/vs_pyjuice.py does; needs PyJuice). ``--batch``: the batch size at which the dense ops' scratch is listed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pcc
from pcc.backend import codegen
from pcc.backend.arena import joint_maps
from pcc.backend.flowmap import compact_flows, forward_order
from pcc.backend.plan import build_plan
from pcc.backend.valuemap import value_map


def report(title: str, path: Path, batch: int) -> None:
    """Print the rows of both forms and the dense ops' scratch placement for one circuit."""
    plan = build_plan(pcc.optimize(pcc.parse(path)))
    start = time.perf_counter()
    values, flows = value_map(plan, "train"), compact_flows(plan)
    two = time.perf_counter() - start
    start = time.perf_counter()
    arena, _ = joint_maps(plan)
    one = time.perf_counter() - start
    mib = batch * 4 / (1 << 20)
    print(f"{title}: two buffers {values.size:,} + {flows.size:,} = {values.size + flows.size:,} rows; one arena "
          f"{arena.size:,} rows ({arena.size / (values.size + flows.size):.2f}); at batch {batch}: "
          f"{(values.size + flows.size) * mib:.0f} -> {arena.size * mib:.0f} MiB; maps {two:.2f} / {one:.2f} s")
    for key, op in forward_order(plan):
        least = codegen._dense_batch(op) if key in arena.spare else 0
        if least and batch >= least:
            need, at = op.dense.groups * op.dense.C, arena.spare[key]
            where = "new memory" if at + need > arena.size else f"arena rows {at:,}.."
            print(f"  {key}: dense forward scratch {need:,} rows ({need * mib:.0f} MiB): {where}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("files", nargs="*", help=".pc files")
    ap.add_argument("--config", default="", help="comma-separated bench/vs_pyjuice.py configurations")
    ap.add_argument("--mnist", help="MNIST's t10k-images-idx3-ubyte.gz (for --config)")
    ap.add_argument("--batch", type=int, default=8192)
    args = ap.parse_args()
    for name in filter(None, args.config.split(",")):
        from pcc import data as datasets
        from profile_step import _converted  # bench/: this script's folder (needs PyJuice)
        path, title, _ = _converted(name, datasets.load(args.mnist))
        report(title, path, args.batch)
    for file in args.files:
        report(file, Path(file), args.batch)


if __name__ == "__main__":
    main()
