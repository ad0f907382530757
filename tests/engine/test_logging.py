"""metrics.jsonl and TensorBoard files across resumes: rows past the checkpoint dropped, a torn last
line dropped, an unchanged file left alone, and no event file opened until something is logged; the
recipe in TensorBoard once per run; the trackers of monitor.loggers (a stand-in here; the real W&B
and MLflow in test_trackers.py)."""

import importlib.util
import json
import os
from typing import ClassVar

import pytest

from ssl_platform.config import ConfigError
from ssl_platform.engine import trackers
from ssl_platform.engine.logging import RunLogger


def rows(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_resume_drops_rows_past_the_checkpoint_and_a_torn_last_line(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "lr": 0.1}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "l')
    RunLogger(tmp_path, resume_step=2).close()
    assert rows(path) == [1, 2]
    assert f"dropping the torn last line of {path}" in capsys.readouterr().err


def test_resume_at_the_last_row_leaves_the_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2)))
    before = os.stat(path)
    RunLogger(tmp_path, resume_step=2).close()
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_torn_line_before_the_last_is_refused_naming_it(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not JSON"):
        RunLogger(tmp_path, resume_step=3)


def test_event_file_is_opened_at_the_first_logged_row(tmp_path):
    logger = RunLogger(tmp_path)
    assert not (tmp_path / "tb").exists()
    logger.log(1, {"train/loss": 1.0})
    logger.close()
    assert rows(tmp_path / "metrics.jsonl") == [1]
    assert len(list((tmp_path / "tb").iterdir())) == 1


# ---- the recipe in TensorBoard: YAML text and HParams hyperparameters, once per run directory

RECIPE = {"method": {"_component_": "ssl_platform.methods.SimCLR", "temperature": 0.2},
          "train": {"lr": 0.1, "epochs": 3, "compile": False, "max_steps": None},
          "data": {"batch_size": 64, "sizes": [8, 16]}, "monitor": {"loggers": None}}


def tb_events(run_dir):
    """(file name, step, tag) of every summary value in the run's event files, oldest file first."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    return [(path.name, event.step, value)
            for path in sorted((run_dir / "tb").glob("events.out.tfevents.*"))
            for event in LegacyEventFileLoader(str(path)).Load() for value in event.summary.value]


def test_the_recipe_is_written_once_as_yaml_text_and_hparams_across_resumes(tmp_path):
    from omegaconf import OmegaConf
    from tensorboard.plugins.hparams import metadata

    logger = RunLogger(tmp_path, recipe=RECIPE)
    logger.log(1, {"train/loss": 2.0})
    logger.close()
    for resume_step in (1, 0):  # a resume, then a start again after a crash before the first checkpoint
        logger = RunLogger(tmp_path, resume_step=resume_step, recipe={**RECIPE, "train": {**RECIPE["train"], "lr": 9}})
        logger.log(2, {"train/loss": 1.0})
        logger.close()
    events = tb_events(tmp_path)
    assert len({name for name, _, _ in events}) == 3  # three writers
    texts = [(name, step, v) for name, step, v in events if v.tag == "recipe/text_summary"]
    hparams = [(name, step, v) for name, step, v in events if v.tag == metadata.SESSION_START_INFO_TAG]
    assert len(texts) == len(hparams) == 1 and texts[0][:2] == hparams[0][:2] == (events[0][0], 0)
    text = texts[0][2].tensor.string_val[0].decode()
    assert text == "```yaml\n" + OmegaConf.to_yaml(OmegaConf.create(RECIPE)) + "```"  # the first run's recipe
    start = metadata.parse_session_start_info_plugin_data(hparams[0][2].metadata.plugin_data.content)
    got = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert got == {"method._component_": "ssl_platform.methods.SimCLR", "method.temperature": 0.2, "train.lr": 0.1,
                   "train.epochs": 3, "train.compile": False, "train.max_steps": "null", "data.batch_size": 64,
                   "data.sizes": "[8, 16]", "monitor.loggers": "null"}


def test_a_writer_that_never_flushed_the_recipe_leaves_it_to_the_next(tmp_path):
    RunLogger(tmp_path).log(1, {"train/loss": 2.0})  # no recipe recorded (a run that died before its flush)
    logger = RunLogger(tmp_path, resume_step=1, recipe=RECIPE)
    logger.log(2, {"train/loss": 1.0})
    logger.close()
    assert [step for _, step, v in tb_events(tmp_path) if v.tag == "recipe/text_summary"] == [0]


def test_the_hparams_dashboard_shows_the_recipe_and_the_last_value_of_every_scalar(tmp_path):
    """Read through TensorBoard's own HParams backend: the session's hyperparameters are the recipe's,
    and its metrics are the run's scalars at their last step, the rows dropped on resume purged."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    logger = RunLogger(tmp_path, recipe=RECIPE)
    for step, loss in ((1, 2.0), (2, 1.0), (3, 0.9)):
        logger.log(step, {"train/loss": loss, "lr": 0.1 * step})
    logger.close()
    logger = RunLogger(tmp_path, resume_step=2, recipe=RECIPE)
    logger.log(3, {"train/loss": 0.5, "lr": 0.3})
    logger.close()

    logdir = str(tmp_path / "tb")
    events = plugin_event_multiplexer.EventMultiplexer()
    events.AddRunsFromDirectory(logdir)
    events.Reload()
    provider = data_provider.MultiplexerDataProvider(events, logdir)
    backend = backend_context.Context(base_plugin.TBContext(logdir=logdir, multiplexer=events, data_provider=provider))
    request = context.RequestContext()
    experiment = backend.experiment_from_metadata(request, "", True, backend.hparams_metadata(request, ""),
                                                  backend.hparams_from_data_provider(request, "", 0))
    assert {info.name for info in experiment.hparam_infos} == set(trackers.flatten(RECIPE))
    assert sorted(info.name.tag for info in experiment.metric_infos) == ["lr", "train/loss"]
    last = backend.read_last_scalars(request, "", None)["."]
    assert (last["train/loss"].step, last["train/loss"].value) == (3, 0.5)



def test_a_resume_in_the_same_second_writes_an_event_file_that_sorts_after_the_earlier_one(tmp_path, monkeypatch):
    """TensorBoard reads event files in name order, and the per-process counter in a name compares as
    text: counters 9 then 10 in one second would put the resumed writer's file (and its purge) first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary.writer import event_file_writer

    class Counter:  # the writer's process-wide file counter, at the digit boundary
        values = iter([9, 10])

        def get(self):
            return next(self.values)

    monkeypatch.setattr(event_file_writer, "_global_uid", Counter())
    logger = RunLogger(tmp_path, recipe=RECIPE)
    logger.log(1, {"train/loss": 2.0})
    logger.log(2, {"train/loss": 0.9})
    logger.close()
    logger = RunLogger(tmp_path, resume_step=1, recipe=RECIPE)
    logger.log(2, {"train/loss": 0.5})
    logger.close()
    files = sorted(path.name for path in (tmp_path / "tb").iterdir())
    assert [name.rsplit(".", 1)[1] for name in files] == ["9", "10"]  # name order is creation order
    read = EventAccumulator(str(tmp_path / "tb"))  # TensorBoard's reader, which applies the purge
    read.Reload()
    assert [(e.step, e.value) for e in read.Scalars("train/loss")] == [(1, 2.0), (2, 0.5)]


def test_an_event_file_named_far_in_the_future_does_not_stall_a_resume(tmp_path, monkeypatch):
    """A run directory from elsewhere may hold any file name: one dated in the year 2286 is not waited for."""
    from ssl_platform.engine import logging as run_logging

    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.9999999999.host.1.0").write_bytes(b"")
    waits = []
    monkeypatch.setattr(run_logging.time, "sleep", waits.append)
    logger = RunLogger(tmp_path, resume_step=1, recipe=RECIPE)
    logger.log(2, {"train/loss": 0.5})
    logger.close()
    assert waits == []

# ---- monitor.loggers: checked on every rank; trackers get every row and are closed with the run's outcome


class FakeTracker:
    """Stands in for W&B / MLflow: records what RunLogger gives it."""

    made: ClassVar[list] = []

    def __init__(self, options, recipe, run_id):
        self.options, self.recipe, self.run_id, self.rows, self.status = options, recipe, run_id, [], None
        self.id = "run-1"
        FakeTracker.made.append(self)

    def log(self, step, metrics):
        if metrics.get("fail"):
            raise ConnectionError("tracking server unreachable")
        self.rows.append((step, metrics))

    def close(self, status):
        self.status = status


@pytest.fixture
def fake_tracker(monkeypatch):
    FakeTracker.made = []
    monkeypatch.setitem(trackers.TRACKERS, "mlflow", FakeTracker)
    monkeypatch.setattr(trackers, "check_installed", lambda specs: None)
    return FakeTracker.made


def with_loggers(loggers):
    return {**RECIPE, "monitor": {"loggers": loggers}}


def test_trackers_start_with_the_first_row_get_every_numeric_value_and_resume_their_run(tmp_path, fake_tracker):
    recipe = with_loggers([{"name": "mlflow", "experiment": "ssl"}])
    logger = RunLogger(tmp_path, recipe=recipe)
    assert fake_tracker == []  # nothing opened until something is logged
    logger.log(1, {"train/loss": 2.0, "epoch": 0, "note": "text"})
    logger.log(2, {"train/loss": 1.0, "epoch": 0})
    logger.close()
    (first,) = fake_tracker
    assert (first.options, first.recipe, first.run_id) == ({"experiment": "ssl"}, recipe, None)
    assert first.rows == [(1, {"train/loss": 2.0, "epoch": 0}), (2, {"train/loss": 1.0, "epoch": 0})]
    assert first.status == "FINISHED"
    assert json.loads((tmp_path / "trackers.json").read_text()) == {"mlflow": "run-1"}
    logger = RunLogger(tmp_path, resume_step=2, recipe=recipe)
    logger.log(3, {"train/loss": 0.5})
    logger.close()
    assert fake_tracker[1].run_id == "run-1"  # the resumed run continues the tracker's run


def test_trackers_are_closed_failed_or_killed_by_how_the_run_ends(tmp_path, fake_tracker):
    from ssl_platform.engine.preemption import RunInterrupted

    for error, status in ((RuntimeError("nan loss"), "FAILED"), (RunInterrupted(15, 2, tmp_path), "KILLED")):
        logger = RunLogger(tmp_path, recipe=with_loggers(["mlflow"]))
        logger.log(1, {"train/loss": 2.0})
        with pytest.raises(type(error)):
            try:
                raise error
            finally:
                logger.close()  # as the trainer does, in its finally
        assert fake_tracker[-1].status == status


def test_a_tracker_that_fails_to_log_is_dropped_and_the_run_goes_on(tmp_path, fake_tracker, capsys):
    logger = RunLogger(tmp_path, recipe=with_loggers(["mlflow"]))
    logger.log(1, {"fail": 1.0})
    logger.log(2, {"train/loss": 1.0})
    logger.close()
    assert fake_tracker[0].rows == [] and fake_tracker[0].status is None
    assert "FakeTracker failed to log step 1 (tracking server unreachable)" in capsys.readouterr().err
    assert rows(tmp_path / "metrics.jsonl") == [1, 2]


@pytest.mark.parametrize("loggers, message", [
    (["tensorboard"], r"unknown logger 'tensorboard'; choose from \['mlflow', 'wandb'\]"),
    ([{"project": "x"}], r"unknown logger None; choose from"),
    ([{"name": "wandb", "api_key": "k"}], r"wandb has no option 'api_key'; its options are \['entity', 'group'"),
    ([{"name": "wandb", "tags": "a"}], r"wandb option tags must be a list of strings, got 'a'"),
    ([{"name": "wandb", "mode": "offline2"}], r"wandb mode 'offline2' is not one of \['online', 'offline'"),
    (["wandb", {"name": "wandb"}], r"names 'wandb' twice"),
    ([{"name": "mlflow", "tracking_uri": "https://mlflow.example.org"}],
     r"tracking_uri 'https://mlflow.example.org' is not a local store.*set MLFLOW_TRACKING_URI"),
    ([{"name": "mlflow", "tracking_uri": "databricks"}], r"'databricks' is not a local store"),
    (5, r"monitor.loggers must be a list of tracker names or mappings, got 5"),
])
def test_bad_loggers_are_refused_naming_what_to_fix(tmp_path, loggers, message):
    with pytest.raises(ConfigError, match=message):
        RunLogger(tmp_path, recipe=with_loggers(loggers))


def test_a_missing_tracker_library_names_the_install_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"selects wandb, which is not installed: run `pip install "
                                          r"'ssl_platform\[tracking\]'`"):
        RunLogger(tmp_path, recipe=with_loggers("wandb"))
    assert trackers.parse_loggers(None) == [] and trackers.parse_loggers("wandb") == [("wandb", {})]
    for uri in ("file:/tmp/mlruns", "/tmp/mlruns", "./mlruns", "sqlite:///m.db"):  # local stores are accepted
        assert trackers.parse_loggers([{"name": "mlflow", "tracking_uri": uri}]) == [("mlflow", {"tracking_uri": uri})]
