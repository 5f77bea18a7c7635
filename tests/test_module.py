"""Compiled modules, codegen and the printed plan."""
from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

import pcc
from pcc.backend.module import load_plan, save_plan
from pcc.backend.plan import build_plan

EX = ROOT / "examples"


def run(*args):
    return subprocess.run([sys.executable, "-m", "pcc", *map(str, args)], capture_output=True, text=True)


def test_compile_writes_an_importable_module(tmp_path, monkeypatch):
    out = tmp_path / "pd_model"
    r = run("compile", EX / "pd8x8.pc", "-o", out)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} >= {"__init__.py", "header.json", "model.pcir", "plan.safetensors",
                                               "plan.txt", "kernels.py"}
    assert "K.sum_fwd[" in (out / "kernels.py").read_text() and "TP=16" in (out / "kernels.py").read_text()
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("pd_model")
    x = np.random.default_rng(0).integers(0, 17, size=(5, 64))
    a = module.load(device="cpu").log_prob(x)
    b = pcc.compile(EX / "pd8x8.pc", device="cpu").log_prob(x)
    assert torch.allclose(a, b, atol=1e-5)
    # the module's own generated kernels, run in Triton's interpreter, give the same values
    c = pcc.load(out, device="cpu", executor="triton").log_prob(x)
    assert torch.allclose(a, c, atol=1e-4)


def test_module_loads_unfused_while_fusion_is_the_default(tmp_path, monkeypatch):
    """A module's kernels.py is generated without input fusion; loading it while ``fusion.FUSE`` is on (as the
    benchmark scripts set it) builds unfused layouts for it, and it computes what the compiled model does."""
    from pcc.backend import fusion
    from pcc.backend.module import write_module
    circuit = pcc.optimize(pcc.parse("examples/hmm.pc"))
    write_module(circuit, tmp_path / "hmm")
    monkeypatch.setattr(fusion, "FUSE", True)
    model = pcc.load(tmp_path / "hmm", "cpu", executor="triton")
    assert not model.executor.fuse_inputs
    fresh = pcc.compile("examples/hmm.pc", "cpu", executor="triton")  # fused: FUSE is on
    assert fresh.executor.fuse_inputs
    x = np.random.default_rng(0).integers(0, 2, size=(3, model.num_vars))
    assert torch.equal(model.log_prob(x), fresh.log_prob(x))


def test_emit_plan_and_kernels():
    plan = run("compile", EX / "reuse.pc", "--emit", "plan")
    assert plan.returncode == 0 and plan.stdout.startswith("plan: 44 value rows")
    # reuse.pc's layer-2 sums fill 90% of their matrices: holed by default (block-edges' max-holes), one op each
    assert "layer 2:\n  sum 1 parent tiles of 16 x 1 child tiles of 16 (padded edges 256)" in plan.stdout
    unholed = run("compile", EX / "reuse.pc", "--emit", "plan", "-p",
                  "collapse-chains,dce,dedupe,layerize,block-edges{max-holes=1}")
    assert "layer 2:\n  sum 2 parent tiles of 16 x 1 child tiles of 16" in unholed.stdout
    kernels = run("compile", EX / "reuse.pc", "--emit", "kernels")
    assert kernels.returncode == 0 and "def forward(" in kernels.stdout and "def backward(" in kernels.stdout
    compile(kernels.stdout, "kernels.py", "exec")  # valid Python


def test_plan_round_trip(tmp_path):
    plan = build_plan(pcc.optimize(pcc.parse(EX / "reuse.pc")))
    save_plan(plan, tmp_path / "p.safetensors")
    back = load_plan(tmp_path / "p.safetensors")
    assert back.describe() == plan.describe() and back.digest() == plan.digest()
    assert np.array_equal(back.sum_w, plan.sum_w)


def test_plan_round_trip_keeps_weights_stored_by_op_tiles(tmp_path):
    from randgen import tile_ordered_circuit
    plan = build_plan(pcc.optimize(tile_ordered_circuit()))
    save_plan(plan, tmp_path / "p.safetensors")
    back = load_plan(tmp_path / "p.safetensors")
    assert back.digest() == plan.digest() and set(back.sum_orders) == set(plan.sum_orders) != set()
    for name in plan.sum_orders:
        np.testing.assert_array_equal(back.tensor_values(name, back.sum_w), plan.tensor_values(name, plan.sum_w))


def test_plan_round_trip_keeps_holed_weights(tmp_path):
    """Sums stored with holes (block-edges' max-holes) read back in their tensors' order after a round trip."""
    from randgen import shared_halves_circuit
    layered = pcc.optimize(shared_halves_circuit(), "collapse-chains,dce,dedupe,layerize,block-edges{max-holes=1.25}")
    plan = build_plan(layered)
    save_plan(plan, tmp_path / "p.safetensors")
    back = load_plan(tmp_path / "p.safetensors")
    assert back.digest() == plan.digest() and len(back.sum_orders) == 2
    for name in plan.sum_orders:
        np.testing.assert_array_equal(back.tensor_values(name, back.sum_w), layered.tensors[name].data.reshape(-1))


def test_damaged_module_is_a_user_error(tmp_path):
    out = tmp_path / "m"
    assert run("compile", EX / "mixture.pc", "-o", out).returncode == 0
    (out / "plan.safetensors").write_bytes(b"junk")
    r = run("train", out, "--data", tmp_path / "x.csv", "-o", tmp_path / "c.ckpt")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    with pytest.raises(pcc.ir.UserError):
        pcc.load(out, device="cpu")
    (tmp_path / "not_module").mkdir()
    (tmp_path / "not_module" / "x").write_text("")
    assert "refusing to overwrite" in run("compile", EX / "mixture.pc", "-o", tmp_path / "not_module").stderr


def test_emit_module_needs_output():
    r = run("compile", EX / "mixture.pc", "--emit", "module")
    assert r.returncode == 1 and "give -o DIR" in r.stderr


def test_output_suffix_picks_the_stage(tmp_path):
    assert run("compile", EX / "mixture.pc", "-o", tmp_path / "m.pcir").returncode == 0
    assert (tmp_path / "m.pcir").is_file() and "layered=1" in (tmp_path / "m.pcir").read_text()
