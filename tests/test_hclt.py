"""Chow–Liu trees and HCLT generation: exact trees (brute force), exact MI, circuit sizes, normalisation."""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from pcc.frontend import load_text
from pcc.ir import InputBlock, ProdBlock, SumBlock, log_likelihood, verify
from pcc.structures import chow_liu_tree, hclt, hclt_source, infer_num_cats, mutual_information, tree_center

DATA = Path(os.environ.get("PCC_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


# --- helpers -----------------------------------------------------------------------------------------

def naive_mi(x: np.ndarray, ks: list[int], a: float) -> np.ndarray:
    """MI of every pair from explicitly built smoothed joint tables, one pair at a time."""
    n, v = x.shape
    out = np.zeros((v, v))
    for i, j in itertools.permutations(range(v), 2):
        counts = np.zeros((ks[i], ks[j]))
        np.add.at(counts, (x[:, i], x[:, j]), 1.0)
        joint = (counts + a / (ks[i] * ks[j])) / (n + a)
        outer = np.outer(joint.sum(1), joint.sum(0))
        nz = joint > 0
        out[i, j] = (joint[nz] * np.log(joint[nz] / outer[nz])).sum()
    return out


def prufer_trees(v: int):
    """Every labelled spanning tree of the complete graph on ``v`` nodes (Cayley: v^(v-2) of them)."""
    for seq in itertools.product(range(v), repeat=v - 2):
        degree = [1] * v
        for s in seq:
            degree[s] += 1
        edges = []
        for s in seq:
            leaf = min(u for u in range(v) if degree[u] == 1)
            edges.append((leaf, s))
            degree[leaf] -= 1
            degree[s] -= 1
        u, w = (u for u in range(v) if degree[u] == 1)
        edges.append((u, w))
        yield edges


def tree_data(v: int, k: int, rows: int, seed: int, noise: float = 0.2) -> np.ndarray:
    """Samples along a random tree: each variable copies its parent, re-drawn with probability ``noise``
    scaled differently per edge so that the edge strengths (and hence the best tree) are distinct."""
    rng = np.random.default_rng(seed)
    parent = [None] + [int(rng.integers(0, i)) for i in range(1, v)]
    order = rng.permutation(v)  # relabel so that the tree is not always rooted at column 0
    x = np.zeros((rows, v), dtype=np.int64)
    x[:, 0] = rng.integers(0, k, rows)
    for i in range(1, v):
        redraw = rng.random(rows) < noise * (0.5 + i / v)
        x[:, i] = np.where(redraw, rng.integers(0, k, rows), x[:, parent[i]])
    return x[:, np.argsort(order)]


def edge_set(edges) -> set[frozenset]:
    return {frozenset(e) for e in edges}


def all_assignments(v: int, k: int) -> np.ndarray:
    return np.array(list(itertools.product(range(k), repeat=v)), dtype=np.float64)


def expected_counts(circuit, v: int, latents: int) -> None:
    """The block and edge counts an HCLT over ``v`` variables with ``latents`` states must have."""
    inputs = [b for b in circuit.blocks if isinstance(b, InputBlock)]
    sums = [b for b in circuit.blocks if isinstance(b, SumBlock)]
    assert len(inputs) == v and all(b.n == latents for b in inputs)
    assert sorted(b.var for b in inputs) == list(range(v))
    assert len(sums) == v  # one message per non-root variable, plus the root mixture
    assert circuit.num_sum_edges() == (v - 1) * latents * latents + latents
    assert circuit.blocks[circuit.root].n == 1


# --- mutual information ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["onehot", "sort"])
@pytest.mark.parametrize("ks", [[2, 3, 5, 2, 7], [4] * 6, [2] * 5, [1, 3, 2]])
@pytest.mark.parametrize("a", [0.0, 1.0, 3.5])
def test_mutual_information_matches_explicit_tables(method, ks, a):
    rng = np.random.default_rng(len(ks) + int(10 * a))
    x = np.stack([rng.integers(0, k, 300) for k in ks], axis=1)
    x[:, 1] = np.minimum(x[:, 0], ks[1] - 1)  # a dependent pair
    got = mutual_information(x, ks, a, method=method)
    np.testing.assert_allclose(got, naive_mi(x, ks, a), atol=1e-12)
    np.testing.assert_array_equal(got, got.T)


def test_mutual_information_methods_agree_on_many_values():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 40, size=(2000, 12))
    x[:, 5] = x[:, 2] // 2  # strong dependence (40 x 20 tables)
    a = mutual_information(x, method="onehot")
    b = mutual_information(x, method="sort", threads=2)
    np.testing.assert_allclose(a, b, atol=1e-11)
    assert np.unravel_index(np.argmax(a), a.shape) in ((2, 5), (5, 2))


def test_gaussian_mutual_information():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 4))
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]  # correlation 0.8 with column 0
    x[:, 3] = 5.0  # a constant column: independent of everything
    mi = mutual_information(x, kind="gaussian")
    assert mi[0, 1] == pytest.approx(-0.5 * np.log(1 - 0.8**2), abs=0.02)
    assert np.all(mi[3] == 0) and np.all(np.diag(mi) == 0)
    assert mutual_information(x[:, :3] + 0.5).shape == (3, 3)  # auto: non-integers are real data


