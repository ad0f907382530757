"""A pretraining run over a folder with a corrupt image: one clear error, or `data.on_bad_sample=skip`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from ssl_platform.cli import main

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


def pretrain(images: Path, out: Path, capfd, *extra: str) -> tuple[int, str, str]:
    """The pretrain command in this process (two loader workers): (exit code, stdout, stderr).

    capfd, not capsys: the workers print what they skip to the file descriptors they inherited.
    """
    recipe = OmegaConf.load(DEBUG)
    recipe.data.dataset = {"_component_": "ssl_platform.data.datasets.ImageFolder", "root": str(images), "channels": 1}
    path = out.parent / "folder_recipe.yaml"
    OmegaConf.save(recipe, path)
    code = main(["pretrain", str(path), "data.batch_size=8", "train.max_steps=8", "data.num_workers=2",
                 f"train.out_dir={out}", *extra])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow  # a short training run with two loader worker processes
def test_corrupt_image_stops_the_run_naming_the_file(folder_with_a_corrupt_image, tmp_path, capfd):
    code, _, stderr = pretrain(folder_with_a_corrupt_image, tmp_path / "run", capfd)
    assert code == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ImageFolder sample 17") and "17.png" in last and "on_bad_sample=skip" in last
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_skip_trains_on_and_lists_what_it_skipped(folder_with_a_corrupt_image, tmp_path, capfd):
    out = tmp_path / "run"
    code, stdout, stderr = pretrain(folder_with_a_corrupt_image, out, capfd, "data.on_bad_sample=skip")
    assert code == 0, stderr
    assert "1 bad samples were replaced by the next good one" in stdout
    rows = [json.loads(line) for line in (out / "skipped_samples.jsonl").read_text().splitlines()]
    assert rows and {r["index"] for r in rows} == {17} and all("17.png" in r["source"] for r in rows)
    assert (out / "backbone.safetensors").is_file()
