"""pcc.interop.pyjuice: PyJuice node DAGs converted to .pc files give the same log-likelihoods.

The oracle is an independent float64 evaluation of the PyJuice nodes written here (it walks PyJuice's
nodes and reads their edges and parameters with plain loops, sharing no code with the converter); the
converted file is checked with pcc's reference interpreter, the compiled model in float64 and the default
``pcc.compile`` model (float32). On a GPU, PyJuice's own compiled TensorCircuit is compared too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pyjuice = pytest.importorskip("pyjuice", reason="pyjuice==2.6.3 is not installed (pip install -e '.[test]')")

import pcc  # noqa: E402
from pcc.backend.runtime import CircuitModel  # noqa: E402
from pcc.interop.pyjuice import convert  # noqa: E402
from pcc.ir import log_likelihood  # noqa: E402

from pyjuice.nodes.distributions import Bernoulli, Categorical, Gaussian  # noqa: E402

inputs, multiply, summate = pyjuice.inputs, pyjuice.multiply, pyjuice.summate
ROOT = Path(__file__).resolve().parents[1]
# PyJuice's CPU parameter normalisation builds sparse torch tensors, and torch warns about that each time
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")


# --- the oracle: PyJuice's nodes evaluated directly, in float64 ---------------------------------------


def pyjuice_log_likelihood(root, x: np.ndarray) -> np.ndarray:
    """log p(x) of every row of ``x`` under the PyJuice DAG ``root``, node by node, edge by edge."""
    values: dict = {}
    for ns in root:  # PyJuice's own traversal: children before parents
        if ns.is_input():
            values[ns] = _input_values(ns, x)
        elif ns.is_prod():
            values[ns] = _prod_values(ns, values)
        else:
            values[ns] = _sum_values(ns, values)
    return values[root][:, 0]


def _params(ns) -> np.ndarray:
    return ns.get_source_ns()._params.detach().double().numpy()  # tied nodes read their source's


def _input_values(ns, x: np.ndarray) -> np.ndarray:
    col = x[:, ns.scope.to_list()[0]]
    p, n = _params(ns), ns.num_nodes
    kind = ns.dist.get_signature()
    with np.errstate(divide="ignore"):
        if kind == "Categorical":
            return np.log(p.reshape(n, -1)[:, col.astype(int)].T)
        if kind == "Bernoulli":
            return np.where(col[:, None] > 0, np.log(p)[None], np.log1p(-p)[None])
    mu, sigma = p.reshape(n, 2).T
    return -0.5 * ((col[:, None] - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def _prod_values(ns, values: dict) -> np.ndarray:
    e, B = ns.edge_ids.numpy(), ns.block_size
    out = np.zeros((len(next(iter(values.values()))), ns.num_nodes))
    for i in range(ns.num_nodes):
        for j, c in enumerate(ns.chs):
            k = e[i // B, j] * B + i % B if ns.is_block_sparse() else e[i, j]
            out[:, i] += values[c][:, k]
    return out


def _sum_values(ns, values: dict) -> np.ndarray:
    w = np.zeros((ns.num_nodes, ns.num_ch_nodes))
    p, e, B, Bc = _params(ns), ns.edge_ids.numpy(), ns.block_size, ns.ch_block_size
    for k in range(e.shape[1]):
        pb, cb = e[:, k]
        w[pb * B:(pb + 1) * B, cb * Bc:(cb + 1) * Bc] = p[k]
    child = np.concatenate([values[c] for c in ns.chs], axis=1)
    with np.errstate(divide="ignore"):
        a = child[:, None, :] + np.log(w)[None]
    m = a.max(axis=2, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - m).sum(axis=2)) + m[..., 0]


# --- helpers ----------------------------------------------------------------------------------------


def random_data(root, rows: int = 24, seed: int = 0) -> np.ndarray:
    """Random complete data for the variables of ``root`` (values each input node's distribution accepts)."""
    rng = np.random.default_rng(seed)
    domains: dict[int, tuple[str, int]] = {}
    for ns in root:
        if ns.is_input():
            v, kind = ns.scope.to_list()[0], ns.dist.get_signature()
            k = getattr(ns.dist, "num_cats", 2)
            old = domains.get(v, (kind, k))
            domains[v] = (kind, min(k, old[1]))  # values every input of the variable understands
    x = np.zeros((rows, max(domains) + 1))
    for v, (kind, k) in domains.items():
        x[:, v] = rng.normal(size=rows) if kind == "Gaussian" else rng.integers(0, k, size=rows)
    return x


def check(root, tmp_path, x: np.ndarray | None = None, name: str = "model") -> str:
    """Convert ``root``, then compare pcc (interpreter, float64 and float32 models) with the oracle."""
    path = convert(root, tmp_path / f"{name}.pc")
    assert path == tmp_path / f"{name}.pc" and (tmp_path / f"{name}.safetensors").is_file()
    x = random_data(root) if x is None else x
    expected = pyjuice_log_likelihood(root, x)
    assert np.all(np.isfinite(expected))
    circuit = pcc.parse(str(path))
    np.testing.assert_allclose(log_likelihood(circuit, x), expected, rtol=1e-6)
    model64 = CircuitModel(pcc.optimize(circuit), "cpu", dtype=torch.float64)
    np.testing.assert_allclose(model64.log_prob(x).numpy(), expected, rtol=1e-6)
    model32 = pcc.compile(path, device="cpu")
    np.testing.assert_allclose(model32.log_prob(x).double().numpy(), expected, rtol=1e-4, atol=1e-4)
    return path.read_text()


# --- PyJuice's structure builders ---------------------------------------------------------------------


def correlated_binary(rows: int, num_vars: int, seed: int = 0) -> torch.Tensor:
    """Binary data with a chain of dependencies, so the Chow-Liu tree is not arbitrary."""
    rng = np.random.default_rng(seed)
    x = np.zeros((rows, num_vars), dtype=np.int64)
    x[:, 0] = rng.integers(0, 2, rows)
    for v in range(1, num_vars):
        flip = rng.random(rows) < 0.2
        x[:, v] = np.where(flip, 1 - x[:, v - 1], x[:, v - 1])
    return torch.from_numpy(x)


@pytest.mark.parametrize("latents, block_size", [(4, None), (8, 2)])
def test_hclt_on_random_binary_data(tmp_path, latents, block_size):
    torch.manual_seed(0)
    x = correlated_binary(300, 10)
    root = pyjuice.structures.HCLT(x, num_latents=latents, block_size=block_size, chunk_size=4,
                                   input_node_params={"num_cats": 2})
    text = check(root, tmp_path, x[:32].numpy().astype(float))
    assert "var X[10] : categorical(2)" in text


def test_hclt_on_real_data_with_tied_inputs(tmp_path, shared_data):
    path = shared_data / "twenty" / "nltcs" / "nltcs.train.data.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    data = np.loadtxt(path, delimiter=",", dtype=np.int64)
    torch.manual_seed(1)
    root = pyjuice.structures.HCLT(torch.from_numpy(data[:2000]), num_latents=8, chunk_size=16,
                                   input_node_params={"num_cats": 2}, tie_input_params=True)
    text = check(root, tmp_path, data[-40:].astype(float))
    assert "tie=in0" in text  # every variable's input shares the first one's table


@pytest.mark.parametrize("kwargs", [
    dict(num_latents=4),
    dict(num_latents=8, block_size=2, max_prod_block_conns=2),  # sparse sum edges between blocks
    dict(num_latents=8, block_size=4, structure_type="prod_dominated"),
    dict(num_latents=4, block_size=2, tie_homogeneous_params=True, max_prod_block_conns=2),
])
def test_pd(tmp_path, kwargs):
    torch.manual_seed(2)
    root = pyjuice.structures.PD(data_shape=(4, 6), split_intervals=2, input_node_params={"num_cats": 3}, **kwargs)
    check(root, tmp_path)


def test_pd_sparse_edges_become_tiles(tmp_path):
    torch.manual_seed(3)
    root = pyjuice.structures.PD(data_shape=(4, 6), num_latents=8, split_intervals=2, block_size=2,
                                 max_prod_block_conns=2, input_node_params={"num_cats": 3})
    text = check(root, tmp_path)
    assert "block=2, tiles=tensor(" in text


@pytest.mark.parametrize("block_size", [None, 1])
def test_rat_spn(tmp_path, block_size):
    torch.manual_seed(4)
    root = pyjuice.structures.RAT_SPN(num_vars=8, num_latents=4, depth=2, num_repetitions=3, num_pieces=2,
                                      block_size=block_size, input_node_params={"num_cats": 5})
    check(root, tmp_path)


@pytest.mark.parametrize("homogeneous", [True, False])
def test_hmm(tmp_path, homogeneous):
    torch.manual_seed(5)
    root = pyjuice.structures.HMM(seq_length=7, num_latents=8, num_emits=5, homogeneous=homogeneous, block_size=4)
    text = check(root, tmp_path)
    assert ("tie=" in text) == homogeneous


def test_hmm_with_given_parameters(tmp_path):
    rng = torch.Generator().manual_seed(6)
    alpha, beta, gamma = torch.rand(4, 4, generator=rng), torch.rand(4, 3, generator=rng), torch.rand(4, generator=rng)
    root = pyjuice.structures.HMM(seq_length=5, num_latents=4, num_emits=3, alpha=alpha, beta=beta, gamma=gamma,
                                  block_size=2)
    check(root, tmp_path)
    x = np.zeros((1, 5))  # p(all zeros) by the forward algorithm over the normalised tables
    a, b = (alpha / alpha.sum(1, keepdim=True)).double(), (beta / beta.sum(1, keepdim=True)).double()
    g = gamma.double() / gamma.sum()
    f = b[:, 0].clone()
    for _ in range(4):
        f = b[:, 0] * (a @ f)
    circuit = pcc.parse(str(tmp_path / "model.pc"))
    np.testing.assert_allclose(log_likelihood(circuit, x), [float(torch.log(g @ f))], rtol=1e-6)


# --- hand-written DAGs --------------------------------------------------------------------------------


def test_block_size_one_mixture(tmp_path):
    a = inputs(0, num_node_blocks=3, dist=Categorical(num_cats=4), block_size=1)
    b = inputs(1, num_node_blocks=3, dist=Categorical(num_cats=4), block_size=1)
    root = summate(multiply(a, b), num_node_blocks=1, block_size=1)
    root.set_params(torch.tensor([[0.2, 0.3, 0.5]]))
    text = check(root, tmp_path)
    assert "p2 = prod(in0, in1, n=3)" in text  # aligned: no table


def handwritten_dag():
    """Reuse, ties, non-identity and node-level product edges, multi-child sparse sums, block sizes 1, 2, 4."""
    torch.manual_seed(7)
    with pyjuice.set_block_size(2):
        x0 = inputs(0, num_node_blocks=2, dist=Categorical(num_cats=3))
        x1 = inputs(1, num_node_blocks=3, dist=Categorical(num_cats=3))
        x2 = inputs(2, num_node_blocks=3, dist=Categorical(num_cats=3))
        x2t = x2.duplicate(2, tie_params=True)            # same variable, tied table
        x3 = inputs(3, num_node_blocks=2, dist=Categorical(num_cats=3))
        x3t = x3.duplicate(3, tie_params=True)
        p1 = multiply(x0, x1, edge_ids=torch.tensor([[0, 0], [0, 1], [1, 2], [1, 0]]))   # 4 blocks, crossed
        p2 = multiply(x0, x1, edge_ids=torch.tensor([[1, 5], [0, 0], [3, 2], [2, 4]]), sparse_edges=True)
        s1 = summate(p1, p2, num_node_blocks=3,        # child blocks: p1 = 0..3, p2 = 4..5
                     edge_ids=torch.tensor([[0, 0, 1, 1, 2, 2, 2], [0, 4, 1, 5, 2, 3, 4]]))
        q1 = multiply(s1, x2)                          # s1 is reused by q1 and q2
        q2 = multiply(s1, x2t, edge_ids=torch.tensor([[2, 1], [0, 2], [1, 0]]))
        s2 = summate(q1, q2, num_node_blocks=2)        # dense over both children
        s2t = s2.duplicate(q2, q1, tie_params=True)    # tied, children swapped
        r1 = multiply(s2, x3)
        r2 = multiply(s2t, x3t, edge_ids=torch.tensor([[1, 0], [0, 1]]))
    s4 = summate(q1, q2, num_node_blocks=1, block_size=4,   # blocks of 4 over child blocks of 2: split tiles
                 edge_ids=torch.tensor([[0, 0, 0], [0, 2, 4]]))
    x3b = inputs(3, num_node_blocks=1, dist=Categorical(num_cats=3), block_size=4)
    r3 = multiply(s4.duplicate(), x3b)                 # an untied copy of s4
    r4 = multiply(s4, x3b)                             # x3b is reused
    top_a = summate(r1, r2, num_node_blocks=1, block_size=1)
    top_b = summate(r3, r4, num_node_blocks=2, block_size=1,   # blocks of 1 over child blocks of 4, sparse
                    edge_ids=torch.tensor([[0, 1, 1], [0, 0, 1]]))
    s2.set_params(torch.rand(4, 12) + 0.1)             # [nodes, child nodes]; PyJuice normalises the rows
    return summate(multiply(top_a), multiply(top_b), num_node_blocks=1, block_size=1)


def test_handwritten_dag(tmp_path):
    root = handwritten_dag()
    text = check(root, tmp_path)
    assert "tie=" in text and "table=tensor(" in text and "tiles=tensor(" in text


def test_parameters_initialised_like_pyjuice_and_kept_on_the_nodes(tmp_path):
    root = handwritten_dag()
    assert any(ns._params is None for ns in root if ns.is_sum() and not ns.is_tied())
    first = convert(root, tmp_path / "a.pc")
    for ns in root:
        if (ns.is_sum() or ns.is_input()) and not ns.is_tied():
            assert ns._params is not None
    convert(root, tmp_path / "b.pc")  # the second conversion reads the same, now stored, parameters
    x = random_data(root)
    a, b = (log_likelihood(pcc.parse(str(p)), x) for p in (first, tmp_path / "b.pc"))
    np.testing.assert_array_equal(a, b)


def test_float32_tensors_keep_pyjuice_values_bit_for_bit(tmp_path):
    from pcc.ir import tensorfile
    torch.manual_seed(8)
    root = pyjuice.structures.HMM(seq_length=4, num_latents=8, num_emits=6, block_size=4)
    convert(root, tmp_path / "m.pc")
    saved = tensorfile.load(tmp_path / "m.safetensors")
    emission = next(ns for ns in root if ns.is_input() and not ns.is_tied())
    np.testing.assert_array_equal(saved["in0.p"], emission._params.numpy().reshape(8, 6))
    assert all(a.dtype in (np.float32, np.int64) for a in saved.values())


def test_mixed_distributions_and_domains(tmp_path):
    torch.manual_seed(9)
    a3 = inputs(0, num_node_blocks=2, dist=Categorical(num_cats=3))
    a2 = inputs(0, num_node_blocks=1, dist=Categorical(num_cats=2))   # same variable, fewer values: padded
    b = inputs(1, num_node_blocks=3, dist=Bernoulli())
    c = inputs(2, num_node_blocks=3, dist=Gaussian(mu=0.0, sigma=1.0))
    d = inputs(3, num_node_blocks=3, dist=Categorical(num_cats=5))
    a = summate(a3, a2, num_node_blocks=3)                             # a sum of two input nodes
    root = summate(multiply(a, b, c, d), num_node_blocks=1)
    text = check(root, tmp_path)
    for line in ("var X0 : categorical(3)", "var X1 : binary", "var X2 : real", "var X3 : categorical(5)",
                 "input(X1, bernoulli", "input(X2, gaussian"):
        assert line in text


def test_a_compiled_circuit_is_converted_from_its_nodes(tmp_path):
    # pyjuice.compile needs CUDA; a node DAG that went through it keeps its parameters on the nodes, which
    # the converter reads the same way (see test_pyjuice_tensorcircuit_on_gpu for the compiled model itself)
    torch.manual_seed(10)
    root = pyjuice.structures.HMM(seq_length=5, num_latents=4, num_emits=3, block_size=2)
    root.init_parameters()
    check(root, tmp_path)


def test_a_tensorcircuit_pushes_its_parameters_back_first(tmp_path):
    class Compiled:  # the two members of a TensorCircuit that convert uses (the real one needs CUDA)
        def __init__(self, root):
            self.root_ns, self.updated = root, False

        def update_parameters(self):
            self.updated = True

    torch.manual_seed(13)
    compiled = Compiled(pyjuice.structures.HMM(seq_length=4, num_latents=4, num_emits=3, block_size=2))
    convert(compiled, tmp_path / "m.pc")
    assert compiled.updated
    x = random_data(compiled.root_ns)
    np.testing.assert_allclose(log_likelihood(pcc.parse(str(tmp_path / "m.pc")), x),
                               pyjuice_log_likelihood(compiled.root_ns, x), rtol=1e-6)


def test_doc_example_runs(tmp_path, monkeypatch):
    doc = (ROOT / "docs" / "pyjuice.md").read_text()
    code = doc[doc.index("```python\n", doc.index("## From Python")) + len("```python\n"):]
    monkeypatch.chdir(tmp_path)
    exec(compile(code[:code.index("```")], "docs/pyjuice.md", "exec"), {"__name__": "__doc_example__"})
    assert (tmp_path / "hclt.pc").is_file() and (tmp_path / "hclt.safetensors").is_file()


# --- diagnostics ------------------------------------------------------------------------------------


def test_unsupported_distribution_is_a_clear_error(tmp_path):
    from pyjuice.nodes.distributions import Literal
    root = summate(inputs(0, num_node_blocks=2, dist=Literal(1)), num_node_blocks=1)
    with pytest.raises(ValueError, match="unsupported input distribution Literal"):
        convert(root, tmp_path / "m.pc")


def test_root_of_several_nodes_is_a_clear_error(tmp_path):
    root = summate(inputs(0, num_node_blocks=2, dist=Categorical(num_cats=2)), num_node_blocks=2)
    with pytest.raises(ValueError, match="pcc needs a root of one node"):
        convert(root, tmp_path / "m.pc")


def test_tied_nodes_with_different_edges_are_a_clear_error(tmp_path):
    with pyjuice.set_block_size(2):
        a = inputs(0, num_node_blocks=2, dist=Categorical(num_cats=2))
        b = inputs(1, num_node_blocks=2, dist=Categorical(num_cats=2))
        p = multiply(a, b)
        s = summate(p, num_node_blocks=2, edge_ids=torch.tensor([[0, 1], [0, 1]]))
        t = summate(p, num_node_blocks=2, edge_ids=torch.tensor([[0, 1], [1, 0]]))
    t.set_source_ns(s)
    root = summate(multiply(s), multiply(t), num_node_blocks=1, block_size=1)
    with pytest.raises(ValueError, match="is tied to .* but differs from it in shape or edges"):
        convert(root, tmp_path / "m.pc")


def test_other_inputs_are_clear_errors(tmp_path):
    root = summate(inputs(0, num_node_blocks=1, dist=Categorical(num_cats=2)), num_node_blocks=1)
    with pytest.raises(ValueError, match="must be a .pc file"):
        convert(root, tmp_path / "m.txt")
    with pytest.raises(ValueError, match="expected a PyJuice CircuitNodes"):
        convert("not a circuit", tmp_path / "m.pc")


def test_cli_import_pyjuice(tmp_path, capsys):
    from pcc.cli import main
    torch.manual_seed(11)
    root = pyjuice.structures.HMM(seq_length=4, num_latents=4, num_emits=3, block_size=2)
    root.init_parameters()
    pyjuice.save(str(tmp_path / "hmm.jpc"), root)
    assert main(["import-pyjuice", str(tmp_path / "hmm.jpc"), "-o", str(tmp_path / "hmm.pc")]) == 0
    assert "hmm.pc" in capsys.readouterr().out
    x = random_data(root)
    np.testing.assert_allclose(log_likelihood(pcc.parse(str(tmp_path / "hmm.pc")), x),
                               pyjuice_log_likelihood(root, x), rtol=1e-6)
    assert main(["import-pyjuice", str(tmp_path / "missing.jpc"), "-o", str(tmp_path / "x.pc")]) == 1


# --- PyJuice's own compiled model (CUDA only) -------------------------------------------------------


@pytest.mark.gpu
def test_pyjuice_tensorcircuit_on_gpu(tmp_path):
    torch.manual_seed(12)
    x = correlated_binary(512, 12)
    root = pyjuice.structures.HCLT(x, num_latents=8, chunk_size=4, input_node_params={"num_cats": 2})
    pc = pyjuice.compile(root, verbose=False).to("cuda")
    batch = x[:256].cuda()
    for _ in range(3):  # a few EM steps, so the compiled parameters differ from the nodes' initial ones
        lls = pc(batch)
        pc.backward(batch, flows_memory=1.0)
        pc.mini_batch_em(step_size=0.5, pseudocount=0.1)
    expected = pc(batch)[:, 0].detach().double().cpu().numpy()
    convert(pc, tmp_path / "hclt.pc")  # a TensorCircuit: its parameters are copied back first
    got = log_likelihood(pcc.parse(str(tmp_path / "hclt.pc")), x[:256].numpy().astype(float))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(pyjuice_log_likelihood(root, x[:256].numpy().astype(float)), expected, rtol=1e-4)
    assert lls is not None
