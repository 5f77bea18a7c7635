"""Property tests on random circuits (hypothesis): passes keep the distribution, IR text round-trips."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from randgen import all_assignments, random_circuit, random_inputs

from pcc.ir import log_likelihood, parse_text, scopes, to_text, verify
from pcc.passes import DEFAULT_PIPELINE, REGISTRY, parse_pipeline, run_pipeline

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _circuit(data, **kw):
    return random_circuit(lambda lo, hi: data.draw(st.integers(lo, hi)), **kw)


@SETTINGS
@given(st.data())
def test_random_circuits_verify_and_round_trip(data):
    c = _circuit(data)
    verify(c)
    text = to_text(c)
    assert to_text(parse_text(text)) == text


@SETTINGS
@given(st.data(), st.sampled_from(sorted(REGISTRY) + [DEFAULT_PIPELINE]))
def test_passes_preserve_log_likelihood(data, pipeline):
    c = _circuit(data)
    x, missing = random_inputs(c, np.random.default_rng(data.draw(st.integers(0, 2**31))))
    before = log_likelihood(c, x, missing)
    after = run_pipeline(c, parse_pipeline(pipeline))
    np.testing.assert_allclose(log_likelihood(after, x, missing), before, rtol=0, atol=1e-9)
    text = to_text(after)
    assert to_text(parse_text(text)) == text


@SETTINGS
@given(st.data())
def test_reference_interpreter_normalises(data):
    """Summing p(x) over every assignment gives 1 (the interpreter's own sanity check)."""
    c = _circuit(data, real_vars=False)
    scope = scopes(c)[c.root]
    outside = np.prod([v.domain.categories for i, v in enumerate(c.variables) if not scope >> i & 1])
    total = np.exp(log_likelihood(c, all_assignments(c))).sum() / outside
    assert abs(total - 1) < 1e-9


@SETTINGS
@given(st.data())
def test_missing_equals_summing_out(data):
    """Marginalising a variable by the mask equals summing it out by enumeration."""
    c = _circuit(data, real_vars=False)
    x = all_assignments(c)
    v = data.draw(st.integers(0, len(c.variables) - 1))
    missing = np.zeros_like(x, dtype=bool)
    missing[:, v] = True
    marg = np.exp(log_likelihood(c, x, missing))
    joint = np.exp(log_likelihood(c, x))
    key = np.delete(x, v, axis=1)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    summed = np.bincount(inv.ravel(), weights=joint)[inv.ravel()]
    if scopes(c)[c.root] >> v & 1:
        np.testing.assert_allclose(marg, summed, rtol=1e-9, atol=1e-12)
    else:  # a variable outside the root's scope: the mask changes nothing
        np.testing.assert_allclose(marg, joint, rtol=1e-9, atol=1e-12)
