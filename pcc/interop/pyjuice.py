"""Convert a PyJuice (2.6.x) circuit into a pcc ``.pc`` file plus a safetensors sidecar.

A PyJuice circuit is a DAG of ``CircuitNodes``; each one is ``num_node_blocks`` blocks of ``block_size``
nodes and becomes one pcc block of ``n = num_node_blocks * block_size`` nodes. The PyJuice layouts read
here (learnt from PyJuice 2.6.3's ``nodes/`` package; :func:`convert` neither uses nor imports PyJuice code,
:func:`import_file` calls ``pyjuice.load``):

* ``InputNodes``: ``scope`` (one variable), ``dist`` and ``_params``, flat and node-major:
  Categorical ``[n*K]`` (node ``i``'s probabilities of the values ``0..K-1``), Bernoulli ``[n]``
  (``p(X = 1)``), Gaussian ``[n*2]`` (mean, standard deviation).
* ``ProdNodes``: ``chs`` and ``edge_ids``, either block-level ``[num_node_blocks, k]`` (node ``b*B + i``
  multiplies node ``edge_ids[b, j]*B + i`` of child ``j``) or node-level ``[n, k]`` (``sparse_edges``).
  PyJuice wraps every input child of a sum into a one-child identity product; those become no block.
* ``SumNodes``: ``chs`` (their node blocks concatenated, as in pcc), ``edge_ids`` ``[2, m]`` of
  (parent block, child block) pairs and ``_params`` ``[m, B, Bc]``: ``_params[e, i, j]`` is the weight
  from node ``pb*B + i`` to child node ``cb*Bc + j`` where ``(pb, cb)`` is edge ``e``.
* Tying: ``_source_node`` is the node that holds the parameters (tied nodes keep ``_params = None``).

Everything is vectorised per node block (numpy over whole parameter arrays), so circuits with 10^8
edges convert in seconds; the cost is a copy or two of each parameter array.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcc.api import write_text_atomic
from pcc.ir import tensorfile

# A row of weights or probabilities whose sum is this far from 1 is rescaled (in float64) on the way out;
# closer rows are copied bit for bit. pcc's verifier accepts 1e-6, so passes keep some room.
NORMALISE_TOLERANCE = 1e-7
# PyJuice's compile initialises missing parameters with this perturbation (TensorCircuit._init_parameters).
_PYJUICE_INIT_PERTURBATION = 4.0
_NODE_CLASSES = {"InputNodes", "ProdNodes", "SumNodes"}
_DISTRIBUTIONS = {"Categorical": "categorical", "Bernoulli": "bernoulli", "Gaussian": "gaussian"}

__all__ = ["convert", "import_file"]


def convert(root: Any, path: str | Path, dtype: Any = np.float32) -> Path:
    """Write the PyJuice circuit ``root`` as the pcc file ``path`` (``.pc``) and its tensors beside it.

    ``root`` is the root ``CircuitNodes`` of a PyJuice DAG, compiled or not, or a compiled
    ``TensorCircuit`` (its parameters are first copied back into the nodes with ``update_parameters``).
    Parameters are taken from the nodes; nodes that never had any are initialised exactly as
    ``pyjuice.compile`` would (``init_parameters(perturbation=4.0)``, stored on the nodes, so a later
    PyJuice compile uses the same values). Data column ``v`` of a PyJuice batch is variable ``X[v]``.

    The tensors go to ``path.with_suffix(".safetensors")`` as ``dtype`` (float32 keeps PyJuice's values
    bit for bit); index tables as int64. Returns ``path``. Raises ``ValueError`` naming the node for
    anything pcc cannot express (other distributions, multivariate inputs, external parameters, a root
    of several nodes, ...).
    """
    path = Path(path)
    if path.suffix != ".pc":
        raise ValueError(f"the output must be a .pc file, got {str(path)!r}")
    nodes = topological_order(_root_nodes(root))
    ensure_params(nodes)
    emitter = _Emitter(variable_domains(nodes), np.dtype(dtype))
    for ns in nodes:
        emitter.add(ns)
    sidecar = path.with_suffix(".safetensors")
    text = emitter.source(nodes[-1], sidecar.name)
    tensorfile.save(sidecar, emitter.tensors)
    write_text_atomic(path, text)
    return path


def _root_nodes(root: Any) -> Any:
    """The root CircuitNodes of ``root``; a TensorCircuit first pushes its parameters into its nodes."""
    if hasattr(root, "root_ns") and hasattr(root, "update_parameters"):
        root.update_parameters()
        return root.root_ns
    if type(root).__name__ not in _NODE_CLASSES and not hasattr(root, "chs"):
        raise ValueError(f"expected a PyJuice CircuitNodes or TensorCircuit, got {type(root).__name__}")
    return root


def topological_order(root: Any) -> list[Any]:
    """The CircuitNodes reachable from ``root``, children before parents, each once (root last).

    Iterative, so deep circuits (long HMMs) do not hit Python's recursion limit; unsupported node
    classes are reported here, before any work is done.
    """
    order: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        ns, done = stack.pop()
        if done:
            order.append(ns)
        elif id(ns) not in seen:
            seen.add(id(ns))
            _check_node_class(ns)
            stack.append((ns, True))
            stack.extend((c, False) for c in reversed(ns.chs) if id(c) not in seen)
    return order


def _check_node_class(ns: Any) -> None:
    kind = type(ns).__name__
    if kind == "ExternalParamsSumNodes":
        raise ValueError(f"{ns!r}: sum nodes with per-sample external parameters are not supported")
    if kind not in _NODE_CLASSES:
        supported = ", ".join(sorted(_NODE_CLASSES))
        raise ValueError(f"{ns!r}: unsupported PyJuice node class {kind} (supported: {supported})")
    if kind == "InputNodes":
        signature = ns.dist.get_signature() if hasattr(ns.dist, "get_signature") else type(ns.dist).__name__
        if signature not in _DISTRIBUTIONS:
            raise ValueError(f"{ns!r}: unsupported input distribution {signature} "
                             f"(supported: {', '.join(_DISTRIBUTIONS)})")
        if len(ns.scope) != 1:
            raise ValueError(f"{ns!r}: an input node over {len(ns.scope)} variables is not supported "
                             "(one variable each)")


def ensure_params(nodes: list[Any]) -> None:
    """Give every parameter-holding node (or, for tied nodes, its source) parameters, as PyJuice's compile does."""
    for ns in nodes:
        if type(ns).__name__ == "ProdNodes":
            continue
        owner = ns.get_source_ns()
        if getattr(owner, "_params", None) is None:
            # visited=set(): PyJuice's default argument is a shared set that would keep every node alive.
            extra = {"visited": set()} if type(owner).__name__ == "SumNodes" else {}
            owner.init_parameters(perturbation=_PYJUICE_INIT_PERTURBATION, recursive=False, **extra)


