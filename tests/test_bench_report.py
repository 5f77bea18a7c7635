"""The PyJuice comparison harness prints its table from recorded rows without a GPU."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_report_merges_recorded_runs():
    runs = sorted((ROOT / "bench" / "results").glob("vs_pyjuice_run*_h100.jsonl"))
    assert runs, "recorded harness rows are part of the repository"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "vs_pyjuice.py"), "--report", *map(str, runs)],
                         capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("| hclt64 |")]
    assert len(lines) == 1  # a later run's row replaces an earlier one
    assert "(1.35)" in lines[0] and "2,216,000" in lines[0]
