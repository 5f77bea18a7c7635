"""Training and evaluation drivers behind ``pcc train`` and ``pcc eval``.

``load_model`` accepts a .pc file (compiled with the default pipeline), a .pcir file, a compiled module
folder or a checkpoint (to continue training). ``train`` runs mini-batch EM (``em="mini"``: one update per
batch with the step size) or full-batch EM (``em="full"``: flows of the whole set, one update per epoch),
logs train/valid log-likelihood per epoch (bits per dimension for image data), and writes the checkpoint
atomically after every epoch, so an interrupted run leaves the last complete epoch on disk.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from pcc import data as datasets
from pcc.api import optimize, read_ir
from pcc.frontend import load_file
from pcc.ir import Circuit, UserError
from pcc.ir.diagnostics import Diagnostic, Loc
from pcc.ir.params import derive_seed
from pcc.backend.runtime import CircuitModel, load_checkpoint
from pcc.distributed import Group, from_environment, spawn


def load_circuit(path: str) -> tuple[Circuit, dict]:
    """A layered circuit (and checkpoint metadata, if any) from a .pc, .pcir, module folder or checkpoint."""
    p = Path(path)
    if p.is_dir():
        from pcc.backend.module import load_module_circuit
        return load_module_circuit(p), {}
    if not p.is_file():
        raise UserError(Diagnostic(Loc(path), "no such model file"))
    if path.endswith(".pc"):
        return optimize(load_file(path)), {}
    if path.endswith(".pcir"):
        c = read_ir(path)
        return (c if c.attrs.get("layered") else optimize(c)), {}
    return load_checkpoint(path)


def reseed(circuit: Circuit, seed: int) -> None:
    """Give every random tensor a seed derived from ``seed`` (``--seed`` re-initialises a model)."""
    for name, t in circuit.tensors.items():
        if t.data is None:
            t.seed, t.cache = derive_seed(seed, name), None


@dataclass
class TrainConfig:
    """Options of ``pcc train`` (see ``pcc train --help``)."""

    epochs: int = 10
    batch_size: int = 512
    em: str = "mini"
    step_size: float = 0.1
    pseudocount: float = 0.1
    seed: int = 0
    device: str = "auto"
    executor: str = "auto"
    keep_best: bool = False  # with validation data: the checkpoint holds the best-validation epoch
    patience: int = 0        # with validation data: stop after this many epochs without improvement (0: never)
    dtype: str = "float32"   # float64 runs on the plain-torch executor
    nproc: int = 1           # data-parallel processes (pcc.distributed)
    precision: str = "tf32x3"  # Triton executor's matrix-product precision (bf16: reduced, see docs/benchmarks.md)
    recompute: bool | str = True  # what the backward computes again instead of keeping (valuemap.level)
    fuse_inputs: bool | None = None  # inputs computed by the products that read them (None: fusion.FUSE)


def read_data(path: str, model: CircuitModel) -> np.ndarray:
    """A data set checked against the model's variables (count and domains)."""
    x = datasets.load(path)
    datasets.check_domains(x, [v.domain for v in model.circuit.variables], path)
    return x


def evaluate(model: CircuitModel, x: np.ndarray, batch_size: int, group: Group | None = None) -> float:
    """Mean log-likelihood (nats per sample) of the rows of ``x`` (shared out over a process group)."""
    group = group or Group()
    total = 0.0
    for idx in datasets.batches(x, batch_size, shuffle=False, seed=0):
        if len(mine := group.shard(idx)):
            total += model.log_prob(x[mine]).double().sum().item()
    return group.total(total, model.device_) / len(x)


def describe(ll: float, dims: int, image: bool) -> str:
    """``-6.123`` or ``-6.123 (1.234 bpd)`` for image data."""
    return f"{ll:.4f}" + (f" ({-ll / (dims * math.log(2)):.4f} bpd)" if image else "")


def train(model_path: str, data_path: str, out: str, cfg: TrainConfig, valid_path: str | None = None,
          log: TextIO = sys.stdout) -> CircuitModel | None:
    """Train with EM and write the checkpoint ``out`` after every epoch; see the module docstring.

    With ``cfg.nproc > 1`` the work is spread over that many processes (returns None in the caller).
    """
    if cfg.nproc > 1:
        if cfg.nproc > 64:
            raise UserError(Diagnostic(Loc("<command line>"), "--nproc must be between 1 and 64"))
        spawn(cfg.nproc, _train_one, model_path, data_path, out, cfg, valid_path)
        return None
    return _train_one(model_path, data_path, out, cfg, valid_path, log)