# --- variables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Domain:
    kind: str  # "categorical", "binary" or "real" (pcc's domains)
    k: int = 0

    def __str__(self) -> str:
        return f"categorical({self.k})" if self.kind == "categorical" else self.kind


def variable_domains(nodes: list[Any]) -> list[_Domain]:
    """The pcc domain of every variable ``0..V-1`` (V = largest variable of any input + 1).

    Categorical inputs of one variable with different K share the largest K (smaller tables are padded
    with zeros); Bernoulli with Categorical(K <= 2) is binary; variables no input mentions take the most
    common domain. Other mixes raise ValueError.
    """
    seen: dict[int, _Domain] = {}
    for ns in nodes:
        if type(ns).__name__ == "InputNodes":
            v = _variable(ns)
            seen[v] = _merge(seen.get(v), _input_domain(ns), v)
    common = Counter(seen.values()).most_common(1)[0][0]
    return [seen.get(v, common) for v in range(max(seen) + 1)]


def _variable(ns: Any) -> int:
    return int(next(iter(ns.scope)))


def _input_domain(ns: Any) -> _Domain:
    dist = _DISTRIBUTIONS[ns.dist.get_signature()]
    if dist == "categorical":
        return _Domain("categorical", int(ns.dist.num_cats))
    return _Domain("binary" if dist == "bernoulli" else "real")


def _merge(old: _Domain | None, new: _Domain, v: int) -> _Domain:
    if old is None or old == new:
        return new
    kinds = {old.kind, new.kind}
    if kinds == {"categorical"}:
        return _Domain("categorical", max(old.k, new.k))
    if kinds == {"categorical", "binary"} and max(old.k, new.k) <= 2:
        return _Domain("binary")
    raise ValueError(f"variable {v} has input nodes of incompatible kinds ({old} and {new})")


# --- the emitter ----------------------------------------------------------------------------------


