"""GPU tests (marked ``gpu``; skipped without CUDA): the Triton kernels on the device against references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from randgen import random_circuits, random_inputs, shared_halves_circuit, sparse_halves_circuit

import pcc
from pcc.backend.runtime import CircuitModel
from pcc.ir import log_likelihood
from pcc.ir.params import randomize
from pcc.structures import hmm_source

pytestmark = pytest.mark.gpu
CASES = [(p.stem, lambda p=p: pcc.parse(p)) for p in EXAMPLES] + [
    (f"random{i}", lambda i=i: random_circuits(700 + i, 1)[0]) for i in range(8)] + [
    ("hmm128", lambda: pcc.parse(hmm_source(4, 128, 8, seed=1))),  # two parent tiles reading the same children
    ("shared-halves", shared_halves_circuit),  # parent tiles sharing some children (PD's, converted): holed
    ("sparse-halves", sparse_halves_circuit)]  # the same, too sparse to hole (generic kernels' shared child tiles)


def _models(make, seed):
    c = make()
    randomize(c, seed)
    layered = pcc.optimize(c)
    fast = CircuitModel(layered, "cuda", executor="triton")
    exact = CircuitModel(layered, "cuda", dtype=torch.float64, executor="torch")
    x, m = random_inputs(c, np.random.default_rng(seed), batch=48)
    return c, fast, exact, x, m


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_log_likelihood_matches_reference(name, make):
    c, fast, _, x, m = _models(make, 1)
    ref = log_likelihood(c, x, m)
    got = fast.log_prob(x, m).double().cpu().numpy()
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(got))
    assert np.abs(got[finite] - ref[finite]).max() <= 1e-5 * max(1.0, np.abs(ref[finite]).max())


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_flows_and_em_match_float64(name, make):
    c, fast, exact, x, m = _models(make, 2)
    nf, ne = fast.node_flows(x, m).double(), exact.node_flows(x, m)
    assert (nf - ne).abs().max() <= 1e-4 * max(1.0, ne.abs().max().item())
    fast.em_step(x, m, step_size=0.5, pseudocount=0.1)
    exact.em_step(x, m, step_size=0.5, pseudocount=0.1)
    for a, b in zip(fast.params.tensors().values(), exact.params.tensors().values()):
        if a.numel():
            assert (a.double() - b).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kernels", ["narrow", "wide"])
@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_dense_kernels_match_float64(name, make, kernels, monkeypatch):
    """Every dense sum on pcc.backend.dense_kernels (by default only where edges x batch >= 2^28): groups of at
    most a tile of parents on their own kernels (one-pass forward, shift and G in one launch), or (``wide``)
    every group on the kernels of wider ones."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "DENSE_MIN_WORK", 0)
    if kernels == "wide":
        monkeypatch.setattr(codegen, "DENSE_ONEPASS_P", 0)
        monkeypatch.setattr(codegen, "DENSE_FUSED_P", 0)
    test_log_likelihood_matches_reference(name, make)
    test_flows_and_em_match_float64(name, make)


