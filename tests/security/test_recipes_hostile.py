"""Recipes, overrides, suites and run directories written by someone else must not run code.

Each case names a callable or file that ran code, wrote a file or unpickled an object before the
trust rules (issue 21): `data.collate._component_=os.system` on the command line ran a shell command
and exited 0, and `last.pt` was read with `torch.load(weights_only=False)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ssl_platform import config, pretrain, trust
from ssl_platform.checkpoint.io import CheckpointError, load_backbone, load_checkpoint, load_run_method
from ssl_platform.cli import main
from ssl_platform.config import ConfigError
from ssl_platform.evaluation.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "recipes" / "simclr" / "debug.yaml"
DIGITS_SUITE = ROOT / "eval" / "digits.yaml"


def sslp(capsys, *args: str) -> tuple[int, str]:
    """The command's entry point, in this process: (exit code, stderr). Should a check let a hostile
    component through, it would run here, and tests/conftest.py fails any fast test that starts a process."""
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


class Payload:
    """Unpickling this creates `marker`: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# callables that run code, unpickle, write files or reach private internals
HOSTILE = [
    "os.system",
    "builtins.exec",
    "subprocess.run",
    "importlib.import_module",
    "torch.hub.load",
    "torch.load",
    "torch.save",
    "torch.os.system",                          # a trusted root re-exporting an untrusted module
    "ssl_platform.config.os.system",
    "torch.package.PackageImporter",             # a class, but it unpickles its archive
    "torch.utils.cpp_extension.load_inline",
    "torch.jit.load",
    "torch.nn.Module.__subclasses__",            # private / dunder attribute
    "torch._C._get_tracing_state",
    "torchvision.datasets.CIFAR10",              # unpickles its batches; our wrapper is the way in
    "torch_geometric.datasets.Planetoid",        # PyG falls back to weights_only=False on its cache
    "ssl_platform.checkpoint.io.write_atomic",   # our own plumbing writes files
    "ssl_platform.data.prepare.prepare",
    "ssl_platform.data.download.DataSourceError",  # a class, but in a module that runs pip, npm and apt
    "ssl_platform.data.sources.spec.Source",
    "ssl_platform.provenance.git_sha",            # a harmless function, still not a component
]


@pytest.mark.parametrize("path", HOSTILE)
def test_recipe_cannot_name_a_hostile_callable(path):
    with pytest.raises(ConfigError, match=r"data\.collate\._component_ '" + path.replace(".", r"\.")):
        pretrain.load_recipe(DEBUG, [f"data.collate._component_={path}"])


@pytest.mark.parametrize("path", ["os.system", "builtins.eval", "torch.hub.load"])
def test_instantiate_refuses_before_calling(path, tmp_path):
    # a foreign run directory's config.yaml reaches `instantiate` without `validate`: same rules
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError, match="refused|not in a trusted library"):
        config.instantiate({"_component_": path, "command": f"touch {marker}"})
    assert not marker.exists()


def test_command_line_component_does_not_run_a_shell(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for extra in ([], ["--dry-run"]):
        code, stderr = sslp(capsys, "pretrain", str(DEBUG), "data.collate._component_=os.system",
                            f"data.collate.command=touch {marker}", f"train.out_dir={tmp_path / 'run'}", *extra)
        assert code == 2, stderr
        assert "error: data.collate._component_ 'os.system' is not in a trusted library" in stderr
        assert "--allow-components" in stderr and "Traceback" not in stderr
        assert not marker.exists()
        assert not (tmp_path / "run").exists()


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A package of the user's own: a dataset class, and a marker written when the module is imported."""
    pkg = tmp_path / "mylab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (pkg / "data.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).touch()\n"
        "from ssl_platform.data.datasets import Digits\n"
        "class MyDigits(Digits):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(trust.ENV_ALLOW, raising=False)
    monkeypatch.setattr(trust, "_allowed_by_user", set())
    return marker


