"""Categorical EM-count kernel variants on a real model's flows (pcc's ``input_bwd_cat`` and a variant).

``python bench/cat_sweep.py --mnist PATH/t10k-images-idx3-ubyte.gz --model hclt128 [--batch 8192]`` runs one forward and
backward pass of the model (batch 512 by default), then times the categorical-count launch under tile shapes
(rows ``BN``, categories ``KB``, batch block ``BB``, warps), product schemes (``split=2``: the one-hot is
exact in tf32, so the flows are split ``hi + lo`` into two tf32 products, pcc's scheme; ``split=3``: flows in
three bfloat16 parts, three bf16 products) and grid orders (``k-slow``: a tile's category blocks far apart in
the grid, pcc's order before 2026-11-25; ``k-fast``: adjacent, so they share the tile's flows in L2).
Each variant's counts are checked against pcc's launch (``err``: max abs difference / max count).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fill_sweep import build  # noqa: E402
from kernel_sweep import timeit  # noqa: E402

from pcc import data as datasets  # noqa: E402
from pcc.backend import codegen  # noqa: E402
from pcc.backend import kernels as K  # noqa: E402
from pcc.backend.kernels import _dot  # noqa: E402
from pcc.backend.params import Flows  # noqa: E402
from pcc.backend.plan import InputOp  # noqa: E402


@triton.jit
def cat_var(flows, x, miss, var, prow, tiles, stats, start, n, B,
            K: tl.constexpr, BN: tl.constexpr, KB: tl.constexpr, BB: tl.constexpr, PRECISION: tl.constexpr,
            SPLIT: tl.constexpr, KBLOCKS: tl.constexpr, KFAST: tl.constexpr):
    """``SPLIT``: 0 one product at ``PRECISION``, 2 flows split hi + lo in two tf32 products, 3 flows split in three
    bfloat16 parts (8 bits each) in three bf16 products. ``KFAST``: the category block is the fast grid axis."""
    if KFAST:
        tile, kblock = tl.program_id(0) // KBLOCKS, tl.program_id(0) % KBLOCKS
    else:
        tile, kblock = tl.program_id(0) % (tl.num_programs(0) // KBLOCKS), tl.program_id(0) // (tl.num_programs(0) // KBLOCKS)
    i0 = tl.load(tiles + tile)
    i = i0 + tl.arange(0, BN)
    v = tl.load(var + i0)
    rows_ok = (i < n) & (tl.load(var + i, mask=i < n, other=-1) == v)
    k = kblock * KB + tl.arange(0, KB)
    acc = tl.zeros((BN, KB), dtype=tl.float32)
    b0 = 0
    while b0 < B:
        b = b0 + tl.arange(0, BB)
        inb = b < B
        f = tl.load(flows + (start + i[:, None]).to(tl.int64) * B + b[None, :], mask=rows_ok[:, None] & inb[None, :], other=0.0)
        xv = tl.load(x + v.to(tl.int64) * B + b, mask=inb, other=-1.0).to(tl.int32)
        gone = tl.load(miss + v.to(tl.int64) * B + b, mask=inb, other=1) != 0
        if SPLIT == 2:
            hot = ((xv[:, None] == k[None, :]) & ~gone[:, None]).to(tl.float32)
            hi = (f.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)  # f's top 11 mantissa bits
            acc += tl.dot(hi, hot, input_precision="tf32") + tl.dot(f - hi, hot, input_precision="tf32")
        elif SPLIT == 3:
            hot = ((xv[:, None] == k[None, :]) & ~gone[:, None]).to(tl.bfloat16)
            h1 = f.to(tl.bfloat16)
            r1 = f - h1.to(tl.float32)
            h2 = r1.to(tl.bfloat16)
            h3 = (r1 - h2.to(tl.float32)).to(tl.bfloat16)
            acc += tl.dot(h1, hot, out_dtype=tl.float32) + tl.dot(h2, hot, out_dtype=tl.float32) + tl.dot(h3, hot, out_dtype=tl.float32)
        else:
            hot = ((xv[:, None] == k[None, :]) & ~gone[:, None]).to(tl.float32)
            acc += _dot(f, hot, PRECISION)
        b0 += BB
    r = tl.load(prow + i, mask=rows_ok, other=0).to(tl.int64)
    tl.atomic_add(stats + r[:, None] * K + k[None, :], acc, mask=rows_ok[:, None] & (k[None, :] < K) & (acc != 0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--model", default="hclt128")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--precision", default="tf32x3")
    args = ap.parse_args()
    model, x = build(args.model, datasets.load(args.mnist))
    xb = torch.as_tensor(x[:args.batch], device="cuda", dtype=torch.float32)
    miss = torch.zeros_like(xb, dtype=torch.int8)
    ex = model.executor
    vals = ex.forward(model.params, xb, miss)
    node = ex.backward(model.params, vals, xb, miss, Flows.zeros_like(model.params))
    li, oi, op = next((li, oi, op) for li, ops in enumerate(model.plan.layers) for oi, op in enumerate(ops)
                      if isinstance(op, InputOp) and op.dist == "categorical")
    key, B = f"L{li}.{oi}", xb.shape[0]
    xt, mt = ex._inputs(xb, miss)  # the kernels read the data transposed, [V, B]
    var, prow = ex.t[f"{key}.var"], ex.t[f"{key}.prow"]
    stats = model.flows.cat[op.k]
    tiles0 = torch.as_tensor(op.var_tiles(codegen.cat_rows(op)), device="cuda", dtype=torch.int32)
    frows = torch.arange(op.start, op.start + op.n, device="cuda", dtype=torch.int32)  # node flows: own rows
    kb0 = -(-op.k // 64)
    ref_fn = lambda: K.input_bwd_cat[(len(tiles0) * kb0,)](  # noqa: E731
        node, frows, xt, mt, var, prow, tiles0, stats, model.params.cat[op.k], op.n, B, 1, K=op.k, BN=codegen.cat_rows(op),
        KB=64, BB=codegen.CAT_BATCH, PRECISION=args.precision, KBLOCKS=kb0,
        TRANS=codegen.cat_rows(op) < codegen.CAT_TRANSPOSED_BELOW, STAGES=codegen.CAT_STAGES)
    stats.zero_()
    ref_fn()
    ref = stats.clone()
    print(f"{args.model}: {op.n} categorical rows, K={op.k}, batch {B}; pcc's launch {timeit(ref_fn):.1f} us", flush=True)
    for bn, kb, bb, nw, split, fast in VARIANTS:
        tiles = torch.as_tensor(op.var_tiles(bn)[:, 0].copy(), device="cuda", dtype=torch.int32)  # first rows
        kbl = -(-op.k // kb)
        fn = lambda: cat_var[(len(tiles) * kbl,)](  # noqa: E731
            node, xt, mt, var, prow, tiles, stats, op.start, op.n, B, K=op.k, BN=bn, KB=kb, BB=bb,
            PRECISION=args.precision, SPLIT=split, KBLOCKS=kbl, KFAST=fast, num_warps=nw)
        try:
            stats.zero_()
            fn()
            err = float((stats - ref).abs().max() / ref.abs().max())
            print(f"  BN={bn:3d} KB={kb:3d} BB={bb:3d} w={nw} split={split} {'k-fast' if fast else 'k-slow'}: "
                  f"{timeit(fn):8.1f} us  err {err:.1e}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"  BN={bn} KB={kb} BB={bb} w={nw} split={split} fast={fast}: FAILED {type(e).__name__}: {str(e)[:160]}",
                  flush=True)


# (rows BN, categories KB, batch block BB, warps, split, category block fastest): the old order, then new ones
VARIANTS = [(64, 64, 32, 4, 2, False), (64, 64, 32, 4, 2, True), (64, 64, 32, 4, 3, True), (64, 64, 64, 4, 3, True),
            (64, 128, 32, 8, 2, True), (64, 128, 32, 8, 3, True), (64, 64, 64, 4, 2, True), (32, 64, 32, 4, 2, True),
            (64, 256, 32, 8, 3, True), (64, 128, 64, 8, 3, True), (64, 32, 32, 4, 2, True), (64, 32, 64, 4, 3, True)]


if __name__ == "__main__":
    main()
