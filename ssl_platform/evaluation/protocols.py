"""The protocols of a suite by name (`PROTOCOLS`), and which a task kind can run (`KIND_PROTOCOLS`).

Every protocol is a function `(data, setting, ctx) -> [(protocol, robust, metric, value), ...]`: the
loaded task (`tasks.TaskData`), one labelled setting (`settings.Setting`) and what the whole run shares
(`Context`: the suite's sections, the backbone, where runs go). The runner calls each protocol a task
asks for, in the order of `PROTOCOLS`, once per setting; a protocol reads only the sections it needs.

- cached features: `knn`, `linear` (L-BFGS or ridge), `probe` (robust heads), `mlp` and `gbdt`
  (scikit-learn), `svm`; their metric follows the task kind (top1, rmse and r2, or map);
- through the engine: `linear_sgd` and `finetune`, once per entry of their section's `losses`;
- the whole method: `retrieval`, R@K over image-text pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ssl_platform.config import ConfigError
from ssl_platform.evaluation import finetune as finetune_lib
from ssl_platform.evaluation import knn as knn_lib
from ssl_platform.evaluation import linear as linear_lib
from ssl_platform.evaluation import multilabel as multilabel_lib
from ssl_platform.evaluation import regression as regression_lib
from ssl_platform.evaluation import retrieval as retrieval_lib
from ssl_platform.evaluation import svm as svm_lib
from ssl_platform.evaluation import tabular as tabular_lib
from ssl_platform.evaluation.lbfgs import LAMBDAS
from ssl_platform.evaluation.robust import train_head
from ssl_platform.evaluation.settings import Setting
from ssl_platform.evaluation.suite_schema import Suite
from ssl_platform.evaluation.tasks import TaskData

Measurement = tuple[str, str, str, float]  # (protocol, robust method or loss, metric, value)


@dataclasses.dataclass
class Context:
    """What every protocol may read besides the task and the setting.

    Attributes:
        suite: the suite's sections as plain values.
        backbone: timm contract, on `device`; never modified (fine-tuning trains a copy).
        backbone_name, backbone_sha256: the backbone's name and file hash ("" for a random init), which
            name an engine run so that it is resumed only for the same backbone.
        method_spec: the `backbone=` value (`RUN_DIR`, `random:RUN_DIR`): retrieval rebuilds the whole method.
        out_dir: the evaluation's directory; engine runs live in `out_dir/runs/<task>/<setting>/`.
        device: where probes are fitted and test sets scored.
    """

    suite: Suite
    backbone: nn.Module
    backbone_name: str
    backbone_sha256: str
    method_spec: str | None
    out_dir: Path
    device: str


def knn(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """Weighted kNN of every `knn.presets` entry: top1, rmse and r2 (regression) or map (multi-label)."""
    x, y = setting.x, setting.y
    x_test, y_test = data.test
    out = []
    for name in ctx.suite.knn.presets:
        k, temperature = knn_lib.preset(name)
        if data.kind == "classification":
            acc = knn_lib.knn_accuracy(x, y, x_test, y_test, k=k, temperature=temperature, num_classes=data.num_classes)
            out.append((f"knn_{name}", "none", "top1", acc))
        elif data.kind == "regression":
            pred = knn_lib.knn_regression(x, y, x_test, k=k, temperature=temperature)
            out += [(f"knn_{name}", "none", m, v) for m, v in regression_lib.regression_metrics(pred, y_test).items()]
        else:
            scores = knn_lib.knn_multilabel_scores(x, y, x_test, k=k, temperature=temperature)
            out.append((f"knn_{name}", "none", "map", multilabel_lib.mean_average_precision(scores, y_test)))
    return out


def linear(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """The λ-swept linear probe: logistic (top1), ridge (rmse, r2) or one-vs-rest logistic (map), and its λ.

    λ is in the mean-loss convention (sklearn C = 1 / (λ n)), kept so that the selection can be audited.
    """
    lin = ctx.suite.linear
    x_test, y_test = data.test
    lambdas = LAMBDAS if lin.lambdas is None else tuple(float(v) for v in lin.lambdas)
    if data.kind == "classification":
        val = {} if data.val is None else {"val": data.val}  # the task's own split picks λ when it has one
        r = linear_lib.linear_probe(setting.x, setting.y, x_test, y_test, lambdas=lambdas, val_fraction=lin.val_fraction,
                                    seed=setting.seed, max_iter=lin.max_iter, tol=lin.tol, device=ctx.device, **val)
        return [("linear", "none", "top1", r.test_accuracy), ("linear", "none", "lambda", r.best_lambda)]
    if data.kind == "regression":
        r = regression_lib.ridge_probe(setting.x, setting.y, x_test, y_test, lambdas=lambdas,
                                       val_fraction=lin.val_fraction, seed=setting.seed)
        return [("linear", "none", "rmse", r.test_rmse), ("linear", "none", "r2", r.test_r2),
                ("linear", "none", "lambda", r.best_lambda)]
    r = multilabel_lib.multilabel_probe(setting.x, setting.y, x_test, y_test, lambdas=lambdas,
                                        val_fraction=lin.val_fraction, seed=setting.seed, max_iter=lin.max_iter,
                                        tol=lin.tol, device=ctx.device)
    return [("linear", "none", "map", r.test_map), ("linear", "none", "lambda", r.best_lambda)]


def probe(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """A head on cached features trained by minibatch AdamW, once per `robust.methods` entry (top1)."""
    section, out = ctx.suite.probe, []
    for method in ctx.suite.robust.methods:
        head = train_head(
            setting.x, setting.y, *data.test, num_classes=data.num_classes, robust=method, epochs=section.epochs,
            lr=section.lr, weight_decay=section.weight_decay, batch_size=section.batch_size, seed=setting.seed,
            device=ctx.device, loss_kwargs=getattr(ctx.suite.robust, method, None) or None,
        )
        out.append(("probe", method, "top1", head.test_accuracy))
    return out


def _engine_trained(protocol: str, data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """`linear_sgd` or `finetune` through the engine, once per loss of its section, on the (noisy) subset."""
    section = getattr(ctx.suite, protocol)
    run_dir = ctx.out_dir / "runs" / data.name / setting.name
    # a run directory is resumed only for the same backbone, task and training labels
    identity = {"backbone": ctx.backbone_name, "backbone_sha256": ctx.backbone_sha256,
                "noisy_labels_sha256": setting.labels_sha256(), "task": data.name}
    out = []
    for loss in section.losses:
        result = finetune_lib.finetune(
            ctx.backbone, finetune_lib.LabelledView(data.train_set, setting.keep, setting.y), data.test_set,
            train_transform=data.train_transform, test_transform=data.transform, num_classes=data.num_classes,
            out_dir=run_dir / f"{protocol}-{loss}", kind=data.kind, freeze_backbone=protocol == "linear_sgd",
            loss=loss, loss_kwargs=getattr(ctx.suite.robust, loss, None) or None,
            label_smoothing=section.label_smoothing, layer_decay=section.layer_decay, drop_path=section.drop_path,
            optimizer=section.optimizer, lr=section.lr, weight_decay=section.weight_decay, epochs=section.epochs,
            min_steps=section.min_steps, warmup_epochs=section.warmup_epochs, batch_size=section.batch_size,
            num_workers=ctx.suite.eval.num_workers, precision=section.precision, seed=setting.seed,
            identity=identity, device=ctx.device,
        )
        out += [(protocol, loss, metric, value) for metric, value in result.metrics.items()]
    return out


def linear_sgd(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """A linear head on the frozen backbone, trained by SGD on augmented images (DINO-style)."""
    return _engine_trained("linear_sgd", data, setting, ctx)


def finetune(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """The whole network trained with a linear head (MSE on standardised targets for regression)."""
    return _engine_trained("finetune", data, setting, ctx)


def _heads(protocol: str, data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """scikit-learn's `mlp` or `gbdt` (`tabular.py`) on cached features, on the CPU."""
    make = {"mlp": tabular_lib.make_mlp, "gbdt": tabular_lib.make_gbdt}[protocol]
    estimator = make(data.kind, seed=setting.seed, **dataclasses.asdict(getattr(ctx.suite, protocol)))
    scores = tabular_lib.fit_and_score(estimator, data.kind, setting.x, setting.y, *data.test)
    return [(protocol, "none", metric, value) for metric, value in scores.items()]


