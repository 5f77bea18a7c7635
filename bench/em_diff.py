"""One EM step of pcc and of PyJuice on a harness configuration, compared parameter by parameter.

``bench/vs_pyjuice.py`` reports how far the two systems' log-likelihoods are apart after one EM step;
this script finds where. It converts PyJuice's circuit before and after PyJuice's own EM step (so both
parameter sets are in pcc's layout), takes the same step in pcc (Triton executor, and the float64 torch
executor as the referee), and prints, per pseudocount, the largest differences of the sum weights and
input tables, the sum nodes whose weights differ most (with their fan-in) and the log-likelihoods after the
step. ``--profile-compile`` also profiles ``pcc.compile`` of the converted file.

Run (GPU machine): ``python bench/em_diff.py --mnist t10k-images-idx3-ubyte.gz --config pd32``.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_pyjuice as harness  # noqa: E402

import pcc  # noqa: E402
from pcc import data as datasets  # noqa: E402
from pcc.backend.runtime import CircuitModel  # noqa: E402
from pcc.interop.pyjuice import convert  # noqa: E402


def model(path: Path, executor: str, dtype=torch.float32) -> CircuitModel:
    m = CircuitModel(pcc.optimize(pcc.parse(path)), "cuda", dtype=dtype, executor=executor)
    m.use_graphs = False
    return m


def report(name: str, ours: CircuitModel, ref: CircuitModel, theirs: CircuitModel, xb: torch.Tensor) -> None:
    """The differences of pcc's and PyJuice's updated parameters from the float64 referee's."""
    parent = ref.plan.sum_parent
    assert np.array_equal(parent, theirs.plan.sum_parent), "the two conversions planned differently"
    w_ref = ref.params.sum_w.double()
    for who, m in (("pcc", ours), ("PyJuice", theirs)):
        d = (m.params.sum_w.double() - w_ref).abs()
        cats = {k: (m.params.cat[k].double() - ref.params.cat[k].double()).abs().max().item() for k in ref.params.cat}
        ll = (m.log_prob(xb).double() - ref.log_prob(xb).double()).abs().max().item()
        print(f"  {who:8s} vs float64 pcc: sum weights max |d| {d.max().item():.2e}, input tables {cats}, "
              f"LL after max |d| {ll:.3e}")
    d = (theirs.params.sum_w.double() - w_ref).abs().cpu().numpy()
    per_group = np.zeros(ref.em.groups)
    np.maximum.at(per_group, parent, d)
    fanin = ref.em.fanin.cpu().numpy()
    worst = np.argsort(per_group)[::-1][:8]
    print(f"  {name}: sum nodes whose PyJuice weights differ most (group, fan-in, max |d|): "
          + ", ".join(f"({g}, {fanin[g]}, {per_group[g]:.2e})" for g in worst))
    for f in np.unique(fanin[fanin > 0]):
        sel = fanin == f
        print(f"    fan-in {f:5d}: {sel.sum():6d} sum nodes, max |d| {per_group[sel].max():.2e}, "
              f"median {np.median(per_group[sel]):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--config", default="pd32")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--pseudocounts", default="0.1,0")
    ap.add_argument("--profile-compile", action="store_true")
    args = ap.parse_args()
    images = datasets.load(args.mnist).astype(np.int64)
    x = harness.data_for(args.config, images)
    xb = x[: args.batch].cuda()
    clock = time.perf_counter()
    stamp = lambda what: print(f"  [{time.perf_counter() - clock:6.1f}s] {what}", flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for a in [float(s) for s in args.pseudocounts.split(",")]:
            torch.manual_seed(0)
            ns = harness.structure(args.config, x)
            pj = harness.PyJuiceRunner(ns)
            before = convert(ns, Path(tmp) / "before.pc")
            stamp("PyJuice compiled, converted")
            pj.graphs = False
            pj.step(xb, pseudocount=a)
            pj.pc.update_parameters()  # the stepped parameters onto the nodes, for the converter
            after = convert(ns, Path(tmp) / "after.pc")
            del pj
            stamp("PyJuice stepped, converted")
            ours, ref = model(before, "triton"), model(before, "torch", torch.float64)
            stamp("pcc compiled (triton, torch float64)")
            for m in (ours, ref):
                m.em_step(xb, step_size=harness.STEP, pseudocount=a)
            stamp("pcc stepped")
            print(f"{args.config}, batch {args.batch}, one EM step (step {harness.STEP}, pseudocount {a}):")
            report(args.config, ours, ref, model(after, "torch", torch.float64), xb)
            if args.profile_compile:
                start = time.perf_counter()
                prof = cProfile.Profile()
                prof.enable()
                pcc.compile(before, device="cuda")
                torch.cuda.synchronize()
                prof.disable()
                print(f"pcc.compile on cuda: {time.perf_counter() - start:.1f}s", flush=True)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                args.profile_compile = False
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