@pytest.mark.parametrize("work", [0, None], ids=["dense", "generic"])
def test_holed_sums_match_float64(work, monkeypatch):
    """Sums stored with holes (``block-edges``' ``MAX_HOLES``) on the dense and the generic kernels."""
    from pcc.backend import codegen
    from pcc.passes import block_edges
    monkeypatch.setattr(block_edges, "MAX_HOLES", 125)
    if work is not None:
        monkeypatch.setattr(codegen, "DENSE_MIN_WORK", work)
    assert any(b.attrs.get("holes") for b in pcc.optimize(shared_halves_circuit()).blocks)
    test_log_likelihood_matches_reference("shared-halves", shared_halves_circuit)
    test_flows_and_em_match_float64("shared-halves", shared_halves_circuit)


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_inputs_computed_again_and_split_counts_match_float64(name, make, monkeypatch):
    """``recompute="all"`` (inputs and their products computed again in the backward) with categorical counts
    split over the batch (``codegen.CAT_FILL``, forced: ranges of 16 samples): EM steps as the float64 model's."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "CAT_FILL", 1 << 20)
    monkeypatch.setattr(codegen, "CAT_SPLIT_MIN", 16)
    c = make()
    randomize(c, 3)
    layered = pcc.optimize(c)
    fast = CircuitModel(layered, "cuda", executor="triton", recompute="all")
    exact = CircuitModel(layered, "cuda", dtype=torch.float64, executor="torch")
    x, m = random_inputs(c, np.random.default_rng(3), batch=48)
    for _ in range(2):
        a = fast.em_step(x, m, step_size=0.5, pseudocount=0.1).double()
        b = exact.em_step(x, m, step_size=0.5, pseudocount=0.1)
        finite = torch.isfinite(b)
        assert (a[finite] - b[finite]).abs().max() <= 1e-5 * max(1.0, b[finite].abs().max().item())
    for a, b in zip(fast.params.tensors().values(), exact.params.tensors().values()):
        if a.numel():
            assert (a.double() - b).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_fused_inputs_match_float64(name, make, monkeypatch):
    """``fusion.FUSE`` on: categorical inputs that only products read have no rows in training steps and
    log_prob; their products compute them (``kernels.prod_fwd_inputs``). EM steps as the float64 model's."""
    from pcc.backend import fusion
    monkeypatch.setattr(fusion, "FUSE", True)
    test_inputs_computed_again_and_split_counts_match_float64(name, make, monkeypatch)


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_transposed_counts_match_float64(name, make, monkeypatch):
    """``codegen.CAT_TRANSPOSED_BELOW`` forced on for every tile (the one-hot first in the count products)."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "CAT_TRANSPOSED_BELOW", 1 << 10)
    test_inputs_computed_again_and_split_counts_match_float64(name, make, monkeypatch)


@pytest.mark.parametrize("setting", [("CAT_EM_MAX_BATCH", 0), ("CAT_EM_KB", 16)], ids=["count-tables", "kb16"])
@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_em_steps_without_and_with_small_category_blocks_match_float64(name, make, setting, monkeypatch):
    """The EM step's categorical update outside the counting launches (``codegen.CAT_EM_MAX_BATCH`` 0: count
    tables and the update pass, as batches above it take) and inside them in blocks of 16 categories
    (``CAT_EM_KB``: a row's total found from its flows): EM steps in CUDA graphs as the float64 model's."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, *setting)
    test_log_likelihood_matches_reference(name, make)
    test_flows_and_em_match_float64(name, make)


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_pipelined_batch_loops_match_float64(name, make, monkeypatch):
    """``codegen.CAT_STAGES`` and ``PARAM_STAGES`` at 3: the categorical counts' and parameter flows' loops
    over the batch software-pipelined (their next blocks' loads overlap this block's products)."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "CAT_STAGES", 3)
    monkeypatch.setattr(codegen, "PARAM_STAGES", 3)
    test_inputs_computed_again_and_split_counts_match_float64(name, make, monkeypatch)


@pytest.mark.parametrize("mode", [0, 1, 2, 3], ids=["off", "wait", "one-wave", "early"])
@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_dependent_launches_match_float64(name, make, mode, monkeypatch):
    """``triton_exec.PDL`` in each mode, off included (the default is 1; Hopper's programmatic dependent launch:
    each launch may start its programs while the one before it finishes): log_prob, and EM steps in CUDA graphs,
    as the float64 model's, with the tiled kernels and then with every sum on the dense kernels."""
    from pcc.backend import codegen, triton_exec
    if not triton_exec.pdl_capable("cuda"):
        pytest.skip("programmatic dependent launch needs compute capability 9 or later")
    monkeypatch.setattr(triton_exec, "PDL", mode)
    c, fast, _, _, _ = _models(make, 1)
    assert fast.executor.pdl == mode
    test_log_likelihood_matches_reference(name, make)
    test_inputs_computed_again_and_split_counts_match_float64(name, make, monkeypatch)
    monkeypatch.setattr(codegen, "DENSE_MIN_WORK", 0)
    test_flows_and_em_match_float64(name, make)


def test_hmm_of_1024_states_runs_dense_and_matches_float64(monkeypatch):
    """HMM 1024's transitions take the dense kernels by default at batch 320 (>= 256), five batch tiles. The
    launches are counted in the schedule written out (``OUTLINE_MIN`` 0): outlined, ops that share code share
    one launch line (``codegen._Outliner``)."""
    from pcc.backend import codegen
    monkeypatch.setattr(codegen, "OUTLINE_MIN", 0)
    c = pcc.parse(hmm_source(6, 1024, 16, seed=3))
    randomize(c, 3)
    layered = pcc.optimize(c)
    fast = CircuitModel(layered, "cuda", executor="triton")
    exact = CircuitModel(layered, "cuda", dtype=torch.float64, executor="torch")
    unfolded = [line for line in fast.executor.source.splitlines() if "FOLDED=True" not in line]
    assert sum("D.dense_params[" in line for line in unfolded) == 5  # and as many folded (pcc.backend.folding)
    x = np.random.default_rng(3).integers(0, 16, size=(320, 6))
    ll, want = fast.log_prob(x).double(), exact.log_prob(x)
    assert (ll - want).abs().max() <= 1e-5 * want.abs().max()
    nf, ne = fast.node_flows(x).double(), exact.node_flows(x)
    assert (nf - ne).abs().max() <= 1e-4
    fast.em_step(x, step_size=0.5, pseudocount=0.1)
    exact.em_step(x, step_size=0.5, pseudocount=0.1)
    for a, b in zip(fast.params.tensors().values(), exact.params.tensors().values()):
        if a.numel():
            assert (a.double() - b).abs().max().item() <= 1e-5


def test_cuda_graph_step_equals_eager_step():
    c, fast, _, x, m = _models(CASES[2][1], 3)
    eager = CircuitModel(fast.circuit, "cuda", executor="triton")
    eager.use_graphs = False
    for _ in range(3):
        a = fast.em_step(x, m, step_size=0.3, pseudocount=0.1)
        b = eager.em_step(x, m, step_size=0.3, pseudocount=0.1)
        assert torch.allclose(a, b, atol=1e-5)
    assert len(fast._graphs) == 1
    for p, q in zip(fast.params.tensors().values(), eager.params.tensors().values()):
        assert torch.allclose(p, q, atol=1e-6)


def test_a_new_executor_drops_the_graphs_of_the_old_one(monkeypatch):
    """Graphs bake in an executor's launches and tables; after the executor is replaced (a benchmark comparing
    settings does this) a replay of the old graph would read freed tables."""
    from pcc.backend import codegen
    from pcc.backend.triton_exec import TritonExecutor
    c, fast, exact, x, m = _models(CASES[2][1], 6)
    fast.log_prob(x, m)
    assert len(fast._graphs) == 1
    for work in (0, 1 << 62):  # the dense kernels' tables, then none
        monkeypatch.setattr(codegen, "DENSE_MIN_WORK", work)
        fast.executor = TritonExecutor(fast.plan, fast.device_)
        assert not fast._graphs
        assert (fast.log_prob(x, m).double() - exact.log_prob(x, m)).abs().max() <= 1e-4


def test_graphs_share_one_pool_and_interleave_exactly():
    """Forward graphs of two batch sizes and a step graph share the model's pool: replayed in any order
    they agree with eager runs, and the model holds about one value buffer, not one per graph."""
    c, fast, _, x, m = _models(CASES[2][1], 4)
    eager = CircuitModel(fast.circuit, "cuda", executor="triton")
    eager.use_graphs = False
    x = np.concatenate([x] * 8)[:384]
    m = np.concatenate([m] * 8)[:384]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(3):
        for xb, mb in ((x, m), (x[:100], m[:100])):
            assert torch.allclose(fast.log_prob(xb, mb), eager.log_prob(xb, mb), atol=1e-5)
        assert torch.allclose(fast.em_step(x, m, step_size=0.3, pseudocount=0.1),
                              eager.em_step(x, m, step_size=0.3, pseudocount=0.1), atol=1e-5)
    assert len(fast._graphs) == 3
    for p, q in zip(fast.params.tensors().values(), eager.params.tensors().values()):
        assert torch.allclose(p, q, atol=1e-6)
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    assert held < 0.5 * fast.plan.rows * len(x) * 4  # graph buffers are freed into the pool after capture


def test_hclt_784_pixels_256_values_128_latents():
    """The backend issue's large case: an HCLT over 784 variables of 256 values with 128 latents."""
    from pcc.frontend import load_text
    from pcc.structures import hclt

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2000, 784))
    x[:, 1::2] = (x[:, ::2] + rng.integers(0, 8, size=(2000, 392))) % 256  # some dependence for the tree
    c = load_text(hclt(x, 128, "categorical", num_cats=256), "hclt.pc")
    layered = pcc.optimize(c)
    assert layered.num_sum_edges() == 783 * 128 * 128 + 128
    fast = CircuitModel(layered, "cuda", executor="triton")
    ref = log_likelihood(c, x[:16])
    got = fast.log_prob(x[:16]).double().cpu().numpy()
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    exact = CircuitModel(layered, "cuda", dtype=torch.float64, executor="torch")
    nf, ne = fast.node_flows(x[:16]).double(), exact.node_flows(x[:16])
    assert (nf - ne).abs().max() <= 1e-3  # float32 flows through 784 variables at |LL| ~ 4000 nats
    before = fast.log_prob(x[:512]).mean()
    for _ in range(3):
        fast.em_step(x[:512], step_size=0.5, pseudocount=0.1)
    assert fast.log_prob(x[:512]).mean() > before  # training moves the likelihood up


