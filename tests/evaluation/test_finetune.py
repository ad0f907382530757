"""Fine-tuning and the SGD probe through the engine: what trains, what stays frozen, layer-wise lr,
drop-path, resume and identity, regression heads, and robust losses against cross-entropy under 60%
label noise."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from ssl_platform.checkpoint.io import load_backbone
from ssl_platform.data.datasets import ArrayImages
from ssl_platform.data.transforms import EvalTransform
from ssl_platform.engine.trainer import TrainConfig, _apply_schedules, _build_optimizer
from ssl_platform.evaluation import noise
from ssl_platform.evaluation.finetune import LabelledView, finetune
from ssl_platform.evaluation.finetune_heads import Classifier, Regressor
from ssl_platform.models.backbones import create_backbone


def tiny_backbone(seed=0, **kwargs):
    torch.manual_seed(seed)
    return create_backbone("resnet18", small_input=True, in_chans=1, channels=[4, 8, 8, 8], zero_init_last=False,
                           **kwargs)


def blobs(n=96, size=8, seed=0):
    """Images whose class (0-3) is the bright quadrant: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    half = size // 2
    for i, c in enumerate(labels):
        r, k = divmod(int(c), 2)
        images[i, r * half:(r + 1) * half, k * half:(k + 1) * half] += 180
    return ArrayImages(images, labels, ["a", "b", "c", "d"])


def run(tmp_path, backbone, train, test, **kwargs):
    settings = {"train_transform": EvalTransform(8, 1), "test_transform": EvalTransform(8, 1), "num_classes": 4,
                    "out_dir": tmp_path / "ft", "epochs": 4, "batch_size": 32, "lr": 0.08, "warmup_epochs": 0}
    return finetune(backbone, train, test, **{**settings, **kwargs})


@pytest.mark.slow
def test_finetune_learns_and_leaves_the_callers_backbone_alone(tmp_path):
    backbone = tiny_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = run(tmp_path, backbone, blobs(), blobs(seed=1), epochs=10)
    assert result.test_accuracy > 50.0 and result.steps == 10 * 3  # chance is 25%
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    trained = load_backbone(tmp_path / "ft" / "backbone.safetensors")  # the engine exported the tuned copy
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())


def test_linear_sgd_trains_only_the_head_with_frozen_batchnorm(tmp_path):
    backbone = tiny_backbone()
    result = run(tmp_path, backbone, blobs(), blobs(seed=1), freeze_backbone=True, optimizer="sgd", lr=1.0)
    trained = load_backbone(tmp_path / "ft" / "backbone.safetensors")
    # weights and BatchNorm running statistics exactly as they came: the backbone stayed in eval mode
    for key, value in backbone.state_dict().items():
        assert torch.equal(trained.state_dict()[key], value), key
    assert result.test_accuracy > 60.0  # the head alone on random conv features still separates quadrants


def test_classifier_batch_contract_and_label_range():
    method = Classifier(tiny_backbone(), num_classes=4, num_samples=8, loss="elr")
    batch = {"image": torch.randn(8, 1, 8, 8), "label": torch.arange(8) % 4, "index": torch.arange(8)}
    out = method(batch)
    assert out["loss"].ndim == 0 and 0.0 <= out["acc1"] <= 100.0
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        method({**batch, "label": torch.full((8,), 4)})


def brightness(n=96, size=8, seed=0):
    """`blobs` images dimmed by a random factor in [0.2, 1]; the float target is the image's mean
    brightness (about 15-75): a regression a small convnet fits in a few epochs."""
    data = blobs(n, size, seed)
    factor = np.random.default_rng(seed + 100).uniform(0.2, 1.0, n)
    data.images = (data.images * factor[:, None, None]).astype(np.uint8)
    targets = data.images.reshape(n, -1).mean(axis=1).astype(np.float64)
    return LabelledView(data, torch.arange(n), torch.from_numpy(targets))


