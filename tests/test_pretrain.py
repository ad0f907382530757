"""Recipe -> run: composition of components, the online kNN monitor, the supervised baseline, every
debug recipe under bf16 autocast."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_platform import pretrain
from ssl_platform.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = "{_component_: ssl_platform.data.datasets.Digits, split: %s}"
EVAL8 = "{_component_: ssl_platform.data.transforms.EvalTransform, size: 8, channels: 1}"


def rows(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_online_knn_monitor_logs_each_epoch(tmp_path):
    cfg = pretrain.load_recipe(ROOT / "recipes/simclr/debug.yaml", [
        f"train.out_dir={tmp_path}", "train.max_steps=null", "train.epochs=2", "train.log_every_steps=50",
        "monitor.knn_every_epochs=1", f"monitor.dataset={DIGITS % 'train'}", f"monitor.val_dataset={DIGITS % 'test'}",
        f"monitor.transform={EVAL8}", "monitor.k=5",
    ])
    pretrain.run(cfg)
    monitored = [r for r in rows(tmp_path) if "monitor/knn_top1" in r]
    assert [r["epoch"] for r in monitored] == [0, 1]
    # digits has 10 balanced classes: even weak features must beat chance by far
    assert all(20.0 < r["monitor/knn_top1"] <= 100.0 for r in monitored)


def test_monitor_reads_features_through_the_methods_embed():
    """The online kNN sees what evaluation sees: `method.embed`, here one that ignores the backbone."""
    from ssl_platform.methods.base import Method

    class Pixels(Method):  # embeds each image as its (flattened) pixels: kNN on raw digits is strong
        def __init__(self):
            super().__init__()
            self.backbone, self.calls = torch.nn.Identity(), 0

        def embed(self, batch):
            self.calls += 1
            return batch["image"].flatten(1)

    monitor = pretrain.MonitorConfig(
        knn_every_epochs=1, k=5, dataset={"_component_": "ssl_platform.data.datasets.Digits", "split": "train"},
        val_dataset={"_component_": "ssl_platform.data.datasets.Digits", "split": "test"},
        transform={"_component_": "ssl_platform.data.transforms.EvalTransform", "size": 8, "channels": 1})
    method = Pixels().train()
    metrics = pretrain.build_monitor(monitor, "cpu")(method, 0)
    assert method.calls > 0 and method.training
    assert metrics["knn_top1"] > 90.0  # 5-NN on raw 8x8 digits


def test_monitor_without_data_says_what_is_missing(tmp_path):
    cfg = pretrain.load_recipe(ROOT / "recipes/simclr/debug.yaml",
                               [f"train.out_dir={tmp_path}", "monitor.knn_every_epochs=1"])
    with pytest.raises(ConfigError, match="monitor.dataset, monitor.val_dataset and monitor.transform"):
        pretrain.run(cfg)


@pytest.mark.slow
def test_supervised_debug_recipe_learns(tmp_path):
    cfg = pretrain.load_recipe(ROOT / "recipes/supervised/debug.yaml",
                               [f"train.out_dir={tmp_path}", "train.max_steps=12", "train.log_every_steps=1"])
    pretrain.run(cfg)
    logged = rows(tmp_path)
    assert {"train/loss", "train/acc1"} <= set(logged[0])
    losses = [row["train/loss"] for row in logged]
    # the mean of the last 4 steps below that of the first 4: one step's loss is noisy at batch 64
    assert sum(losses[-4:]) < sum(losses[:4])
    assert (tmp_path / "backbone.safetensors").exists()


# ---- two-stage recipes (`before:`), G-SimCLR's debug recipe


GSIMCLR = ROOT / "recipes/gsimclr/debug.yaml"


def test_first_stage_defaults_into_the_run_dir_and_the_second_names_it(tmp_path):
    cfg = pretrain.load_recipe(GSIMCLR, [f"train.out_dir={tmp_path}"])
    assert cfg.before.train.out_dir == str(tmp_path / "dae")
    assert cfg.method.encoder == str(tmp_path / "dae")  # ${before.train.out_dir}, resolved
    cfg = pretrain.load_recipe(GSIMCLR, [f"train.out_dir={tmp_path}", f"before.train.out_dir={tmp_path}/stage1"])
    assert cfg.method.encoder == str(tmp_path / "stage1")


def test_first_stage_keys_are_validated_with_their_path():
    with pytest.raises(ConfigError, match=r"before\.train\.'epoch'.*did you mean 'epochs'"):
        pretrain.load_recipe(GSIMCLR, ["before.train.epoch=3"])
    with pytest.raises(ConfigError, match=r"before\.method\.'noise_sd'.*did you mean 'noise_std'"):
        pretrain.load_recipe(GSIMCLR, ["before.method.noise_sd=0.2"])
    with pytest.raises(ConfigError, match=r"unknown key before\.'monitr'"):
        pretrain.load_recipe(GSIMCLR, ["before.monitr.k=3"])


def test_gsimclr_recipes_are_checked_against_simclrs_arguments_too():
    """G-SimCLR takes SimCLR's arguments through, and a misspelt one is still refused before any stage runs."""
    with pytest.raises(ConfigError, match=r"method\.'temprature'.*did you mean 'temperature'"):
        pretrain.load_recipe(GSIMCLR, ["method.temprature=0.3"])
    with pytest.raises(ConfigError, match=r"method\.proj_dim='wide' is not a valid value: expected int"):
        pretrain.load_recipe(GSIMCLR, ["method.proj_dim=wide"])  # SimCLR's types are checked too
    assert pretrain.load_recipe(GSIMCLR, ["method.temperature=0.3"]).method.temperature == 0.3


