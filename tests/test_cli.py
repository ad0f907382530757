"""The command line: dry runs, error messages instead of tracebacks, eval backbone resolution."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_platform.cli import _Tee, main
from ssl_platform.config import ConfigError

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
def test_help_recipes_and_early_errors_answer_without_importing_torch():
    # the CLI only parses and dispatches: its commands import what they need when they run, and an error
    # found before that (a missing recipe, a malformed override) is reported without importing anything
    code = ("import sys; from ssl_platform.cli import main\n"
            "for argv in (['--help'], ['eval', '--help'], ['pretrain', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "assert main(['recipes', 'ls']) == 0\n"
            "assert main(['pretrain', 'nope.yaml', '--dry-run']) == 2\n"
            "assert main(['pretrain', 'recipes/simclr/debug.yaml', '~method.nope']) == 2\n"
            "assert main(['eval', 'eval/digits.yaml', 'backbone=random', '~nope']) == 2\n"
            "assert 'torch' not in sys.modules, 'a command imported torch before it needed it'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "backbone=" in proc.stdout and "~method.backbone_kwargs.stem_stride" in proc.stdout
    assert "simclr/debug" in proc.stdout
    assert proc.stderr.splitlines() == [
        "error: recipe nope.yaml does not exist; recipes live under recipes/<method>/ and eval/",
        ("error: cannot delete method.nope (override '~method.nope'): method has no key 'nope'; its keys: _component_, "
         "backbone, backbone_kwargs, in_chans, proj_dim, proj_hidden_dim, small_input, temperature"),
        ("error: cannot delete nope (override '~nope'): the top level has no key 'nope' (did you mean ~noise?); its "
         "keys: eval, finetune, knn, linear, linear_sgd, name, noise, probe, random_backbone, robust, tasks")]


@pytest.mark.slow  # a fresh interpreter, which imports every method (torch_geometric's import warned)
def test_a_dry_run_prints_no_third_party_warning():
    proc = subprocess.run([sys.executable, "-m", "ssl_platform", "pretrain", "recipes/graphmae/debug.yaml", "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONWARNINGS": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


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


# ---- options anywhere, rank 0's messages and console.log, errors without imports, warnings


@pytest.mark.parametrize("argv", [
    ["pretrain", "--dry-run", str(ROOT / "recipes/simclr/debug.yaml"), "train.epochs=5", "~method.backbone_kwargs"],
    ["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), "--dry-run", "train.epochs=5", "~method.backbone_kwargs"],
    ["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), "train.epochs=5", "--dry-run", "~method.backbone_kwargs"],
], ids=["before", "after-recipe", "between-overrides"])
def test_dry_run_may_come_anywhere_and_every_override_applies(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "epochs: 5" in out and "backbone_kwargs" not in out and "is valid" in out


def test_an_unknown_option_among_overrides_is_named(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), "--dryrun", "train.epochs=5"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "sslp pretrain: error: unrecognized arguments: --dryrun"


def test_zoo_publish_takes_force():
    from ssl_platform.cli import build_parser

    args = build_parser().parse_args(["zoo", "publish", "runs/x", "--name", "a.b", "--force"])
    assert args.force is True and args.run_dir == "runs/x"


def fake_run(lines):
    """A stand-in for pretrain.run: prints `lines` (stdout, stderr, a redrawn bar) and returns the result."""
    def run(cfg):
        print("to stdout")
        print("to stderr", file=sys.stderr)
        sys.stderr.write("\rbar 1/2\rbar 2/2")
        sys.stderr.write("\n")
        for line in lines:
            print(line)
        return {"step": 7, "out_dir": cfg.train.out_dir}
    return run


def test_rank0_prints_the_resolved_recipe_and_keeps_the_console_in_the_run_dir(tmp_path, capsys, monkeypatch):
    from ssl_platform import pretrain

    monkeypatch.delenv("RANK", raising=False)
    run = tmp_path / "run"
    args = ["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), f"train.out_dir={run}", "method.temperature=0.3"]
    monkeypatch.setattr(pretrain, "run", fake_run(["first"]))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"method.temperature=0.3, resolved (kept as {run / 'config.yaml'}):\nname: simclr_debug\n" in out
    assert "  temperature: 0.3\n" in out and out.endswith(f"first\n[ssl_platform] done: step 7, run directory {run}\n")
    monkeypatch.setattr(pretrain, "run", fake_run(["second"]))
    assert main(args) == 0
    log = (run / "console.log").read_text().splitlines()
    starts = [i for i, line in enumerate(log) if line.startswith("==== ")]
    assert len(starts) == 2 and log[starts[1]].endswith(f"sslp {' '.join(args)}")  # appended, one header a start
    first = log[: starts[1]]
    assert "  temperature: 0.3" in first and "to stdout" in first and "to stderr" in first
    assert "bar 2/2" in first and not any("bar 1/2" in line or "\r" in line for line in log)  # the bar's last state
    assert first[-2:] == ["first", f"[ssl_platform] done: step 7, run directory {run}"]
    assert log[-2:] == ["second", f"[ssl_platform] done: step 7, run directory {run}"]
    assert not isinstance(sys.stdout, _Tee) and not isinstance(sys.stderr, _Tee)  # the console is restored


def test_the_error_that_ends_a_run_is_kept_in_console_log(tmp_path, capsys, monkeypatch):
    from ssl_platform import pretrain

    monkeypatch.delenv("RANK", raising=False)
    run = tmp_path / "run"

    def refuse(cfg):
        print("started")
        raise ConfigError("data.dataset.root=/x does not exist")

    monkeypatch.setattr(pretrain, "run", refuse)
    assert main(["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), f"train.out_dir={run}"]) == 2
    assert capsys.readouterr().err == "error: data.dataset.root=/x does not exist\n"
    assert (run / "console.log").read_text().splitlines()[-2:] == ["started",
                                                                   "error: data.dataset.root=/x does not exist"]

    def crash(cfg):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pretrain, "run", crash)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), f"train.out_dir={run}"])
    log = (run / "console.log").read_text()
    assert "Traceback (most recent call last)" in log and log.endswith("RuntimeError: a bug\n")


def test_other_ranks_print_neither_recipe_nor_done_and_keep_no_log(tmp_path, capsys, monkeypatch):
    from ssl_platform import pretrain

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(pretrain, "run", fake_run([]))
    run = tmp_path / "run"
    assert main(["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), f"train.out_dir={run}"]) == 0
    assert capsys.readouterr().out == "to stdout\n"
    assert not (run / "console.log").exists()


def test_a_recipe_error_is_printed_by_rank0_only_and_a_rank_own_error_names_its_rank(monkeypatch):
    from ssl_platform.cli import _report

    monkeypatch.setenv("RANK", "3")
    assert _report(ConfigError("bad key")) == (None, 2)
    assert _report(FileNotFoundError("no file")) == ("error (rank 3): no file", 2)
    assert _report(RuntimeError("a bug")) is None
    monkeypatch.setenv("RANK", "0")
    assert _report(ConfigError("bad key")) == ("error: bad key", 2)


def test_user_errors_are_named_by_classes_that_exist():
    import importlib

    from ssl_platform.cli import RUN_INTERRUPTED, USER_ERRORS

    for name in (*USER_ERRORS, RUN_INTERRUPTED):
        module, _, cls = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), cls), type), name


def test_only_torch_jit_script_deprecation_is_silenced():
    import warnings

    from ssl_platform.cli import _quiet_third_party_warnings

    message = "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_third_party_warnings()
        warnings.warn_explicit(message, FutureWarning, "_script.py", 1, module="torch.jit._script")
        warnings.warn_explicit(message, FutureWarning, "other.py", 1, module="otherlib.jit")
        warnings.warn_explicit("something else", FutureWarning, "_script.py", 1, module="torch.jit._script")
    assert [(str(w.message), w.filename) for w in caught] == [(message, "other.py"), ("something else", "_script.py")]
