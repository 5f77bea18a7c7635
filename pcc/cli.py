"""The ``pcc`` command line: check, opt, compile, gen, train, eval, sample, query, import-pyjuice.

Exit codes: 0 ok; 1 user error (diagnostics on stderr, never a traceback); 2 internal error (a pcc bug:
set PCC_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from pcc import __version__
from pcc.api import read_ir, stage_writer, write_ir, write_text_atomic
from pcc.backend.codegen import DOT_PRECISION, PRECISIONS
from pcc.backend.valuemap import LEVELS
from pcc.frontend import dump, load_file
from pcc.frontend.lower import parse_ast
from pcc.ir import Circuit, UserError, VerifyError, to_text
from pcc.ir.diagnostics import Diagnostic, Loc
from pcc.passes import DEFAULT_PIPELINE, REGISTRY, Options, PassFailure, parse_pipeline, run_pipeline


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a user error (exit 1), not argparse's exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"pcc: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = _Parser(prog="pcc", description="pcc: a compiler toolchain for probabilistic circuits.")
    p.add_argument("--version", action="version", version=f"pcc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("check", help="parse and verify a .pc or .pcir file; print diagnostics only")
    c.add_argument("file")

    o = sub.add_parser("opt", help="run a pass pipeline over a .pc or .pcir file and print the IR")
    o.add_argument("file")
    o.add_argument("-p", "--passes", default=DEFAULT_PIPELINE,
                   help=f"pipeline, e.g. 'dce,layerize{{max-padding=1.5}}' (default: {DEFAULT_PIPELINE}); "
                        f"passes: {', '.join(sorted(REGISTRY))}")
    o.add_argument("-o", "--output", help="write the IR here (large tensors to OUTPUT.safetensors) instead of stdout")
    _pipeline_flags(o)

    k = sub.add_parser("compile", help="compile a .pc file into a module folder, or emit one stage")
    k.add_argument("file")
    k.add_argument("--emit", choices=["ast", "ir", "layered", "plan", "kernels", "module"],
                   help="stage to emit (default: module for -o DIR, layered IR for -o FILE.pcir or stdout)")
    k.add_argument("-o", "--output", help="module folder (--emit module) or output file (default: stdout)")
    k.add_argument("--dump-dir", help="also write every stage (AST, IR after each pass) into this folder")
    k.add_argument("-p", "--passes", default=DEFAULT_PIPELINE, help="pipeline for --emit layered")
    _pipeline_flags(k)
    t = sub.add_parser("train", help="train a model with EM and write a checkpoint")
    t.add_argument("model", help="a .pc or .pcir file, a compiled module folder, or a checkpoint to continue")
    t.add_argument("--data", required=True, help="training data (.npy/.npz, .csv/.data[.gz], IDX[.gz])")
    t.add_argument("--valid", help="validation data, evaluated after every epoch")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--em", choices=["mini", "full"], default="mini", help="mini-batch or full-batch EM")
    t.add_argument("--step-size", type=float, default=0.1, help="mini-batch EM step size (0, 1]")
    t.add_argument("--pseudocount", type=float, default=0.1)
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--executor", choices=["auto", "torch", "triton"], default="auto",
                   help="auto: Triton kernels on CUDA, plain torch otherwise")
    t.add_argument("--seed", type=int, default=0, help="shuffling, and re-initialisation of random parameters")
    t.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes: flows summed before each EM update (gloo on CPU, NCCL on GPUs); "
                        "under torchrun the group comes from the environment")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="float64 uses the plain-torch executor")
    t.add_argument("--precision", choices=PRECISIONS, default=DOT_PRECISION,
                   help="Triton executor's matrix products: tf32x3 keeps fp32 accuracy; bf16x3 (about 1e-5) and "
                        "bf16 are faster and reduced (bf16: log-likelihoods within about 1e-2 relative)")
    t.add_argument("--recompute", choices=LEVELS, default="sums",
                   help="what training steps compute again in the backward instead of keeping: products of sums "
                        "(default; half the memory on PD for about 10%% of its step), all (also inputs and products "
                        "of inputs: about 40%% fewer rows on HCLT and HMMs for 10-18%% of their step) or off")
    t.add_argument("--no-recompute", dest="recompute", action="store_const", const="off",
                   help="the same as --recompute off")
    t.add_argument("--fuse-inputs", action="store_const", const=True, default=None,
                   help="categorical inputs that only products read are computed by those products, without rows "
                        "of their own (Triton executor; an HMM: 40%% less memory for 14%% more step on an H100)")
    t.add_argument("--keep-best", action="store_true", help="write the checkpoint only when --valid improves")
    t.add_argument("--patience", type=int, default=0, help="stop after N epochs without --valid improvement")
    t.add_argument("-o", "--output", required=True, help="checkpoint file (rewritten atomically every epoch)")

    g = sub.add_parser("gen", help="write a standard structure as a readable .pc file (hclt, pd, rat-spn, hmm)")
    gs = g.add_subparsers(dest="structure", required=True, parser_class=_Parser)
    h = gs.add_parser("hclt", help="hidden Chow-Liu tree learned from data")
    h.add_argument("--data", required=True, help="training data: the tree is the maximum spanning tree of pairwise MI")
    h.add_argument("--latents", type=int, required=True, help="states of each hidden variable (nodes per block)")
    h.add_argument("--root", default="center", help="tree root: center (default, shallowest), max_degree, or a variable index")
    pd = gs.add_parser("pd", help="Poon-Domingos region decomposition of an image")
    pd.add_argument("--shape", required=True, help="H,W or H,W,C")
    pd.add_argument("--latents", type=int, required=True)
    pd.add_argument("--split-interval", default="4", help="N or NY,NX: split positions are multiples of this")
    r = gs.add_parser("rat-spn", help="random and tensorised SPN (random balanced binary partitions)")
    r.add_argument("--vars", type=int, required=True)
    r.add_argument("--depth", type=int, required=True)
    r.add_argument("--repetitions", type=int, required=True)
    r.add_argument("--latents", type=int, required=True)
    m = gs.add_parser("hmm", help="hidden Markov model with tied transition and emission parameters")
    m.add_argument("--length", type=int, required=True)
    m.add_argument("--latents", type=int, required=True)
    m.add_argument("--emits", type=int, default=2, help="observed symbols (categorical emissions)")
    for sp in (h, pd, r, m):
        sp.add_argument("--dist", choices=["categorical", "bernoulli", "gaussian"], default="categorical",
                        help="input distribution (bernoulli needs binary data, gaussian real data)")
        if sp is not m:
            sp.add_argument("--num-cats", type=int, help="categories of each variable (default: from the data, or 256)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("-o", "--output", help="write the .pc file here (default: stdout)")

    e = sub.add_parser("eval", help="mean test log-likelihood of a checkpoint (and bits per dimension)")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    e.add_argument("--batch-size", type=int, default=512)
    e.add_argument("--device", default="auto")
    e.add_argument("--executor", choices=["auto", "torch", "triton"], default="auto")

    sm = sub.add_parser("sample", help="draw samples from a model, optionally given evidence")
    sm.add_argument("checkpoint", help="a checkpoint (or .pc/.pcir file, or compiled module folder)")
    sm.add_argument("-n", "--num-samples", type=int, required=True,
                    help="samples to draw (per evidence row when --evidence has several rows)")
    sm.add_argument("-o", "--output", required=True, help="samples [rows, vars] as .npy or .csv")
    sm.add_argument("--evidence", help="evidence values [1 or R, vars] (.npy/.csv/...); needs --mask")
    sm.add_argument("--mask", help="0/1 array shaped like --evidence: 1 = observed (kept in every sample), 0 = sampled")
    sm.add_argument("--png", help="also write the samples as an image grid (needs a square number of variables)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--batch-size", type=int, default=4096, help="samples drawn per pass")
    sm.add_argument("--device", default="auto")
    sm.add_argument("--executor", choices=["auto", "torch", "triton"], default="auto")

    qy = sub.add_parser("query", help="marginal, conditional or MAP queries for every row of a data set")
    qy.add_argument("checkpoint", help="a checkpoint (or .pc/.pcir file, or compiled module folder)")
    qy.add_argument("kind", choices=["marginal", "conditional", "map"],
                    help="marginal: log p(x_mask); conditional: log p(x_query | x_mask); "
                         "map: the most likely completion of x_mask (max-product)")
    qy.add_argument("--data", required=True, help="values [rows, vars]; unobserved entries are ignored")
    qy.add_argument("--mask", help="0/1 array shaped like --data: 1 = observed (the evidence); "
                                   "default: all observed (marginal), required for conditional, none observed (map)")
    qy.add_argument("--query-mask", help="conditional only: 0/1 array, 1 = in the query (default: every unobserved entry)")
    qy.add_argument("-o", "--output", required=True,
                    help="log-probabilities [rows] (marginal, conditional) or states [rows, vars] (map), .npy or .csv")
    qy.add_argument("--batch-size", type=int, default=4096)
    qy.add_argument("--device", default="auto")
    qy.add_argument("--executor", choices=["auto", "torch", "triton"], default="auto")

    ij = sub.add_parser("import-pyjuice", help="convert a PyJuice circuit saved by pyjuice.save (.jpc) into a .pc file")
    ij.add_argument("file", help="a .jpc file (a pickle: import only files you trust)")
    ij.add_argument("-o", "--output", required=True, help="the .pc file to write (tensors beside it: .safetensors)")
    return p


def _pipeline_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-verify", action="store_true", help="skip verification after each pass")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="NAME|all",
                   help="print the IR to stderr after the named pass (repeatable)")
    p.add_argument("--time-passes", action="store_true", help="print a timing report to stderr")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pcc`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        commands = {"check": cmd_check, "opt": cmd_opt, "compile": cmd_compile, "train": cmd_train, "eval": cmd_eval,
                    "gen": cmd_gen, "sample": cmd_sample, "query": cmd_query, "import-pyjuice": cmd_import_pyjuice}
        return commands[args.command](args)
    except UserError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except PassFailure as e:
        print(f"pcc: internal error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except Exception as e:  # a pcc bug: one line unless debugging
        print(f"pcc: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("PCC_DEBUG"):
            traceback.print_exc()
        return 2


def load_input(path: str) -> Circuit:
    """A verified circuit from a .pc or .pcir file; an invalid .pcir is the user's error."""
    if not Path(path).is_file():
        raise UserError(Diagnostic(Loc(path), "no such file"))
    if path.endswith(".pcir"):
        try:
            return read_ir(path)
        except VerifyError as e:
            raise UserError(Diagnostic(Loc(path), "invalid IR:\n" + e.render())) from None
    if not path.endswith(".pc"):
        raise UserError(Diagnostic(Loc(path), "expected a .pc or .pcir file"))
    return load_file(path)


