"""The entries shipped in the repository's `zoo/`: every file is there, within the size limit for
files kept in git, matches its sha256, loads into its architecture, and `docs/zoo.md` is the page
generated from the index as it is now."""

import ast
import re
from pathlib import Path

import pytest
import torch

from ssl_platform.zoo import load_backbone
from ssl_platform.zoo.card import docs_page, format_show, timm_code
from ssl_platform.zoo.checks import NAME
from ssl_platform.zoo.index import read_index, verify

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "zoo"
GIT_LIMIT = 16 * 2**20  # larger files live on a release server (README, "Where weights live")
# methods that must have a shipped backbone (issue: the zoo's shipped entries)
REQUIRED = {"simclr", "gsimclr", "spark", "ijepa", "tjepa"}
ENTRIES = sorted(read_index(ZOO)) if (ZOO / "index.json").exists() else []


def test_the_shipped_zoo_covers_the_landed_methods():
    assert ENTRIES, "zoo/index.json is missing: publish the shipped runs (README, Model zoo)"
    assert REQUIRED <= {e.method for e in read_index(ZOO).values()}


@pytest.mark.parametrize("name", ENTRIES)
def test_each_shipped_file_is_in_git_size_and_verifies(name):
    entry = read_index(ZOO)[name]
    path = ZOO / entry.file
    assert path.exists() and entry.url is None, f"{name}: shipped entries keep their weights in zoo/"
    assert path.stat().st_size == entry.size_bytes <= GIT_LIMIT
    [(checked, ok, message)] = verify([name], zoo=ZOO)
    assert checked == name and ok, message
    assert entry.results, f"{name}: a shipped entry carries the evaluation that measured it"


@pytest.mark.parametrize("name", ENTRIES)
def test_each_shipped_backbone_loads_and_embeds(name):
    entry = read_index(ZOO)[name]
    backbone = load_backbone(name, zoo=ZOO).eval()
    assert backbone.num_features == entry.num_features
    if entry.method == "tjepa":
        n_num = entry.arch_kwargs["num_numeric"]
        cards = entry.arch_kwargs.get("cat_cardinalities") or []
        x_cat = torch.zeros(2, len(cards), dtype=torch.long)
        feats = backbone.forward_head(backbone.forward_features(torch.randn(2, n_num), x_cat), pre_logits=True)
    elif entry.method == "graphmae":  # node codes of a 5-node ring, then one pooled graph embedding
        ring = torch.tensor([[0, 1, 2, 3, 4, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 0, 1, 2, 3, 4]])
        nodes = backbone.forward_features(torch.randn(5, entry.in_chans), ring)
        assert nodes.shape == (5, entry.num_features)
        feats = backbone.pool(nodes, torch.tensor([0, 0, 0, 1, 1]))
    else:
        feats = backbone.forward_head(backbone.forward_features(torch.randn(2, *entry.input_size)), pre_logits=True)
    assert feats.shape == (2, entry.num_features) and torch.isfinite(feats).all()


def test_docs_zoo_md_is_generated_from_the_index():
    page = docs_page(read_index(ZOO), str(ZOO), ROOT / "docs" / "zoo.md")
    assert page == (ROOT / "docs" / "zoo.md").read_text(), "docs/zoo.md is stale: run `sslp zoo docs` and commit it"


def zoo_names_in(path: Path) -> set[str]:
    """Every string constant of a module that names a zoo model: `name=` values and the string arguments
    of `load_backbone`, `timm_kwargs`, `pull` and `export_timm` calls, docstring examples included."""
    text = "\n".join(node.value for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Constant) and isinstance(node.value, str))
    found = re.findall(r"""(?:name=|load_backbone\(|timm_kwargs\(|pull\(|export_timm\()["']([^"']+)["']""", text)
    return {n for n in found if NAME.fullmatch(n)}


@pytest.mark.parametrize("module", ["hubconf.py", "ssl_platform/zoo/__init__.py", "ssl_platform/zoo/index.py"])
def test_every_zoo_name_the_entry_points_use_is_shipped(module):
    names = zoo_names_in(ROOT / module)
    if module == "hubconf.py":
        assert names, "hubconf.py's docstring shows loading a backbone by name"
    assert names <= set(ENTRIES), f"{module} names {sorted(names - set(ENTRIES))}, not in zoo/index.json"


@pytest.mark.parametrize("name", [n for n in ENTRIES if read_index(ZOO)[n].timm_kwargs is not None])
def test_the_plain_timm_code_of_zoo_show_loads_each_shipped_file(name):
    entry = read_index(ZOO)[name]
    code = timm_code(entry, str(ZOO / entry.file))
    assert code in format_show(entry, str(ZOO))
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own output for our own shipped index)
    theirs, ours = namespace["model"].state_dict(), load_backbone(name, zoo=ZOO).state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_shipped_results_without_recorded_seeds_show_no_mean_of_selected_values():
    entry = read_index(ZOO)["tjepa_tabular.fair_60ep"]
    [stored] = [r for r in entry.results if r["metric"] == "lambda"]
    assert stored["n"] == 5 and "values" not in stored  # the index keeps only the mean: it is not shown
    [line] = [line for line in format_show(entry, str(ZOO)).splitlines() if " lambda " in line]
    assert f"{stored['mean']:.3g}" not in line and line.endswith("– (not recorded per seed)  5  ?")
