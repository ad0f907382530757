"""Benchmarks whose numbers go into docs/benchmarks.md (by hand, with the command that produced them).

    python tools/bench.py RECIPE [k=v ...] [--steps N]          training throughput: what `sslp bench` prints
    python tools/bench.py eval [--backbone RUN_DIR] [--lambda L] evaluation: L-BFGS probe vs scikit-learn,
                                                                faiss kNN vs brute-force numpy
    python tools/bench.py cli [--runs N]                         wall time of the quick commands (`sslp --help`,
                                                                `sslp zoo list`, `sslp recipes ls`), fresh processes

Training: `ssl_platform.bench` (the same as `sslp bench`): the engine, a plain PyTorch + lightly loop, the
model step alone and the input pipeline alone on one recipe, their samples/s and ratios, and one JSON line.

Evaluation: features of all 60000 Fashion-MNIST training and 10000 test images (cached in
`--cache`), then (1) our L-BFGS logistic regression against scikit-learn's `LogisticRegression` on
the same standardised features, the same objective (C = 1 / (λ n)) and the same tolerance: wall
time and test accuracy of each; (2) the faiss kNN (k=20, T=0.07) against a brute-force numpy kNN
(matmul, argpartition, the same exp(sim/T) vote): wall time and whether every prediction agrees.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ssl_platform import bench
from ssl_platform.provenance import git_sha


def numpy_knn(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int, temperature: float,
              num_classes: int, chunk: int = 1000) -> np.ndarray:
    """The naive reference: cosine similarity by matmul, top-k by argpartition, weighted vote."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    preds = []
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ bank.T  # [c, N]
        top = np.argpartition(-sims, k, axis=1)[:, :k]  # [c, k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / temperature)
        votes = np.zeros((len(top), num_classes))
        np.add.at(votes, (np.arange(len(top))[:, None], bank_labels[top]), weights)
        preds.append(votes.argmax(axis=1))
    return np.concatenate(preds)


