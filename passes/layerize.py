"""``layerize``: assign blocks to alternating layers and group each layer's blocks by fan-in.

Layer 0 holds the input blocks; odd layers hold products, even layers (>= 2) hold sums, and every
block's children lie in lower layers. Sums are placed as early as possible; products as late as
possible, right below their first consumer, so that no pass-through blocks are ever needed (PyJuice
inserts identity sums there). Within a layer, blocks are sorted by fan-in (edges per node for sums,
children for products; input blocks by the layer of their first reader, so that ``plan.sink_inputs`` can
cut an input op into runs of consecutive rows that each sit just below their readers) and cut into groups
whose padded size (max fan-in x nodes) stays within ``max_padding`` times the real edge count
(``max_prod_padding`` for products: a padded product child reads the ZERO row from cache, while every group
is a launch in the forward and one in the backward pass; HCLT-64 has 74 product groups at 1.25 and 51 at 4).

Pre: a verified circuit. Post: blocks are ordered by (layer, group); each block has ``layer`` and
``group`` attributes; the circuit has ``layered=1`` and ``layers=L``; the distribution is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcc.ir.circuit import Circuit, InputBlock, ProdBlock, SumBlock
from pcc.ir.params import tile_table

from .dce import keep_blocks
from .manager import Pass, register


@register
@dataclass
class Layerize(Pass):
    """Alternating sum/product layers with fan-in groups; see the module docstring for the contract."""

    name = "layerize"
    max_padding: float = 1.25
    max_prod_padding: float = 4.0  # products pad cheaply (see the module docstring), sums cost tensor-core work

    def run(self, circuit: Circuit) -> Circuit:
        layers = assign_layers(circuit)
        users = circuit.users()
        first_reader = {i: min((layers[u] for u in users[i]), default=0) for i, l in enumerate(layers) if l == 0}
        order: list[int] = []
        for layer in range(max(layers) + 1):
            members = [i for i, l in enumerate(layers) if l == layer]
            for g, group in enumerate(self._groups(circuit, members, first_reader)):
                for i in group:
                    circuit.blocks[i].attrs.update(layer=layer, group=g)
                order.extend(group)
        circuit.attrs.update(layered=1, layers=max(layers) + 1)
        return keep_blocks(circuit, order)

    def _groups(self, circuit: Circuit, members: list[int], first_reader: dict[int, int]) -> list[list[int]]:
        fan = {i: fan_in(circuit, circuit.blocks[i]) for i in members}
        order = {i: (first_reader.get(i, 0), fan[i], i) for i in members}  # inputs: fan 0, first reader first
        kinds: dict[tuple, list[int]] = {}
        for i in members:
            kinds.setdefault(_group_key(circuit, circuit.blocks[i]), []).append(i)
        groups = []
        for key in sorted(kinds):
            pad = self.max_prod_padding if key == ("prod",) else self.max_padding
            groups += _cut(sorted(kinds[key], key=order.__getitem__), fan, circuit, pad)
        return groups


def assign_layers(circuit: Circuit) -> list[int]:
    """Sums ASAP at even layers, products ALAP at odd layers just below their consumers."""
    layers = []
    for b in circuit.blocks:
        below = max((layers[c] for c in b.children), default=-1)
        layers.append(0 if isinstance(b, InputBlock) else _next(below, 1 if isinstance(b, ProdBlock) else 0))
    users = circuit.users()
    for i in range(len(circuit.blocks) - 1, -1, -1):
        if isinstance(circuit.blocks[i], ProdBlock) and users[i]:
            layers[i] = min(layers[u] - (1 if isinstance(circuit.blocks[u], SumBlock) else 2) for u in users[i])
    return layers


def _next(below: int, parity: int) -> int:
    """The smallest layer above ``below`` with the given parity (products odd, sums even)."""
    layer = below + 1
    return layer if layer % 2 == parity else layer + 1


def fan_in(circuit: Circuit, b) -> int:
    """Edges into the busiest node of a block (children for products, 0 for inputs)."""
    if isinstance(b, ProdBlock):
        return len(b.children)
    if isinstance(b, SumBlock):
        if b.tiles is None:
            return sum(circuit.child_sizes(b))
        rows = tile_table(circuit, b)[:, 0]
        return int(np.bincount(rows).max()) * b.block
    return 0


def _group_key(circuit: Circuit, b) -> tuple:
    if isinstance(b, InputBlock):
        return (b.dist, circuit.variables[b.var].domain.categories)
    return (b.kind,)


def _cut(ordered: list[int], fan: dict[int, int], circuit: Circuit, max_padding: float) -> list[list[int]]:
    """Greedy: extend a group while max-fan-in x nodes stays within max_padding x real edges."""
    groups, cur, real, nodes = [], [], 0, 0
    for i in ordered:
        n = circuit.blocks[i].n
        if cur and fan[i] * (nodes + n) > max_padding * (real + fan[i] * n):
            groups.append(cur)
            cur, real, nodes = [], 0, 0
        cur.append(i)
        real += fan[i] * n
        nodes += n
    return groups + ([cur] if cur else [])
