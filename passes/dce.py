"""``dce``: remove blocks the root does not reach, and tensors no block uses.

Pre: a verified circuit. Post: every block is reachable from the root; block order (topological) is
kept; the distribution is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from pcc.ir.circuit import Circuit

from .manager import Pass, register


@register
@dataclass
class DeadCodeElimination(Pass):
    """Drops unreachable blocks and unused tensors; renumbers the rest in their original order."""

    name = "dce"

    def run(self, circuit: Circuit) -> Circuit:
        return remove_unreachable(circuit)


def remove_unreachable(circuit: Circuit) -> Circuit:
    """The circuit restricted to blocks reachable from its root (children renumbered)."""
    live = [False] * len(circuit.blocks)
    live[circuit.root] = True
    for i in range(len(circuit.blocks) - 1, -1, -1):
        if live[i]:
            for c in circuit.blocks[i].children:
                live[c] = True
    return keep_blocks(circuit, [i for i, ok in enumerate(live) if ok])


def keep_blocks(circuit: Circuit, order: list[int]) -> Circuit:
    """A circuit of the blocks ``order`` (which must list children before parents), renumbered."""
    new_id = {old: new for new, old in enumerate(order)}
    blocks = []
    for old in order:
        b = circuit.blocks[old]
        if b.children:
            b.children = tuple(new_id[c] for c in b.children)
        blocks.append(b)
    circuit.blocks, circuit.root = blocks, new_id[circuit.root]
    drop_unused_tensors(circuit)
    return circuit


def drop_unused_tensors(circuit: Circuit) -> None:
    """Delete tensors that no block references (in place)."""
    used = set()
    for b in circuit.blocks:
        used.update(t for t in (getattr(b, "params", None), getattr(b, "table", None), getattr(b, "tiles", None)) if t)
    circuit.tensors = {k: t for k, t in circuit.tensors.items() if k in used}