class _Emitter:
    """Accumulates the .pc lines and the tensors, one PyJuice node at a time (children first)."""

    def __init__(self, domains: list[_Domain], dtype: np.dtype):
        self.domains = domains
        self.uniform = len(set(domains)) == 1
        self.dtype = dtype
        self.lines: list[str] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.names: dict[int, str] = {}  # id(ns) -> its pcc block (an identity product: its child's)
        self.owners: dict[int, tuple[str, Any]] = {}  # id(parameter source) -> (first pcc block, its node)
        self.tile_tensors: dict[int, str] = {}  # id(parameter source) -> its tiles tensor, shared by ties
        self.counts = Counter()

    def add(self, ns: Any) -> None:
        {"InputNodes": self._input, "ProdNodes": self._prod, "SumNodes": self._sum}[type(ns).__name__](ns)

    def source(self, root: Any, sidecar: str) -> str:
        """The complete .pc text; ``sidecar`` is the tensor file's name relative to the .pc file."""
        if root.num_nodes != 1:
            raise ValueError(f"the root {root!r} has {root.num_nodes} nodes; pcc needs a root of one node")
        V = len(self.domains)
        summary = (f"# Converted from a PyJuice circuit by pcc.interop.pyjuice: {V} variables, "
                   f"{sum(self.counts.values())} blocks ({self.counts['input']} input, {self.counts['prod']} prod, "
                   f"{self.counts['sum']} sum). Data column v is variable {'X[v]' if self.uniform else 'Xv'}.")
        header = [summary, f'tensors "{sidecar}"']
        if self.uniform:
            header.append(f"var X[{V}] : {self.domains[0]}")
        else:
            header.extend(f"var X{v} : {d}" for v, d in enumerate(self.domains))
        return "\n".join(header + self.lines + [f"root {self.names[id(root)]}", ""])

    def _new(self, kind: str) -> str:
        self.counts[kind] += 1
        return f"{kind[0] if kind != 'input' else 'in'}{sum(self.counts.values()) - 1}"

    def _var_ref(self, v: int) -> str:
        return f"X[{v}]" if self.uniform else f"X{v}"

    def _params(self, ns: Any, name: str, suffix: str, make) -> str:
        """``params=tensor(...)`` for a parameter source's first block, ``tie=FIRST`` for the others.

        PyJuice ties by position (edge ``e`` of every tied node uses the source's ``_params[e]``), as pcc
        does, so tied nodes must have the source's structure exactly.
        """
        owner = ns.get_source_ns()
        if owner is not ns and not _same_structure(ns, owner):
            raise ValueError(f"{ns!r} is tied to {owner!r} but differs from it in shape or edges; "
                             "pcc ties need equal shapes")
        if id(owner) not in self.owners:
            self.owners[id(owner)] = (name, ns)
            self.tensors[name + suffix] = make(owner)
            return f'params=tensor("{name}{suffix}")'
        first, emitted = self.owners[id(owner)]
        if type(ns).__name__ == "InputNodes" and self.domains[_variable(ns)] != self.domains[_variable(emitted)]:
            raise ValueError(f"{ns!r} is tied to an input over a variable of another domain "
                             f"({self.domains[_variable(ns)]} vs {self.domains[_variable(emitted)]})")
        return f"tie={first}"

    def _input(self, ns: Any) -> None:
        name = self._new("input")
        v = _variable(ns)
        dist = _DISTRIBUTIONS[ns.dist.get_signature()]
        domain = self.domains[v]
        params = self._params(ns, name, ".p", lambda owner: input_params(owner, dist, domain, self.dtype))
        self.names[id(ns)] = name
        self.lines.append(f"{name} = input({self._var_ref(v)}, {dist}, n={ns.num_nodes}, {params})")

    def _prod(self, ns: Any) -> None:
        kids = [self.names[id(c)] for c in ns.chs]
        table = prod_table(ns)
        if table is None and len(kids) == 1:
            self.names[id(ns)] = kids[0]  # PyJuice's one-child identity wrapper: the child itself
            return
        name = self._new("prod")
        self.names[id(ns)] = name
        extra = ""
        if table is not None:
            self.tensors[name + ".table"] = table
            extra = f', table=tensor("{name}.table")'
        self.lines.append(f"{name} = prod({', '.join(kids)}, n={ns.num_nodes}{extra})")

    def _sum(self, ns: Any) -> None:
        name = self._new("sum")
        self.names[id(ns)] = name
        kids = ", ".join(self.names[id(c)] for c in ns.chs)
        layout = sum_layout(ns)
        if layout.tiles is None:
            structure = f"n={ns.num_nodes}"
        else:
            tiles = self.tile_tensors.setdefault(id(ns.get_source_ns()), name + ".tiles")
            if tiles == name + ".tiles":
                self.tensors[tiles] = layout.tiles
            structure = f'n={ns.num_nodes}, block={layout.block}, tiles=tensor("{tiles}")'
        params = self._params(ns, name, ".w", lambda owner: sum_weights(owner, layout, self.dtype))
        self.lines.append(f"{name} = sum({kids}, {structure}, {params})")


