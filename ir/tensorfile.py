"""Read and write tensor files in the safetensors format with numpy alone.

Layout: an 8-byte little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets}}``
(plus optional ``__metadata__``), then the raw little-endian bytes. Loading never executes code; every
inconsistency (short file, bad JSON, offsets outside the file, size not matching dtype*shape) is a
:class:`UserError` naming the file.
"""
from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from .diagnostics import error_at

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 << 20


def load(path: str | Path, floats: type | None = None) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file, as numpy arrays (copied out of the file); ``floats``: the dtype
    floating-point tensors are converted to on the way out (one copy instead of two), None keeps theirs."""
    return load_with_metadata(path, floats)[0]


def load_with_metadata(path: str | Path, floats: type | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, the header's ``__metadata__`` string map) of a safetensors file; ``floats`` as in :func:`load`."""
    path = str(path)
    try:
        with open(path, "rb") as f, _mapped(f) as raw:
            header = _header(path, raw)
            start = 8 + int.from_bytes(raw[:8], "little")
            tensors = {name: _tensor(path, name, info, raw, start, floats)
                       for name, info in header.items() if name != "__metadata__"}
    except OSError as e:
        raise error_at(path, 0, 0, f"cannot read tensor file: {e.strerror or e}") from None
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise error_at(path, 0, 0, "malformed tensor file: __metadata__ must map names to strings")
    return tensors, meta


def _mapped(f):
    """The file's bytes, mapped read-only (no copy of a file of gigabytes into memory first); an empty file,
    which cannot be mapped, as empty bytes. Every tensor is copied out before the map closes."""
    if os.fstat(f.fileno()).st_size == 0:
        return contextlib.nullcontext(b"")
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _header(path: str, raw: bytes) -> dict:
    if len(raw) < 8:
        raise error_at(path, 0, 0, "malformed tensor file: shorter than its 8-byte header length")
    size = int.from_bytes(raw[:8], "little")
    if size > min(_MAX_HEADER, len(raw) - 8):
        raise error_at(path, 0, 0, f"malformed tensor file: header length {size} exceeds the file")
    try:
        header = json.loads(raw[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error_at(path, 0, 0, f"malformed tensor file: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise error_at(path, 0, 0, "malformed tensor file: header is not a JSON object")
    return header


def _tensor(path: str, name: str, info: object, raw: bytes, start: int, floats: type | None) -> np.ndarray:
    def bad(why: str) -> Exception:
        return error_at(path, 0, 0, f"malformed tensor file: tensor '{name}' {why}")

    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise bad("lacks dtype, shape or data_offsets")
    dtype = _DTYPES.get(info["dtype"])
    shape, offsets = info["shape"], info["data_offsets"]
    if dtype is None:
        raise bad(f"has unsupported dtype {info['dtype']!r}")
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise bad("has a malformed shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise bad("has malformed data_offsets")
    lo, hi = start + offsets[0], start + offsets[1]
    count = math.prod(shape)  # Python ints: a huge shape cannot wrap around
    if not (start <= lo <= hi <= len(raw)) or hi - lo != count * np.dtype(dtype).itemsize:
        raise bad("has data outside the file or of the wrong size")
    # a view into the file's bytes (no slice copy), then one copy in native byte order that the caller owns
    view = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=lo)
    out = floats if floats is not None and np.issubdtype(dtype, np.floating) else dtype
    return view.astype(out).reshape(shape)


def save(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file atomically (temp file in the same folder, then rename)."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset, blobs = 0, []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        blob = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data section to 8 bytes
    _atomic_write(Path(path), [struct.pack("<Q", len(head)), head, *blobs])


def _atomic_write(path: Path, chunks: list[bytes]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    pause = float(os.environ.get("PCC_FAULT_SLOW_WRITE", "0"))  # fault injection: tests kill a writer mid-file
    try:
        with os.fdopen(fd, "wb") as f:
            for i, c in enumerate(chunks):
                f.write(c)
                if pause and i == 0:
                    f.flush()
                    time.sleep(pause)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
