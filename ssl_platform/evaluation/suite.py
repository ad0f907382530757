"""Evaluation suites: `eval/<suite>.yaml` -> features once per task -> every protocol -> reports.

A suite is flat YAML; every key is checked by `load_suite` (unknown keys fail naming the valid ones):

    name: digits
    tasks:                                    # task name -> its data
      digits:
        kind: classification                  # | regression (rmse, r2) | multilabel (map) | retrieval (R@K)
        train: {_component_: ...Digits, split: train}     # kNN bank, probe and fine-tune training set
        val: null                             # optional: the linear probe picks λ here instead of on a
                                              # split carved from train (then refits on train + val)
        test: {_component_: ...Digits, split: test}       # scored once per setting; never corrupted
        transform: {_component_: ...EvalTransform, size: 8, channels: 1}
        train_transform: null                 # augmentation of fine-tune / linear_sgd (default: transform)
        extractor: null                       # dotted path (default features.extract_features)
        protocols: null                       # this task's subset of eval.protocols
        noise: true                           # false: clean labels only (classification and multi-label)
    eval: {protocols: [knn, linear, probe, linear_sgd, finetune], label_fractions: [0.1, 1.0], seeds: [0, 1]}
    noise: {kinds: [symmetric, asymmetric], rates: [0.2, 0.4], convention: exclusive, mapping: null}
    robust: {methods: [none, gce, sce, elr, nmtune], gce: {q: 0.7}, elr: {beta: 0.7, lam: 3.0}}
    knn: {presets: [k20_t0.07, k200_t0.1]}
    linear: {lambdas: null, val_fraction: 0.2, max_iter: 1000, tol: 1.0e-4}
    probe: {epochs: 30, lr: 1.0e-3, weight_decay: 1.0e-4, batch_size: 64}
    finetune: {epochs: 10, lr: 1.0e-3, losses: [none, elr], layer_decay: null, drop_path: 0.0, ...}
    linear_sgd: {epochs: 10, lr: 0.1, optimizer: sgd, weight_decay: 0.0, losses: [none]}
    mlp: {hidden: [256, 256], alpha: 1.0e-4, lr: 1.0e-3, batch_size: 256, max_iter: 200, val_fraction: 0.1,
          patience: 10}
    gbdt: {max_iter: 500, learning_rate: 0.1, max_leaf_nodes: 31, min_samples_leaf: 20, l2_regularization: 0.0,
           val_fraction: 0.1, patience: 20}
    svm: {cs: [1.0e-3, 1.0e-2, 0.1, 1.0, 10.0], kernel: rbf, folds: 5}
    random_backbone: {name: resnet18, small_input: true, in_chans: 1}   # create_backbone kwargs

What runs, for each task, label fraction, seed and noise setting (clean first, then every kind x rate):

- `knn_<preset>` and `linear` (L-BFGS) on cached features with the (noisy) labels; robust "none";
- `probe`: a head on cached features trained by minibatch AdamW once per `robust.methods` entry
  (cross-entropy, GCE, SCE, ELR, NMTune);
- `linear_sgd` and `finetune` through the engine, once per entry of their own `losses` (regression
  tasks: MSE on standardised targets, `losses: [none]`; RMSE and R²);
- `mlp` and `gbdt` (classification and regression; `tabular.py`): scikit-learn's early-stopped MLP and
  histogram gradient boosting on the cached features. Tables (`eval/tables_*.yaml`) read their rows
  with `extractor: ...features.extract_tabular_features` and compare a backbone with `backbone=raw`
  (the same heads on the raw columns, `tabular.RawTabular`).
- `svm` (classification; `svm.py`): scikit-learn's SVC on standardised cached features, C chosen by
  stratified k-fold cross-validation on the training rows (the graph-classification protocol); reports
  test `top1`, the selected C and its cross-validated accuracy `cv_top1`.
- `retrieval` (tasks of kind retrieval; `retrieval.py`): image-to-text and text-to-image R@1/5/10 over
  the test pairs, ranked by the method's own matching head. It needs the whole pretraining run, so
  the backbone must be given as `RUN_DIR` or `random:RUN_DIR` (each seed a fresh random init).

The labelled subset of a fraction is class-balanced and drawn by the seed from the clean labels;
noise then corrupts that subset's labels, seeded by the same seed, so every backbone sees exactly the
same noisy labels. Instance-dependent noise reads the images' pixels (`features.pixel_summary`),
never the backbone's features, for the same reason. The linear probe's λ is selected on a split of
the noisy labels (a clean validation set is not available in practice).

A suite is read by `suite_validation.py` (`load_suite` and every check) into the sections of
`suite_schema.py`; `tasks.py` loads a task and extracts its features once, `settings.py` walks its label
fractions, seeds and noise settings, and `protocols.py` maps every protocol name to one function. This
module is the runner: it walks the tasks and settings, calls the protocols a task asks for and writes
the results. Only these modules read a suite; the protocols' own modules take plain values. Under
torchrun every rank computes every protocol (fine-tuning trains with DDP; cached-feature protocols
are cheap and deterministic), and rank 0 writes the files.

Progress (stderr, rank 0): the settings of the whole run counted from the suite before it starts,
then "setting k/N" with an ETA from the settings done so far (the time of every setting so far,
feature extraction included, averaged): a bar where stderr is a terminal, else a line per setting.
Feature extraction and retrieval draw their own bars beneath it. `progress=False` turns it off.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from ssl_platform import config, distributed
from ssl_platform.checkpoint.io import write_atomic
from ssl_platform.config import ConfigError
from ssl_platform.engine.run_dir import own_run_dir
from ssl_platform.evaluation.output import write_comparison, write_report
from ssl_platform.evaluation.protocols import PROTOCOLS, Context
from ssl_platform.evaluation.report import append_rows, compare, make_row
from ssl_platform.evaluation.settings import NOISY_KINDS, noise_settings, task_settings
from ssl_platform.evaluation.suite_schema import Suite, TaskConfig
from ssl_platform.evaluation.suite_validation import check_backbone_fit, check_suite_data, load_suite
from ssl_platform.evaluation.tasks import load_task
from ssl_platform.features import show_progress

RESULTS_FILE = "results.jsonl"
# a backbone= value -> (module, name, sha256 of its file or "" for a random init); `zoo.backbones.resolve_backbone`
ResolveBackbone = Callable[[str, DictConfig], tuple[nn.Module, str, str]]


def _log(message: str) -> None:
    if distributed.is_main():
        tqdm.write(f"[eval] {message}", file=sys.stdout)  # above the progress bar, if one is drawn
        sys.stdout.flush()


def count_settings(task: TaskConfig, suite: Suite) -> int:
    """How many settings `settings.task_settings` walks for a task, from the suite alone (before any data)."""
    if task.kind == "retrieval":
        return len(suite.eval.seeds)
    noises = len(noise_settings(suite.noise)) if task.kind in NOISY_KINDS and task.noise else 1
    return len(suite.eval.label_fractions) * len(suite.eval.seeds) * noises


class SuiteProgress:
    """Settings done of a whole suite run, with an ETA from the average time of those done so far, on
    stderr (rank 0): a bar where stderr is a terminal, else (a log file) one line per setting."""

    def __init__(self, total: int, name: str = "", progress: bool = True):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.what = f"eval {name}".strip()
        self.lines = progress and distributed.is_main() and not show_progress(progress)
        self.bar = tqdm(total=total, desc=self.what, dynamic_ncols=True, disable=not show_progress(progress),
                        smoothing=0,  # the average over every setting so far, not the latest ones
                        bar_format="{desc}: setting {n_fmt}/{total_fmt} |{bar}| {elapsed} elapsed, ETA {remaining}")

    def update(self, what: str) -> None:
        self.done += 1
        self.bar.update(1)
        if self.lines:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / self.done * (self.total - self.done)
            print(f"[{self.what}] setting {self.done}/{self.total} done ({what}); {tqdm.format_interval(elapsed)} "
                  f"elapsed, ETA {tqdm.format_interval(eta)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def run_task(
    name: str,
    task: TaskConfig,
    suite: Suite,
    backbone: nn.Module,
    backbone_name: str,
    device: str,
    out_dir: Path,
    backbone_sha256: str = "",
    method_spec: str | None = None,
    progress: SuiteProgress | None = None,
) -> list[dict[str, Any]]:
    """Extract one task's features once, then run every label fraction x seed x noise x protocol
    (each setting done counted by `progress`)."""
    start = time.perf_counter()
    data = load_task(name, task, suite, backbone, device)
    if data.train is not None:
        _log(f"{name}: features {tuple(data.train[0].shape)} train, {tuple(data.test[0].shape)} test "
             f"in {time.perf_counter() - start:.1f}s")
    asked = task.protocols or suite.eval.protocols
    ctx = Context(suite, backbone, backbone_name, backbone_sha256, method_spec, Path(out_dir), device)
    rows = []
    for setting in task_settings(data, suite.eval, suite.noise, task.noise):
        measured = [m for protocol, run in PROTOCOLS.items() if protocol in asked for m in run(data, setting, ctx)]
        rows += [
            make_row(
                task=name, protocol=protocol, metric=metric, value=value, backbone=backbone_name,
                backbone_sha256=backbone_sha256, seed=setting.seed, label_fraction=setting.fraction,
                noise_kind=setting.noise_kind, noise_rate=setting.noise_rate,
                noise_rate_realised=setting.realised_rate, robust=robust,
            )
            for protocol, robust, metric, value in measured
        ]
        _log(f"{name}: fraction {setting.fraction:g}, seed {setting.seed}, noise {setting.noise_kind} "
             f"{setting.noise_rate:g} done ({time.perf_counter() - start:.0f}s)")
        if progress is not None:
            progress.update(f"{name} {setting.name}")
    return rows


def run_suite(
    suite_cfg: DictConfig,
    backbone: nn.Module,
    backbone_name: str,
    out_dir: str | Path,
    device: str = "cpu",
    overwrite: bool = False,
    backbone_sha256: str = "",
    method_spec: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run a suite loaded by `load_suite` on one backbone; write results.jsonl, summary.md, plots, suite.yaml.

    Args:
        suite_cfg: from `load_suite`.
        backbone: timm contract, already on `device`.
        backbone_name: the `backbone` value of every row (run dir name, zoo name, "random").
        out_dir: created if needed; results are appended task by task, so a crash keeps finished tasks.
            Fine-tuning runs live in `out_dir/runs/` (resumable engine run directories).
        device: where features are extracted and probes fitted (kNN runs in faiss on the CPU).
        overwrite: replace earlier results (and fine-tuning runs) instead of refusing.
        backbone_sha256: the backbone file's sha256 ("" for a random init), written into every row.
        method_spec: the `backbone=` value it came from (`RUN_DIR`, `random:RUN_DIR`): retrieval tasks
            rebuild the whole method from it.
        progress: False: no progress line (setting k/N, ETA) on stderr.

    Returns:
        The rows written to results.jsonl.
    """
    out_dir = Path(out_dir)
    with own_run_dir(out_dir, "evaluation run"):  # a second eval into out_dir would mix results.jsonl
        results = out_dir / RESULTS_FILE
        if results.exists() and not overwrite:
            raise FileExistsError(
                f"{results} already exists; pass another out_dir=..., or overwrite=true to replace it "
                "(appending would mix two runs)"
            )
        distributed.barrier()  # every rank has seen the old file before rank 0 removes it
        if distributed.is_main():
            if results.exists():
                results.unlink()
                for old in ("runs", "plots"):  # fine-tuning runs and plots of the replaced results
                    shutil.rmtree(out_dir / old, ignore_errors=True)
            out_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(out_dir / "suite.yaml", OmegaConf.to_yaml(suite_cfg, resolve=True).encode())
        distributed.barrier()
        suite = Suite.from_config(suite_cfg)
        tasks = {str(name): config.section(task, TaskConfig) for name, task in suite_cfg.tasks.items()}
        bar = SuiteProgress(sum(count_settings(task, suite) for task in tasks.values()), backbone_name, progress)
        rows = []
        try:
            for name, task in tasks.items():
                task_rows = run_task(name, task, suite, backbone, backbone_name, device, out_dir, backbone_sha256,
                                     method_spec, bar)
                if distributed.is_main():
                    append_rows(results, task_rows)
                rows += task_rows
        finally:
            bar.close()
        if distributed.is_main():
            write_report(out_dir, rows)
        distributed.barrier()
        return rows