def cmd_check(args: argparse.Namespace) -> int:
    """``pcc check FILE``: exit 0 and a one-line summary when the file is valid."""
    c = load_input(args.file)
    print(f"{args.file}: ok: {len(c.variables)} variables, {len(c.blocks)} blocks, "
          f"{c.num_nodes()} nodes, {c.num_sum_edges()} sum edges")
    return 0


def _options(args: argparse.Namespace) -> Options:
    known = set(REGISTRY) | {"all"}
    bad = [n for n in args.print_ir_after if n not in known]
    if bad:
        raise UserError(Diagnostic(Loc("<command line>"), f"--print-ir-after: unknown pass '{bad[0]}'"))
    return Options(verify_each=not args.no_verify, print_after=frozenset(args.print_ir_after),
                   time_passes=args.time_passes)


def cmd_opt(args: argparse.Namespace) -> int:
    """``pcc opt FILE -p PIPELINE [-o OUT]``: the optimized IR."""
    passes = parse_pipeline(args.passes)
    circuit = run_pipeline(load_input(args.file), passes, _options(args))
    _emit_ir(circuit, args.output)
    return 0


def _emit_ir(circuit: Circuit, output: str | None) -> None:
    if output:
        write_ir(circuit, output)
    else:
        sys.stdout.write(to_text(circuit))


