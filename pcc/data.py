"""Data set readers for ``pcc train`` / ``pcc eval``: load, validate against a model, batch.

:func:`load` reads a data set into a 2-D float64 array ``[rows, columns]`` whatever its format:

* ``.npy`` -- one array; ``.npz`` -- exactly one array, or the array named ``x`` (else ``data``);
* ``.csv``, ``.txt``, ``.data`` -- numbers separated by commas, or by whitespace when the first non-blank
  line has no comma; blank lines are ignored; an optional first line of names (no field a number) is
  skipped;
* IDX files (``*-idx3-ubyte``, ``*-idx1-ubyte``, ``*.idx``; the MNIST format) -- the magic number gives the
  element type and the number of dimensions; an image file ``[n, rows, cols]`` becomes ``[n, rows*cols]``;
* any of these compressed with gzip (an extra ``.gz``).

A 1-D array becomes one column; arrays of more than two dimensions keep their first axis as rows and
flatten the rest. Integer data stay integral (float64 holds integers exactly up to 2**53).

Every problem with the user's file (missing, unreadable, corrupt, ragged, non-numeric, NaN/infinity,
values outside a model's domains) is a :class:`~pcc.ir.diagnostics.UserError` whose one-line message
names the file; the CLI prints it and exits with code 1. Positions in messages: ``line`` is the 1-based
line of a text file, ``value j of m`` the 1-based field on that line, ``row``/``column`` are 0-based array
indices (the column index is the model's variable index).
"""
from __future__ import annotations

import gzip
import io
import math
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pcc.ir.circuit import Domain
from pcc.ir.diagnostics import UserError, error_at

__all__ = ["load", "check_domains", "image_shape", "is_image_data", "batches", "FORMATS"]

FORMATS = ".npy, .npz, .csv, .txt, .data, IDX (*-idx3-ubyte, *-idx1-ubyte, .idx), each optionally .gz"
_TEXT = (".csv", ".txt", ".data")
_IDX_NAME = re.compile(r"(?:^|[.-])idx\d*-ubyte$|\.idx$")
# IDX element types: code -> (name, big-endian numpy dtype)
_IDX_TYPES = {0x08: ("ubyte", ">u1"), 0x09: ("byte", ">i1"), 0x0B: ("short", ">i2"), 0x0C: ("int", ">i4"),
              0x0D: ("float", ">f4"), 0x0E: ("double", ">f8")}
_CHECK_CHUNK = 1 << 16  # rows per step of check_domains (bounds its temporaries)


# ----------------------------------------------------------------------------------------------- public


def load(path: str | os.PathLike[str]) -> np.ndarray:
    """Read the data set at ``path`` as a C-contiguous float64 array of shape ``[rows, columns]``.

    The format is chosen by the file name (see the module docstring); the result has at least one row and
    one column and only finite values. Raises :class:`UserError` (message naming the file, one line) for a
    missing file, a directory, an unknown extension, an empty file or zero rows, ragged rows or non-numeric
    entries in text (naming the line and value), NaN or infinity, truncated or corrupt gzip data, a bad
    IDX magic number or an IDX size mismatch, and a malformed or non-numeric .npy/.npz.
    """
    name = str(path)
    kind, gz = _format(name)
    raw = _read(name, gz)
    if kind == "idx":
        x = _idx_array(name, raw)
    elif kind == ".npy":
        x = _npy(name, raw)
    elif kind == ".npz":
        x = _npz(name, raw)
    else:
        return _text(name, raw)
    return _finish(name, x)


