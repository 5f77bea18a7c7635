"""Random tensorized sum-product networks (RAT-SPN, Peharz et al. 2019) as readable ``.pc`` text.

For each of ``R`` repetitions the ``V`` variables are split at random into two balanced halves (sizes
``ceil(n/2)`` and ``floor(n/2)``), and each half again, ``D`` times: a binary tree of regions whose
``2^D`` leaves partition the variables. Regions are numbered as in a heap: region ``1`` is the full set,
the halves of region ``k`` are ``2k`` and ``2k+1``, the leaves are ``2^D .. 2^(D+1)-1``. The partitions
come from ``numpy.random.default_rng(seed)`` (one permutation per split, repetitions in order), so a seed
always gives the same file.

As a circuit (every region of repetition ``r`` is named ``reg[r, k]``):

* leaf region: for one variable, its input block of ``L`` nodes; for several, the aligned product of
  one input block of ``L`` nodes per variable (``inp[r, v]``), so node ``i`` is a fully factorised
  distribution. Every repetition has its own inputs.
* inner region ``k`` (``1 <= level < D``): ``cross[r, k]``, the product of *every pair* of a node of
  ``reg[r, 2k]`` and a node of ``reg[r, 2k+1]`` (an index table of ``L*L`` rows: node ``i*L + j`` is
  left node ``i`` times right node ``j``), then ``reg[r, k] = sum(cross[r, k], n=L)``: ``L^3`` edges.
* root: the full variable set is one region shared by every repetition, as in the paper: its
  partitions are the repetitions' top cross products ``top_cross[r]`` (``L*L`` nodes each) and one sum
  node mixes all ``R*L*L`` of them.

So there are ``R * V`` input blocks, ``R * (2^D - 1)`` cross products (plus one leaf product per leaf
region of several variables), ``R * (2^D - 2) + 1`` sum blocks and ``R * (2^D - 2) * L^3 + R * L^2``
sum edges; :func:`ratspn_counts` recounts them from the region tree.
"""
from __future__ import annotations

import math

import numpy as np

from .pd import _domain, _int

__all__ = ["ratspn_source", "ratspn_counts", "ratspn_partitions"]


def _check(num_vars, depth, repetitions, latents) -> tuple[int, int, int, int]:
    num_vars = _int("num_vars", num_vars, 2)
    depth = _int("depth", depth, 1)
    repetitions = _int("repetitions", repetitions, 1)
    latents = _int("latents", latents, 1)
    if num_vars < 2 ** depth:
        raise ValueError(f"depth {depth} splits the variables into 2^{depth} = {2 ** depth} leaf regions, "
                         f"but there are only {num_vars} variables (use depth <= {int(math.log2(num_vars))})")
    return num_vars, depth, repetitions, latents


def ratspn_partitions(num_vars: int, depth: int, repetitions: int, seed: int = 0) -> list[dict[int, list[int]]]:
    """The random region trees: for each repetition, heap index -> sorted variables of that region."""
    num_vars, depth, repetitions, _ = _check(num_vars, depth, repetitions, 1)
    rng = np.random.default_rng(_int("seed", seed, 0))
    trees = []
    for _ in range(repetitions):
        tree = {1: list(range(num_vars))}
        for k in range(1, 2 ** depth):  # heap order: parents before their halves
            perm = rng.permutation(tree[k])
            half = (len(perm) + 1) // 2
            tree[2 * k] = sorted(int(v) for v in perm[:half])
            tree[2 * k + 1] = sorted(int(v) for v in perm[half:])
        trees.append(tree)
    return trees


