"""One HMM's training step with sum_bwd's paired parent tiles on or off: phase times and per-kernel CUDA time.

``python bench/pair_probe.py --mnist PATH/t10k-images-idx3-ubyte.gz --latents 4096 --batch 512 --bwd-pairs on``
(and ``off``) builds pcc's HMM of length 128 over the first 128 pixels (``pcc.structures.hmm``), prints the
compile time, the first log-likelihood and training step (Triton's JIT included), the CUDA time of each
kernel over one eager step, the median of 7 CUDA-graph steps and the peak memory. The experiment behind
codegen's ``BWD_PAIR_USES`` (``bench/results/bwd_pairs_probe_2026-11-25_h100.txt``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import pcc
from pcc import data as datasets
from pcc.backend import codegen
from pcc.backend.runtime import CircuitModel
from pcc.frontend import load_text
from pcc.structures.hmm import hmm_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_pyjuice import median_ms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--bwd-pairs", choices=("on", "off"), default="on")
    args = ap.parse_args()
    codegen.BWD_PAIRS = args.bwd_pairs == "on"
    print(f"HMM L={args.latents} B={args.batch} BWD_PAIRS={codegen.BWD_PAIRS}")
    x = datasets.load(args.mnist)[:args.batch, :128]
    xb = torch.as_tensor(x, device="cuda", dtype=torch.float32)
    last = [time.perf_counter()]

    def lap(what: str) -> None:
        torch.cuda.synchronize()
        now = time.perf_counter()
        print(f"{what}: {now - last[0]:.2f}s", flush=True)
        last[0] = now

    model = CircuitModel(pcc.optimize(load_text(hmm_source(128, args.latents, 256), "hmm.pc")), "cuda",
                         executor="triton")
    lap("compile")
    model.use_graphs = False
    model.log_prob(xb)
    lap("first log_prob (JIT)")
    print("mean LL", float(model.log_prob(xb).double().mean()))
    step = lambda: model.em_step(xb, step_size=0.1, pseudocount=0.1)  # noqa: E731
    step()
    lap("first em_step (JIT)")
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    rows = sorted(((e.key[:60], (getattr(e, "device_time_total", 0) or 0) / 1000, e.count)
                   for e in prof.key_averages()), key=lambda r: -r[1])
    for name, ms, n in rows[:10]:
        print(f"  {name:60s} {ms:9.2f} ms {n:6d}")
    model.use_graphs = True
    print(f"graph step median of 7: {median_ms(step, 7, warmup=1):.2f} ms")
    print(f"peak MiB {torch.cuda.max_memory_allocated() / 2**20:.0f}")


if __name__ == "__main__":
    main()
