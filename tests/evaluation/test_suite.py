"""Suites: schema validation with messages that name the key, every protocol end to end on digits,
label noise on the training labels only, other task kinds (regression, multi-label, graph nodes),
the progress of a run (settings counted before it starts)."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_platform import config
from ssl_platform.config import ConfigError
from ssl_platform.data.datasets import Digits
from ssl_platform.evaluation import noise as noise_lib
from ssl_platform.evaluation.knn import KNN_PRESETS
from ssl_platform.evaluation.protocols import PROTOCOLS
from ssl_platform.evaluation.report import KEYS
from ssl_platform.evaluation.settings import labelled_subset, random_subset
from ssl_platform.evaluation.suite import load_suite, run_suite
from ssl_platform.models.backbones import create_backbone

EVAL = Path(__file__).resolve().parents[2] / "eval"
DIGITS = EVAL / "digits.yaml"
# the shipped suite cut down to seconds: a short λ sweep, few probe epochs, a few engine steps
QUICK = [
    "linear.lambdas=[1.0e-4,1.0e-2,1.0]", "probe.epochs=3", "finetune.epochs=1", "finetune.min_steps=2",
    "linear_sgd.epochs=1", "linear_sgd.min_steps=2",
]


class PixelBackbone(nn.Module):
    """The identity backbone: the representation is the normalised pixels themselves, [B, C*H*W]."""

    def __init__(self, num_features=64):
        super().__init__()
        self.num_features = num_features
        self.calls = 0

    def forward_features(self, x):
        self.calls += 1
        return x

    def forward_head(self, x, pre_logits=False):
        return x.flatten(1)


def tiny_random_backbone():
    torch.manual_seed(0)
    return create_backbone("resnet18", small_input=True, in_chans=1, channels=[8, 16, 32, 64], zero_init_last=False)


TABULAR_BACKBONE = "tabular_transformer"  # registered with timm by ssl_platform/models/tabular.py


GRAPH_BACKBONES = ("gat", "gin")  # registered with timm by ssl_platform/models/graph.py
MULTISPECTRAL_PREFIX = "grouped_vit"  # grouped_vit* registered with timm by ssl_platform/models/grouped_vit.py
# node feature widths of the graph sets that download (tests never do): Planetoid, OGB, TUDataset
INTERNET_FEATURES = {"Cora": 1433, "PubMed": 500, "ogbn-arxiv": 128, "MUTAG": 7}


def _suite_kind(suite: Path) -> str:
    cfg = OmegaConf.load(suite)
    name = cfg.random_backbone.name
    if name.startswith(MULTISPECTRAL_PREFIX):
        return "multispectral"
    if all(".pairs." in task.train._component_ for task in cfg.tasks.values()):
        return "pairs"
    return "table" if name == TABULAR_BACKBONE else "graph" if name in GRAPH_BACKBONES else "image"


@pytest.mark.parametrize("suite", sorted(EVAL.glob("*.yaml")), ids=lambda p: p.name)
def test_every_suite_validates_and_starts_with_its_command(suite):
    cfg = load_suite(suite)
    assert suite.read_text().splitlines()[0].startswith(f"# python -m ssl_platform eval eval/{suite.name} backbone=")
    assert set(cfg.eval.protocols) <= set(PROTOCOLS)
    # a suite may run fewer presets, never an unnamed variant (load_suite refuses those)
    assert cfg.knn.presets and set(cfg.knn.presets) <= set(KNN_PRESETS)
    kind = _suite_kind(suite)
    if kind == "image":  # the random baseline reads 1-channel small images
        assert cfg.random_backbone.in_chans == 1 and cfg.random_backbone.small_input
        return
    if kind == "pairs":  # image-text pairs (M3AE): RGB images through the pair transform; retrieval
        # tasks rank pairs with the whole method and run nothing else
        assert cfg.random_backbone.in_chans == 3 and timm.is_model(cfg.random_backbone.name)
        for task in cfg.tasks.values():
            assert task.transform._component_.endswith("pairs.ImageTextTransform")
            assert task.kind != "retrieval" or (not task.noise and set(cfg.eval.protocols) == {"retrieval"})
        return
    (name, task), = cfg.tasks.items()
    if kind == "multispectral":  # band tensors from the dataset; the random backbone's groups cover its bands
        from ssl_platform.models.grouped_vit import check_band_groups

        assert timm.is_model(cfg.random_backbone.name)
        check_band_groups(cfg.random_backbone.get("band_groups"), cfg.random_backbone.in_chans)
        return
    if kind == "graph":  # graphs come through a graph extractor; the random encoder reads their features
        assert task.extractor in ("ssl_platform.evaluation.features.extract_graph_features",
                                  "ssl_platform.evaluation.features.extract_node_features")
        component = task.train._component_.rsplit(".", 1)[-1]
        if component in ("Planetoid", "OGBNodeGraph", "TUGraphs"):
            assert cfg.random_backbone.in_chans == INTERNET_FEATURES[task.train.name]
        else:
            assert cfg.random_backbone.in_chans == config.instantiate(task.train).num_node_features
        return
    # table suites: the random (and raw) backbone has the table's schema, rows come through the
    # tabular extractor, and the heads are the T-JEPA comparison on clean labels
    schema = config.instantiate(task.train).schema()
    assert dict(cfg.random_backbone) == {"name": TABULAR_BACKBONE, **schema}
    assert task.extractor == "ssl_platform.evaluation.features.extract_tabular_features" and task.transform is None
    assert list(cfg.eval.protocols) == ["linear", "mlp", "gbdt"] and list(cfg.eval.label_fractions) == [1.0]
    assert len(cfg.eval.seeds) >= 5 and not task.noise and not cfg.noise.kinds
    assert suite.name == f"tables_{name}.yaml" and task.train.source == name


@pytest.mark.parametrize("suite", sorted(EVAL.glob("tables_*.yaml")), ids=lambda p: p.name)
def test_table_suites_name_a_registered_backbone(suite):
    assert load_suite(suite).random_backbone.name == TABULAR_BACKBONE and timm.is_model(TABULAR_BACKBONE)


def test_the_quick_suite_has_every_protocol_two_noise_rates_and_the_robust_methods():
    cfg = load_suite(DIGITS)
    # every protocol but the tables' heads (mlp, gbdt: eval/tables_*.yaml and tests/evaluation/test_tabular_eval.py)
    # and the graphs' svm (eval/molecules.yaml and tests/evaluation/test_svm.py), and image-text
    # retrieval (eval/emoji.yaml and tests/evaluation/test_retrieval.py)
    assert list(cfg.eval.protocols) == [p for p in PROTOCOLS if p not in ("mlp", "gbdt", "svm", "retrieval")]
    assert len(cfg.noise.rates) == 2
    assert set(cfg.robust.methods) == {"none", "gce", "sce", "elr", "nmtune"}


def test_defaults_are_filled_and_overrides_apply():
    cfg = load_suite(DIGITS, ["eval.seeds=[4,5]", "linear.max_iter=50"])
    assert list(cfg.eval.seeds) == [4, 5] and cfg.linear.max_iter == 50
    assert cfg.linear.val_fraction == 0.2 and cfg.probe.lr == 1e-3 and cfg.finetune.layer_decay is None
    assert cfg.tasks.digits.kind == "classification" and cfg.tasks.digits.noise is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=3", (r"unknown key 'epochs'; valid keys: eval, finetune, gbdt, knn, linear, linear_sgd, mlp, name, "
                     r"noise")),
        ("eval.sedes=[1]", r"unknown key eval.'sedes' \(did you mean 'seeds'\?\)"),
        ("linear.lambda=0.1", r"unknown key linear.'lambda' \(did you mean 'lambdas'\?\)"),
        ("knn.k=5", r"unknown key knn.'k'; valid keys: presets"),
        ("tasks.digits.vall=1", r"unknown key tasks.digits.'vall' \(did you mean 'val'\?\)"),
        ("tasks.digits.train.splt=test", r"unknown key tasks.digits.train.'splt' \(did you mean 'split'\?\)"),
        ("eval.protocols=[knn,finetuning]", r"eval.protocols: unknown value 'finetuning'; valid values: knn, linear"),
        ("knn.presets=[k10_t0.07]", r"unknown value 'k10_t0.07'; valid values: k20_t0.07, k200_t0.1"),
        ("eval.label_fractions=[0.0]", r"eval.label_fractions: 0.0 is not in \(0, 1\]"),
        ("eval.seeds=[0,0]", r"eval.seeds must be distinct integers"),
        ("linear.val_fraction=1.5", r"linear.val_fraction must be in \(0, 1\)"),
        ("random_backbone.name=resnet_nope", r"random_backbone.name 'resnet_nope' is not a timm model"),
        ("noise.kinds=[symetric]", r"noise.kinds: unknown value 'symetric'; valid values: symmetric, asymmetric"),
        ("noise.rates=[]", r"noise.kinds and noise.rates go together"),
        ("noise.rates=[1.5]", r"noise.rates: 1.5 is not in \(0, 1\]"),
        ("noise.convention=both", r"noise.convention: unknown value 'both'; valid values: exclusive, inclusive"),
        ("robust.methods=[coteach]", r"robust.methods: unknown value 'coteach'; valid values: none, gce"),
        ("finetune.losses=[nmtune]", r"finetune.losses: unknown value 'nmtune'; valid values: none, gce, sce, elr"),
        ("linear_sgd.optimizer=lamb", r"linear_sgd.optimizer: unknown value 'lamb'; valid values: adamw, sgd"),
        ("tasks.digits.kind=ranking", r"tasks.digits.kind: 'ranking' is not one of classification, regression"),
        ("tasks.digits.protocols=[knn,nope]", r"tasks.digits.protocols \(a subset of eval.protocols\)"),
        ("tasks.digits.kind=regression", r"tasks.digits is a regression task and cannot run \['probe'\]; set"),
    ],
)
def test_bad_keys_and_values_fail_naming_them(override, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(DIGITS, [override])


def test_noise_on_a_regression_task_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"label noise is defined for classification.*tasks.digits.noise=false"):
        load_suite(DIGITS, ["tasks.digits.kind=regression", "tasks.digits.protocols=[knn,linear]"])


def test_robust_losses_on_a_regression_fine_tune_are_refused_with_the_fix():
    base = ["tasks.digits.kind=regression", "tasks.digits.protocols=[knn,finetune]", "tasks.digits.noise=false"]
    with pytest.raises(ConfigError, match=r"regression task: finetune trains it with MSE, so set finetune.losses=\[none\]"):
        load_suite(DIGITS, [*base, "finetune.losses=[none,elr]"])
    with pytest.raises(ConfigError, match=r"finetune.label_smoothing=0"):
        load_suite(DIGITS, [*base, "finetune.losses=[none]", "finetune.label_smoothing=0.1"])
    assert load_suite(DIGITS, [*base, "finetune.losses=[none]"]).tasks.digits.kind == "regression"


def test_a_task_must_have_its_three_components(tmp_path):
    cfg = OmegaConf.load(DIGITS)
    del cfg.tasks.digits.transform
    OmegaConf.save(cfg, tmp_path / "suite.yaml")
    with pytest.raises(ConfigError, match="tasks.digits.transform is required"):
        load_suite(tmp_path / "suite.yaml")
    cfg = OmegaConf.load(DIGITS)
    cfg.tasks.digits.transform.size = "???"
    OmegaConf.save(cfg, tmp_path / "suite.yaml")
    with pytest.raises(ConfigError, match=r"tasks.digits.transform.size has no value; set it on the command line"):
        load_suite(tmp_path / "suite.yaml")
    cfg.tasks = {}
    OmegaConf.save(cfg, tmp_path / "suite.yaml")
    with pytest.raises(ConfigError, match="tasks must map task names"):
        load_suite(tmp_path / "suite.yaml")


def by_setting(rows):
    return {(r["protocol"], r["robust"], r["label_fraction"], r["noise_kind"], r["noise_rate"], r["seed"], r["metric"]):
            r for r in rows}


@pytest.mark.slow
def test_digits_suite_runs_every_protocol_under_noise_and_writes_the_report(tmp_path):
    cfg = load_suite(DIGITS, QUICK + ["robust.methods=[none,elr]", "finetune.losses=[none,gce]"])
    backbone = tiny_random_backbone().train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    rows = run_suite(cfg, backbone, "random", tmp_path / "out")
    assert backbone.training and all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    # every protocol x robust variant, at every fraction x noise setting
    variants = {("knn_k20_t0.07", "none", "top1"), ("knn_k200_t0.1", "none", "top1"), ("linear", "none", "top1"),
                ("linear", "none", "lambda"), ("probe", "none", "top1"), ("probe", "elr", "top1"),
                ("linear_sgd", "none", "top1"), ("finetune", "none", "top1"), ("finetune", "gce", "top1")}
    settings = {(f, kind, rate) for f in (0.1, 1.0) for kind, rate in [("none", 0.0), ("symmetric", 0.2),
                                                                           ("symmetric", 0.4)]}
    assert len(rows) == len(variants) * len(settings)
    assert {(r["protocol"], r["robust"], r["metric"]) for r in rows} == variants
    assert {(r["label_fraction"], r["noise_kind"], r["noise_rate"]) for r in rows} == settings
    for row in rows:  # exclusive symmetric noise on a class-balanced subset: realised = nominal up to rounding
        assert abs(row["noise_rate_realised"] - row["noise_rate"]) < 0.01
        assert list(row) == list(KEYS) and row["backbone_sha256"] == "" and row["git_sha"]
    clean = by_setting(rows)
    assert clean[("linear", "none", 1.0, "none", 0.0, 0, "top1")]["value"] > 50.0  # the random net is a real one
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "symmetric 0.4 (realised 0.400)" in summary and "| finetune | 1 | none | gce | top1 |" in summary
    plots = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    assert plots == ["digits-top1-fraction.png", "digits-top1-noise.png"]
    assert "](plots/digits-top1-noise.png)" in summary
    # each fine-tuning run is an engine run directory named by its setting
    assert (tmp_path / "out" / "runs" / "digits" / "f0.1-symmetric0.4-s0" / "finetune-gce" / "metrics.jsonl").exists()
    assert OmegaConf.load(tmp_path / "out" / "suite.yaml") == cfg
    with pytest.raises(FileExistsError, match="another out_dir"):
        run_suite(cfg, backbone, "random", tmp_path / "out")


@pytest.mark.slow
def test_noise_corrupts_the_training_labels_only_and_knn_sees_it(tmp_path):
    """kNN with k=1 on pixels: every test point's nearest training image keeps its label unless the
    noise flipped it, so accuracy falls by about the flip rate; the test labels are never touched."""
    cfg = load_suite(DIGITS, ["eval.protocols=[knn]", "noise.rates=[0.5]", "eval.seeds=[0,1]"])
    test_labels = torch.as_tensor(Digits("test").targets).clone()
    rows = run_suite(cfg, PixelBackbone(), "pixels", tmp_path)
    assert torch.equal(torch.as_tensor(Digits("test").targets), test_labels)
    top1 = {(r["protocol"], r["noise_rate"], r["seed"]): r["value"] for r in rows if r["label_fraction"] == 1.0}
    for seed in (0, 1):
        clean, noisy = top1[("knn_k20_t0.07", 0.0, seed)], top1[("knn_k20_t0.07", 0.5, seed)]
        assert noisy < clean - 3.0  # 50% flipped labels cost the weighted 20-NN vote accuracy...
        assert noisy > 60.0  # ...but the majority of a neighbourhood is still right
    # the noisy labels depend only on (labels, kind, rate, seed): the same for any backbone
    y = torch.as_tensor(Digits("train").targets)
    a = noise_lib.corrupt(y, "symmetric", 0.5, 10, seed=0)
    assert a.sha256 == noise_lib.corrupt(y.clone(), "symmetric", 0.5, 10, seed=0).sha256


@pytest.mark.slow
def test_pixel_features_are_a_strong_baseline_and_extracted_once(tmp_path):
    """Sanity anchor: kNN and the linear probe on raw digits pixels are well above 90%."""
    cfg = load_suite(DIGITS, ["eval.protocols=[knn,linear]", "noise.kinds=[]", "noise.rates=[]",
                              "eval.label_fractions=[1.0]", "eval.seeds=[0,1]", "eval.batch_size=500",
                              "linear.lambdas=[1.0e-3,1.0e-2,1.0e-1]"])
    backbone = PixelBackbone()
    rows = run_suite(cfg, backbone, "pixels", tmp_path)
    top1 = {(r["protocol"], r["seed"]): r["value"] for r in rows if r["metric"] == "top1"}
    assert all(value > 90.0 for value in top1.values()), top1
    assert top1[("knn_k20_t0.07", 0)] == top1[("knn_k20_t0.07", 1)]  # kNN on all labels has no randomness
    # 1347 train + 450 test images in batches of 500: 3 + 1 forward passes for 2 seeds x 3 protocols
    assert backbone.calls == 4
    knn_only = load_suite(DIGITS, ["eval.seeds=[0,1]", "eval.protocols=[knn]", "noise.kinds=[]", "noise.rates=[]",
                                   "eval.label_fractions=[1.0]"])
    rows_again = run_suite(knn_only, PixelBackbone(), "pixels", tmp_path, overwrite=True)
    assert rows_again == [r for r in rows if r["protocol"].startswith("knn")]  # deterministic
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(rows_again)  # replaced


def test_label_fractions_are_class_balanced_subsets(tmp_path):
    labels = torch.arange(10).repeat(30)  # 300 samples, 30 per class
    subset = labelled_subset(labels, 0.1, seed=0)
    assert torch.bincount(labels[subset], minlength=10).tolist() == [3] * 10
    assert not torch.equal(subset, labelled_subset(labels, 0.1, seed=1))
    assert torch.equal(labelled_subset(labels, 1.0, seed=5), torch.arange(300))
    assert len(random_subset(300, 0.1, seed=0)) == 30 and torch.equal(random_subset(300, 1.0, 0), torch.arange(300))
    cfg = load_suite(DIGITS, ["eval.seeds=[0]", "eval.protocols=[knn]", "noise.kinds=[]", "noise.rates=[]"])
    with pytest.warns(UserWarning, match="k=200 exceeds the bank of 135 samples"):
        rows = run_suite(cfg, PixelBackbone(), "pixels", tmp_path)
    by_fraction = {(r["label_fraction"], r["protocol"]): r["value"] for r in rows}
    assert set(by_fraction) == {(f, p) for f in (0.1, 1.0) for p in ("knn_k20_t0.07", "knn_k200_t0.1")}
    # 135 labels bring k=200 down to the whole bank: its weighted vote degrades more than k=20's
    assert by_fraction[(0.1, "knn_k20_t0.07")] < by_fraction[(1.0, "knn_k20_t0.07")]


# Task kinds beyond classification plug in through a dataset's targets and, for graphs, an extractor.
# The datasets live in a module written to tmp_path, as a user's own package would.
USER_MODULE = textwrap.dedent('''
    import torch
    from types import SimpleNamespace
    from ssl_platform.data.datasets import Digits

    class DigitValue(Digits):
        """Regression: the digit's value as a float, [N] targets."""
        def __getitem__(self, i):
            image, label = super().__getitem__(i)
            return image, float(label)

    class DigitAttributes(Digits):
        """Multi-label: (even, larger than 4, prime) as a 0/1 vector."""
        def __getitem__(self, i):
            image, label = super().__getitem__(i)
            return image, [float(label % 2 == 0), float(label > 4), float(label in (2, 3, 5, 7))]

    def two_rings(n=120, seed=0):
        """Two communities of 60 nodes: dense inside, a few edges across; features are noisy labels."""
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 2
        src, dst = torch.randint(0, n, (2, 8 * n), generator=g)
        keep = (y[src] == y[dst]) | (torch.rand(8 * n, generator=g) < 0.05)
        x = torch.nn.functional.one_hot(y, 2).float() + 1.5 * torch.randn(n, 2, generator=g)
        return SimpleNamespace(x=x, edge_index=torch.stack([src[keep], dst[keep]]), y=y)

    class NodeSplit:
        """One split of a node-level task: the whole graph plus this split's node indices."""
        def __init__(self, split):
            self.graph = two_rings()
            order = torch.randperm(120, generator=torch.Generator().manual_seed(1))
            self.nodes = order[:60] if split == "train" else order[60:]
            self.classes = ["a", "b"]
