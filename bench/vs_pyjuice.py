"""pcc against PyJuice 2.6.3 on one GPU, in one process: the same circuits, parameters and data.

For each configuration PyJuice builds the structure with its own ``pyjuice.structures`` builder and
compiles it; ``pcc.interop.pyjuice.convert`` brings that very node DAG (and PyJuice's initial parameters)
over to a ``.pc`` file, which pcc compiles. Both then train on the same MNIST batches:

* compile: PyJuice ``juice.compile(ns)`` + ``.to(cuda)``; pcc ``pcc.compile(pc_file, "cuda")`` (parse,
  passes, plan, parameters on the GPU). The conversion itself is reported apart.
* step: forward + backward (flows) + mini-batch EM (step 0.1, pseudocount 0.1), PyJuice with its CUDA
  graphs recorded (``record_cudagraph=True``) and its CUTLASS kernels when the wheel is installed, pcc with
  its whole-step CUDA graph; median over ``--steps`` timed steps after warm-up (CUDA events).
* forward: log-likelihoods only, both with CUDA graphs.
* peak: ``torch.cuda.max_memory_allocated`` over compile + warm-up + timed steps, each system alone on
  the GPU (the other's memory is freed first); own: the peak minus what was allocated when the system's
  phase began (the data batch and PyJuice's node DAG, which both phases hold). A phase begins after the
  structure is built (from run 86 on: before, PyJuice's phase included HCLT's Chow-Liu learning, and both
  phases the 32 MiB of cuBLAS workspaces that learning leaves; :func:`fresh_memory`).
* check: log-likelihoods of a batch agree before and after one identical EM step.
* precisions: pcc runs once per ``--precisions`` entry; the first (``tf32x3``: fp32 accuracy) is the main
  row, the others (``bf16``: the reduced mode; PyJuice's CUTLASS sum kernels multiply in bf16 too) are
  reported beside it with their own timings and checks.
* fresh compile (``--fresh-compile``): each system's compile timed again in a Python process of its own,
  started for it (imports and CUDA context made before the clock starts; PyJuice's structure built there
  first, untimed): what a user who compiles one model pays, without the other system's objects in the
  process. The report then shows those seconds and their ratio in the compile column.
* floor: DESIGN.md §5, ``max(6 E B / 368 TFLOP/s, 16 N B / 3.0 TB/s)``; "floor %" is floor / pcc's step.

Run (on the GPU machine): ``python bench/vs_pyjuice.py --mnist t10k-images-idx3-ubyte.gz [--configs ...]``.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import pcc
from pcc import data as datasets
from pcc.backend import arena, codegen, flowmap, folding, fusion, triton_exec
from pcc.backend.valuemap import LEVELS
from pcc.passes import block_edges
from pcc.interop.pyjuice import convert

TF32_FLOPS, COPY_BYTES = 368e12, 3.0e12  # DESIGN.md §5, measured on the H100 used here
STEP, PSEUDOCOUNT = 0.1, 0.1
PCC_SETTINGS: dict = {}  # pcc options other than the defaults (--recompute and the KNOBS), in each row
# pcc settings the benchmark tools set from the command line (here and bench/profile_step.py):
# --FLAG -> (module, attribute, what it does)
KNOBS = {
    "cat-fill": (codegen, "CAT_FILL", "categorical counts split their batch until a launch has that many programs; "
                 "0: never"),
    "cat-transposed": (codegen, "CAT_TRANSPOSED_BELOW", "categorical-count tiles of fewer rows put the one-hot first "
                       "in their products; 0: never"),
    "cat-em": (codegen, "CAT_EM_MAX_BATCH", "mini-batch EM steps of at most this many samples update untied "
               "categorical tables in their counting launches (no count table); 0: never"),
    "cat-em-kb": (codegen, "CAT_EM_KB", "categories per program of --cat-em's counting launches; 0: the counts' own "
                  "block"),
    "scale-kmax": (codegen, "SCALE_KMAX", "sum ops of at least this many child tiles per parent tile compute their "
                   "parents' G once (kernels.sum_scale, one launch per op) in training steps"),
    "walign": (codegen, "WALIGN", "1: the generic sum kernels load weight rows as 16-byte vectors where every base and "
               "stride is a multiple of 4 (SumOp.walign); 0: 4-byte loads"),
    "walign-params": (codegen, "WALIGN_PARAMS", "1: sum_bwd_params takes --walign's hint too (slower on an H100); 0: "
                      "its weight loads stay 4-byte"),
    "cat-batch": (codegen, "CAT_BATCH", "samples per batch block of the categorical counts' loop (a power of two, "
                  "at least 16)"),
    "cat-stages": (codegen, "CAT_STAGES", "pipeline depth of the categorical counts' loop over the batch; 1: none"),
    "param-stages": (codegen, "PARAM_STAGES", "pipeline depth of the parameter flows' loop over the batch; 1: none"),
    "skip-padding": (codegen, "SKIP_PADDING", "1: products' forward and gathered backward do not read their padding "
                     "slots"),
    "fuse-inputs": (fusion, "FUSE", "1: categorical inputs that only products read have no rows in training steps; "
                    "their products compute them"),
    "share-flows": (flowmap, "SHARE", "1: products whose children only they read share their flow row with them "
                    "(no product backward launch)"),
    "max-holes": (block_edges, "MAX_HOLES", "block-sparse sums with at most N/100 matrix slots per edge are stored "
                  "as their whole matrix, holes held at zero, and run as dense sums (block-edges' max-holes)"),
    "dense-scratch": (codegen, "DENSE_SCRATCH", "a dense op's backward runs in chunks of groups whose scratch holds at "
                      "most 1/N of the value buffer's rows; 0: whole ops"),
    "dense-scratch-small": (codegen, "DENSE_SCRATCH_SMALL", "below DENSE_SCRATCH_FROM, a dense op's backward runs "
                            "in chunks of groups whose scratch holds at most 1/N of the buffer's rows; 0: whole ops"),
    "dense-onepass-p": (codegen, "DENSE_ONEPASS_P", "dense ops of at most N parents a group run their forward in one "
                        "pass with a running maximum (no shift pass, no transposed copy); 0: never"),
    "dense-fused-p": (codegen, "DENSE_FUSED_P", "dense ops of at most N parents a group compute the backward's shift "
                      "and G in one launch; 0: never"),
    "fold-products": (folding, "FOLD", "1: products of two children that only sums read are added in those sums' "
                      "forward loads where a layout needs no rows of them (no product launch in the forward)"),
    "joint-rows": (arena, "JOINT", "1: a training step's values and flows share one buffer (rows reused across both "
                   "kinds of lifetime); 0: two buffers"),
    "pdl": (triton_exec, "PDL", "programmatic dependent launch (Hopper): 0 off; 1 each launch starts its programs as "
            "the one before exits; 2 as 1, but a launch of at most one wave lets the next start at once; 3 every "
            "launch does"),
}


def knob_value(flag: str) -> int:
    """Knob ``flag``'s current value, as an int (the command line's and the rows' form)."""
    module, name, _ = KNOBS[flag]
    return int(getattr(module, name))


