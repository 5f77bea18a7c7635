"""Hidden Chow–Liu Trees (HCLT) as readable ``.pc`` text.

An HCLT attaches a latent variable ``Z[v]`` with ``L`` states to every observed variable ``X[v]`` and
connects the latents along a Chow–Liu tree of the data. As a circuit, read leaves-up from the root:

* ``in[v] = input(X[v], DIST, n=L)``: node ``k`` is the emission ``p(X[v] | Z[v] = k)``;
* ``p[v] = prod(in[v], s[c1], s[c2], ...)``: node ``k`` multiplies v's emission with the messages of its
  tree children ``c`` (for a leaf, ``p[v]`` is ``in[v]`` itself and no product is written);
* ``s[v] = sum(p[v], n=L)`` for every non-root ``v``: the message to v's parent, node ``j`` sums over
  ``Z[v]`` given the parent's state ``j`` (an ``L x L`` transition matrix);
* ``top = sum(p[root], n=1)``: the prior of the root latent; ``root top``.

So there are ``V`` input blocks of ``L`` nodes and ``(V - 1) * L * L + L`` sum edges.

:func:`hclt` builds the tree from data (:func:`pcc.structures.chow_liu.chow_liu_tree`) and roots it at
the tree's *center* (a node of minimum eccentricity, the smallest index among ties), which minimises
the depth of the circuit and so its number of sequential layers; ``root=`` overrides the choice.
:func:`hclt_source` writes the ``.pc`` text of any given tree and root.
"""
from __future__ import annotations

import re
import textwrap

import networkx as nx
import numpy as np

from .chow_liu import MAX_ROWS, chow_liu_tree, infer_num_cats, mutual_information

__all__ = ["hclt", "hclt_source", "tree_center", "chow_liu_tree", "mutual_information", "infer_num_cats"]

_BLOCK_NAMES = {"in", "p", "s", "top", "V", "L", "v"}
_DISTS = ("categorical", "bernoulli", "gaussian")


def hclt(x: np.ndarray, latents: int, dist: str = "categorical", num_cats: int | list[int] | None = None,
         seed: int = 0, *, root: int | str = "center", pseudocount: float = 1.0, bins: int | None = None,
         max_rows: int | None = MAX_ROWS, var_name: str = "X") -> str:
    """The ``.pc`` source of an HCLT with ``latents`` states per variable, fitted to the data ``x``.

    ``x`` is ``[rows, V]``. ``dist`` is the input distribution: ``categorical`` (values ``0..K-1``; ``K``
    from ``num_cats`` or inferred per column as max + 1), ``bernoulli`` (binary data) or ``gaussian``
    (real data; the tree then uses Gaussian mutual information unless ``bins`` is given).
    ``root``: a variable index, ``"center"`` (default, see the module docstring) or ``"max_degree"``
    (the variable with the most tree neighbours, smallest index among ties). ``seed`` seeds both the
    row subsample of the tree estimate and the random parameters of the circuit (``seed`` statement).
    """
    _check_dist(dist)
    x = np.asarray(x)
    if dist == "gaussian":
        tree = chow_liu_tree(x, kind="discrete" if bins else "gaussian", bins=bins, max_rows=max_rows,
                             seed=seed)
        ks: int | list[int] | None = None
    else:
        ks = infer_num_cats(x, num_cats)
        if dist == "bernoulli" and max(ks) > 2:
            raise ValueError(f"bernoulli inputs need binary data (values 0/1), but a column has {max(ks)} values")
        tree = chow_liu_tree(x, ks, pseudocount, kind="discrete", max_rows=max_rows, seed=seed)
    root_var, why = _choose_root(tree, root)
    return hclt_source(tree, root_var, x.shape[1], latents, dist, ks, var_name=var_name, seed=seed,
                       root_note=why)