def test_subsampling_is_seeded():
    x = tree_data(6, 3, 5000, seed=1)
    a = mutual_information(x, max_rows=1000, seed=4)
    np.testing.assert_array_equal(a, mutual_information(x, max_rows=1000, seed=4))
    assert not np.array_equal(a, mutual_information(x, max_rows=1000, seed=5))
    assert "1000 of 5000 rows" in chow_liu_tree(x, max_rows=1000).graph["description"]


# --- Chow–Liu trees ----------------------------------------------------------------------------------

@pytest.mark.parametrize("v,k,seed", [(4, 2, 0), (4, 3, 1), (5, 2, 2), (5, 4, 3), (5, 3, 4)])
def test_chow_liu_tree_is_the_brute_force_maximum(v, k, seed):
    x = tree_data(v, k, 3000, seed)
    mi = mutual_information(x, k)
    weights = [(sum(mi[a, b] for a, b in t), t) for t in prufer_trees(v)]
    assert len(weights) == v ** (v - 2)
    weights.sort(key=lambda wt: -wt[0])
    best, best_edges = weights[0]
    assert best - weights[1][0] > 1e-6  # the data make the maximum unique

    tree = chow_liu_tree(x, k)
    assert nx.is_tree(tree) and set(tree.nodes) == set(range(v))
    assert edge_set(tree.edges) == edge_set(best_edges)
    assert tree.size(weight="weight") == pytest.approx(best, rel=1e-12)


def test_chow_liu_tree_gaussian_is_the_brute_force_maximum():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 5))
    for child, parent, w in [(1, 0, 0.9), (2, 1, 0.7), (3, 1, 0.5), (4, 2, 0.8)]:
        x[:, child] = w * x[:, parent] + np.sqrt(1 - w * w) * x[:, child]
    mi = mutual_information(x, kind="gaussian")
    best = max(prufer_trees(5), key=lambda t: sum(mi[a, b] for a, b in t))
    tree = chow_liu_tree(x)
    assert edge_set(tree.edges) == edge_set(best) == edge_set([(1, 0), (2, 1), (3, 1), (4, 2)])
    assert "Gaussian" in tree.graph["description"]
    binned = chow_liu_tree(x, bins=8)  # real data cut into equal-frequency bins: discrete MI
    assert edge_set(binned.edges) == edge_set(best)


def test_infer_num_cats():
    x = np.array([[0, 1, 4], [1, 0, 2]])
    assert infer_num_cats(x) == [2, 2, 5]
    assert infer_num_cats(x, 6) == [6, 6, 6]
    assert infer_num_cats(x, [2, 3, 5]) == [2, 3, 5]
    with pytest.raises(ValueError, match="outside"):
        infer_num_cats(x, 4)
    with pytest.raises(ValueError, match="non-negative integers"):
        infer_num_cats(x - 1)


def test_tree_center():
    assert tree_center(nx.path_graph(7)) == 3
    assert tree_center(nx.path_graph(6)) == 2  # two centres: the smaller index
    assert tree_center(nx.star_graph(5)) == 0
    assert tree_center(nx.Graph([(4, 9)])) == 4


# --- HCLT circuits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dist", ["categorical", "bernoulli"])
def test_tiny_binary_hclt_is_normalised(dist):
    x = tree_data(4, 2, 500, seed=5)
    src = hclt(x, 2, dist, seed=3)
    circuit = load_text(src)
    verify(circuit)
    expected_counts(circuit, 4, 2)
    assert ("categorical(2)" if dist == "categorical" else "var X[V] : binary") in src
    total = np.exp(log_likelihood(circuit, all_assignments(4, 2))).sum()
    assert total == pytest.approx(1.0, abs=1e-12)


def test_categorical_hclt_is_normalised():
    x = tree_data(4, 3, 500, seed=6)
    circuit = load_text(hclt(x, 3))
    expected_counts(circuit, 4, 3)
    assert np.exp(log_likelihood(circuit, all_assignments(4, 3))).sum() == pytest.approx(1.0, abs=1e-12)