def check_domains(x: np.ndarray, domains: Sequence[Domain], path: str) -> None:
    """Check that data ``x`` ``[rows, columns]`` fit a model whose variables have ``domains``.

    Column ``j`` holds variable ``j``. Raises :class:`UserError` located at ``path`` when the column count
    differs from ``len(domains)``, or at the first offending entry in row-major order: a NaN anywhere
    (missing values come as a separate mask, never as NaN), an infinity, or for a ``binary``/``categorical``
    variable a value that is not an integer in ``0..k-1``. The message names the row, the column and the
    variable (0-based). ``real`` variables accept any finite value. Returns None when the data fit.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"check_domains expects a 2-D array, got shape {x.shape}")
    n, m = x.shape
    if m != len(domains):
        raise error_at(path, 0, 0, f"data set has {_plural(m, 'column')}, "
                                   f"the model has {_plural(len(domains), 'variable')}")
    lo = np.empty(m)
    hi = np.empty(m)
    discrete = np.zeros(m, dtype=bool)
    for j, d in enumerate(domains):
        if d.kind == "real":
            lo[j], hi[j] = -np.inf, np.inf
        elif d.kind in ("binary", "categorical"):
            lo[j], hi[j], discrete[j] = 0, d.categories - 1, True
        else:
            raise ValueError(f"unknown domain kind {d.kind!r} of variable {j}")
    any_discrete = bool(discrete.any())
    for start in range(0, n, _CHECK_CHUNK):
        chunk = x[start : start + _CHECK_CHUNK]
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(chunk) | (chunk < lo) | (chunk > hi)
            if any_discrete:
                bad |= discrete & (chunk != np.floor(chunk))
        if bad.any():
            r, j = np.unravel_index(int(np.argmax(bad)), bad.shape)
            raise error_at(path, 0, 0, _domain_message(start + int(r), int(j), float(chunk[r, j]), domains[j]))


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(rows, cols)`` of the images in an IDX image file (3-D: ``[n, rows, cols]``), else None.

    Only the file name and, for IDX files, the header are read. Non-IDX names give None without touching
    the file; an IDX file that is missing or has a bad header raises :class:`UserError` as :func:`load`.
    """
    name = str(path)
    kind, gz = _format(name, strict=False)
    if kind != "idx":
        return None
    dims = _idx_header(name, _read(name, gz, limit=4 + 4 * 255))[2]
    return (dims[1], dims[2]) if len(dims) == 3 else None


