"""Files: no pickle anywhere, and a killed writer never damages the previous checkpoint."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from conftest import ROOT

from pcc.backend.runtime import load_checkpoint

MODEL = """
var X[16] : binary
for v in 0..16 { leaf[v] = input(X[v], bernoulli, n=64) }
p = prod(leaf[0..16])
top = sum(p, n=1)
root top
"""


def test_no_pickle_in_the_package():
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.|torch\.load\(|allow_pickle\s*=\s*True|\bdill\b|cloudpickle")
    offenders = [f"{p}:{i}" for folder in ("pcc", "ir", "frontend", "passes", "backend")
                 for p in (ROOT / folder).rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_killed_while_writing_leaves_previous_checkpoint_loadable(tmp_path):
    model = tmp_path / "m.pc"
    model.write_text(MODEL)
    data = tmp_path / "d.csv"
    data.write_text("\n".join(",".join(str((r >> v) & 1) for v in range(16)) for r in range(200)))
    ckpt = tmp_path / "m.ckpt"
    env = {**os.environ, "PCC_FAULT_SLOW_WRITE": "3"}  # every checkpoint write pauses 3 s half-way
    proc = subprocess.Popen([sys.executable, "-m", "pcc", "train", str(model), "--data", str(data), "--epochs", "5",
                             "--batch-size", "50", "--device", "cpu", "-o", str(ckpt)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline:  # epoch 1's checkpoint lands
            time.sleep(0.05)
        first = ckpt.read_bytes()
        while not list(tmp_path.glob(".m.ckpt.*.tmp")) and time.time() < deadline:  # epoch 2's write begins
            time.sleep(0.05)
        assert list(tmp_path.glob(".m.ckpt.*.tmp")), "the second checkpoint write never started"
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)  # mid-write: the temporary file holds half a checkpoint
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ckpt.read_bytes() == first  # the previous checkpoint is untouched...
    circuit, meta = load_checkpoint(ckpt)  # ...and loads
    assert meta["epochs"] == 1 and circuit.blocks