def test_hclt_structure_follows_the_tree():
    """Each p[v] multiplies in[v] with s[c] of v's children; a leaf's s[v] sums in[v] directly."""
    tree = nx.Graph([(0, 1), (1, 2), (1, 3), (3, 4), (3, 5), (5, 6)])
    src = hclt_source(tree, root=3, num_vars=7, latents=4, dist="categorical", num_cats=5)
    circuit = load_text(src)
    verify(circuit)
    expected_counts(circuit, 7, 4)
    names = {b.name: b for b in circuit.blocks}
    kids = lambda b: sorted(circuit.blocks[c].name for c in b.children)  # noqa: E731
    assert kids(names["p[3]"]) == ["in[3]", "s[1]", "s[4]", "s[5]"]
    assert kids(names["p[1]"]) == ["in[1]", "s[0]", "s[2]"]
    assert kids(names["s[0]"]) == ["in[0]"] and "p[0]" not in names  # a leaf: no one-child product
    assert kids(names["top"]) == ["p[3]"] and "s[3]" not in names
    assert len([b for b in circuit.blocks if isinstance(b, ProdBlock)]) == 3  # the internal nodes 1, 5 and the root 3
    assert src.count("\n") < 40 and "height 2" in src and "var X[V] : categorical(5)" in src


def test_hclt_source_edge_cases():
    single = load_text(hclt_source(nx.empty_graph(1), 0, 1, 3, "categorical", 4))  # one variable
    expected_counts(single, 1, 3)
    pair = load_text(hclt_source(nx.Graph([(0, 1)]), 1, 2, 2, "gaussian", None, var_name="Pix"))
    expected_counts(pair, 2, 2)
    assert [v.name for v in pair.variables] == ["Pix[0]", "Pix[1]"]
    chain = nx.path_graph(300)  # deeper than Python's recursion limit would like
    expected_counts(load_text(hclt_source(chain, 0, 300, 2, "bernoulli", 2)), 300, 2)
    with pytest.raises(ValueError, match="bernoulli"):
        hclt_source(chain, 0, 300, 2, "bernoulli", 3)
    with pytest.raises(ValueError, match="dist"):
        hclt_source(chain, 0, 300, 2, "poisson", 3)
    with pytest.raises(ValueError, match="not a tree"):
        hclt_source(nx.cycle_graph(3), 0, 3, 2, "categorical", 2)
    with pytest.raises(ValueError, match="exactly"):
        hclt_source(chain, 0, 301, 2, "categorical", 2)
    with pytest.raises(ValueError, match="var_name"):
        hclt_source(chain, 0, 300, 2, "categorical", 2, var_name="s")
    with pytest.raises(ValueError, match="binary data"):
        hclt(np.array([[0, 2], [1, 0]]), 2, "bernoulli")


def test_hclt_roots_and_real_data():
    x = tree_data(9, 3, 2000, seed=8)
    tree = chow_liu_tree(x)
    assert f"Rooted at X[{tree_center(tree)}] (the tree's center" in hclt(x, 2)
    hub = max(tree.nodes, key=lambda v: (tree.degree[v], -v))
    assert f"Rooted at X[{hub}] (a variable of maximal degree" in hclt(x, 2, root="max_degree")
    assert "Rooted at X[4] (given)" in hclt(x, 2, root=4)

    real = np.random.default_rng(0).normal(size=(300, 5))
    real[:, 2] += real[:, 4]
    src = hclt(real, 3, "gaussian")
    assert "var X[V] : real" in src and "Gaussian mutual information" in src
    circuit = load_text(src)
    verify(circuit)
    expected_counts(circuit, 5, 3)
    assert np.all(np.isfinite(log_likelihood(circuit, real[:10])))


def test_hclt_on_nltcs():
    path = DATA / "twenty" / "nltcs" / "nltcs.train.data.gz"
    if not path.is_file():
        pytest.skip(f"shared data not found: {path} (set PCC_DATA to the data folder)")
    x = np.loadtxt(path, delimiter=",")
    assert x.shape[1] == 16
    circuit = load_text(hclt(x, 8))
    verify(circuit)
    expected_counts(circuit, 16, 8)
    ll = log_likelihood(circuit, x[:200])
    assert np.all(np.isfinite(ll)) and np.all(ll < 0)


def test_mutual_information_speed_784_columns_256_values():
    x = np.random.default_rng(0).integers(0, 256, size=(5000, 784), dtype=np.uint8)
    start = time.perf_counter()
    tree = chow_liu_tree(x)  # the "sort" method: pairwise tables of 256 x 256 values
    elapsed = time.perf_counter() - start
    assert nx.is_tree(tree) and tree.number_of_nodes() == 784
    assert elapsed < 60, f"Chow-Liu tree of 784 x 256-valued columns took {elapsed:.1f} s"
