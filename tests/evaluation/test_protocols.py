"""The protocol registry (one function per suite protocol, each kind's protocols among them) and the
settings a task walks (fraction, seed, noise; the labels each protocol sees)."""

from __future__ import annotations

import inspect

import torch

from ssl_platform.evaluation import noise as noise_lib
from ssl_platform.evaluation.protocols import KIND_PROTOCOLS, KINDS, PROTOCOLS
from ssl_platform.evaluation.settings import Setting, labelled_subset, task_settings
from ssl_platform.evaluation.suite_schema import EvalConfig, NoiseConfig
from ssl_platform.evaluation.tasks import TaskData


def test_every_protocol_is_one_function_of_the_task_the_setting_and_the_context():
    for name, protocol in PROTOCOLS.items():
        assert list(inspect.signature(protocol).parameters) == ["data", "setting", "ctx"], name


def test_every_kind_runs_registered_protocols_in_the_registry_order():
    assert KINDS == ("classification", "regression", "multilabel", "retrieval")
    for kind, names in KIND_PROTOCOLS.items():
        assert list(names) == [p for p in PROTOCOLS if p in names], kind
    assert set().union(*KIND_PROTOCOLS.values()) == set(PROTOCOLS)  # no protocol that no task can run


def task(kind: str, y: torch.Tensor) -> TaskData:
    x = torch.arange(len(y), dtype=torch.float32)[:, None]  # [N, 1]: a feature that names its sample
    return TaskData(name="t", kind=kind, train_set=None, test_set=None, transform=None, train_transform=None,
                    train=(x, y), test=(x, y), val=None, num_classes=4, pixels=None)


def test_settings_go_fraction_then_seed_then_noise_and_corrupt_the_subset_only():
    y = torch.arange(4).repeat(10)  # 40 samples, 10 per class
    ev, noise = EvalConfig(label_fractions=[0.5, 1.0], seeds=[0, 1]), NoiseConfig(kinds=["symmetric"], rates=[0.5])
    settings = list(task_settings(task("classification", y), ev, noise, use_noise=True))
    assert [(s.fraction, s.seed, s.noise_kind, s.noise_rate) for s in settings] == [
        (f, seed, kind, rate) for f in (0.5, 1.0) for seed in (0, 1) for kind, rate in (("none", 0.0), ("symmetric", 0.5))]
    for s in settings:
        keep = labelled_subset(y, s.fraction, s.seed)  # class-balanced, from the clean labels
        assert torch.equal(s.keep, keep) and torch.equal(s.x[:, 0].long(), keep)
        expected = noise_lib.corrupt(y[keep], s.noise_kind, s.noise_rate, 4, s.seed)
        assert torch.equal(s.y, expected.labels) and s.labels_sha256() == expected.sha256
        assert s.realised_rate == expected.realised and s.name == f"f{s.fraction:g}-{s.noise_kind}{s.noise_rate:g}-s{s.seed}"
    assert settings[1].realised_rate == 0.5  # exclusive symmetric noise: realised = nominal


def test_regression_takes_no_noise_and_retrieval_one_clean_setting_per_seed():
    ev, noise = EvalConfig(label_fractions=[0.5, 1.0], seeds=[3, 4]), NoiseConfig(kinds=["symmetric"], rates=[0.5])
    values = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
    settings = list(task_settings(task("regression", values), ev, noise, use_noise=True))
    assert [(s.fraction, s.seed, s.noise_kind) for s in settings] == [(f, s, "none") for f in (0.5, 1.0) for s in (3, 4)]
    assert all(s.noisy is None and s.realised_rate == 0.0 for s in settings)
    assert len(settings[0].y) == 5 and torch.equal(settings[-1].y, values)
    assert list(task_settings(task("retrieval", values), ev, noise, use_noise=False)) == [
        Setting(fraction=1.0, seed=3), Setting(fraction=1.0, seed=4)]
