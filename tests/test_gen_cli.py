"""``pcc gen``: every structure through the CLI, and the data problems the structures issue names."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pcc.frontend import load_file
from pcc.ir import parse_text, to_text


def pcc(*args):
    return subprocess.run([sys.executable, "-m", "pcc", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("args,edges", [
    (["hmm", "--length", "6", "--latents", "3", "--emits", "4"], 5 * 9 + 3),
    (["rat-spn", "--vars", "8", "--depth", "2", "--repetitions", "2", "--latents", "2"], 2 * 2 * 8 + 2 * 4),
    (["pd", "--shape", "4,4", "--latents", "2", "--split-interval", "2"], None),
])
def test_generators_through_the_cli(tmp_path, args, edges):
    out = tmp_path / "m.pc"
    r = pcc("gen", *args, "-o", out)
    assert r.returncode == 0, r.stderr
    assert pcc("check", out).returncode == 0
    c = load_file(out)
    text = to_text(c)
    assert to_text(parse_text(text)) == text
    if edges is not None:
        assert c.num_sum_edges() == edges


def _csv(path, x):
    np.savetxt(path, x, fmt="%d", delimiter=",")
    return path


def test_hclt_from_data_trains_with_constant_column_and_one_row(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(60, 5))
    x[:, 2] = 1
    for name, data in {"const": x, "one": np.zeros((1, 5), dtype=int)}.items():
        path = _csv(tmp_path / f"{name}.csv", data)
        model = tmp_path / f"{name}.pc"
        r = pcc("gen", "hclt", "--data", path, "--latents", "4", "-o", model)
        assert r.returncode == 0, r.stderr
        assert "categorical(2)" in model.read_text()  # at least two values, even for a constant data set
        ckpt = tmp_path / f"{name}.ckpt"
        assert pcc("train", model, "--data", path, "--epochs", "2", "--device", "cpu", "-o", ckpt).returncode == 0
        r = pcc("eval", ckpt, "--data", _csv(tmp_path / "all.csv", x), "--device", "cpu")
        assert r.returncode == 0 and "mean log-likelihood -" in r.stdout, r.stderr


def test_hclt_data_errors(tmp_path):
    x = np.random.default_rng(1).integers(0, 2, size=(20, 4))
    x[3, 1] = 3
    path = _csv(tmp_path / "three.csv", x)
    for extra, fragment in [(["--num-cats", "2"], "value 3 is outside --num-cats 2"),
                            (["--dist", "bernoulli"], "bernoulli inputs need binary data"),
                            (["--latents", "0"], "--latents must be at least 1")]:
        args = ["gen", "hclt", "--data", path, "--latents", "4", *extra]
        r = pcc(*args)
        assert r.returncode == 1 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    np.savetxt(tmp_path / "real.csv", np.random.default_rng(2).normal(size=(10, 3)), delimiter=",")
    r = pcc("gen", "hclt", "--data", tmp_path / "real.csv", "--latents", "2")
    assert r.returncode == 1 and "--dist gaussian" in r.stderr
    assert pcc("gen", "hclt", "--data", tmp_path / "real.csv", "--latents", "2", "--dist", "gaussian").returncode == 0


def test_model_data_mismatch_is_a_clear_error(tmp_path):
    model = tmp_path / "m.pc"
    assert pcc("gen", "hmm", "--length", "5", "--latents", "2", "--emits", "3", "-o", model).returncode == 0
    r = pcc("train", model, "--data", _csv(tmp_path / "six.csv", np.zeros((4, 6), dtype=int)), "-o", tmp_path / "c")
    assert r.returncode == 1 and "has 6 columns, the model has 5 variables" in r.stderr
    r = pcc("train", model, "--data", _csv(tmp_path / "big.csv", np.full((4, 5), 3)), "-o", tmp_path / "c")
    assert r.returncode == 1 and "outside the domain of variable 0" in r.stderr


def test_bad_generator_arguments():
    for args, fragment in [(["pd", "--shape", "4,x", "--latents", "2"], "--shape takes"),
                           (["rat-spn", "--vars", "3", "--depth", "3", "--repetitions", "1", "--latents", "2"], "depth"),
                           (["hmm", "--length", "0", "--latents", "2"], "--length must be at least 1")]:
        r = pcc("gen", *args)
        assert r.returncode == 1 and fragment in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