def test_user_code_needs_the_users_permission_and_is_not_imported_before(user_package):
    override = ["data.dataset._component_=mylab.data.MyDigits"]
    with pytest.raises(ConfigError, match="--allow-components mylab"):
        pretrain.load_recipe(DEBUG, override)
    assert not user_package.exists(), "the user module was imported before the trust check"
    trust.allow_components(["mylab"])
    cfg = pretrain.load_recipe(DEBUG, override)
    assert cfg.data.dataset._component_ == "mylab.data.MyDigits" and user_package.exists()


def test_user_code_allowed_by_environment(user_package, monkeypatch):
    monkeypatch.setenv(trust.ENV_ALLOW, "other, mylab.data")
    pretrain.load_recipe(DEBUG, ["data.dataset._component_=mylab.data.MyDigits"])


def test_a_recipe_cannot_allow_components_itself(tmp_path):
    # the allow list is the user's: no recipe key widens it
    recipe = OmegaConf.load(DEBUG)
    recipe.allow_components = ["os"]
    path = tmp_path / "r.yaml"
    OmegaConf.save(recipe, path)
    with pytest.raises(ConfigError, match="unknown key 'allow_components'"):
        pretrain.load_recipe(path)


@pytest.mark.parametrize("bad", ["my-lab", " ", "a..b", "os;rm"])
def test_allow_components_checks_its_names(bad, monkeypatch):
    monkeypatch.setattr(trust, "_allowed_by_user", set())
    with pytest.raises(trust.UntrustedError, match="is not a dotted package name"):
        trust.allow_components([bad])


# ---- suites


@pytest.mark.parametrize(("override", "message"), [
    ("tasks.digits.extractor=os.system", r"tasks\.digits\.extractor: _component_ 'os\.system' is not in a trusted"),
    ("tasks.digits.train._component_=builtins.exec", r"tasks\.digits\.train\._component_ 'builtins\.exec'"),
    ("tasks.digits.transform._component_=torch.load", r"tasks\.digits\.transform\._component_ 'torch\.load' is refused"),
    ("random_backbone.checkpoint_path=/tmp/evil.pth", r"random_backbone: backbone kwargs \['checkpoint_path'\]"),
])
def test_hostile_suite_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(DIGITS_SUITE, [override])


# ---- run directories and checkpoints from elsewhere


def _run_dir(tmp_path: Path, component: str = "ssl_platform.methods.simclr.SimCLR") -> Path:
    run = tmp_path / "foreign_run"
    (run / "checkpoints").mkdir(parents=True)
    recipe = OmegaConf.load(DEBUG)
    recipe.method._component_ = component
    OmegaConf.save(recipe, run / "config.yaml")
    return run


def test_foreign_run_config_cannot_name_a_hostile_method(tmp_path):
    run = _run_dir(tmp_path, "os.system")
    with pytest.raises(ConfigError, match="'os.system' is not in a trusted library"):
        load_run_method(run, random_init=True)


def _evil_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"format": "ssl_platform.checkpoint/1", "method": {}, "payload": Payload(marker)}, path)


