"""Suites: schema validation with messages that name the key, and the digits suite end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_platform.config import ConfigError
from ssl_platform.evaluation.report import KEYS
from ssl_platform.evaluation.suite import labelled_subset, load_suite, run_suite
from ssl_platform.models.backbones import create_backbone

EVAL = Path(__file__).resolve().parents[2] / "eval"
DIGITS = EVAL / "digits.yaml"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The probes here are tiny: one thread is faster, and immune to other jobs on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    return create_backbone(
        "resnet18", small_input=True, in_chans=1, channels=[8, 16, 32, 64], zero_init_last=False
    )


@pytest.mark.parametrize("suite", sorted(EVAL.glob("*.yaml")), ids=lambda p: p.name)
def test_every_suite_validates_and_starts_with_its_command(suite):
    cfg = load_suite(suite)
    assert (
        suite.read_text().splitlines()[0]
        == f"# python -m ssl_platform eval eval/{suite.name} backbone=random"
    )
    assert set(cfg.eval.protocols) == {"knn", "linear"} and list(cfg.knn.presets) == [
        "k20_t0.07",
        "k200_t0.1",
    ]
    assert cfg.random_backbone.in_chans == 1 and cfg.random_backbone.small_input


def test_defaults_are_filled_and_overrides_apply():
    cfg = load_suite(DIGITS, ["eval.seeds=[4,5]", "linear.max_iter=50"])
    assert list(cfg.eval.seeds) == [4, 5] and cfg.linear.max_iter == 50
    assert cfg.linear.val_fraction == 0.2 and cfg.eval.label_fractions == [1.0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=3", r"unknown key 'epochs'; valid keys: eval, knn, linear, name"),
        ("eval.sedes=[1]", r"unknown key eval.'sedes' \(did you mean 'seeds'\?\)"),
        ("linear.lambda=0.1", r"unknown key linear.'lambda' \(did you mean 'lambdas'\?\)"),
        ("knn.k=5", r"unknown key knn.'k'; valid keys: presets"),
        ("tasks.digits.val=1", r"unknown key tasks.digits.'val'; valid keys: test, train, transform"),
        ("tasks.digits.train.splt=test", r"unknown key tasks.digits.train.'splt' \(did you mean 'split'\?\)"),
        ("eval.protocols=[knn,finetune]", r"unknown protocol 'finetune'; valid protocols: knn, linear"),
        ("knn.presets=[k10_t0.07]", r"unknown preset 'k10_t0.07'; valid presets: k20_t0.07, k200_t0.1"),
        ("eval.label_fractions=[0.0]", r"eval.label_fractions: 0.0 is not in \(0, 1\]"),
        ("eval.seeds=[0,0]", r"eval.seeds must be distinct integers"),
        ("linear.val_fraction=1.5", r"linear.val_fraction must be in \(0, 1\)"),
        ("random_backbone.name=resnet_nope", r"random_backbone.name 'resnet_nope' is not a timm model"),
    ],
)
def test_bad_keys_and_values_fail_naming_them(override, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(DIGITS, [override])


def test_a_task_must_have_all_three_components(tmp_path):
    cfg = OmegaConf.load(DIGITS)
    del cfg.tasks.digits.transform
    OmegaConf.save(cfg, tmp_path / "suite.yaml")
    with pytest.raises(ConfigError, match="tasks.digits.transform is required"):
        load_suite(tmp_path / "suite.yaml")
    cfg = OmegaConf.load(DIGITS)
    cfg.tasks.digits.transform.size = "???"
    OmegaConf.save(cfg, tmp_path / "suite.yaml")
    with pytest.raises(
        ConfigError, match=r"tasks.digits.transform.size has no value; set it on the command line"
    ):
        load_suite(tmp_path / "suite.yaml")
    cfg.tasks = {}
    OmegaConf.save(cfg, tmp_path / "suite.yaml")
    with pytest.raises(ConfigError, match="tasks must map task names"):
        load_suite(tmp_path / "suite.yaml")


def test_digits_suite_end_to_end_with_a_random_backbone(tmp_path):
    # the suite as shipped, with a shorter λ sweep and two seeds so the test takes seconds
    cfg = load_suite(DIGITS, ["eval.seeds=[0,1]", "linear.lambdas=[1.0e-4,1.0e-2,1.0]"])
    backbone = tiny_random_backbone().train()
    rows = run_suite(cfg, backbone, "random", tmp_path / "out")
    assert backbone.training  # handed back as it came
    seeds, settings = (
        [0, 1],
        {("knn_k20_t0.07", "top1"), ("knn_k200_t0.1", "top1"), ("linear", "top1"), ("linear", "lambda")},
    )
    assert len(rows) == len(seeds) * len(settings)
    assert {(r["protocol"], r["metric"]) for r in rows} == settings and {r["seed"] for r in rows} == set(
        seeds
    )
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows and all(list(r) == list(KEYS) for r in rows)
    for row in rows:
        assert row["task"] == "digits" and row["backbone"] == "random" and row["noise_kind"] == "none"
        if row["metric"] == "top1":
            assert 20.0 < row["value"] <= 100.0  # a random conv net is far above chance (10%) on digits
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "ddof=1" in summary and summary.count("| random | digits |") == len(settings)
    assert all(f"| {p} |" in summary for p, _ in settings) and "| 2 |" in summary
    assert OmegaConf.load(tmp_path / "out" / "suite.yaml") == cfg
    with pytest.raises(FileExistsError, match="another out_dir"):
        run_suite(cfg, backbone, "random", tmp_path / "out")


def test_pixel_features_are_a_strong_baseline_and_extracted_once(tmp_path):
    """Sanity anchor: kNN and the linear probe on raw digits pixels are well above 90%."""
    cfg = load_suite(
        DIGITS, ["eval.seeds=[0,1]", "eval.batch_size=500", "linear.lambdas=[1.0e-3,1.0e-2,1.0e-1]"]
    )
    backbone = PixelBackbone()
    rows = run_suite(cfg, backbone, "pixels", tmp_path)
    top1 = {(r["protocol"], r["seed"]): r["value"] for r in rows if r["metric"] == "top1"}
    assert all(value > 90.0 for value in top1.values()), top1
    assert top1[("knn_k20_t0.07", 0)] == top1[("knn_k20_t0.07", 1)]  # kNN on all labels has no randomness
    # 1347 train + 450 test images in batches of 500: 3 + 1 forward passes for 2 seeds x 3 protocols
    assert backbone.calls == 4
    knn_only = load_suite(DIGITS, ["eval.seeds=[0,1]", "eval.protocols=[knn]"])
    rows_again = run_suite(knn_only, PixelBackbone(), "pixels", tmp_path, overwrite=True)
    assert rows_again == [r for r in rows if r["protocol"].startswith("knn")]  # deterministic
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(
        rows_again
    )  # replaced, not appended


def test_label_fractions_are_class_balanced_subsets(tmp_path):
    labels = torch.arange(10).repeat(30)  # 300 samples, 30 per class
    subset = labelled_subset(labels, 0.1, seed=0)
    assert torch.bincount(labels[subset], minlength=10).tolist() == [3] * 10
    assert not torch.equal(subset, labelled_subset(labels, 0.1, seed=1))
    assert torch.equal(labelled_subset(labels, 1.0, seed=5), torch.arange(300))
    cfg = load_suite(DIGITS, ["eval.label_fractions=[0.1,1.0]", "eval.seeds=[0]", "eval.protocols=[knn]"])
    with pytest.warns(UserWarning, match="k=200 exceeds the bank of 135 samples"):
        rows = run_suite(cfg, PixelBackbone(), "pixels", tmp_path)
    by_fraction = {(r["label_fraction"], r["protocol"]): r["value"] for r in rows}
    assert set(by_fraction) == {(f, p) for f in (0.1, 1.0) for p in ("knn_k20_t0.07", "knn_k200_t0.1")}
    # 135 labels bring k=200 down to the whole bank: its weighted vote degrades more than k=20's
    assert by_fraction[(0.1, "knn_k20_t0.07")] < by_fraction[(1.0, "knn_k20_t0.07")]
