"""The reference tables of the docs say what the code does: every key of the eval-suite schema
(`docs/suites.md`) and of a recipe's `train:` section (`docs/recipes.md`), with its default, read from
the page and compared with the dataclasses the validators check against.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml
from fences import ROOT

from ssl_platform.engine.trainer import TrainConfig
from ssl_platform.evaluation import suite_schema

REQUIRED = "required"


def tables(page: str) -> dict[str, list[list[str]]]:
    """{heading text: rows of the first table under it}, each row its cells without the outer bars."""
    out, heading = {}, None
    for line in (ROOT / page).read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and heading is not None and not re.fullmatch(r"\|[-| ]+\|", line):
            out.setdefault(heading, []).append([cell.strip() for cell in line.strip("|").split(" | ")])
    return out


def value(cell: str):
    """A default as the page writes it (`[knn, linear]`, 1.0e-3, null, `auto`) as a Python value."""
    if cell == REQUIRED:
        return dataclasses.MISSING
    return yaml.safe_load(cell.strip("`"))


def defaults(schema) -> dict[str, object]:
    out = {}
    for field in dataclasses.fields(schema):
        if field.default is not dataclasses.MISSING:
            out[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
        else:
            out[field.name] = dataclasses.MISSING
    return out


def keys_and_defaults(rows: list[list[str]], column: int = 1, prefix: str = "") -> dict[str, object]:
    """{key: default} of a table whose first column holds `key` (or several: `a`, `b`) and `column` the default."""
    out = {}
    for row in rows[1:]:  # rows[0] is the header
        for key in re.findall(r"`([\w.]+)`", row[0]):
            if key.startswith(prefix):
                out[key.removeprefix(prefix)] = value(row[column])
    return out


SUITE_SECTIONS = [
    ("`tasks:`", suite_schema.TaskConfig, 1, ""),
    ("`eval:`", suite_schema.EvalConfig, 1, ""),
    ("`noise:`", suite_schema.NoiseConfig, 1, ""),
    ("`robust:`", suite_schema.RobustConfig, 1, ""),
    ("`knn:`", suite_schema.KNNConfig, 1, ""),
    ("`linear:`", suite_schema.LinearConfig, 1, ""),
    ("`probe:`", suite_schema.ProbeConfig, 1, ""),
    ("`finetune:` and `linear_sgd:`", suite_schema.FinetuneConfig, 1, ""),
    ("`finetune:` and `linear_sgd:`", suite_schema.LinearSGDConfig, 2, ""),
    ("`mlp:`, `gbdt:`, `svm:`", suite_schema.MLPConfig, 1, "mlp."),
    ("`mlp:`, `gbdt:`, `svm:`", suite_schema.GBDTConfig, 1, "gbdt."),
    ("`mlp:`, `gbdt:`, `svm:`", suite_schema.SVMConfig, 1, "svm."),
]


@pytest.mark.parametrize(("heading", "schema", "column", "prefix"), SUITE_SECTIONS,
                         ids=[f"{s.__name__}" for _, s, _, _ in SUITE_SECTIONS])
def test_the_suite_schema_page_lists_every_key_with_its_default(heading, schema, column, prefix):
    page = keys_and_defaults(tables("docs/suites.md")[heading], column, prefix)
    assert page == defaults(schema)


def test_the_suite_schema_page_has_a_table_for_every_section():
    documented = {s for _, s, _, _ in SUITE_SECTIONS}
    sections = {s for s in suite_schema.SECTIONS.values() if dataclasses.is_dataclass(s)} | {suite_schema.TaskConfig}
    assert sections == documented
    assert "### `random_backbone:`" in (ROOT / "docs/suites.md").read_text()  # the one section without a schema


def test_the_recipes_page_lists_every_train_key_with_its_default():
    assert keys_and_defaults(tables("docs/recipes.md")["`train:`"]) == defaults(TrainConfig)
