"""``dedupe``: merge identical blocks (hash-consing, bottom-up).

Two input blocks are identical when they model the same variable with the same distribution, size and
parameters (the same tensor, or equal values); products and sums when, after their children were merged,
they have the same children, size, pattern and parameters. Pre: a verified circuit. Post: no two blocks
are identical; every use of a duplicate points at the first copy; the distribution is unchanged.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pcc.ir.circuit import Circuit, InputBlock, SumBlock

from .dce import remove_unreachable
from .manager import Pass, register


@register
@dataclass
class Dedupe(Pass):
    """Merges identical blocks; see the module docstring for the contract."""

    name = "dedupe"

    def run(self, circuit: Circuit) -> Circuit:
        # Blocks are first grouped by their structure (kind, variable, children, size, ...); tensor contents
        # are compared only within a group, and a tensor is hashed at most once: hashing every tensor of a
        # model (hundreds of MB) to find the rare duplicate cost more than the rest of the pass.
        groups: dict[tuple, list[int]] = {}  # structure -> the distinct blocks (first copies) with it
        contents = _Contents(circuit)
        alias: list[int] = []
        for i, b in enumerate(circuit.blocks):
            if b.children:
                b.children = tuple(alias[c] for c in b.children)
            firsts = groups.setdefault(_structure(b), [])
            same = next((j for j in firsts if contents.same(circuit.blocks[j], b)), None)
            if same is None:
                firsts.append(i)
            alias.append(i if same is None else same)
        circuit.root = alias[circuit.root]
        return remove_unreachable(circuit)


def _structure(b) -> tuple:
    """Everything that identifies a block except the values of its tensors."""
    if isinstance(b, InputBlock):
        return ("input", b.var, b.dist, b.n)
    if isinstance(b, SumBlock):
        return ("sum", b.children, b.n, b.tiles is None, b.block)
    return ("prod", b.children, b.n, b.table is None)


def _tensors(b) -> tuple:
    """The names of a block's tensors, in a fixed order (None where it has none)."""
    if isinstance(b, InputBlock):
        return (b.params,)
    if isinstance(b, SumBlock):
        return (b.params, b.tiles)
    return (b.table,)


class _Contents:
    """Tensor equality by value: the same name, or the same seed or digest (each tensor hashed once)."""

    def __init__(self, circuit: Circuit):
        self.circuit = circuit
        self.digests: dict[str, tuple] = {}

    def same(self, a, b) -> bool:
        """Whether blocks ``a`` and ``b`` (of one structure) have tensors of equal values."""
        return all(x == y or (x is not None and y is not None and self.content(x) == self.content(y))
                   for x, y in zip(_tensors(a), _tensors(b)))

    def content(self, name: str) -> tuple:
        if name not in self.digests:
            self.digests[name] = _content(self.circuit, name)
        return self.digests[name]


def _content(circuit: Circuit, name: str) -> tuple:
    """Equal for tensors with equal values: the random seed, or a digest of the concrete bytes."""
    t = circuit.tensors[name]
    if t.data is None:
        return ("random", t.seed, t.shape)
    return ("data", t.dtype, t.shape, hashlib.sha256(t.data.tobytes()).hexdigest())