def set_knob(flag: str, value: int) -> None:
    """Set knob ``flag`` (its attribute keeps its type: a flag is a bool)."""
    module, name, _ = KNOBS[flag]
    setattr(module, name, type(getattr(module, name))(value))


def add_knob_flags(ap: argparse.ArgumentParser, note: str = "") -> None:
    """One ``--FLAG N`` option per knob, defaulting to its current value (``note``: appended to each help)."""
    for flag, (module, name, what) in KNOBS.items():
        ap.add_argument(f"--{flag}", type=int, default=knob_value(flag),
                        help=f"pcc's {module.__name__.split('.')[-1]}.{name} ({what}{note})")


def apply_knobs(args: argparse.Namespace) -> dict[str, int]:
    """Set the knobs whose option in ``args`` differs from their current value; those, by flag."""
    changed = {flag: getattr(args, flag.replace("-", "_")) for flag in KNOBS}
    changed = {flag: value for flag, value in changed.items() if value != knob_value(flag)}
    for flag, value in changed.items():
        set_knob(flag, value)
    return changed


@dataclass
class Row:
    """One configuration's measurements (times in ms, memory in MiB)."""

    name: str
    batch: int
    nodes: int = 0
    edges: int = 0
    convert_s: float = 0.0
    compile_s: dict = field(default_factory=dict)
    step_ms: dict = field(default_factory=dict)
    fwd_ms: dict = field(default_factory=dict)
    peak_mib: dict = field(default_factory=dict)
    base_mib: dict = field(default_factory=dict)  # allocated when the system's phase began (data, PyJuice's DAG)
    ll_err: float = float("nan")
    em_err: float = float("nan")
    extra_err: dict = field(default_factory=dict)  # precision -> [LL err, LL err after EM]
    error: str = ""
    pyjuice_error: str = ""  # PyJuice failed (e.g. out of memory) but pcc was still measured
    fresh_compile_s: dict = field(default_factory=dict)  # --fresh-compile: each system in a process of its own
    settings: dict = field(default_factory=dict)  # PCC_SETTINGS of the run (empty: pcc's defaults)

    @property
    def floor_ms(self) -> float:
        return 1e3 * max(6 * self.edges * self.batch / TF32_FLOPS, 16 * self.nodes * self.batch / COPY_BYTES)


