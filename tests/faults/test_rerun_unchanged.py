"""Running a finished run's command again changes no file of its directory and adds none (but the
console log, which keeps every start's output: the command's own entry point appends to it).

Before issue 21 a re-run rewrote config.yaml, opened a new TensorBoard event file and exported
backbone.safetensors again (with the git sha of whatever code re-ran it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from toy_run import train

from ssl_platform.cli import main

ROOT = Path(__file__).resolve().parents[2]


def snapshot(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).rglob("*")) if p.is_file() and p.name != "console.log"}


@pytest.mark.slow  # two short training runs of the command (its entry point, in this process)
def test_rerunning_a_finished_run_leaves_every_file_byte_for_byte(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), "train.max_steps=3", f"train.out_dir={out}"]
    assert main(args) == 0
    first = snapshot(out)
    assert {"config.yaml", "metrics.jsonl", "checkpoints/last.pt", "backbone.safetensors"} <= set(first)
    assert any(name.startswith("tb/") for name in first)

    capsys.readouterr()
    assert main(args) == 0
    assert f"done: step 3, run directory {out}" in capsys.readouterr().out
    assert snapshot(out) == first
    assert (out / "console.log").read_text().count("done: step 3") == 2  # both starts are kept


def test_training_again_after_the_last_step_leaves_the_directory_as_it_was(tmp_path):
    train(tmp_path / "run", max_steps=4)
    first = snapshot(tmp_path / "run")
    _, result = train(tmp_path / "run", max_steps=4)
    assert result["step"] == 4
    assert snapshot(tmp_path / "run") == first
