"""Where ``pcc.compile`` spends its time on a converted PyJuice structure, stage by stage.

Builds PyJuice's node DAG for ``--config`` (any name ``bench/vs_pyjuice.py``'s ``structure`` accepts:
``pd32``, ``hclt128``, ``rat64``, ``hmm1024``, ...) and converts it with ``pcc.interop.pyjuice.convert``
into the ``.pc`` file that the harness gives pcc. The harness converts *after* ``juice.compile``, which
rewrites the DAG in place (identity pass-through sums below sums whose children sit lower: ~1,100 on
PD), so this script does the same: with ``--pyjuice`` (CUDA only) it runs and times ``juice.compile`` +
``.to(cuda)`` first, as vs_pyjuice.py does; without it, it applies just that rewrite (PyJuice's own
``TensorCircuit._create_node_layers``, which works on a CPU). ``--as-built`` converts the DAG unrewritten.
Then:

1. runs the steps of ``pcc.compile`` one by one (under its garbage-collector pause, as ``pcc.compile``
   runs) and prints each stage's wall time — parse + lower (text → AST → verified IR), each pass (its
   verification included), plan, model (parameters, executor, EM tables) — and, below them, the time
   spent in the functions of :data:`HOOKS` and in Python's garbage collector;
2. times ``pcc.compile(path, device=..., executor=...)`` end to end ``--repeat`` times (the staged run
   is the process's first compile: it also pays one-time costs, such as first touches of fresh memory);
3. prints a cProfile of one more ``pcc.compile``, the top ``--top`` functions by cumulative time.

GPU machine: ``python bench/compile_profile.py --config pd32 --mnist t10k-images-idx3-ubyte.gz
--device cuda --executor triton --pyjuice``. CPU: ``--device cpu`` (``--executor triton`` needs
``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import importlib
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_pyjuice as harness  # noqa: E402

import pcc  # noqa: E402
from pcc import data as datasets  # noqa: E402
from pcc.interop.pyjuice import convert  # noqa: E402
from pcc.passes import DEFAULT_PIPELINE, parse_pipeline  # noqa: E402

# Functions timed inside the stages: (module, attribute, label). Each is wrapped while the stages run,
# so the label's time is what the stage spent in that function (calls from anywhere inside it).
HOOKS = [
    ("pcc.frontend.lower", "parse_source", "parse: text -> AST"),
    ("pcc.frontend.lower", "verify", "lower: verify"),
    ("pcc.ir.tensorfile", "load", "lower: tensor file"),
    ("pcc.passes.manager", "verify", "passes: verify after each"),
    ("pcc.backend.runtime", "Params", "model: Params"),
    ("pcc.backend.runtime", "make_executor", "model: executor"),
    ("pcc.backend.triton_exec", "generate", "model: executor: codegen"),
    ("pcc.backend.triton_exec", "tables", "model: executor: index tables"),
    ("pcc.backend.triton_exec", "upload_tables", "model: executor: table upload"),
    ("pcc.backend.runtime", "EMUpdate", "model: EMUpdate"),
    ("pcc.backend.runtime", "Flows", "model: Flows"),
]
GC_LABEL = "Python GC pauses"


class Clock:
    """Wall-clock totals per label; ``sync`` is called before every reading (CUDA work is asynchronous)."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.totals: dict[str, float] = defaultdict(float)
        self.order: list[str] = []

    @contextlib.contextmanager
    def stage(self, label: str):
        """Add the wall time of the ``with`` body to ``label``."""
        if label not in self.order:
            self.order.append(label)
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.totals[label] += time.perf_counter() - start

    def wrap(self, fn, label: str):
        """``fn`` timed under ``label`` (classes: their constructors and class methods, via a thin proxy)."""
        if isinstance(fn, type):
            return _TimedClass(fn, self, label)

        def timed(*args, **kwargs):
            with self.stage(label):
                return fn(*args, **kwargs)
        return timed


class _TimedClass:
    """Stands in for a class: calling it or its class methods is timed; everything else passes through."""

    def __init__(self, cls, clock: Clock, label: str) -> None:
        self._cls, self._clock, self._label = cls, clock, label

    def __call__(self, *args, **kwargs):
        with self._clock.stage(self._label):
            return self._cls(*args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._cls, name)
        return self._clock.wrap(attr, self._label) if callable(attr) else attr


