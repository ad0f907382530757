"""The W&B and MLflow trackers of monitor.loggers, for real in their offline modes (W&B's offline run
files, an MLflow file store in tmp_path), read back: the recipe as config / params, every row at its
step, the run closed with its outcome, a resumed run continuing the same tracker run, and no
credential in the run directory."""

from __future__ import annotations

import json
import struct

import pytest
from omegaconf import OmegaConf

from ssl_platform.engine.logging import RunLogger
from ssl_platform.engine.trackers import flatten

RECIPE = {"method": {"_component_": "ssl_platform.methods.SimCLR", "temperature": 0.2},
          "train": {"lr": 0.1, "max_steps": None}, "data": {"sizes": [8, 16]}}
SECRET = "not-a-real-key-0123456789abcdef"  # set as the libraries' credentials: must never reach the run directory


def run_rows(run_dir, recipe, rows, resume_step=0):
    logger = RunLogger(run_dir, resume_step=resume_step, recipe=recipe)
    for step, row in rows:
        logger.log(step, row)
    logger.close()


def assert_no_secret_in(run_dir):
    for path in run_dir.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


def wandb_records(run_file):
    """The records of a W&B offline run file: a 7-byte header, then 32 KiB blocks of chunks (crc32,
    length, type; full = 1, first / middle / last = 2 / 3 / 4), each record a protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def wandb_run(records):
    """(run id, config, {step: metrics}, exit code) of one offline run."""
    run_id, config, history, exit_code = None, {}, {}, None
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return run_id, config, history, exit_code


@pytest.mark.slow  # W&B runs its service in a process
def test_wandb_offline_run_gets_the_recipe_and_every_row_and_a_resume_continues_it(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    (tmp_path / "wandb_dir").mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recipe = {**RECIPE, "monitor": {"loggers": [{"name": "wandb", "project": "ssl-test", "tags": ["unit"]}]}}
    run_rows(run_dir, recipe, [(1, {"train/loss": 2.0, "lr": 0.1}), (2, {"train/loss": 1.0, "lr": 0.2})])
    resumed = {**recipe, "train": {**recipe["train"], "max_steps": 3}}  # a setting a resume may change
    run_rows(run_dir, resumed, [(3, {"train/loss": 0.5, "lr": 0.3})], resume_step=2)
    wandb.teardown()  # W&B's service may still be writing a finished run's file: stop it, so both are whole

    first, second = sorted((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*/run-*.wandb"))
    run_id, config, history, exit_code = wandb_run(wandb_records(first))
    assert {k: v for k, v in config.items() if k != "_wandb"} == recipe
    assert history == {1: {"train/loss": 2.0, "lr": 0.1}, 2: {"train/loss": 1.0, "lr": 0.2}}
    assert exit_code == 0
    assert json.loads((run_dir / "trackers.json").read_text()) == {"wandb": run_id}
    again, config, history, _ = wandb_run(wandb_records(second))
    assert again == run_id and config["train"]["max_steps"] == 3 and history == {3: {"train/loss": 0.5, "lr": 0.3}}
    assert not list(run_dir.glob("**/wandb"))  # W&B's files live in WANDB_DIR, not in the run directory
    assert_no_secret_in(run_dir)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    return f"file:{tmp_path / 'mlruns'}"


@pytest.mark.slow  # importing MLflow takes about a second
def test_mlflow_run_gets_params_recipe_and_metrics_and_a_resume_continues_it(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recipe = {**RECIPE, "monitor": {"loggers": [{"name": "mlflow", "tracking_uri": mlflow_store,
                                                 "experiment": "ssl-test", "run_name": "simclr"}]}}
    run_rows(run_dir, recipe, [(1, {"train/loss": 2.0, "epoch": 0}), (2, {"train/loss": 1.0, "epoch": 0})])
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(run_id)
    assert run.info.run_name == "simclr" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ssl-test"
    assert run.data.params == {k: str(v) for k, v in flatten(recipe).items()}
    recipe_file = client.download_artifacts(run_id, "recipe.yaml", str(tmp_path))
    assert OmegaConf.to_container(OmegaConf.load(recipe_file)) == recipe

    resumed = {**recipe, "train": {**recipe["train"], "max_steps": 3}}
    run_rows(run_dir, resumed, [(2, {"train/loss": 1.5}), (3, {"train/loss": 0.5})], resume_step=1)
    assert json.loads((run_dir / "trackers.json").read_text())["mlflow"] == run_id  # the same run, continued
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")]
    # MLflow cannot take back the dead run's step 2: both values are kept (metrics.jsonl keeps the new one)
    assert sorted(history) == [(1, 2.0), (2, 1.0), (2, 1.5), (3, 0.5)]
    assert client.get_run(run_id).data.params["train.max_steps"] == "null"  # a param never changes
    assert_no_secret_in(run_dir)


@pytest.mark.slow  # importing MLflow takes about a second
def test_mlflow_run_of_a_failed_training_is_marked_failed(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    logger = RunLogger(tmp_path, recipe={**RECIPE, "monitor": {"loggers": [{"name": "mlflow",
                                                                             "tracking_uri": mlflow_store}]}})
    logger.log(1, {"train/loss": float("nan")})
    with pytest.raises(FloatingPointError):
        try:
            raise FloatingPointError("loss is nan")
        finally:
            logger.close()
    run_id = json.loads((tmp_path / "trackers.json").read_text())["mlflow"]
    run = MlflowClient(tracking_uri=mlflow_store).get_run(run_id)
    assert run.info.status == "FAILED" and run.info.experiment_id == "0"  # MLflow's Default experiment
