"""The circuit IR: variables, node blocks in topological order, and tensors kept apart from structure.

The unit is a *node block* (a vector of ``n`` nodes of one kind and one scope), never a scalar node, so
that a circuit with 10^9 edges is a few thousand small records plus numpy payloads.

* :class:`InputBlock` — ``n`` distributions over one variable (categorical, bernoulli, gaussian).
* :class:`ProdBlock` — node ``i`` multiplies one node of every child: node ``i`` of each child when
  ``table`` is None (aligned), else node ``table[i, j]`` of child ``j`` (an ``[n, k]`` int tensor).
* :class:`SumBlock` — node ``i`` mixes the nodes of its children concatenated (``C`` nodes in all):
  dense weights ``[n, C]`` when ``tiles`` is None, else block-sparse: ``tiles`` is an ``[m, 2]`` table of
  (parent tile, child tile) pairs of ``block x block`` tiles and the weights are ``[m, block, block]``.

Blocks refer to children by integer id (their index in ``Circuit.blocks``); children always precede
parents. Parameters and index tables are :class:`Tensor` records referenced by name, so tied parameters
are simply two blocks naming one tensor.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import numpy as np

DISTRIBUTIONS = ("categorical", "bernoulli", "gaussian")


@dataclass(frozen=True, slots=True)
class Domain:
    """A variable's domain: ``categorical`` with ``k`` values, ``binary`` (k=2) or ``real`` (k=0)."""

    kind: str
    k: int = 0

    def __str__(self) -> str:
        return f"categorical({self.k})" if self.kind == "categorical" else self.kind

    def accepts(self, dist: str) -> bool:
        """Whether an input distribution is defined on this domain."""
        if dist == "categorical":
            return self.kind in ("categorical", "binary")
        if dist == "bernoulli":
            return self.kind == "binary"
        return dist == "gaussian" and self.kind == "real"

    @property
    def categories(self) -> int:
        """Number of values of a discrete domain (0 for real)."""
        return 2 if self.kind == "binary" else self.k


@dataclass(slots=True)
class Variable:
    """A random variable of the circuit."""

    name: str
    domain: Domain


# The IR's tensor types and their numpy dtypes. ``f32`` holds parameters read from a float32 tensor file as they
# are (a converted PyJuice model's: HCLT 512's are 935 MiB, which float64 made 1.87 GB and a copy per compile);
# every value a pass computes is float64 (``f64``), and readers that compute with parameters (the reference
# interpreter, the verifier's sums) do so in float64, so an ``f32`` tensor means what its values say exactly.
NUMPY_DTYPES = {"f64": np.float64, "f32": np.float32, "i64": np.int64}
FLOAT_TYPES = ("f64", "f32")


def ir_dtype(arr: np.ndarray) -> str:
    """The IR type of a concrete array: ``i64`` for integers, ``f32`` for float32, else ``f64``."""
    return "i64" if arr.dtype.kind in "iu" else "f32" if arr.dtype == np.float32 else "f64"


@dataclass(slots=True)
class Tensor:
    """A parameter or index array: concrete ``data``, or a lazy seeded random initialisation.

    Random tensors are materialised on demand by :func:`pcc.ir.params.array`, which knows from the block
    that uses the tensor how to draw normalised values; ``cache`` holds the result and is never printed.
    """

    dtype: str  # "f64", "f32" or "i64" (NUMPY_DTYPES); float parameters are f64 unless read from a float32 file
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    seed: int | None = None
    cache: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_random(self) -> bool:
        """True when the tensor is a seeded random initialisation (normalised by construction)."""
        return self.data is None


@dataclass(slots=True)
class InputBlock:
    """``n`` input distributions of kind ``dist`` over variable ``var``; parameters in tensor ``params``."""

    var: int
    dist: str
    n: int
    params: str
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "input"

    @property
    def children(self) -> tuple[int, ...]:
        return ()


@dataclass(slots=True)
class ProdBlock:
    """``n`` product nodes over ``children``; aligned when ``table`` is None, else an ``[n, k]`` index table."""

    children: tuple[int, ...]
    n: int
    table: str | None = None
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "prod"


@dataclass(slots=True)
class SumBlock:
    """``n`` sum nodes over the concatenated nodes of ``children``; dense or block-sparse (``tiles``)."""

    children: tuple[int, ...]
    n: int
    params: str
    tiles: str | None = None
    block: int = 1
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "sum"


Block = Union[InputBlock, ProdBlock, SumBlock]


@dataclass(slots=True)
class Circuit:
    """A probabilistic circuit: variables, blocks in topological order, named tensors and one root block."""

    variables: list[Variable]
    blocks: list[Block]
    tensors: dict[str, Tensor]
    root: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def child_sizes(self, block: Block) -> list[int]:
        """Sizes of a block's children, in order."""
        return [self.blocks[c].n for c in block.children]

    def num_sum_edges(self) -> int:
        """Scalar sum edges: ``n * C`` per dense sum, ``m * block^2`` per block-sparse sum."""
        total = 0
        for b in self.blocks:
            if isinstance(b, SumBlock):
                total += self.tensors[b.params].size
        return total

    def num_nodes(self) -> int:
        """Scalar nodes over all blocks."""
        return sum(b.n for b in self.blocks)

    def users(self) -> list[list[int]]:
        """For every block, the ids of the blocks that name it as a child."""
        out: list[list[int]] = [[] for _ in self.blocks]
        for i, b in enumerate(self.blocks):
            for c in b.children:
                out[c].append(i)
        return out

    def copy(self) -> "Circuit":
        """A structural copy: new block records and dicts; tensor payloads are shared (treat as immutable)."""
        blocks = [_copy_block(b) for b in self.blocks]
        tensors = {k: Tensor(t.dtype, t.shape, t.data, t.seed, t.cache) for k, t in self.tensors.items()}
        return Circuit(list(self.variables), blocks, tensors, self.root, dict(self.attrs))


def _copy_block(b: Block) -> Block:
    fields = {f: getattr(b, f) for f in b.__slots__}  # type: ignore[union-attr]
    fields["attrs"] = dict(b.attrs)
    return type(b)(**fields)


def tensor_stem(block_name: str) -> str:
    """A tensor-name prefix for a block: ``z[3, 1]`` → ``z.3.1`` (tensor names have no brackets)."""
    return re.sub(r"[\[\],\s]+", ".", block_name).strip(".") or "b"


def scopes(circuit: Circuit) -> list[int]:
    """Each block's scope as a bitmask over variable indices (bit v set when X_v is in the scope)."""
    out: list[int] = []
    for b in circuit.blocks:
        if isinstance(b, InputBlock):
            out.append(1 << b.var)
        else:
            s = 0
            for c in b.children:
                s |= out[c]
            out.append(s)
    return out


def scope_names(circuit: Circuit, mask: int, limit: int = 6) -> str:
    """A short human-readable list of the variables in a scope bitmask."""
    names = [circuit.variables[v].name for v in range(len(circuit.variables)) if mask >> v & 1]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return "{" + ", ".join(names[:limit]) + more + "}"
