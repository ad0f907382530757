"""What the zoo reports about a published run: seeds, λ per seed, fractional epochs, the eval
interpolation, a plain timm call that loads the weights, clean git shas, and where random init wins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch
import yaml
from torchvision.transforms import InterpolationMode

from ssl_platform import zoo
from ssl_platform.checkpoint.io import read_backbone_metadata
from ssl_platform.cli import main
from ssl_platform.data.transforms import EvalTransform
from ssl_platform.engine.run_dir import EVAL_INTERPOLATION, export_once
from ssl_platform.evaluation.report import append_rows, make_row
from ssl_platform.models.backbones import create_backbone, pooled_features
from ssl_platform.provenance import file_sha256
from ssl_platform.zoo import card as zoo_card
from ssl_platform.zoo import index as zoo_lib
from ssl_platform.zoo import publishing as zoo_publish

CLEAN, DIRTY = "1" * 40, "2" * 40 + "-dirty"
NAME = "simclr_resnet18.report_1ep"
FMNIST = {"dataset": {"_component_": "ssl_platform.data.datasets.FashionMNIST", "split": "train"},
          "transform": {"_component_": "ssl_platform.data.transforms.SimCLRViews", "size": 28, "channels": 1}}
RECIPE = {"name": "report_run", "method": {"_component_": "ssl_platform.methods.simclr.SimCLR"}, "data": FMNIST}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(zoo_lib.ENV_ZOO, raising=False)


def plain_resnet() -> torch.nn.Module:  # timm's own stem: plain timm can build it
    torch.manual_seed(0)
    return create_backbone("resnet18", in_chans=1, channels=[8, 16, 32, 64])


def make_run(root: Path, *, step: int = 6, steps_per_epoch: int | None = 4, git_sha: str = CLEAN,
             monkeypatch=None) -> Path:
    """A run directory exported by the engine's own `export_once` (git_sha patched to `git_sha`)."""
    run = root / "runs" / "report_run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(RECIPE))
    monkeypatch.setattr("ssl_platform.engine.run_dir.git_sha", lambda: git_sha)
    export_once(plain_resnet(), run, step, step // (steps_per_epoch or 4), RECIPE, trained=True,
                steps_per_epoch=steps_per_epoch)
    return run


def write_eval(root: Path, dir_name: str, backbone: str, sha: str, values: dict, git_sha: str = CLEAN) -> None:
    """runs/eval/<dir_name>/results.jsonl: {(protocol, metric): [value per seed]} of `backbone`."""
    rows = [make_row("fmnist", protocol, metric, v, backbone, seed, backbone_sha256=sha, git_sha=git_sha)
            for (protocol, metric), per_seed in values.items() for seed, v in enumerate(per_seed)]
    append_rows(root / "runs" / "eval" / dir_name / "results.jsonl", rows)
    (root / "runs" / "eval" / dir_name / "suite.yaml").write_text(yaml.safe_dump({"name": "quick"}))


OWN = {("linear", "top1"): [80.0, 82.0], ("linear", "lambda"): [1e-05, 1e-03],
       ("knn_k20_t0.07", "top1"): [70.0, 72.0], ("finetune", "rmse"): [2.0, 2.2]}
