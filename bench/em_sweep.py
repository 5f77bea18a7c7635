"""The EM update alone and whole training steps, torch ops against the fused Triton kernels, on harness
configurations; the fused kernels also without their alignment hint (``em_kernels.ALIGN = 1``: every access
4 bytes wide, as before the hint).

``python bench/em_sweep.py --mnist PATH/t10k-images-idx3-ubyte.gz --configs hclt256,pd128 [--batch 512]``
prints per configuration the median update time and step time (CUDA-graph steps, 20 each) of each update
and the largest difference of the parameters they produce from the same flows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_step import _converted, median_ms  # noqa: E402

import pcc  # noqa: E402
from pcc import data as datasets  # noqa: E402
from pcc.backend import em_kernels  # noqa: E402
from pcc.backend.params import EMUpdate, Flows, Params  # noqa: E402
from pcc.backend.runtime import CircuitModel  # noqa: E402


def _copy(p: Params) -> Params:
    return Params(p.sum_w.clone(), {k: v.clone() for k, v in p.cat.items()}, p.bern.clone(), p.gauss.clone())


def _max_diff(a: Params, b: Params) -> float:
    pairs = [(a.sum_w, b.sum_w)] + [(a.cat[k], b.cat[k]) for k in a.cat]
    return max(float((x - y).abs().max()) for x, y in pairs)


def sweep(name: str, images, batch: int) -> None:
    path, title, x = _converted(name, images)
    model = CircuitModel(pcc.optimize(pcc.parse(path)), "cuda", executor="triton")
    xb = torch.as_tensor(x[:batch], device="cuda", dtype=torch.float32)
    model.accumulate(xb)  # real flows from one batch (copied: each timed step clears the model's flows)
    f = model.flows
    flows = Flows(f.sum_w.clone(), {k: v.clone() for k, v in f.cat.items()}, f.bern.clone(), f.gauss.clone())
    updates = {"torch": EMUpdate(model.plan, "cuda"), "fused": EMUpdate(model.plan, "cuda", fused=True)}
    align, em_kernels.ALIGN = em_kernels.ALIGN, 1
    updates["fused, no hint"] = EMUpdate(model.plan, "cuda", fused=True)
    em_kernels.ALIGN = align
    out, line = {}, []
    for kind, em in updates.items():
        scratch = Flows(flows.sum_w.clone(), flows.cat, flows.bern, flows.gauss)  # torch reuses sum flows
        out[kind] = _copy(model.params)
        em.apply(out[kind], scratch, 0.5, 0.1)
        p = _copy(model.params)
        ms = median_ms(lambda: em.apply(p, Flows(scratch.sum_w.copy_(flows.sum_w), flows.cat, flows.bern, flows.gauss), 0.5, 0.1), 20)
        model.em = em
        model._graphs.clear()
        step = median_ms(lambda: model.em_step(xb, step_size=0.0, pseudocount=0.1), 20)
        line.append(f"{kind} update {ms:6.3f} ms step {step:7.3f} ms")
    diff = max(_max_diff(out["torch"], out[kind]) for kind in out)
    print(f"{title}, batch {batch}: " + "; ".join(line) + f"; max |dtheta| against torch {diff:.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--configs", default="hclt64,hclt256,pd128,hmm256")
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    images = datasets.load(args.mnist)
    for name in args.configs.split(","):
        sweep(name, images, args.batch)


if __name__ == "__main__":
    main()
