"""Print a :class:`Circuit` as ``.pcir`` text.

The text is complete: parsing it gives back an equal circuit, and printing that again gives the same
text (a fixed point). Small tensors are written inline; larger ones are written as ``resource(sha256=...)``
references whose bytes live either in a ``resources { ... }`` section at the end (base64) or in a
sidecar safetensors file named by an ``external "..."`` line.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np

from .circuit import Block, Circuit, InputBlock, ProdBlock, SumBlock, Tensor

VERSION = 1
INLINE_LIMIT = 64  # tensors with at most this many elements are printed as literals


def print_circuit(circuit: Circuit, sidecar: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """The ``.pcir`` text of ``circuit`` and the large tensors it references.

    With ``sidecar`` (a file name relative to the .pcir file) the large tensors are left out of the text
    and returned for the caller to write to that file; otherwise they are embedded in a resources section.
    """
    large = {k: t.data for k, t in circuit.tensors.items() if t.data is not None and t.size > INLINE_LIMIT}
    out = [f"pcir {VERSION}", _summary(circuit)]
    if circuit.attrs:
        out.append(f"attributes {_attrs(circuit.attrs)}")
    out += [f"var {v.name} : {v.domain}" for v in circuit.variables]
    if sidecar is not None and large:
        out.append(f"external {_quote(sidecar)}")
    out += [_tensor_line(name, t) for name, t in circuit.tensors.items()]
    out += [_block_line(i, b, circuit) for i, b in enumerate(circuit.blocks)]
    out.append(f"root %{circuit.root}")
    if sidecar is None and large:
        out.append("resources {")
        out += [f"  @{k} = {_quote(base64.b64encode(_bytes(v)).decode())}" for k, v in large.items()]
        out.append("}")
    return "\n".join(out) + "\n", (large if sidecar is not None else {})


def to_text(circuit: Circuit) -> str:
    """The self-contained ``.pcir`` text (large tensors embedded)."""
    return print_circuit(circuit)[0]


def _summary(c: Circuit) -> str:
    return (f"# {len(c.variables)} variables, {len(c.blocks)} blocks, {c.num_nodes()} nodes, "
            f"{c.num_sum_edges()} sum edges")


def _bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def checksum(arr: np.ndarray) -> str:
    """sha256 of the tensor's little-endian bytes (how resources are referenced)."""
    return hashlib.sha256(_bytes(arr)).hexdigest()


def _tensor_line(name: str, t: Tensor) -> str:
    head = f"tensor @{name} : {t.dtype}[{', '.join(map(str, t.shape))}] = "
    if t.data is None:
        return head + f"random(seed={t.seed})"
    if t.size <= INLINE_LIMIT:
        return head + _literal(t.data)
    return head + f"resource(sha256={_quote(checksum(t.data))})"


def _literal(arr: np.ndarray) -> str:
    if arr.ndim == 0:
        return _scalar(arr.item())
    return "[" + ", ".join(_literal(a) for a in arr) + "]"


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back to the same double
    return str(int(v))


def _block_line(i: int, b: Block, c: Circuit) -> str:
    if isinstance(b, InputBlock):
        body = f"input {c.variables[b.var].name} {b.dist} n={b.n} params=@{b.params}"
    else:
        kids = ", ".join(f"%{k}" for k in b.children)
        body = f"{b.kind}({kids}) n={b.n}"
        if isinstance(b, ProdBlock) and b.table is not None:
            body += f" table=@{b.table}"
        if isinstance(b, SumBlock):
            body += f" params=@{b.params}"
            if b.tiles is not None:
                body += f" tiles=@{b.tiles} block={b.block}"
    if b.name:
        body += f" name={_quote(b.name)}"
    if b.attrs:
        body += " " + _attrs(b.attrs)
    return f"%{i} = {body}"


def _attrs(attrs: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={_attr_value(v)}" for k, v in sorted(attrs.items())) + "}"


def _attr_value(v: Any) -> str:
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, bool):
        return str(int(v))
    return _scalar(v)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
