"""Backward sum-kernel variants on synthetic dense layers: is staging ``G = F exp(s - v)`` once per layer worth it?

``python bench/bwd_sweep.py [tf32x3]`` times, per layer shape, pcc's child-flow (``sum_bwd``) and
parameter-flow (``sum_bwd_params``) kernels against variants that read ``G`` and the per-tile shift ``s``
from a scratch buffer filled by one elementwise kernel (``stage``): ``bwd_g``/``par_g`` (same arithmetic,
fewer loads and no per-pair reduction) and ``bwd_gc`` (also one exponential per child value instead of one
per parent tile: ``exp(C - m) * sum_t exp(m - s_t) W_t^T G_t`` with ``m`` the child tile's maximum);
``par_rows`` is pcc's parameter-flow arithmetic with the parent rows loaded once and a pipelined batch loop.
Each variant's result is checked against pcc's kernel (``err``). (Training steps now stage ``G`` in place, in
the parents' dead flow rows: ``kernels.sum_scale`` and the kernels' ``SCALED`` path; this sweep keeps the
separate buffer it measured first.)
"""
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_sweep import bwd_tables, layer, tables, timeit  # noqa: E402

from pcc.backend import kernels as K  # noqa: E402
from pcc.backend.kernels import CLAMP, INTERPRETED, _dot, _parent_scale, _scale_rows  # noqa: E402