def structure(name: str, x: torch.Tensor, device: str = "cuda"):
    """A PyJuice node DAG for configuration ``name`` (``hclt64``, ``pd32``, ``rat64``, ``hmm256``).

    ``device`` is where HCLT's Chow-Liu tree is learnt from ``x`` (the other structures ignore it); the
    DAG is the same on any device, so a CPU-only machine can build it with ``device="cpu"``.
    """
    import pyjuice as juice
    import pyjuice.nodes.distributions as dists

    kind, size = name.rstrip("0123456789"), int("".join(ch for ch in name if ch.isdigit()))
    if kind == "hclt":
        return juice.structures.HCLT(x[:5000].to(device), num_latents=size, num_bins=32, sigma=0.5 / 32,
                                     chunk_size=32)
    if kind == "pd":
        return juice.structures.PD(data_shape=(28, 28), num_latents=size, split_intervals=(4, 4),
                                   input_dist=dists.Categorical(num_cats=256))
    if kind == "rat":
        return juice.structures.RAT_SPN(num_vars=784, num_latents=size, depth=5, num_repetitions=8, num_pieces=2,
                                        input_dist=dists.Categorical(num_cats=256))
    if kind == "hmm":
        return juice.structures.HMM(seq_length=128, num_latents=size, num_emits=256)
    raise ValueError(f"unknown configuration {name!r}")


def data_for(name: str, images: np.ndarray) -> torch.Tensor:
    """MNIST test images as ``[N, 784]`` pixels, or for HMMs the first 128 pixels of each image as a sequence."""
    x = torch.as_tensor(images, dtype=torch.long)
    return x[:, :128].contiguous() if name.startswith("hmm") else x