def _train_one(model_path: str, data_path: str, out: str, cfg: TrainConfig, valid_path: str | None = None,
               log: TextIO = sys.stdout) -> CircuitModel:
    if cfg.em not in ("mini", "full"):
        raise UserError(Diagnostic(Loc("<command line>"), f"--em must be 'mini' or 'full', not {cfg.em!r}"))
    if cfg.epochs < 1 or cfg.batch_size < 1 or not 0 < cfg.step_size <= 1 or cfg.pseudocount < 0:
        raise UserError(Diagnostic(Loc("<command line>"), "need --epochs >= 1, --batch-size >= 1, 0 < --step-size <= 1, --pseudocount >= 0"))
    group = from_environment()
    circuit, meta = load_circuit(model_path)
    if cfg.seed and not meta:
        reseed(circuit, cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.dtype not in ("float32", "float64"):
        raise UserError(Diagnostic(Loc("<command line>"), f"--dtype must be float32 or float64, not {cfg.dtype!r}"))
    dtype = getattr(torch, cfg.dtype)
    device = f"cuda:{group.rank}" if group.world > 1 and cfg.device in ("auto", "cuda") and torch.cuda.is_available() else cfg.device
    model = CircuitModel(circuit, device, dtype=dtype, executor="torch" if dtype == torch.float64 else cfg.executor,
                         precision=cfg.precision, recompute=cfg.recompute,
                         fuse_inputs=cfg.fuse_inputs)
    if group.world > 1:
        model.use_graphs = False  # flows are summed over processes between the backward pass and the update
    if group.rank:
        log = open(os.devnull, "w")  # noqa: SIM115 - only rank 0 reports
    x = read_data(data_path, model)
    xv = read_data(valid_path, model) if valid_path else None
    if (cfg.keep_best or cfg.patience) and xv is None:
        raise UserError(Diagnostic(Loc("<command line>"), "--keep-best and --patience need --valid data"))
    image = datasets.is_image_data(data_path)
    done = int(meta.get("epochs", 0))
    best, stale = float(meta.get("valid_ll", -math.inf)) if cfg.keep_best else -math.inf, 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        train_ll = _epoch(model, x, cfg, seed=cfg.seed * 1_000_003 + done + epoch, group=group)
        line = f"epoch {done + epoch}  train {describe(train_ll, x.shape[1], image)}"
        info = {"epochs": done + epoch, "em": cfg.em, "train_ll": train_ll, "data": str(data_path)}
        valid = evaluate(model, xv, cfg.batch_size, group) if xv is not None else None
        if valid is not None:
            line += f"  valid {describe(valid, x.shape[1], image)}"
            info["valid_ll"] = valid
        improved = valid is None or valid > best
        if (improved or not cfg.keep_best) and group.rank == 0:
            model.save(out, info)
        if valid is not None and valid > best:
            best, stale = valid, 0
        elif valid is not None:
            stale += 1
        print(f"{line}{'  (kept)' if cfg.keep_best and improved else ''}  ({time.perf_counter() - start:.1f}s)",
              file=log, flush=True)
        if cfg.patience and stale >= cfg.patience:
            print(f"stopping: no validation improvement for {stale} epochs", file=log, flush=True)
            break
    return model


def _epoch(model: CircuitModel, x: np.ndarray, cfg: TrainConfig, seed: int, group: Group) -> float:
    """One epoch of EM; returns the mean log-likelihood seen during the epoch (before each update)."""
    total = 0.0
    batches = list(datasets.batches(x, cfg.batch_size, shuffle=cfg.em == "mini", seed=seed))
    bar = _Progress(len(batches) if group.rank == 0 else 0)
    for i, idx in enumerate(batches):
        mine = group.shard(idx)
        if cfg.em == "mini" and group.world == 1:
            ll = model.em_step(x[mine], step_size=cfg.step_size, pseudocount=cfg.pseudocount)
        else:
            ll = model.accumulate(x[mine]) if len(mine) else torch.zeros(0)
            if cfg.em == "mini":  # the whole batch's flows on every process, then the same update
                group.sum_(model.flows.all())
                model.em_update(cfg.step_size, cfg.pseudocount)
        total += ll.double().sum().item()
        bar.update(i + 1)
    if cfg.em == "full":
        group.sum_(model.flows.all())
        model.em_update(1.0, cfg.pseudocount)
    bar.close()
    return group.total(total, model.device_) / len(x)


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total, self.on = total, total > 0 and sys.stderr.isatty()

    def update(self, done: int) -> None:
        if self.on:
            filled = 30 * done // max(self.total, 1)
            sys.stderr.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} batches")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\r" + " " * 60 + "\r")