def bench_eval(backbone_dir: str, lam: float, cache: Path, tol: float) -> dict:
    from sklearn.linear_model import LogisticRegression

    from ssl_platform.checkpoint.io import load_backbone
    from ssl_platform.data.datasets import FashionMNIST
    from ssl_platform.data.transforms import EvalTransform
    from ssl_platform.evaluation.features import extract_features
    from ssl_platform.evaluation.knn import knn_predict
    from ssl_platform.evaluation.lbfgs import LAMBDAS, standardise
    from ssl_platform.evaluation.linear import fit_logistic_regression, linear_probe, stratified_split

    if cache.exists():
        x, y, xt, yt = torch.load(cache)
    else:
        backbone, transform = load_backbone(Path(backbone_dir) / "backbone.safetensors"), EvalTransform(28, 1)
        x, y = extract_features(backbone, FashionMNIST("train"), transform, num_workers=1)
        xt, yt = extract_features(backbone, FashionMNIST("test"), transform, num_workers=1)
        torch.save((x, y, xt, yt), cache)
    xs, xts = standardise(x.double(), xt.double())

    start = time.perf_counter()
    weight, bias = fit_logistic_regression(xs, y, 10, lam, max_iter=1000, tol=tol)
    ours_s = time.perf_counter() - start
    ours_acc = 100.0 * ((xts @ weight + bias).argmax(1) == yt).double().mean().item()

    clf = LogisticRegression(C=1.0 / (lam * len(y)), tol=tol, max_iter=1000)
    start = time.perf_counter()
    clf.fit(xs.numpy(), y.numpy())
    sk_s = time.perf_counter() - start
    sk_acc = 100.0 * (clf.predict(xts.numpy()) == yt.numpy()).mean()

    # the whole protocol: 9 λ on a stratified 20% validation split, then the refit on all of train.
    # Ours warm-starts each λ from the previous (larger) one; scikit-learn fits each λ from scratch,
    # as a per-C loop or a grid search over LogisticRegression does.
    start = time.perf_counter()
    probe = linear_probe(x, y, xt, yt, lambdas=LAMBDAS, max_iter=1000, tol=tol)
    ours_sweep_s = time.perf_counter() - start
    fit_idx, val_idx = stratified_split(y, 0.2, 0)
    start = time.perf_counter()
    xf, xv = standardise(x[fit_idx].double(), x[val_idx].double())
    val_acc = {}
    for value in LAMBDAS:
        sweep = LogisticRegression(C=1.0 / (value * len(fit_idx)), tol=tol, max_iter=1000)
        sweep.fit(xf.numpy(), y[fit_idx].numpy())
        val_acc[value] = (sweep.predict(xv.numpy()) == y[val_idx].numpy()).mean()
    best = max(sorted(val_acc, reverse=True), key=lambda v: val_acc[v])  # ties to the larger λ, as ours
    refit = LogisticRegression(C=1.0 / (best * len(y)), tol=tol, max_iter=1000).fit(xs.numpy(), y.numpy())
    sk_sweep_s = time.perf_counter() - start
    sk_sweep_acc = 100.0 * (refit.predict(xts.numpy()) == yt.numpy()).mean()

    start = time.perf_counter()
    faiss_pred = knn_predict(x, y, xt, k=20, temperature=0.07, num_classes=10)
    faiss_s = time.perf_counter() - start
    start = time.perf_counter()
    np_pred = numpy_knn(x.numpy(), y.numpy(), xt.numpy(), k=20, temperature=0.07, num_classes=10)
    np_s = time.perf_counter() - start
    return {
        "features": list(x.shape), "test": list(xt.shape), "backbone": backbone_dir, "lambda": lam, "tol": tol,
        "lbfgs_s": round(ours_s, 2), "lbfgs_top1": round(ours_acc, 2),
        "sklearn_s": round(sk_s, 2), "sklearn_top1": round(sk_acc, 2), "sklearn_iters": int(clf.n_iter_[0]),
        "speedup": round(sk_s / ours_s, 1),
        "sweep_lbfgs_s": round(ours_sweep_s, 1), "sweep_lbfgs_top1": round(probe.test_accuracy, 2),
        "sweep_lbfgs_lambda": probe.best_lambda, "sweep_sklearn_s": round(sk_sweep_s, 1),
        "sweep_sklearn_top1": round(sk_sweep_acc, 2), "sweep_sklearn_lambda": best,
        "sweep_speedup": round(sk_sweep_s / ours_sweep_s, 1),
        "knn_faiss_s": round(faiss_s, 2), "knn_numpy_s": round(np_s, 2),
        "knn_predictions_equal": f"{int((faiss_pred.numpy() == np_pred).sum())}/{len(np_pred)}",
        "git": git_sha(), "threads": torch.get_num_threads(),
    }


CLI_COMMANDS = (["--help"], ["zoo", "list"], ["recipes", "ls"])


def bench_cli(runs: int) -> dict:
    """Median wall seconds of each quick command in a fresh interpreter (what a user waits for), and
    whether it imported torch."""
    result = {"git": git_sha()}
    for args in CLI_COMMANDS:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ssl_platform", *args], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "ssl_platform", *args],
                               capture_output=True, text=True, check=True)
        result[" ".join(["sslp", *args])] = {"median_s": round(statistics.median(times), 3),
                                             "imports_torch": bool(re.search(r"\|\s+torch$", probe.stderr, re.MULTILINE))}
    return result


def main() -> int:
    if sys.argv[1:2] == ["cli"]:
        parser = argparse.ArgumentParser(prog="bench.py cli")
        parser.add_argument("--runs", type=int, default=5)
        print(json.dumps(bench_cli(parser.parse_args(sys.argv[2:]).runs)))
        return 0
    if sys.argv[1:2] == ["eval"]:
        parser = argparse.ArgumentParser(prog="bench.py eval", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--backbone", default="runs/simclr_resnet18_fmnist_1ep")
        parser.add_argument("--lambda", dest="lam", type=float, default=1e-4)
        parser.add_argument("--tol", type=float, default=1e-4)
        parser.add_argument("--cache", type=Path, default=Path("runs/bench_fmnist_features.pt"))
        args = parser.parse_args(sys.argv[2:])
        print(json.dumps(bench_eval(args.backbone, args.lam, args.cache, args.tol)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    args = parser.parse_args()
    result = bench.bench(args.recipe, args.overrides, steps=args.steps, warmup=args.warmup)
    print(bench.table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
