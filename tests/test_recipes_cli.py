"""`sslp recipes ls` lists every shipped recipe with its description; `sslp recipes cp` starts a new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_platform import config
from ssl_platform.cli import main
from ssl_platform.config import ConfigError
from ssl_platform.shipped_recipes import copy_recipe, find_recipe, list_recipes, summary

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def test_ls_lists_every_shipped_recipe_once_with_its_first_sentence(capsys):
    assert main(["recipes", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shipped = sorted(p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml"))
    listed = [line.split()[0] for line in lines[: len(shipped)]]
    assert listed == shipped
    assert all(len(line.split(None, 1)) == 2 for line in lines[: len(shipped)]), "a recipe without a description"
    assert lines[shipped.index("simclr/debug")].split(None, 1)[1] == (
        "A few SimCLR steps on scikit-learn's bundled digits (8x8, no data preparation): seconds on a CPU.")
    assert lines[-1] == "start your own from one: sslp recipes cp simclr/debug my_recipes/simclr_debug.yaml"


def test_summary_skips_the_launch_line_and_the_data_note_and_stops_at_the_header_end():
    text = ("# python -m ssl_platform pretrain recipes/x/y.yaml\n"
            "# Needs the data once: python -m ssl_platform data prepare emoji   (npm; writes\n"
            "# data/emoji/, the tokenizer)\n"
            "# Short one. Then the rest of it, e.g. More words. And more.\n"
            "#\n"
            "# Not the header any more.\n"
            "name: y\n")
    assert summary(text) == "Short one. Then the rest of it, e.g. More words."
    assert summary("# launch\n# GPU scale. solo-learn's recipe.\nname: a\n") == "GPU scale. solo-learn's recipe."
    assert summary("# launch\nname: a\n") == ""


def test_summary_is_cut_at_a_word_with_an_ellipsis():
    text = "# launch\n# " + " ".join(["word"] * 40) + ".\n"
    cut = summary(text, width=30)
    assert cut == "word word word word word..." and len(cut) <= 30


def test_find_accepts_the_forms_a_user_types_and_suggests_the_closest():
    path = RECIPES / "simclr" / "debug.yaml"
    assert find_recipe("simclr/debug") == find_recipe("simclr/debug.yaml") == find_recipe("recipes/simclr/debug.yaml")
    assert find_recipe("simclr/debug") == path
    with pytest.raises(ConfigError, match=r"no shipped recipe 'simclr/debgu' \(did you mean 'simclr/debug'\?\); "
                       r"`sslp recipes ls` lists them"):
        find_recipe("simclr/debgu")
    with pytest.raises(ConfigError, match="no shipped recipe '../../pyproject'"):  # only listed names resolve
        find_recipe("../../pyproject")


def test_cp_renames_the_recipe_and_its_launch_line_and_changes_nothing_else(tmp_path, capsys):
    dest = tmp_path / "mine" / "simclr_small.yaml"
    assert main(["recipes", "cp", "simclr/debug", str(dest)]) == 0
    assert f"copied simclr/debug to {dest} (name: simclr_small)" in capsys.readouterr().out
    source = (RECIPES / "simclr" / "debug.yaml").read_text().splitlines()
    copied = dest.read_text().splitlines()
    changed = [(a, b) for a, b in zip(source, copied) if a != b]
    assert len(source) == len(copied) and changed == [
        ("# python -m ssl_platform pretrain recipes/simclr/debug.yaml", f"# python -m ssl_platform pretrain {dest}"),
        ("name: simclr_debug", "name: simclr_small"),
    ]
    assert config.load(dest).name == "simclr_small"


def test_cp_follows_the_run_directory_in_comments_and_leaves_a_first_stage_name(tmp_path):
    dest = copy_recipe("gsimclr/debug", tmp_path / "two_stage.yaml")
    cfg = config.load(dest)
    shipped = config.load(RECIPES / "gsimclr" / "debug.yaml")
    assert cfg.name == "two_stage" and cfg.before.name == shipped.before.name
    pubmed = copy_recipe("graphmae/gat_pubmed_1000ep", tmp_path / "pubmed2.yaml").read_text()
    assert "backbone=runs/pubmed2,random:runs/pubmed2" in pubmed and "runs/graphmae_gat_pubmed_1000ep" not in pubmed


def test_cp_into_a_folder_keeps_the_file_name(tmp_path):
    dest = copy_recipe("supervised/debug", tmp_path)
    assert dest == tmp_path / "debug.yaml" and config.load(dest).name == "debug"


def test_cp_never_overwrites(tmp_path, capsys):
    dest = tmp_path / "r.yaml"
    dest.write_text("mine\n")
    assert main(["recipes", "cp", "simclr/debug", str(dest)]) == 2
    assert capsys.readouterr().err == (f"error: {dest} exists; sslp recipes cp never overwrites a file: choose another "
                                       "path or delete it first\n")
    assert dest.read_text() == "mine\n"


@pytest.mark.parametrize(("dest", "message"), [
    ("r.txt", r"r.txt: the copy must be a .yaml file, e.g. .*r.txt.yaml"),
    ("my run.yaml", r"my run.yaml: the copy's name is its file name and names its run directory"),
])
def test_cp_refuses_a_destination_that_is_no_recipe_name(tmp_path, dest, message):
    with pytest.raises(ConfigError, match=message):
        copy_recipe("simclr/debug", tmp_path / dest)
    assert not any(tmp_path.iterdir())


def test_without_a_checkout_the_message_says_where_recipes_come_from(tmp_path):
    with pytest.raises(ConfigError, match="no shipped recipes at .*none: they come with the source checkout"):
        list_recipes(tmp_path / "none")