def evaluate(
    suite_path: str | Path,
    backbones: Sequence[str],
    resolve_backbone: ResolveBackbone,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Run a suite on each backbone and compare them: what `sslp eval SUITE backbone=A,B,...` does.

    Args:
        suite_path: the suite file; overrides: its `key=value` overrides.
        backbones: `backbone=` values (run directory, file, zoo name, random, random:RUN_DIR, raw).
        resolve_backbone: (value, loaded suite) -> (module, name, sha256), e.g. `zoo.backbones.resolve_backbone`.
        out_dir: where the results go, for one backbone only; default `runs/eval/<suite>-<backbone name>`.
            With several backbones, `runs/eval/<suite>-compare/` gets compare.md and the plots of all.
        device: default: the process's device under torchrun, else cuda:0 or cpu.
        overwrite: replace earlier results instead of refusing.
        progress: False: no progress line on stderr (see `run_suite`).

    Returns:
        The markdown table with one column per backbone (`report.compare`); "" on ranks other than 0.
    """
    if out_dir and len(backbones) > 1:
        raise ConfigError("out_dir= takes one backbone; with several, each writes to runs/eval/<suite>-<backbone>")
    suite = load_suite(suite_path, overrides)
    check_suite_data(suite)  # every data path, before any backbone is loaded
    own = distributed.init_from_env()  # under torchrun: every rank extracts a share of the features
    device = torch.device(device) if device is not None else own
    stem, rows = Path(suite_path).stem, []
    # every backbone is loaded and checked against the tasks' transforms before the first one runs
    resolved = [resolve_backbone(spec, suite) for spec in backbones]
    for backbone, name, _ in resolved:
        check_backbone_fit(suite, backbone, name)
    for spec, (backbone, name, sha256) in zip(backbones, resolved):
        target = Path(out_dir or Path("runs") / "eval" / f"{stem}-{name}")
        rows += run_suite(suite, backbone.to(device), name, target, device=str(device), overwrite=overwrite,
                          backbone_sha256=sha256, method_spec=spec, progress=progress)
        if distributed.is_main():
            print(f"[ssl_platform] {name}: results in {target}", flush=True)
    if not distributed.is_main():
        return ""
    if len(backbones) == 1:
        return compare(rows)
    both = Path("runs") / "eval" / f"{stem}-compare"  # the side-by-side table and plots, next to the runs
    table = write_comparison(both, rows)
    print(f"[ssl_platform] comparison table and plots in {both}", flush=True)
    return table
