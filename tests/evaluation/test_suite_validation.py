"""The checks before a suite runs (`suite_validation.check_suite_data`, `check_backbone_fit`).

Every shipped suite passes them against its `random_backbone` (suites whose data is not prepared here
are skipped, naming it); each check has a bad suite or backbone whose message is asserted, and the
transform probe is compared with the transforms' own settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_platform import config
from ssl_platform.config import ConfigError
from ssl_platform.data.transforms import EvalTransform, SupervisedTransform
from ssl_platform.data.transforms.multispectral import ResizeBands
from ssl_platform.evaluation.suite_validation import (
    backbone_fit_problems,
    check_backbone_fit,
    check_suite_data,
    load_suite,
    probe_transform,
)
from ssl_platform.models.backbones import from_spec
from ssl_platform.models.input_fit import on_meta
from ssl_platform.models.text import train_wordpiece

ROOT = Path(__file__).resolve().parents[2]
SUITES = sorted((ROOT / "eval").glob("*.yaml"))
ZOO = ROOT / "zoo"
# data sets a suite names under the data root that no `data prepare` fetches (downloaded by hand)
EXTERNAL = ("BigEarthNet-v1.0",)


def backbone(arch: dict):
    """The architecture on the meta device (no weights: the checks read shapes only), else on the CPU."""
    return on_meta(lambda: from_spec(arch)) or from_spec(arch)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("SSL_PLATFORM_DATA", raising=False)
    return work


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_every_shipped_suite_passes_the_checks(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # shipped suites name their data from the repository root
    suite = load_suite(path)
    try:
        check_suite_data(suite)
    except ConfigError as err:
        lines = str(err).splitlines()[1:]
        if all("data prepare" in line or "an absolute path" in line or any(e in line for e in EXTERNAL)
               for line in lines):
            pytest.skip(f"data not prepared here: {err}")
        raise
    arch = config.to_plain(suite.get("random_backbone"))
    if arch is None or "num_numeric" in arch:  # tables: no transform to check
        return
    assert backbone_fit_problems(suite, backbone(arch), "random") == []


# ---- data on disk


def test_a_suites_tokenizer_follows_the_data_root(cwd, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_PLATFORM_DATA", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    suite = load_suite(ROOT / "eval/emoji_retrieval.yaml")
    with pytest.raises(ConfigError) as err:
        check_suite_data(suite)
    assert str(err.value) == (
        "suite emoji_retrieval cannot run (1 problem found before any work):\n"
        f"  - tasks.emoji_pairs.transform.tokenizer=data/emoji/wordpiece.json: not found as "
        f"{tmp_path}/root/emoji/wordpiece.json nor as ./data/emoji/wordpiece.json (SSL_PLATFORM_DATA={tmp_path}/root); "
        "run `python -m ssl_platform data prepare emoji` (it writes <data root>/emoji/), or set SSL_PLATFORM_DATA to "
        "the data root that holds it")
    train_wordpiece(["grinning face"], tmp_path / "root/emoji/wordpiece.json", vocab_size=50)
    check_suite_data(suite)


def test_a_missing_dataset_root_is_named_with_every_key(cwd, tmp_path):
    suite = load_suite(ROOT / "eval/bigearthnet.yaml", [f"tasks.bigearthnet.train.root={tmp_path}/nope",
                                                         f"tasks.bigearthnet.test.root={tmp_path}/nope"])
    with pytest.raises(ConfigError, match=rf"  - tasks\.bigearthnet\.train\.root, tasks\.bigearthnet\.test\.root="
                                          rf"{tmp_path}/nope: not found \(an absolute path is used as it is\); fix the path$"):
        check_suite_data(suite)


# ---- the transforms against the backbone


def test_the_probe_reads_what_a_transform_makes():
    grey = probe_transform(EvalTransform(size=28, channels=1), 1)
    assert (grey.channels, grey.size) == (1, (28, 28)) and grey.mean == pytest.approx([0.5], abs=1e-5)
    rgb = probe_transform(EvalTransform(size=16, channels=3, mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 2.0]), 3)
    assert rgb.mean == pytest.approx([0.1, 0.2, 0.3], abs=1e-5) and rgb.std == pytest.approx([0.5, 0.25, 2.0], abs=1e-5)
    assert probe_transform(SupervisedTransform(size=12, channels=1), 1).size == (12, 12)
    bands = probe_transform(ResizeBands(size=24), 10)  # tensors in, tensors out: no normalisation to read
    assert (bands.channels, bands.size, bands.mean) == (10, (24, 24), None)
    assert probe_transform(ResizeBands(), 10).size is None  # keeps each input's size: no size to check
    assert probe_transform(lambda item: {"graph": item}, 3) is None


def test_eval_transform_channels_against_the_backbone():
    suite = load_suite(ROOT / "eval/fmnist_quick.yaml")
    assert backbone_fit_problems(suite, backbone({"name": "resnet18", "small_input": True, "in_chans": 3}), "rgb") == [
        ("tasks.fmnist.transform: 1-channel images, but backbone rgb (resnet18, in_chans=3) takes 3-channel images; "
        "set tasks.fmnist.transform.channels=3, or evaluate a backbone pretrained on 1-channel images")]


def test_eval_transform_size_against_a_vit_patch_and_its_fixed_size():
    vit = backbone({"name": "vit_tiny_patch16_224", "in_chans": 3, "img_size": 32, "patch_size": 4, "embed_dim": 32,
                    "depth": 1, "num_heads": 2})
    suite = load_suite(ROOT / "eval/emoji.yaml", ["tasks.emoji.transform.size=30"])
    assert backbone_fit_problems(suite, vit, "vit") == [
        ("tasks.emoji.transform: 30x30 images are not tiled by the 4x4 patches of backbone vit (vit_tiny_patch16_224, "
        "in_chans=3) (the patch grid would drop the remainder); use a side of 28 or 32; set tasks.emoji.transform.size "
        "to such a side")]
    suite = load_suite(ROOT / "eval/emoji.yaml", ["tasks.emoji.transform.size=64"])
    assert backbone_fit_problems(suite, vit, "vit") == [
        ("tasks.emoji.transform: 64x64 images, but backbone vit (vit_tiny_patch16_224, in_chans=3) is built for 32x32 "
        "(a ViT's position table fixes its input size); set tasks.emoji.transform.size=32")]


def test_eval_images_too_small_for_the_strides():
    found = backbone_fit_problems(load_suite(ROOT / "eval/digits.yaml"),
                                  backbone({"name": "convnext_atto", "in_chans": 1}), "convnext")
    assert [p.split(" (Calculated")[0] for p in found] == [
        "tasks.digits.transform: 8x8 images are too small for the strides of backbone convnext (convnext_atto, in_chans=1)",
        ("tasks.digits.train_transform: 8x8 images are too small for the strides of backbone convnext (convnext_atto, "
        "in_chans=1)")]
    assert found[0].endswith("; use larger images (tasks.digits.transform.size)")


def test_eval_normalisation_against_what_a_zoo_backbone_records():
    from ssl_platform.zoo import load_backbone

    zoo_backbone = load_backbone("simclr_resnet18.fmnist32_2ep", ZOO)  # pretrained at 32 px, mean 0.5, std 0.5
    assert backbone_fit_problems(load_suite(ROOT / "eval/fmnist_fewlabels.yaml"), zoo_backbone, "zoo") == []
    suite = load_suite(ROOT / "eval/fmnist_fewlabels.yaml", ["tasks.fmnist.transform.mean=[0.2]",
                                                             "tasks.fmnist.transform.std=[0.4]"])
    assert backbone_fit_problems(suite, zoo_backbone, "zoo") == [
        ("tasks.fmnist.transform normalises with mean=[0.2], std=[0.4], but backbone zoo (resnet18, in_chans=1) was "
        "pretrained with mean=[0.5], std=[0.5] (its zoo entry); set tasks.fmnist.transform.mean and "
        "tasks.fmnist.transform.std to those")]
    # timm's default pretrained_cfg (ImageNet statistics of weights never loaded) is no record
    assert backbone_fit_problems(suite, from_spec(zoo_backbone._ssl_platform_spec), "random") == []


def test_check_backbone_fit_raises_every_problem_at_once():
    suite = load_suite(ROOT / "eval/digits.yaml", ["tasks.digits.transform.channels=3"])
    with pytest.raises(ConfigError) as err:
        check_backbone_fit(suite, backbone({"name": "resnet18", "small_input": True, "in_chans": 1}), "gray")
    assert str(err.value) == (
        "suite digits cannot evaluate backbone gray (1 problem found before any work):\n"
        "  - tasks.digits.transform: 3-channel images, but backbone gray (resnet18, in_chans=1) takes 1-channel "
        "images; set tasks.digits.transform.channels=1, or evaluate a backbone pretrained on 3-channel images")
    assert isinstance(err.value, ValueError)


def test_a_meta_backbone_and_its_real_twin_give_the_same_answers():
    arch = {"name": "resnet18", "small_input": True, "in_chans": 1, "channels": [8, 16, 32, 64]}
    suite = load_suite(ROOT / "eval/digits.yaml", ["tasks.digits.transform.channels=3"])
    meta, real = backbone(arch), from_spec(arch)
    assert next(meta.parameters()).is_meta and not next(real.parameters()).is_meta
    assert backbone_fit_problems(suite, meta, "b") == backbone_fit_problems(suite, real, "b")