def test_regressor_trains_mse_on_standardised_targets_and_predicts_in_their_units():
    torch.manual_seed(0)
    method = Regressor(tiny_backbone(), torch.tensor([50.0]), torch.tensor([20.0]))
    image, target = torch.randn(6, 1, 8, 8), torch.tensor([10.0, 30.0, 50.0, 70.0, 90.0, 55.0])
    out = method({"image": image, "label": target})
    with torch.no_grad():  # train mode still: BatchNorm normalises with the same batch statistics
        z = method.logits(image)[:, 0]
    # naive: the loss is plain MSE between the raw head output and (y - mean) / std
    assert out["loss"].item() == pytest.approx(((z - (target - 50.0) / 20.0) ** 2).mean().item(), rel=1e-5)
    assert torch.allclose(method.predict(image), z * 20.0 + 50.0)
    assert out["rmse"].item() == pytest.approx(((z * 20.0 + 50.0 - target) ** 2).mean().sqrt().item(), rel=1e-5)
    assert method.predict(image).shape == (6,)
    multi = Regressor(tiny_backbone(), torch.tensor([0.0, 1.0]), torch.tensor([0.0, 2.0]), scalar=False)
    assert multi.target_std.tolist() == [1.0, 2.0]  # a constant output is not divided by 0
    assert multi.predict(image).shape == (6, 2) and multi({"image": image, "label": torch.zeros(6, 2)})["loss"].isfinite()
    with pytest.raises(ValueError, match="regression targets must be finite"):
        method({"image": image, "label": torch.tensor([1.0, float("nan"), 0, 0, 0, 0])})


@pytest.mark.slow
def test_regression_fine_tune_learns_and_reports_rmse_and_r2_of_its_predictions(tmp_path):
    train, test = brightness(), brightness(seed=1)
    result = run(tmp_path, tiny_backbone(), train, test, kind="regression", epochs=30, lr=2e-2)
    assert set(result.metrics) == {"rmse", "r2"}
    assert result.metrics["r2"] > 0.8, result.metrics  # predicting the mean scores 0
    # R² and RMSE describe the same predictions: R² = 1 - MSE / Var(test targets)
    y = torch.as_tensor(test.labels, dtype=torch.float64)
    assert result.metrics["r2"] == pytest.approx(1 - result.metrics["rmse"] ** 2 / y.var(unbiased=False).item(), abs=1e-6)
    with pytest.raises(KeyError):
        result.test_accuracy  # noqa: B018  (a regression has no top-1)


def test_regression_fine_tune_refuses_class_losses_and_unknown_kinds(tmp_path):
    train, test = brightness(n=8), brightness(n=8, seed=1)
    with pytest.raises(ValueError, match="regression fine-tuning trains with MSE: loss must be 'none'"):
        run(tmp_path, tiny_backbone(), train, test, kind="regression", loss="gce")
    with pytest.raises(ValueError, match="finetune kind 'ranking' is not one of classification, regression"):
        run(tmp_path, tiny_backbone(), train, test, kind="ranking")
    targets = torch.tensor(train.labels, dtype=torch.float64)
    targets[[1, 5]] = float("nan")
    broken = LabelledView(train.dataset, torch.arange(8), targets)
    with pytest.raises(ValueError, match="2 of 8 training targets are NaN or inf; drop or fill"):
        run(tmp_path, tiny_backbone(), broken, test, kind="regression")
    assert not (tmp_path / "ft").exists()  # refused before the engine wrote anything


def test_layer_decay_gives_each_depth_its_lr_and_the_head_the_full_lr():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=0, depth=4)
    method = Classifier(vit, num_classes=3, num_samples=10, layer_decay=0.5)
    cfg = TrainConfig(epochs=1, warmup_epochs=0)
    optimizer = _build_optimizer(method, lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05),
                                 global_batch=256, rule="linear")
    _apply_schedules(optimizer, cfg, step=0, total=10, warmup=0)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    # BEiT/MAE: patch embedding is layer 0, block j is layer j+1, the head the top (L+1 = 5)
    assert lr_of[id(method.head.weight)] == pytest.approx(1e-3)
    assert lr_of[id(vit.patch_embed.proj.weight)] == pytest.approx(1e-3 * 0.5**5)
    for j, block in enumerate(vit.blocks):
        assert lr_of[id(block.attn.qkv.weight)] == pytest.approx(1e-3 * 0.5 ** (4 - j))
    assert wd_of[id(vit.blocks[0].norm1.weight)] == 0.0 and wd_of[id(vit.blocks[0].attn.qkv.weight)] == 0.05
    assert wd_of[id(vit.pos_embed)] == 0.0 and lr_of[id(vit.pos_embed)] == pytest.approx(1e-3 * 0.5**5)
    assert wd_of[id(method.head.bias)] == 0.0 and wd_of[id(method.head.weight)] == 0.05


