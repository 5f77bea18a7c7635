"""The PyJuice comparison harness prints its table from recorded rows without a GPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "bench" / "vs_pyjuice.py"


def _report(*paths) -> str:
    return subprocess.run([sys.executable, str(HARNESS), "--report", *map(str, paths)],
                          capture_output=True, text=True, check=True).stdout


def test_report_merges_recorded_runs():
    runs = sorted((ROOT / "bench" / "results").glob("vs_pyjuice_run*_h100.jsonl"))
    assert runs, "recorded harness rows are part of the repository"
    last = {}
    for path in runs:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            last[(row["name"], row["batch"])] = row
    hclt64 = last[("hclt64", 512)]
    lines = [line for line in _report(*runs).splitlines() if line.startswith("| hclt64 | 512 |")]
    assert len(lines) == 1  # a later run's row replaces an earlier one
    ratio = hclt64["step_ms"]["pcc"] / hclt64["step_ms"]["pyjuice"]
    assert f"({ratio:.2f})" in lines[0] and f"{hclt64['edges']:,}" in lines[0]


def test_report_shows_extra_precisions(tmp_path):
    row = {"name": "hclt8", "batch": 64, "nodes": 10, "edges": 100, "convert_s": 0.1,
           "compile_s": {"pyjuice": 2.0, "pcc": 1.0, "pcc-bf16": 1.0},
           "step_ms": {"pyjuice": 4.0, "pcc": 3.0, "pcc-bf16": 2.0},
           "fwd_ms": {"pyjuice": 1.0, "pcc": 1.0, "pcc-bf16": 0.5},
           "peak_mib": {"pyjuice": 100.0, "pcc": 80.0, "pcc-bf16": 80.0},
           "ll_err": 1e-6, "em_err": 2e-5, "extra_err": {"bf16": [1e-3, 2e-3]}}
    old = {k: v for k, v in row.items() if k != "extra_err"} | {"name": "pd8"}  # rows from before the column
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(old) + "\n")
    out = _report(path).splitlines()
    assert "bf16: step ms (ratio)" in out[0]
    assert "| 2.00 (0.50), 0.50 (0.50), 1.0e-03, 2.0e-03 |" in out[2]
    assert out[3].startswith("| pd8 |") and out[3].count("|") == out[2].count("|")


def test_report_shows_memory_above_each_phase_start(tmp_path):
    row = {"name": "hclt8", "batch": 64, "nodes": 10, "edges": 100, "convert_s": 0.1,
           "compile_s": {"pyjuice": 2.0, "pcc": 1.0}, "step_ms": {"pyjuice": 4.0, "pcc": 3.0},
           "fwd_ms": {"pyjuice": 1.0, "pcc": 1.0}, "peak_mib": {"pyjuice": 120.0, "pcc": 70.0},
           "base_mib": {"pyjuice": 20.0, "pcc": 20.0}, "ll_err": 1e-6, "em_err": 2e-5}
    old = {k: v for k, v in row.items() if k != "base_mib"} | {"name": "pd8"}  # rows from before the column
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(old) + "\n")
    out = _report(path).splitlines()
    assert "own MiB pcc / PyJuice (ratio)" in out[0]
    assert "| 70 / 120 (0.58) | 50 / 100 (0.50) |" in out[2]
    assert "| 70 / 120 (0.58) | – |" in out[3]


def test_report_keeps_pcc_numbers_when_pyjuice_failed(tmp_path):
    row = {"name": "hmm4096", "batch": 512, "nodes": 10, "edges": 100, "convert_s": 0.1,
           "compile_s": {"pcc": 1.0}, "step_ms": {"pcc": 3.0}, "fwd_ms": {"pcc": 1.0},
           "peak_mib": {"pcc": 70.0}, "base_mib": {"pyjuice": 20.0, "pcc": 20.0}, "ll_err": float("nan"),
           "em_err": float("nan"), "pyjuice_error": "OutOfMemoryError: CUDA out of memory"}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    out = _report(path).splitlines()
    assert "| 1.00 / – | 3.00 / – (PyJuice: OutOfMemoryError: CUDA out of memory) | 1.00 / – | 70 / – | – |" in out[2]


def test_report_shows_compiles_in_fresh_processes(tmp_path):
    row = {"name": "hclt8", "batch": 64, "nodes": 10, "edges": 100, "convert_s": 0.1,
           "compile_s": {"pyjuice": 2.0, "pcc": 1.5}, "step_ms": {"pyjuice": 4.0, "pcc": 3.0},
           "fwd_ms": {"pyjuice": 1.0, "pcc": 1.0}, "peak_mib": {"pyjuice": 120.0, "pcc": 70.0},
           "ll_err": 1e-6, "em_err": 2e-5, "fresh_compile_s": {"pyjuice": 4.0, "pcc": 1.0}}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert "| 1.50 / 2.00; fresh 1.00 / 4.00 (0.25) |" in _report(path).splitlines()[2]


def test_pcc_compile_timed_in_a_fresh_process():
    """--fresh-compile's child process (here on the CPU): it prints the seconds the parent reads."""
    sys.path.insert(0, str(HARNESS.parent))
    import vs_pyjuice
    seconds = vs_pyjuice.fresh_compile_s("pcc", "pd8x8", "unused", ROOT / "examples" / "pd8x8.pc", device="cpu")
    assert 0 < seconds < 60