def median_ms(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def fresh_memory() -> None:
    """Start a phase: free what is unreferenced, cuBLAS's workspaces included (HCLT's Chow-Liu learning leaves
    32 MiB of them, which neither system allocated; a system whose phase uses cuBLAS allocates them again, in its
    own peak), and reset the peak counter."""
    gc.collect()
    torch.cuda.synchronize()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


class PyJuiceRunner:
    """PyJuice's compiled TensorCircuit, driven the way its documentation trains with mini-batch EM."""

    def __init__(self, ns):
        import pyjuice as juice
        start = time.perf_counter()
        self.pc = juice.compile(ns)
        self.pc.to(torch.device("cuda"))
        torch.cuda.synchronize()
        self.compile_s = time.perf_counter() - start
        self.pc.update_parameters()  # the compiled parameters back onto the nodes, for the converter

        self.graphs = True

    def step(self, x: torch.Tensor, pseudocount: float = PSEUDOCOUNT) -> None:
        g = self.graphs
        self.pc.init_param_flows(flows_memory=0.0)
        self.pc(x, record_cudagraph=g, apply_cudagraph=g)
        self.pc.backward(x, flows_memory=1.0, record_cudagraph=g, apply_cudagraph=g)
        self.pc.mini_batch_em(step_size=STEP, pseudocount=pseudocount)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.pc(x, record_cudagraph=self.graphs, apply_cudagraph=self.graphs).reshape(-1)


class PccRunner:
    """pcc's compiled model of the converted ``.pc`` file."""

    def __init__(self, path: Path, precision: str = "tf32x3"):
        start = time.perf_counter()
        self.model = pcc.compile(path, device="cuda", executor="triton", precision=precision,
                                 recompute=PCC_SETTINGS.get("recompute", True))
        torch.cuda.synchronize()
        self.compile_s = time.perf_counter() - start
        self.nodes = self.model.plan.rows - 3
        self.edges = self.model.circuit.num_sum_edges()

        self.graphs = True

    def step(self, x: torch.Tensor) -> None:
        self.model.use_graphs = self.graphs
        self.model.em_step(x, step_size=STEP, pseudocount=PSEUDOCOUNT)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self.model.use_graphs = self.graphs
        return self.model.log_prob(x)


def one_step(runner, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-likelihoods before and after one EM step, without CUDA graphs (whose warm-up would run extra steps)."""
    runner.graphs = False
    before = runner.log_prob(xb).double()
    runner.step(xb)
    after = runner.log_prob(xb).double()
    runner.graphs = True
    return before, after


def measure(runner, xb: torch.Tensor, steps: int) -> tuple[float, float]:
    return median_ms(lambda: runner.step(xb), steps), median_ms(lambda: runner.log_prob(xb), steps)


def compile_once(system: str, name: str, mnist: str, pc: str | None = None, device: str = "cuda") -> float:
    """Seconds ``system`` (``pcc`` or ``pyjuice``) takes to compile configuration ``name`` in this process
    (run in a fresh one by :func:`fresh_compile_s`); pcc compiles the converted file ``pc``."""
    torch.zeros(1, device=device)  # the CUDA context is made here, outside the clock
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if system == "pcc":
        start = time.perf_counter()
        pcc.compile(pc, device=device, recompute=PCC_SETTINGS.get("recompute", True))
        sync()
        return time.perf_counter() - start
    import pyjuice as juice
    ns = structure(name, data_for(name, datasets.load(mnist).astype(np.int64)), device=device)
    start = time.perf_counter()
    juice.compile(ns).to(torch.device(device))
    sync()
    return time.perf_counter() - start


def fresh_compile_s(system: str, name: str, mnist: str, pc: Path | None = None, device: str = "cuda") -> float:
    """:func:`compile_once` in a new Python process (this script with ``--compile-once``)."""
    cmd = [sys.executable, __file__, "--compile-once", system, "--configs", name, "--mnist", str(mnist), "--device", device]
    cmd += [f"--{key.replace('_', '-')}={value}" for key, value in PCC_SETTINGS.items()]  # the same pcc settings
    done = subprocess.run(cmd + (["--pc", str(pc)] if pc else []), capture_output=True, text=True, timeout=1200)
    lines = [s for s in done.stdout.splitlines() if s.startswith("compile_s=")]
    if done.returncode or not lines:
        raise RuntimeError(f"{system} compile in a fresh process failed: {done.stderr.strip()[-300:]}")
    return float(lines[-1].split("=")[1])


def compare(name: str, images: np.ndarray, batch: int, steps: int, workdir: Path,
            precisions: tuple[str, ...] = ("tf32x3",), fresh: str | None = None) -> Row:
    """Both systems on configuration ``name`` at ``batch``; see the module docstring. ``fresh``: the MNIST
    path, to time each system's compile again in a process of its own (``--fresh-compile``)."""
    row = Row(name, batch, settings=dict(PCC_SETTINGS))
    clock = time.perf_counter()
    x = data_for(name, images)
    xb = x[:batch].cuda()
    ns = structure(name, x)  # harness work (HCLT learns its tree on the GPU), before PyJuice's phase begins
    fresh_memory()
    row.base_mib["pyjuice"] = torch.cuda.memory_allocated() / 2**20
    ll_pj = after_pj = pj = None
    try:
        pj = PyJuiceRunner(ns)
        row.compile_s["pyjuice"] = pj.compile_s
    except Exception as e:  # pcc is still measured (on PyJuice's initial parameters); the row says why not PyJuice
        _pyjuice_failed(row, e)
    start = time.perf_counter()
    path = convert(ns, workdir / f"{name}.pc")  # after juice.compile, which rewrites the DAG in place
    row.convert_s = time.perf_counter() - start
    if fresh:  # before pcc's model is built here; PyJuice's is held (GPU memory only: compiles are host work)
        for system in ("pyjuice", "pcc"):
            try:
                row.fresh_compile_s[system] = fresh_compile_s(system, name, fresh, path if system == "pcc" else None)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"  {name}: {e}", flush=True)
    if pj is not None:
        try:
            ll_pj, after_pj = one_step(pj, xb)
            print(f"  {name}: PyJuice built, compiled and checked in {time.perf_counter() - clock:.0f}s", flush=True)
            row.step_ms["pyjuice"], row.fwd_ms["pyjuice"] = measure(pj, xb, steps)
            row.peak_mib["pyjuice"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as e:
            ll_pj = after_pj = None
            _pyjuice_failed(row, e)
    pj = None
    fresh_memory()
    for i, precision in enumerate(precisions):
        key = "pcc" if i == 0 else f"pcc-{precision}"
        row.base_mib[key] = torch.cuda.memory_allocated() / 2**20
        ours = PccRunner(path, precision)
        row.compile_s[key], row.nodes = ours.compile_s, ours.nodes
        row.edges = ours.edges
        ll_pcc, after_pcc = one_step(ours, xb)
        errs = [float("nan")] * 2 if ll_pj is None else [
            float((ll_pcc - ll_pj).abs().max() / ll_pj.abs().max()),
            float((after_pcc - after_pj).abs().max() / after_pj.abs().max())]
        if i == 0:
            row.ll_err, row.em_err = errs
        else:
            row.extra_err[precision] = errs
        print(f"  {name}: pcc ({precision}) compiled and checked at {time.perf_counter() - clock:.0f}s", flush=True)
        row.step_ms[key], row.fwd_ms[key] = measure(ours, xb, steps)
        row.peak_mib[key] = torch.cuda.max_memory_allocated() / 2**20
        del ours
        fresh_memory()
    return row


def _pyjuice_failed(row: Row, e: Exception) -> None:
    row.pyjuice_error = f"{type(e).__name__}: {str(e)[:120]}"
    row.compile_s.pop("pyjuice", None)
    print(f"  {row.name}: PyJuice failed: {row.pyjuice_error}", flush=True)


def current_defaults() -> dict:
    """pcc's settings a row may record (``PCC_SETTINGS``), at their values in this checkout."""
    return {"recompute": "sums", **{flag.replace("-", "_"): knob_value(flag) for flag in KNOBS}}


def read_rows(paths: list[str]) -> list[Row]:
    """Rows from ``--jsonl`` files; a later row of the same configuration, batch and pcc settings replaces an
    earlier one. A setting a row recorded as non-default that is pcc's default now is dropped (a row measured
    with ``--param-stages 3`` before 3 became the default is a default row)."""
    rows: dict[tuple, Row] = {}
    defaults = current_defaults()
    for path in paths:
        for line in Path(path).read_text().splitlines():
            row = Row(**json.loads(line))
            row.settings = {k: v for k, v in row.settings.items() if defaults.get(k, object()) != v}
            rows[(row.name, row.batch, tuple(sorted(row.settings.items())))] = row
    return sorted(rows.values(), key=_order)


def _order(row: Row) -> tuple:
    """Batch, then structure (HCLT, PD, RAT-SPN, HMM), then size."""
    kind = row.name.rstrip("0123456789")
    kinds = ["hclt", "pd", "rat", "hmm"]
    return row.batch, kinds.index(kind) if kind in kinds else len(kinds), int(row.name[len(kind):] or 0)


def table(rows: list[Row]) -> str:
    """The markdown table of ``rows``; a column per extra precision when some row has one."""
    extra = sorted({p for r in rows for p in r.extra_err})
    head = ("| config | batch | nodes | sum edges | compile s pcc / PyJuice | step ms pcc / PyJuice (ratio) "
            "| fwd ms pcc / PyJuice (ratio) | peak MiB pcc / PyJuice (ratio) | own MiB pcc / PyJuice (ratio) "
            "| LL err | LL err after EM | floor % |"
            + "".join(f" {p}: step ms (ratio), fwd ms (ratio), LL err, after EM |" for p in extra) + "\n"
            + "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra))
    out = [head]
    for r in rows:
        if r.error:
            out.append(f"| {r.name} | {r.batch} | | | | {r.error} | | | | | | |" + " |" * len(extra))
            continue
        s, f, m = r.step_ms, r.fwd_ms, r.peak_mib
        why = f" (PyJuice: {r.pyjuice_error})" if r.pyjuice_error else ""
        out.append(f"| {_name(r)} | {r.batch} | {r.nodes:,} | {r.edges:,} | {_compile_cell(r)} "
                   f"| {_pair(s)}{why} | {_pair(f)} | {_pair(m, '.0f')} | {_own(r)} "
                   f"| {r.ll_err:.1e} | {r.em_err:.1e} | {100 * r.floor_ms / s['pcc']:.1f} |"
                   + "".join(_extra_cell(r, p) for p in extra))
    return "\n".join(out)


def _name(r: Row) -> str:
    """The configuration, with pcc's non-default settings: ``hclt32 [recompute=all]``."""
    return r.name + (f" [{', '.join(f'{k}={v}' for k, v in sorted(r.settings.items()))}]" if r.settings else "")


def _pair(d: dict, fmt: str = ".2f", ratio: bool = True) -> str:
    """``pcc / PyJuice (ratio)``; ``pcc / –`` where PyJuice has no number."""
    if "pyjuice" not in d:
        return f"{d['pcc']:{fmt}} / –"
    return f"{d['pcc']:{fmt}} / {d['pyjuice']:{fmt}}" + (f" ({d['pcc'] / d['pyjuice']:.2f})" if ratio else "")


def _compile_cell(r: Row) -> str:
    """``pcc / PyJuice`` seconds in the harness process; with ``--fresh-compile`` rows, also each in a process
    of its own, with its ratio: ``… ; fresh a / b (ratio)``."""
    cell = _pair(r.compile_s, ratio=False)
    if {"pcc", "pyjuice"} <= set(r.fresh_compile_s):
        cell += f"; fresh {_pair(r.fresh_compile_s)}"
    return cell


def _own(r: Row) -> str:
    """Peak minus what was allocated when each system's phase began (rows from before base_mib: "–")."""
    if "pcc" not in r.base_mib or "pyjuice" not in r.peak_mib:
        return "–"
    a, b = (r.peak_mib[k] - r.base_mib[k] for k in ("pcc", "pyjuice"))
    return f"{a:.0f} / {b:.0f} ({a / b:.2f})"


def _extra_cell(r: Row, precision: str) -> str:
    if precision not in r.extra_err:
        return " |"
    key, (ll, em) = f"pcc-{precision}", r.extra_err[precision]
    s, f = r.step_ms[key], r.fwd_ms[key]
    if "pyjuice" not in r.step_ms:
        return f" {s:.2f}, {f:.2f}, {ll:.1e}, {em:.1e} |"
    return f" {s:.2f} ({s / r.step_ms['pyjuice']:.2f}), {f:.2f} ({f / r.fwd_ms['pyjuice']:.2f}), {ll:.1e}, {em:.1e} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", help="t10k-images-idx3-ubyte.gz (MNIST's test images)")
    ap.add_argument("--report", nargs="+", metavar="JSONL", help="print the table of earlier runs' rows instead")
    ap.add_argument("--configs", default="hclt32,hclt64,hclt128,hclt256,hclt512,pd32,pd64,pd128,rat64,hmm256,hmm1024,hmm4096")
    ap.add_argument("--batch", default="512", help="comma-separated batch sizes")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precisions", default="tf32x3,bf16",
                    help="pcc's matrix-product precisions, comma-separated; the first is the main row")
    ap.add_argument("--jsonl", help="append each row as JSON to this file")
    ap.add_argument("--fresh-compile", action="store_true",
                    help="also time each system's compile in a Python process of its own (see the docstring)")
    ap.add_argument("--recompute", choices=LEVELS, default="sums",
                    help="pcc's recompute level (pcc.compile's recompute=; rows record a non-default one)")
    add_knob_flags(ap, "; rows record a non-default one")
    ap.add_argument("--compile-once", choices=("pcc", "pyjuice"), help=argparse.SUPPRESS)  # fresh_compile_s's child
    ap.add_argument("--pc", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.report:
        print(table(read_rows(args.report)))
        return
    if not args.mnist and not args.compile_once:
        ap.error("--mnist is required to run")
    if args.recompute != "sums":
        PCC_SETTINGS["recompute"] = args.recompute
    PCC_SETTINGS.update({flag.replace("-", "_"): value for flag, value in apply_knobs(args).items()})
    if args.compile_once:  # after the settings: the fresh process compiles what the run measures
        print(f"compile_s={compile_once(args.compile_once, args.configs, args.mnist, args.pc, args.device)}")
        return
    from importlib.metadata import version
    print(f"torch {torch.__version__}, triton {version('triton')}, pyjuice {version('pyjuice')}, "
          f"{torch.cuda.get_device_name()}", flush=True)
    images = datasets.load(args.mnist).astype(np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            for batch in [int(b) for b in args.batch.split(",")]:
                try:
                    row = compare(name, images, batch, args.steps, Path(tmp), tuple(args.precisions.split(",")),
                                  args.mnist if args.fresh_compile else None)
                except Exception as e:  # a configuration that fails is reported, the rest still run
                    row = Row(name, batch, error=f"{type(e).__name__}: {str(e)[:120]}")
                    fresh_memory()
                rows.append(row)
                print(json.dumps(row.__dict__), flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as fh:
                        fh.write(json.dumps(row.__dict__) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
