"""pcc: a compiler toolchain for probabilistic circuits.

Staged API: :func:`parse` (.pc text or file → IR), :func:`optimize` (IR → IR through a pass pipeline),
and the IR itself in :mod:`pcc.ir` (printer, parser, verifier, reference interpreter).
"""
__version__ = "0.1.0"

from .api import optimize, parse, read_ir, write_ir  # noqa: E402  (the staged API)

__all__ = ["__version__", "parse", "optimize", "read_ir", "write_ir"]