def hclt_source(tree: nx.Graph, root: int, num_vars: int, latents: int, dist: str,
                num_cats: int | list[int] | None, var_name: str = "X", seed: int = 0, *,
                root_note: str | None = None) -> str:
    """The ``.pc`` text of the HCLT of ``tree`` (a spanning tree of ``0..num_vars-1``) rooted at ``root``.

    ``dist``: ``categorical`` (variables ``categorical(K)``, ``K`` the largest of ``num_cats``),
    ``bernoulli`` (variables ``binary``; ``num_cats`` must be 2 or None) or ``gaussian`` (variables
    ``real``; ``num_cats`` is ignored). ``tree.graph["description"]``, when present, is written into the
    header as the way the tree was built; ``root_note`` says why this root was chosen.
    """
    _check_tree(tree, num_vars, root)
    if latents < 1:
        raise ValueError(f"latents must be >= 1, got {latents}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var_name) or var_name in _BLOCK_NAMES:
        raise ValueError(f"var_name must be an identifier other than {sorted(_BLOCK_NAMES)}, got {var_name!r}")
    domain = _domain(dist, num_cats)
    children, order = _rooted(tree, root)
    header = _header(tree, root, num_vars, latents, dist, domain, children, var_name, root_note)
    body = [
        f"let V = {num_vars}",
        f"let L = {latents}",
        f"seed {seed}",
        f"var {var_name}[V] : {domain}",
        "",
        f"# Emissions: node k of in[v] is p({var_name}[v] | Z[v] = k).",
        "for v in 0..V {",
        f"    in[v] = input({var_name}[v], {dist}, n=L)",
        "}",
        "",
        "# Leaves up. p[v]: v's emission times the messages of its tree children (a leaf's p[v] is in[v]).",
        "# s[v]: the message to v's parent, node j sums over Z[v] given the parent's state j.",
    ]
    for v in order:
        body += _node_lines(v, children[v], v == root)
    body.append("root top")
    return "\n".join(header + body) + "\n"


def tree_center(tree: nx.Graph) -> int:
    """A node of minimum eccentricity (the smaller index of the two when the center is an edge)."""
    if tree.number_of_nodes() <= 2:
        return min(tree.nodes)
    degree = dict(tree.degree)
    layer = [v for v, d in degree.items() if d <= 1]
    remaining = tree.number_of_nodes()
    while remaining > 2:  # peel the leaves until one or two nodes are left: they are the center
        remaining -= len(layer)
        nxt = []
        for v in layer:
            for u in tree.neighbors(v):
                degree[u] -= 1
                if degree[u] == 1:
                    nxt.append(u)
        layer = nxt
    return min(layer)


# --- structure ---------------------------------------------------------------------------------------

def _rooted(tree: nx.Graph, root: int) -> tuple[dict[int, list[int]], list[int]]:
    """Children of every node (sorted) and a post-order (children before parents, subtrees together)."""
    children: dict[int, list[int]] = {v: [] for v in tree.nodes}
    for parent, child in nx.bfs_edges(tree, root):
        children[parent].append(child)
    for kids in children.values():
        kids.sort()
    order: list[int] = []
    stack = [(root, False)]
    while stack:  # iterative: a chain of 784 variables would exceed Python's recursion limit
        v, done = stack.pop()
        if done:
            order.append(v)
        else:
            stack.append((v, True))
            stack.extend((c, False) for c in reversed(children[v]))
    return children, order


def _node_lines(v: int, kids: list[int], is_root: bool) -> list[str]:
    """The lines of node v: its product (unless a leaf), then its message or the root's mixture."""
    lines = []
    if kids:
        messages = ", ".join(f"s[{c}]" for c in kids)
        lines.append(f"p[{v}] = prod(in[{v}], {messages})")
    below = f"p[{v}]" if kids else f"in[{v}]"
    lines.append(f"top = sum({below}, n=1)" if is_root else f"s[{v}] = sum({below}, n=L)")
    return lines


def _choose_root(tree: nx.Graph, root: int | str) -> tuple[int, str]:
    if isinstance(root, str):
        if root == "center":
            return tree_center(tree), "the tree's center, for minimum height"
        if root == "max_degree":
            best = max(tree.nodes, key=lambda v: (tree.degree[v], -v))
            return best, f"a variable of maximal degree, {tree.degree[best]}"
        raise ValueError(f"root must be a variable index, 'center' or 'max_degree', got {root!r}")
    return int(root), "given"


def _height(children: dict[int, list[int]], root: int) -> int:
    """Edges on the longest root-to-leaf path."""
    height, frontier = 0, children[root]
    while frontier:
        height += 1
        frontier = [c for v in frontier for c in children[v]]
    return height


# --- text --------------------------------------------------------------------------------------------

def _header(tree: nx.Graph, root: int, v: int, latents: int, dist: str, domain: str,
            children: dict[int, list[int]], var_name: str, root_note: str | None) -> list[str]:
    edges = (v - 1) * latents * latents + latents
    leaves = sum(1 for c in children.values() if not c)
    how = textwrap.wrap(f"Tree: {tree.graph.get('description', 'given')}.", 100,
                        initial_indent="# ", subsequent_indent="#   ")
    root_why = f" ({root_note})" if root_note else ""
    return [
        f"# Hidden Chow-Liu Tree (HCLT) over {v} variables {var_name}[0..{v - 1}] : {domain},",
        f"# {latents} latent states per variable, {dist} inputs.",
        *how,
        f"# Rooted at {var_name}[{root}]{root_why}; height {_height(children, root)}, {leaves} leaves.",
        f"# Sizes: {v} input blocks of {latents} nodes, {v - 1} sum blocks of {latents} x {latents} and a root "
        f"sum of 1 x {latents}: {edges} sum edges.",
        "# Generated by pcc.structures.hclt.",
        "",
    ]


def _domain(dist: str, num_cats: int | list[int] | None) -> str:
    _check_dist(dist)
    if dist == "gaussian":
        return "real"
    if num_cats is None:
        if dist == "bernoulli":
            return "binary"
        raise ValueError("categorical inputs need num_cats")
    k = int(num_cats) if np.isscalar(num_cats) else max(int(c) for c in num_cats)
    if dist == "bernoulli":
        if k > 2:
            raise ValueError(f"bernoulli inputs need binary variables, but num_cats is {k}")
        return "binary"
    if k < 1:
        raise ValueError(f"num_cats must be >= 1, got {k}")
    return f"categorical({k})"


def _check_dist(dist: str) -> None:
    if dist not in _DISTS:
        raise ValueError(f"dist must be one of {', '.join(_DISTS)}, got {dist!r}")


def _check_tree(tree: nx.Graph, num_vars: int, root: int) -> None:
    if set(tree.nodes) != set(range(num_vars)):
        raise ValueError(f"the tree's nodes must be exactly 0..{num_vars - 1}")
    if not nx.is_tree(tree):
        raise ValueError("the graph is not a tree (it must be connected and acyclic)")
    if root not in tree:
        raise ValueError(f"root {root} is not a variable of the tree")