def is_image_data(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an IDX image file (``image_shape(path)`` is not None)."""
    return image_shape(path) is not None


def batches(x: np.ndarray, batch_size: int, shuffle: bool, seed: int) -> Iterator[np.ndarray]:
    """Yield int64 row-index arrays covering ``range(len(x))`` once, ``batch_size`` rows each.

    The last batch holds the remaining rows (may be smaller). With ``shuffle`` the order is a permutation
    drawn from ``numpy.random.default_rng(seed)`` (same seed, same batches; vary the seed per epoch),
    else rows come in order. Raises :class:`UserError` when ``batch_size`` is not a positive integer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise error_at("pcc", 0, 0, f"batch size must be a positive integer, got {batch_size!r}")
    n = len(x)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    order = order.astype(np.int64, copy=False)
    for start in range(0, n, int(batch_size)):
        yield order[start : start + int(batch_size)]


# ----------------------------------------------------------------------------------------------- files


def _format(name: str, strict: bool = True) -> tuple[str, bool]:
    """(kind, gzipped) from the file name: kind is ``idx``, ``.npy``, ``.npz``, ``.csv``, ``.txt`` or ``.data``."""
    base = Path(name).name.lower()
    gz = base.endswith(".gz")
    if gz:
        base = base[:-3]
    if _IDX_NAME.search(base):
        return "idx", gz
    suffix = os.path.splitext(base)[1]
    if suffix in (".npy", ".npz") + _TEXT:
        return suffix, gz
    if strict:
        _check_exists(name)
        shown = suffix + (".gz" if gz else "") if suffix else ("'.gz' alone" if gz else "none")
        raise error_at(name, 0, 0, f"unknown data file extension ({shown}); expected {FORMATS}")
    return "", gz


def _check_exists(name: str) -> None:
    p = Path(name)
    if p.is_dir():
        raise error_at(name, 0, 0, "is a directory, expected a data file")
    if not p.exists():
        raise error_at(name, 0, 0, "data file not found")


def _read(name: str, gz: bool, limit: int | None = None) -> bytes:
    """The file's bytes (decompressed when ``gz``); the first ``limit`` bytes only, if given."""
    _check_exists(name)
    try:
        if not gz:
            with open(name, "rb") as f:
                raw = f.read() if limit is None else f.read(limit)
        else:
            with gzip.open(name, "rb") as f:
                raw = f.read() if limit is None else f.read(limit)
    except EOFError:
        raise error_at(name, 0, 0, "truncated gzip file: the compressed data end before the "
                                   "end-of-stream marker") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise error_at(name, 0, 0, f"corrupt gzip file: {e}") from None
    except OSError as e:
        raise error_at(name, 0, 0, f"cannot read data file: {e.strerror or e}") from None
    if not raw:
        raise error_at(name, 0, 0, "data file is empty" + (" (after decompression)" if gz else ""))
    return raw


def _finish(name: str, x: np.ndarray) -> np.ndarray:
    """Check dtype, shape and finiteness of a binary array; return it as 2-D contiguous float64."""
    if x.dtype.kind not in "biuf":
        raise error_at(name, 0, 0, f"array has dtype {x.dtype}, expected numbers (bool, integer or float)")
    if x.ndim == 0:
        raise error_at(name, 0, 0, "array is a single number (0-D), expected [rows, columns]")
    if x.shape[0] == 0:
        raise error_at(name, 0, 0, f"data set has no rows (shape {_shape(x.shape)})")
    x = x.reshape(x.shape[0], -1) if x.ndim != 1 else x.reshape(-1, 1)
    if x.shape[1] == 0:
        raise error_at(name, 0, 0, "data set has no columns")
    x = np.ascontiguousarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        r, j = np.unravel_index(int(np.argmin(finite)), x.shape)
        raise error_at(name, 0, 0, f"row {r}, column {j} (0-based): value {_num(x[r, j])} is not finite; "
                                   "NaN and infinity are not allowed in data sets")
    return x


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


# ----------------------------------------------------------------------------------------------- numpy


def _npy(name: str, raw: bytes) -> np.ndarray:
    if not raw.startswith(b"\x93NUMPY"):
        raise error_at(name, 0, 0, "not a .npy file (no \\x93NUMPY magic string)")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as e:
        raise error_at(name, 0, 0, f"malformed .npy file: {_first_line(e)}") from None
    except (OSError, EOFError) as e:  # short data
        raise error_at(name, 0, 0, f"malformed .npy file (truncated?): {_first_line(e)}") from None


def _npz(name: str, raw: bytes) -> np.ndarray:
    if not raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise error_at(name, 0, 0, "not a .npz file (not a zip archive)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            names = list(z.files)
            if "x" in names:
                key = "x"
            elif "data" in names:
                key = "data"
            elif len(names) == 1:
                key = names[0]
            elif not names:
                raise error_at(name, 0, 0, "the .npz archive holds no arrays")
            else:
                raise error_at(name, 0, 0, f"the .npz archive holds {len(names)} arrays "
                                           f"({', '.join(sorted(names))}); expected one array, or one named "
                                           "'x' or 'data'")
            return z[key]
    except UserError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled/malformed member), OSError, EOFError
        raise error_at(name, 0, 0, f"malformed .npz file: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# ----------------------------------------------------------------------------------------------- IDX


def _idx_header(name: str, raw: bytes) -> tuple[str, np.dtype, list[int], int]:
    """(type name, dtype, dims, header size) of an IDX file, validating the magic number."""
    if len(raw) < 4:
        raise error_at(name, 0, 0, f"not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    expected = "two zero bytes, a type code 0x08/09/0B/0C/0D/0E and the number of dimensions"
    if raw[0] != 0 or raw[1] != 0 or code not in _IDX_TYPES:
        raise error_at(name, 0, 0, f"not an IDX file: bad magic number 0x{magic:08X} (expected {expected})")
    if ndim == 0:
        raise error_at(name, 0, 0, f"bad IDX magic number 0x{magic:08X}: zero dimensions")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise error_at(name, 0, 0, f"truncated IDX file: {len(raw)} bytes, the header of {ndim} dimensions "
                                   f"needs {head}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    tname, dt = _IDX_TYPES[code]
    return tname, np.dtype(dt), dims, head


def _idx_array(name: str, raw: bytes) -> np.ndarray:
    tname, dt, dims, head = _idx_header(name, raw)
    want = math.prod(dims) * dt.itemsize  # Python ints: no overflow
    have = len(raw) - head
    if have != want:
        raise error_at(name, 0, 0, f"IDX size mismatch: the header declares {_shape(tuple(dims))} {tname} "
                                   f"values ({want} bytes) but the file holds {have} bytes of data")
    return np.frombuffer(raw, dtype=dt, offset=head).reshape(dims)


# ----------------------------------------------------------------------------------------------- text


def _text(name: str, raw: bytes) -> np.ndarray:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error_at(name, 0, 0, f"not a UTF-8 text file (bad byte at offset {e.start}); a binary file "
                                   "with a text extension?") from None
    # first non-blank line: decides the separator and whether it is a header
    pos, lineno = 0, 1
    first = ""
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        first = text[pos:end]
        if first.strip():
            break
        pos, lineno = end + 1, lineno + 1
    if not first.strip():
        raise error_at(name, 0, 0, "data file has no data rows (only blank lines)")
    sep = "," if "," in first else None
    fields = _split(first, sep)
    header = all(f and _number(f) is None for f in fields)
    body_start, body_line = pos, lineno
    if header:
        end = text.find("\n", pos)
        body_start, body_line = (len(text) if end < 0 else end + 1), lineno + 1
    body = text[body_start:]
    ref = (len(fields), lineno, header)
    if not body.strip():
        raise error_at(name, 0, 0, "data file has a header line but no data rows")
    try:
        x = np.loadtxt(io.StringIO(body), delimiter=sep, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        x = None  # the exact scanner below finds and reports the problem (or parses what numpy refused)
    if x is None or x.shape[1] != len(fields) or not np.isfinite(x).all():
        x = _scan(name, body, body_line, sep, ref)
    return np.ascontiguousarray(x)


def _split(line: str, sep: str | None) -> list[str]:
    return [f.strip() for f in line.split(sep)] if sep else line.split()


def _number(token: str) -> float | None:
    """The value of a decimal number token (as numpy's loadtxt reads it), or None."""
    if not token or "_" in token or not token.isascii():
        return None
    try:
        return float(token)
    except ValueError:
        return None


def _scan(name: str, body: str, first_line: int, sep: str | None, ref: tuple[int, int, bool]) -> np.ndarray:
    """Parse the data lines one by one; raise at the first ragged, non-numeric or non-finite entry."""
    ncols, ref_line, ref_header = ref
    like = f"the header on line {ref_line}" if ref_header else f"line {ref_line}"
    rows: list[list[float]] = []
    for lineno, line in enumerate(body.split("\n"), start=first_line):
        if not line.strip():
            continue
        tokens = _split(line, sep)
        if len(tokens) != ncols:
            raise error_at(name, 0, 0, f"ragged rows: line {lineno} has {_plural(len(tokens), 'value')}, "
                                       f"expected {ncols} like {like}")
        row = []
        for j, tok in enumerate(tokens, start=1):
            v = _number(tok)
            where = f"line {lineno}, value {j} of {ncols}"
            if v is None:
                what = " is empty" if not tok else f": {tok!r} is not a number"
                raise error_at(name, 0, 0, f"{where}{what}")
            if not math.isfinite(v):
                raise error_at(name, 0, 0, f"{where}: {tok!r} is not finite; NaN and infinity are not "
                                           "allowed in data sets")
            row.append(v)
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(rows), ncols)


# ----------------------------------------------------------------------------------------------- messages


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _num(v: float) -> str:
    """A value as users wrote it: integers without '.0', else Python's shortest repr (nan, inf, 0.5)."""
    v = float(v)
    return str(int(v)) if math.isfinite(v) and v == int(v) and abs(v) < 1e16 else repr(v)


def _domain_message(r: int, j: int, v: float, d: Domain) -> str:
    where = f"row {r}, column {j} (0-based)"
    if math.isnan(v):
        return (f"{where}: value is NaN (variable {j}, {d}); NaN is not allowed in data, "
                "missing values come as a separate mask")
    if d.kind == "real":
        return f"{where}: value {_num(v)} is not finite (variable {j}, real)"
    allowed = "0 or 1" if d.kind == "binary" else (
        f"an integer 0..{d.categories - 1}" if d.categories > 0 else "no value: it has 0 categories")
    if math.isfinite(v) and v != math.floor(v):
        return f"{where}: value {_num(v)} is not an integer; variable {j} is {d} ({allowed})"
    return f"{where}: value {_num(v)} is outside the domain of variable {j}, {d} ({allowed})"
