"""Tile shape, warps and pipeline depth of the dense forward sum kernel, timed on one synthetic layer.

``python bench/fwd_tile_sweep.py [precision]``: an ``L x L`` dense sum (HMM-like: one child block of ``L``
rows) at batch ``B`` for a few (L, B); for each variant of (TP, BB, num_warps, STAGES) the median of 20
launches of ``kernels.sum_fwd`` (computed weight addresses, as pcc's dense sums), checked against the
first variant's output, and the tensor-core rate it reaches (2 L^2 B flops per launch).
"""
import itertools
import sys
from pathlib import Path

import torch
import triton

from pcc.backend import kernels as K

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_pyjuice import median_ms  # noqa: E402

PAD, NEG, FIRST = 2, 1, 3


def layer(L: int, B: int, TP: int, TC: int = 64):
    """Values ``[3 + 2L, B]`` (children at rows 3.., parents after) and the affine tables of one dense sum."""
    g = torch.Generator(device="cuda").manual_seed(0)
    vals = torch.randn(FIRST + 2 * L, B, device="cuda", generator=g) - 5
    w = torch.rand(L, L, device="cuda", generator=g)
    w = (w / w.sum(1, keepdim=True)).reshape(-1)
    T, kt = L // TP, L // TC
    out = (FIRST + L + torch.arange(L, device="cuda")).reshape(T, TP)
    child = (FIRST + torch.arange(L, device="cuda")).repeat(T, 1)
    wbase = (torch.arange(T, device="cuda")[:, None] * TP * L + torch.arange(kt, device="cuda") * TC)
    wstride = torch.full((T, kt), L, device="cuda")
    return vals, w, out, child, wbase, wstride


def run(L, B, TP, BB, warps, stages, precision):
    vals, w, out, child, wbase, wstride = layer(L, B, TP)
    grid = (L // TP, triton.cdiv(B, BB))

    def go():
        K.sum_fwd[grid](vals, w, out, child, child, wbase, wbase, wstride, B, TP=TP, TC=64, KC=L, BB=BB, PAD=PAD, NEG=NEG,
                        AFFINE=True, PRECISION=precision, STAGES=stages, num_warps=warps)
    return median_ms(go, 20, warmup=1), vals[FIRST + L:].clone()


def main() -> None:
    precision = sys.argv[1] if len(sys.argv) > 1 else "tf32x3"
    for L, B in [(4096, 512), (1024, 512), (1024, 4096)]:
        ref = None
        print(f"L={L} B={B} {precision}")
        for TP, BB, warps, stages in itertools.product((64, 128), (64, 128), (4, 8), (2, 3, 4)):
            try:
                ms, got = run(L, B, TP, BB, warps, stages, precision)
            except Exception as e:  # out of shared memory etc.
                print(f"  TP={TP:3d} BB={BB:3d} warps={warps} stages={stages}: {type(e).__name__}")
                continue
            ref = got if ref is None else ref
            err = float((got - ref).abs().max())
            print(f"  TP={TP:3d} BB={BB:3d} warps={warps} stages={stages}: {ms * 1e3:8.1f} us "
                  f"{2 * L * L * B / ms / 1e9:6.1f} TFLOP/s err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
