"""The command line: dry runs, error messages instead of tracebacks, eval backbone resolution."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_platform.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_prints_resolved_recipe_and_validates(capsys):
    assert main(["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), "train.epochs=5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 5" in out and "_component_: ssl_platform.methods.simclr.SimCLR" in out
    assert "is valid; it would write to runs/simclr_debug" in out


def test_bad_recipe_key_is_one_clear_line(capsys):
    assert main(["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), "method.temprature=0.1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key method.'temprature'") and "Traceback" not in err


def test_missing_data_root_names_the_prepare_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSL_PLATFORM_DATA", str(tmp_path / "empty"))
    recipe = ROOT / "recipes/simclr/resnet18_fmnist_1ep.yaml"
    assert main(["pretrain", str(recipe), f"train.out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "python -m ssl_platform data prepare fashion-mnist" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_data_prepare_offers_every_prepare_source():
    from ssl_platform.cli import DATA_NAMES
    from ssl_platform.data.prepare import NAMES

    assert tuple(DATA_NAMES) == tuple(NAMES)


def test_unknown_data_set_name_lists_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "prepare", "cifar-10"])
    assert exc.value.code == 2
    assert "fashion-mnist" in capsys.readouterr().err


def test_eval_needs_a_backbone_and_explains_forms(capsys, tmp_path):
    assert main(["eval", str(ROOT / "eval/digits.yaml")]) == 2
    assert "backbone=random" in capsys.readouterr().err
    assert main(["eval", str(ROOT / "eval/digits.yaml"), f"backbone={tmp_path / 'nope'}"]) == 2
    assert "neither a run directory nor a .safetensors file" in capsys.readouterr().err


def test_eval_checkpoint_of_wrong_format_is_refused(capsys, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert main(["eval", str(ROOT / "eval/digits.yaml"), f"backbone={bad}"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_eval_out_dir_takes_one_backbone(capsys, tmp_path):
    assert main(["eval", str(ROOT / "eval/digits.yaml"), "backbone=random,random", f"out_dir={tmp_path}"]) == 2
    assert "out_dir= takes one backbone" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # a fresh interpreter: this session has imported torch long ago
def test_help_answers_without_importing_torch():
    # the CLI only parses and dispatches: its commands import what they need when they run
    code = ("import sys; from ssl_platform.cli import main\n"
            "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'sslp --help imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "backbone=" in proc.stdout


@pytest.mark.slow
def test_pretrain_then_eval_run_dir_and_its_random_twin(tmp_path, monkeypatch, capsys):
    # in-process through the command's entry point (the --help test runs the real `python -m ssl_platform`)
    run = tmp_path / "run"
    assert main(["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), f"train.out_dir={run}", "train.max_steps=2"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", str(ROOT / "eval/digits.yaml"), f"backbone={run},random:{run}",
                 "eval.protocols=[knn,linear]", "noise.kinds=[]", "noise.rates=[]"]) == 0
    stdout = capsys.readouterr().out
    sha = hashlib.sha256((run / "backbone.safetensors").read_bytes()).hexdigest()
    for name, identity in (("run", sha), ("random-run", "")):
        rows = [json.loads(line) for line in (tmp_path / "runs/eval" / f"digits-{name}" / "results.jsonl").open()]
        assert {(r["backbone"], r["backbone_sha256"]) for r in rows} == {(name, identity)}
        assert {r["protocol"] for r in rows} == {"knn_k20_t0.07", "knn_k200_t0.1", "linear"}
    assert "run" in stdout and "random-run" in stdout  # the comparison table
    both = tmp_path / "runs/eval/digits-compare"
    assert "| metric | run | random-run |" in (both / "compare.md").read_text()  # one column per backbone
    assert (both / "plots" / "digits-top1-fraction.png").exists()  # one line per backbone x protocol