@triton.jit
def stage(vals, flows, out_rows, gbuf, sbuf, B, TP: tl.constexpr, BB: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    g, s, _ = _parent_scale(vals, flows, out_rows, out_rows, t, b, B, TP)
    p = tl.arange(0, TP)
    tl.store(gbuf + (t * TP + p[:, None]) * B + b[None, :], g, mask=b[None, :] < B)
    tl.store(sbuf + t * B + b, s, mask=b < B)


@triton.jit
def bwd_g(vals, flows, sum_w, gbuf, sbuf, wbase, wstride, tile_rows, uses, B,
          TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, KMAX: tl.constexpr, R: tl.constexpr,
          BB: tl.constexpr, PRECISION: tl.constexpr, CHILD_SHIFT: tl.constexpr):
    u = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    inb = b[None, :] < B
    p = tl.arange(0, TP)
    c = tl.load(tile_rows + u * TC + tl.arange(0, TC)).to(tl.int64)
    cv = tl.load(vals + c[:, None] * B + b[None, :], mask=inb, other=float("-inf"))
    m = tl.max(cv, axis=0)
    acc = tl.zeros((TC, BB), dtype=tl.float32)
    for r in tl.static_range(R):
        flat = tl.load(uses + u * R + r).to(tl.int64)
        t, k = flat // KMAX, (flat % KMAX) * TC
        g = tl.load(gbuf + (t * TP + p[:, None]) * B + b[None, :], mask=inb, other=0.0)
        s = tl.load(sbuf + t * B + b, mask=b < B, other=0.0)
        j = t * (KC // TC) + k // TC
        w = tl.load(sum_w + tl.load(wbase + j).to(tl.int64) + p[:, None] * tl.load(wstride + j).to(tl.int64)
                    + tl.arange(0, TC)[None, :])
        if CHILD_SHIFT:
            acc += tl.exp(tl.minimum(m - s, CLAMP))[None, :] * _dot(tl.trans(w), g, PRECISION)
        else:
            acc += tl.exp(tl.minimum(cv - s[None, :], CLAMP)) * _dot(tl.trans(w), g, PRECISION)
    if CHILD_SHIFT:
        acc = acc * tl.exp(cv - m[None, :])
    at = flows + c[:, None] * B + b[None, :]
    tl.store(at, tl.load(at, mask=inb, other=0.0) + acc, mask=inb)


@triton.jit
def _par_block(acc, vals, flows, gbuf, sbuf, rows, c, t, p, b, B, TP: tl.constexpr, PRECISION: tl.constexpr,
               STAGED: tl.constexpr):
    """``acc + G @ exp(C - s)^T`` over batch columns ``b``: ``G, s`` read from the stage's buffers or computed."""
    if STAGED:
        g = tl.load(gbuf + (t * TP + p[:, None]) * B + b[None, :], mask=b[None, :] < B, other=0.0)
        s = tl.load(sbuf + t * B + b, mask=b < B, other=0.0)
    else:
        g, s = _scale_rows(vals, flows, rows, rows, b, B)
    cv = tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf"))
    return acc + _dot(g, tl.trans(tl.exp(tl.minimum(cv - s[None, :], CLAMP))), PRECISION)


@triton.jit
def par_variant(vals, flows, sum_w, wflow, gbuf, sbuf, out_rows, child_rows, wbase, wstride, B,
                TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, BB: tl.constexpr, PRECISION: tl.constexpr,
                STAGES: tl.constexpr, STAGED: tl.constexpr):
    """Parameter flows with a pipelined batch loop: ``STAGED`` reads ``G`` from the stage (``par_g``), else
    pcc's computation with the parent rows loaded once, not per batch block (``par_rows``)."""
    t = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * TC
    p = tl.arange(0, TP)
    c = tl.load(child_rows + t * KC + k + tl.arange(0, TC)).to(tl.int64)
    rows = tl.load(out_rows + t * TP + p).to(tl.int64)
    acc = tl.zeros((TP, TC), dtype=tl.float32)
    if INTERPRETED:  # the interpreter cannot range over a runtime scalar
        b0 = 0
        while b0 < B:
            acc = _par_block(acc, vals, flows, gbuf, sbuf, rows, c, t, p, b0 + tl.arange(0, BB), B, TP, PRECISION, STAGED)
            b0 += BB
    else:
        for b0 in tl.range(0, B, BB, num_stages=STAGES):
            acc = _par_block(acc, vals, flows, gbuf, sbuf, rows, c, t, p, b0 + tl.arange(0, BB), B, TP, PRECISION, STAGED)
    j = t * (KC // TC) + k // TC
    at = tl.load(wbase + j).to(tl.int64) + p[:, None] * tl.load(wstride + j).to(tl.int64) + tl.arange(0, TC)[None, :]
    tl.atomic_add(wflow + at, tl.load(sum_w + at) * acc)


def sweep(prec: str) -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a small check under TRITON_INTERPRET=1
    shapes = [("hmm1024", 1, 1024, 1024, 512), ("hmm256", 1, 256, 256, 512), ("hclt128", 40, 128, 128, 512),
              ("hclt128@8k", 40, 128, 128, 8192)] if dev == "cuda" else [("hmm128", 1, 128, 128, 128)]
    clock = timeit if dev == "cuda" else (lambda fn: 0.0)
    for name, groups, P, C, B in shapes:
        torch.manual_seed(0)
        vals, sum_w, child0, par0 = layer(groups, P, C, B, dev)
        T, out, child, wbase, wstride, wids = tables(groups, P, C, 64, 64, child0, par0, dev)
        nb = triton.cdiv(B, 64)
        K.sum_fwd[(T, nb)](vals, sum_w, out, child, child, wbase, wbase, wstride, B, TP=64, TC=64, KC=C, BB=64,
                           PAD=2, NEG=1, AFFINE=True, PRECISION="ieee", STAGES=4)
        flows = torch.zeros_like(vals)
        flows[par0.reshape(-1).long()] = torch.rand(groups * P, B, device=dev)
        crow = child0.reshape(-1).long()
        tile_rows, uses = bwd_tables(groups, P, C, 64, 64, child0, dev)
        gbuf = torch.empty(T * 64, B, device=dev)
        sbuf = torch.empty(T, B, device=dev)
        print(f"== {name}: {groups}x{P}x{C}, B={B}, {prec}", flush=True)
        R, KMAX = P // 64, C // 64
        nw = 8 if R >= 8 else 4
        runs = {
            "sum_bwd": lambda: K.sum_bwd[(len(tile_rows), nb)](
                vals, flows, sum_w, out, out, wbase, wbase, wstride, tile_rows, tile_rows, tile_rows, uses, flows, flows, B, TP=64, TC=64,
                KC=C, KMAX=KMAX, R=R, BB=64, PAD=2, NEG=1, ATOMIC=False, AFFINE=True, PRECISION=prec, OVERWRITE=False,
                SCALED=False, num_warps=nw),
            "stage": lambda: stage[(T, nb)](vals, flows, out, gbuf, sbuf, B, TP=64, BB=64),
            "bwd_g": lambda: bwd_g[(len(tile_rows), nb)](
                vals, flows, sum_w, gbuf, sbuf, wbase, wstride, tile_rows, uses, B, TP=64, TC=64, KC=C, KMAX=KMAX,
                R=R, BB=64, PRECISION=prec, CHILD_SHIFT=False, num_warps=nw),
            "bwd_gc": lambda: bwd_g[(len(tile_rows), nb)](
                vals, flows, sum_w, gbuf, sbuf, wbase, wstride, tile_rows, uses, B, TP=64, TC=64, KC=C, KMAX=KMAX,
                R=R, BB=64, PRECISION=prec, CHILD_SHIFT=True, num_warps=nw),
        }
        ref = None
        for key, fn in runs.items():
            flows[crow] = 0
            fn()
            us = clock(fn)
            if key == "stage":
                print(f"  {key:10s} {us:8.1f} us", flush=True)
                continue
            flows[crow] = 0
            fn()
            got = flows[crow].clone()
            ref = got if ref is None else ref
            print(f"  {key:10s} {us:8.1f} us  err {float((got - ref).abs().max() / ref.abs().max()):.1e}", flush=True)
        wflow = torch.zeros_like(sum_w)
        pruns = {"params": lambda: K.sum_bwd_params[(T, KMAX, 1)](
            vals, flows, sum_w, wflow, out, out, child, child, wbase, wbase, wstride, B, 1, flows, flows, TP=64, TC=64, KC=C, BB=64,
            PAD=2, NEG=1, AFFINE=True, PRECISION=prec, SCALED=False)}
        for st in (1, 2, 3):
            for nw in (4, 8):
                pruns[f"par_rows st{st} w{nw}"] = lambda st=st, nw=nw: par_variant[(T, KMAX)](
                    vals, flows, sum_w, wflow, gbuf, sbuf, out, child, wbase, wstride, B, TP=64, TC=64, KC=C, BB=64,
                    PRECISION=prec, STAGES=st, STAGED=False, num_warps=nw)
            for bb in (32, 64):
                pruns[f"par_g bb{bb} st{st}"] = lambda st=st, bb=bb: par_variant[(T, KMAX)](
                    vals, flows, sum_w, wflow, gbuf, sbuf, out, child, wbase, wstride, B, TP=64, TC=64, KC=C, BB=bb,
                    PRECISION=prec, STAGES=st, STAGED=True)
        ref = None
        for key, fn in pruns.items():
            us = clock(fn)
            wflow.zero_()
            fn()
            got = wflow.clone()
            ref = got if ref is None else ref
            print(f"  {key:16s} {us:8.1f} us  err {float((got - ref).abs().max() / ref.abs().max()):.1e}", flush=True)


if __name__ == "__main__":
    sweep(sys.argv[1] if len(sys.argv) > 1 else "tf32x3")
