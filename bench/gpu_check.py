"""GPU check for the backend: examples, random circuits and an MNIST HCLT on CUDA against references.

For each circuit: compile (parse → passes → plan → module), log-likelihoods from the Triton kernels against
the float64 reference interpreter, flows and one EM step against the plain-torch executor in float64 on
the same GPU, then timings at ``--batch`` (medians of CUDA-event timings after warm-up): forward, one
training step (forward + flows + mini-batch EM) eagerly and as a replayed CUDA graph, and peak memory.
Run: ``python bench/gpu_check.py --mnist PATH/t10k-images-idx3-ubyte.gz [--latents 128] [--batch 512]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import pcc  # noqa: E402
from pcc import data as datasets  # noqa: E402
from pcc.backend.runtime import CircuitModel  # noqa: E402
from pcc.frontend import load_text  # noqa: E402
from pcc.ir import log_likelihood  # noqa: E402
from pcc.ir.params import randomize  # noqa: E402
from pcc.structures import hclt  # noqa: E402


def median_ms(fn, reps: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def check(name: str, circuit, x: np.ndarray, batch: int, ref_rows: int) -> dict:
    row = {"name": name}
    start = time.perf_counter()
    layered = pcc.optimize(circuit)
    fast = CircuitModel(layered, "cuda", executor="triton")
    torch.cuda.synchronize()
    row["compile_s"] = time.perf_counter() - start
    row["edges"] = layered.num_sum_edges()
    xs = x[:ref_rows]
    start = time.perf_counter()
    ref = log_likelihood(circuit, xs)
    row["ref_s"] = time.perf_counter() - start
    got = fast.log_prob(xs).double().cpu().numpy()
    ok = np.isfinite(ref)
    row["ll_rel"] = float(np.abs(got[ok] - ref[ok]).max() / max(1.0, np.abs(ref[ok]).max()))
    exact = CircuitModel(layered, "cuda", dtype=torch.float64, executor="torch")
    nf, ne = fast.node_flows(xs).double(), exact.node_flows(xs)
    row["flow_rel"] = float((nf - ne).abs().max() / max(1.0, ne.abs().max().item()))
    fast.em_step(xs, step_size=0.5, pseudocount=0.1)
    exact.em_step(xs, step_size=0.5, pseudocount=0.1)
    row["em_abs"] = max(float((a.double() - b).abs().max()) for a, b in zip(fast.params.tensors().values(),
                                                                           exact.params.tensors().values()) if a.numel())
    del exact
    xb = torch.as_tensor(x[:batch], device=fast.device_, dtype=torch.float32)
    torch.cuda.reset_peak_memory_stats()
    row["fwd_ms"] = median_ms(lambda: fast.log_prob(xb))
    fast.use_graphs = False
    row["step_ms"] = median_ms(lambda: fast.em_step(xb, step_size=0.1, pseudocount=0.1))
    fast.use_graphs = True
    row["graph_ms"] = median_ms(lambda: fast.em_step(xb, step_size=0.1, pseudocount=0.1))
    row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def random_data(circuit, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, max(v.domain.categories, 1), rows) if v.domain.categories
                     else rng.normal(size=rows) for v in circuit.variables], 1).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", help="t10k-images-idx3-ubyte.gz for the HCLT's tree and data")
    ap.add_argument("--latents", type=int, default=128)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}, {torch.cuda.get_device_name()}")
    rows = []
    root = Path(__file__).resolve().parents[1] / "examples"
    for path in sorted(root.glob("*.pc")):
        c = pcc.parse(path)
        randomize(c, 0)
        rows.append(check(path.stem, c, random_data(c, 1024, 0), args.batch, 64))
        print(rows[-1], flush=True)
    if args.mnist:
        x = datasets.load(args.mnist)
        start = time.perf_counter()
        src = hclt(x, args.latents, "categorical", num_cats=256)
        c = load_text(src, "hclt.pc")
        print(f"hclt source + parse: {time.perf_counter() - start:.1f}s", flush=True)
        rows.append(check(f"hclt784x256 L={args.latents}", c, x, args.batch, 32))
        print(rows[-1], flush=True)
    print("\n| circuit | sum edges | compile s | LL rel err | flow rel err | EM abs err | fwd ms | step ms (eager) "
          "| step ms (CUDA graph) | peak MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['edges']:,} | {r['compile_s']:.2f} | {r['ll_rel']:.1e} | {r['flow_rel']:.1e} | "
              f"{r['em_abs']:.1e} | {r['fwd_ms']:.2f} | {r['step_ms']:.2f} | {r['graph_ms']:.2f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
