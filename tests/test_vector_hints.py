"""The generic sum kernels' weight-alignment hint (``SumOp.walign``, the kernels' ``WALIGN``): when the plan allows
it, what the generated code passes, and that it compiles to 16-byte copies for an H100."""
from __future__ import annotations

import re

import numpy as np
import pytest
import sm90
from conftest import EXAMPLES

from pcc import optimize, parse
from pcc.backend import codegen
from pcc.backend.plan import NEG, PAD, SumOp, build_plan


def _affine_op(base: int, stride: int, children: list[int], tile_c: int) -> SumOp:
    """One parent tile of two rows over ``children`` (one child tile per ``tile_c``), weights ``base + p * stride + c``."""
    kc = len(children)
    kmax = kc // tile_c
    strided = (np.array([[base + k * tile_c for k in range(kmax)]]), np.full((1, kmax), stride), 10_000)
    return SumOp(2, tile_c, np.array([[5, 6]]), np.array([children]), strided=strided)


@pytest.mark.parametrize("base,stride,children,tile_c,expected", [
    (0, 8, [10, 11, 12, 13, 14, 15, 16, 17], 8, 4),            # aligned, no padding
    (8, 16, [10, 11, 12, 13, NEG, NEG, NEG, NEG], 8, 4),       # padding in a whole run of 4 columns
    (2, 8, [10, 11, 12, 13, 14, 15, 16, 17], 8, 1),            # a base off the 16-byte grid
    (0, 6, [10, 11, 12, 13, 14, 15, 16, 17], 8, 1),            # a stride off it
    (0, 8, [10, 11, 12, 13, 14, 15, NEG, NEG], 8, 1),          # padding splits a run: the mask varies in it
    (0, 8, [10, 11, 12, 13, 14, 15], 2, 1),                    # child tiles narrower than a vector
])
def test_walign_needs_aligned_bases_strides_and_padding_runs(base, stride, children, tile_c, expected):
    assert _affine_op(base, stride, children, tile_c).walign == expected


def test_walign_is_one_for_gathered_weights():
    op = SumOp(1, 4, np.array([[5]]), np.array([[10, 11, 12, 13]]), np.array([[[0, 7, 3, 9]]]))  # not strided
    assert op.affine is None and op.walign == 1


def _sum_ops(path):
    plan = build_plan(optimize(parse(path)))
    return plan, [op for layer in plan.layers for op in layer if isinstance(op, SumOp)]


def _launches(source: str, kernel: str) -> list[str]:
    """The lines of generated ``source`` that launch ``K.<kernel>``."""
    return [line for line in source.splitlines() if f"K.{kernel}[" in line]


def test_generated_code_passes_walign_where_the_op_allows(monkeypatch):
    """``sum_fwd`` and ``sum_bwd`` launches of hinted ops pass ``WALIGN=4``; ``sum_bwd_params`` only with
    ``WALIGN_PARAMS`` (slower with the hint on an H100); none with ``WALIGN`` off."""
    pd = next(p for p in EXAMPLES if p.stem == "pd8x8")
    plan, ops = _sum_ops(pd)
    hinted = sum(op.walign == 4 for op in ops)
    assert hinted  # PD's sums: rows of whole child tiles, bases and strides multiples of 4
    source = codegen.generate(plan)
    for kernel in ("sum_fwd", "sum_bwd"):
        assert sum("WALIGN=4" in line for line in _launches(source, kernel)) >= hinted
    assert not any("WALIGN=4" in line for line in _launches(source, "sum_bwd_params"))
    monkeypatch.setattr(codegen, "WALIGN_PARAMS", 1)
    assert sum("WALIGN=4" in line for line in _launches(codegen.generate(plan), "sum_bwd_params")) >= hinted
    monkeypatch.setattr(codegen, "WALIGN", 0)
    assert "WALIGN=4" not in codegen.generate(plan)  # the A/B setting: no hint


def test_hinted_ops_satisfy_the_hint():
    """Whatever the plans, a hinted op's every base and stride is a multiple of 4 and its padding fills runs."""
    for path in EXAMPLES:
        for op in _sum_ops(path)[1]:
            if op.walign == 4:
                base, stride = op.affine
                assert not (base % 4).any() and not (stride % 4).any()
                neg = (op.child_rows == NEG).reshape(-1, 4)
                assert (neg.all(axis=1) | ~neg.any(axis=1)).all()
                assert (op.out_rows != PAD).any()


def test_weight_hint_compiles_to_16_byte_copies():
    """sum_fwd compiled for an H100: the weight tile's 4-byte asynchronous copies become 16-byte ones."""
    sig = {"vals": "*fp32", "sum_w": "*fp32", "out_rows": "*i32", "child_rows": "*i32", "child_b": "*i32",
           "wids": "*i32", "wbase": "*i64", "wstride": "*i64", "B": "i32"}
    const = {"TP": 32, "TC": 64, "KC": 256, "BB": 64, "PAD": PAD, "NEG": NEG, "AFFINE": True, "PRECISION": "tf32x3",
             "STAGES": 3, "PAIR": 1, "SAME_CHILDREN": False, "FOLDED": False, "PDL": 1}
    variants = [{**const, "WALIGN": align} for align in (1, 4)]
    counts = []
    for text in sm90.ptx("pcc.backend.kernels", "sum_fwd", sig, variants, ["vals", "sum_w", "B"]):
        sizes = re.findall(r"cp\.async\.c[ag]\.shared\.global \[[^\]]*\], \[[^\]]*\], (0x[0-9a-f]+)", text)
        counts.append((sizes.count("0x4"), sizes.count("0x10")))
    (small1, wide1), (small4, wide4) = counts
    assert wide4 > wide1 and small4 < small1  # the weight tile's copies: 4 bytes each before, 16 with the hint