@pytest.mark.parametrize("name,make", CASES[:6], ids=[c[0] for c in CASES[:6]])
def test_queries_agree_with_the_cpu(name, make):
    c, fast, exact, x, m = _models(make, 5)
    cpu = CircuitModel(fast.circuit, "cpu", dtype=torch.float64, executor="torch")
    mask = ~m
    a = fast.conditional(x, mask).double().cpu()
    b = cpu.conditional(x, mask)
    ok = torch.isfinite(b)
    assert torch.equal(ok, torch.isfinite(a)) and (a[ok] - b[ok]).abs().max() <= 1e-4 * max(1.0, b[ok].abs().max().item())
    s = fast.sample(48, x, mask).cpu().numpy()
    assert np.all(s[mask] == x.astype(np.float32)[mask])  # the GPU model keeps evidence in float32
    state, logp = fast.map(x, mask)
    assert torch.isfinite(logp).all()


@pytest.mark.parametrize("precision,ll_tol,w_tol", [("bf16", 1e-2, 5e-3), ("bf16x3", 2e-4, 5e-5)])
@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_bf16_tensor_cores_are_close_to_the_reference(name, make, precision, ll_tol, w_tol):
    """The reduced modes on real bf16 tensor-core products (the CPU interpreter only emulates them)."""
    c = make()
    randomize(c, 4)
    layered = pcc.optimize(c)
    fast = CircuitModel(layered, "cuda", executor="triton", precision=precision)
    exact = CircuitModel(layered, "cuda", dtype=torch.float64, executor="torch")
    x, m = random_inputs(c, np.random.default_rng(4), batch=48)
    ref = log_likelihood(c, x, m)
    got = fast.log_prob(x, m).double().cpu().numpy()
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(got))
    assert (np.abs(got[finite] - ref[finite]) / np.maximum(np.abs(ref[finite]), 1.0)).max() <= ll_tol
    fast.em_step(x, m, step_size=0.5, pseudocount=0.1)
    exact.em_step(x, m, step_size=0.5, pseudocount=0.1)
    assert (fast.params.sum_w.double() - exact.params.sum_w).abs().max().item() <= w_tol