@contextlib.contextmanager
def gc_timed(clock: Clock, label: str = GC_LABEL):
    """Add the time of the cyclic garbage collector's pauses during the ``with`` body to ``label``."""
    started: list[float] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            clock.totals[label] += time.perf_counter() - started.pop()

    clock.totals[label] += 0.0
    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


@contextlib.contextmanager
def hooked(clock: Clock):
    """Wrap the functions of :data:`HOOKS` for the ``with`` body; a hook whose target is gone is skipped."""
    saved = []
    for module_name, attr, label in HOOKS:
        module = importlib.import_module(module_name)
        if hasattr(module, attr):
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, clock.wrap(getattr(module, attr), label))
    try:
        yield
    finally:
        for module, attr, original in reversed(saved):
            setattr(module, attr, original)


def staged_compile(path: Path, device: torch.device, executor: str, sync) -> tuple[Clock, object]:
    """``pcc.compile``'s steps one at a time (the same calls), each timed; returns the clock and the model."""
    from pcc.backend.plan import build_plan
    from pcc.backend.runtime import CircuitModel
    from pcc.passes.manager import run_pipeline

    clock = Clock(sync)
    # pcc.compile runs with the cyclic collector paused (pcc.api.gc_paused); so do its steps here. Code
    # from before that change has no gc_paused: its steps then run with the collector on, as it did.
    paused = getattr(importlib.import_module("pcc.api"), "gc_paused", contextlib.nullcontext)
    with hooked(clock), gc_timed(clock), paused():
        with clock.stage("parse + lower (pcc.parse)"):
            circuit = pcc.parse(path)
        for p in parse_pipeline(DEFAULT_PIPELINE):
            with clock.stage(f"pass {p.name}"):
                circuit = run_pipeline(circuit, [p])
        with clock.stage("plan (build_plan)"):
            plan = build_plan(circuit)
        with clock.stage("model (CircuitModel)"):
            model = CircuitModel(circuit, device, executor=executor, plan=plan)
    return clock, model


def report_stages(clock: Clock) -> None:
    """The stage table: top-level stages with their hooked parts indented below them."""
    stages = top_stages(clock)
    total = clock_total(clock)
    print(f"{'stage':44s} {'seconds':>8s} {'share':>6s}")
    for s in stages:
        print(f"{s:44s} {clock.totals[s]:8.3f} {100 * clock.totals[s] / total:5.1f}%")
    for label in [label for _, _, label in HOOKS if label in clock.totals] + [GC_LABEL]:
        print(f"  {'of which ' + label:42s} {clock.totals[label]:8.3f}")
    print(f"{'total':44s} {total:8.3f}")


def top_stages(clock: Clock) -> list[str]:
    """The labels of the top-level stages, in order (not the hooked functions inside them)."""
    inner = {label for _, _, label in HOOKS} | {GC_LABEL}
    return [s for s in clock.order if s not in inner]


def clock_total(clock: Clock) -> float:
    """The sum of the top-level stages (what ``pcc.compile`` costs)."""
    return sum(clock.totals[s] for s in top_stages(clock))


def describe(path: Path, model) -> None:
    side = path.with_suffix(".safetensors")
    text = path.read_text()
    print(f"{path.name}: {text.count(chr(10))} lines, {len(text) / 2**20:.1f} MiB; {side.name}: "
          f"{side.stat().st_size / 2**20:.1f} MiB; {len(model.circuit.blocks)} blocks after passes, "
          f"{model.plan.rows - 3:,} nodes, {model.circuit.num_sum_edges():,} sum edges")


