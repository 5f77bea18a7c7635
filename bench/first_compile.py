"""A process's first ``pcc.compile``: what a user who compiles one model pays, timed in fresh processes.

``bench/vs_pyjuice.py`` times pcc's compile in the harness process, after PyJuice's, where it moves 2-4x with
what ran before it; ``--fresh-compile`` there times one fresh process per system. This script times only pcc,
``--repeat`` fresh processes per ``.pc`` file and variant, the variants alternated so that a drift of the
machine falls on all of them, and prints the median, min and max seconds, the page faults and the peak RSS.

Each child imports torch and pcc and makes the CUDA context before its clock starts, then times
``pcc.compile(path, device, executor="triton")`` (``torch.cuda.synchronize`` included).

Variants (``--variants``, comma-separated):

* ``default``: as a user runs it;
* ``no-thp``: numpy's transparent-huge-page advice off for the compile (numpy advises ``MADV_HUGEPAGE`` on
  its large arrays; where the kernel's ``defrag`` setting is ``madvise``, a first touch may then wait for the
  kernel to compact memory into a huge page).

Make the files with ``bench/compile_profile.py --config C --mnist ... --repeat 0 --top 0 --keep DIR``, then:
``python bench/first_compile.py DIR/hclt256.pc DIR/pd128.pc --device cuda --repeat 5``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
import pcc
path, device, variant = sys.argv[1:4]
if device == "cuda":
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
if variant == "no-thp":
    np._core.multiarray._set_madvise_hugepage(False)
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
model = pcc.compile(path, device=device, executor="triton")
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"s": seconds, "faults": after.ru_minflt - before.ru_minflt, "rss_mib": after.ru_maxrss / 1024}))
"""


def one(path: str, device: str, variant: str) -> dict:
    """One child process's first compile of ``path``."""
    done = subprocess.run([sys.executable, "-c", CHILD, path, device, variant], capture_output=True, text=True)
    lines = [s for s in done.stdout.splitlines() if s.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"first compile of {path} ({variant}) failed: {done.stderr.strip()[-400:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help=".pc files (converted structures)")
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per file and variant")
    ap.add_argument("--variants", default="default,no-thp")
    args = ap.parse_args()
    variants = args.variants.split(",")
    print("| file | variant | first compile s (median, min-max) | page faults | peak RSS MiB |")
    print("|---|---|---:|---:|---:|")
    for path in args.files:
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.repeat):
            for v in variants:
                runs[v].append(one(path, args.device, v))
        for v, rs in runs.items():
            s = [r["s"] for r in rs]
            print(f"| {path} | {v} | {statistics.median(s):.3f} ({min(s):.3f}-{max(s):.3f}) "
                  f"| {statistics.median(r['faults'] for r in rs):.0f} | {max(r['rss_mib'] for r in rs):.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