def _same_structure(a: Any, b: Any) -> bool:
    """Whether two tied nodes can share one parameter tensor position by position."""
    if type(a).__name__ == "InputNodes":
        return a.num_nodes == b.num_nodes and a.dist.get_signature() == b.dist.get_signature() and \
            getattr(a.dist, "num_cats", None) == getattr(b.dist, "num_cats", None)
    shape = (a.num_nodes, a.block_size, a.ch_block_size, a.num_ch_node_blocks)
    return shape == (b.num_nodes, b.block_size, b.ch_block_size, b.num_ch_node_blocks) and \
        np.array_equal(_np(a.edge_ids), _np(b.edge_ids))


# --- parameters and tables (vectorised) -----------------------------------------------------------


def _np(t: Any) -> np.ndarray:
    """A torch tensor (or array) as numpy, without a copy when it is already on the CPU."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t)


def input_params(ns: Any, dist: str, domain: _Domain, dtype: np.dtype) -> np.ndarray:
    """The pcc parameter tensor of an input node: categorical ``[n, K]``, bernoulli ``[n]``, gaussian ``[n, 2]``."""
    flat = _np(ns._params).reshape(-1)
    n = ns.num_nodes
    width = {"categorical": int(getattr(ns.dist, "num_cats", 0)), "bernoulli": 1, "gaussian": 2}[dist]
    if flat.size != n * width:
        raise ValueError(f"{ns!r}: expected {n * width} parameters for {n} {dist} nodes, found {flat.size}")
    if dist == "bernoulli":
        return flat.astype(dtype)
    if dist == "gaussian":
        return flat.reshape(n, 2).astype(dtype)
    k = domain.k if domain.kind == "categorical" else 2
    out = np.zeros((n, k), dtype=dtype)  # zeros pad a smaller K up to the variable's domain
    out[:, :width] = flat.reshape(n, width)
    normalise_rows(out, f"{ns!r}")
    return out


@dataclass
class SumLayout:
    """How a PyJuice sum maps onto pcc: dense (``tiles`` None) or ``block x block`` tiles."""

    n: int
    total: int  # C, the number of child nodes
    block: int
    tiles: np.ndarray | None  # [m', 2] (parent tile, child tile)
    edges: np.ndarray  # [2, m] PyJuice's block edges


def sum_layout(ns: Any) -> SumLayout:
    """Dense when every (parent block, child block) pair is an edge, else square tiles of gcd(B, Bc)."""
    edges = _np(ns.edge_ids).astype(np.int64)
    nb, cb_total = ns.num_node_blocks, ns.num_ch_node_blocks
    B, Bc = ns.block_size, ns.ch_block_size
    flat = edges[0] * cb_total + edges[1]
    if len(np.unique(flat)) != edges.shape[1]:
        raise ValueError(f"{ns!r}: edge_ids lists a (parent block, child block) pair twice")
    n, total = nb * B, cb_total * Bc
    if edges.shape[1] == nb * cb_total:
        return SumLayout(n, total, B, None, edges)
    g = math.gcd(B, Bc)
    rs, rc = B // g, Bc // g
    pt = edges[0][:, None, None] * rs + np.arange(rs)[None, :, None]  # each block edge -> rs x rc tiles
    ct = edges[1][:, None, None] * rc + np.arange(rc)[None, None, :]
    pt, ct = np.broadcast_arrays(pt, ct)
    return SumLayout(n, total, g, np.stack([pt.reshape(-1), ct.reshape(-1)], axis=1), edges)


def sum_weights(ns: Any, layout: SumLayout, dtype: np.dtype) -> np.ndarray:
    """The pcc weights of a sum (dense ``[n, C]`` or ``[m', g, g]`` tiles), normalised per node."""
    w = _np(ns._params)
    B, Bc = ns.block_size, ns.ch_block_size
    m = layout.edges.shape[1]
    if w.shape != (m, B, Bc):
        raise ValueError(f"{ns!r}: parameters have shape {list(w.shape)}, "
                         f"expected {[m, B, Bc]} (edges, block, child block)")
    if layout.tiles is None:
        out = np.empty((ns.num_node_blocks, B, ns.num_ch_node_blocks, Bc), dtype=dtype)
        out[layout.edges[0], :, layout.edges[1], :] = w  # one scatter copy, whatever the edge order
        out = out.reshape(layout.n, layout.total)
        normalise_rows(out, f"{ns!r}")
        return out
    g = layout.block
    out = w.reshape(m, B // g, g, Bc // g, g).transpose(0, 1, 3, 2, 4).astype(dtype).reshape(-1, g, g)
    normalise_tiles(out, layout.tiles, layout.n, f"{ns!r}")
    return out


def _bad_totals(totals: np.ndarray, minimum: float, what: str) -> np.ndarray:
    """Which rows to rescale; raises on rows that no rescaling can fix (negative, NaN, all zero)."""
    if not np.all(np.isfinite(totals)) or minimum < 0:
        raise ValueError(f"{what}: parameters are negative or not finite")
    if np.any(totals <= 0):
        raise ValueError(f"{what}: node {int(np.argmax(totals <= 0))} has all-zero weights (nothing to normalise)")
    return np.abs(totals - 1.0) > NORMALISE_TOLERANCE


def normalise_rows(w: np.ndarray, what: str) -> None:
    """Rescale (in place, in float64) the rows of ``w`` ``[rows, k]`` whose sum is off by more than the tolerance."""
    totals = w.sum(axis=1, dtype=np.float64)
    bad = _bad_totals(totals, float(w.min(initial=0.0)), what)
    if bad.any():
        w[bad] = (w[bad] / totals[bad, None]).astype(w.dtype)


def normalise_tiles(w: np.ndarray, tiles: np.ndarray, n: int, what: str) -> None:
    """As :func:`normalise_rows` for ``[m, g, g]`` tiles: a node's edges spread over the tiles of its row."""
    g = w.shape[1]
    rows = tiles[:, :1] * g + np.arange(g)  # [m, g]: the sum node of every tile row
    totals = np.bincount(rows.reshape(-1), weights=w.sum(axis=2, dtype=np.float64).reshape(-1), minlength=n)
    bad = _bad_totals(totals, float(w.min(initial=0.0)), what)
    if bad.any():
        sel = bad[rows]
        w[sel] = (w[sel] / totals[rows][sel][:, None]).astype(w.dtype)


def prod_table(ns: Any) -> np.ndarray | None:
    """A product's node-level ``[n, k]`` index table, or None when it is aligned (the identity)."""
    edges = _np(ns.edge_ids).astype(np.int64)
    n, B = ns.num_nodes, ns.block_size
    if edges.shape[0] != n:  # block-level: node b*B + i takes node edges[b, j]*B + i of child j
        edges = (edges[:, None, :] * B + np.arange(B)[None, :, None]).reshape(n, edges.shape[1])
    identity = np.arange(n)[:, None]
    if all(c.num_nodes == n for c in ns.chs) and np.array_equal(edges, np.broadcast_to(identity, edges.shape)):
        return None
    return edges


def import_file(source: str | Path, path: str | Path) -> Path:
    """Convert a circuit saved by ``pyjuice.save`` (a ``.jpc`` file) into ``path``, as :func:`convert` does.

    A ``.jpc`` file is a Python pickle, and loading it runs code: use it only on files you trust. Every
    problem (PyJuice missing, no such file, an unreadable file, an unsupported circuit) is a ValueError.
    """
    source = Path(source)
    if source.suffix != ".jpc":
        raise ValueError("expected a .jpc file written by pyjuice.save")
    if not source.is_file():
        raise ValueError("no such file")
    try:
        import pyjuice
    except ImportError:
        raise ValueError("reading .jpc files needs PyJuice: pip install 'pyjuice==2.6.3'") from None
    try:
        root = pyjuice.load(str(source))
    except Exception as e:  # pickle and PyJuice raise anything from a damaged file
        raise ValueError(f"cannot read the PyJuice file: {type(e).__name__}: {e}") from None
    return convert(root, path)
