"""`sslp data shard SOURCE OUT`: a folder of images, a recipe's data.dataset (overrides applied) or a suite's
dataset (--key) into shards that `ShardDataset` reads back item for item; bad input is one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_platform.cli import main
from ssl_platform.data.datasets import Digits, ImageFolder, ShardDataset

ROOT = Path(__file__).resolve().parents[1]


def images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
    return root


def same_items(source, shards) -> bool:
    return len(source) == len(shards) and all(
        np.array_equal(np.asarray(source[i][0]), np.asarray(shards[i][0])) and source[i][0].mode == shards[i][0].mode
        and source[i][1] == shards[i][1] for i in range(len(source)))


@pytest.mark.slow  # end to end
def test_a_folder_of_images_is_sharded_as_an_image_folder(tmp_path, capsys):
    folder = images(tmp_path / "images")
    assert main(["data", "shard", str(folder), str(tmp_path / "out"), "--shard-size", "300B"]) == 0
    line = capsys.readouterr().out
    shards = ShardDataset(str(tmp_path / "out"))
    assert f"[ssl_platform] 8 items (image) of ImageFolder {folder} in " in line and str(tmp_path / "out") in line
    assert int(line.split(" in ")[1].split(" shards")[0]) > 1
    assert same_items(ImageFolder(folder), shards) and shards.classes == ["a", "b"]


@pytest.mark.slow  # end to end
def test_a_recipes_dataset_is_sharded_with_the_overrides_applied(tmp_path, capsys):
    folder = images(tmp_path / "images")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: r\ndata:\n  dataset: {{_component_: ssl_platform.data.datasets.ImageFolder, root: {folder}}}\n")
    assert main(["data", "shard", str(recipe), str(tmp_path / "out"), "data.dataset.channels=1"]) == 0
    assert f"of {recipe} data.dataset in 1 shards" in capsys.readouterr().out
    shards = ShardDataset(str(tmp_path / "out"))
    assert shards.channels == 1 and same_items(ImageFolder(folder, channels=1), shards)


@pytest.mark.slow  # end to end
def test_a_suites_dataset_is_named_with_key(tmp_path, capsys):
    suite = str(ROOT / "eval" / "digits.yaml")
    assert main(["data", "shard", suite, str(tmp_path / "none")]) == 2
    assert "name the one to shard with --key, one of ['tasks.digits.train', 'tasks.digits.test']" in \
        capsys.readouterr().err
    assert main(["data", "shard", suite, str(tmp_path / "out"), "--key", "tasks.digits.test"]) == 0
    assert same_items(Digits(split="test"), ShardDataset(str(tmp_path / "out")))


@pytest.mark.parametrize("argv, message", [
    (["{missing}", "{out}"], "neither a folder of images nor a recipe / suite .yaml file"),
    (["{images}", "{full}"], "is not an empty folder; shards are written only into a new or empty folder"),
    (["{images}", "{out}", "channels=1"], "overrides and --key are for a recipe or suite file"),
    (["{images}", "{out}", "--shard-size", "big"], "shard size 'big' is not a size"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, argv, message):
    paths = {"missing": tmp_path / "missing", "out": tmp_path / "out", "images": images(tmp_path / "images"),
             "full": tmp_path / "images"}
    assert main(["data", "shard", *(a.format(**paths) for a in argv)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a fresh interpreter
def test_data_shard_help_answers_without_importing_torch():
    code = ("import sys; from ssl_platform.cli import main\n"
            "try:\n    main(['data', 'shard', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--shard-size" in proc.stdout and "--key" in proc.stdout