def test_fresh_compile_gets_the_run_s_pcc_settings(monkeypatch):
    """The child compiles with the run's non-default pcc settings (their flags are passed on; a bad one fails)."""
    sys.path.insert(0, str(HARNESS.parent))
    import vs_pyjuice
    monkeypatch.setattr(vs_pyjuice, "PCC_SETTINGS", {"recompute": "all", "cat_fill": 0, "fuse_inputs": 1})
    assert 0 < vs_pyjuice.fresh_compile_s("pcc", "hmm", "unused", ROOT / "examples" / "hmm.pc", device="cpu") < 60
    monkeypatch.setattr(vs_pyjuice, "PCC_SETTINGS", {"recompute": "most"})
    with pytest.raises(RuntimeError, match="fresh process failed"):
        vs_pyjuice.fresh_compile_s("pcc", "hmm", "unused", ROOT / "examples" / "hmm.pc", device="cpu")


def test_report_keeps_rows_of_other_pcc_settings_apart(tmp_path):
    """A run with non-default pcc settings (``--recompute all``) adds rows named by them, beside the defaults'."""
    row = {"name": "hclt8", "batch": 64, "nodes": 10, "edges": 100, "convert_s": 0.1,
           "compile_s": {"pyjuice": 2.0, "pcc": 1.5}, "step_ms": {"pyjuice": 4.0, "pcc": 3.0},
           "fwd_ms": {"pyjuice": 1.0, "pcc": 1.0}, "peak_mib": {"pyjuice": 120.0, "pcc": 70.0},
           "ll_err": 1e-6, "em_err": 2e-5}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "settings": {"recompute": "all"}}) + "\n")
    out = _report(path).splitlines()
    assert len(out) == 4 and out[2].startswith("| hclt8 | 64 |") and out[3].startswith("| hclt8 [recompute=all] | 64 |")


def test_report_counts_a_setting_that_became_the_default_as_default(tmp_path):
    """A row recorded with a then non-default setting equal to pcc's default now (``param_stages``) replaces
    the earlier default row instead of standing beside it; other settings still keep their rows apart."""
    from pcc.backend import codegen
    row = {"name": "hclt8", "batch": 64, "nodes": 10, "edges": 100, "convert_s": 0.1,
           "compile_s": {"pyjuice": 2.0, "pcc": 1.5}, "step_ms": {"pyjuice": 4.0, "pcc": 3.0},
           "fwd_ms": {"pyjuice": 1.0, "pcc": 1.0}, "peak_mib": {"pyjuice": 120.0, "pcc": 70.0},
           "ll_err": 1e-6, "em_err": 2e-5}
    later = {**row, "step_ms": {"pyjuice": 4.0, "pcc": 1.0}, "settings": {"param_stages": codegen.PARAM_STAGES}}
    other = {**row, "settings": {"param_stages": codegen.PARAM_STAGES + 1}}
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (row, later, other)) + "\n")
    out = _report(path).splitlines()
    assert len(out) == 4 and out[2].startswith("| hclt8 | 64 |") and "(0.25)" in out[2]
    assert out[3].startswith(f"| hclt8 [param_stages={codegen.PARAM_STAGES + 1}] | 64 |")
