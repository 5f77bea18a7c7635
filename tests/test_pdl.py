"""Programmatic dependent launch (``triton_exec.PDL``): what the CPU can check of it.

On the GPU each launch may start its programs while the launch before it is finishing; that is only safe
because every kernel the generated code launches waits for the previous grid before it touches memory.
These tests check that contract on the source (every launched kernel takes ``PDL`` and calls
``wait_for_prior_grid(PDL)`` as its first statement) and the launch wrapper; tests/test_gpu.py runs
training steps with it on against the float64 model.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types

import pytest
from conftest import EXAMPLES
from triton.runtime.jit import KernelInterface

from pcc import optimize, parse
from pcc.backend import codegen, dense_kernels, kernels
from pcc.backend.plan import build_plan
from pcc.backend.triton_exec import PDL_EARLY, PDL_ONE_WAVE, PDL_WAIT, PDLKernels, pdl_capable


class _Recorder(KernelInterface):
    def run(self, *args, grid, warmup, **kwargs):
        self.seen = (grid, args, kwargs)


def test_launches_through_the_wrapper_carry_pdl_and_helpers_pass_through():
    module = types.SimpleNamespace(kernel=_Recorder(), batch_block=lambda b: b // 2, CLAMP=30.0)
    wrapped = PDLKernels(module)
    wrapped.kernel[(3, 1)](1, 2, BB=4)
    assert module.kernel.seen == ((3, 1), (1, 2), {"PDL": 2, "launch_pdl": True, "BB": 4})
    assert wrapped.batch_block(64) == 32 and wrapped.CLAMP == 30.0
    assert wrapped.kernel is wrapped.kernel  # one wrapper per kernel, made once


@pytest.mark.parametrize("mode, small, large", [(PDL_WAIT, 1, 1), (PDL_ONE_WAVE, 2, 1), (PDL_EARLY, 2, 2)])
def test_each_mode_lets_the_next_launch_start_early_only_where_it_says(mode, small, large):
    """Mode 2 lets the next launch start at once only after a grid of at most one program per SM (132 here)."""
    module = types.SimpleNamespace(kernel=_Recorder())
    wrapped = PDLKernels(module, mode, sms=132)
    for grid, want in (((4, 33), small), ((132,), small), ((133, 1), large), ((2, 67), large)):
        wrapped.kernel[grid]()
        assert module.kernel.seen[2] == {"PDL": want, "launch_pdl": True}, grid


def test_no_dependent_launches_off_the_gpu():
    assert not pdl_capable("cpu")


def _launched(source: str) -> set[tuple[str, str]]:
    return set(re.findall(r"\b([KD])\.(\w+)\[", source))


@pytest.mark.parametrize("dense", [False, True], ids=["tiled", "dense"])
def test_every_launched_kernel_waits_for_the_prior_grid_first(dense, monkeypatch):
    if dense:
        monkeypatch.setattr(codegen, "DENSE_MIN_WORK", 0)
    launched = _launched(inspect.getsource(codegen))  # every launch the generator writes literally
    for path in EXAMPLES:  # and those it composes (the dense kernels)
        launched |= _launched(codegen.generate(build_plan(optimize(parse(path)))))
    assert {name for _, name in launched} >= {"sum_fwd", "sum_bwd", "prod_fwd"}
    for module, name in sorted(launched):
        kernel = getattr({"K": kernels, "D": dense_kernels}[module], name)
        fn = ast.parse(textwrap.dedent(inspect.getsource(kernel.fn))).body[0]
        assert "PDL" in [a.arg for a in fn.args.args + fn.args.kwonlyargs], name
        body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
        assert ast.unparse(body[0]) == "wait_for_prior_grid(PDL)", f"{name} does something before waiting"
