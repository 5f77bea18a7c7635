"""What is allocated at the peak of one pcc training step: the live tensors at the moment of most memory,
grouped by the line that allocated them (a line of the generated step code, or of pcc's runtime).

Run: ``python bench/peak_memory.py --mnist PATH/t10k-images-idx3-ubyte.gz --config hclt32 --batch 8192``
(``--config``: a bench/vs_pyjuice.py configuration, built by PyJuice and converted, as the harness does).
Everything from the model's compile on runs under torch's allocation recorder, as the harness runs it: three
training steps, the first of which warms up and records the step's CUDA graph.
"""
from __future__ import annotations

import argparse
import collections

import torch

import pcc
from pcc import data as datasets
from pcc.backend.runtime import CircuitModel
from profile_step import _converted  # bench/: this script's folder
from vs_pyjuice import add_knob_flags, apply_knobs

GENERATED = "<pcc generated kernels>"
MiB = 1 << 20


def _where(frames: list[dict], source: list[str]) -> str:
    """The allocating line: the generated code's line if any frame is in it, else the first pcc frame."""
    for fr in frames:
        if fr["filename"] == GENERATED:
            return f"generated:{fr['line']}: {source[fr['line'] - 1].strip()[:90]}"
    for fr in frames:
        name = fr["filename"]
        if "/pcc" in name or "/backend/" in name:
            return f"{name.rsplit('/', 2)[-2]}/{name.rsplit('/', 1)[-1]}:{fr['line']} ({fr['name']})"
    return frames[0]["filename"] + f":{frames[0]['line']}" if frames else "?"


def live_at_peak(trace: list[dict]) -> tuple[int, list[dict]]:
    """``(peak bytes, the allocations alive then)`` from a recorder trace (allocations and completed frees)."""
    live, now, peak, at_peak = {}, 0, 0, []
    for ev in trace:
        if ev["action"] == "alloc":
            live[ev["addr"]] = ev
            now += ev["size"]
            if now > peak:
                peak, at_peak = now, list(live.values())
        elif ev["action"] in ("free_requested", "free_completed") and ev["addr"] in live:
            now -= live.pop(ev["addr"])["size"]
    return peak, at_peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--top", type=int, default=15)
    add_knob_flags(ap)
    args = ap.parse_args()
    changed = ", ".join(f"--{flag} {value}" for flag, value in apply_knobs(args).items())
    path, title, x = _converted(args.config, datasets.load(args.mnist))
    xb = torch.as_tensor(x[:args.batch], device="cuda", dtype=torch.float32)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
    model = CircuitModel(pcc.optimize(pcc.parse(path)), "cuda", executor="triton")
    source = model.executor.source.splitlines()
    for _ in range(3):  # as the harness: the step's graph recorded (warm-up, capture), then replayed
        model.em_step(xb, step_size=0.1, pseudocount=0.1)
    torch.cuda.synchronize()
    trace = torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()]
    torch.cuda.memory._record_memory_history(enabled=None)
    peak, live = live_at_peak(trace)
    by = collections.Counter()
    for ev in live:
        by[_where(ev.get("frames", []), source)] += ev["size"]
    print(f"{title} at batch {args.batch}{' (' + changed + ')' if changed else ''}: pcc's own peak (compile, graph capture, steps) "
          f"{(torch.cuda.max_memory_allocated() - base) / MiB:.0f} MiB; live at the recorded peak {peak / MiB:.0f} MiB:")
    for where, size in by.most_common(args.top):
        print(f"  {size / MiB:9.1f} MiB  {where}")


if __name__ == "__main__":
    main()
