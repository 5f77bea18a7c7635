"""Sum-kernel variants timed on synthetic dense layers (HMM-1024-like and HCLT-128-like) on one GPU.

The experiment behind the sum kernels' weight addressing and loop pipelining (docs/benchmarks.md):
``python bench/kernel_sweep.py tf32x3`` times forward variants (``cur``: pcc's kernel on its gather path;
``gat``/``aff``: a pipelined loop over child tiles with gathered / computed weight addresses; ``two``: a max
pass then an exp pass), ``python bench/kernel_sweep.py tf32x3 bwd`` the child-flow and parameter-flow
kernels with gathered or computed addresses, warps and batch splits. Each variant's output is checked
against the first one's (``err``). Results: ``bench/results/kernel_sweep_*``.
"""
import itertools
import sys
import time

import torch
import triton
import triton.language as tl

from pcc.backend import kernels as K
from pcc.backend.kernels import _dot


@triton.jit
def _step(acc, m, vals, sum_w, child_rows, wbase, wstride, t, k, b, p, B,
          TC: tl.constexpr, KC: tl.constexpr, PRECISION: tl.constexpr, GATHER: tl.constexpr):
    c = tl.load(child_rows + t * KC + k + tl.arange(0, TC)).to(tl.int64)
    cv = tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf"))
    m_new = tl.maximum(m, tl.max(cv, axis=0))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    acc = acc * tl.where(m == float("-inf"), 0.0, tl.exp(m - shift))[None, :]
    if not GATHER:
        kt = k // TC
        base = tl.load(wbase + t * (KC // TC) + kt).to(tl.int64)
        stride = tl.load(wstride + t * (KC // TC) + kt)
        w = tl.load(sum_w + base + p[:, None] * stride + tl.arange(0, TC)[None, :])
    else:
        wi = tl.load(wbase + (t * p.shape[0] + p[:, None]) * KC + k + tl.arange(0, TC)[None, :])
        w = tl.load(sum_w + wi)
    acc += _dot(w, tl.exp(cv - shift[None, :]), PRECISION)
    return acc, m_new


@triton.jit
def fwd_affine(vals, sum_w, out_rows, child_rows, wbase, wstride, B,
               TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, BB: tl.constexpr, PAD: tl.constexpr,
               PRECISION: tl.constexpr, STAGES: tl.constexpr, GATHER: tl.constexpr = False):
    t = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    p = tl.arange(0, TP)
    m = tl.full((BB,), float("-inf"), dtype=tl.float32)
    acc = tl.zeros((TP, BB), dtype=tl.float32)
    if STAGES == 0:
        for k in tl.static_range(0, KC, TC):
            acc, m = _step(acc, m, vals, sum_w, child_rows, wbase, wstride, t, k, b, p, B, TC, KC, PRECISION, GATHER)
    else:
        for k in tl.range(0, KC, TC, num_stages=STAGES):
            acc, m = _step(acc, m, vals, sum_w, child_rows, wbase, wstride, t, k, b, p, B, TC, KC, PRECISION, GATHER)
    rows = tl.load(out_rows + t * TP + p).to(tl.int64)
    out = tl.log(acc) + tl.where(m == float("-inf"), 0.0, m)[None, :]
    tl.store(vals + rows[:, None] * B + b[None, :], out, mask=(rows[:, None] != PAD) & (b[None, :] < B))


@triton.jit
def fwd_twopass(vals, sum_w, out_rows, child_rows, wbase, wstride, B,
                TP: tl.constexpr, TC: tl.constexpr, KC: tl.constexpr, BB: tl.constexpr, PAD: tl.constexpr,
                PRECISION: tl.constexpr, STAGES: tl.constexpr):
    """max first (one pass over the children), then exp/dot without rescaling."""
    t = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1) * BB + tl.arange(0, BB)
    p = tl.arange(0, TP)
    m = tl.full((BB,), float("-inf"), dtype=tl.float32)
    for k in tl.range(0, KC, TC, num_stages=STAGES):
        c = tl.load(child_rows + t * KC + k + tl.arange(0, TC)).to(tl.int64)
        cv = tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf"))
        m = tl.maximum(m, tl.max(cv, axis=0))
    shift = tl.where(m == float("-inf"), 0.0, m)
    acc = tl.zeros((TP, BB), dtype=tl.float32)
    for k in tl.range(0, KC, TC, num_stages=STAGES):
        c = tl.load(child_rows + t * KC + k + tl.arange(0, TC)).to(tl.int64)
        cv = tl.load(vals + c[:, None] * B + b[None, :], mask=b[None, :] < B, other=float("-inf"))
        kt = k // TC
        base = tl.load(wbase + t * (KC // TC) + kt).to(tl.int64)
        stride = tl.load(wstride + t * (KC // TC) + kt)
        w = tl.load(sum_w + base + p[:, None] * stride + tl.arange(0, TC)[None, :])
        acc += _dot(w, tl.exp(cv - shift[None, :]), PRECISION)
    rows = tl.load(out_rows + t * TP + p).to(tl.int64)
    out = tl.log(acc) + shift[None, :]
    tl.store(vals + rows[:, None] * B + b[None, :], out, mask=(rows[:, None] != PAD) & (b[None, :] < B))


def bwd_tables(groups, P, C, TP, TC, child0, dev):
    R, KMAX = P // TP, C // TC
    tile_rows = child0.reshape(groups * KMAX, TC).int().contiguous()
    g = torch.arange(groups, device=dev).repeat_interleave(KMAX)
    j = torch.arange(KMAX, device=dev).repeat(groups)
    t = g[:, None] * R + torch.arange(R, device=dev)[None, :]
    uses = (t * KMAX + j[:, None]).int().contiguous()
    return tile_rows, uses


def backward_sweep(prec):
    dev = "cuda"
    for name, groups, P, C, B in [("hmm1024", 1, 1024, 1024, 512), ("hclt128", 40, 128, 128, 512),
                                  ("hclt128@8k", 40, 128, 128, 8192)]:
        vals, sum_w, child0, par0 = layer(groups, P, C, B, dev)
        T, out, child, wbase, wstride, wids = tables(groups, P, C, 64, 64, child0, par0, dev)
        K.sum_fwd[(T, triton.cdiv(B, 64))](vals, sum_w, out, child, child, wbase, wbase, wstride, B, TP=64, TC=64, KC=C, BB=64,
                                             PAD=2, NEG=1, AFFINE=True, PRECISION="ieee", STAGES=4)
        flows = torch.zeros_like(vals)
        flows[par0.reshape(-1).long()] = torch.rand(groups * P, B, device=dev)
        crow = child0.reshape(-1).long()
        print(f"== backward {name}: {groups}x{P}x{C}, B={B}, {prec}", flush=True)
        ref = None
        tile_rows, uses = bwd_tables(groups, P, C, 64, 64, child0, dev)
        for aff, nw in itertools.product((False, True), (4, 8)):
            w0 = (wbase, wbase, wstride) if aff else (wids, wids, wids)
            fn = lambda: K.sum_bwd[(len(tile_rows), triton.cdiv(B, 64))](vals, flows, sum_w, out, out, *w0, tile_rows, tile_rows, tile_rows, uses, flows, flows, B, TP=64, TC=64,
                                                                         KC=C, KMAX=C // 64, R=P // 64, BB=64, PAD=2, NEG=1,
                                                                         ATOMIC=False, AFFINE=aff, PRECISION=prec, OVERWRITE=False, SCALED=False,
                                                                         num_warps=nw)
            flows[crow] = 0
            fn(); torch.cuda.synchronize()
            got = flows[crow].clone()
            ref = got if ref is None else ref
            err = float((got - ref).abs().max() / ref.abs().max())
            us = timeit(fn)
            print(f"  sum_bwd affine={aff} w={nw}: {us:8.1f} us  err {err:.1e}", flush=True)
        wflow = torch.zeros_like(sum_w)
        refp = None
        for aff, nw, BB, split in itertools.product((False, True), (4, 8), (64,), (1, 2, 4)):
            w0 = (wbase, wbase, wstride) if aff else (wids, wids, wids)
            sp = min(triton.cdiv(B, BB), split)
            fn = lambda: K.sum_bwd_params[(T, C // 64, sp)](vals, flows, sum_w, wflow, out, out, child, child, *w0, B, sp, flows, flows, TP=64, TC=64, KC=C,
                                                             BB=BB, PAD=2, NEG=1, AFFINE=aff, PRECISION=prec, SCALED=False, num_warps=nw)
            wflow.zero_(); fn(); torch.cuda.synchronize()
            got = wflow.clone()
            refp = got if refp is None else refp
            err = float((got - refp).abs().max() / refp.abs().max())
            us = timeit(fn)
            print(f"  params affine={aff} w={nw} BB={BB} split={sp} programs={T * (C // 64) * sp}: {us:8.1f} us  err {err:.1e}", flush=True)


def layer(groups, P, C, B, dev):
    """Dense sum layer: `groups` blocks of P parents over C children each; rows 3.. children, then parents."""
    nrows = 3 + groups * (C + P)
    vals = torch.randn(nrows, B, device=dev) * 2 - 300.0
    vals[1] = float("-inf")
    w = torch.rand(groups, P, C, device=dev) + 0.01
    w = (w / w.sum(-1, keepdim=True)).reshape(-1)
    sum_w = torch.cat([w, w.new_zeros(1)])
    child0 = 3 + torch.arange(groups, device=dev)[:, None] * C + torch.arange(C, device=dev)[None, :]
    par0 = 3 + groups * C + torch.arange(groups, device=dev)[:, None] * P + torch.arange(P, device=dev)[None, :]
    return vals, sum_w, child0, par0


def tables(groups, P, C, TP, TC, child0, par0, dev):
    T = groups * (P // TP)
    out = par0.reshape(T, TP).int().contiguous()
    child = child0.repeat_interleave(P // TP, dim=0).reshape(T, C).int().contiguous()
    g = torch.arange(groups, device=dev).repeat_interleave(P // TP)
    pt = torch.arange(P // TP, device=dev).repeat(groups)
    kt = torch.arange(C // TC, device=dev)
    wbase = (g[:, None] * P * C + pt[:, None] * TP * C + kt[None, :] * TC).int().contiguous()
    wstride = torch.full_like(wbase, C)
    p = torch.arange(TP, device=dev)
    c = torch.arange(C, device=dev)
    wids = (g[:, None, None] * P * C + (pt[:, None, None] * TP + p[None, :, None]) * C + c[None, None, :]).int().contiguous()
    return T, out, child, wbase, wstride, wids


def timeit(fn, reps=30):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2] * 1000


def main():
    dev = "cuda"
    torch.manual_seed(0)
    shapes = [("hmm1024", 1, 1024, 1024, 512), ("hclt128", 40, 128, 128, 512), ("hclt128@8k", 40, 128, 128, 8192)]
    prec = sys.argv[1] if len(sys.argv) > 1 else "tf32x3"
    for name, groups, P, C, B in shapes:
        vals, sum_w, child0, par0 = layer(groups, P, C, B, dev)
        ref = None
        flops = 2 * groups * P * C * B
        print(f"== {name}: {groups}x{P}x{C}, B={B}, {prec}", flush=True)
        results = []
        configs = [("cur", 64, 64, 64, 8, 0), ("gat", 64, 32, 64, 4, 3), ("gat", 64, 64, 64, 4, 3), ("gat", 64, 64, 64, 8, 3)]
        for kind in ("aff", "two"):
            for TP, TC, BB, nw, st in itertools.product((64, 128), (32, 64), (64, 128), (4, 8), (2, 3, 4)):
                if TP > P or TC > C or BB > B or (kind == "two" and st != 3):
                    continue
                if TP * BB > 128 * 64 and nw == 4:
                    continue
                configs.append((kind, TP, TC, BB, nw, st))
        for kind, TP, TC, BB, nw, st in configs:
            if TP > P or TC > C:
                continue
            T, out, child, wbase, wstride, wids = tables(groups, P, C, TP, TC, child0, par0, dev)
            nb = triton.cdiv(B, BB)
            if kind == "cur":
                fn = lambda: K.sum_fwd[(T, nb)](vals, sum_w, out, child, child, wids, wids, wids, B, TP=TP, TC=TC, KC=C, BB=BB,
                                                PAD=2, NEG=1, AFFINE=False, PRECISION=prec, STAGES=4, num_warps=nw)
            elif kind == "gat":
                fn = lambda: fwd_affine[(T, nb)](vals, sum_w, out, child, wids, wstride, B, TP=TP, TC=TC, KC=C, BB=BB,
                                                 PAD=2, PRECISION=prec, STAGES=st, GATHER=True, num_warps=nw)
            else:
                kern = fwd_affine if kind == "aff" else fwd_twopass
                fn = lambda: kern[(T, nb)](vals, sum_w, out, child, wbase, wstride, B, TP=TP, TC=TC, KC=C, BB=BB,
                                           PAD=2, PRECISION=prec, STAGES=st, num_warps=nw)
            try:
                t0 = time.time()
                fn()
                torch.cuda.synchronize()
                got = vals[par0.reshape(-1).long()].clone()
                if ref is None:
                    ref = got
                err = float((got - ref).abs().max())
                us = timeit(fn)
                results.append((us, kind, TP, TC, BB, nw, st, err))
                print(f"  {kind} TP={TP} TC={TC} BB={BB} w={nw} st={st}: {us:8.1f} us  {flops / us / 1e6:6.1f} TF/s  err {err:.1e}  (jit {time.time() - t0:.1f}s)", flush=True)
            except Exception as e:  # noqa: BLE001
                print(f"  {kind} TP={TP} TC={TC} BB={BB} w={nw} st={st}: FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
        results.sort()
        print("  best:", results[:3], flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "bwd":
        backward_sweep(sys.argv[1])
    else:
        main()
