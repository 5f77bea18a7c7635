"""Queries on the GPU: MNIST sampling speed, an inpainting picture, and GPU/CPU agreement.

Trains an HCLT (32 latents) on MNIST briefly, then: the time to draw 10,000 images (median of 3), a grid
`inpainting.png` (per group of rows: test images, their top halves given, a conditional sample of the bottom
half, the MAP completion), 64 unconditional samples in `samples.png`, and for a few circuits the largest
difference between queries on CUDA (Triton forward) and on the CPU (plain torch, float64).
Run: ``python bench/queries_gpu.py --mnist DIR --out OUTDIR``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import pcc
from pcc import data as datasets
from pcc.backend.runtime import CircuitModel
from pcc.cli import write_png
from pcc.frontend import load_text
from pcc.ir.params import randomize
from pcc.structures import hclt


def train_mnist(root: Path, epochs: int) -> tuple[CircuitModel, np.ndarray]:
    x = datasets.load(root / "train-images-idx3-ubyte.gz")
    xt = datasets.load(root / "t10k-images-idx3-ubyte.gz")
    model = CircuitModel(pcc.optimize(load_text(hclt(x, 32, "categorical", num_cats=256), "hclt.pc")), "cuda")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x) - 511, 512):
            model.em_step(x[order[i : i + 512]], step_size=0.1, pseudocount=0.1)
    for i in range(0, len(x), 4096):
        model.accumulate(x[i : i + 4096])
    model.em_update(1.0, 0.1)
    ll = sum(model.log_prob(xt[i : i + 2048]).double().sum().item() for i in range(0, len(xt), 2048)) / len(xt)
    print(f"MNIST HCLT L=32, {epochs} mini-batch epochs + 1 full: test {-ll / (784 * math.log(2)):.4f} bpd "
          f"({time.perf_counter() - start:.0f}s)", flush=True)
    return model, xt


def timed(fn, reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def inpainting(model: CircuitModel, xt: np.ndarray, out: Path) -> None:
    imgs = xt[:16]
    mask = np.zeros_like(imgs, dtype=bool)
    mask[:, : 14 * 28] = True  # the top half is given
    g = torch.Generator(device="cuda").manual_seed(0)
    sampled = model.sample(16, imgs, mask, generator=g).cpu().numpy()
    best, _ = model.map(imgs, mask)
    shown = np.where(mask, imgs, 128)
    rows = []
    for part in (slice(0, 8), slice(8, 16)):
        rows += [imgs[part], shown[part], sampled[part], best.cpu().numpy()[part]]
    write_png(str(out / "inpainting.png"), np.concatenate(rows), 256)
    write_png(str(out / "samples.png"), model.sample(64, generator=g).cpu().numpy(), 256)


def agreement() -> list[tuple[str, float, float, float]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from randgen import random_circuits, random_inputs
    rows = []
    cases = [("pd8x8", pcc.parse(Path(__file__).resolve().parents[1] / "examples" / "pd8x8.pc"))]
    cases += [(f"random{i}", c) for i, c in enumerate(random_circuits(900, 3, real_vars=False))]
    for name, c in cases:
        randomize(c, 1)
        layered = pcc.optimize(c)
        gpu = CircuitModel(layered, "cuda")
        cpu = CircuitModel(layered, "cpu", dtype=torch.float64, executor="torch")
        x, _ = random_inputs(c, np.random.default_rng(2), batch=256)
        mask = np.random.default_rng(3).random(x.shape) < 0.5
        marg = (gpu.conditional(x, mask).double().cpu() - cpu.conditional(x, mask)).abs().max().item()
        sg, _ = gpu.map(x, mask)
        sc, _ = cpu.map(x, mask)
        same = (sg.cpu().double() == sc.double()).all(1).double().mean().item()
        evidence = gpu.sample(256, x, mask).cpu().numpy()
        kept = float(np.all(evidence[mask] == x[mask]))
        rows.append((name, marg, same, kept))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--out", default=".")
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args()
    out = Path(args.out)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    model, xt = train_mnist(Path(args.mnist), args.epochs)
    g = torch.Generator(device="cuda").manual_seed(1)
    for n in (1000, 10000):
        print(f"sample {n} MNIST images: {timed(lambda n=n: model.sample(n, generator=g)):.3f} s (median of 3)", flush=True)
    imgs = xt[:512]
    mask = np.zeros_like(imgs, dtype=bool)
    mask[:, :392] = True
    print(f"MAP of 512 half images: {timed(lambda: model.map(imgs, mask)):.3f} s; "
          f"conditional sample of 512: {timed(lambda: model.sample(512, imgs, mask, generator=g)):.3f} s", flush=True)
    inpainting(model, xt, out)
    print("\n| circuit | max abs diff, conditional LL (GPU fp32 vs CPU fp64) | MAP states equal | samples keep evidence |")
    print("|---|---:|---:|---:|")
    for name, marg, same, kept in agreement():
        print(f"| {name} | {marg:.1e} | {same:.3f} | {'yes' if kept else 'NO'} |")


if __name__ == "__main__":
    main()