''')


class MeanAggregation(nn.Module):
    """A parameter-free GNN layer: each node's features averaged with its neighbours', three times."""

    def forward(self, x, edge_index):
        n = x.shape[0]
        for _ in range(3):
            total = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]]) + x
            degree = torch.bincount(edge_index[1], minlength=n).clamp(min=0).float()[:, None] + 1
            x = total / degree
        return x


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_tasks.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SSLP_ALLOW_COMPONENTS", "user_tasks")  # the user's own code, allowed by the user
    return "user_tasks"


def suite_with_task(tmp_path, task: dict, protocols=("knn", "linear")):
    cfg = {"name": "kinds", "tasks": {"t": task},
           "eval": {"protocols": list(protocols), "seeds": [0], "label_fractions": [1.0]},
           "linear": {"lambdas": [1.0e-4, 1.0e-2, 1.0]}}
    path = tmp_path / "suite.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    return load_suite(path)


def test_regression_task_reports_rmse_and_r2(tmp_path, user_module):
    eval8 = {"_component_": "ssl_platform.data.transforms.EvalTransform", "size": 8, "channels": 1}
    cfg = suite_with_task(tmp_path, {
        "kind": "regression", "transform": eval8,
        "train": {"_component_": f"{user_module}.DigitValue", "split": "train"},
        "test": {"_component_": f"{user_module}.DigitValue", "split": "test"},
    })
    rows = run_suite(cfg, PixelBackbone(), "pixels", tmp_path / "out")
    metrics = {(r["protocol"], r["metric"]): r["value"] for r in rows}
    assert set(metrics) == {(p, m) for p in ("knn_k20_t0.07", "knn_k200_t0.1", "linear") for m in ("rmse", "r2")} | {
        ("linear", "lambda")}
    # predicting the digit's value from pixels: far better than the mean (R² 0, RMSE ≈ 2.87)
    assert metrics[("knn_k20_t0.07", "r2")] > 0.8 and metrics[("linear", "r2")] > 0.5
    assert metrics[("knn_k20_t0.07", "rmse")] < 1.5
    assert {r["noise_kind"] for r in rows} == {"none"}


@pytest.mark.slow
def test_regression_task_fine_tunes_and_reports_rmse_and_r2_of_the_same_predictions(tmp_path, user_module):
    eval8 = {"_component_": "ssl_platform.data.transforms.EvalTransform", "size": 8, "channels": 1}
    cfg = {"name": "kinds", "tasks": {"t": {
        "kind": "regression", "transform": eval8, "noise": False,
        "train": {"_component_": f"{user_module}.DigitValue", "split": "train"},
        "test": {"_component_": f"{user_module}.DigitValue", "split": "test"}}},
        "eval": {"protocols": ["finetune"], "seeds": [0], "label_fractions": [1.0]},
        "finetune": {"epochs": 2, "lr": 1.0e-2, "batch_size": 64, "warmup_epochs": 0}}
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "suite.yaml")
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", small_input=True, in_chans=1, channels=[4, 8, 8, 8], zero_init_last=False)
    rows = run_suite(load_suite(tmp_path / "suite.yaml"), backbone, "tiny", tmp_path / "out")
    metrics = {(r["protocol"], r["robust"], r["metric"]): r["value"] for r in rows}
    assert set(metrics) == {("finetune", "none", "rmse"), ("finetune", "none", "r2")}
    targets = torch.tensor([float(y) for y in Digits("test").targets], dtype=torch.float64)
    # R² = 1 - MSE / Var(test targets): both numbers come from one set of test predictions
    assert metrics[("finetune", "none", "r2")] == pytest.approx(
        1 - metrics[("finetune", "none", "rmse")] ** 2 / targets.var(unbiased=False).item(), abs=1e-6)
    run_dir = tmp_path / "out" / "runs" / "t" / "f1-none0-s0" / "finetune-none"
    saved = OmegaConf.load(run_dir / "config.yaml")
    # the run is resumed only for the same training targets: their float64 bytes' hash is its identity
    train = torch.tensor([float(y) for y in Digits("train").targets], dtype=torch.float64)
    assert saved.kind == "regression" and saved.noisy_labels_sha256 == hashlib.sha256(train.numpy().tobytes()).hexdigest()


def test_multilabel_task_reports_map(tmp_path, user_module):
    eval8 = {"_component_": "ssl_platform.data.transforms.EvalTransform", "size": 8, "channels": 1}
    cfg = suite_with_task(tmp_path, {
        "kind": "multilabel", "transform": eval8,
        "train": {"_component_": f"{user_module}.DigitAttributes", "split": "train"},
        "test": {"_component_": f"{user_module}.DigitAttributes", "split": "test"},
    })
    rows = run_suite(cfg, PixelBackbone(), "pixels", tmp_path / "out")
    metrics = {(r["protocol"], r["metric"]): r["value"] for r in rows}
    assert {m for _, m in metrics} == {"map", "lambda"}
    assert metrics[("linear", "map")] > 85.0 and metrics[("knn_k20_t0.07", "map")] > 85.0


@pytest.mark.slow
def test_multilabel_task_runs_under_multilabel_noise_and_refuses_single_label_kinds(tmp_path, user_module):
    eval8 = {"_component_": "ssl_platform.data.transforms.EvalTransform", "size": 8, "channels": 1}
    task = {"kind": "multilabel", "transform": eval8,
            "train": {"_component_": f"{user_module}.DigitAttributes", "split": "train"},
            "test": {"_component_": f"{user_module}.DigitAttributes", "split": "test"}}
    cfg = {"name": "kinds", "tasks": {"t": task}, "eval": {"protocols": ["linear"], "seeds": [0], "label_fractions": [1.0]},
           "linear": {"lambdas": [1.0e-2]},
           "noise": {"kinds": ["multilabel_mixed", "multilabel_subtractive"], "rates": [0.4]}}
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "suite.yaml")
    rows = run_suite(load_suite(tmp_path / "suite.yaml"), PixelBackbone(), "pixels", tmp_path / "out")
    got = {(r["noise_kind"], r["noise_rate"]): r for r in rows if r["metric"] == "map"}
    assert set(got) == {("none", 0.0), ("multilabel_mixed", 0.4), ("multilabel_subtractive", 0.4)}
    # the same noisy targets as noise.corrupt gives for the seed: 40% of the samples changed
    assert got[("multilabel_mixed", 0.4)]["noise_rate_realised"] == pytest.approx(round(0.4 * 1347) / 1347)
    assert 0.0 < got[("multilabel_subtractive", 0.4)]["noise_rate_realised"] < 1.0
    # flipping 1 of 3 attributes in 40% of the samples costs mAP
    assert got[("multilabel_mixed", 0.4)]["value"] < got[("none", 0.0)]["value"]
    for kinds, kind, message in ((["symmetric"], "multilabel", (r"noise.kinds \['symmetric'\] do not apply to tasks.t, a "
                                  r"multilabel task: use \['multilabel_mixed', 'multilabel_subtractive'\]")),
                                 (["multilabel_mixed"], "classification", r"do not apply to tasks.t, a classification task")):
        OmegaConf.save(OmegaConf.create({**cfg, "tasks": {"t": {**task, "kind": kind}},
                                         "noise": {"kinds": kinds, "rates": [0.4]}}), tmp_path / "bad.yaml")
        with pytest.raises(ConfigError, match=message):
            load_suite(tmp_path / "bad.yaml")


def test_node_level_graph_task_through_an_extractor(tmp_path, user_module):
    node = {"_component_": f"{user_module}.NodeSplit"}
    cfg = suite_with_task(tmp_path, {
        "train": {**node, "split": "train"}, "test": {**node, "split": "test"},
        "transform": {"_component_": "ssl_platform.data.transforms.EvalTransform", "size": 8},  # unused by graphs
        "extractor": "ssl_platform.evaluation.features.extract_node_features",
    }, protocols=("knn", "linear", "probe"))
    aggregated = run_suite(cfg, MeanAggregation(), "gnn", tmp_path / "gnn")
    raw = run_suite(cfg, IdentityGNN(), "raw", tmp_path / "raw")
    acc = {(r["backbone"], r["protocol"]): r["value"] for r in aggregated + raw if r["metric"] == "top1"}
    # message passing over the communities denoises the features: the probe on them is better
    assert acc[("gnn", "linear")] > acc[("raw", "linear")] + 10.0 and acc[("gnn", "linear")] > 90.0


class IdentityGNN(nn.Module):
    def forward(self, x, edge_index):
        return x


# ---- progress: the settings of the whole run counted from the suite, a line per setting with an ETA


@pytest.mark.parametrize("kind, noise, kinds", [
    ("classification", True, ["symmetric", "asymmetric"]), ("classification", False, ["symmetric"]),
    ("multilabel", True, ["multilabel_mixed"]), ("regression", True, []), ("retrieval", True, ["symmetric"]),
])
def test_settings_are_counted_from_the_suite_as_task_settings_walks_them(kind, noise, kinds):
    from types import SimpleNamespace

    from ssl_platform.evaluation.settings import task_settings
    from ssl_platform.evaluation.suite import count_settings
    from ssl_platform.evaluation.suite_schema import EvalConfig, NoiseConfig
    from ssl_platform.evaluation.tasks import TaskData

    ev, noise_cfg = EvalConfig(label_fractions=[0.5, 1.0], seeds=[0, 1, 2]), NoiseConfig(kinds=kinds, rates=[0.2, 0.4])
    labels = {"classification": torch.arange(10).repeat(4), "regression": torch.linspace(0, 1, 40),
              "multilabel": (torch.arange(40)[:, None] % torch.tensor([2, 3, 5]) == 0).float(),
              "retrieval": torch.zeros(40)}[kind]
    data = TaskData(name="t", kind=kind, train_set=None, test_set=None, transform=None, train_transform=None,
                    train=(torch.randn(40, 4), labels), test=None, val=None, num_classes=10, pixels=None)
    walked = len(list(task_settings(data, ev, noise_cfg, noise)))
    assert count_settings(SimpleNamespace(kind=kind, noise=noise), SimpleNamespace(eval=ev, noise=noise_cfg)) == walked
    assert walked == {"classification": 6 * (5 if noise else 1), "multilabel": 6 * 3, "regression": 6,
                      "retrieval": 3}[kind]


@pytest.mark.slow
def test_a_suite_run_reports_setting_k_of_n_with_an_eta_on_stderr(tmp_path, capsys):
    cfg = load_suite(DIGITS, ["eval.seeds=[0,1]", "eval.protocols=[knn]", "eval.label_fractions=[1.0]",
                              "noise.kinds=[symmetric]", "noise.rates=[0.2,0.4]", "knn.presets=[k20_t0.07]"])
    rows = run_suite(cfg, PixelBackbone(), "pixels", tmp_path / "a")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[eval pixels]")]
    settings = sorted({(r["seed"], r["noise_kind"], r["noise_rate"]) for r in rows})
    assert len(settings) == len(lines) == 6  # stderr is no terminal under pytest: a line per setting, no bar
    names = [f"digits f1-{kind}{rate:g}-s{seed}" for seed in (0, 1) for kind, rate in
             (("none", 0), ("symmetric", 0.2), ("symmetric", 0.4))]
    for k, (line, name) in enumerate(zip(lines, names), 1):
        assert re.fullmatch(rf"\[eval pixels\] setting {k}/6 done \({name}\); \d\d:\d\d elapsed, ETA \d\d:\d\d", line)
    run_suite(cfg, PixelBackbone(), "pixels", tmp_path / "b", progress=False)
    assert "setting" not in capsys.readouterr().err


def test_on_a_terminal_the_progress_is_one_bar_not_lines(monkeypatch):
    import io
    import sys

    from tqdm import tqdm

    from ssl_platform.evaluation.suite import SuiteProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    for stream, progress, want in ((Terminal, True, "eval pixels: setting 2/3 |"), (Terminal, False, ""),
                                   (io.StringIO, False, "")):
        monkeypatch.setattr(sys, "stderr", stream())
        bar = SuiteProgress(3, "pixels", progress=progress)
        bar.update("digits f1-none0-s0")
        bar.update("digits f1-none0-s1")
        bar.close()
        out = sys.stderr.getvalue()
        assert (want in out if want else out == "") and "[eval" not in out
