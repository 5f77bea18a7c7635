"""pcc: a compiler toolchain for probabilistic circuits.

Staged API: :func:`parse` (.pc text or file → IR), :func:`optimize` (IR → IR through a pass pipeline),
:func:`compile` (→ runtime model, a ``torch.nn.Module``) and :func:`load` (a compiled module folder or a
checkpoint → runtime model); the IR itself is in :mod:`pcc.ir`.
"""
__version__ = "0.1.0"

from .api import compile, load, optimize, parse, read_ir, write_ir  # noqa: E402  (the staged API)

__all__ = ["__version__", "parse", "optimize", "compile", "load", "read_ir", "write_ir"]
