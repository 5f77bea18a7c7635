"""Parameter-flow launch shapes on a whole training step: batch splits and fill, on a harness configuration.

``python bench/param_sweep.py --mnist PATH/t10k-images-idx3-ubyte.gz --config hclt64 [--batch 512]``
times the CUDA-graph training step (median of 20) for codegen settings ``FILL/PARAM_FILL/SPLIT_BLOCKS[/SPLIT_MAX/SPLIT_BELOW[/SCALE_KMAX]]``
and checks each variant's parameter flows of one backward pass against the first variant's.
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
from pcc.backend import codegen  # noqa: E402
from pcc.backend.params import Flows  # noqa: E402
from pcc.backend.runtime import CircuitModel  # noqa: E402
from pcc.backend.triton_exec import TritonExecutor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--config", default="hclt64")
    ap.add_argument("--batch", type=int, default=512)
    # FILL/PARAM_FILL/SPLIT_BLOCKS[/SPLIT_MAX/SPLIT_BELOW[/SCALE_KMAX]]
    ap.add_argument("--variants", default="528/264/8,528/264/1,528/264/1/16/132,528/264/2/16/132,528/264/1/8/132")
    args = ap.parse_args()
    path, title, x = _converted(args.config, datasets.load(args.mnist))
    model = CircuitModel(pcc.optimize(pcc.parse(path)), "cuda", executor="triton")
    xb = torch.as_tensor(x[:args.batch], device="cuda", dtype=torch.float32)
    miss = torch.zeros_like(xb, dtype=torch.int8)
    print(f"{title}, batch {args.batch}", flush=True)
    ref, scale_kmax = None, codegen.SCALE_KMAX
    for v in args.variants.split(","):
        knobs = [int(s) for s in v.split("/")]
        knobs += [1 << 30, 1 << 30, scale_kmax][len(knobs) - 3:]
        codegen.FILL, codegen.PARAM_FILL, codegen.SPLIT_BLOCKS, codegen.SPLIT_MAX, codegen.SPLIT_BELOW, codegen.SCALE_KMAX = knobs[:6]
        ex = TritonExecutor(model.plan, model.device_)
        fl = Flows.zeros_like(model.params)
        ex.backward(model.params, ex.forward(model.params, xb, miss), xb, miss, fl, node_flows=False)
        got = torch.cat([t.reshape(-1) for t in fl.all()])
        ref = got if ref is None else ref
        err = float((got - ref).abs().max() / ref.abs().max())
        model.executor = ex
        ms = median_ms(lambda: model.em_step(xb, step_size=0.0, pseudocount=0.1), 20)
        print(f"  FILL/PARAM_FILL/SPLIT_BLOCKS {v:14s}: step {ms:7.3f} ms  param-flow err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
