"""Read and write tensor files in the safetensors format with numpy alone.

Layout: an 8-byte little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets}}``
(plus optional ``__metadata__``), then the raw little-endian bytes. Loading never executes code; every
inconsistency (short file, bad JSON, offsets outside the file, size not matching dtype*shape) is a
:class:`UserError` naming the file.
"""
from __future__ import annotations

import json
import math
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
_CHUNK = 16 << 20  # bytes read at a time for a tensor converted on the way in


def load(path: str | Path, floats: type | None = None) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file, as numpy arrays (read from the file); ``floats``: the dtype
    floating-point tensors are converted to on the way out (one copy instead of two), None keeps theirs."""
    return load_with_metadata(path, floats)[0]


def load_with_metadata(path: str | Path, floats: type | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, the header's ``__metadata__`` string map) of a safetensors file; ``floats`` as in :func:`load`."""
    path = str(path)
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            header, start = _header(path, f, size)
            entries = {name: _entry(path, name, info, start, size, floats)
                       for name, info in header.items() if name != "__metadata__"}
            tensors = _read_tensors(path, f, entries)
    except OSError as e:
        raise error_at(path, 0, 0, f"cannot read tensor file: {e.strerror or e}") from None
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise error_at(path, 0, 0, "malformed tensor file: __metadata__ must map names to strings")
    return {name: tensors[name] for name in entries}, meta


def _header(path: str, f, size: int) -> tuple[dict, int]:
    """The JSON header and the offset of the data section."""
    if size < 8:
        raise error_at(path, 0, 0, "malformed tensor file: shorter than its 8-byte header length")
    length = int.from_bytes(_read(path, f, 0, 8), "little")
    if length > min(_MAX_HEADER, size - 8):
        raise error_at(path, 0, 0, f"malformed tensor file: header length {length} exceeds the file")
    try:
        header = json.loads(bytes(_read(path, f, 8, length)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error_at(path, 0, 0, f"malformed tensor file: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise error_at(path, 0, 0, "malformed tensor file: header is not a JSON object")
    return header, 8 + length


def _entry(path: str, name: str, info: object, start: int, size: int, floats: type | None) -> tuple:
    """A checked header entry: ``(stored dtype, shape, first byte, byte count, dtype it is loaded as)``."""
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
    if not (start <= lo <= hi <= size) or hi - lo != count * np.dtype(dtype).itemsize:
        raise bad("has data outside the file or of the wrong size")
    out = np.dtype(floats if floats is not None and np.issubdtype(dtype, np.floating) else dtype)
    return np.dtype(dtype).newbyteorder("<"), tuple(shape), lo, hi - lo, out


def _read_tensors(path: str, f, entries: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The tensors of checked ``entries``, each read straight into a new array of its own: no map of the file,
    and no copy out of one (HCLT 512's 935 MiB: 0.59-0.70 -> 0.51-0.59 s on the development CPU). One buffer for
    all of them took huge pages there and was slower (0.52-1.07 s). Tensors converted on the way in are read a
    bounded chunk at a time."""
    out = {}
    for n, (stored, shape, lo, nbytes, dtype) in sorted(entries.items(), key=lambda item: item[1][2]):
        if stored == dtype:
            out[n] = np.empty(shape, dtype=stored)
            _read(path, f, lo, nbytes, memoryview(out[n].reshape(-1)).cast("B"))
        else:
            out[n] = _converted(path, f, stored, shape, lo, dtype)
    return out


def _converted(path: str, f, stored: np.dtype, shape: tuple, lo: int, dtype: np.dtype) -> np.ndarray:
    """A tensor stored as ``stored`` at byte ``lo``, read into a new ``dtype`` array a chunk at a time."""
    count = math.prod(shape)
    out = np.empty(count, dtype=dtype)
    step = max(1, _CHUNK // stored.itemsize)
    chunk = np.empty(min(count, step), dtype=stored)
    for i in range(0, count, step):
        n = min(step, count - i)
        _read(path, f, lo + i * stored.itemsize, n * stored.itemsize, memoryview(chunk).cast("B"))
        out[i:i + n] = chunk[:n]
    return out.reshape(shape)


def _read(path: str, f, pos: int, count: int, into: memoryview | None = None) -> memoryview:
    """``count`` bytes of the file from ``pos``, read into ``into`` (a new buffer where None)."""
    into = memoryview(bytearray(count)) if into is None else into
    f.seek(pos)
    got = 0
    while got < count:  # one read returns at most about 2 GiB on Linux, fewer on a file cut meanwhile
        n = f.readinto(into[got:count])
        if not n:
            raise error_at(path, 0, 0, "malformed tensor file: shorter than its header says")
        got += n
    return into


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