def test_checkpoint_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "ran"
    _evil_checkpoint(tmp_path / "last.pt", marker)
    with pytest.raises(CheckpointError, match="could run code, so it is refused"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()


def test_foreign_run_directory_checkpoint_payload_is_refused(tmp_path):
    marker = tmp_path / "ran"
    run = _run_dir(tmp_path)
    _evil_checkpoint(run / "checkpoints" / "last.pt", marker)
    with pytest.raises(CheckpointError, match="could run code"):
        load_run_method(run)
    assert not marker.exists()


def test_resuming_into_a_run_directory_with_a_payload_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ran"
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    _evil_checkpoint(out / "checkpoints" / "last.pt", marker)
    code, stderr = sslp(capsys, "pretrain", str(DEBUG), f"train.out_dir={out}")
    assert code == 2, stderr
    assert "could run code, so it is refused" in stderr and "Traceback" not in stderr
    assert not marker.exists()


def test_checkpoints_we_write_still_load(tmp_path):
    # the RNG states (numpy's key array), the recipe and the optimizer state pass weights_only
    from ssl_platform.checkpoint.io import save_checkpoint
    from ssl_platform.engine.rng import rng_state

    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([param])
    param.grad = torch.ones(2)
    opt.step()  # so the state holds its exp_avg tensors and step counts
    save_checkpoint(tmp_path / "last.pt", {"rng": [rng_state()], "recipe": OmegaConf.to_container(OmegaConf.load(DEBUG)),
                                            "optimizer": opt.state_dict(), "step": 7})
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 7 and state["recipe"]["name"] == "simclr_debug"
    assert state["rng"][0]["numpy"][1].dtype.name == "uint32"


@pytest.mark.parametrize("key", ["checkpoint_path", "pretrained_cfg_overlay", "pretrained"])
def test_backbone_metadata_cannot_make_timm_load_a_file(tmp_path, key):
    # a safetensors file's architecture record is someone else's data too
    marker = tmp_path / "ran"
    torch.save({"x": Payload(marker)}, tmp_path / "evil.pth")
    value = str(tmp_path / "evil.pth") if key == "checkpoint_path" else (
        {"file": str(tmp_path / "evil.pth")} if key == "pretrained_cfg_overlay" else True)
    spec = {"name": "resnet18", "small_input": False, "in_chans": 3, key: value}
    save_file({}, str(tmp_path / "backbone.safetensors"),
              metadata={"format": "ssl_platform.backbone/1", "backbone": json.dumps(spec)})
    with pytest.raises(ValueError, match=f"backbone kwargs \\['{key}'\\] would make timm load weights"):
        load_backbone(tmp_path / "backbone.safetensors")
    assert not marker.exists()


def test_method_backbone_kwargs_cannot_make_timm_load_a_file():
    with pytest.raises(ConfigError, match=r"checkpoint_path"):
        pretrain.run(pretrain.load_recipe(DEBUG, ["method.backbone_kwargs.checkpoint_path=/tmp/evil.pth",
                                                  "train.out_dir=/nonexistent/never_written"]))


@pytest.mark.parametrize(("text", "message"), [
    ("name: !!python/object/apply:os.system ['touch MARKER']\n", "cannot parse"),
    ("name: x\nmethod: {_component_: ssl_platform.methods.simclr.SimCLR, backbone: '${oc.env:AWS_SECRET_ACCESS_KEY}'}\n",
     r"method\.backbone reads the environment variable AWS_SECRET_ACCESS_KEY"),
])
def test_recipe_file_cannot_run_code_or_read_secrets(tmp_path, text, message, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    marker = tmp_path / "ran"
    path = tmp_path / "r.yaml"
    path.write_text(text.replace("MARKER", str(marker)))
    with pytest.raises(ConfigError, match=message):
        pretrain.load_recipe(path)
    assert not marker.exists()


def test_recipe_may_read_the_platforms_own_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_PLATFORM_RUNS", str(tmp_path / "runs"))
    cfg = pretrain.load_recipe(DEBUG, ["train.out_dir=${oc.env:SSL_PLATFORM_RUNS}/debug"])
    assert cfg.train.out_dir == f"{tmp_path}/runs/debug"


@pytest.mark.parametrize("uri", ["https://tracker.example.com", "http://127.0.0.1:5000", "databricks",
                                 "s3://bucket/mlruns"])
def test_a_recipe_cannot_send_mlflow_credentials_to_a_server_of_its_choosing(uri, monkeypatch):
    """`monitor.loggers` of a shared recipe may name a local MLflow store only: a server would receive the
    user's MLFLOW_TRACKING_TOKEN from the environment. Refused when the recipe is loaded (and in --dry-run)."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret-token")
    debug = Path(__file__).resolve().parents[2] / "recipes/simclr/debug.yaml"
    with pytest.raises(ConfigError, match=r"is not a local store.*must not choose where your MLflow credentials go"):
        pretrain.load_recipe(debug, [f"monitor.loggers=[{{name: mlflow, tracking_uri: '{uri}'}}]"])
