"""The pcc command line, run as a user runs it (a subprocess): outputs, files and exit codes."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from pcc import __version__
from pcc.api import read_ir
from pcc.frontend import load_file

EX = ROOT / "examples"


def pcc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pcc", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_user_error(r, fragment):
    assert r.returncode == 1, r.stderr
    assert fragment in r.stderr
    assert "Traceback" not in r.stderr


def test_version_and_help():
    assert pcc("--version").stdout.strip() == f"pcc {__version__}"
    r = pcc("--help")
    assert r.returncode == 0 and "check" in r.stdout and "opt" in r.stdout and "compile" in r.stdout
    assert "--print-ir-after" in pcc("opt", "--help").stdout


def test_check_ok():
    r = pcc("check", EX / "hmm.pc")
    assert r.returncode == 0, r.stderr
    assert "ok: 128 variables" in r.stdout


def test_check_reports_diagnostic(tmp_path):
    f = tmp_path / "bad.pc"
    f.write_text("var X : binary\na = input(X, gaussian, n=2)\nroot a\n")
    r = pcc("check", f)
    assert_user_error(r, f"{f}:2:14: error: a gaussian input needs a real variable")
    assert "    a = input(X, gaussian, n=2)\n" in r.stderr and "             ^" in r.stderr


def test_opt_prints_ir_and_writes_file(tmp_path):
    r = pcc("opt", EX / "pd8x8.pc", "-p", "dce,layerize{max-padding=1.5},block-edges")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pcir 1") and "layered=1" in r.stdout
    out = tmp_path / "pd.pcir"
    assert pcc("opt", EX / "pd8x8.pc", "-o", out).returncode == 0
    again = pcc("opt", out, "-p", "verify")  # a .pcir file reads back and re-prints identically
    assert again.returncode == 0 and again.stdout == out.read_text()


def test_opt_sidecar_for_large_tensors(tmp_path):
    src = tmp_path / "m.pc"
    src.write_text("var X : categorical(4)\na = input(X, categorical, n=64)\ns = sum(a, n=1)\nroot s\n")
    out = tmp_path / "m.pcir"
    assert pcc("opt", src, "-p", "collapse-chains", "-o", out).returncode == 0
    c = read_ir(out)
    assert c.num_sum_edges() == 64
    from pcc.ir.params import randomize
    randomize(c, 0)
    from pcc.api import write_ir
    write_ir(c, out)
    assert (tmp_path / "m.pcir.safetensors").exists() and "external" in out.read_text()
    assert "resources {" in pcc("opt", out, "-p", "verify").stdout  # stdout embeds them instead


def test_print_ir_after_and_time_passes():
    r = pcc("opt", EX / "mixture.pc", "-p", "dce,layerize", "--print-ir-after", "dce", "--time-passes")
    assert r.returncode == 0
    assert "IR after dce" in r.stderr and "IR after layerize" not in r.stderr
    assert "pass execution timing report" in r.stderr and "layerize" in r.stderr
    r = pcc("opt", EX / "mixture.pc", "-p", "dce,layerize", "--print-ir-after", "all")
    assert "IR after dce" in r.stderr and "IR after layerize" in r.stderr


def test_no_verify_flag_accepted():
    assert pcc("opt", EX / "mixture.pc", "-p", "layerize", "--no-verify").returncode == 0


@pytest.mark.parametrize("pipeline,fragment", [
    ("nonsense", "unknown pass 'nonsense'"),
    ("layerize{bogus=1}", "has no option 'bogus'"),
    ("layerize{max-padding=wide}", "expects float"),
    ("dce,,", "malformed pipeline"),
])
def test_bad_pipelines(pipeline, fragment):
    assert_user_error(pcc("opt", EX / "mixture.pc", "-p", pipeline), fragment)


def test_compile_emits_each_stage(tmp_path):
    ast = pcc("compile", EX / "mixture.pc", "--emit", "ast")
    assert ast.returncode == 0 and ast.stdout.startswith("Program") and "NodeDecl" in ast.stdout
    ir = pcc("compile", EX / "mixture.pc", "--emit", "ir")
    assert ir.returncode == 0 and "layered" not in ir.stdout and "name=\"mix\"" in ir.stdout
    layered = pcc("compile", EX / "mixture.pc", "--emit", "layered", "-o", tmp_path / "m.pcir")
    assert layered.returncode == 0 and "layered=1" in (tmp_path / "m.pcir").read_text()


def test_compile_dump_dir(tmp_path):
    d = tmp_path / "dump"
    assert pcc("compile", EX / "reuse.pc", "--dump-dir", d).returncode == 0
    names = sorted(p.name for p in d.iterdir())
    assert names[:3] == ["00-ast.txt", "01-ir.pcir", "02-collapse-chains.pcir"]
    assert names[-1] == "06-block-edges.pcir"
    assert read_ir(d / "06-block-edges.pcir").attrs["layered"] == 1
    assert len(read_ir(d / "01-ir.pcir").blocks) == len(load_file(EX / "reuse.pc").blocks)


def test_user_errors_exit_1(tmp_path):
    assert_user_error(pcc("check", tmp_path / "missing.pc"), "no such file")
    assert_user_error(pcc("frobnicate"), "invalid choice")
    (tmp_path / "x.txt").write_text("hello")
    assert_user_error(pcc("check", tmp_path / "x.txt"), "expected a .pc or .pcir file")
    (tmp_path / "bad.pcir").write_text("pcir 1\nvar X : binary\n%0 = input X bernoulli n=2 params=@p\nroot %0\n")
    assert_user_error(pcc("check", tmp_path / "bad.pcir"), "undefined tensor @p")


def test_invalid_pcir_is_a_user_error(tmp_path):
    f = tmp_path / "bad.pcir"
    f.write_text("pcir 1\nvar X : binary\ntensor @p : f64[2] = [0.5, 0.5]\n"
                 "%0 = input X bernoulli n=2 params=@p\n%1 = prod(%0, %0) n=2\n"
                 "tensor @w : f64[1, 2] = [0.5, 0.5]\nroot %1\n")
    r = pcc("check", f)
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_internal_errors_exit_2(tmp_path):
    # A pcc bug must surface as exit code 2 with a one-line message; simulate one with a broken pass.
    code = ("import sys, pcc.cli as cli, pcc.passes.dce as d\n"
            "d.DeadCodeElimination.run = lambda self, c: 1/0\n"
            f"sys.exit(cli.main(['opt', {str(EX / 'mixture.pc')!r}, '-p', 'dce']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert "internal error: pass 'dce' failed: ZeroDivisionError" in r.stderr and "Traceback" not in r.stderr


def test_readme_tour_is_current():
    """The README's IR listing is what `pcc compile --emit ir` prints today."""
    readme = (ROOT / "README.md").read_text()
    shown = readme[readme.index("pcir 1\n"):readme.index("root %3\n") + len("root %3\n")]
    assert pcc("compile", "examples/mixture.pc", "--emit", "ir", cwd=ROOT).stdout == shown
    assert "./run.sh test" in readme and "./run.sh demo" in readme
