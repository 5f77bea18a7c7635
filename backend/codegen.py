"""Codegen: a plan's specialised kernel launches as a readable Python module.

The generated module defines ``forward`` and ``backward``: one line per op of every layer, naming the
kernel template of :mod:`pcc.backend.kernels` and the compile-time constants it is specialised with
(distribution, categories, fan-in, tile sizes), with the op's index tables passed in ``t``; ops whose code
differs only in their key call one shared helper instead (:class:`_Outliner`). The Triton executor runs
exactly this code; ``pcc compile -o DIR`` writes it to ``DIR/kernels.py``.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from pcc import __version__

from .flowmap import FlowMap, compact_flows, forward_order, read_rows
from .folding import candidates, folded_mask, pair_rows
from .fusion import Fused, split_children, state
from .valuemap import ValueMap, by_first_reader, schedule
from .plan import NEG, PAD, ZERO, Dense, InputOp, Plan, ProdOp, SumOp

DISTS = {"categorical": 0, "bernoulli": 1, "gaussian": 2}
_THETA = {"categorical": "p.cat[{k}]", "bernoulli": "p.bern", "gaussian": "p.gauss"}
# tl.dot inputs: three tf32 tensor-core products per fp32 product ("tf32x3") keep fp32 accuracy (tests compare
# against float64) at tensor-core speed; "ieee" (plain fp32 FMA) and "tf32" (one product, ~1e-3) also work
DOT_PRECISION = "tf32x3"
# bf16: operands rounded to bfloat16 for the products (a reduced-precision mode, tested for accuracy); bf16x3:
# each operand split into two bfloat16 parts, three bf16 products (~1e-5, half of tf32x3's tensor-core time)
PRECISIONS = ("tf32x3", "ieee", "tf32", "bf16", "bf16x3")
# categorical-backward tiles: at most CAT_ROWS rows (one variable per tile) x CAT_BATCH samples; 64 x 32 was
# fastest on an H100 (bench/cat_sweep.py)
CAT_ROWS, CAT_BATCH = 64, 32
# a categorical-count launch of fewer than CAT_FILL programs splits its batch (at least CAT_SPLIT_MIN samples a
# range) until it has that many: an input piece (plan.INPUT_CHUNKS) otherwise loops over a whole large batch in
# few programs. On an H100 (bench/results/cat_fill_2026-12-05_h100.txt, step with CUDA graph, fill 0 / 528 /
# 1056): HCLT 32 at 8192 13.14 / 12.90 / 12.45 ms, HCLT 64 at 8192 20.26 / 20.02 / 19.65, HMM 256 at 8192
# 19.61 / 18.62 / 19.31. 0: off
CAT_FILL, CAT_SPLIT_MIN = 1056, 512
# categorical-count tiles of fewer rows than CAT_TRANSPOSED_BELOW put the one-hot first in their products
# (kernels.input_bwd_cat's TRANS: 64 category rows, where Hopper's warpgroup products need 64). On an H100
# (bench/results/cat_transposed_2026-12-05_h100.txt, step with CUDA graph, 0 / 64): HCLT 32 at 8192 12.45 /
# 10.88 ms (counts 4.14 / 2.49), at 512 1.665 / 1.559. Tiles of 64 rows or more are unchanged. 0: never
CAT_TRANSPOSED_BELOW = 64
# software-pipeline depth of the loops over the batch in the categorical counts (kernels.input_bwd_cat) and the
# parameter flows (kernels.sum_bwd_params): 1 loads each batch block after the last one's products, as the
# while loops before them did; more overlaps the next blocks' loads with this one's products. On an H100
# (bench/results/stages_skip_2026-12-05_h100.txt, step at 8192, cat/param stages 1/1, 1/3, 3/1): HCLT 32
# 10.91 / 10.84 / 11.78 ms, HCLT 64 19.72 / 19.68 / 22.00, PD 32 24.44 / 23.52 / 25.35
CAT_STAGES, PARAM_STAGES = 1, 3
# products' forward and gathered backward skip their padding slots (ZERO's and PAD's rows, all zeros) instead of
# reading them: PD 32's gathers are 394,432 slots for 199,936 parents. Those reads hit L2: on an H100 PD 32's
# step at 8192 did not move (24.40 / 24.44 ms off / on, same file as above); kept, as it reads less
SKIP_PADDING = True
FILL = 528  # programs that keep an H100's 132 SMs busy (4 each); fewer only under-fill smaller GPUs
# sum launches take smaller batch blocks (down to 16) while their programs stay within one wave (SUM_FILL; the
# forward kernel's 4-stage pipeline fits one program per SM), parameter-flow launches within two (PARAM_FILL),
# which also lets them split the batch: HMM-256 step 14.5 -> 10.9 ms on an H100 (bench/fill_sweep.py)
SUM_FILL = 132
PARAM_FILL = 264
# a parameter-flow launch with fewer programs than SPLIT_BELOW (an H100's SMs) splits the batch over programs
# (one atomic per edge per split) up to FILL programs and SPLIT_MAX splits, at least SPLIT_BLOCKS batch blocks
# per split. On an H100 (bench/param_sweep.py) this took HMM-256 steps at batch 512 from 10.1 to 8.6 ms,
# HCLT-64 5.04 -> 4.32, PD-32 2.56 -> 2.32, and left HMM-256 at 8192 as it was (32.6); splitting launches
# that already fill the GPU slowed HMM-1024 by 12%, splitting without a cap HMM-256 at 8192 by 10%
SPLIT_BLOCKS, SPLIT_MAX, SPLIT_BELOW = 2, 16, 132
# sum ops with at least SCALE_KMAX child tiles per parent tile precompute G = F exp(s - v) once in training steps
SCALE_KMAX = 2
# 1: the generic sum kernels load weight rows as 16-byte vectors where SumOp.walign allows (an alignment hint,
# as the dense kernels' WALIGN); 0: one 4-byte load per weight, as before (kept for A/B runs)
WALIGN = 1
# 1: sum_bwd_params takes that hint too. On an H100 (docs/benchmarks.md, twenty-fourth round; profile_step.py
# --walign 1,0, batch 512) the hint sped up sum_fwd (PD 128 1.601 -> 1.479 ms a step, PD 64 0.560 -> 0.521,
# HCLT 128 0.453 -> 0.406) and left sum_bwd about even (1.937 -> 1.967, 0.570 -> 0.564, 0.312 -> 0.294), but
# slowed sum_bwd_params (0.884 -> 0.892, 0.368 -> 0.382, HCLT 128 0.298 -> 0.385): 0, its loads stay 4-byte
WALIGN_PARAMS = 0
# pipeline depth of the forward loop over child tiles: 4 at full batch blocks, 2 at shrunk ones (bench/fill_sweep.py)
FWD_STAGES = (4, 2)
# dense sums over at least PAIR_MIN_CHILDREN children run two parent tiles per forward program (128 rows)
# when that still gives PAIR_FILL programs: on an H100 (bench/fwd_tile_sweep.py, tf32x3) 4096 x 4096 at batch
# 512 852 -> 663 us, 1024 x 1024 at 4096 416 -> 359 us; 1024 x 1024 at 512 (64 paired programs) 91 -> 161 us
PAIR_MIN_CHILDREN, PAIR_FILL = 1024, 256
# the backward of those sums reads two parent tiles per iteration (sum_bwd's PAIR; sum_scale's shift per pair)
# where a child tile has at least BWD_PAIR_USES parent tiles (beyond kernels.UNROLL_USES, a runtime loop): on
# an H100 (bench/results/bwd_pairs_probe_2026-11-25_h100.txt) HMM 4096 at 512 sum_bwd 148 -> 126 ms; HMM 1024's
# 16 (unrolled) uses got slower paired (77 -> 90 ms at 4096), so they stay single
BWD_PAIRS, BWD_PAIR_USES = True, 32
# dense sums (SumOp.dense) run as matrix products with one shift per sample (pcc.backend.dense_kernels) from the
# batch size on at which edges x batch reach DENSE_MIN_WORK: on an H100 (runs 39-42) HMM 256 at 512 (3.4e7) took
# 5.3 ms generic and 7.1 dense, at 8192 (5.4e8) 24.1 and 18.6; HMM 1024 at 512 (5.4e8) 26-30 and 15.1. Tiles (BM, BN, BK, warps, stages) of the forward, child-flow and parameter-flow
# products, each for full grids and for grids under one wave (SUM_FILL programs at the full tiles; the parameter
# flows: under FILL), from bench/dense_sweep.py on an H100 (bench/results/dense_sweep_2026-11-25_h100.txt):
# 4096 x 4096 at batch 512 forward 397 us, child flows 361, parameter flows 345; 1024 x 1024 at 512 with the
# small-grid tiles 75, 86 and 72 (full tiles: 109, 101, 97), both before the operands were transposed (the
# sweep's own kernels since are the transposed ones). The shifts reduce DENSE_CHUNK rows per program.
# The forward's and child flows' small-grid tiles are 64 x 32 since the twenty-fifth round (1024 x 1024 at 512,
# transposed operands: forward 76.6 -> 65.0 us, child flows 73.1 -> 51.6 us in bench/dense_sweep.py; in HMM 1024's
# step at 512, dense_fwd 4.51 -> 3.30 ms, bench/results/twentyfifth_round_2026-12-07_h100.txt): the old ones gave
# that shape 64 and 128 programs for 132 SMs, these 256.
DENSE_MIN_WORK = 1 << 28
DENSE_MAX_BATCH = 1 << 16  # ops that would need a larger batch for the dense kernels are generated without them
DENSE_FWD = {"full": (128, 64, 32, 4, 4), "small": (64, 32, 64, 4, 3)}
DENSE_BWD = {"full": (128, 64, 32, 4, 4), "small": (64, 32, 64, 4, 3)}
DENSE_PARAMS = {"full": (128, 64, 32, 4, 4), "small": (64, 64, 64, 4, 3)}
# ops of several groups (HCLT layers: short contractions, one weight block per group) at full grids take other
# tiles (bench/results/dense_sweep_groups_2026-11-25_h100.txt): forward (C >= DENSE_GROUPS_MIN_C) 512 x 512 in
# 40 groups at batch 4096 2055 -> 1504 us, 256 x 256 in 76 at 512 194 -> 134 us (but 128 x 128 at 8192 694 ->
# 936, so not there); parameter flows 512 x 512 in 76 at 512 489 -> 420 us, 128 x 128 at 8192 536 -> 528 us
DENSE_GROUPS_FWD, DENSE_GROUPS_PARAMS, DENSE_GROUPS_MIN_C = (128, 128, 32, 8, 3), (128, 64, 64, 8, 3), 256
DENSE_CHUNK, DENSE_GROUP = 64, 8
# a dense op of several groups runs its backward in chunks of groups whose scratch (G transposed, [groups, B, P])
# holds at most 1/DENSE_SCRATCH of the value buffer's rows (0: whole ops; in training the buffer is the arena of
# values and flows, pcc.backend.arena): the largest scratch sits on top of
# the values and flows at the training step's peak (HCLT 32 at 8192: 80 of 1484 MiB), and a chunk of 1/64
# still fills the GPU (HCLT's groups of 32-512 rows: 17 or more groups per chunk). Only from batch
# DENSE_SCRATCH_FROM on: below it the scratch is small and a step launch-bound (HCLT 128 at 512), and chunks
# would only add launches; every harness row from 4096 on was measured with chunks, every one below without.
# Below it, DENSE_SCRATCH_SMALL > 0 cuts chunks of at most 1/DENSE_SCRATCH_SMALL of the buffer's rows, so only a
# scratch that large is cut: at 8, RAT-SPN's largest at 512 (a quarter of its arena's rows, 32 MiB) and HCLT
# 128-512's first tree layer (15% of the rows); none of PD's. On an H100 at 512 (bench/profile_step.py, 0 / 8):
# RAT-SPN peak 251 / 241 MiB, step 1.419 / 1.453 ms; HCLT 128 peak 523 / 523, step 4.084 / 3.967. 0: whole ops
DENSE_SCRATCH, DENSE_SCRATCH_FROM, DENSE_SCRATCH_SMALL = 64, 4096, 8
# dense ops of at most DENSE_ONEPASS_P parents a group (PD 32/64's regions, HCLT 32/64's tree nodes) run their
# forward in one launch that reads the children's rows once with a running maximum (dense_kernels.dense_fwd_onepass),
# not a shift pass that copies them transposed for the product to read again; those of at most DENSE_FUSED_P
# compute the backward's shift and G in one launch (dense_shift_scale: the parents read once, not twice, and no
# chunk results to combine). On an H100 (bench/profile_step.py --dense-onepass-p A --dense-fused-p B, one process;
# bench/results/twentyseventh_round_2026-12-07_h100.txt), step ms at (A, B) = (0, 0) / (0, 128) / (128, 0) /
# (128, 128): PD 64 at 8192 44.55 / 43.06 / 41.73 / 40.51; PD 64 at 512 3.590 / 3.471 / 3.236 / 3.165. HCLT 128 at
# 512 (every group 128 parents): 4.101 / 3.790 / 4.094 / 4.145, and (64, 0) / (64, 128), the kernels of (0, 0) /
# (0, 128) there, 4.084 / 4.006 (so settings differ by up to 5% run to run): the one-pass forward does not gain at
# 128 parents (a [128, 64] running sum a program), the fused shift and G gains 0.1-0.3 ms. 0: never
DENSE_ONEPASS_P, DENSE_ONEPASS = 64, (64, 32, 4, 3)  # (BN samples, BK children, warps, stages) of its launch
DENSE_FUSED_P = 128
# mini-batch EM steps (``em_step``) of at most CAT_EM_MAX_BATCH samples update categorical tables in their
# counting launches (kernels.input_bwd_cat's EM: a tile's programs, one per block of CAT_EM_KB categories, or the
# counts' own block when 0, loop over the whole batch), where no two input rows share a parameter row
# (:func:`em_tables`): no count table of the parameters' size, no clearing it and no update pass over it.
# At 512 on an H100 (bench/profile_step.py): HCLT 64 peak 309 -> 250 MiB, step 2.260 -> 2.216 ms; HCLT 32
# 167 -> 141 MiB, 1.435 -> 1.399 ms. Larger batches keep the counts' batch splits (a program per tile and
# category block would loop over the whole batch). 0: never
CAT_EM_MAX_BATCH, CAT_EM_KB = 2048, 0
_STATS = {"categorical": "fl.cat[{k}]", "bernoulli": "fl.bern", "gaussian": "fl.gauss"}


def _pow2(n: int, lo: int, hi: int) -> int:
    """The power of two at or above ``n``, kept within ``[lo, hi]`` (a tile size for ``n`` rows)."""
    return min(hi, max(lo, 1 << (n - 1).bit_length()))


def most_splits(programs: int) -> int:
    """How many ways a parameter-flow launch of ``programs`` programs may split the batch (:data:`SPLIT_BELOW`):
    only launches that leave SMs idle split, up to :data:`FILL` programs, since every split costs atomics."""
    return max(1, min(FILL // programs, SPLIT_MAX)) if programs < SPLIT_BELOW else 1


def cat_rows(op: InputOp) -> int:
    """Rows per categorical-backward tile: :data:`CAT_ROWS`, or fewer (a power of two, at least 16) when no
    variable has that many rows, since a tile never spans two variables (HCLT-32: 32 rows per pixel)."""
    longest = int(op.var_runs()[1].max()) if op.n else 1
    return _pow2(longest, 16, CAT_ROWS)


def em_tables(plan: Plan) -> frozenset[int]:
    """Category counts ``K`` of the categorical tables that a mini-batch EM step updates in its counting launches
    (:data:`CAT_EM_MAX_BATCH`): every row of table ``K`` belongs to exactly one input row (no tied parameters, so
    a tile's programs hold its rows' whole counts, and no row is left to the update pass)."""
    prows: dict[int, list[np.ndarray]] = {}
    for _, op in forward_order(plan):
        if isinstance(op, InputOp) and op.dist == "categorical":
            prows.setdefault(op.k, []).append(op.prow)
    out = set()
    for k, parts in prows.items():
        rows, total = np.concatenate(parts), plan.cat.rows(k)
        # as many rows as the table and every one hit: each exactly once (a sort by np.unique took 0.3 s of HCLT
        # 512's compile on the development CPU)
        if len(rows) == total and np.bincount(rows, minlength=total).astype(bool).all():
            out.add(k)
    return frozenset(out)


def tables(plan: Plan) -> dict[str, object]:
    """The index arrays the generated code refers to that no value layout changes, by name
    (``L{layer}.{op}.{what}``); :func:`value_tables` gives the rest."""
    out = {}
    for key, op in forward_order(plan):
        if isinstance(op, SumOp):
            out[f"{key}.uses"] = op.child_tiles[1]
            if op.affine is None:  # affine tiles need no [T, tile_p, kmax * tile_c] index table on the device
                out[f"{key}.wids"] = op.weight_ids
            else:
                out.update({f"{key}.wbase": op.affine[0], f"{key}.wstride": op.affine[1]})
            if op.dense is not None:
                out[f"{key}.dbase"] = op.dense.bases
        elif isinstance(op, InputOp):
            out.update({f"{key}.var": op.var, f"{key}.prow": op.prow})
            if op.dist == "categorical":
                out[f"{key}.tiles"] = op.var_tiles(cat_rows(op))
    return out


def value_tables(plan: Plan, vmap: ValueMap, plan_schedule: tuple[dict, set] | None = None) -> dict[str, object]:
    """The value-row tables under ``vmap`` (:mod:`.valuemap`): ``out``/``child``/``tiles`` (a sum's parent
    rows, child rows and child tiles), ``children`` (a product's) and ``rows`` (a product or input op's own);
    ``b``-tables where products are computed again (``plan_schedule``: :func:`~.valuemap.schedule`, given by a
    caller that asks for several layouts)."""
    v, b = vmap.rows, vmap.back_rows
    _, readers = plan_schedule or schedule(plan)
    mine = {k for keys in vmap.recompute.values() for k in keys}  # what this layout computes again (<= again)
    folds, (pa, pb) = folded_mask(plan, vmap.folded), pair_rows(plan, vmap.folded)
    out = {}
    for key, op in forward_order(plan):
        if isinstance(op, SumOp):
            child = op.child_table
            out.update({f"{key}.out": v[op.out_rows], f"{key}.child": v[child], f"{key}.tiles": v[op.child_tiles[0]]})
            if key in readers:  # the backward reads recomputed children from their second rows
                out.update({f"{key}.bchild": _same(out[f"{key}.child"], b[child]),
                            f"{key}.btiles": _same(out[f"{key}.tiles"], b[op.child_tiles[0]])})
            folding = folds[read_rows(op)].any()  # rows of folded products' children are added instead (folding)
            if folding:
                out.update({f"{key}.child": v[pa[child]], f"{key}.childb": v[pb[child]]})
                if vmap.train and key in readers:  # training: the backward adds them too
                    tiles = op.child_tiles[0]
                    out.update({f"{key}.bchild": b[pa[child]], f"{key}.bchildb": b[pb[child]],
                                f"{key}.btiles": b[pa[tiles]], f"{key}.btilesb": b[pb[tiles]]})
            if op.dense is not None:  # the dense kernels' rows, [G, P] and [G, C]
                parents, children = op.dense_rows()
                out.update({f"{key}.dout": v[parents], f"{key}.dchild": v[children]})
                if key in readers:
                    out[f"{key}.bdchild"] = _same(out[f"{key}.dchild"], b[children])
                if folding:
                    out.update({f"{key}.dchild": v[pa[children]], f"{key}.dchildb": v[pb[children]]})
                    if f"{key}.bchildb" in out:
                        out.update({f"{key}.bdchild": b[pa[children]], f"{key}.bdchildb": b[pb[children]]})
            continue
        if key in vmap.fused:  # no rows here: the products that read them compute them (pcc.backend.fusion)
            continue
        again_here = key in mine  # only layouts that compute it again carry its b-tables
        if key not in vmap.folded:  # folded: no forward launch here, its readers add its children (folding)
            out[f"{key}.rows"] = v[op.start:op.start + op.n]
        if again_here:
            out[f"{key}.brows"] = b[op.start:op.start + op.n]
        if isinstance(op, ProdOp):
            out.update(_product_tables(plan, key, op, vmap, again_here))
    return out


def _product_tables(plan: Plan, key: str, op: ProdOp, vmap: ValueMap, again_here: bool) -> dict[str, object]:
    """A product op's children: ``children`` (value rows), or where the layout leaves out fused inputs
    (:mod:`.fusion`) ``vchildren`` (ZERO in the fused inputs' slots) with ``ivar``/``iprow`` (their variables,
    -1 in the other slots, and parameter rows), ``b``-prefixed for the rows computed again."""
    v, b = vmap.rows, vmap.back_rows
    split = split_children(plan, key) if vmap.fused else None
    kids, name = (op.children, "children") if split is None else (split[0], "vchildren")
    out = {} if key in vmap.folded else {f"{key}.{name}": v[kids]}
    if again_here:
        out[f"{key}.b{name}"] = b[kids]
    if split is not None:
        out.update({f"{key}.ivar": split[1], f"{key}.iprow": split[2]})
    return out


def _same(forward: np.ndarray, back: np.ndarray) -> np.ndarray:
    """``back``, or the very ``forward`` array where they are equal (a layout that computes none of these rows
    again): :func:`~.triton_exec.upload_tables` sends an array given under two names once. HMM 4096's child
    tables are about 130 MB per layout."""
    return forward if np.array_equal(forward, back) else back


def flow_tables(plan: Plan, fmap: FlowMap) -> dict[str, object]:
    """The backward pass's flow-row tables under ``fmap`` (``L{layer}.{op}.{what}``; see :mod:`.flowmap`):
    ``fout``/``ftiles`` (a sum's parent and child tiles), ``frows``/``fchildren`` (a product's rows and
    children), ``frows`` (an input op's rows) and ``zero`` (flow rows to clear before the op)."""
    f = fmap.rows
    out = {}
    for key, op in forward_order(plan):
        if isinstance(op, SumOp):
            out.update({f"{key}.fout": f[op.out_rows], f"{key}.ftiles": f[op.child_tiles[0]]})
            if op.dense is not None:  # the dense kernels' rows in order (ftiles are sorted tiles)
                parents, children = op.dense_rows()
                out.update({f"{key}.fdout": f[parents], f"{key}.fchild": f[children]})
        else:
            out[f"{key}.frows"] = f[op.start:op.start + op.n]
            if isinstance(op, ProdOp) and op.gathers:
                kids, parents = op.child_parents
                out.update({f"{key}.fkids": f[kids], f"{key}.fparents": np.where(parents >= 0, f[op.start + parents], PAD)})
            elif isinstance(op, ProdOp) and key not in fmap.shared:  # shared: its children hold its flow already
                out[f"{key}.fchildren"] = f[op.children]
        if key in fmap.zero:
            out[f"{key}.zero"] = fmap.zero[key]
    return out


def generate(plan: Plan, precision: str = DOT_PRECISION, source: str = "", pipeline: str = "",
             fill: int | None = None, flow_map: FlowMap | None = None,
             plan_schedule: tuple[dict, set] | None = None) -> str:
    """The Python source of the model's launch schedule (see the module docstring); ``fill`` overrides
    :data:`SUM_FILL` and :data:`PARAM_FILL` (0: every sum launch keeps the executor's batch block).
    ``flow_map`` is the compact flow map whose overwriting, shared and scratch ops the code follows (default:
    the plan's :func:`~.flowmap.compact_flows`; those are the same in every compact map of the plan); the rows
    it clears come in the flow tables ``f`` (``zero``), and an op clears them where the tables carry them.
    ``plan_schedule`` is the plan's :func:`~.valuemap.schedule`, where the caller has it already."""
    fill = (SUM_FILL, PARAM_FILL) if fill is None else (fill, fill)
    flow_map = flow_map or compact_flows(plan)
    overwrite = flow_map.overwrite
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    head = [f'"""Kernel launches of one compiled circuit, generated by pcc {__version__}.',
            "",
            f"source: {source or '(in memory)'}",
            f"pipeline: {pipeline or '(default)'}",
            f"{plan.rows} value rows, {len(plan.layers)} layers, {len(plan.sum_w) - 1} sum weights.",
            "Regenerate with `pcc compile`; edits are not kept.",
            '"""',
            "import triton",
            "",
            "from pcc.backend import dense_kernels as D",
            "from pcc.backend import kernels as K",
            "from pcc.backend.codegen import most_splits",
            "from pcc.backend.params import expected_missing_stats",
            "",
            f"ROWS = {plan.rows}",
            f"ROOT_ROW = {plan.root_row}",
            f'PRECISION = "{precision}"',
            "",
            "",
            "def forward(vals, x, miss, t, p, B, BN, BB):",
            '    """Fill vals [ROWS, B] with every node\'s log-value."""',
            "    nb = triton.cdiv(B, BB)"]
    blocks: list[tuple[str, str, list[str]]] = []  # (comment, key, lines) of each op, for _Outliner
    fusion = state(plan)
    fold = candidates(plan)
    fold_rows = folded_mask(plan, fold)
    for li, ops in enumerate(plan.layers):
        for oi, op in enumerate(ops):
            key = f"L{li}.{oi}"
            folds = key in fold if isinstance(op, ProdOp) else isinstance(op, SumOp) and fold_rows[read_rows(op)].any()
            blocks.append((f"# layer {li}: {_title(op)}", key, _forward_lines(key, op, fill, fusion, folds=folds)))
    fwd = _Outliner("forward", "vals, x, miss, t, p, B, BN, BB, nb", blocks)
    blocks = []
    head += fwd.body
    head += ["", "", "def backward(vals, flows, x, miss, t, f, p, fl, B, BN, BB, scaled=False, em=None):",
             '    """Add node flows into flows (root flow preset to 1) and parameter flows into fl.',
             "",
             "    em (training steps only): (pseudocount, step) of a mini-batch EM step, which the categorical tables",
             "    of codegen.em_tables then take in their counting launches (fl holds no counts of them).",
             "",
             "    scaled (training steps only): sum ops of several child tiles first turn their parents' flows into",
             "    G = F exp(s - v) in place (K.sum_scale), so flows no longer holds node flows afterwards (or into a",
             "    scratch, where those flow rows are shared: pcc.backend.flowmap.shared_products).",
             "",
             "    f holds the flow-row tables: every node's own row (flows [ROWS, B]), or compact rows reused once a",
             '    flow is dead, which then come with the rows to clear ("zero") before an op (pcc.backend.flowmap)."""',
             "    nb = triton.cdiv(B, BB)"]
    again, readers = plan_schedule or schedule(plan)
    em_cats = em_tables(plan)
    before = by_first_reader(again)
    fold_back = folded_mask(plan, frozenset(k for k in fold if k in again))  # what training layouts may fold
    ops = dict(forward_order(plan))
    for li in range(len(plan.layers) - 1, -1, -1):
        for oi, op in enumerate(plan.layers[li]):
            key = f"L{li}.{oi}"
            # every op: which rows a compact map clears where depends on its rows (and a training arena's on the
            # values' too, pcc.backend.arena), not on the plan, so the tables say it, not the code
            blocks.append((f"# layer {li}: {_title(op)}", key, [
                f'if (z := f.get("{key}.zero")) is not None:  # compact flows: rows whose last owner is done',
                f'    K.zero_rows[(triton.cdiv(z.numel(), BN), nb)](flows, z, z.numel(), B, BN=BN, BB=BB)']))
            blocks += [("", pkey, _recompute_lines(pkey, ops[pkey], fusion)) for pkey in before.get(key, [])]
            folds = key in readers and isinstance(op, SumOp) and fold_back[read_rows(op)].any()
            lines = _backward_lines(key, op, fill, key in overwrite, key in readers, key in flow_map.scratch, folds,
                                    isinstance(op, InputOp) and op.dist == "categorical" and op.k in em_cats)
            if key in flow_map.shared:  # the compact map's children share the product's flow row: nothing to copy
                lines = [f'if "{key}.fchildren" in f:  # node flows only (flowmap.shared_products)'] + ["    " + s for s in lines]
            blocks.append(("", key, lines))
    bwd = _Outliner("backward", "vals, flows, x, miss, t, f, p, fl, B, BN, BB, scaled, em, nb", blocks)
    return "\n".join(head + bwd.body + fwd.helpers + bwd.helpers) + "\n"


# ops whose launch code differs only in the op's key share one helper function (its body that code, the key its
# argument ``k``), called once per op, where at least OUTLINE_MIN ops of a pass share it and the code has at least
# OUTLINE_LINES lines: an HMM of length 128 repeats its transitions' code 127 times, and HMM 256's schedule was
# 11,778 lines (1.4 MB), whose compile() took 0.27 s of a 0.46 s pcc.compile on the dev CPU. 0: never
OUTLINE_MIN, OUTLINE_LINES = 4, 3


class _Outliner:
    """The body of one generated function from its ops' blocks ``(comment, key, lines)``, with each block whose
    code (the key aside) :data:`OUTLINE_MIN` or more blocks share replaced by a call of one helper (``helpers``:
    their definitions). A helper takes the function's arguments and ``nb``, ``params``, and the key."""

    def __init__(self, name: str, params: str, blocks: list[tuple[str, str, list[str]]]):
        templates = [self._template(key, lines) for _, key, lines in blocks]
        counts = Counter(templates)
        names: dict[tuple[str, ...], str] = {}
        self.body: list[str] = []
        self.helpers: list[str] = []
        for (comment, key, lines), tpl in zip(blocks, templates):
            self.body += [f"    {comment}"] if comment else []
            if not OUTLINE_MIN or counts[tpl] < OUTLINE_MIN or len(lines) < OUTLINE_LINES:
                self.body += ["    " + s for s in lines]
                continue
            if tpl not in names:
                names[tpl] = f"_{name}_{len(names)}"
                self.helpers += ["", "", f"def {names[tpl]}({params}, k):",
                                 f'    """Part of {name}: the launches of the {counts[tpl]} ops of key k whose code is '
                                 'this."""'] + ["    " + s for s in tpl]
            self.body.append(f'    {names[tpl]}({params}, "{key}")')

    @staticmethod
    def _template(key: str, lines: list[str]) -> tuple[str, ...]:
        """The block's code with its key as the variable ``k`` (``t["L2.0.out"]``: ``t[k + ".out"]``)."""
        return tuple(s.replace(f'"{key}.', 'k + ".').replace(f'"{key}"', "k") for s in lines)


def _recompute_lines(key: str, op: InputOp | ProdOp, fusion: Fused) -> list[str]:
    """Op ``key`` computed again (before the backward of the first sum op that reads it there), where the value
    layout keeps its rows only for the forward pass (training steps; :func:`~.valuemap.recomputed`)."""
    what = "inputs" if isinstance(op, InputOp) else "products"
    return ([f'if "{key}.brows" in t:  # {op.n} {what} computed again, for the backward (valuemap)']
            + ["    " + s for s in _forward_lines(key, op, (0, 0), fusion, "b")])


def _title(op) -> str:
    if isinstance(op, InputOp):
        return f"{op.n} {op.dist} inputs (k={op.k}), rows [{op.start}, {op.start + op.n})"
    if isinstance(op, ProdOp):
        return f"{op.n} products of fan-in {op.children.shape[1]}, rows [{op.start}, {op.start + op.n})"
    return f"{len(op.out_rows)} sum tiles of {op.tile_p} nodes x {op.kmax} child tiles of {op.tile_c}"


def _forward_lines(key: str, op, fill: tuple[int, int], fusion: Fused, b: str = "", folds: bool = False) -> list[str]:
    """Op ``key``'s forward launches; ``b``: an input or product op writes (and reads) the backward rows
    (``brows``, ``bchildren``: computed again there). ``folds`` (:mod:`.folding`): a product op that layouts
    may fold into its readers (no launch where the layout's tables carry no ``rows`` of it), or a sum op that
    reads such products (where the layout folds them, its tables carry ``childb``: the second rows to add)."""
    if isinstance(op, InputOp):
        line = (f'K.input_fwd[(triton.cdiv({op.n}, BN) * nb,)](vals, x, miss, t["{key}.var"], t["{key}.prow"], '
                f'{_THETA[op.dist].format(k=op.k)}, t["{key}.{b}rows"], {op.n}, B, '
                f"DIST={DISTS[op.dist]}, K={op.k}, BN=BN, BB=BB)")
        if key in fusion.inputs:
            return [f'if "{key}.rows" in t:  # layouts that keep inputs (the others fuse them into products)',
                    "    " + line]
        return [line]
    if isinstance(op, ProdOp):
        line = (f'K.prod_fwd[(triton.cdiv({op.n}, BN), nb)](vals, t["{key}.{b}children"], t["{key}.{b}rows"], '
                f"{op.n}, B, KMAX={op.children.shape[1]}, BN=BN, BB=BB{_skip(ZERO)})")
        if folds:
            return [f'if "{key}.rows" in t:  # layouts that keep these products (the others fold them: folding)',
                    "    " + line]
        if key not in fusion.products:
            return [line]
        fused = (f'K.prod_fwd_inputs[(triton.cdiv({op.n}, BN), nb)](vals, t["{key}.{b}vchildren"], '
                 f't["{key}.{b}rows"], t["{key}.ivar"], t["{key}.iprow"], x, miss, p.cat[{fusion.k}], {op.n}, B, '
                 f"KMAX={op.children.shape[1]}, K={fusion.k}, BN=BN, BB=BB)")
        return [f'if "{key}.ivar" in t:  # input children computed here, without rows (pcc.backend.fusion)',
                "    " + fused, "else:", "    " + line]
    if not folds:
        return _dense_or(op, lambda: _dense_forward_lines(key, op), _sum_forward_lines(key, op, fill))
    return _dense_or(op, lambda: _either(f"{key}.childb", lambda f: _dense_forward_lines(key, op, f)),
                     _either(f"{key}.childb", lambda f: _sum_forward_lines(key, op, fill, f)))


def _either(table: str, make) -> list[str]:
    """``make(True)``'s lines (children folded, :mod:`.folding`) where the layout's tables carry ``table``,
    ``make(False)``'s elsewhere."""
    return ([f'if "{table}" in t:  # children folded (pcc.backend.folding)'] + ["    " + s for s in make(True)]
            + ["else:"] + ["    " + s for s in make(False)])


def _sum_forward_lines(key: str, op: SumOp, fill: tuple[int, int], folded: bool = False) -> list[str]:
    tiles = len(op.out_rows)
    lines = [f"bb = K.batch_block(B, BB, {tiles}, {fill[0]})"]
    if op.pairable and op.child_rows.shape[1] >= PAIR_MIN_CHILDREN:
        lines += [f"if {tiles // 2} * triton.cdiv(B, bb) >= {PAIR_FILL}:  # parent tiles in pairs (PAIR_FILL)",
                  "    " + _sum_fwd_launch(key, op, 2, folded), "else:", "    " + _sum_fwd_launch(key, op, 1, folded)]
        return lines
    return lines + [_sum_fwd_launch(key, op, 1, folded)]


def _sum_fwd_launch(key: str, op: SumOp, pair: int, folded: bool = False) -> str:
    child_b, fold = (f't["{key}.childb"]', ", FOLDED=True") if folded else (f't["{key}.child"]', "")
    return (f'K.sum_fwd[({len(op.out_rows) // pair}, triton.cdiv(B, bb))](vals, p.sum_w, t["{key}.out"], '
            f't["{key}.child"], {child_b}, {_weight_args(key, op)}, B, TP={pair * op.tile_p}, TC={op.tile_c}, '
            f"KC={op.child_rows.shape[1]}, BB=bb, PAD={PAD}, NEG={NEG}, AFFINE={op.affine is not None}, "
            f"PRECISION=PRECISION, STAGES={FWD_STAGES[0]} if bb == BB else {FWD_STAGES[1]}, PAIR={pair}{_walign(op)}"
            f"{_same_children(op)}{fold})")


def _same_children(op: SumOp) -> str:
    """The ``SAME_CHILDREN`` argument of a sum launch whose child table is one row (``SumOp.same_children``)."""
    return ", SAME_CHILDREN=True" if op.same_children else ""


def _bwd_pair(op: SumOp) -> int:
    """2 when the op's backward reads parent tiles in pairs (see ``BWD_PAIR_USES``), else 1."""
    if BWD_PAIRS and op.bwd_pairable and op.child_rows.shape[1] >= PAIR_MIN_CHILDREN:
        return 2 if op.child_tiles[1].shape[1] >= BWD_PAIR_USES else 1
    return 1


def _skip(row: int) -> str:
    """The ``SKIP`` argument of a launch whose padding slots name ``row`` (:data:`SKIP_PADDING`)."""
    return f", SKIP={row}" if SKIP_PADDING else ""


def _walign(op: SumOp, params: bool = False) -> str:
    """The generic sum kernels' ``WALIGN`` argument (:attr:`SumOp.walign`; left out at its default, 1);
    ``params``: for ``sum_bwd_params``, which takes it only with :data:`WALIGN_PARAMS`."""
    return f", WALIGN={op.walign}" if op.walign > 1 and WALIGN and (WALIGN_PARAMS or not params) else ""


def _weight_args(key: str, op: SumOp) -> str:
    """``wids, wbase, wstride``: the tables of the op's weight addressing; the unused ones repeat a used one."""
    if op.affine is None:
        return ", ".join([f't["{key}.wids"]'] * 3)
    return f't["{key}.wbase"], t["{key}.wbase"], t["{key}.wstride"]'


def _cat_launch(key: str, op: InputOp, grid: str, stats: str, splits: str, kb: int, extra: str = "") -> str:
    """A categorical input op's counting launch (kernels.input_bwd_cat) over ``grid`` programs, its tiles of
    :func:`cat_rows` rows in ``op.k / kb`` category blocks; ``extra``: further keyword arguments."""
    rows = cat_rows(op)
    return (f'K.input_bwd_cat[({grid},)](flows, f["{key}.frows"], x, miss, t["{key}.var"], t["{key}.prow"], '
            f't["{key}.tiles"], {stats}, {_THETA[op.dist].format(k=op.k)}, {op.n}, B, {splits}, K={op.k}, BN={rows}, '
            f"KB={kb}, BB={CAT_BATCH}, PRECISION=PRECISION, KBLOCKS={-(-op.k // kb)}"
            f"{', TRANS=True' if rows < CAT_TRANSPOSED_BELOW else ''}, STAGES={CAT_STAGES}{extra})")


def _backward_lines(key: str, op, fill: tuple[int, int], overwrite: bool, back: bool = False,
                    scratch: bool = False, folds: bool = False, em: bool = False) -> list[str]:
    """Op ``key``'s backward launches; ``back``: a sum op reads its children's values from the backward rows
    (``bchild``, ``btiles``, ``bdchild``: some of them are computed again there); ``scratch``: a sum op's
    training steps put ``G`` in a scratch, not in its parents' flow rows (``FlowMap.scratch``); ``folds``: a sum
    op that reads products a training layout may fold (:mod:`.folding`), whose tables then carry ``bchildb``;
    ``em``: a categorical input op whose table a mini-batch EM step updates in its counting launch."""
    if isinstance(op, InputOp):
        stats = _STATS[op.dist].format(k=op.k)
        if op.dist == "categorical":
            kb, tiles = _pow2(op.k, 16, 64), len(op.var_tiles(cat_rows(op)))
            # missing entries' expected counts are added in the kernel (no mass buffer, no torch passes)
            programs = tiles * -(-op.k // kb)
            counts = [f"sp = K.cat_splits({programs}, B, {CAT_FILL}, {CAT_SPLIT_MIN})",
                      _cat_launch(key, op, f"{programs} * sp", stats, "sp", kb)]
            if not em:
                return counts
            # the update in the counts: the category blocks of a tile over the whole batch, into the table
            ekb = CAT_EM_KB or kb
            fused = _cat_launch(key, op, str(tiles * -(-op.k // ekb)), _THETA[op.dist].format(k=op.k), "1", ekb,
                                ", EM=True, a=em[0], step=em[1]")
            return ([f"if em is not None:  # a mini-batch EM step: table {op.k} updated here (codegen.em_tables)",
                     "    " + fused, "else:"] + ["    " + s for s in counts])
        launch = (f'K.input_bwd[(triton.cdiv({op.n}, BN), nb)](flows, f["{key}.frows"], x, miss, t["{key}.var"], '
                  f't["{key}.prow"], {stats}, mass, {op.n}, B, DIST={DISTS[op.dist]}, K={op.k}, BN=BN, BB=BB)')
        return [f"mass = vals.new_zeros({op.n})", launch,
                f'expected_missing_stats("{op.dist}", {op.k}, t["{key}.prow"], mass, p, fl)']
    if isinstance(op, ProdOp) and op.gathers:
        kids, parents = op.child_parents
        return [f'K.prod_bwd_gather[(triton.cdiv({len(kids)}, BN), nb)](flows, f["{key}.fkids"], f["{key}.fparents"], '
                f"{len(kids)}, B, D={parents.shape[1]}, BN=BN, BB=BB, OVERWRITE={overwrite}{_skip(PAD)})"]
    if isinstance(op, ProdOp):
        return [f'K.prod_bwd[(triton.cdiv({op.n}, BN), nb)](flows, f["{key}.frows"], f["{key}.fchildren"], {op.n}, B, '
                f"KMAX={op.children.shape[1]}, BN=BN, BB=BB, ZERO={ZERO}, ATOMIC={op.child_atomics}, OVERWRITE={overwrite})"]
    b = "b" if back else ""
    if not folds:
        return _dense_or(op, lambda: _dense_backward_lines(key, op, overwrite, b),
                         _sum_backward_lines(key, op, fill, overwrite, b, scratch))
    return _dense_or(op, lambda: _either(f"{key}.bchildb", lambda f: _dense_backward_lines(key, op, overwrite, b, f)),
                     _either(f"{key}.bchildb", lambda f: _sum_backward_lines(key, op, fill, overwrite, b, scratch, f)))


def _sum_backward_lines(key: str, op: SumOp, fill: tuple[int, int], overwrite: bool, b: str = "",
                        scratch: bool = False, folded: bool = False) -> list[str]:
    second, fold = (f'{b}childb', ", FOLDED=True") if folded else (f'{b}child', "")
    tiles = (f't["{key}.out"], f["{key}.fout"], t["{key}.{b}child"], t["{key}.{second}"], {_weight_args(key, op)}, '
             "B")
    shape = lambda tp: f"TP={tp}, TC={op.tile_c}, KC={op.child_rows.shape[1]}, BB=bb"  # noqa: E731
    masks = f"PAD={PAD}, NEG={NEG}, AFFINE={op.affine is not None}"
    # parameter flows first: they read the parents' flows before anything else changes the buffer
    programs = len(op.out_rows) * op.kmax
    most = most_splits(programs)
    pair = _bwd_pair(op)
    # training steps (scaled): G once per parent instead of once per child tile (kernels.sum_scale); the scale
    # argument of unscaled launches is an unread placeholder
    lines, scale, scaled, gbuf, into = [], "flows", "False", "flows", ""
    if op.kmax >= SCALE_KMAX:
        lines = [f"sc = flows.new_empty({len(op.out_rows) // pair}, B) if scaled else flows"]
        if scratch:  # its parents' flow rows are shared with nodes that read them later: G goes beside them
            lines.append(f"gs = flows.new_empty({op.out_rows.size}, B) if scaled else flows")  # one row per parent slot
            gbuf, into = "gs", ", SCRATCH=scaled"
        lines.append(f'if scaled: K.sum_scale[({len(op.out_rows) // pair}, nb)](vals, flows, t["{key}.out"], '
                     f'f["{key}.fout"], sc, {gbuf}, B, TP={pair * op.tile_p}, BB=BB{into})')
        scale, scaled = "sc", "scaled"
    lines += [f"bb = K.batch_block(B, BB, {programs}, {fill[1]})",
              f"split = max(1, min(triton.cdiv(B, bb) // {SPLIT_BLOCKS}, {most}))",
              f"K.sum_bwd_params[({len(op.out_rows)}, {op.kmax}, split)](vals, flows, p.sum_w, fl.sum_w, {tiles}, "
              f"split, {scale}, {gbuf}, {shape(op.tile_p)}, {masks}{_walign(op, params=True)}, PRECISION=PRECISION, "
              f"SCALED={scaled}, SCALE_PAIR={pair}, STAGES={PARAM_STAGES}{_same_children(op)}{into}{fold})"]
    tiles_c, r = len(op.child_tiles[0]), op.child_tiles[1].shape[1]
    if not tiles_c:  # every child is padding: no child flows to write
        return lines
    return lines + [
            f"bb = K.batch_block(B, BB, {tiles_c}, {fill[0]})",
            f'K.sum_bwd[({tiles_c}, triton.cdiv(B, bb))](vals, flows, p.sum_w, t["{key}.out"], f["{key}.fout"], '
            f'{_weight_args(key, op)}, t["{key}.{b}tiles"], t["{key}.{b}tiles{"b" if folded else ""}"], '
            f'f["{key}.ftiles"], t["{key}.uses"], {scale}, {gbuf}, B, '
            f"{shape(pair * op.tile_p)}, KMAX={op.kmax}, R={r}, "
            f"{masks}{_walign(op)}, ATOMIC={op.child_atomics}, PRECISION=PRECISION, OVERWRITE={overwrite}, "
            f"SCALED={scaled}, PAIR={pair}{into}{fold}, num_warps={8 if r >= 8 else 4})"]


def _dense_batch(op: SumOp) -> int:
    """The smallest batch size from which the op runs on the dense kernels (edges x batch at least
    :data:`DENSE_MIN_WORK`), or 0: never (not :attr:`SumOp.dense`, or beyond :data:`DENSE_MAX_BATCH`)."""
    if op.dense is None:
        return 0
    least = max(1, -(-DENSE_MIN_WORK // op.dense.edges))
    return least if least <= DENSE_MAX_BATCH else 0


def _dense_or(op: SumOp, dense, generic: list[str]) -> list[str]:
    """The op's launches: ``dense()``'s from :func:`_dense_batch`'s batch size on, ``generic`` below it."""
    least = _dense_batch(op)
    if not least:
        return generic
    dense = dense()
    if least == 1:
        return dense
    return ([f"if B >= {least}:  # dense products from this batch size on (codegen.DENSE_MIN_WORK)"]
            + ["    " + s for s in dense] + ["else:"] + ["    " + s for s in generic])


def _fit(tiles: tuple[int, int, int, int, int], m: int, n: int | None, k: int | None) -> tuple[int, ...]:
    """A dense product's tiles with ``BM``, ``BN``, ``BK`` shrunk (to at least 16) where ``m``, ``n``, ``k``
    (None: the batch, unknown here) are smaller."""
    fit = lambda t, size: t if size is None else _pow2(size, 16, t)  # noqa: E731
    bm, bn, bk, warps, stages = tiles
    return fit(bm, m), fit(bn, n), fit(bk, k), warps, stages


def _tile_args(tiles: tuple[int, ...], walign: int) -> str:
    bm, bn, bk, warps, stages = tiles
    return (f"BM={bm}, BN={bn}, BK={bk}, PRECISION=PRECISION, STAGES={stages}, GROUP={DENSE_GROUP}, "
            f"WALIGN={walign}, num_warps={warps}")


def _dense_shift(key: str, n: int, groups: int | str, forward: bool, at: str = "", folded: bool = False) -> list[str]:
    """The launches that reduce the op's shift (per group and sample) over ``n`` rows per group (children
    forward, parents backward) into ``sh`` [G, B]: chunks of rows in parallel, then one combining launch. The
    forward also transposes the child values into ``vt``; the backward's rows are the parents' (``fdout``).
    ``groups``: a count or the name of one (a chunk of groups), ``at``: the chunk's slice of the tables;
    ``folded`` (forward): each child value is the sum of two rows, ``dchild``'s and ``dchildb``'s (:mod:`.folding`)."""
    chunk = _pow2(n, 32, DENSE_CHUNK)
    parts = -(-n // chunk)
    rows = (_dense_children(key, folded, at=at) if forward
            else f't["{key}.dout"]{at}, f["{key}.fdout"]{at}')
    buf, scratch = ("vals, vals", "vt") if forward else ("vals, flows", "part")
    many = groups * parts if isinstance(groups, int) else f"{groups} * {parts}"
    return [f"part, sh = vals.new_empty({many}, B), vals.new_empty({groups}, B)",
            f"D.dense_shift[({parts}, triton.cdiv(B, 64), {groups})]({buf}, {rows}, part, {scratch}, {n}, B, "
            f"FORWARD={forward}, CHUNK={chunk}, BN=32, BB=64{', FOLDED=True' if folded else ''})",
            f"D.dense_combine[(triton.cdiv(B, 64), {groups})](part, sh, B, NPART={parts}, FORWARD={forward}, BB=64)"]


def _dense_launch(kernel: str, m: int, k: int, d: Dense, tiles: dict, args: str,
                  grouped: tuple[int, ...] | None = None, groups: str | None = None) -> list[str]:
    """A dense product over ``m`` rows x the batch (contraction ``k``) in each of ``d``'s groups (``groups``: the
    name of a chunk's group count instead): the full tiles (``grouped`` instead where given), or the
    small-grid ones where the full tiles' grid would not fill one wave at this batch size."""
    full, small = _fit(grouped or tiles["full"], m, None, k), _fit(tiles["small"], m, None, k)
    groups = groups or str(d.groups)
    launch = lambda t: (f"D.{kernel}[({-(-m // t[0])} * triton.cdiv(B, {t[1]}), {groups})]({args}, "  # noqa: E731
                        f"{_tile_args(t, d.align)})")
    if full == small:
        return [launch(full)]
    return [f"if {groups} * {-(-m // full[0])} * triton.cdiv(B, {full[1]}) >= {SUM_FILL}:", "    " + launch(full),
            "else:  # under one wave: the small-grid tiles", "    " + launch(small)]


def _dense_children(key: str, folded: bool, b: str = "", at: str = "") -> str:
    """The two child-row arguments of a dense kernel: ``dchild`` and, where ``folded`` (a child is the sum of two
    rows, :mod:`.folding`), ``dchildb``, else ``dchild`` again (unread). ``b``: the backward's tables' prefix,
    ``at``: a chunk's slice of them."""
    second = "b" if folded else ""
    return f't["{key}.{b}dchild"]{at}, t["{key}.{b}dchild{second}"]{at}'


def _dense_title(op: SumOp) -> str:
    d = op.dense
    return (f"# dense, {d.groups} group(s) of {d.P} x {d.C}: W_g[p, c] = sum_w[base_g + p * {d.stride} + c] "
            "(pcc.backend.dense_kernels)")


def _dense_forward_lines(key: str, op: SumOp, folded: bool = False) -> list[str]:
    d = op.dense
    if d.P <= DENSE_ONEPASS_P:
        bn, bk, warps, stages = DENSE_ONEPASS
        bp, bk = _pow2(d.P, 16, 1 << 30), _pow2(d.C, 16, bk)
        warps = warps if bp <= 64 else 2 * warps  # a [128, BN] sum: twice the registers
        kids = _dense_children(key, folded)
        return [_dense_title(op),
                f'D.dense_fwd_onepass[(triton.cdiv(B, {bn}), {d.groups})](vals, p.sum_w, t["{key}.dout"], {kids}, '
                f't["{key}.dbase"], {d.stride}, B, P={d.P}, C={d.C}, BP={bp}, BN={bn}, BK={bk}, PRECISION=PRECISION, '
                f"STAGES={stages}, WALIGN={d.align}{', FOLDED=True' if folded else ''}, num_warps={warps})"]
    args = f'vals, p.sum_w, t["{key}.dout"], vt, sh, t["{key}.dbase"], {d.stride}, B, P={d.P}, C={d.C}'
    return ([_dense_title(op), f'vt = D.scratch(vals, t, "{key}", {d.groups * d.C}, B).view({d.groups}, B, {d.C})']
            + _dense_shift(key, d.C, d.groups, True, folded=folded)
            + _dense_launch("dense_fwd", d.P, d.C, d, DENSE_FWD, args,
                            DENSE_GROUPS_FWD if d.groups > 1 and d.C >= DENSE_GROUPS_MIN_C else None)
            + ["del vt, part, sh"])


def _dense_backward_lines(key: str, op: SumOp, overwrite: bool, b: str = "", folded: bool = False) -> list[str]:
    d = op.dense
    full = _fit(DENSE_GROUPS_PARAMS if d.groups > 1 else DENSE_PARAMS["full"], d.P, d.C, None)
    fills = d.groups * -(-d.P // full[0]) * -(-d.C // full[1]) >= FILL
    pt = full if fills else _fit(DENSE_PARAMS["small"], d.P, d.C, None)
    programs = -(-d.P // pt[0]) * -(-d.C // pt[1])
    chunked = d.groups > 1 and DENSE_SCRATCH > 0
    at, gn = ("[g0:]", "gn") if chunked else ("", d.groups)  # a chunk's tables start at its first group
    kids = _dense_children(key, folded, b, at)
    fold = ", FOLDED=True" if folded else ""
    # a chunk of fewer groups may split its batch further (most_splits, worked out per chunk): without that,
    # PD 32's parameter flows at 8192 took 3.1 instead of 0.9 ms in chunks
    most = f"most_splits({programs} * gn)" if chunked else most_splits(programs * d.groups)
    args = (f'vals, flows, p.sum_w, gt, sh, {kids}, f["{key}.fchild"]{at}, t["{key}.dbase"]{at}, '
            f"{d.stride}, B, P={d.P}, C={d.C}, OVERWRITE={overwrite}{fold}")
    body = [f"gt = flows.new_empty({gn}, B, {d.P})"] + _dense_g(key, d, at, gn) + [
            f"split = max(1, min(triton.cdiv(B, {pt[2]}) // {SPLIT_BLOCKS}, {most}))",
            f'D.dense_params[({programs}, split, {gn})](vals, gt, sh, p.sum_w, fl.sum_w, {kids}, '
            f't["{key}.dbase"]{at}, {d.stride}, B, P={d.P}, C={d.C}, STEPS=triton.cdiv(triton.cdiv(B, {pt[2]}), split), '
            f"{_tile_args(pt, d.align)}, ATOMIC=split > 1{fold})",
            ] + _dense_launch("dense_bwd", d.C, d.P, d, DENSE_BWD, args, groups="gn" if chunked else None) + [
            "del gt, sh"]
    return [_dense_title(op)] + (body if not chunked else _dense_chunks(d, body))


def _dense_chunks(d: Dense, body: list[str]) -> list[str]:
    """``body`` (a backward over ``gn`` groups from ``g0``) in a loop over chunks of the op's groups."""
    # G transposed is a scratch of the op's parent rows: in chunks of groups, each at most 1/DENSE_SCRATCH of the
    # value buffer (HCLT 32 at 8192: 80 MiB beside 1084 MiB of values, at the step's peak), from batch
    # DENSE_SCRATCH_FROM on (below it, 1/DENSE_SCRATCH_SMALL)
    small = f"vals.shape[0] // {DENSE_SCRATCH_SMALL}" if DENSE_SCRATCH_SMALL else f"{d.groups * d.P}"
    limit = f"vals.shape[0] // {DENSE_SCRATCH} if B >= {DENSE_SCRATCH_FROM} else {small}"
    return [f"for g0, gn in D.group_chunks({d.groups}, {d.P}, {limit}):"] + ["    " + s for s in body]


def _dense_g(key: str, d: Dense, at: str, gn: int | str) -> list[str]:
    """The launches that give a backward over ``gn`` groups its shift ``sh`` and ``G`` (``gt``, allocated): one
    (:func:`~pcc.backend.dense_kernels.dense_shift_scale`) where a group's parents fit a block
    (:data:`DENSE_FUSED_P`), else the shift's two and :func:`~pcc.backend.dense_kernels.dense_scale`."""
    if d.P <= DENSE_FUSED_P:
        bp = _pow2(d.P, 16, 1 << 30)
        bb = 64 if bp <= 64 else 32
        return [f"sh = vals.new_empty({gn}, B)",
                f'D.dense_shift_scale[(triton.cdiv(B, {bb}), {gn})](vals, flows, t["{key}.dout"]{at}, '
                f'f["{key}.fdout"]{at}, sh, gt, B, P={d.P}, BP={bp}, BB={bb})']
    return _dense_shift(key, d.P, gn, False, at) + [
        f'D.dense_scale[(triton.cdiv({d.P}, 32), triton.cdiv(B, 64), {gn})](vals, flows, t["{key}.dout"]{at}, '
        f'f["{key}.fdout"]{at}, sh, gt, {d.P}, B, BN=32, BB=64)', "del part"]
