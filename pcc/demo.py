"""The main job of ``./run.sh demo``: compile a model through every stage and report on each.

Compiles ``examples/pd8x8.pc`` (or the .pc file named on the command line) with the default pipeline,
writes every stage to ``out/demo/`` and prints a summary of each stage and the reference
log-likelihood of a few random images. (Training arrives with the backend.)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from pcc.api import write_ir
from pcc.frontend import load_file
from pcc.ir import log_likelihood
from pcc.passes import DEFAULT_PIPELINE, Options, parse_pipeline, run_pipeline


def main(argv: list[str]) -> int:
    """Run the demo on ``argv[0]`` (default: the 8x8 PD example); returns an exit code."""
    src = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "examples" / "pd8x8.pc"
    out = Path("out/demo")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    circuit = load_file(src)
    print(f"parsed {src}: {len(circuit.variables)} variables, {len(circuit.blocks)} blocks, "
          f"{circuit.num_sum_edges()} sum edges ({time.perf_counter() - start:.2f}s)")
    write_ir(circuit, out / "01-ir.pcir")
    stages = iter(range(2, 100))
    opts = Options(on_ir=lambda name, c: write_ir(c, out / f"{next(stages):02d}-{name}.pcir"), time_passes=True,
                   out=sys.stdout)
    layered = run_pipeline(circuit, parse_pipeline(DEFAULT_PIPELINE), opts)
    print(f"layered: {layered.attrs['layers']} layers, {len(layered.blocks)} blocks; stages written to {out}/")
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, max(v.domain.categories, 1), size=4) for v in layered.variables], 1)
    print("reference log-likelihood of 4 random inputs:", np.round(log_likelihood(layered, x), 3))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
