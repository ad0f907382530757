"""The `svm` protocol: C chosen by stratified cross-validation on train, against a naive fold loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ssl_platform.config import ConfigError
from ssl_platform.evaluation.suite import load_suite, run_suite
from ssl_platform.evaluation.svm import svm_probe


def digits(n_train=300, n_test=200):
    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # rows are grouped by writer
    x, y = torch.from_numpy(x).float()[order], torch.from_numpy(y)[order]
    return x[:n_train], y[:n_train], x[n_train:n_train + n_test], y[n_train:n_train + n_test]


def naive(x, y, x_test, y_test, cs, kernel, folds, seed):
    """For each C: mean accuracy over the folds, scaler fitted on each fold's training part; best C refit."""
    xs, ys = x.double().numpy(), y.numpy()
    means = []
    for c in cs:
        scores = []
        for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(xs, ys):
            scaler = StandardScaler().fit(xs[fit])
            model = SVC(C=c, kernel=kernel).fit(scaler.transform(xs[fit]), ys[fit])
            scores.append(np.mean(model.predict(scaler.transform(xs[held])) == ys[held]))
        means.append(np.mean(scores))
    best = int(np.argmax(means))  # the first maximum: the smallest C of ties
    scaler = StandardScaler().fit(xs)
    model = SVC(C=cs[best], kernel=kernel).fit(scaler.transform(xs), ys)
    test = np.mean(model.predict(scaler.transform(x_test.double().numpy())) == y_test.numpy())
    return 100 * test, 100 * means[best], cs[best]


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_selection_and_test_accuracy_match_a_naive_fold_loop(kernel):
    x, y, x_test, y_test = digits()
    cs = (1e-3, 1e-2, 1.0, 100.0)
    result = svm_probe(x, y, x_test, y_test, cs=cs, kernel=kernel, folds=5, seed=3)
    test, cv, c = naive(x, y, x_test, y_test, cs, kernel, 5, 3)
    assert result.best_c == c and result.folds == 5
    assert result.cv_accuracy == pytest.approx(cv) and result.test_accuracy == pytest.approx(test)
    assert result.test_accuracy > 85.0  # digits from pixels: an SVM is good at this


@pytest.mark.slow
def test_noisy_labels_lower_the_score_and_folds_shrink_to_the_smallest_class():
    x, y, x_test, y_test = digits()
    clean = svm_probe(x, y, x_test, y_test, folds=5)
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(len(y), generator=g) < 0.5
    noisy = torch.where(flip, torch.randint(0, 10, (len(y),), generator=g), y)
    assert svm_probe(x, noisy, x_test, y_test, folds=5).cv_accuracy < clean.cv_accuracy - 20
    # 3 rows of class 0 kept: 3 folds, not 10
    keep = torch.cat([torch.nonzero(y == 0).flatten()[:3], torch.nonzero(y != 0).flatten()])
    assert svm_probe(x[keep], y[keep], x_test, y_test, folds=10).folds == 3


@pytest.mark.parametrize("kwargs, labels, message", [
    ({"kernel": "poly"}, None, r"kernel must be one of \['linear', 'rbf'\], got 'poly'"),
    ({"cs": []}, None, r"cs must list positive C values"),
    ({}, "one class", r"single class; an SVM needs at least two"),
    ({}, "singleton", r"a class has a single training row.*use more labels"),
])
def test_bad_inputs_are_refused_with_the_fix(kwargs, labels, message):
    x, y, x_test, y_test = digits(60, 20)
    if labels == "one class":
        y = torch.zeros_like(y)
    elif labels == "singleton":
        y = torch.where(torch.arange(len(y)) == 0, torch.tensor(9), y % 2)  # class 9 once
    with pytest.raises(ValueError, match=message):
        svm_probe(x, y, x_test, y_test, **kwargs)


def test_shapes_that_do_not_match_are_refused():
    x, y, x_test, y_test = digits(60, 20)
    with pytest.raises(ValueError, match=r"features \[N, D\] with labels \[N\] expected"):
        svm_probe(x, y[:-1], x_test, y_test)


class Pixels(torch.nn.Module):
    num_features = 64

    def forward_features(self, x):
        return x.flatten(1)[:, None, :]

    def forward_head(self, x, pre_logits=True):
        return x[:, 0]


@pytest.mark.slow
def test_the_suite_runs_svm_with_label_noise_and_checks_its_section(tmp_path):
    eval8 = {"_component_": "ssl_platform.data.transforms.EvalTransform", "size": 8, "channels": 1}
    cfg = {"name": "svm", "tasks": {"digits": {
        "train": {"_component_": "ssl_platform.data.datasets.Digits", "split": "train"},
        "test": {"_component_": "ssl_platform.data.datasets.Digits", "split": "test"}, "transform": eval8}},
        "eval": {"protocols": ["svm"], "seeds": [0], "label_fractions": [1.0]},
        "noise": {"kinds": ["symmetric"], "rates": [0.4]}, "svm": {"cs": [0.01, 1.0], "folds": 3}}
    path = tmp_path / "suite.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    rows = run_suite(load_suite(path), Pixels(), "pixels", tmp_path / "out")
    got = {(r["noise_rate"], r["metric"]): r["value"] for r in rows}
    assert {m for _, m in got} == {"top1", "cv_top1", "C"} and {r["protocol"] for r in rows} == {"svm"}
    assert got[(0.0, "top1")] > 90.0 and got[(0.4, "cv_top1")] < got[(0.0, "cv_top1")]
    for override, message in [("svm.kernel=poly", r"svm.kernel: unknown value 'poly'"),
                              ("svm.folds=1", r"svm.folds must be >= 2"), ("svm.cs=[0]", r"svm.cs must list positive")]:
        with pytest.raises(ConfigError, match=message):
            load_suite(path, [override])