def ratspn_source(num_vars: int, depth: int, repetitions: int, latents: int, dist: str = "categorical",
                  num_cats: int = 256, seed: int = 0) -> str:
    """The ``.pc`` text of a RAT-SPN over ``X[0..num_vars-1]`` (see the module docstring).

    ``depth`` >= 1 splits (at most log2(num_vars)), ``repetitions`` random region trees, ``latents``
    nodes per region (``L``). ``dist``: ``categorical`` (``categorical(num_cats)``), ``bernoulli``
    (``binary``) or ``gaussian`` (``real``); ``num_cats`` is read only for categorical. ``seed`` chooses
    the partitions and is written as the file's ``seed`` statement (the parameters' initialisation).
    """
    num_vars, depth, repetitions, latents = _check(num_vars, depth, repetitions, latents)
    domain = _domain(dist, num_cats)
    seed = _int("seed", seed, 0)
    trees = ratspn_partitions(num_vars, depth, repetitions, seed)
    leaves = range(2 ** depth, 2 ** (depth + 1))
    leaf_sizes = sorted({len(trees[0][k]) for k in leaves})
    multi = sum(1 for k in leaves if len(trees[0][k]) > 1)
    inner = 2 ** depth - 2  # sum regions per repetition (not the root, not the leaves)
    edges = repetitions * inner * latents ** 3 + repetitions * latents ** 2
    sizes = " or ".join(map(str, leaf_sizes))
    lines = [
        f"# RAT-SPN (random tensorized SPN, Peharz et al. 2019) over {num_vars} variables X[0..{num_vars - 1}] : "
        f"{domain}, {dist} inputs.",
        f"# Depth {depth}, {repetitions} repetition{'s' if repetitions > 1 else ''}, {latents} latents: each "
        f"repetition splits the variables at random (seed {seed})",
        f"# into balanced halves {depth} time{'s' if depth > 1 else ''}, giving {2 ** depth} leaf regions of "
        f"{sizes} variable{'s' if leaf_sizes != [1] else ''}.",
        "# reg[r, k]: region k of repetition r (heap order: region 1 is all variables, its halves are 2k, 2k+1).",
        "# Leaf region: the input block of its variable, or the aligned product of its variables' inputs inp[r, v].",
        "# Inner region: cross[r, k] = every pair (i, j) of a node of reg[r, 2k] and one of reg[r, 2k+1]",
        "# (table row i*L + j), then reg[r, k] = sum(cross[r, k], n=L).",
        "# Root: all variables, one region shared by the repetitions: top = one sum node over the",
        "# repetitions' top cross products top_cross[r].",
        f"# Sizes: {repetitions * num_vars} input, {repetitions * (2 ** depth - 1 + multi)} product and "
        f"{repetitions * inner + 1} sum blocks; {edges} sum edges.",
        "# Generated by pcc.structures.ratspn.",
        "",
        f"let V = {num_vars}",
        f"let R = {repetitions}",
        f"let L = {latents}",
        f"seed {seed}",
        f"var X[V] : {domain}",
    ]
    for r, tree in enumerate(trees):
        lines += ["", f"# Repetition {r}: leaf regions."]
        for k in leaves:
            vs = tree[k]
            if len(vs) == 1:
                lines.append(f"reg[{r}, {k}] = input(X[{vs[0]}], {dist}, n=L)")
                continue
            for v in vs:
                lines.append(f"inp[{r}, {v}] = input(X[{v}], {dist}, n=L)")
            lines.append(f"reg[{r}, {k}] = prod({', '.join(f'inp[{r}, {v}]' for v in vs)})")
    table = _cross_table(latents)
    for level in range(depth - 1, 0, -1):
        lo, hi = 2 ** level, 2 ** (level + 1)
        lines += ["", f"# Inner regions {lo}..{hi - 1} (level {level}) of every repetition.",
                  f"for r in 0..R {{ for k in {lo}..{hi} {{",
                  "    cross[r, k] = prod(reg[r, 2*k], reg[r, 2*k+1], table=[",
                  *("        " + row for row in table),
                  "    ])",
                  "    reg[r, k] = sum(cross[r, k], n=L)",
                  "} }"]
    lines += ["", "# The root region: the repetitions' top splits, mixed by one sum node.",
              "for r in 0..R {",
              "    top_cross[r] = prod(reg[r, 2], reg[r, 3], table=[",
              *("        " + row for row in table),
              "    ])",
              "}",
              "top = sum(top_cross[0..R], n=1)",
              "root top"]
    return "\n".join(lines) + "\n"


def _cross_table(latents: int) -> list[str]:
    """Rows of the ``L*L x 2`` table of all pairs, at most 16 pairs a line."""
    pairs = [f"[{i}, {j}]" for i in range(latents) for j in range(latents)]
    rows = [", ".join(pairs[a:a + 16]) for a in range(0, len(pairs), 16)]
    return [row + "," for row in rows[:-1]] + rows[-1:]


def ratspn_counts(num_vars: int, depth: int, repetitions: int, latents: int) -> dict[str, int]:
    """Sizes of :func:`ratspn_source`'s circuit, by walking one region tree of balanced halves.

    Returns ``input_blocks``, ``prod_blocks``, ``sum_blocks``, ``sum_edges``, ``leaf_regions`` (per
    repetition) and ``nodes``.
    """
    num_vars, depth, repetitions, latents = _check(num_vars, depth, repetitions, latents)
    big = latents
    counts = {"input_blocks": 0, "prod_blocks": 0, "sum_blocks": 0, "sum_edges": 0, "leaf_regions": 0, "nodes": 0}

    def walk(n: int, level: int) -> None:  # one region of n variables at this level
        if level == depth:
            counts["leaf_regions"] += 1
            counts["input_blocks"] += n
            counts["nodes"] += n * big
            if n > 1:
                counts["prod_blocks"] += 1
                counts["nodes"] += big
            return
        walk((n + 1) // 2, level + 1)
        walk(n // 2, level + 1)
        counts["prod_blocks"] += 1  # the cross product of the two halves
        counts["nodes"] += big * big
        if level > 0:
            counts["sum_blocks"] += 1
            counts["sum_edges"] += big * big * big
            counts["nodes"] += big

    walk(num_vars, 0)
    out = {k: v * repetitions for k, v in counts.items()}
    out["leaf_regions"] = counts["leaf_regions"]
    out["sum_blocks"] += 1  # the root
    out["sum_edges"] += repetitions * big * big
    out["nodes"] += 1
    return out