@pytest.mark.slow
def test_gsimclr_debug_runs_both_stages_and_a_rerun_does_not_train_the_first_again(tmp_path):
    overrides = [f"train.out_dir={tmp_path}", "train.max_steps=24"]
    pretrain.run(pretrain.load_recipe(GSIMCLR, overrides))
    stage1 = rows(tmp_path / "dae")
    assert stage1[-1]["step"] == 21 and stage1[-1]["train/loss"] < stage1[0]["train/loss"]
    logged = rows(tmp_path)
    assert logged[-1]["step"] == 24
    # 20 of the 21 batches of an epoch can be fully distinct (the run prints the bound): the logged
    # share of distinct pseudo-labels is 1.0 on all of those
    assert sum(r["train/distinct_labels"] == 1.0 for r in logged) >= 20
    labels = sorted(p.name for p in (tmp_path / "pseudo_labels").iterdir())
    assert labels == ["epoch_0000.json", "epoch_0000.npy", "epoch_0001.json", "epoch_0001.npy"]
    stamp = (tmp_path / "dae" / "checkpoints" / "last.pt").stat().st_mtime_ns
    result = pretrain.run(pretrain.load_recipe(GSIMCLR, [f"train.out_dir={tmp_path}", "train.max_steps=26"]))
    assert result["step"] == 26
    assert len(rows(tmp_path / "dae")) == len(stage1), "the finished first stage trained again"
    assert (tmp_path / "dae" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_a_finished_run_run_again_exports_the_same_weights_and_metadata(tmp_path):
    """A finished first stage is resumed at its last step each time its recipe runs again; what it
    exports must not change (G-SimCLR keys its pseudo-labels to the encoder's weights)."""
    from safetensors.torch import load_file

    from ssl_platform.checkpoint.io import read_backbone_metadata
    from ssl_platform.methods.gsimclr import weights_sha256

    overrides = [f"train.out_dir={tmp_path}", "train.max_steps=null", "train.epochs=1", "train.log_every_steps=50"]
    pretrain.run(pretrain.load_recipe(ROOT / "recipes/supervised/debug.yaml", overrides))
    file = tmp_path / "backbone.safetensors"
    first, meta, digest = load_file(str(file)), read_backbone_metadata(file), weights_sha256(file)
    result = pretrain.run(pretrain.load_recipe(ROOT / "recipes/supervised/debug.yaml", overrides))
    assert result["epoch"] == 1 and read_backbone_metadata(file) == meta and meta["epoch"] == 1
    from ssl_platform.provenance import git_sha

    assert meta["git_sha"] == git_sha()  # the code version travels with the weights (zoo cards read it)
    again = load_file(str(file))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert weights_sha256(file) == digest


# ---- SparK's debug recipe: trains, and its export serves the eval harness and plain timm


@pytest.mark.parametrize("recipe", sorted(p.parent.name for p in (ROOT / "recipes").glob("*/debug.yaml")))
@pytest.mark.slow
def test_every_debug_recipe_trains_under_bf16_autocast(tmp_path, recipe):
    # train.precision=auto is bf16 on CUDA: a method whose fp32 parameters meet bf16 activations in an op
    # that needs one dtype (M3AE's mask-token scatter did) fails there; CPU autocast runs the same casts
    from safetensors.torch import load_file

    cfg = pretrain.load_recipe(ROOT / f"recipes/{recipe}/debug.yaml", [
        f"train.out_dir={tmp_path}", "train.max_steps=2", "train.precision=bf16", "train.log_every_steps=1"])
    pretrain.run(cfg)
    losses = [r["train/loss"] for r in rows(tmp_path)]
    assert len(losses) == 2 and all(map(torch.isfinite, torch.tensor(losses))), losses
    weights = load_file(str(tmp_path / "backbone.safetensors"))
    assert all(w.dtype != torch.bfloat16 and torch.isfinite(w).all() for w in weights.values())  # fp32 master weights


@pytest.mark.slow
def test_spark_debug_recipe_lowers_the_loss_and_exports_a_plain_backbone(tmp_path):
    from ssl_platform.checkpoint.io import load_backbone
    from ssl_platform.data.datasets import Digits
    from ssl_platform.data.transforms import EvalTransform
    from ssl_platform.evaluation.features import extract_features

    cfg = pretrain.load_recipe(ROOT / "recipes/spark/debug.yaml", [
        f"train.out_dir={tmp_path}", "train.max_steps=null", "train.epochs=1", "train.log_every_steps=1"])
    pretrain.run(cfg)
    losses = [r["train/loss"] for r in rows(tmp_path)]
    assert len(losses) == 21 and all(map(torch.isfinite, torch.tensor(losses)))
    # the masked-patch loss starts near 1 (unit-variance targets) and must fall well below it
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:3]) / 3
    backbone = load_backbone(tmp_path)  # strict load into a freshly built, dense timm model
    assert not any("Sparse" in type(m).__name__ for m in backbone.modules())
    feats, labels = extract_features(backbone, Digits(split="test"), EvalTransform(size=24, channels=1), batch_size=128)
    assert feats.shape == (len(labels), 128) and torch.isfinite(feats).all()
    # the whole method (decoder included) comes back from the checkpoint for tools/spark_reconstruct.py
    png = tmp_path / "recon.png"
    proc = subprocess.run([sys.executable, "tools/spark_reconstruct.py", str(tmp_path), "--out", str(png), "--images", "3"],
                          cwd=ROOT, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert png.stat().st_size > 1000


# ---- I-JEPA's debug recipe: trains, and its export (the EMA target encoder) is a plain timm ViT


@pytest.mark.slow
def test_ijepa_debug_recipe_lowers_the_loss_and_exports_the_target_encoder(tmp_path):
    from safetensors.torch import load_file

    from ssl_platform.checkpoint.io import load_backbone, load_checkpoint
    from ssl_platform.data.datasets import Digits
    from ssl_platform.data.transforms import EvalTransform
    from ssl_platform.evaluation.features import extract_features

    cfg = pretrain.load_recipe(ROOT / "recipes/ijepa/debug.yaml", [
        f"train.out_dir={tmp_path}", "train.max_steps=null", "train.epochs=1", "train.log_every_steps=1"])
    pretrain.run(cfg)
    logged = rows(tmp_path)
    losses = [r["train/loss"] for r in logged]
    assert len(losses) == 21 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.95 * sum(losses[:3]) / 3
    assert all(r["train/context_patches"] >= 10 and 9 <= r["train/target_patches"] <= 16 for r in logged)
    assert all(r["train/target_spread"] > 1e-3 for r in logged)  # no collapse of the evaluated features
    exported = load_file(str(tmp_path / "backbone.safetensors"))
    method = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["method"]
    # the export is the EMA target encoder, not the context encoder it follows
    assert all(torch.equal(v, method[f"backbone.{k}"]) for k, v in exported.items())
    assert any(not torch.equal(v, method[f"context_encoder.{k}"]) for k, v in exported.items())
    backbone = load_backbone(tmp_path)
    feats, labels = extract_features(backbone, Digits(split="test"), EvalTransform(size=32, channels=1), batch_size=128)
    assert feats.shape == (len(labels), 64) and torch.isfinite(feats).all() and feats.std(0).mean() > 1e-3


# ---- T-JEPA's debug recipe: trains on a real mixed-type table, exports a table encoder


@pytest.mark.slow
def test_tjepa_debug_recipe_lowers_the_loss_and_exports_the_target_encoder(tmp_path):
    from ssl_platform.checkpoint.io import load_backbone
    from ssl_platform.data.datasets import Table
    from ssl_platform.evaluation.features import extract_tabular_features

    cfg = pretrain.load_recipe(ROOT / "recipes/tjepa/debug.yaml", [
        f"train.out_dir={tmp_path}", "train.max_steps=40", "train.log_every_steps=1"])
    pretrain.run(cfg)
    logged = rows(tmp_path)
    losses = [r["train/loss"] for r in logged]
    assert len(losses) == 40 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.97 * sum(losses[:3]) / 3
    assert all(r["train/target_spread"] > 0.05 for r in logged)  # no collapse
    backbone = load_backbone(tmp_path)
    test = Table("fair", split="test")
    feats, _ = extract_tabular_features(backbone, test, batch_size=512)
    assert feats.shape == (len(test), (2 + 8) * 32) and torch.isfinite(feats).all() and feats.std(0).mean() > 1e-3


# ---- GraphMAE's debug recipe: trains on a whole graph per step, its encoder serves the node extractor


@pytest.mark.slow
def test_graphmae_debug_recipe_lowers_the_loss_and_exports_a_node_encoder(tmp_path):
    from ssl_platform.checkpoint.io import load_backbone
    from ssl_platform.data.datasets.graphs import KarateClub
    from ssl_platform.evaluation.features import extract_node_features

    cfg = pretrain.load_recipe(ROOT / "recipes/graphmae/debug.yaml", [
        f"train.out_dir={tmp_path}", "train.max_steps=null", "train.log_every_steps=1"])
    pretrain.run(cfg)
    losses = [r["train/loss"] for r in rows(tmp_path)]
    assert len(losses) == 24 and all(map(torch.isfinite, torch.tensor(losses)))
    # the scaled cosine error starts near 1 (unrelated directions) and must fall
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:3]) / 3
    backbone = load_backbone(tmp_path)
    feats, labels = extract_node_features(backbone, KarateClub(split="test"))
    assert feats.shape == (len(labels), 32) and torch.isfinite(feats).all() and feats.std(0).mean() > 1e-3
