"""Golden IR tests (FileCheck style): each pass's printed output on a small input."""
from __future__ import annotations

import numpy as np
from filecheck import filecheck

from pcc.frontend import load_text
from pcc.ir import log_likelihood, to_text
from pcc.passes import parse_pipeline, run_pipeline

SUM_CHAIN = """
var X[2] : binary
a = input(X[0], bernoulli, n=2, params=[0.25, 0.5])
b = input(X[1], bernoulli, n=2, params=[0.75, 0.5])
p = prod(a, b)
inner = sum(p, n=2, params=[[0.5, 0.5], [0.25, 0.75]])
outer = sum(inner, n=1, params=[[0.5, 0.5]])
root outer
"""

PROD_CHAIN = """
var X[3] : binary
a = input(X[0], bernoulli, n=2)
b = input(X[1], bernoulli, n=2)
c = input(X[2], bernoulli, n=2)
p = prod(a, b)
q = prod(p, c)
s = sum(q, n=1)
root s
"""


def opt(src: str, pipeline: str) -> str:
    return to_text(run_pipeline(load_text(src, "golden.pc"), parse_pipeline(pipeline)))


def test_collapse_sum_of_sum_into_one_sum():
    out = opt(SUM_CHAIN, "collapse-chains")
    filecheck(out, """
        CHECK: tensor @outer.w.1 : f64[1, 2] = [[0.375, 0.625]]
        CHECK: %2 = prod(%0, %1) n=2 name="p"
        CHECK-NOT: name="inner"
        CHECK-NEXT: %3 = sum(%2) n=1 params=@outer.w.1 name="outer"
        CHECK-NEXT: root %3
    """)


def test_collapse_prod_of_prod_into_one_product():
    out = opt(PROD_CHAIN, "collapse-chains")
    filecheck(out, """
        CHECK: %2 = input X[2] bernoulli
        CHECK-NOT: name="p"
        CHECK-NEXT: %3 = prod(%0, %1, %2) n=2 name="q"
        CHECK-NEXT: %4 = sum(%3) n=1
    """)


def test_collapse_keeps_sparse_pattern_and_values():
    src = """
    var X[2] : binary
    a = input(X[0], categorical, n=4)
    b = input(X[1], categorical, n=4)
    p = prod(a, b)
    inner = sum(p, n=4, block=2, tiles=[[0, 0], [1, 1]])
    outer = sum(inner, n=2, block=2, tiles=[[0, 1]])
    root_ = sum(outer, n=1)
    root root_
    """
    c = load_text(src, "golden.pc")
    out = run_pipeline(c, parse_pipeline("collapse-chains{max-growth=4}"))
    filecheck(to_text(out), """
        CHECK: %2 = prod(%0, %1) n=4 name="p"
        CHECK-NEXT: %3 = sum(%2) n=1
    """)
    x = np.array([[a, b] for a in range(2) for b in range(2)], dtype=float)
    np.testing.assert_allclose(log_likelihood(out, x), log_likelihood(c, x), atol=1e-12)


def test_collapse_respects_growth_limit():
    src = """
    var X[2] : binary
    a = input(X[0], categorical, n=8)
    b = input(X[1], categorical, n=8)
    p = prod(a, b)
    narrow = sum(p, n=1)
    wide = sum(narrow, n=8)
    top = sum(wide, n=1)
    root top
    """
    out = opt(src, "collapse-chains{max-growth=1.0}")
    filecheck(out, """
        CHECK: name="narrow"
        CHECK: %4 = sum(%3) n=1
    """)


def test_dce_and_dedupe():
    src = """
    var X[2] : binary
    a = input(X[0], bernoulli, n=2)
    a2 = input(X[0], bernoulli, n=2, tie=a)
    unused = input(X[1], bernoulli, n=5)
    b = input(X[1], bernoulli, n=2)
    p = prod(a, b)
    q = prod(a2, b)
    s = sum(p, q, n=1)
    root s
    """
    filecheck(opt(src, "dce"), """
        CHECK: %1 = input X[0] bernoulli n=2 params=@a.p name="a2"
        CHECK-NOT: unused
        CHECK: root %5
    """)
    filecheck(opt(src, "dedupe"), """
        CHECK: %0 = input X[0] bernoulli n=2 params=@a.p name="a"
        CHECK-NOT: name="a2"
        CHECK: %2 = prod(%0, %1) n=2 name="p"
        CHECK-NOT: name="q"
        CHECK: %3 = sum(%2, %2) n=1
    """)


def test_layerize_places_products_below_consumers():
    src = """
    var X[3] : binary
    a = input(X[0], bernoulli, n=2)
    b = input(X[1], bernoulli, n=2)
    c = input(X[2], bernoulli, n=2)
    ab = prod(a, b)
    s_ab = sum(ab, n=2)
    late = prod(s_ab, c)
    early = prod(a, b, c)
    top = sum(late, early, n=1)
    root top
    """
    filecheck(opt(src, "layerize"), """
        CHECK: attributes {layered=1, layers=5}
        CHECK: name="ab" {group=0, layer=1}
        CHECK: name="s_ab" {group=0, layer=2}
        CHECK: name="late" {group=0, layer=3}
        CHECK: name="early" {group=0, layer=3}
        CHECK: name="top" {group=0, layer=4}
    """)


def test_block_edges_annotates_tiles():
    src = """
    var X : categorical(4)
    a = input(X, categorical, n=64)
    s = sum(a, n=48)
    t = sum(s, n=1)
    root t
    """
    filecheck(opt(src, "block-edges"), """
        CHECK: name="s" {fill=1.0, tile_c=64, tile_p=16, tiles=3}
        CHECK: name="t" {fill=0.0625, tile_c=16, tile_p=16, tiles=3}
    """)
