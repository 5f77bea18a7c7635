"""Tiles of the dense sum kernels (pcc.backend.dense_kernels), timed on synthetic dense layers.

``python bench/dense_sweep.py [--shapes 4096x512,1024x512,512x4096x40] [--precision tf32x3]``: for ``G``
groups (the optional third number; 1: an HMM's transitions, more: an HCLT layer, one group per tree node) of
an ``L x L`` dense sum at batch ``B``, each kernel (forward product, child flows, parameter flows) under each
tile variant ``(BM, BN, BK, warps, stages)``: the median of 20 launches, the fp32-equivalent rate
(2 G L^2 B flops), and the largest difference from the first variant's output (every variant computes the
same thing).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton

from pcc.backend import codegen
from pcc.backend import dense_kernels as D

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_pyjuice import median_ms  # noqa: E402

FIRST = 3  # rows 0..2 are ZERO, NEG, PAD as in a plan
VARIANTS = [(128, 64, 32, 4, 4), (64, 64, 32, 4, 4), (128, 128, 32, 8, 3), (128, 64, 32, 8, 4), (64, 128, 32, 4, 4),
            (128, 64, 64, 8, 3), (128, 128, 32, 4, 3), (64, 64, 64, 4, 3), (64, 32, 64, 4, 3), (32, 64, 64, 4, 3),
            (64, 64, 128, 4, 3)]


def layer(L: int, B: int, G: int):
    gen = torch.Generator(device="cuda").manual_seed(0)
    vals = torch.randn(FIRST + 2 * G * L, B, device="cuda", generator=gen) - 5
    w = torch.rand(G, L, L, device="cuda", generator=gen)
    w = (w / w.sum(2, keepdim=True)).reshape(-1).contiguous()
    base = torch.arange(G, device="cuda", dtype=torch.int64) * L * L
    child = (FIRST + torch.arange(G * L, device="cuda")).to(torch.int32)
    out = (FIRST + G * L + torch.arange(G * L, device="cuda")).to(torch.int32)
    kids = vals[FIRST:FIRST + G * L].reshape(G, L, B)
    vt = kids.transpose(1, 2).contiguous()  # the child values transposed, as dense_shift writes them
    top = kids.max(1).values.contiguous()
    gt = torch.rand(G, B, L, device="cuda", generator=gen)  # G transposed, as dense_scale writes it
    shift = vals[FIRST + G * L:].reshape(G, L, B).min(1).values.contiguous()
    return vals, w, base, child, out, vt, top, gt, shift


def kernels(L: int, B: int, G: int, precision: str):
    """``({name: run(variant) -> output}, reset)`` over one layer's buffers (the parameter flows accumulate
    over launches: ``reset`` clears them before the launch whose output is compared)."""
    vals, w, base, child, out, vt, top, gt, shift = layer(L, B, G)
    flows = torch.zeros_like(vals)
    wflow = torch.zeros_like(w)

    def fwd(v):
        bm, bn, bk, warps, stages = v
        D.dense_fwd[(triton.cdiv(L, bm) * triton.cdiv(B, bn), G)](
            vals, w, out, vt, top, base, L, B, P=L, C=L, BM=bm, BN=bn, BK=bk, PRECISION=precision,
            STAGES=stages, GROUP=8, WALIGN=16, num_warps=warps)
        return vals[FIRST + G * L:]

    def bwd(v):
        bm, bn, bk, warps, stages = v
        D.dense_bwd[(triton.cdiv(L, bm) * triton.cdiv(B, bn), G)](
            vals, flows, w, gt, shift, child, child, child, base, L, B, P=L, C=L, BM=bm, BN=bn, BK=bk,
            PRECISION=precision, STAGES=stages, GROUP=8, WALIGN=16, OVERWRITE=True, num_warps=warps)
        return flows[FIRST:FIRST + G * L]

    def params(v):
        bm, bn, bk, warps, stages = v
        programs = triton.cdiv(L, bm) * triton.cdiv(L, bn)
        split = max(1, min(triton.cdiv(B, bk) // codegen.SPLIT_BLOCKS, codegen.most_splits(programs * G)))
        D.dense_params[(programs, split, G)](
            vals, gt, shift, w, wflow, child, child, base, L, B, P=L, C=L, STEPS=triton.cdiv(triton.cdiv(B, bk), split),
            BM=bm, BN=bn, BK=bk, PRECISION=precision, STAGES=stages, GROUP=8, WALIGN=16, ATOMIC=split > 1, num_warps=warps)
        return wflow
    return {"fwd": fwd, "bwd": bwd, "params": params}, wflow.zero_


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="4096x512,1024x512,1024x4096,512x4096x40,256x512x76")
    ap.add_argument("--precision", default="tf32x3")
    ap.add_argument("--kernels", default="fwd,bwd,params")
    args = ap.parse_args()
    for shape in args.shapes.split(","):
        L, B, G = ([int(v) for v in shape.split("x")] + [1])[:3]
        flops = 2 * G * L * L * B
        runs, reset = kernels(L, B, G, args.precision)
        for name, run in runs.items():
            if name not in args.kernels.split(","):
                continue
            print(f"L={L} B={B} G={G} {name} ({args.precision})")
            ref = None
            for v in VARIANTS:
                try:
                    ms = median_ms(lambda: run(v), 20, warmup=1)
                except Exception as e:  # out of shared memory etc.
                    print(f"  {v}: {type(e).__name__}")
                    continue
                reset()
                got = run(v).clone()
                ref = got if ref is None else ref
                err = float(((got - ref).abs() / ref.abs().clamp_min(1e-30)).max())
                print(f"  BM={v[0]:3d} BN={v[1]:3d} BK={v[2]:2d} w{v[3]} s{v[4]}: {ms * 1e3:8.1f} us "
                      f"{flops / ms / 1e9:6.1f} TFLOP/s  rel diff {err:.1e}")


if __name__ == "__main__":
    main()