def mlp(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """An early-stopped MLP on cached features (`tabular.make_mlp`)."""
    return _heads("mlp", data, setting, ctx)


def gbdt(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """Early-stopped histogram gradient boosting on cached features (`tabular.make_gbdt`)."""
    return _heads("gbdt", data, setting, ctx)


def svm(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """An SVC on standardised cached features, C by stratified k-fold on train: top1, cv_top1 and C."""
    section = ctx.suite.svm
    r = svm_lib.svm_probe(setting.x, setting.y, *data.test, cs=section.cs, kernel=section.kernel, folds=section.folds,
                          seed=setting.seed)
    return [("svm", "none", "top1", r.test_accuracy), ("svm", "none", "cv_top1", r.cv_accuracy),
            ("svm", "none", "C", r.best_c)]


def retrieval(data: TaskData, setting: Setting, ctx: Context) -> list[Measurement]:
    """R@K both ways on the task's test pairs (a trained method gives the same for every seed)."""
    spec = ctx.method_spec
    if not spec or not (spec.startswith("random:") or Path(spec).is_dir()):
        raise ConfigError(
            f"task {data.name} is a retrieval task: it ranks pairs with the whole method (encoders, fusion, matching "
            f"head), which a backbone file does not hold; give backbone=RUN_DIR or random:RUN_DIR "
            f"(got {spec!r})"
        )
    method, _ = retrieval_lib.method_from_spec(spec, seed=setting.seed)
    scores = retrieval_lib.retrieval_metrics(method.to(ctx.device), data.test_set, data.transform,
                                             batch_size=ctx.suite.eval.batch_size, device=ctx.device)
    return [("retrieval", "none", metric, value) for metric, value in scores.items()]


Protocol = Callable[[TaskData, Setting, Context], list[Measurement]]
# every protocol by its name in a suite, in the order a task runs them (and messages list them)
PROTOCOLS: dict[str, Protocol] = {
    "knn": knn, "linear": linear, "probe": probe, "linear_sgd": linear_sgd, "finetune": finetune,
    "mlp": mlp, "gbdt": gbdt, "svm": svm, "retrieval": retrieval,
}
# what a task kind can run: regression fine-tunes (and SGD-probes) with MSE but has no robust losses,
# multi-label has no trained head yet; retrieval ranks image-text pairs with the whole method (M3AE's
# matching head), not cached features
KIND_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "classification": ("knn", "linear", "probe", "linear_sgd", "finetune", "mlp", "gbdt", "svm"),
    "regression": ("knn", "linear", "linear_sgd", "finetune", "mlp", "gbdt"),
    "multilabel": ("knn", "linear"),
    "retrieval": ("retrieval",),
}
KINDS = tuple(KIND_PROTOCOLS)