def test_drop_path_rebuilds_the_architecture_with_the_same_weights(tmp_path):
    from ssl_platform.evaluation.finetune import _trainable_copy

    backbone = tiny_backbone()
    copy = _trainable_copy(backbone, drop_path=0.2)
    assert any(type(m).__name__ == "DropPath" for m in copy.modules())
    assert not any(type(m).__name__ == "DropPath" for m in backbone.modules())
    for key, value in backbone.state_dict().items():
        assert torch.equal(copy.state_dict()[key], value)
    with pytest.raises(ValueError, match="drop_path needs a backbone built by ssl_platform"):
        _trainable_copy(torch.nn.Linear(2, 2), drop_path=0.1)


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again_and_another_backbone_is_refused(tmp_path):
    backbone = tiny_backbone()
    first = run(tmp_path, backbone, blobs(), blobs(seed=1), identity={"backbone_sha256": "a" * 64})
    mtime = (tmp_path / "ft" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = run(tmp_path, backbone, blobs(), blobs(seed=1), identity={"backbone_sha256": "a" * 64})
    assert again.test_accuracy == first.test_accuracy
    assert (tmp_path / "ft" / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"cannot resume .*backbone_sha256: 'a+' -> 'b+'"):
        run(tmp_path, backbone, blobs(), blobs(seed=1), identity={"backbone_sha256": "b" * 64})


def test_min_steps_gives_small_subsets_more_epochs(tmp_path):
    result = run(tmp_path, tiny_backbone(), LabelledView(blobs(), torch.arange(40), torch.zeros(40, dtype=torch.long)),
                 blobs(seed=1), epochs=1, min_steps=5)
    assert result.steps == 5  # 40 images in one batch: one step per epoch, five epochs


def test_labelled_view_relabels_a_subset():
    data = blobs(n=10)
    view = LabelledView(data, torch.tensor([7, 2]), torch.tensor([3, 1]))
    assert len(view) == 2 and view[0][1] == 3 and view[1][1] == 1
    assert np.array_equal(np.asarray(view[0][0]), np.asarray(data[7][0]))
    with pytest.raises(ValueError, match="2 indices but 1 labels"):
        LabelledView(data, torch.tensor([7, 2]), torch.tensor([3]))


@pytest.mark.slow
@pytest.mark.data
def test_elr_beats_cross_entropy_fine_tuning_at_60_percent_symmetric_noise(tmp_path):
    """A backbone pretrained on 2000 clean Fashion-MNIST images, fine-tuned on 1000 others whose labels
    are 60% wrong (exclusive symmetric noise), 30 epochs: cross-entropy memorises the noise, ELR's
    per-sample target EMA keeps the early, mostly right, predictions. Fixed seeds; measured at this
    commit CE 41.1% vs ELR 55.5% on 2000 test images (GCE 44.6%)."""
    from ssl_platform.data.datasets import FashionMNIST

    pool, test = FashionMNIST("train", limit=3000, seed=0), FashionMNIST("test", limit=2000, seed=0)
    labels = torch.as_tensor(pool.targets)
    pre, tune = torch.arange(2000), torch.arange(2000, 3000)
    eval14 = EvalTransform(14, 1)
    common = {"train_transform": eval14, "test_transform": eval14, "num_classes": 10, "batch_size": 128}
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", small_input=True, in_chans=1, stem_stride=2, channels=[8, 16, 32, 64],
                               zero_init_last=False)
    finetune(backbone, LabelledView(pool, pre, labels[pre]), test, out_dir=tmp_path / "pre", epochs=5, lr=4e-3,
             **common)
    pretrained = load_backbone(tmp_path / "pre" / "backbone.safetensors")
    noisy = noise.corrupt(labels[tune], "symmetric", 0.6, 10, seed=0)
    assert noisy.realised == pytest.approx(0.6, abs=0.001)
    acc = {loss: finetune(pretrained, LabelledView(pool, tune, noisy.labels), test, out_dir=tmp_path / loss,
                          loss=loss, epochs=30, lr=2e-3, warmup_epochs=1, **common).test_accuracy
           for loss in ("none", "elr")}
    assert acc["elr"] > acc["none"] + 5.0, acc
