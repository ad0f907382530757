"""A pretraining run over a folder with a corrupt image: one clear error, or `data.on_bad_sample=skip`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "recipes" / "simclr" / "debug.yaml"


@pytest.fixture
def folder_with_a_corrupt_image(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(images / f"{i:02d}.png")
    (images / "17.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return images


def pretrain(images: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    recipe = OmegaConf.load(DEBUG)
    recipe.data.dataset = {"_component_": "ssl_platform.data.datasets.ImageFolder", "root": str(images), "channels": 1}
    path = out.parent / "folder_recipe.yaml"
    OmegaConf.save(recipe, path)
    args = [sys.executable, "-m", "ssl_platform", "pretrain", str(path), "data.batch_size=8", "train.max_steps=8",
            "data.num_workers=2",
            f"train.out_dir={out}", *extra]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_corrupt_image_stops_the_run_naming_the_file(folder_with_a_corrupt_image, tmp_path):
    done = pretrain(folder_with_a_corrupt_image, tmp_path / "run")
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ImageFolder sample 17") and "17.png" in last and "on_bad_sample=skip" in last
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_skip_trains_on_and_lists_what_it_skipped(folder_with_a_corrupt_image, tmp_path):
    out = tmp_path / "run"
    done = pretrain(folder_with_a_corrupt_image, out, "data.on_bad_sample=skip")
    assert done.returncode == 0, done.stderr
    assert "1 bad samples were replaced by the next good one" in done.stdout
    rows = [json.loads(line) for line in (out / "skipped_samples.jsonl").read_text().splitlines()]
    assert rows and {r["index"] for r in rows} == {17} and all("17.png" in r["source"] for r in rows)
    assert (out / "backbone.safetensors").is_file()
