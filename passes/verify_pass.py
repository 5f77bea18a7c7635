"""``verify``: check every IR invariant (see :func:`pcc.ir.verify`).

Pre: any circuit. Post: the circuit is unchanged; the pass fails if an invariant does not hold.
"""
from __future__ import annotations

from dataclasses import dataclass

from pcc.ir.circuit import Circuit
from pcc.ir.verify import verify

from .manager import Pass, register


@register
@dataclass
class Verify(Pass):
    """Fails with the verifier's report (block and IR context) on invalid IR; otherwise a no-op."""

    name = "verify"

    def run(self, circuit: Circuit) -> Circuit:
        verify(circuit)
        return circuit
