"""Where a training step's GPU time goes: per-kernel totals of one pcc training step (torch.profiler).

Run: ``python bench/profile_step.py --mnist PATH/t10k-images-idx3-ubyte.gz --latents 128 --batch 512``
(``--structure hmm``: pcc's HMM of length 128 over the first 128 pixels, the harness's HMM configuration;
``--config rat64``: a harness configuration, built by PyJuice and converted, exactly as bench/vs_pyjuice.py does).
Prints, per kernel name, the summed CUDA time of ``--steps`` eager steps divided by the number of steps.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import time

import torch

import pcc
from pcc import data as datasets
from pcc.backend import codegen
from pcc.backend import plan as planning
from pcc.backend.plan import InputOp
from pcc.backend.runtime import CircuitModel
from pcc.backend.triton_exec import TritonExecutor
from pcc.frontend import load_text
from pcc.passes import DEFAULT_PIPELINE
from pcc.structures import hclt
from pcc.structures.hmm import hmm_source
from vs_pyjuice import KNOBS, data_for, knob_value, set_knob, structure  # bench/: this script's folder


NEVER = 1 << 62  # a DENSE_MIN_WORK no op reaches


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def profile(model: CircuitModel, xb: torch.Tensor, steps: int) -> list[tuple[str, float, int]]:
    """(kernel name, ms per step, launches per step), largest first."""
    model.use_graphs = False
    for _ in range(3):
        model.em_step(xb, step_size=0.1, pseudocount=0.1)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            model.em_step(xb, step_size=0.1, pseudocount=0.1)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0:
            rows.append((e.key[:70], t / 1000 / steps, e.count // steps))
    return sorted(rows, key=lambda r: -r[1])


def _converted(name: str, images):
    """The ``.pc`` text of harness configuration ``name`` (PyJuice's DAG, converted), its title and data."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from pcc.interop.pyjuice import convert
    x = data_for(name, images.astype(np.int64))
    folder = Path(tempfile.mkdtemp())
    path = convert(structure(name, x), folder / f"{name}.pc")
    return Path(path), f"{name} (PyJuice's DAG, converted)", x.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--structure", choices=("hclt", "hmm"), default="hclt")
    ap.add_argument("--latents", type=int, default=128)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", default="ieee", help="comma-separated tl.dot input precisions to compare")
    ap.add_argument("--fill", type=int, default=None, help="codegen fill override (0: whole launches)")
    ap.add_argument("--config", help="a bench/vs_pyjuice.py configuration (e.g. rat64, pd64) instead of --structure")
    ap.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pass pipeline (e.g. with layerize{max-prod-padding=1.25})")
    ap.add_argument("--dense-min-work", default=str(codegen.DENSE_MIN_WORK),
                    help="comma-separated codegen.DENSE_MIN_WORK values to compare (0: every dense op on the dense "
                         "kernels, never: none)")
    ap.add_argument("--recompute", default="on", help="comma-separated on/off/sums/all (on: sums): what the backward "
                    "computes again instead of keeping (valuemap.recomputed)")
    for flag, (module, name, what) in KNOBS.items():
        ap.add_argument(f"--{flag}", default=str(knob_value(flag)),
                        help=f"comma-separated {module.__name__.split('.')[-1]}.{name} values to compare ({what})")
    ap.add_argument("--input-chunks", default=str(planning.INPUT_CHUNKS),
                    help="comma-separated plan.INPUT_CHUNKS values to compare (input ops cut into pieces below "
                         "their first readers; each value compiles the circuit again)")
    args = ap.parse_args()
    x = datasets.load(args.mnist)
    start = time.perf_counter()
    if args.config:
        text, title, x = _converted(args.config, x)
    elif args.structure == "hmm":
        x = x[:, :128]
        text, title = hmm_source(128, args.latents, 256), f"HMM 128x256 L={args.latents}"
    else:
        text, title = hclt(x, args.latents, "categorical", num_cats=256), f"HCLT 784x256 L={args.latents}"
    circuit = pcc.parse(text) if args.config else load_text(text, f"{args.structure}.pc")
    optimized = pcc.optimize(circuit, args.pipeline)
    print(f"{title}: parsed and optimized in {time.perf_counter() - start:.1f}s", flush=True)
    xb = torch.as_tensor(x[:args.batch], device="cuda", dtype=torch.float32)
    for chunks in args.input_chunks.split(","):
        model = None  # the previous setting's buffers go before the next one's peak is measured
        gc.collect()
        torch.cuda.empty_cache()
        planning.INPUT_CHUNKS = int(chunks)
        model = CircuitModel(optimized, "cuda", executor="triton")
        print(f"INPUT_CHUNKS {chunks}: {sum(isinstance(op, InputOp) for ops in model.plan.layers for op in ops)} "
              f"input ops", flush=True)
        compare(model, xb, args)


def _sum_flows(model: CircuitModel, xb: torch.Tensor) -> torch.Tensor:
    """The sum weights' parameter flows of batch ``xb`` at the model's parameters (float64, on the GPU)."""
    model.accumulated = 0
    model.accumulate(xb)
    model.accumulated = 0
    return model.flows.sum_w.double().clone()


def compare(model: CircuitModel, xb: torch.Tensor, args: argparse.Namespace) -> None:
    """Every setting of ``args`` on ``model``: accuracy against the generic fp32 kernels, kernel profile, step."""
    knobs = [(flag, values.split(",")) for flag, values in vars(args).items() if flag.replace("_", "-") in KNOBS]
    settings = itertools.product(args.precision.split(","), args.dense_min_work.split(","), args.recompute.split(","),
                                 *[values for _, values in knobs])
    for precision, work, again, *chosen in settings:
        for (flag, _), value in zip(knobs, chosen):
            set_knob(flag.replace("_", "-"), int(value))
        codegen.DENSE_MIN_WORK = NEVER
        model.executor = TritonExecutor(model.plan, model.device_, precision="ieee")
        reference = model.log_prob(xb).double()  # at the current parameters (earlier settings trained them)
        ref_flows = _sum_flows(model, xb)
        codegen.DENSE_MIN_WORK = NEVER if work == "never" else int(work)
        model.executor = TritonExecutor(model.plan, model.device_, precision=precision, fill=args.fill,
                                        recompute="sums" if again == "on" else again)
        torch.cuda.reset_peak_memory_stats()
        err = float((model.log_prob(xb).double() - reference).abs().max() / reference.abs().max())
        flow_err = float((_sum_flows(model, xb) - ref_flows).abs().max() / ref_flows.abs().max())
        rows = profile(model, xb, args.steps)
        model.use_graphs = True
        graph_ms = median_ms(lambda: model.em_step(xb, step_size=0.1, pseudocount=0.1), 20)
        picked = ", ".join(f"{flag.replace('_', '-')} {value}" for (flag, _), value in zip(knobs, chosen))
        print(f"precision {precision}, DENSE_MIN_WORK {work}, recompute {again}, {picked}: "
              f"LL rel err vs ieee (generic kernels) {err:.1e}, sum-weight flows {flow_err:.1e}; "
              f"step with CUDA graph {graph_ms:.3f} ms (median of 20); peak {torch.cuda.max_memory_allocated() >> 20} MiB")
        print(f"{'kernel':70s} {'ms/step':>9s} {'launches':>9s}")
        for name, ms, n in rows[:12]:
            print(f"{name:70s} {ms:9.3f} {n:9d}")
        print(f"{'total':70s} {sum(r[1] for r in rows):9.3f}")


if __name__ == "__main__":
    main()