# the random twin: better kNN (73 > 71) and better rmse (1.5 < 2.1), worse linear, a tie nowhere
TWIN = {("linear", "top1"): [60.0, 61.0], ("linear", "lambda"): [1.0, 1.0],
        ("knn_k20_t0.07", "top1"): [73.0, 73.0], ("finetune", "rmse"): [1.5, 1.5]}


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A run stopped at step 6 of 4 steps per epoch, evaluated with two seeds beside its random twin."""
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, monkeypatch=monkeypatch)
    sha = file_sha256(run / "backbone.safetensors")
    write_eval(tmp_path, "quick-report_run", run.name, sha, OWN)
    write_eval(tmp_path, "quick-random-report_run", f"random-{run.name}", "", TWIN)
    entry = zoo.publish(run, NAME, tmp_path / "zoo")
    return tmp_path / "zoo", entry


def result(entry, protocol, metric):
    [r] = [r for r in entry.results if (r["protocol"], r["metric"]) == (protocol, metric)]
    return r


def test_export_records_fractional_epochs_and_the_eval_interpolation(tmp_path, monkeypatch):
    run = make_run(tmp_path, monkeypatch=monkeypatch)
    meta = read_backbone_metadata(run / "backbone.safetensors")
    assert (meta["epoch"], meta["step"], meta["steps_per_epoch"]) == (1.5, 6, 4)  # not 1: 6 / 4 steps
    assert meta["interpolation"] == EVAL_INTERPOLATION == "bilinear" and meta["git_sha"] == CLEAN
    whole = make_run(tmp_path / "whole", step=8, monkeypatch=monkeypatch)
    assert read_backbone_metadata(whole / "backbone.safetensors")["epoch"] == 2  # an int when whole
    without = make_run(tmp_path / "old", step=6, steps_per_epoch=None, monkeypatch=monkeypatch)
    assert read_backbone_metadata(without / "backbone.safetensors")["epoch"] == 1  # the caller's completed epochs


def test_the_recorded_interpolation_is_the_eval_transforms():
    resize = EvalTransform(size=8, channels=1).transform.transforms[0]
    mode = resize.interpolation  # torchvision keeps an InterpolationMode or its value, by version
    assert InterpolationMode(getattr(mode, "value", mode)) == InterpolationMode(EVAL_INTERPOLATION)


def test_fractional_epochs_are_kept_in_the_index_list_show_card_and_docs(published, tmp_path):
    zoo_dir, entry = published
    assert entry.epochs == 1.5 and zoo.read_index(zoo_dir)[NAME].epochs == 1.5
    listing = zoo_card.format_list(zoo.read_index(zoo_dir), str(zoo_dir))
    assert re.search(rf"{re.escape(NAME)} ‡\s+simclr\s+resnet18\s+FashionMNIST\s+1\.5\s", listing)
    assert "epochs / steps  1.5 / 6" in zoo_card.format_show(entry, str(zoo_dir))
    assert ": 1.5 epochs, 6 steps" in (zoo_dir / entry.card).read_text()
    page = zoo_card.docs_page(zoo.read_index(zoo_dir), str(zoo_dir), tmp_path / "docs" / "zoo.md")
    assert "| simclr | `resnet18` | FashionMNIST | 1.5 |" in page


def test_index_keeps_seeds_and_lambda_per_seed_never_a_mean(published):
    zoo_dir, entry = published
    top1 = result(entry, "linear", "top1")
    assert (top1["mean"], top1["std"], top1["n"], top1["seeds"]) == (81.0, 1.4142, 2, [0, 1])
    lam = result(entry, "linear", "lambda")
    assert (lam["mean"], lam["std"], lam["values"], lam["seeds"]) == (None, None, [1e-05, 1e-03], [0, 1])
    text = zoo_card.format_show(entry, str(zoo_dir))
    assert re.search(r"linear\s+1\s+none\s+none\s+lambda\s+1e-05, 0\.001\s+2\s+0, 1\n", text)
    assert re.search(r"linear\s+1\s+none\s+none\s+top1\s+81\.00 ± 1\.41\s+2\s+0, 1\n", text)
    assert "lambda: the value each seed selected, in the order of its seeds; never averaged" in text
    assert "0.000505" not in text  # the mean of the two λ


def test_show_of_an_old_entry_marks_unrecorded_seeds_and_hides_a_mean_lambda(published):
    zoo_dir, entry = published
    old = [{k: v for k, v in r.items() if k not in ("seeds", "values")} for r in entry.results]
    lam = next(r for r in old if r["metric"] == "lambda")
    lam.update(mean=0.0005, std=0.0007)  # how indexes before seeds were kept stored a λ
    text = zoo_card.format_show(zoo_lib.ZooEntry(**{**entry.to_dict(), "results": old}), str(zoo_dir))
    assert re.search(r"lambda\s+– \(not recorded per seed\)\s+2\s+\?\n", text)
    assert "0.0005" not in text and "?: seeds not recorded" in text


def test_random_init_wins_are_recorded_and_flagged_in_show_list_card_and_docs(published, tmp_path):
    zoo_dir, entry = published
    wins = {(w["protocol"], w["metric"]): (w["mean"], w["random_mean"], w["random"]) for w in entry.random_init_better}
    assert wins == {("knn_k20_t0.07", "top1"): (71.0, 73.0, "random-report_run"),
                    ("finetune", "rmse"): (2.1, 1.5, "random-report_run")}  # lower rmse is better
    text = zoo_card.format_show(entry, str(zoo_dir))
    assert re.search(r"knn_k20_t0\.07\s+1\s+none\s+none\s+top1\s+71\.00 ± 1\.41 ‡", text)
    assert re.search(r"linear\s+1\s+none\s+none\s+top1\s+81\.00 ± 1\.41\s+2", text)  # not flagged
    assert "vs random init  ‡ a random init scores better on 2 setting(s)" in text
    assert "quick: fmnist/knn_k20_t0.07 top1: 71.00 vs random-report_run 73.00" in text
    card = (zoo_dir / entry.card).read_text()
    assert "> ‡ **A random init of the same architecture scores better**" in card
    assert "| fmnist | knn_k20_t0.07 | 1 | none | none | top1 | 71.00 ± 1.41 (2) ‡ | 73.00 ± 0.00 (2) | 0, 1 |" in card
    entries = zoo.read_index(zoo_dir)
    assert f"{NAME} ‡" in zoo_card.format_list(entries, str(zoo_dir))
    assert f"{NAME}/README.md) ‡ |" in zoo_card.docs_page(entries, str(zoo_dir), tmp_path / "docs" / "zoo.md")


def test_without_a_random_twin_nothing_is_claimed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, monkeypatch=monkeypatch)
    write_eval(tmp_path, "quick-report_run", run.name, file_sha256(run / "backbone.safetensors"), OWN)
    entry = zoo.publish(run, NAME, tmp_path / "zoo")
    assert entry.random_init_better is None
    assert "vs random init  not compared" in zoo_card.format_show(entry, str(tmp_path / "zoo"))


def test_publish_refuses_dirty_weights_unless_forced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, git_sha=DIRTY, monkeypatch=monkeypatch)
    with pytest.raises(zoo.DirtyTreeError) as info:
        zoo.publish(run, NAME, tmp_path / "zoo")
    assert str(info.value) == (
        f"refusing to publish {NAME}: the weights were trained by code with uncommitted changes (git {DIRTY}), "
        "and no commit holds the code a -dirty sha names. To publish clean shas, commit the changes and train "
        "again (`sslp pretrain`), and publish again; or pass force=True (`sslp zoo publish ... --force`) to "
        "publish with the -dirty sha recorded")
    assert not (tmp_path / "zoo" / "index.json").exists()
    assert zoo.publish(run, NAME, tmp_path / "zoo", force=True).git_sha == DIRTY  # recorded as it is


def test_the_cli_refuses_a_dirty_publish_and_force_allows_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, git_sha=DIRTY, monkeypatch=monkeypatch)
    command = ["zoo", "publish", str(run), "--name", NAME, "--zoo", str(tmp_path / "zoo")]
    assert main(command) == 2
    assert f"error: refusing to publish {NAME}: the weights were trained by code with uncommitted" in capsys.readouterr().err
    assert main([*command, "--force"]) == 0 and zoo.read_index(tmp_path / "zoo")[NAME].git_sha == DIRTY


def test_publish_refuses_a_dirty_tree_when_the_file_names_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, git_sha="", monkeypatch=monkeypatch)  # an export that recorded no git sha
    monkeypatch.setattr(zoo_publish, "git_sha", lambda: DIRTY)
    with pytest.raises(zoo.DirtyTreeError, match=re.escape(
            f"the working tree is dirty (git {DIRTY}: uncommitted changes to tracked files)")) as info:
        zoo.publish(run, NAME, tmp_path / "zoo")
    assert "commit (or stash) the changes, and publish again; or pass force=True" in str(info.value)
    monkeypatch.setattr(zoo_publish, "git_sha", lambda: CLEAN)
    assert zoo.publish(run, NAME, tmp_path / "zoo").git_sha == CLEAN


def test_publish_refuses_results_of_dirty_code_unless_forced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path, monkeypatch=monkeypatch)
    sha = file_sha256(run / "backbone.safetensors")
    write_eval(tmp_path, "quick-report_run", run.name, sha, OWN, git_sha="abc-dirty")
    with pytest.raises(zoo.DirtyTreeError, match=re.escape(
            "its results were measured by code with uncommitted changes (git abc-dirty)")) as info:
        zoo.publish(run, NAME, tmp_path / "zoo")
    assert "evaluate again with the committed code (`sslp eval ... overwrite=true`)" in str(info.value)
    assert list((tmp_path / "zoo").iterdir()) == []
    assert zoo.publish(run, NAME, tmp_path / "zoo", force=True).results


def show_code(text: str) -> str:
    """The pasteable block of `zoo show`: from its `import timm` to the end of the create_model call."""
    block = text[text.index("\nimport timm\n") + 1:]
    return block[: block.index("))\n") + 2]


def test_show_prints_plain_timm_code_that_loads_the_weights(published):
    zoo_dir, entry = published
    text = zoo_card.format_show(entry, str(zoo_dir))
    code = show_code(text)
    assert "ssl_platform" not in code and code.startswith("import timm\nmodel = timm.create_model('resnet18', ")
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (what a user pastes; our own output, from our own test zoo)
    model = namespace["model"].eval()
    assert type(model).__module__.startswith("timm.")
    ours = zoo.load_backbone(NAME, zoo_dir)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pooled_features(model, x), pooled_features(ours.eval(), x), rtol=0, atol=0)
    cfg = timm.data.resolve_data_config(model=model)
    assert (cfg["input_size"], cfg["mean"], cfg["interpolation"], cfg["crop_pct"]) == ((1, 28, 28), (0.5,), "bilinear", 1.0)


def test_a_hostile_kwarg_name_prints_no_code(published):
    zoo_dir, entry = published
    entry.timm_kwargs = {**entry.timm_kwargs, "x=1); import os; os.system('id'); (": 1}
    assert zoo_card.timm_code(entry, "w.safetensors") is None
    assert "import os" not in zoo_card.format_show(entry, str(zoo_dir))


def test_an_unknown_interpolation_in_an_index_is_refused(published):
    zoo_dir, _ = published
    index = json.loads((zoo_dir / "index.json").read_text())
    index["models"][NAME]["interpolation"] = "cubic-spline"
    (zoo_dir / "index.json").write_text(json.dumps(index))
    with pytest.raises(zoo.ZooError, match=r"interpolation 'cubic-spline' is refused: it must be one of timm's"):
        zoo.read_index(zoo_dir)
