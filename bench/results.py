"""Density-estimation results: HCLTs on the 16 binary data sets and on MNIST, as in docs/results.md.

Per data set and per hyperparameter setting (latents L, pseudocount a): generate the HCLT from the training
split (``pcc gen hclt``), mini-batch EM (batch 512, step size 0.1) with the validation log-likelihood checked
after every epoch and the best parameters kept, then full-batch EM epochs while validation improves. The
setting with the best validation log-likelihood is chosen; only then is the test split read. The same steps
as CLI commands are listed in docs/results.md. Jobs run in parallel worker processes (the models are small
and launch-bound, so one GPU serves several).

Run: ``python bench/results.py --data DIR [--sets nltcs,msnbc,...] [--grid L:a:step,...] [--mnist] [--workers 6]``
(DIR holds ``twenty/`` and ``mnist/`` as in ../shared/data); ``--report A.jsonl B.jsonl`` merges runs and
chooses each set's setting by validation log-likelihood over all of them.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

SETS = ["nltcs", "msnbc", "kdd", "plants", "baudio", "jester", "bnetflix", "accidents", "tretail", "pumsb_star",
        "msweb", "tmovie", "cwebkb", "cr52", "c20ng", "bbc"]
PUBLISHED = {  # LearnSPN, RAT-SPN, Strudel (../shared/data/README.md)
    "nltcs": (-6.11, -6.01, -6.07), "msnbc": (-6.11, -6.04, -6.04), "kdd": (-2.18, -2.13, -2.14),
    "plants": (-12.98, -13.44, -13.22), "baudio": (-40.50, -39.96, -41.20), "jester": (-53.48, -52.97, -54.24),
    "bnetflix": (-57.33, -56.85, -57.93), "accidents": (-30.04, -35.49, -29.05), "tretail": (-11.04, -10.91, -10.83),
    "pumsb_star": (-24.78, -32.53, -24.39), "msweb": (-10.25, -10.12, -9.74), "tmovie": (-52.49, -53.63, -53.72),
    "cwebkb": (-158.20, -157.53, -154.83), "cr52": (-85.07, -87.37, -86.35), "c20ng": (-155.93, -152.06, -153.87),
    "bbc": (-250.69, -252.14, -256.53)}
GRID = "32:0.1:0.1,32:1.0:0.1,64:0.1:0.1,16:1.0:0.1"  # latents:pseudocount:step size


def job(spec: dict) -> dict:
    """Train one (data set, L, a) setting; returns validation and test log-likelihoods."""
    import torch

    from pcc import data as datasets
    from pcc.api import optimize
    from pcc.backend.runtime import CircuitModel
    from pcc.frontend import load_text
    from pcc.structures import hclt
    from pcc.train import evaluate

    start = time.perf_counter()
    x, xv, xt = (datasets.load(p) for p in spec["paths"])
    src = hclt(x, spec["L"], "categorical", num_cats=spec.get("K"))
    model = CircuitModel(optimize(load_text(src, "hclt.pc")), "cuda" if torch.cuda.is_available() else "cpu")
    a, bs = spec["a"], 512
    best, best_params, stale = -math.inf, None, 0
    rng = np.random.default_rng(0)
    steps = spec["mini_epochs"] * (len(x) // bs)
    done = 0
    for _ in range(spec["mini_epochs"]):
        order = rng.permutation(len(x))
        for i in range(0, len(order) - bs + 1, bs):  # full batches only: one CUDA graph per step size
            step = spec["step"]
            if spec.get("anneal"):  # cosine decay to a tenth, in 8 levels (each level is one captured graph)
                level = min(7, 8 * done // max(steps, 1))
                step = spec["step"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * level / 7)))
            model.em_step(x[order[i : i + bs]], step_size=step, pseudocount=a)
            done += 1
        v = evaluate(model, xv, 2048)
        if v > best:
            best, best_params, stale = v, [t.clone() for t in model.params.tensors().values()], 0
        else:
            stale += 1
            if stale >= spec["patience"]:
                break
    for t, b in zip(model.params.tensors().values(), best_params):
        t.copy_(b)
    best_params, stale = [t.clone() for t in model.params.tensors().values()], 0
    for _ in range(spec["full_epochs"]):
        for i in range(0, len(x), 4096):
            model.accumulate(x[i : i + 4096])
        model.em_update(1.0, a)
        v = evaluate(model, xv, 2048)
        if v > best:
            best, best_params, stale = v, [t.clone() for t in model.params.tensors().values()], 0
        else:
            stale += 1
            if stale >= spec.get("full_patience", 1):
                break
    for t, b in zip(model.params.tensors().values(), best_params):  # the best validation point
        t.copy_(b)
    return {**{k: v for k, v in spec.items() if k != "paths"}, "valid": best, "test": evaluate(model, xt, 2048),
            "seconds": time.perf_counter() - start, "edges": model.circuit.num_sum_edges(), "dims": x.shape[1]}


def twenty_specs(root: Path, sets: list[str], grid: str, budget: float, full_epochs: int) -> list[dict]:
    """One job per (set, setting); mini-batch epochs scale so that every set sees about ``budget`` samples."""
    specs = []
    for name in sets:
        paths = [str(root / "twenty" / name / f"{name}.{s}.data.gz") for s in ("train", "valid", "test")]
        rows = sum(1 for _ in __import__("gzip").open(paths[0]))
        epochs = int(min(150, max(6, budget / rows)))
        for item in grid.split(","):
            L, a, step = item.split(":")
            anneal = step.endswith("c")  # e.g. 0.3c: cosine-annealed step size
            specs.append({"set": name, "L": int(L), "a": float(a), "K": 2, "step": float(step.rstrip("c")),
                          "anneal": anneal, "mini_epochs": epochs, "full_epochs": full_epochs, "patience": 8,
                          "full_patience": 3 if anneal else 1, "paths": paths})
    return specs


def mnist_specs(root: Path) -> list[dict]:
    from pcc import data as datasets
    x = datasets.load(root / "mnist" / "train-images-idx3-ubyte.gz")
    order = np.random.default_rng(0).permutation(len(x))
    tmp = Path("/tmp/pcc_mnist")
    tmp.mkdir(exist_ok=True)
    np.save(tmp / "train.npy", x[order[:55000]])
    np.save(tmp / "valid.npy", x[order[55000:]])
    paths = [str(tmp / "train.npy"), str(tmp / "valid.npy"), str(root / "mnist" / "t10k-images-idx3-ubyte.gz")]
    return [{"set": "mnist", "L": 32, "a": 0.1, "K": 256, "step": step, "mini_epochs": 60, "full_epochs": 3,
             "patience": 5, "paths": paths} for step in (0.1, 0.3)]


def report(results: list[dict]) -> None:
    best: dict[str, dict] = {}
    for r in results:
        if r["set"] not in best or r["valid"] > best[r["set"]]["valid"]:
            best[r["set"]] = r
    print("\n| data set | L | pseudocount | step | valid LL | test LL | LearnSPN | RAT-SPN | Strudel | >= LearnSPN | >= RAT-SPN | time s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|---:|")
    wins = [0, 0]
    for name in [s for s in SETS if s in best]:
        r = best[name]
        pub = PUBLISHED[name]
        w = [r["test"] >= pub[0], r["test"] >= pub[1]]
        wins = [wins[0] + w[0], wins[1] + w[1]]
        print(f"| {name} | {r['L']} | {r['a']} | {r['step']}{'c' if r.get('anneal') else ''} | {r['valid']:.3f} | {r['test']:.3f} | {pub[0]:.2f} | {pub[1]:.2f} | "
              f"{pub[2]:.2f} | {'yes' if w[0] else 'no'} | {'yes' if w[1] else 'no'} | {r['seconds']:.0f} |")
    n = sum(1 for s in SETS if s in best)
    print(f"\nat least LearnSPN on {wins[0]}/{n}, at least RAT-SPN on {wins[1]}/{n}")
    if "mnist" in best:  # noqa: SIM102
        r = best["mnist"]
        print(f"\nMNIST HCLT L={r['L']} step {r['step']}: valid {r['valid']:.2f}, test {r['test']:.2f} nats = "
              f"{-r['test'] / (784 * math.log(2)):.4f} bpd ({r['seconds']:.0f}s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", help="folder with twenty/ and mnist/ (like ../shared/data)")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--mnist", action="store_true")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--grid", default=GRID, help="settings L:pseudocount:step, comma-separated (step 0.3c: cosine-annealed to 0.03, and full-batch EM with patience 3)")
    ap.add_argument("--budget", type=float, default=4e5, help="mini-batch EM samples per job (sets epochs)")
    ap.add_argument("--full-epochs", type=int, default=5, help="most full-batch EM epochs (stops when valid drops)")
    ap.add_argument("--out", default="results.jsonl")
    ap.add_argument("--report", nargs="*", help="only print the table of these result files (merged)")
    args = ap.parse_args()
    if args.report:
        report([json.loads(line) for f in args.report for line in open(f)])
        return
    root = Path(args.data)
    sets = [s for s in args.sets.split(",") if s]
    specs = (mnist_specs(root) if args.mnist else []) + twenty_specs(root, sets, args.grid, args.budget, args.full_epochs)
    results = []
    with mp.get_context("spawn").Pool(args.workers) as pool, open(args.out, "w") as log:
        for r in pool.imap_unordered(job, specs):
            results.append(r)
            log.write(json.dumps(r) + "\n")
            log.flush()
            print(f"{r['set']} L={r['L']} a={r['a']} step={r['step']}: valid {r['valid']:.3f} test {r['test']:.3f} "
                  f"({r['seconds']:.0f}s)", flush=True)
    report(results)


if __name__ == "__main__":
    main()
