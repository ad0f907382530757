"""`sslp bench`: its four measurements on one recipe, their ratios and the JSON line (values, never times)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ssl_platform import bench, pretrain
from ssl_platform.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "recipes/simclr/debug.yaml")
KEYS = {"engine", "plain", "model_only", "input_only", "engine_vs_plain", "engine_vs_ceiling"}


@pytest.mark.slow  # four short runs of the debug recipe
def test_bench_prints_a_table_then_one_json_line_whose_ratios_are_of_its_rates(capsys):
    assert main(["bench", DEBUG, "data.batch_size=16", "--steps", "4", "--warmup", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert KEYS <= set(result) and all(result[k] > 0 for k in KEYS)
    assert math.isclose(result["engine_vs_plain"], result["engine"] / result["plain"], rel_tol=1e-2)
    assert math.isclose(result["engine_vs_ceiling"], result["engine"] / result["model_only"], rel_tol=1e-2)
    assert result["views_on"] == "device" and result["batch_size"] == 16 and result["steps"] == 4
    assert any(line.strip().startswith("plain loop") for line in lines[:-1])


def test_too_few_steps_for_the_warmup_is_refused():
    with pytest.raises(ValueError, match="leaves no timed step after 5 warm-up steps; raise --steps"):
        bench._median_rate([0.1] * 5, batch=8, warmup=5)


def test_the_plain_loop_makes_its_views_per_sample_in_the_workers():
    """The reference is the user's loop: the recipe's transform per sample (PIL), whatever views_on says."""
    cfg = pretrain.load_recipe(DEBUG)
    parts = bench._components(cfg, views_on="workers")
    assert parts["batch_transform"] is None and type(parts["transform"]).__name__ == "SimCLRViews"
    item = bench._Unseeded(parts["dataset"], parts["transform"])[0]
    assert len(item["views"]) == 2 and item["views"][0].shape == (1, 8, 8)
    engine = bench._components(cfg)  # the recipe's own: views on the device
    assert engine["batch_transform"] is not None


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_plain_loop_computes_in_the_recipes_precision(monkeypatch, precision, dtype):
    """A bf16 recipe's plain loop runs its forward under bf16 autocast, as the engine does, so the ratio
    compares loops, not number formats."""
    cfg = pretrain.load_recipe(DEBUG, ["data.batch_size=8", "data.num_workers=0", f"train.precision={precision}"])
    seen = []
    real = bench._components

    def spy(*args, **kwargs):
        parts = real(*args, **kwargs)
        conv = next(m for m in parts["method"].modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        return parts

    monkeypatch.setattr(bench, "_components", spy)
    assert len(bench.plain_loop(cfg, steps=2, device=torch.device("cpu"))) == 2
    assert seen == [dtype, dtype]
