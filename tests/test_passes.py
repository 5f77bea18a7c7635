"""The pass manager: pipelines, options, verification after each pass, failure reports."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import EXAMPLES
from randgen import random_circuits

import pcc
from pcc.frontend import load_file, load_text
from pcc.ir import UserError
from pcc.passes import REGISTRY, Options, Pass, PassFailure, parse_pipeline, run_pipeline
from pcc.passes.layerize import assign_layers
from pcc.passes.manager import PassError, register


def test_pipeline_parsing_with_options():
    passes = parse_pipeline("dce, layerize{max-padding=2.5}, collapse-chains{max-growth=3,shared=true}")
    assert [p.name for p in passes] == ["dce", "layerize", "collapse-chains"]
    assert passes[1].max_padding == 2.5 and passes[2].max_growth == 3.0 and passes[2].shared is True
    assert passes[1].spec() == "layerize{max-padding=2.5,max-prod-padding=4.0}"


def test_every_pass_has_a_contract_docstring():
    import sys
    for cls in [c for c in REGISTRY.values() if not c.name.startswith("test-")]:
        module_doc = sys.modules[cls.__module__].__doc__ or ""
        assert "Pre" in module_doc and "Post" in module_doc, cls.name
        assert cls.__doc__


@dataclass
class _Breaker(Pass):
    """Test-only: gives the root three nodes (invalid IR)."""

    name = "test-break"

    def run(self, circuit):
        circuit.blocks[circuit.root].n = 3
        return circuit


@dataclass
class _Refuser(Pass):
    """Test-only: raises a PassError pointing at block 1."""

    name = "test-refuse"

    def run(self, circuit):
        raise PassError("cannot handle this block", block=1)


@pytest.fixture(autouse=True)
def test_passes():
    """Register the test-only passes for one test, then remove them again."""
    for cls in (_Breaker, _Refuser):
        register(cls)
    yield
    for cls in (_Breaker, _Refuser):
        REGISTRY.pop(cls.name)


def test_invalid_output_is_caught_after_the_pass():
    c = load_file(next(p for p in EXAMPLES if p.stem == "mixture"))
    with pytest.raises(PassFailure) as e:
        run_pipeline(c, parse_pipeline("test-break"))
    msg = str(e.value)
    assert msg.startswith("pass 'test-break' failed: it produced invalid IR")
    assert "the root must be a single node" in msg and "> %3 = sum(%2) n=3" in msg
    run_pipeline(c, parse_pipeline("test-break"), Options(verify_each=False))  # opt-out: no check


def test_verifying_at_the_end_still_names_the_pass():
    """``verify_end`` (``pcc.compile``'s way) verifies once; a failure runs the passes again, verifying each."""
    path = next(p for p in EXAMPLES if p.stem == "mixture")
    c = load_file(path)
    with pytest.raises(PassFailure) as e:
        run_pipeline(c, parse_pipeline("dce,test-break,dce"), Options(verify_each=False, verify_end=True))
    assert str(e.value).startswith("pass 'test-break' failed: it produced invalid IR")
    assert "the root must be a single node" in str(e.value)
    assert c.blocks[c.root].n == 1  # the input is untouched: each pass ran on a copy
    with pytest.raises(PassFailure, match="^pass 'test-break' failed: it produced invalid IR"):
        pcc.compile(path, device="cpu", executor="torch", pipeline="test-break")
    assert run_pipeline(c, parse_pipeline("dce"), Options(verify_each=False, verify_end=True)).blocks


def test_pass_error_names_pass_and_block():
    c = load_file(next(p for p in EXAMPLES if p.stem == "mixture"))
    with pytest.raises(PassFailure) as e:
        run_pipeline(c, parse_pipeline("test-refuse"))
    assert "pass 'test-refuse' failed: error: block %1 (b): cannot handle this block" in str(e.value)
    assert "  > %1 = input X[1] bernoulli" in str(e.value)


def test_unknown_pass_is_user_error():
    with pytest.raises(UserError):
        parse_pipeline("no-such-pass")


def test_layer_invariants_on_random_circuits():
    for c in random_circuits(3, 100):
        layers = assign_layers(c)
        for i, b in enumerate(c.blocks):
            assert all(layers[k] < layers[i] for k in b.children)
            assert (layers[i] == 0) == (b.kind == "input")
            if b.kind != "input":
                assert layers[i] % 2 == (1 if b.kind == "prod" else 0)


def _groups(c) -> dict:
    groups = {}
    for b in c.blocks:
        groups.setdefault((b.attrs["layer"], b.kind, b.attrs["group"]), []).append(b)
    return groups


@pytest.mark.parametrize("sum_pad,prod_pad", [(1.25, 1.25), (1.25, 4.0), (2.0, 1.0)])
def test_layerize_padding_bound(sum_pad, prod_pad):
    """Sums keep ``max-padding``, products ``max-prod-padding`` (they pad cheaply: a padded child is a ZERO row)."""
    from pcc.passes.layerize import fan_in
    spec = f"layerize{{max-padding={sum_pad},max-prod-padding={prod_pad}}}"
    for c in [load_file(p) for p in EXAMPLES] + random_circuits(5, 20):
        c = run_pipeline(c, parse_pipeline(spec))
        for (_, kind, _), members in _groups(c).items():
            fans = [fan_in(c, b) for b in members]
            real = sum(f * b.n for f, b in zip(fans, members))
            if real:
                bound = prod_pad if kind == "prod" else sum_pad
                assert max(fans) * sum(b.n for b in members) <= bound * real + 1e-9


def test_product_groups_merge_under_the_product_padding():
    """Products of arity 2 and 5 in one layer: two groups at 1.25 (5 x 8 nodes > 1.25 x 28 edges), one at 4."""
    src = """
var X[7] : binary
for i in 0..7 {
    a[i] = input(X[i], bernoulli, n=4)
}
p = prod(a[0], a[1])
q = prod(a[2], a[3], a[4], a[5], a[6])
sp = sum(p, n=1)
sq = sum(q, n=1)
r = prod(sp, sq)
root r
"""
    counts = {}
    for pad in (1.25, 4.0):
        c = run_pipeline(load_text(src, "t.pc"), parse_pipeline(f"layerize{{max-prod-padding={pad}}}"))
        counts[pad] = len({k for k in _groups(c) if k[:2] == (1, "prod")})  # p and q's layer (r is higher)
    assert counts == {1.25: 2, 4.0: 1}
