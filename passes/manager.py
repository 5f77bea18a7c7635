"""The pass manager: parse ``-p a,b{k=v}`` pipelines, run passes, verify after each, print and time.

A pass is a small dataclass with a ``name`` and typed option fields; ``run(circuit) -> circuit`` returns
a new circuit (the manager hands each pass its own structural copy). Options are written with dashes
(``max-padding=1.5``) and map to fields with underscores.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, TextIO

from pcc.ir.circuit import Circuit
from pcc.ir.diagnostics import Diagnostic, Loc, UserError
from pcc.ir.printer import to_text
from pcc.ir.verify import Problem, VerifyError, _render, verify


@dataclass
class Pass:
    """Base class: subclasses set ``name`` and a docstring with pre- and postconditions."""

    name: ClassVar[str] = ""

    def run(self, circuit: Circuit) -> Circuit:  # pragma: no cover - abstract
        raise NotImplementedError

    def spec(self) -> str:
        """The pass as pipeline text, options included (``layerize{max-padding=1.5}``)."""
        opts = [f"{f.name.replace('_', '-')}={getattr(self, f.name)}" for f in dataclasses.fields(self)]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


class PassError(Exception):
    """Raised by a pass that cannot transform a block; ``block`` points at it for the IR context."""

    def __init__(self, message: str, block: int | None = None):
        super().__init__(message)
        self.block = block


class PassFailure(Exception):
    """A pass raised or produced invalid IR: ``pass 'NAME' failed: ...`` with the IR around the problem."""


REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator adding a pass to the registry under its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


_ITEM = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def parse_pipeline(text: str) -> list[Pass]:
    """``"a,b{k=v,k2=v2}"`` → pass instances; unknown passes or options are a UserError."""
    passes, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if m is None or m.end() == pos:
            raise _pipeline_error(text, pos, "malformed pipeline (expected NAME or NAME{key=value,...})")
        passes.append(_make(text, m))
        pos = m.end()
    if not passes:
        raise _pipeline_error(text, 0, "empty pipeline")
    return passes


def _make(text: str, m: re.Match) -> Pass:
    name, body = m.group(1), m.group(2)
    if name not in REGISTRY:
        raise _pipeline_error(text, m.start(1), f"unknown pass '{name}' (available: {', '.join(sorted(REGISTRY))})")
    cls = REGISTRY[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for item in filter(None, (s.strip() for s in (body or "").split(","))):
        key, _, raw = item.partition("=")
        field = fields.get(key.strip().replace("-", "_"))
        if field is None or not raw:
            known = ", ".join(k.replace("_", "-") for k in fields) or "none"
            raise _pipeline_error(text, m.start(2), f"pass '{name}' has no option '{key.strip()}' (options: {known})")
        kwargs[field.name] = _coerce(text, m.start(2), name, field, raw.strip())
    return cls(**kwargs)


def _coerce(text: str, col: int, name: str, field: dataclasses.Field, raw: str):
    kind = field.type if isinstance(field.type, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(str(field.type), str)
    try:
        if kind is bool:
            if raw.lower() not in ("1", "0", "true", "false"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true")
        return kind(raw)
    except ValueError:
        raise _pipeline_error(text, col, f"option '{field.name.replace('_', '-')}' of pass '{name}' expects {kind.__name__}, got '{raw}'") from None


def _pipeline_error(text: str, pos: int, message: str) -> UserError:
    return UserError(Diagnostic(Loc("<pipeline>", 1, pos + 1), message, text))


@dataclass
class Options:
    """How to run a pipeline: verification, IR printing and timing.

    ``verify_each``: verify the IR after every pass (``pcc opt``'s default). ``verify_end``, with
    ``verify_each`` off: verify once, after the last pass; when that fails, run the passes again on the
    (untouched) input, verifying after each, so the failure still names the pass that broke the IR. The IR
    of a large circuit is biggest before the passes shrink it, so ``pcc.compile`` verifies this way: PD 64's
    pipeline took 0.31 s verifying after each pass, 0.24 s verifying at the end (development CPU).
    """

    verify_each: bool = True
    verify_end: bool = False
    print_after: frozenset[str] = frozenset()  # pass names, or {"all"}
    time_passes: bool = False
    out: TextIO = sys.stderr
    on_ir: Callable[[str, Circuit], None] | None = None  # called with (pass name, IR) after each pass


def run_pipeline(circuit: Circuit, passes: list[Pass], opts: Options | None = None) -> Circuit:
    """Run ``passes`` in order; raises PassFailure naming the pass that broke."""
    opts = opts or Options()
    timings, start_ir = [], circuit
    for p in passes:
        start = time.perf_counter()
        circuit = _run_one(p, circuit, opts.verify_each)
        timings.append((p.name, time.perf_counter() - start))
        if opts.on_ir:
            opts.on_ir(p.name, circuit)
        if p.name in opts.print_after or "all" in opts.print_after:
            opts.out.write(f"// ----- IR after {p.name} -----\n{to_text(circuit)}")
    if opts.verify_end and not opts.verify_each:
        _verify_end(start_ir, circuit, passes)
    if opts.time_passes:
        _report_times(timings, opts.out)
    return circuit


def _verify_end(start_ir: Circuit, result: Circuit, passes: list[Pass]) -> None:
    """Verify the pipeline's result; if it is invalid, find the pass that broke it (raises its PassFailure)."""
    try:
        verify(result)
    except VerifyError as e:
        circuit = start_ir
        for p in passes:  # each pass runs on a copy, so ``start_ir`` is still the pipeline's input
            circuit = _run_one(p, circuit, True)
        raise PassFailure(f"the pipeline produced invalid IR, but no pass did when verified after each "
                          f"(a pass that is not deterministic?):\n{e.render()}") from e


def _run_one(p: Pass, circuit: Circuit, verify_each: bool) -> Circuit:
    try:
        result = p.run(circuit.copy())
    except PassError as e:
        raise PassFailure(f"pass '{p.name}' failed: {_render(circuit, Problem(e.block, str(e)))}") from e
    except (UserError, PassFailure):
        raise
    except Exception as e:  # a bug in the pass: say which pass and where the IR stood
        raise PassFailure(f"pass '{p.name}' failed: {type(e).__name__}: {e}\n{_head(circuit)}") from e
    if verify_each:
        try:
            verify(result)
        except VerifyError as e:
            raise PassFailure(f"pass '{p.name}' failed: it produced invalid IR:\n{e.render()}") from e
    return result


def _head(circuit: Circuit, lines: int = 12) -> str:
    text = to_text(circuit).splitlines()
    return "IR before the pass:\n" + "\n".join("  " + t for t in text[:lines]) + ("\n  ..." if len(text) > lines else "")


def _report_times(timings: list[tuple[str, float]], out: TextIO) -> None:
    total = sum(t for _, t in timings) or 1e-12
    out.write("===-------------------------------------------===\n  pass execution timing report\n")
    for name, t in timings:
        out.write(f"  {t * 1e3:10.2f} ms  {100 * t / total:5.1f}%  {name}\n")
    out.write(f"  {total * 1e3:10.2f} ms  100.0%  total\n")
