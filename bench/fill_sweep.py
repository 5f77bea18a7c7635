"""Launch-shape variants of pcc's sum kernels timed on whole training steps (pcc only, one GPU).

Run: ``python bench/fill_sweep.py --mnist PATH/t10k-images-idx3-ubyte.gz --models hmm1024,hmm256,hclt128``.
For each model and each variant ``fill/pfill/full/shrunk`` (codegen's ``SUM_FILL`` and ``PARAM_FILL``: the
programs within which a sum launch (a parameter-flow launch) shrinks its batch block,
:func:`pcc.backend.kernels.batch_block`; ``FWD_STAGES``: the forward loop's pipeline depth at full and at
shrunk batch blocks) it prints the CUDA-graph step time (median of 20), the forward time, and the
largest difference of the log-likelihoods after one EM step from the same parameters against the first
variant (every variant computes the same function, so this is rounding only).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_step import median_ms  # noqa: E402

import pcc  # noqa: E402
from pcc import data as datasets  # noqa: E402
from pcc.backend import codegen  # noqa: E402
from pcc.backend.runtime import CircuitModel  # noqa: E402
from pcc.backend.triton_exec import TritonExecutor  # noqa: E402
from pcc.frontend import load_text  # noqa: E402
from pcc.structures import hclt  # noqa: E402
from pcc.structures.hmm import hmm_source  # noqa: E402


def build(name: str, x) -> tuple[CircuitModel, torch.Tensor]:
    """pcc's model ``hmmL`` (length 128 over the first 128 pixels) or ``hcltL`` (784 pixels), and its data."""
    latents = int(name.lstrip("hmclt"))
    if name.startswith("hmm"):
        x, text = x[:, :128], hmm_source(128, latents, 256)
    else:
        text = hclt(x, latents, "categorical", num_cats=256)
    return CircuitModel(pcc.optimize(load_text(text, f"{name}.pc")), "cuda", executor="triton"), x


def variant_row(model: CircuitModel, xb: torch.Tensor, start: dict, variant: str, precision: str):
    """(step ms, forward ms, log-likelihoods after one EM step from ``start``) of ``fill/pfill/full/shrunk``."""
    fill, pfill, full, shrunk = map(int, variant.split("/"))
    codegen.SUM_FILL, codegen.PARAM_FILL, codegen.FWD_STAGES = fill, pfill, (full, shrunk)
    model.executor = TritonExecutor(model.plan, model.device_, precision=precision)
    for k, v in model.params.tensors().items():
        v.copy_(start[k])
    model.use_graphs = False
    model.em_step(xb, step_size=0.1, pseudocount=0.1)
    after = model.log_prob(xb).double()
    model.use_graphs = True
    step = median_ms(lambda: model.em_step(xb, step_size=0.1, pseudocount=0.1), 20)
    fwd = median_ms(lambda: model.log_prob(xb), 20)
    return step, fwd, after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--models", default="hmm1024,hmm256,hclt128")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--variants", default="0/0/4/4,132/264/4/2")
    ap.add_argument("--precision", default="tf32x3")
    args = ap.parse_args()
    data = datasets.load(args.mnist)
    for name in args.models.split(","):
        t0 = time.perf_counter()
        model, x = build(name, data)
        xb = torch.as_tensor(x[:args.batch], device="cuda", dtype=torch.float32)
        start = {k: v.clone() for k, v in model.params.tensors().items()}
        print(f"{name} batch {args.batch} {args.precision}: compiled in {time.perf_counter() - t0:.1f}s", flush=True)
        print(f"{'fill/pfill/full/shrunk':>22s} {'step ms':>9s} {'fwd ms':>8s} {'LL diff':>9s}")
        ref = None
        for variant in args.variants.split(","):
            step, fwd, after = variant_row(model, xb, start, variant, args.precision)
            ref = after if ref is None else ref
            diff = float((after - ref).abs().max() / ref.abs().max())
            print(f"{variant:>22s} {step:9.3f} {fwd:8.3f} {diff:9.1e}", flush=True)


if __name__ == "__main__":
    main()
