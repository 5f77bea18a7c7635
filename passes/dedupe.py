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
        first: dict[tuple, int] = {}
        alias: list[int] = []
        for i, b in enumerate(circuit.blocks):
            if b.children:
                b.children = tuple(alias[c] for c in b.children)
            alias.append(first.setdefault(_identity(circuit, b), i))
        circuit.root = alias[circuit.root]
        return remove_unreachable(circuit)


def _identity(circuit: Circuit, b) -> tuple:
    content = lambda name: None if name is None else _content(circuit, name)  # noqa: E731
    if isinstance(b, InputBlock):
        return ("input", b.var, b.dist, b.n, content(b.params))
    if isinstance(b, SumBlock):
        return ("sum", b.children, b.n, content(b.params), content(b.tiles), b.block)
    return ("prod", b.children, b.n, content(b.table))


def _content(circuit: Circuit, name: str) -> tuple:
    """Equal for tensors with equal values: the random seed, or a digest of the concrete bytes."""
    t = circuit.tensors[name]
    if t.data is None:
        return ("random", t.seed, t.shape)
    return ("data", t.dtype, t.shape, hashlib.sha256(t.data.tobytes()).hexdigest())
