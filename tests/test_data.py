"""pcc.data: every format round-trips, the shared real data load, and every user error reads well."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from pcc.data import batches, check_domains, image_shape, is_image_data, load
from pcc.ir.circuit import Domain
from pcc.ir.diagnostics import UserError

SHARED = Path(os.environ.get("PCC_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
X = np.array([[0, 1, 2], [3, 4, 5], [1, 0, 1], [7, 8, 9]], dtype=np.int64)


def shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.is_file():
        pytest.skip(f"shared data file {p} not found (put ../shared/data beside the repo or set PCC_DATA)")
    return p


def error(path: Path | str, *, at: str | None = None) -> str:
    """The rendered message of the UserError that loading ``path`` raises; checks it names the file."""
    with pytest.raises(UserError) as e:
        load(path)
    text = str(e.value)
    assert text.startswith(f"{path}: error: "), text
    assert "\n" not in text, text
    return text


def write(path: Path, data: bytes | str) -> Path:
    """Write text/bytes, gzipping when the name ends in .gz."""
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def idx(dims: tuple[int, ...], data: bytes, code: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + data


# ----------------------------------------------------------------------------------------------- formats


def check_x(x: np.ndarray, want: np.ndarray = X) -> None:
    assert x.dtype == np.float64 and x.ndim == 2 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_npy(tmp_path, gz):
    p = tmp_path / f"a.npy{gz}"
    np.save(tmp_path / "a.npy", X)
    if gz:
        write(p, (tmp_path / "a.npy").read_bytes())
    check_x(load(p))
    check_x(load(str(p)))


def test_npy_shapes_and_dtypes(tmp_path):
    np.save(tmp_path / "v.npy", np.array([1, 0, 1], dtype=np.uint8))
    check_x(load(tmp_path / "v.npy"), np.array([[1], [0], [1]]))
    np.save(tmp_path / "b.npy", np.array([[True, False]]))
    check_x(load(tmp_path / "b.npy"), np.array([[1, 0]]))
    np.save(tmp_path / "img.npy", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    check_x(load(tmp_path / "img.npy"), np.arange(24).reshape(2, 12))
    real = np.array([[0.25, -1.5e-3], [3e10, 7.0]])
    np.save(tmp_path / "r.npy", real)
    check_x(load(tmp_path / "r.npy"), real)


def test_npz(tmp_path):
    np.savez(tmp_path / "one.npz", X)  # arr_0
    check_x(load(tmp_path / "one.npz"))
    np.savez(tmp_path / "x.npz", x=X, y=np.zeros(3))
    check_x(load(tmp_path / "x.npz"))
    np.savez_compressed(tmp_path / "data.npz", labels=np.zeros(4), data=X)
    check_x(load(tmp_path / "data.npz"))
    write(tmp_path / "x.npz.gz", (tmp_path / "x.npz").read_bytes())
    check_x(load(tmp_path / "x.npz.gz"))


CSV = "0,1,2\n3,4,5\n1,0,1\n7,8,9\n"


@pytest.mark.parametrize("ext", [".csv", ".txt", ".data", ".csv.gz", ".txt.gz", ".data.gz"])
@pytest.mark.parametrize("text", [
    CSV,
    "a,b,c\n" + CSV,  # header
    "x0 , x1,x2\r\n" + CSV.replace("\n", "\r\n"),  # header, CRLF, spaces around names
    "\n" + CSV.replace("\n", "\n\n").rstrip("\n"),  # blank lines, no final newline
    " 0 1 2\n3\t4  5\n1 0 1\n7 8 9\n",  # whitespace-separated
    "a b c\n0 1 2\n3 4 5\n\n1 0 1\n7 8 9",
    "\ufeff" + CSV,  # UTF-8 byte order mark
    "0.0, 1e0, +2\n3,4.0,5\n1,0,1\n7,8,9\n",
], ids=["csv", "header", "crlf", "blank", "ws", "ws-header", "bom", "float-syntax"])
def test_text(tmp_path, ext, text):
    check_x(load(write(tmp_path / f"d{ext}", text)))


def test_text_odd_but_valid(tmp_path):
    # a whitespace-only line (numpy's loadtxt refuses it; the exact scanner accepts blank lines)
    check_x(load(write(tmp_path / "w.csv", "0,1,2\n  \n3,4,5\n1,0,1\n7,8,9\n")))
    check_x(load(write(tmp_path / "one.txt", "5\n6\n")), np.array([[5], [6]]))
    check_x(load(write(tmp_path / "real.csv", "0.5,-2.25\n")), np.array([[0.5, -2.25]]))
    # uppercase extension
    check_x(load(write(tmp_path / "U.CSV", CSV)))


@pytest.mark.parametrize("name", ["t-images-idx3-ubyte", "t-images-idx3-ubyte.gz", "imgs.idx", "t.idx3-ubyte"])
def test_idx_images(tmp_path, name):
    imgs = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4)
    p = write(tmp_path / name, idx((3, 2, 4), imgs.tobytes()))
    check_x(load(p), imgs.reshape(3, 8))
    assert image_shape(p) == (2, 4)
    assert is_image_data(p)


def test_idx_labels_and_types(tmp_path):
    p = write(tmp_path / "t-labels-idx1-ubyte.gz", idx((5,), bytes([3, 1, 4, 1, 5])))
    check_x(load(p), np.array([[3], [1], [4], [1], [5]]))
    assert image_shape(p) is None and not is_image_data(p)
    p = write(tmp_path / "f.idx", idx((2, 2), np.array([[1.5, -2], [0, 3]], ">f4").tobytes(), code=0x0D))
    check_x(load(p), np.array([[1.5, -2], [0, 3]]))
    p = write(tmp_path / "s.idx", idx((3,), np.array([-7, 300, 0], ">i2").tobytes(), code=0x0B))
    check_x(load(p), np.array([[-7], [300], [0]]))
    p = write(tmp_path / "d.idx", idx((1, 2), np.array([[0.125, 9]], ">f8").tobytes(), code=0x0E))
    check_x(load(p), np.array([[0.125, 9]]))


def test_not_images(tmp_path):
    np.save(tmp_path / "a.npy", X)
    assert image_shape(tmp_path / "a.npy") is None and not is_image_data(tmp_path / "a.npy")
    assert image_shape(tmp_path / "missing.csv") is None


# ----------------------------------------------------------------------------------------------- real data


def test_real_nltcs():
    x = load(shared("twenty/nltcs/nltcs.train.data.gz"))
    assert x.shape == (16181, 16) and x.dtype == np.float64
    assert set(np.unique(x)) <= {0.0, 1.0}
    check_domains(x, [Domain("binary")] * 16, "nltcs")


def test_real_mnist_t10k():
    p = shared("mnist/t10k-images-idx3-ubyte.gz")
    x = load(p)
    assert x.shape == (10000, 784) and x.min() == 0 and x.max() == 255
    assert image_shape(p) == (28, 28) and is_image_data(p)
    check_domains(x, [Domain("categorical", 256)] * 784, str(p))
    labels = shared("mnist/t10k-labels-idx1-ubyte.gz")
    y = load(labels)
    assert y.shape == (10000, 1) and set(np.unique(y)) == set(range(10))
    assert image_shape(labels) is None


# ----------------------------------------------------------------------------------------------- load errors


def test_missing_and_directory(tmp_path):
    assert "data file not found" in error(tmp_path / "nope.csv")
    assert "data file not found" in error(tmp_path / "nope.weird")
    (tmp_path / "d.csv").mkdir()
    assert "is a directory, expected a data file" in error(tmp_path / "d.csv")
    assert "is a directory" in error(tmp_path)


def test_unknown_extension(tmp_path):
    msg = error(write(tmp_path / "a.json", "[1]"))
    assert "unknown data file extension (.json)" in msg and ".npy, .npz, .csv" in msg and "IDX" in msg
    assert "unknown data file extension (none)" in error(write(tmp_path / "noext", "1"))
    assert "unknown data file extension (.json.gz)" in error(write(tmp_path / "a.json.gz", "1"))


@pytest.mark.parametrize("name", ["e.csv", "e.npy", "e-idx1-ubyte", "e.npz"])
def test_empty_file(tmp_path, name):
    assert error(write(tmp_path / name, b"")).endswith("error: data file is empty")


def test_empty_after_decompression(tmp_path):
    assert "data file is empty (after decompression)" in error(write(tmp_path / "e.csv.gz", b""))


def test_zero_rows(tmp_path):
    assert "no data rows (only blank lines)" in error(write(tmp_path / "b.csv", "\n  \n\n"))
    assert "has a header line but no data rows" in error(write(tmp_path / "h.csv", "a,b,c\n\n"))
    np.save(tmp_path / "z.npy", np.zeros((0, 3)))
    assert "data set has no rows (shape 0x3)" in error(tmp_path / "z.npy")
    np.save(tmp_path / "c.npy", np.zeros((3, 0)))
    assert "data set has no columns" in error(tmp_path / "c.npy")
    assert "data set has no rows (shape 0x28x28)" in error(write(tmp_path / "z-idx3-ubyte", idx((0, 28, 28), b"")))


def test_ragged(tmp_path):
    msg = error(write(tmp_path / "r.csv", "0,1,2\n3,4,5\n\n1,0\n7,8,9\n"))
    assert "ragged rows: line 4 has 2 values, expected 3 like line 1" in msg
    msg = error(write(tmp_path / "r.txt.gz", "a b\n1 2\n3 4 5\n"))
    assert "ragged rows: line 3 has 3 values, expected 2 like the header on line 1" in msg
    msg = error(write(tmp_path / "h.csv", "a,b\n1,2,3\n"))
    assert "line 2 has 3 values, expected 2 like the header on line 1" in msg
    assert "line 2 has 1 value, expected 2" in error(write(tmp_path / "o.csv", "1,2\n3\n"))


def test_non_numeric(tmp_path):
    assert error(write(tmp_path / "n.csv", "0,1\n1,x\n")).endswith("line 2, value 2 of 2: 'x' is not a number")
    assert "line 3, value 1 of 2: '1_0' is not a number" in error(write(tmp_path / "u.csv", "0,1\n1,1\n1_0,1\n"))
    assert "line 1, value 3 of 3 is empty" in error(write(tmp_path / "t.csv", "1,2,\n3,4,\n"))
    assert "line 1, value 1 of 2 is empty" in error(write(tmp_path / "c.csv", ",\n"))
    assert "line 2, value 1 of 2: '0x10' is not a number" in error(write(tmp_path / "h.data", "a,b\n0x10,1\n"))
    # whitespace file with a comma further down: the comma belongs to a token
    assert "line 2, value 1 of 2: '3,4' is not a number" in error(write(tmp_path / "w.txt", "1 2\n3,4 5\n"))
    # a header must be the first line only: names later are data errors
    assert "line 3, value 1 of 2: 'a' is not a number" in error(write(tmp_path / "l.csv", "1,2\n\na,b\n"))


def test_binary_with_text_extension(tmp_path):
    assert "not a UTF-8 text file (bad byte at offset 0)" in error(write(tmp_path / "b.csv", b"\xff\xfe\x00"))


@pytest.mark.parametrize("token", ["nan", "NaN", "inf", "-Infinity"])
def test_non_finite_text(tmp_path, token):
    msg = error(write(tmp_path / "f.csv.gz", f"a,b\n0,1\n\n1,{token}\n"))
    assert f"line 4, value 2 of 2: '{token}' is not finite; NaN and infinity are not allowed" in msg


def test_non_finite_binary(tmp_path):
    np.save(tmp_path / "n.npy", np.array([[0.0, 1.0], [2.0, np.nan]]))
    assert "row 1, column 1 (0-based): value nan is not finite" in error(tmp_path / "n.npy")
    np.savez(tmp_path / "i.npz", x=np.array([np.inf, 0.0]))
    assert "row 0, column 0 (0-based): value inf is not finite" in error(tmp_path / "i.npz")
    p = write(tmp_path / "f.idx", idx((2,), np.array([1, -np.inf], ">f4").tobytes(), code=0x0D))
    assert "row 1, column 0 (0-based): value -inf is not finite" in error(p)


def test_gzip_corrupt(tmp_path):
    whole = gzip.compress(CSV.encode() * 50)
    (tmp_path / "t.csv.gz").write_bytes(whole[: len(whole) // 2])
    assert "truncated gzip file" in error(tmp_path / "t.csv.gz")
    (tmp_path / "n.csv.gz").write_bytes(CSV.encode())
    assert "corrupt gzip file: Not a gzipped file" in error(tmp_path / "n.csv.gz")
    bad = bytearray(whole)
    bad[-8] ^= 0xFF  # CRC32 in the trailer
    (tmp_path / "c.csv.gz").write_bytes(bytes(bad))
    assert "corrupt gzip file: CRC check failed" in error(tmp_path / "c.csv.gz")
    bad = bytearray(whole)
    bad[10:20] = b"\xff" * 10  # garbage in the deflate stream
    (tmp_path / "d.npy.gz").write_bytes(bytes(bad))
    assert "corrupt gzip file" in error(tmp_path / "d.npy.gz")


def test_idx_bad_magic(tmp_path):
    msg = error(write(tmp_path / "a-idx3-ubyte", struct.pack(">IIII", 0x12345678, 1, 1, 1) + b"\0"))
    assert "not an IDX file: bad magic number 0x12345678" in msg
    assert "not an IDX file: bad magic number 0x00000A01" in error(write(tmp_path / "t.idx", idx((1,), b"\0", 0x0A)))
    assert "bad IDX magic number 0x00000800: zero dimensions" in error(write(tmp_path / "z.idx", b"\0\0\x08\0"))
    assert "shorter than the 4-byte magic number" in error(write(tmp_path / "s.idx", b"\0\0"))
    assert "truncated IDX file: 8 bytes, the header of 3 dimensions needs 16" in error(
        write(tmp_path / "h-idx3-ubyte", b"\0\0\x08\x03\0\0\0\x01"))
    # a CSV with an IDX name: its first bytes are not a magic number
    assert "not an IDX file: bad magic number" in error(write(tmp_path / "c-idx1-ubyte.gz", CSV))
    with pytest.raises(UserError, match="bad magic number"):
        image_shape(write(tmp_path / "i-idx3-ubyte", b"junkjunkjunkjunk"))


def test_idx_size_mismatch(tmp_path):
    msg = error(write(tmp_path / "a-idx3-ubyte.gz", idx((2, 2, 2), bytes(7))))
    assert "IDX size mismatch: the header declares 2x2x2 ubyte values (8 bytes) but the file holds 7 bytes" in msg
    msg = error(write(tmp_path / "b.idx", idx((3,), bytes(13), code=0x0C)))
    assert "declares 3 int values (12 bytes) but the file holds 13 bytes" in msg


def test_npy_npz_malformed(tmp_path):
    assert "not a .npy file" in error(write(tmp_path / "a.npy", "0,1\n"))
    np.save(tmp_path / "t.npy", X)
    write(tmp_path / "t2.npy", (tmp_path / "t.npy").read_bytes()[:-5])
    assert "malformed .npy file" in error(tmp_path / "t2.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "malformed .npy file" in error(tmp_path / "o.npy")
    np.save(tmp_path / "s.npy", np.array(["1", "2"]))
    assert "array has dtype <U1, expected numbers" in error(tmp_path / "s.npy")
    np.save(tmp_path / "c.npy", np.array([1 + 2j]))
    assert "array has dtype complex128, expected numbers" in error(tmp_path / "c.npy")
    np.save(tmp_path / "0.npy", np.float64(3))
    assert "array is a single number (0-D)" in error(tmp_path / "0.npy")
    assert "not a .npz file (not a zip archive)" in error(write(tmp_path / "a.npz", "0,1\n"))
    np.savez(tmp_path / "m.npz", a=X, b=X, c=X)
    msg = error(tmp_path / "m.npz")
    assert "the .npz archive holds 3 arrays (a, b, c); expected one array, or one named 'x' or 'data'" in msg
    np.savez(tmp_path / "none.npz")
    assert "the .npz archive holds no arrays" in error(tmp_path / "none.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "m.npz").read_bytes()[:60])
    assert "malformed .npz file" in error(tmp_path / "cut.npz")


# ----------------------------------------------------------------------------------------------- domains


DOMS = [Domain("binary"), Domain("categorical", 3), Domain("real")]


def domain_error(x, domains=DOMS) -> str:
    with pytest.raises(UserError) as e:
        check_domains(np.asarray(x, dtype=np.float64), domains, "d.csv")
    text = str(e.value)
    assert text.startswith("d.csv: error: ") and "\n" not in text, text
    return text


def test_domains_ok():
    check_domains(np.array([[0, 2, -3.5], [1, 0, 1e9], [1, 1, 0]], dtype=np.float64), DOMS, "d.csv")
    check_domains(np.zeros((0, 3)), DOMS, "d.csv")


def test_domains_column_count():
    assert domain_error(np.zeros((2, 17)), [Domain("binary")] * 16).endswith(
        "data set has 17 columns, the model has 16 variables")
    assert "data set has 1 column, the model has 2 variables" in domain_error(np.zeros((2, 1)), DOMS[:2])
    assert "data set has 3 columns, the model has 1 variable" in domain_error(np.zeros((2, 3)), DOMS[:1])


def test_domains_values():
    assert domain_error([[0, 0, 0], [2, 0, 0]]).endswith(
        "row 1, column 0 (0-based): value 2 is outside the domain of variable 0, binary (0 or 1)")
    assert "row 0, column 1 (0-based): value 3 is outside the domain of variable 1, categorical(3) " \
           "(an integer 0..2)" in domain_error([[0, 3, 0]])
    assert "row 0, column 1 (0-based): value -1 is outside the domain" in domain_error([[0, -1, 0]])
    assert "row 0, column 0 (0-based): value 0.5 is not an integer; variable 0 is binary (0 or 1)" in \
        domain_error([[0.5, 0, 0]])
    assert "value 1.25 is not an integer; variable 1 is categorical(3) (an integer 0..2)" in \
        domain_error([[0, 1.25, 0]])
    assert "row 0, column 2 (0-based): value inf is not finite (variable 2, real)" in domain_error([[0, 0, np.inf]])
    assert "value inf is outside the domain of variable 0" in domain_error([[np.inf, 0, 0]])
    msg = domain_error([[0, 0, 0], [0, 0, np.nan]])
    assert "row 1, column 2 (0-based): value is NaN (variable 2, real)" in msg and "separate mask" in msg
    assert "row 0, column 0 (0-based): value is NaN (variable 0, binary)" in domain_error([[np.nan, 0, 0]])


def test_domains_first_offender_row_major():
    x = np.zeros((70000, 3))
    x[69999, 0] = 5  # in a later chunk
    x[66000, 2] = np.nan
    x[66000, 1] = 7
    assert "row 66000, column 1 (0-based): value 7" in domain_error(x)


# ----------------------------------------------------------------------------------------------- batches


def test_batches_in_order():
    x = np.zeros((10, 2))
    got = list(batches(x, 4, shuffle=False, seed=0))
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(b.dtype == np.int64 for b in got)
    assert [b.tolist() for b in batches(x, 100, False, 0)] == [list(range(10))]
    assert list(batches(np.zeros((0, 2)), 3, True, 0)) == []


def test_batches_shuffled():
    x = np.zeros((103, 1))
    a = list(batches(x, 10, shuffle=True, seed=7))
    assert [len(b) for b in a] == [10] * 10 + [3]
    assert sorted(np.concatenate(a).tolist()) == list(range(103))
    assert np.concatenate(a).tolist() != list(range(103))
    again = list(batches(x, 10, shuffle=True, seed=7))
    assert all(np.array_equal(p, q) for p, q in zip(a, again))
    other = np.concatenate(list(batches(x, 10, shuffle=True, seed=8)))
    assert other.tolist() != np.concatenate(a).tolist()


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_batches_bad_size(size):
    with pytest.raises(UserError, match="batch size must be a positive integer"):
        list(batches(np.zeros((3, 1)), size, False, 0))
