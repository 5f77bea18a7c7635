"""``pcc gen``: turn command-line arguments into a structure's ``.pc`` source (one function per structure)."""
from __future__ import annotations

import argparse

import numpy as np


def generate(args: argparse.Namespace) -> str:
    """The .pc text for ``args.structure``; bad arguments raise ValueError (a user error)."""
    return {"hclt": _hclt, "pd": _pd, "rat-spn": _ratspn, "hmm": _hmm}[args.structure](args)


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {v}")


def _hclt(args: argparse.Namespace) -> str:
    from pcc import data as datasets

    from pcc.ir.diagnostics import Diagnostic, Loc, UserError

    from .hclt import hclt
    _positive(latents=args.latents)
    x = datasets.load(args.data)

    def bad(message: str) -> UserError:
        return UserError(Diagnostic(Loc(str(args.data)), message))

    num_cats = args.num_cats
    if args.dist != "gaussian":
        if not np.all(x == np.round(x)) or x.min() < 0:
            raise bad(f"a {args.dist} HCLT needs non-negative integer data (use --dist gaussian for real values)")
        if num_cats is not None and x.max() >= num_cats:
            raise bad(f"value {int(x.max())} is outside --num-cats {num_cats} (values must be 0..{num_cats - 1})")
        if args.dist == "bernoulli" and x.max() > 1:
            raise bad(f"bernoulli inputs need binary data, found the value {int(x.max())}")
        if num_cats is None and args.dist == "categorical":
            num_cats = max(2, int(x.max()) + 1)  # a constant or one-row data set still declares two values
    root = int(args.root) if str(args.root).isdigit() else args.root
    return hclt(x, args.latents, args.dist, num_cats=num_cats, seed=args.seed, root=root)


def _pd(args: argparse.Namespace) -> str:
    from .pd import pd_source
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
        interval = tuple(int(s) for s in str(args.split_interval).split(","))
    except ValueError:
        raise ValueError("--shape takes H,W or H,W,C and --split-interval N or NY,NX (integers)") from None
    if len(shape) not in (2, 3) or len(interval) not in (1, 2):
        raise ValueError("--shape takes H,W or H,W,C and --split-interval N or NY,NX")
    _positive(latents=args.latents)
    return pd_source(shape, args.latents, interval[0] if len(interval) == 1 else interval, dist=args.dist,
                     num_cats=args.num_cats or 256, seed=args.seed)


def _ratspn(args: argparse.Namespace) -> str:
    from .ratspn import ratspn_source
    _positive(vars=args.vars, depth=args.depth, repetitions=args.repetitions, latents=args.latents)
    return ratspn_source(args.vars, args.depth, args.repetitions, args.latents, dist=args.dist,
                         num_cats=args.num_cats or 2, seed=args.seed)


def _hmm(args: argparse.Namespace) -> str:
    from .hmm import hmm_source
    _positive(length=args.length, latents=args.latents, emits=args.emits)
    return hmm_source(args.length, args.latents, args.emits, dist=args.dist, seed=args.seed)
