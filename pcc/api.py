"""The staged Python API: parse → optimize → (backend, later) compile. Each stage's result prints."""
from __future__ import annotations

import contextlib
import functools
import gc
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from pcc.frontend import load_file, load_text
from pcc.ir import Circuit, parse_file, print_circuit, verify
from pcc.ir import tensorfile
from pcc.passes import DEFAULT_PIPELINE, Options, parse_pipeline, run_pipeline


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the ``with`` body (its previous state restored after).

    Compiling allocates hundreds of thousands of small objects; each allocation burst triggers collections
    that walk *every* live object of the process, so in a process that holds a large heap (PyJuice, torch,
    a notebook's data) the pauses, not the compiler, dominated: 11 of 13 s for a converted PD-32. The
    compiler makes no reference cycles of note; anything left is collected once the collector is back.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _without_gc_pauses(fn):
    """Decorator: run ``fn`` inside :func:`gc_paused`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with gc_paused():
            return fn(*args, **kwargs)
    return wrapper


@_without_gc_pauses
def parse(source: str | Path) -> Circuit:
    """A circuit from a ``.pc``/``.pcir`` path, or from ``.pc`` source text."""
    text = str(source)
    if "\n" not in text and Path(text).suffix in (".pc", ".pcir"):
        return read_ir(text) if text.endswith(".pcir") else load_file(text)
    return load_text(text)


def read_ir(path: str | Path) -> Circuit:
    """A verified circuit from a ``.pcir`` file (and its sidecar)."""
    circuit = parse_file(path)
    verify(circuit)
    return circuit


@_without_gc_pauses
def optimize(circuit: Circuit, pipeline: str = DEFAULT_PIPELINE, options: Options | None = None) -> Circuit:
    """The circuit after the passes of ``pipeline`` (verified after each pass by default)."""
    return run_pipeline(circuit, parse_pipeline(pipeline), options)


@_without_gc_pauses
def compile(source: str | Path, device=None, executor: str = "auto", pipeline: str = DEFAULT_PIPELINE,
            precision: str = "tf32x3", recompute: bool | str = True, fuse_inputs: bool | None = None):
    """The runtime model (``torch.nn.Module``) of a ``.pc``/``.pcir`` path or ``.pc`` source text.

    ``precision`` is the Triton executor's matrix-product precision: ``tf32x3`` (fp32 accuracy, the
    default), ``ieee``, ``tf32`` or ``bf16`` (reduced; docs/benchmarks.md gives its measured accuracy).
    ``recompute`` is what training steps compute again in their backward instead of keeping: ``True`` or
    ``"sums"`` (the default) products of sums; ``"all"`` also inputs and products of inputs and sums (HCLT,
    HMM: about 40% fewer training rows, 10-18% slower steps on an H100); ``False`` or ``"off"`` nothing (PD:
    about 10% faster steps, twice the value rows). docs/backend.md gives the measurements. ``fuse_inputs``
    (Triton executor): categorical inputs that only products read are computed by those products and get no
    rows in training steps and ``log_prob`` (an HMM of 256 states at batch 8192: 40% less memory, 14% slower
    steps on an H100); None: ``pcc.backend.fusion.FUSE``, off unless set.
    """
    from pcc.backend.runtime import CircuitModel
    # verified once after the passes (a failure still names its pass: Options.verify_end); ``pcc opt`` and
    # ``optimize`` verify after each
    layered = optimize(parse(source), pipeline, Options(verify_each=False, verify_end=True))
    return CircuitModel(layered, device, executor=executor, precision=precision,
                        recompute=recompute, fuse_inputs=fuse_inputs)


def load(path: str | Path, device=None, executor: str = "auto"):
    """The runtime model of a compiled module folder or a training checkpoint."""
    from pcc.backend.module import load_module
    from pcc.backend.runtime import CircuitModel, load_checkpoint
    if Path(path).is_dir():
        return load_module(path, device, executor)
    circuit, _ = load_checkpoint(path)
    return CircuitModel(circuit, device, executor=executor)


def write_ir(circuit: Circuit, path: str | Path, sidecar: bool = True) -> None:
    """Write ``.pcir`` text atomically; large tensors go to ``PATH.safetensors`` unless ``sidecar`` is False."""
    path = Path(path)
    side = path.name + ".safetensors"
    text, large = print_circuit(circuit, sidecar=side if sidecar else None)
    if large:
        tensorfile.save(path.parent / side, large)
    write_text_atomic(path, text)


def stage_writer(folder: str | Path, first: int = 2) -> Callable[[str, Circuit], None]:
    """A pass-manager ``on_ir`` hook writing the IR after each pass as ``NN-pass.pcir`` into ``folder``."""
    numbers = iter(range(first, 100))
    return lambda name, circuit: write_ir(circuit, Path(folder) / f"{next(numbers):02d}-{name}.pcir")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file via a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
