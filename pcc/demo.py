"""The main job of ``./run.sh demo``: compile a model and train it on real data, on the CPU or a GPU.

By default: ``examples/pd8x8.pc`` (a Poon-Domingos circuit over 8x8 images with 17 grey levels) trained on
scikit-learn's bundled handwritten digits (1797 images, no download), 1500 for training and the rest for
testing. ``--model FILE.pc --train TRAIN --test TEST`` trains any model on data you name instead. Steps,
each printed: compile (every stage written to ``out/demo/``), mini-batch EM, full-batch EM, test
log-likelihood; the checkpoint is ``out/demo/model.ckpt`` (``pcc eval`` reads it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pcc.api import stage_writer, write_ir
from pcc.frontend import load_file
from pcc.passes import DEFAULT_PIPELINE, Options, parse_pipeline, run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def digits(out: Path) -> tuple[Path, Path]:
    """scikit-learn's 8x8 digits (values 0..16) split 1500/297, written as .npy files."""
    from sklearn.datasets import load_digits
    x = load_digits().data.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    np.save(out / "train.npy", x[order[:1500]])
    np.save(out / "test.npy", x[order[1500:]])
    return out / "train.npy", out / "test.npy"


def compile_stages(model: Path, out: Path) -> None:
    """Parse and optimise, writing every stage's IR to ``out`` (what ``--dump-dir`` does)."""
    start = time.perf_counter()
    circuit = load_file(model)
    write_ir(circuit, out / "01-ir.pcir")
    layered = run_pipeline(circuit, parse_pipeline(DEFAULT_PIPELINE), Options(on_ir=stage_writer(out)))
    print(f"compiled {model.name}: {len(layered.variables)} variables, {layered.num_nodes()} nodes, "
          f"{layered.num_sum_edges()} sum edges, {layered.attrs['layers']} layers "
          f"({time.perf_counter() - start:.2f}s; stages in {out}/)")


def main(argv: list[str]) -> int:
    """Run the demo; returns an exit code."""
    from pcc import data as datasets
    from pcc.train import TrainConfig, describe, evaluate, train

    ap = argparse.ArgumentParser(prog="./run.sh demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "examples" / "pd8x8.pc"))
    ap.add_argument("--train", help="training data (default: scikit-learn digits)")
    ap.add_argument("--test", help="test data (default: scikit-learn digits)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)
    out = Path("out/demo")
    out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = (Path(args.train), Path(args.test)) if args.train else digits(out)
    compile_stages(Path(args.model), out)
    ckpt = out / "model.ckpt"
    print(f"mini-batch EM on {train_path} ({args.device}):")
    train(args.model, str(train_path), str(ckpt), TrainConfig(epochs=args.epochs, batch_size=256, em="mini",
                                                               step_size=0.2, pseudocount=0.5, device=args.device))
    print("full-batch EM:")
    model = train(str(ckpt), str(train_path), str(ckpt), TrainConfig(epochs=3, batch_size=512, em="full",
                                                                      pseudocount=0.5, device=args.device))
    x = datasets.load(test_path)
    datasets.check_domains(x, [v.domain for v in model.circuit.variables], str(test_path))
    ll = evaluate(model, x, 512)
    print(f"test: mean log-likelihood {describe(ll, x.shape[1], True)} over {len(x)} images; checkpoint {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
