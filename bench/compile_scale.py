"""Compile-scale benchmark: big generated circuits through ``pcc opt`` with the default pipeline.

Each configuration is a .pc file written with loops (a few lines whatever its size); the harness runs
``pcc opt FILE -o OUT.pcir`` in a subprocess and reports wall time (median of --repeat runs, Python start-up
included) and that process's own peak resident memory. Run: ``python bench/compile_scale.py [--repeat 3]``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HMM = """
let T = {T}
let L = {L}
var O[T] : categorical(64)
e[0] = input(O[0], categorical, n=L)
for t in 1..T {{ e[t] = input(O[t], categorical, n=L, tie=e[0]) }}
m[1] = sum(e[0], n=L)
f[1] = prod(m[1], e[1])
for t in 2..T {{
    m[t] = sum(f[t-1], n=L, tie=m[1])
    f[t] = prod(m[t], e[t])
}}
top = sum(f[T-1], n=1)
root top
"""

# A balanced binary tree over V variables with K nodes per sum block, untied: V-1 dense K x K sums.
TREE = """
let V = {V}
let K = {K}
var X[V] : categorical(16)
for v in 0..V {{ s0[v] = input(X[v], categorical, n=K) }}
{levels}
top = sum(s{depth}[0], n=1)
root top
"""


def tree_source(v: int, k: int) -> str:
    levels, width, d = [], v, 0
    while width > 1:
        width //= 2
        levels.append(f"for i in 0..{width} {{ p{d + 1}[i] = prod(s{d}[2*i], s{d}[2*i+1])\n"
                      f"    s{d + 1}[i] = sum(p{d + 1}[i], n=K) }}")
        d += 1
    return TREE.format(V=v, K=k, levels="\n".join(levels), depth=d)


CONFIGS = {
    "hmm T=128 L=512 (tied), .pc": lambda: HMM.format(T=128, L=512),
    "hmm T=128 L=1024 (tied), .pc": lambda: HMM.format(T=128, L=1024),
    "tree V=256 K=256 (untied), .pc": lambda: tree_source(256, 256),
    "tree V=256 K=256, .pcir with concrete weights": lambda: concrete(tree_source(256, 256)),
    "pd 28x28 L=256 split 4 (pcc gen pd), .pc": lambda: pd_source((28, 28), 256, 4),
}


def pd_source(shape, latents, interval) -> str:
    from pcc.structures import pd_source as generate
    return generate(shape, latents, interval)


def concrete(source: str) -> Path:
    """The model as .pcir + sidecar with every parameter materialised (as after training)."""
    from pcc.api import write_ir
    from pcc.frontend import load_text
    from pcc.ir.params import randomize

    circuit = load_text(source, "tree.pc")
    randomize(circuit, 0)
    path = Path(tempfile.mkdtemp()) / "trained.pcir"
    write_ir(circuit, path)
    return path


# The child reports its own high-water mark: VmHWM belongs to the process image (ru_maxrss would carry over
# the parent's peak through fork and exec).
_CHILD = ("import re, resource, sys\nfrom pcc.cli import main\nrc = main(sys.argv[1:])\n"
          "try:\n    kib = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
          "except OSError:\n    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
          "print('MAXRSS', kib, file=sys.stderr)\nsys.exit(rc)\n")


def run(src: Path, out: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB of this run's process, first summary line) of one ``pcc opt`` run."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _CHILD, "opt", str(src), "-o", str(out)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode:
        raise SystemExit(f"pcc opt failed on {src}:\n{r.stderr}")
    peak_kib = int(r.stderr.split("MAXRSS")[1].split()[0])
    return elapsed, peak_kib / 1024, out.read_text().splitlines()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"| configuration | blocks | sum edges | pcc opt wall (median of {args.repeat}) | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in CONFIGS.items():
            made = make()
            src = made if isinstance(made, Path) else Path(tmp) / "model.pc"
            if not isinstance(made, Path):
                src.write_text(made)
            runs = [run(src, Path(tmp) / "model.pcir") for _ in range(args.repeat)]
            summary = runs[0][2].split(", ")
            blocks, edges = summary[1].split()[0], int(summary[3].split()[0])
            print(f"| {name} | {blocks} | {edges:,} | {statistics.median(r[0] for r in runs):.2f} s | "
                  f"{max(r[1] for r in runs):.0f} MiB |")


if __name__ == "__main__":
    main()
