"""Tables in the eval harness: the tabular extractor, the raw-feature backbone, the mlp and gbdt heads
against scikit-learn fitted directly, and table suites end to end (a stand-in backbone and `raw`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ssl_platform.config import ConfigError
from ssl_platform.data.datasets import Digits, Table
from ssl_platform.data.transforms import EvalTransform
from ssl_platform.evaluation import linear as linear_lib
from ssl_platform.evaluation import regression as regression_lib
from ssl_platform.evaluation.features import extract_tabular_features
from ssl_platform.evaluation.report import KEYS
from ssl_platform.evaluation.suite import load_suite, run_suite
from ssl_platform.evaluation.tabular import RawTabular, fit_and_score, make_gbdt, make_mlp
from ssl_platform.zoo.backbones import resolve_backbone

EXTRACTOR = "ssl_platform.evaluation.features.extract_tabular_features"


class TinyTabular(nn.Module):
    """The tabular backbone contract in miniature: one token per column (FT-Transformer style), a
    dropout so eval mode matters, and a flattening head."""

    def __init__(self, num_numeric, cat_cardinalities, hidden=3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_numeric, hidden))
        self.bias = nn.Parameter(torch.randn(num_numeric, hidden))
        self.embeddings = nn.ModuleList(nn.Embedding(c, hidden) for c in cat_cardinalities)
        self.dropout = nn.Dropout(0.5)
        self.num_features = (num_numeric + len(cat_cardinalities)) * hidden

    def forward_features(self, x_num, x_cat):
        tokens = [x_num[:, :, None] * self.weight + self.bias]  # [B, n_num, H]
        tokens += [emb(x_cat[:, j])[:, None] for j, emb in enumerate(self.embeddings)]  # [B, 1, H] each
        return self.dropout(torch.tanh(torch.cat(tokens, dim=1)))  # [B, T, H]

    def forward_head(self, x, pre_logits=False):
        return x.flatten(1)


def reference(backbone, table):
    backbone.eval()
    with torch.no_grad():
        return backbone.forward_head(backbone.forward_features(table.x_num, table.x_cat), pre_logits=True)


@pytest.mark.parametrize("batch_size", [1, 7, 512])
def test_tabular_features_match_a_hand_forward_in_eval_mode(batch_size):
    torch.manual_seed(0)
    table = Table("fair", limit=50)
    backbone = TinyTabular(**table.schema())
    backbone.train()
    feats, targets = extract_tabular_features(backbone, table, None, batch_size=batch_size)
    assert backbone.training and backbone.dropout.training  # modes restored
    assert feats.shape == (50, 8 * 3) and feats.dtype == torch.float32 and targets.dtype == torch.int64
    assert targets.tolist() == table.targets.tolist()
    torch.testing.assert_close(feats, reference(backbone, table))  # no dropout: eval mode
    values = extract_tabular_features(RawTabular(5, [3] * 4), Table("randhie", limit=20))[1]
    assert values.dtype == torch.float32 and values.tolist() == Table("randhie", limit=20).targets.tolist()


def test_tabular_extractor_refuses_image_rows():
    with pytest.raises(KeyError, match=r"batches have keys \['image', 'index', 'label'\].*Table"):
        extract_tabular_features(RawTabular(64), Digits(limit=10), EvalTransform(8, channels=1))


def test_raw_features_are_the_standardised_columns_and_one_hot_categories():
    table = Table("fair")
    raw = RawTabular(**table.schema())
    feats, _ = extract_tabular_features(raw, table, None, batch_size=100)
    assert raw.num_features == 4 + 6 + 5 + 7 + 7 and feats.shape == (len(table), raw.num_features)
    assert torch.equal(feats[:, :4], table.x_num)
    start = 4
    for j, cardinality in enumerate(table.cat_cardinalities):
        block = feats[:, start : start + cardinality]  # one-hot, the unknown slot 0 included
        assert torch.equal(block.argmax(1), table.x_cat[:, j]) and torch.equal(block.sum(1), torch.ones(len(table)))
        start += cardinality
    with pytest.raises(ValueError, match=r"built for 4 numeric and 3 categorical columns, got 4 and 4"):
        extract_tabular_features(RawTabular(4, [6, 5, 7]), table, None)
    with pytest.raises(ValueError, match=r"has code 4 >= its cardinality 4"):
        RawTabular(4, [6, 4, 7, 7]).forward_features(table.x_num, table.x_cat)


def features_of(name, **kwargs):
    train, test = Table(name, **kwargs), Table(name, split="test", **kwargs)
    raw = RawTabular(**train.schema())
    return extract_tabular_features(raw, train, None), extract_tabular_features(raw, test, None)


def test_mlp_and_gbdt_heads_equal_scikit_learn_fitted_directly():
    (x, y), (xt, yt) = features_of("wine")
    xn, yn, xtn = x.double().numpy(), y.numpy(), xt.double().numpy()
    direct = make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(32,), alpha=1e-3, learning_rate_init=1e-2, batch_size=32, max_iter=50,
        early_stopping=True, validation_fraction=0.2, n_iter_no_change=5, random_state=3)).fit(xn, yn)
    ours = fit_and_score(make_mlp("classification", hidden=[32], alpha=1e-3, lr=1e-2, batch_size=32, max_iter=50,
                                  val_fraction=0.2, patience=5, seed=3), "classification", x, y, xt, yt)
    assert ours["top1"] == 100.0 * np.mean(direct.predict(xtn) == yt.numpy())
    assert ours["iterations"] == direct[-1].n_iter_
    trees = HistGradientBoostingClassifier(max_iter=40, learning_rate=0.2, max_leaf_nodes=7, min_samples_leaf=5,
                                           early_stopping=True, validation_fraction=0.2, n_iter_no_change=5,
                                           random_state=1).fit(xn, yn)
    ours = fit_and_score(make_gbdt("classification", max_iter=40, learning_rate=0.2, max_leaf_nodes=7,
                                   min_samples_leaf=5, val_fraction=0.2, patience=5, seed=1),
                         "classification", x, y, xt, yt)
    assert ours == {"top1": 100.0 * np.mean(trees.predict(xtn) == yt.numpy()), "iterations": trees.n_iter_}
    assert ours["top1"] > 85.0  # wine is easy for trees


@pytest.mark.slow
def test_regression_heads_report_rmse_and_r2_of_scikit_learn_fitted_directly():
    (x, y), (xt, yt) = features_of("randhie", limit=2000)
    xn, yn, xtn, ytn = x.double().numpy(), y.double().numpy(), xt.double().numpy(), yt.double().numpy()
    mlp = TransformedTargetRegressor(make_pipeline(StandardScaler(), MLPRegressor(
        hidden_layer_sizes=(16, 16), batch_size=64, max_iter=30, early_stopping=True, validation_fraction=0.1,
        n_iter_no_change=4, random_state=0)), transformer=StandardScaler()).fit(xn, yn)
    trees = HistGradientBoostingRegressor(max_iter=60, early_stopping=True, validation_fraction=0.1,
                                          n_iter_no_change=20, random_state=0).fit(xn, yn)
    for direct, estimator in ((mlp, make_mlp("regression", hidden=[16, 16], batch_size=64, max_iter=30, patience=4)),
                              (trees, make_gbdt("regression", max_iter=60))):
        ours = fit_and_score(estimator, "regression", x, y, xt, yt)
        pred = direct.predict(xtn)
        assert ours["rmse"] == pytest.approx(np.sqrt(mean_squared_error(ytn, pred)), rel=1e-12)
        assert ours["r2"] == pytest.approx(r2_score(ytn, pred), rel=1e-12)
        assert 0.0 < ours["r2"] < 1.0  # visits depend on the plan and health a little
    with pytest.raises(ValueError, match=r"\[N\] targets"):
        fit_and_score(make_gbdt("regression"), "regression", x, y[:, None], xt, yt)
    with pytest.raises(ValueError, match=r"kind must be one of"):
        make_mlp("multilabel")


def write_table(tmp_path, n=160, seed=0):
    """A small mixed table where both the class and the value follow the columns."""
    rng = np.random.default_rng(seed)
    size, colour = rng.normal(size=n), rng.choice(["red", "green", "blue"], n)
    value = 2.0 * size + np.where(colour == "red", 3.0, 0.0) + 0.1 * rng.normal(size=n)
    frame = pd.DataFrame({"size": size, "noise": rng.normal(size=n), "colour": colour, "value": value,
                          "kind": np.where(value > 1.0, "big", "small")})
    frame.to_csv(tmp_path / "t.csv", index=False)
    return str(tmp_path / "t.csv")


def table_suite(tmp_path, kind, target, protocols=("linear", "mlp", "gbdt")):
    path = write_table(tmp_path)
    part = {"_component_": "ssl_platform.data.datasets.Table", "source": path, "target": target,
            "columns": {"size": "num", "noise": "num", "colour": "cat"}, "task": kind, "test_fraction": 0.25}
    cfg = {
        "name": "t", "tasks": {"t": {"kind": kind, "train": {**part, "split": "train"},
                                     "test": {**part, "split": "test"}, "transform": None,
                                     "extractor": EXTRACTOR, "noise": False}},
        "eval": {"protocols": list(protocols), "seeds": [0, 1], "label_fractions": [1.0]},
        "linear": {"lambdas": [1.0e-4, 1.0e-2, 1.0]},
        "mlp": {"hidden": [16], "max_iter": 50, "batch_size": 32},
        "gbdt": {"max_iter": 50, "min_samples_leaf": 5},
        "random_backbone": {"name": "resnet18", "num_numeric": 2, "cat_cardinalities": [4]},
    }
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "suite.yaml")
    return load_suite(tmp_path / "suite.yaml")


@pytest.mark.parametrize("kind, target", [("classification", "kind"), ("regression", "value")])
@pytest.mark.slow
def test_table_suite_runs_raw_and_a_backbone_end_to_end(tmp_path, kind, target):
    cfg = table_suite(tmp_path, kind, target)
    raw, name, sha = resolve_backbone("raw", cfg)
    assert isinstance(raw, RawTabular) and (name, sha) == ("raw", "") and raw.num_features == 2 + 4
    rows = run_suite(cfg, raw, name, tmp_path / "raw")
    torch.manual_seed(0)
    rows += run_suite(cfg, TinyTabular(2, [4]), "tiny", tmp_path / "tiny")
    assert all(set(r) == set(KEYS) for r in rows)
    metrics = {"top1"} if kind == "classification" else {"rmse", "r2"}
    extra = {("linear", "lambda"), ("mlp", "iterations"), ("gbdt", "iterations")}
    for backbone in ("raw", "tiny"):
        got = {(r["protocol"], r["metric"]) for r in rows if r["backbone"] == backbone}
        assert got == {(p, m) for p in ("linear", "mlp", "gbdt") for m in metrics} | extra
        assert sorted(r["seed"] for r in rows if r["backbone"] == backbone and r["protocol"] == "gbdt"
                      and r["metric"] == next(iter(metrics))) == [0, 1]
    assert [json.loads(line) for line in (tmp_path / "raw" / "results.jsonl").read_text().splitlines()] == \
        [r for r in rows if r["backbone"] == "raw"]
    summary = (tmp_path / "raw" / "summary.md").read_text()
    assert "| raw | t | gbdt | 1 | none | none |" in summary and " ± " in summary

    # the rows are the heads fitted directly on [x_num, one_hot(x_cat)]
    part = {k: v for k, v in OmegaConf.to_container(cfg.tasks.t.train).items() if k != "_component_"}
    train, test = Table(**part), Table(**{**part, "split": "test"})
    x, xt = (torch.cat([t.x_num, nn.functional.one_hot(t.x_cat[:, 0], 4).float()], 1) for t in (train, test))
    y, yt = torch.from_numpy(train.targets), torch.from_numpy(test.targets)
    value = {(r["protocol"], r["metric"], r["seed"]): r["value"] for r in rows if r["backbone"] == "raw"}
    for seed in (0, 1):
        trees = make_gbdt(kind, max_iter=50, min_samples_leaf=5, seed=seed)
        assert fit_and_score(trees, kind, x, y, xt, yt)[next(iter(metrics))] == value[("gbdt", next(iter(metrics)), seed)]
    if kind == "classification":
        probe = linear_lib.linear_probe(x, y, xt, yt, lambdas=(1e-4, 1e-2, 1.0), seed=0)
        assert value[("linear", "top1", 0)] == probe.test_accuracy
        assert value[("linear", "top1", 0)] > 90.0 and value[("gbdt", "top1", 0)] > 85.0
    else:  # the linear protocol is ridge regression on tables too
        ridge = regression_lib.ridge_probe(x, y, xt, yt, lambdas=(1e-4, 1e-2, 1.0), seed=0)
        assert value[("linear", "rmse", 0)] == ridge.test_rmse and value[("linear", "r2", 0)] > 0.95


def test_raw_needs_the_table_schema_in_the_suite():
    with pytest.raises(ConfigError, match=r"backbone=raw .* needs the table's schema .*num_numeric"):
        resolve_backbone("raw", OmegaConf.create({"random_backbone": {"name": "resnet18"}}))


@pytest.mark.parametrize("override, message", [
    ("mlp.hidden=[0]", r"mlp.hidden must list the hidden widths as positive integers"),
    ("gbdt.val_fraction=1.5", r"gbdt.val_fraction must be in \(0, 1\)"),
    ("mlp.patience=0", r"mlp.max_iter and mlp.patience must be >= 1"),
    ("mlp.epochs=3", r"unknown key mlp.'epochs'"),
    ("eval.protocols=[linear,mlp,probe]", r"tasks.t is a regression task and cannot run \['probe'\]"),
])
def test_head_sections_are_checked(tmp_path, override, message):
    table_suite(tmp_path, "regression", "value")
    with pytest.raises(ConfigError, match=message):
        load_suite(tmp_path / "suite.yaml", [override])
