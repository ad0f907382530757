"""Benchmarks whose numbers go into docs/benchmarks.md (by hand, with the command that produced them).

    python tools/bench.py RECIPE [k=v ...] [--steps N]          training throughput: what `sslp bench` prints
    python tools/bench.py eval [--backbone RUN_DIR] [--lambda L] evaluation: L-BFGS probe vs scikit-learn,
                                                                faiss kNN vs brute-force numpy
    python tools/bench.py cli [--runs N]                         wall time of the quick commands (`sslp --help`,
                                                                `sslp zoo list`, `sslp recipes ls`), fresh processes
    python tools/bench.py read FOLDER [--workers N] [--items K]   read throughput: an image folder, its shards read
                                                                locally, the same shards over http

Training: `ssl_platform.bench` (the same as `sslp bench`): the engine, a plain PyTorch + lightly loop, the
model step alone and the input pipeline alone on one recipe, their samples/s and ratios, and one JSON line.

Evaluation: features of all 60000 Fashion-MNIST training and 10000 test images (cached in
`--cache`), then (1) our L-BFGS logistic regression against scikit-learn's `LogisticRegression` on
the same standardised features, the same objective (C = 1 / (λ n)) and the same tolerance: wall
time and test accuracy of each; (2) the faiss kNN (k=20, T=0.07) against a brute-force numpy kNN
(matmul, argpartition, the same exp(sim/T) vote): wall time and whether every prediction agrees.

Read: the raw items of an image folder (`ImageFolder`: open and decode each file), of its shards on a
local disk (`ShardDataset` on the directory `sslp data shard` writes; written to a temporary directory
first unless `--shards` names them) and of the same shards over http (served from 127.0.0.1 by the
server the tests use, read through a cold cache in a temporary directory). No transform: a
`DataLoader` with `--workers` workers hands out batches of raw `(image, label)` items, in one seeded
shuffled order (the training order's access pattern: random, not sequential) of the first `--items`
positions, the same for all three. samples/s is items over the wall time of the whole pass.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssl_platform import bench
from ssl_platform.data.datasets import ImageFolder, ShardDataset
from ssl_platform.data.shards import write_shards
from ssl_platform.provenance import git_sha

ROOT = Path(__file__).resolve().parents[1]


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


def _http_server():
    """tests/data/http_shards.py (the server the shard tests use), loaded by path: tests/ is not a package."""
    spec = importlib.util.spec_from_file_location("http_shards", ROOT / "tests" / "data" / "http_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keep(items: list) -> list:
    """The collate of a raw read: the batch stays a list of items (a module function: workers pickle it)."""
    return items


def read_rate(dataset: Dataset, order: list[int], workers: int, batch: int) -> float:
    """samples/s of reading `dataset[i]` for every i of `order` through a DataLoader, startup included."""
    loader = DataLoader(dataset, batch_size=batch, sampler=order, num_workers=workers, collate_fn=_keep)
    start, seen = time.perf_counter(), 0
    for items in loader:
        seen += len(items)
    elapsed = time.perf_counter() - start
    if seen != len(order):
        raise RuntimeError(f"read {seen} items of {len(order)}")
    return seen / elapsed


def bench_read(source: Path, shards: Path | None, workers: int, items: int | None, batch: int,
               shard_size: str, seed: int = 0) -> dict:
    """Read throughput of `source` (an image folder), its shards on disk and over http (see the module docstring)."""
    folder = ImageFolder(source)
    n = len(folder) if items is None else min(items, len(folder))
    order = np.random.default_rng(seed).permutation(n).tolist()
    with tempfile.TemporaryDirectory(prefix="sslp-bench-read-") as tmp:
        if shards is None:
            shards = Path(tmp) / "shards"
            write_shards(folder, shards, shard_size=shard_size, source=str(source))
        files = sorted(shards.glob("*.bin"))
        result = {"source": str(source), "items": n, "workers": workers, "batch": batch,
                  "shards": len(files), "shard_bytes": sum(f.stat().st_size for f in files)}
        result["folder"] = read_rate(folder, order, workers, batch)
        local = ShardDataset(str(shards))
        if len(local) != len(folder):
            raise ValueError(f"{shards} holds {len(local)} items and {source} {len(folder)}: shards of another "
                             "folder? Leave out --shards to write them from the folder")
        result["shards_local"] = read_rate(local, order, workers, batch)
        with _http_server().serve_directory(shards) as url:
            remote = ShardDataset(url, cache_dir=str(Path(tmp) / "http_cache"))  # cold: a new directory
            result["shards_http"] = read_rate(remote, order, workers, batch)
    for key in ("folder", "shards_local", "shards_http"):
        result[key] = round(result[key], 1)
    result.update(git=git_sha(), threads=torch.get_num_threads())
    return result


def read_table(result: dict) -> str:
    rows = [("folder (ImageFolder)", result["folder"]), ("shards, local directory", result["shards_local"]),
            ("shards over http, cold cache", result["shards_http"])]
    head = (f"{result['items']} items, {result['workers']} workers, batch {result['batch']}, "
            f"{result['shards']} shards of {result['shard_bytes'] / 2**20:.1f} MiB in all")
    return "\n".join([head, *(f"  {name:<30} {rate:>10.1f} samples/s" for name, rate in rows)])


def main() -> int:
    if sys.argv[1:2] == ["read"]:
        parser = argparse.ArgumentParser(prog="bench.py read", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("source", type=Path, help="an image folder (ImageFolder's layouts)")
        parser.add_argument("--shards", type=Path, help="its shards (`sslp data shard`); default: written to a temp dir")
        parser.add_argument("--shard-size", default="256MB", help="when writing the shards (default 256MB)")
        parser.add_argument("--workers", type=int, default=0)
        parser.add_argument("--items", type=int, help="read the first K items (default: all)")
        parser.add_argument("--batch", type=int, default=64)
        args = parser.parse_args(sys.argv[2:])
        if args.workers < 0 or args.batch < 1 or (args.items is not None and args.items < 1):
            parser.error("--workers must be >= 0, --batch and --items >= 1")
        result = bench_read(args.source, args.shards, args.workers, args.items, args.batch, args.shard_size)
        print(read_table(result))
        print(json.dumps(result))
        return 0
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
