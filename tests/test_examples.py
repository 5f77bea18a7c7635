"""Every example parses, verifies, round-trips through .pcir and keeps its log-likelihoods under passes."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES
from randgen import random_inputs

from pcc.api import read_ir, write_ir
from pcc.frontend import load_file
from pcc.ir import log_likelihood, parse_text, to_text, verify
from pcc.ir.params import randomize
from pcc.passes import DEFAULT_PIPELINE, REGISTRY, parse_pipeline, run_pipeline

NAMES = [p.stem for p in EXAMPLES]
PIPELINES = sorted(REGISTRY) + [DEFAULT_PIPELINE]


def test_examples_present():
    assert {"mixture", "hmm", "pd8x8", "reuse"} <= set(NAMES)


@pytest.fixture(params=EXAMPLES, ids=NAMES)
def example(request):
    return load_file(request.param)


def test_verifies_and_round_trips(example, tmp_path):
    verify(example)
    text = to_text(example)
    again = parse_text(text)
    assert to_text(again) == text  # print -> parse -> print is a fixed point
    write_ir(example, tmp_path / "m.pcir")
    assert to_text(read_ir(tmp_path / "m.pcir")) == text


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("seed", [0, 1])
def test_passes_preserve_log_likelihood(example, pipeline, seed):
    randomize(example, seed, zero_fraction=0.1 * seed)
    x, missing = random_inputs(example, np.random.default_rng(seed), batch=24)
    before = log_likelihood(example, x, missing)
    after_circuit = run_pipeline(example, parse_pipeline(pipeline))
    np.testing.assert_allclose(log_likelihood(after_circuit, x, missing), before, rtol=0, atol=1e-9)
    text = to_text(after_circuit)
    assert to_text(parse_text(text)) == text


def test_mixture_values_by_hand():
    c = load_file(next(p for p in EXAMPLES if p.stem == "mixture"))
    x = np.array([[1.0, 0.0]])
    a, b, w = [0.1, 0.5, 0.9], [0.8, 0.5, 0.2], [0.2, 0.3, 0.5]
    expected = sum(wk * ak * (1 - bk) for wk, ak, bk in zip(w, a, b))
    assert log_likelihood(c, x)[0] == pytest.approx(np.log(expected), abs=1e-12)


def test_hmm_is_tied_and_long():
    c = load_file(next(p for p in EXAMPLES if p.stem == "hmm"))
    assert len(c.variables) == 128
    sums = [b for b in c.blocks if b.kind == "sum" and b.n == 16]
    inputs = [b for b in c.blocks if b.kind == "input"]
    assert len({b.params for b in sums}) == 1 and len(sums) == 127  # one transition tensor
    assert len({b.params for b in inputs}) == 1 and len(inputs) == 128  # one emission tensor
