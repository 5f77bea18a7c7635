"""How fast can a dense sum layer's products run as plain GEMMs? A probe for the dense (HMM) lowering.

``python bench/dense_gemm_probe.py [--quick]``: one ``M x K`` by ``K x N`` product (HMM 4096's layer at batch
512: 4096 x 4096 x 512) in every operand layout (``mk``: K contiguous in A; ``kn``: N contiguous in B) and
tensor-core mode:

* ``tf32x3``: Triton's own three-product split of fp32 operands (in registers, every tile);
* ``split3``: operands split once into tf32 head and rest in memory, three plain tf32 products per tile;
* ``tf32`` / ``bf16``: one product (reference points for the split's cost);
* ``exp``: ``tf32x3`` with B computed as ``exp(B - m)`` in registers (the fused forward's form).

Each variant's median of 20 launches, its error against float64, and its fp32-equivalent rate
(2 M N K flops per launch), next to torch's fp32 and tf32 matmuls (cuBLAS).
"""
import argparse
import itertools
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_pyjuice import median_ms  # noqa: E402


@triton.jit
def _split(x):
    """``(hi, lo)``: ``x``'s top 11 significant bits (exact in tf32) and the rest (exact in fp32)."""
    hi = (x.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
    return hi, x - hi


@triton.jit
def split_kernel(x, hi, lo, n, BLOCK: tl.constexpr):
    """``hi, lo = split(x)`` elementwise over ``n`` floats."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x + i, mask=i < n)
    h, low = _split(v)
    tl.store(hi + i, h, mask=i < n)
    tl.store(lo + i, low, mask=i < n)


@triton.jit
def gemm(a, a_lo, b, b_lo, c, shift, M, N, K: tl.constexpr, sam, sak, sbk, sbn,
         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, MODE: tl.constexpr, STAGES: tl.constexpr,
         GROUP: tl.constexpr):
    """``c[M, N] = a @ b`` (MODE 0 tf32x3, 1 split3, 2 tf32, 3 bf16, 4 exp: ``a @ exp(b - shift[n])``)."""
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    per_group = GROUP * grid_n
    first_m = (pid // per_group) * GROUP
    rows = min(grid_m - first_m, GROUP)
    pm = first_m + (pid % per_group) % rows
    pn = (pid % per_group) // rows
    rm = (pm * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pn * BN + tl.arange(0, BN)).to(tl.int64)
    rk = tl.arange(0, BK).to(tl.int64)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    if MODE == 4:
        m = tl.load(shift + rn)
    for k in tl.range(0, K, BK, num_stages=STAGES):
        ap = rm[:, None] * sam + (k + rk)[None, :] * sak
        bp = (k + rk)[:, None] * sbk + rn[None, :] * sbn
        x = tl.load(a + ap)
        y = tl.load(b + bp)
        if MODE == 0:
            acc += tl.dot(x, y, input_precision="tf32x3")
        elif MODE == 1:
            x_lo = tl.load(a_lo + ap)
            y_lo = tl.load(b_lo + bp)
            acc += tl.dot(x_lo, y, input_precision="tf32")
            acc += tl.dot(x, y_lo, input_precision="tf32")
            acc += tl.dot(x, y, input_precision="tf32")
        elif MODE == 2:
            acc += tl.dot(x, y, input_precision="tf32")
        elif MODE == 3:
            acc += tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16), out_dtype=tl.float32)
        else:
            acc += tl.dot(x, tl.exp(y - m[None, :]), input_precision="tf32x3")
    tl.store(c + rm[:, None] * N + rn[None, :], acc)


MODES = {"tf32x3": 0, "split3": 1, "tf32": 2, "bf16": 3, "exp": 4}


def operand(x: torch.Tensor, layout: str) -> tuple[torch.Tensor, int, int]:
    """``x`` (logical ``[R, S]``) stored with its second axis contiguous (``mk``, ``kn``) or its first
    (``km``, ``nk``); returns the storage and the logical strides."""
    if layout in ("mk", "kn"):  # the second logical axis contiguous
        s = x.contiguous()
        return s, s.stride(0), s.stride(1)
    s = x.t().contiguous()  # the first logical axis contiguous
    return s, 1, s.stride(0)


def probe(M: int, N: int, K: int, configs, modes, layouts) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    A = torch.rand(M, K, device="cuda", generator=g)
    A = A / A.sum(1, keepdim=True)
    Bv = torch.randn(K, N, device="cuda", generator=g) - 5
    shift = Bv.max(0).values.contiguous()
    E = torch.exp(Bv - shift)
    ref = A.double() @ E.double()
    flops = 2 * M * N * K
    print(f"\nM={M} N={N} K={K}  ({flops / 1e9:.1f} GFLOP)")
    for prec, tf32 in (("torch fp32", False), ("torch tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        out = torch.empty(M, N, device="cuda")
        ms = median_ms(lambda: torch.matmul(A, E, out=out), 20, warmup=2)
        err = float(((out.double() - ref).abs() / ref.abs()).max())
        print(f"  {prec:34s} {ms * 1e3:8.1f} us  {flops / ms / 1e9:6.1f} TFLOP/s  rel err {err:.1e}")
    torch.backends.cuda.matmul.allow_tf32 = False
    for lay_a, lay_b in layouts:
        a0, sam, sak = operand(A, lay_a)
        for mode in modes:
            b, sbk, sbn = operand(Bv if mode == "exp" else E, lay_b)
            a, a_lo, b_lo = a0, a0, b
            if mode == "split3":
                a, a_lo, b, b_lo = *_split_t(a0), *_split_t(b)
            for BM, BN, BK, warps, stages in configs:
                out = torch.empty(M, N, device="cuda")
                grid = (triton.cdiv(M, BM) * triton.cdiv(N, BN),)

                def go():
                    gemm[grid](a, a_lo, b, b_lo, out, shift, M, N, K, sam, sak, sbk, sbn, BM=BM, BN=BN, BK=BK,
                               MODE=MODES[mode], STAGES=stages, GROUP=8, num_warps=warps)
                name = f"{mode:6s} A {lay_a} B {lay_b} {BM}x{BN}x{BK} w{warps} s{stages}"
                try:
                    ms = median_ms(go, 20, warmup=1)
                except Exception as e:  # out of shared memory, unsupported layout
                    print(f"  {name:34s} {type(e).__name__}: {str(e)[:60]}")
                    continue
                err = float(((out.double() - ref).abs() / ref.abs()).max())
                print(f"  {name:34s} {ms * 1e3:8.1f} us  {flops / ms / 1e9:6.1f} TFLOP/s  rel err {err:.1e}")


def _split_t(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hi, lo = torch.empty_like(x), torch.empty_like(x)
    n = x.numel()
    split_kernel[(triton.cdiv(n, 1024),)](x, hi, lo, n, BLOCK=1024)
    return hi, lo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one config per mode (a check, not a sweep)")
    ap.add_argument("--shape", default="4096,512,4096", help="M,N,K")
    args = ap.parse_args()
    M, N, K = (int(v) for v in args.shape.split(","))
    configs = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (128, 128, 32, 4, 3), (128, 64, 64, 4, 3),
               (64, 128, 32, 4, 4), (128, 256, 32, 8, 3)]
    if args.quick:
        configs = [(64, 64, 32, 4, 2)] if M <= 256 else configs[:1]
    layouts = list(itertools.product(("mk", "km"), ("kn", "nk")))
    probe(M, N, K, configs, ["tf32x3", "split3", "tf32", "bf16", "exp"], layouts)


if __name__ == "__main__":
    main()
