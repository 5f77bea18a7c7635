"""One arena for a training step's values and flows (pcc.backend.arena): no arena row holds a value and a flow
alive at once, it holds fewer rows than two buffers, and EM steps are bitwise those of two buffers, with the
arena starting as NaN (a row read before its owner writes or clears it would poison the step)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from randgen import random_inputs
from test_backend import CIRCUITS, PAIRED, _dense_everywhere

from pcc import optimize, parse
from pcc.frontend import load_text
from pcc.structures.ratspn import ratspn_source
from pcc.backend import arena
from pcc.backend.arena import joint_maps
from pcc.backend.flowmap import compact_flows, flow_intervals, forward_order
from pcc.backend.plan import FIRST_ROW, build_plan
from pcc.backend.runtime import CircuitModel
from pcc.backend.triton_exec import TritonExecutor
from pcc.backend.valuemap import again_rows, value_intervals, value_map

CASES = CIRCUITS[:16] + PAIRED[:1]  # the examples (hmm, mixture, pd8x8, reuse), 12 random circuits, an HMM of 128
IDS = [c[0] for c in CASES]
# the EM steps in Triton's interpreter: the hmm example took 70 of their 170 s; hmm128 is an HMM too
STEPPED = [c for c in CASES if c[0] != "hmm"]
RAT = [("ratspn", lambda: load_text(ratspn_source(8, 2, 2, 3, num_cats=4), "r.pc"))]


def _owners(plan) -> list[tuple[int, int, int]]:
    """``(arena row, start, end)`` of every value and flow lifetime under :func:`joint_maps` (times as there)."""
    vmap, fmap = joint_maps(plan)
    values, flows = value_intervals(plan, True), flow_intervals(plan)
    fwd = len(forward_order(plan))
    second = vmap.back_rows[again_rows(plan, values.again)]  # the rows of the ops computed again, second lives
    value_rows = np.concatenate([vmap.rows, second])[values.node]
    out = list(zip(value_rows, values.start, values.end))
    out += list(zip(fmap.rows[flows.node] + FIRST_ROW, np.maximum(flows.start, -1) + fwd, flows.end + fwd))
    return [(int(r), int(s), int(e)) for r, s, e in out]


@pytest.mark.parametrize("name,make", CASES, ids=IDS)
def test_no_arena_row_holds_two_live_owners(name, make):
    """Values and flows placed in one arena: per arena row, the lifetimes of its owners are disjoint; the
    reserved rows of both buffers (arena rows 0-5) are nobody's; and the arena is no larger than two buffers."""
    plan = build_plan(optimize(make()))
    owners = _owners(plan)
    assert all(r >= 2 * FIRST_ROW for r, _, _ in owners)
    by_row: dict[int, list[tuple[int, int]]] = {}
    for r, s, e in owners:
        by_row.setdefault(r, []).append((s, e))
    for spans in by_row.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
    vmap, fmap = joint_maps(plan)
    assert fmap.size == vmap.size - FIRST_ROW
    assert vmap.size <= value_map(plan, "train").size + compact_flows(plan).size


def test_rat_spn_like_circuits_save_rows():
    """The PD example's arena holds fewer rows than its two buffers would (values dead by the time flows peak)."""
    plan = build_plan(optimize(parse("examples/pd8x8.pc")))
    vmap, _ = joint_maps(plan)
    assert vmap.size < value_map(plan, "train").size + compact_flows(plan).size - FIRST_ROW


def _garbage(rows: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((rows, like.shape[1]), float("nan"), dtype=like.dtype, device=like.device)


@pytest.mark.parametrize("dense", [False, True], ids=["generic", "dense"])
@pytest.mark.parametrize("name,make", STEPPED + RAT, ids=[c[0] for c in STEPPED + RAT])
def test_em_steps_in_one_arena_are_bitwise_those_of_two_buffers(name, make, dense, monkeypatch):
    """Two EM steps and the log-likelihoods they return, with values and flows in one NaN-filled arena and in two
    NaN-filled buffers: exactly equal, and finite where the circuit's log-likelihood is."""
    if dense:
        _dense_everywhere(monkeypatch)
    monkeypatch.setattr(TritonExecutor, "_uninitialised", staticmethod(_garbage))
    c = make()
    x, m = random_inputs(c, np.random.default_rng(5), batch=10)
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m)
    models = []
    for on in (True, False):
        monkeypatch.setattr(arena, "JOINT", on)
        models.append(CircuitModel(optimize(c), "cpu", executor="triton"))
    assert models[0].executor.joint and not models[1].executor.joint
    for _ in range(2):
        lls = [model.em_step(xt, mt, step_size=0.5, pseudocount=0.1) for model in models]
        assert torch.equal(lls[0], lls[1])
        assert not torch.isnan(lls[0]).any()
    for a, b in zip(models[0].params.tensors().values(), models[1].params.tensors().values()):
        assert torch.equal(a, b) and not torch.isnan(a).any()


def _lifetimes(plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(arena rows, starts, ends)`` of every value and flow lifetime (as :func:`_owners`, as arrays)."""
    owners = np.array(_owners(plan), dtype=np.int64).reshape(-1, 3)
    return owners[:, 0], owners[:, 1], owners[:, 2]


@pytest.mark.parametrize("name,make", CASES + RAT, ids=IDS + ["ratspn"])
def test_dense_forward_scratch_lies_in_rows_free_while_its_op_runs(name, make, monkeypatch):
    """Each dense op's ``spare`` row starts ``G * C`` arena rows that no value or flow holds while the op runs in
    the forward, where they fit in the arena (else the op takes new memory); the EM steps above check the
    numbers with the arena NaN-filled. PD's scratch fits above the rows in use, RAT-SPN's among them."""
    _dense_everywhere(monkeypatch)
    plan = build_plan(optimize(make()))
    vmap, _ = joint_maps(plan)
    rows, start, end = _lifetimes(plan)
    fits = 0
    for t, (key, op) in enumerate(forward_order(plan)):
        if key in vmap.spare:
            at, need = vmap.spare[key], op.dense.groups * op.dense.C
            assert at >= 2 * FIRST_ROW
            if at + need <= vmap.size:
                fits += 1
                live = (start <= t) & (end >= t)
                assert not ((rows[live] >= at) & (rows[live] < at + need)).any()
    if name in ("pd8x8", "ratspn"):
        assert fits
    ex = TritonExecutor(plan, "cpu")
    assert all(ex.tv["train"][k + ".spare"] == at for k, at in vmap.spare.items())
    assert not any(k.endswith(".spare") for k in ex.tv["root"])


def test_the_rows_tool_reports_both_forms():
    """``bench/arena_rows.py`` (no GPU): two buffers' rows against the arena's, and the dense scratch's place."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "bench" / "arena_rows.py"), str(root / "examples" / "pd8x8.pc"),
                          "--batch", "512"], capture_output=True, text=True, check=True, cwd=root).stdout
    plan = build_plan(optimize(parse("examples/pd8x8.pc")))
    arena_rows = joint_maps(plan)[0].size
    assert f"one arena {arena_rows:,} rows" in out
    assert f"= {value_map(plan, 'train').size + compact_flows(plan).size:,} rows" in out
