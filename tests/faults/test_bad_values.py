"""Every value of a recipe is checked against its type and range before any work, `--dry-run` included.

Before issue 21: `train.epochs=-1` exported an untrained backbone and printed done, `optimizer.lr=abc`
passed `--dry-run` and failed later with a TypeError, `save_every_steps=0` divided by zero, and
`key=???` on the command line was silently ignored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ssl_platform import config, pretrain
from ssl_platform.cli import main
from ssl_platform.config import ConfigError
from ssl_platform.engine.step_flags import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "recipes" / "simclr" / "debug.yaml"


@pytest.mark.parametrize(("override", "message"), [
    ("train.epochs=-1", r"train\.epochs=-1 is out of range: it must be >= 1"),
    ("train.epochs=0", r"train\.epochs=0 is out of range"),
    ("train.epochs=1.5", r"train\.epochs=1\.5 is not a valid value: expected int"),
    ("train.epochs=true", r"train\.epochs=True is not a valid value: expected int"),
    ("train.save_every_steps=0", r"train\.save_every_steps=0 is out of range: it must be >= 1"),
    ("train.log_every_steps=-3", r"train\.log_every_steps=-3 is out of range"),
    ("train.max_steps=0", r"train\.max_steps=0 is out of range"),
    ("train.accum_steps=0", r"train\.accum_steps=0 is out of range"),
    ("train.warmup_epochs=-0.5", r"train\.warmup_epochs=-0\.5 is out of range: it must be >= 0"),
    ("train.warmup_epochs=.nan", r"train\.warmup_epochs=nan is not a valid value"),
    ("train.min_lr=2", r"train\.min_lr=2 is out of range: it must be <= 1"),
    ("train.clip_grad=0", r"train\.clip_grad=0 is out of range: it must be > 0"),
    ("train.precision=fp8", r"train\.precision='fp8' is not a valid value: expected one of 'auto', 'fp32'"),
    ("train.lr_scaling=cubic", r"train\.lr_scaling='cubic' is not a valid value"),
    ("train.deterministic=maybe", r"train\.deterministic='maybe' is not a valid value: expected bool"),
    ("data.batch_size=0", r"data\.batch_size=0 is out of range"),
    ("data.num_workers=-1", r"data\.num_workers=-1 is out of range"),
    ("monitor.temperature=0", r"monitor\.temperature=0 is out of range: it must be > 0"),
    ("optimizer.lr=abc", r"optimizer\.lr='abc' is not a valid value: expected float"),
    ("optimizer.lr=-1", r"optimizer: lightly\.utils\.lars\.LARS\(optimizer\.lr=-1, .*\) refused its arguments: Invalid learning rate"),
    ("optimizer.lr=.inf", r"optimizer\.lr=inf is not a valid value: expected float"),
    ("optimizer.weight_decay=3.4e38", r"optimizer\.weight_decay=3\.4e\+38 is out of range: no float setting"),
    ("optimizer.momentum=[1,2]", r"optimizer\.momentum=\[1, 2\] is not a valid value: expected float"),
    ("method.temperature=hot", r"method\.temperature='hot' is not a valid value: expected float"),
    ("method.small_input=3", r"method\.small_input=3 is not a valid value: expected bool"),
    ("train.epochs=???", r"override train\.epochs=\?\?\? gives no value"),
    ("name=${nowhere}", r"key name: Interpolation key 'nowhere' not found"),
    ("method=null", r"has no 'method'"),
])
def test_bad_value_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        pretrain.load_recipe(DEBUG, [override])


def test_dry_run_refuses_a_bad_value_with_one_line(capsys):
    # the command's own entry point, in this process (`python -m ssl_platform` calls it and exits with its code)
    assert main(["pretrain", str(DEBUG), "optimizer.lr=abc", "--dry-run"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().splitlines()[-1] == "error: optimizer.lr='abc' is not a valid value: expected float"
    assert "Traceback" not in stderr


def test_conforms_matches_python_semantics():
    from typing import Literal, Optional

    assert config.conforms(3, float) and not config.conforms(True, float) and not config.conforms(float("nan"), float)
    assert config.conforms(3, int) and not config.conforms(3.0, int) and not config.conforms(False, int)
    assert config.conforms(None, Optional[int]) and config.conforms(None, int | None) and not config.conforms("x", int | None)  # noqa: UP045 - the typing form as well
    assert config.conforms("a", Literal["a", "b"]) and not config.conforms("c", Literal["a", "b"])
    assert not config.conforms(1, Literal[True]) and config.conforms(True, Literal[True])
    assert config.conforms([0.9, 0.99], tuple[float, float]) and not config.conforms([0.9], tuple[float, float])
    assert config.conforms([1, 2], list[int]) and not config.conforms("12", list[int])
    assert config.conforms("/data", Path) and not config.conforms(3, Path)
    assert config.conforms({"a": 1}, dict) and not config.conforms([1], dict)


# ---- fuzzed overrides: any key=value either passes or is a ConfigError naming the key

_RECIPE = OmegaConf.to_container(OmegaConf.load(DEBUG))


def _keys(node, prefix=""):
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in _keys(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


KEYS = sorted(set(_keys(_RECIPE)) | {f"train.{f}" for f in pretrain.TrainConfig.__dataclass_fields__}
              | {"data.batch_size", "data.num_workers", "monitor.k", "monitor.temperature", "monitor.knn_every_epochs",
                 "train.nosuch", "method.nosuch", "optimizer.nosuch", "nosuch"})
VALUES = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}.get(str(x), str(x))),
    st.sampled_from(["true", "false", "null", "???", "[]", "{}", "[1,2]", "{a: 1}", "${train.seed}", "${nope}",
                     "''", "abc", "os.system", "[", "}", "a=b", "1e-3", "0x10", "-0", "~"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)


def _names(key: str, message: str) -> bool:
    prefix, _, last = key.rpartition(".")
    return key in message or f"{prefix}.'{last}'" in message or f"'{key}'" in message


# derandomize: CI draws the same examples every run (a fuzz find must not make CI flaky); to explore,
# run with `--hypothesis-seed=random` after removing it, or raise max_examples
@pytest.mark.slow  # 300 recipes loaded and checked: about 14 s
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_fuzzed_override_passes_or_names_its_key(key, value):
    try:
        cfg = pretrain.load_recipe(DEBUG, [f"{key}={value}"])
    except ConfigError as err:
        assert _names(key, str(err)), f"{key}={value!r}: {err}"
        return
    # what passed is usable as the plain sections the engine receives
    config.section(cfg.train, pretrain.TrainConfig)
    config.section(cfg.data, pretrain.DataConfig)


TRAIN_KEYS = [k for k in KEYS if k.startswith(("train.", "optimizer.", "data.batch_size", "data.num_workers"))
              and "nosuch" not in k and k != "train.out_dir" and k != "train.resume"]


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(TRAIN_KEYS), value=VALUES)
def test_fuzzed_training_value_that_passes_trains(key, value, tmp_path_factory):
    """A value the check lets through must train: two steps, a finite loss, or a ConfigError naming it."""
    out = tmp_path_factory.mktemp("run")
    try:
        cfg = pretrain.load_recipe(DEBUG, [f"{key}={value}", f"train.out_dir={out}", "train.max_steps=2",
                                           "train.compile=false", "train.sync_bn=false"])
    except ConfigError as err:
        assert _names(key, str(err)), f"{key}={value!r}: {err}"
        return
    try:
        result = pretrain.run(cfg)
    except ConfigError as err:
        assert _names(key, str(err)) or key.split(".")[-1] in str(err), f"{key}={value!r}: {err}"
        return
    except NonFiniteLossError as err:
        # a legal but huge lr or weight decay diverges: the engine stops before the update and says so
        assert "Lower the optimizer lr" in str(err) and key.startswith(("optimizer.", "train.")), f"{key}={value!r}"
        return
    assert result["step"] >= 1
