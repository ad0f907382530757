"""Recipe -> run: composition of components, the online kNN monitor, the supervised baseline."""

import json
from pathlib import Path

import pytest

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


def test_monitor_without_data_says_what_is_missing(tmp_path):
    cfg = pretrain.load_recipe(ROOT / "recipes/simclr/debug.yaml",
                               [f"train.out_dir={tmp_path}", "monitor.knn_every_epochs=1"])
    with pytest.raises(ConfigError, match="monitor.dataset, monitor.val_dataset and monitor.transform"):
        pretrain.run(cfg)


def test_supervised_debug_recipe_learns(tmp_path):
    cfg = pretrain.load_recipe(ROOT / "recipes/supervised/debug.yaml",
                               [f"train.out_dir={tmp_path}", "train.max_steps=12", "train.log_every_steps=1"])
    pretrain.run(cfg)
    logged = rows(tmp_path)
    assert {"train/loss", "train/acc1"} <= set(logged[0])
    assert logged[-1]["train/loss"] < logged[0]["train/loss"]
    assert (tmp_path / "backbone.safetensors").exists()