def cmd_compile(args: argparse.Namespace) -> int:
    """``pcc compile FILE.pc --emit STAGE``: print or write one stage, optionally dumping all of them."""
    if not args.file.endswith(".pc"):
        raise UserError(Diagnostic(Loc(args.file), "pcc compile expects a .pc file"))
    if args.emit is None:  # -o DIR means a module folder; -o FILE.pcir or stdout, the layered IR
        args.emit = "module" if args.output and not args.output.endswith(".pcir") else "layered"
    if args.emit == "module" and not args.output:
        raise UserError(Diagnostic(Loc("<command line>"), "--emit module writes a folder: give -o DIR"))
    dump_dir = Path(args.dump_dir) if args.dump_dir else None
    if dump_dir:
        dump_dir.mkdir(parents=True, exist_ok=True)
    passes = parse_pipeline(args.passes)
    if args.emit == "ast" or dump_dir:
        ast_text = dump(parse_ast(args.file)) + "\n"
        if dump_dir:
            write_text_atomic(dump_dir / "00-ast.txt", ast_text)
        if args.emit == "ast":
            return _write(ast_text, args.output)
    circuit = load_input(args.file)
    if dump_dir:
        write_ir(circuit, dump_dir / "01-ir.pcir")
    if args.emit == "ir":
        return _emit_ir(circuit, args.output) or 0
    opts = _options(args)
    if dump_dir:
        opts.on_ir = stage_writer(dump_dir)
    layered = run_pipeline(circuit, passes, opts)
    if args.emit == "layered":
        _emit_ir(layered, args.output)
    elif args.emit == "module":
        from pcc.backend.module import write_module
        plan = write_module(layered, args.output, source=str(Path(args.file).resolve()), pipeline=args.passes)
        print(f"wrote {args.output}/: {plan.rows} rows, {len(plan.layers)} layers, "
              f"{sum(len(ops) for ops in plan.layers)} kernel launches per pass")
    else:
        from pcc.backend.codegen import generate
        from pcc.backend.plan import build_plan
        plan = build_plan(layered)
        _write(plan.describe() if args.emit == "plan" else generate(plan, source=args.file, pipeline=args.passes), args.output)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``pcc train MODEL --data TRAIN -o CKPT``: EM training with per-epoch logs and checkpoints."""
    from pcc.train import TrainConfig, train
    cfg = TrainConfig(args.epochs, args.batch_size, args.em, args.step_size, args.pseudocount, args.seed,
                      args.device, args.executor, args.keep_best, args.patience, args.dtype, args.nproc, args.precision,
                      args.recompute, args.fuse_inputs)
    train(args.model, args.data, args.output, cfg, args.valid)
    return 0


def cmd_gen(args: argparse.Namespace) -> int:
    """``pcc gen STRUCTURE ... [-o OUT.pc]``: a readable .pc file of a standard structure."""
    from pcc.structures.generate import generate
    try:
        text = generate(args)
    except ValueError as e:
        raise UserError(Diagnostic(Loc("<command line>"), str(e))) from None
    return _write(text, args.output)


def cmd_eval(args: argparse.Namespace) -> int:
    """``pcc eval CKPT --data TEST``: the mean log-likelihood (and bits per dimension for images)."""
    from pcc import data as datasets
    from pcc.backend.runtime import CircuitModel
    from pcc.train import describe, evaluate, load_circuit, read_data
    circuit, _ = load_circuit(args.checkpoint)
    model = CircuitModel(circuit, args.device, executor=args.executor)
    x = read_data(args.data, model)
    ll = evaluate(model, x, args.batch_size)
    print(f"{args.data}: mean log-likelihood {describe(ll, x.shape[1], datasets.is_image_data(args.data))} "
          f"over {len(x)} samples")
    return 0


def _query_model(args: argparse.Namespace):
    from pcc.backend.runtime import CircuitModel
    from pcc.train import load_circuit
    circuit, _ = load_circuit(args.checkpoint)
    return CircuitModel(circuit, args.device, executor=args.executor)


def _load_array(path: str, what: str):
    from pcc import data as datasets
    return datasets.load(path)


def _load_mask(path: str, shape: tuple, what: str):
    """A 0/1 mask file of exactly ``shape`` as a bool array."""
    import numpy as np
    from pcc import data as datasets
    m = datasets.load(path)
    if m.shape != tuple(shape):
        raise UserError(Diagnostic(Loc(path), f"{what} has shape {list(m.shape)}, expected {list(shape)}"))
    if not np.isin(m, (0, 1)).all():
        raise UserError(Diagnostic(Loc(path), f"{what} must hold only 0 and 1 (1 = observed)"))
    return m.astype(bool)


def _save_array(path: str, a) -> None:
    """``.npy`` or ``.csv``/``.txt``, written to a temporary file and renamed into place."""
    import numpy as np
    if not path.endswith((".npy", ".csv", ".txt")):
        raise UserError(Diagnostic(Loc(path), "output must end in .npy, .csv or .txt"))
    tmp = Path(path).with_name(Path(path).name + ".tmp" + Path(path).suffix)
    try:
        if path.endswith(".npy"):
            np.save(tmp, a)
        else:
            np.savetxt(tmp, a, fmt="%.17g", delimiter=",")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(Diagnostic(Loc(path), f"cannot write: {e.strerror or e}")) from None


def write_png(path: str, images, categories: int) -> None:
    """A grey-scale PNG grid of square images ``[n, s*s]`` (values 0..categories-1, or real: min-max scaled)."""
    import struct
    import zlib
    import numpy as np
    x = np.asarray(images, dtype=np.float64)
    n, v = x.shape
    s = int(round(v ** 0.5))
    if s * s != v:
        raise UserError(Diagnostic(Loc("<command line>"), f"--png needs a square number of variables, the model has {v}"))
    if categories > 1:
        g = x / (categories - 1)
    else:
        lo, hi = x.min(), x.max()
        g = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    g = (np.clip(g, 0, 1) * 255).round().astype(np.uint8).reshape(n, s, s)
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = max(1, -(-n // cols))
    grid = np.full((rows * (s + 1) + 1, cols * (s + 1) + 1), 128, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[1 + r * (s + 1) : 1 + r * (s + 1) + s, 1 + c * (s + 1) : 1 + c * (s + 1) + s] = g[i]
    h, w = grid.shape
    raw = b"".join(b"\x00" + grid[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    try:
        Path(path).write_bytes(png)
    except OSError as e:
        raise UserError(Diagnostic(Loc(path), f"cannot write: {e.strerror or e}")) from None


def cmd_sample(args: argparse.Namespace) -> int:
    """``pcc sample CKPT -n N -o OUT [--evidence E --mask M] [--png GRID.png]``.

    With R evidence rows the output holds N samples per row, row r's at ``[r*N, (r+1)*N)``.
    """
    import numpy as np
    import torch
    if args.num_samples < 1:
        raise UserError(Diagnostic(Loc("<command line>"), "-n must be at least 1"))
    if args.batch_size < 1:
        raise UserError(Diagnostic(Loc("<command line>"), "--batch-size must be at least 1"))
    if (args.evidence is None) != (args.mask is None):
        raise UserError(Diagnostic(Loc("<command line>"), "--evidence and --mask go together (mask: 1 = observed)"))
    model = _query_model(args)
    gen = torch.Generator(device=model.device_).manual_seed(args.seed)
    if args.evidence:
        ev = _load_array(args.evidence, "evidence")
        if ev.shape[1] != model.num_vars:
            raise UserError(Diagnostic(Loc(args.evidence), f"evidence has {ev.shape[1]} columns, the model has {model.num_vars} variables"))
        mask = _load_mask(args.mask, ev.shape, "mask")
        ev, mask = np.repeat(ev, args.num_samples, axis=0), np.repeat(mask, args.num_samples, axis=0)
    else:
        ev = mask = None
    total = args.num_samples if ev is None else len(ev)
    parts = []
    for i in range(0, total, args.batch_size):
        k = min(args.batch_size, total - i)
        if ev is None:
            parts.append(model.sample(k, generator=gen).cpu().double().numpy())
        else:
            parts.append(model.sample(k, ev[i : i + k], mask[i : i + k], generator=gen).cpu().double().numpy())
    out = np.concatenate(parts)
    _save_array(args.output, out)
    msg = f"wrote {args.output}: {out.shape[0]} samples of {out.shape[1]} variables"
    if args.png:
        ks = {v.domain.categories for v in model.circuit.variables}
        write_png(args.png, out, max(ks) if 0 not in ks else 0)
        msg += f"; image grid {args.png}"
    print(msg)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """``pcc query CKPT {marginal,conditional,map} --data X [--mask M] [--query-mask Q] -o OUT``."""
    import numpy as np
    from pcc.backend import queries
    if args.batch_size < 1:
        raise UserError(Diagnostic(Loc("<command line>"), "--batch-size must be at least 1"))
    if args.kind == "conditional" and args.mask is None:
        raise UserError(Diagnostic(Loc("<command line>"), "conditional queries need --mask (1 = evidence)"))
    if args.query_mask and args.kind != "conditional":
        raise UserError(Diagnostic(Loc("<command line>"), "--query-mask is for conditional queries only"))
    model = _query_model(args)
    x = _load_array(args.data, "data")
    if x.shape[1] != model.num_vars:
        raise UserError(Diagnostic(Loc(args.data), f"data has {x.shape[1]} columns, the model has {model.num_vars} variables"))
    mask = _load_mask(args.mask, x.shape, "mask") if args.mask else np.full(x.shape, args.kind != "map")
    qmask = _load_mask(args.query_mask, x.shape, "query mask") if args.query_mask else None
    parts, lps = [], []
    for i in range(0, len(x), args.batch_size):
        sl = slice(i, i + args.batch_size)
        if args.kind == "marginal":
            parts.append(queries.marginal(model, x[sl], mask[sl]).cpu().double().numpy())
        elif args.kind == "conditional":
            parts.append(queries.conditional(model, x[sl], mask[sl], None if qmask is None else qmask[sl]).cpu().double().numpy())
        else:
            state, lp = queries.map_state(model, x[sl], mask[sl])
            parts.append(state.cpu().double().numpy())
            lps.append(lp.cpu().double().numpy())
    out = np.concatenate(parts)
    _save_array(args.output, out)
    if args.kind == "map":
        print(f"wrote {args.output}: {len(out)} MAP states; mean log p(state) {np.concatenate(lps).mean():.6g}")
    else:
        finite = out[np.isfinite(out)]
        mean = f"{finite.mean():.6g}" if len(finite) else "-inf"
        print(f"wrote {args.output}: {len(out)} {args.kind} log-probabilities; mean {mean}")
    return 0


def cmd_import_pyjuice(args: argparse.Namespace) -> int:
    """``pcc import-pyjuice MODEL.jpc -o OUT.pc``: a PyJuice circuit as a .pc file plus its tensor file."""
    from pcc.interop.pyjuice import import_file
    try:
        out = import_file(args.file, args.output)
    except ValueError as e:
        raise UserError(Diagnostic(Loc(args.file), str(e))) from None
    print(f"{args.file}: wrote {out} and {out.with_suffix('.safetensors')}")
    return 0


def _write(text: str, output: str | None) -> int:
    if output:
        write_text_atomic(output, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
