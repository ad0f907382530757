"""A run on shards is the run on their source folder: same sample order, same views, same weights, on one
process and on two (the sharded copy is read map-style by index, so the engine's sampler decides the order)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ssl_platform.data.datasets import ImageFolder
from ssl_platform.data.shards import write_shards
from ssl_platform.engine.sample_log import global_order

ROOT = Path(__file__).resolve().parents[2]


def make_folder(root: Path, per_class: int = 40) -> Path:
    """3 classes of 12x12 images: PNGs and JPEGs of smooth random patterns (decoding must match too)."""
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((12, 12), Image.BILINEAR)
            image.save(root / f"class{c}" / (f"{i:03d}.jpg" if i % 2 else f"{i:03d}.png"))
    return root


def pretrain(nproc: int, dataset: str, out: Path) -> None:
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd = [*launcher, "-m", "ssl_platform", "pretrain", "recipes/simclr/debug.yaml", f"data.dataset={dataset}",
           "data.transform.channels=3", "method.in_chans=3", f"data.batch_size={32 // nproc}", "train.max_steps=4",
           "train.log_samples=true", f"train.out_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def folder_and_shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shard_training")
    folder = make_folder(tmp / "folder")
    summary = write_shards(ImageFolder(folder), tmp / "shards", shard_size="8KB")
    return folder, tmp / "shards", summary


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.dist)])
def test_a_run_on_shards_equals_the_run_on_the_folder(tmp_path, folder_and_shards, nproc):
    folder, shards, _ = folder_and_shards
    on_folder, on_shards = tmp_path / "folder", tmp_path / "shards"
    pretrain(nproc, f"{{_component_: ssl_platform.data.datasets.ImageFolder, root: {folder}}}", on_folder)
    pretrain(nproc, f"{{_component_: ssl_platform.data.datasets.ShardDataset, source: {shards}}}", on_shards)
    assert global_order(on_folder) == global_order(on_shards)
    a = load_file(str(on_folder / "backbone.safetensors"))
    b = load_file(str(on_shards / "backbone.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_folder_is_written_into_several_shards(folder_and_shards):
    _, shards, _ = folder_and_shards
    chunks = [p for p in shards.iterdir() if p.suffix == ".bin"]
    assert len(chunks) > 1, "8 KB shards of 120 small images make several"


@pytest.mark.slow
def test_an_eval_suite_on_shards_gives_the_numbers_of_its_source(tmp_path):
    """kNN on the digits suite with both task data sets read from shards: the same results, row for row."""
    from ssl_platform.data.datasets import Digits

    for split in ("train", "test"):
        write_shards(Digits(split=split), tmp_path / split, shard_size="16KB")
    shard = "{{_component_: ssl_platform.data.datasets.ShardDataset, source: {}}}"
    common = ["eval", "eval/digits.yaml", "backbone=random", "eval.protocols=[knn]", "~noise",
              "eval.label_fractions=[1.0]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = {}
    for name, extra in {"source": [], "shards": [f"tasks.digits.train={shard.format(tmp_path / 'train')}",
                                                 f"tasks.digits.test={shard.format(tmp_path / 'test')}"]}.items():
        proc = subprocess.run([sys.executable, "-m", "ssl_platform", *common, *extra, f"out_dir={tmp_path / name}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows[name] = [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
    assert len(rows["source"]) == 2  # kNN k20 and k200
    assert rows["source"] == rows["shards"]