def timed_compiles(path: Path, device: torch.device, executor: str, sync, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        pcc.compile(path, device=device, executor=executor)
        sync()
        times.append(time.perf_counter() - start)
    return times


def profile_compile(path: Path, device: torch.device, executor: str, sync, top: int) -> None:
    prof = cProfile.Profile()
    prof.enable()
    pcc.compile(path, device=device, executor=executor)
    sync()
    prof.disable()
    pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def pyjuice_compile_s(ns, device: torch.device) -> float:
    """``juice.compile(ns)`` + ``.to(device)``, timed as bench/vs_pyjuice.py times it.

    Like the harness, it then copies the compiled parameters back onto the nodes (for the converter) and
    frees the compiled circuit. PyJuice's compile rewrites the DAG in place (see :func:`pyjuice_rewrite`).
    """
    import pyjuice as juice
    if device.type != "cuda":
        raise SystemExit("--pyjuice needs --device cuda (PyJuice compiles on CUDA only)")
    torch.cuda.synchronize()
    start = time.perf_counter()
    pc = juice.compile(ns)
    pc.to(device)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    pc.update_parameters()
    del pc
    gc.collect()
    torch.cuda.empty_cache()
    return seconds


def pyjuice_rewrite(ns) -> None:
    """The in-place DAG rewrite of ``juice.compile``, without compiling (works on a CPU).

    PyJuice's compile (``TensorCircuit._create_node_layers``) puts an identity pass-through sum (and a
    one-child product) between a sum and every child of a lower depth: PD gains ~1,100 such sums. The
    harness converts after PyJuice's compile, so its ``.pc`` files have them; pcc's collapse-chains folds
    them away again. That method reads nothing but ``root_ns``, so a stand-in object is enough.
    """
    from pyjuice.model.tensorcircuit import TensorCircuit
    TensorCircuit._create_node_layers(SimpleNamespace(root_ns=ns))


def prepare(args, folder: Path) -> tuple[Path, float | None]:
    """Build the structure, compile it with PyJuice (``--pyjuice``) or apply PyJuice's rewrite, convert.

    Returns the ``.pc`` path and PyJuice's compile seconds (None without ``--pyjuice``).
    """
    images = datasets.load(args.mnist).astype(np.int64)
    x = harness.data_for(args.config, images)
    torch.manual_seed(0)
    start = time.perf_counter()
    ns = harness.structure(args.config, x, device=args.device)
    print(f"{args.config}: PyJuice structure built in {time.perf_counter() - start:.1f}s", flush=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # CUDA's context is made here, not inside a timed stage
        torch.cuda.synchronize()
    pj = None
    if args.pyjuice:
        pj = pyjuice_compile_s(ns, device)
    elif not args.as_built:
        pyjuice_rewrite(ns)
    start = time.perf_counter()
    path = convert(ns, folder / f"{args.config}.pc")
    print(f"converted in {time.perf_counter() - start:.1f}s", flush=True)
    return path, pj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="pd32", help="a bench/vs_pyjuice.py configuration (pd32, hclt128, ...)")
    ap.add_argument("--mnist", required=True, help="MNIST's t10k-images-idx3-ubyte.gz (HCLT learns its tree from it)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--executor", default="auto", choices=["auto", "triton", "torch"])
    ap.add_argument("--repeat", type=int, default=2, help="end-to-end pcc.compile timings")
    ap.add_argument("--top", type=int, default=25, help="cProfile rows (0: no profile)")
    ap.add_argument("--pyjuice", action="store_true",
                    help="time juice.compile first and convert its rewritten DAG, as vs_pyjuice.py does (CUDA only)")
    ap.add_argument("--as-built", action="store_true",
                    help="convert the DAG as the builder made it (without PyJuice's compile-time pass-through sums)")
    ap.add_argument("--keep", metavar="DIR", help="write the converted .pc/.safetensors here and keep them")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path, pj = prepare(args, folder)
        clock, model = staged_compile(path, device, args.executor, sync)
        describe(path, model)
        del model
        print(f"\npcc.compile stages (first compile of this process; device {device}, executor {args.executor}):")
        report_stages(clock)
        times = timed_compiles(path, device, args.executor, sync, args.repeat)
        print("\npcc.compile end to end: " + ", ".join(f"{t:.3f}s" for t in times), flush=True)
        if pj is not None:
            print(f"PyJuice compile + .to({device}) (before pcc, as in vs_pyjuice.py): {pj:.3f}s; "
                  f"pcc / PyJuice = {clock_total(clock) / pj:.3f} (first compile), {min(times) / pj:.3f} (best)")
        if args.top:
            print(f"\ncProfile of one more pcc.compile (top {args.top} by cumulative time):")
            profile_compile(path, device, args.executor, sync, args.top)


if __name__ == "__main__":
    main()
