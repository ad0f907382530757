"""Experiment trackers a recipe may also send its metrics to: Weights & Biases and MLflow.

    monitor:
      loggers: [wandb, mlflow]          # names, each with its library's defaults, or mappings:
      loggers:
        - {name: wandb, project: ssl, mode: offline}        # + entity, name, group, tags, notes
        - {name: mlflow, tracking_uri: "file:/data/mlruns", experiment: ssl}   # + run_name

Options left out take the libraries' environment variables (WANDB_PROJECT, WANDB_MODE, ...,
MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME) or their defaults.

Off by default. `engine.logging.RunLogger` opens the selected trackers with its first row (rank 0
only), gives them the recipe (W&B: the config; MLflow: the flattened recipe as params and the whole
of it as the artifact `recipe.yaml`), sends them every row it logs, and closes them with the run:
marked failed when the run ends with an error, killed when it was interrupted. The libraries are
imported only when selected.

Credentials come from each library's own environment (`WANDB_API_KEY` or `wandb login`;
`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` / `MLFLOW_TRACKING_TOKEN`), never from the
recipe, and so does the server they go to (`WANDB_BASE_URL`, `MLFLOW_TRACKING_URI`): a recipe is
shared with others and saved in the run directory, so its `tracking_uri` may only name a local
store (`/path`, `./path`, `file:`, `sqlite:`); W&B takes no host from it at all. The run directory keeps only the trackers' run ids (`trackers.json`), so that a resumed run
continues the same tracker run. Unlike metrics.jsonl and TensorBoard, a tracker cannot take back the
rows past the resume step that a dead run logged: W&B ignores a step it has seen, MLflow keeps both.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssl_platform.checkpoint.io import write_atomic
from ssl_platform.config import ConfigError

INSTALL = "pip install 'ssl_platform[tracking]'"
IDS_FILE = "trackers.json"  # tracker name -> the id of its run, so that a resume continues it
# each tracker's recipe options and their types; `name` selects the tracker
OPTIONS: dict[str, dict[str, type]] = {
    "wandb": {"project": str, "entity": str, "name": str, "group": str, "notes": str, "tags": list, "mode": str},
    "mlflow": {"tracking_uri": str, "experiment": str, "run_name": str},
}
WANDB_MODES = ("online", "offline", "disabled", "shared")
LOCAL_STORES = ("file", "sqlite")  # the tracking URIs a recipe may name: these, or a path (/..., ./...)
MLFLOW_PARAM_LIMIT = 6000  # MLflow refuses a longer param value; the whole recipe is in recipe.yaml


def parse_loggers(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """`monitor.loggers` -> `[(name, options)]`, every name and option checked.

    Args:
        spec: None (no tracker), or a list of names (`"wandb"`, `"mlflow"`) and mappings
            `{name: ..., <option>: ...}`; a single name or mapping is read as a list of one.
    """
    if spec is None:
        return []
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    items = [spec] if isinstance(spec, (str, Mapping)) else spec
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"monitor.loggers must be a list of tracker names or mappings, got {spec!r}; "
                          "e.g. monitor.loggers=[wandb] or [{name: mlflow, experiment: ssl}]")
    parsed, seen = [], set()
    for item in items:
        options = dict(item) if isinstance(item, Mapping) else {"name": item}
        name = options.pop("name", None)
        if name not in OPTIONS:
            raise ConfigError(f"monitor.loggers: unknown logger {name!r}; choose from {sorted(OPTIONS)} "
                              "(a mapping names its logger with `name:`)")
        if name in seen:
            raise ConfigError(f"monitor.loggers names {name!r} twice; give each logger once")
        seen.add(name)
        for key, value in options.items():
            want = OPTIONS[name].get(key)
            if want is None:
                raise ConfigError(f"monitor.loggers: {name} has no option {key!r}; its options are "
                                  f"{sorted(OPTIONS[name])}")
            if not isinstance(value, want) or (want is list and not all(isinstance(v, str) for v in value)):
                kind = "a list of strings" if want is list else "a string"
                raise ConfigError(f"monitor.loggers: {name} option {key} must be {kind}, got {value!r}")
        if name == "wandb" and options.get("mode", "online") not in WANDB_MODES:
            raise ConfigError(f"monitor.loggers: wandb mode {options['mode']!r} is not one of {list(WANDB_MODES)}")
        if name == "mlflow" and "tracking_uri" in options:
            _refuse_a_server(options["tracking_uri"])
        parsed.append((name, options))
    return parsed


def _refuse_a_server(uri: str) -> None:
    """A recipe may name a local MLflow store only: with a server it would choose where the user's
    MLflow credentials (from the environment) are sent."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if not (scheme in LOCAL_STORES or not scheme and uri.startswith(("/", "./", "../"))):
        raise ConfigError(f"monitor.loggers: the mlflow tracking_uri {uri!r} is not a local store, and a recipe "
                          "(shared with others) must not choose where your MLflow credentials go: set "
                          "MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
                          "MLFLOW_TRACKING_TOKEN) in your environment and leave tracking_uri out, or give a local "
                          "store (file:/path/to/mlruns, /path/to/mlruns, ./mlruns, sqlite:///path/to/mlflow.db)")


def check_installed(specs: list[tuple[str, dict]]) -> None:
    """Fail now, naming the install command, when a selected tracker's library is missing
    (looked up without importing it, so every rank can afford the check)."""
    for name, _ in specs:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"monitor.loggers selects {name}, which is not installed: run `{INSTALL}` "
                              f"(or remove {name} from monitor.loggers)")


def flatten(recipe: Mapping, prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested recipe -> `{"train.lr": 0.1, ...}`, the keys as overrides write them; a value that is
    not a bool, number or string (a list, null) becomes its JSON text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"monitor.loggers selects {name}, which does not import ({err}): run `{INSTALL}`") from err


class WandbTracker:
    """One W&B run: the recipe as its config, rows logged at their step."""

    def __init__(self, options: dict[str, Any], recipe: dict, run_id: str | None):
        wandb = _import("wandb")
        # a resumed run continues its W&B run; the settings a resume may change update its config
        self.run = wandb.init(config=recipe if run_id is None else None, id=run_id,
                              resume="allow" if run_id else None, **options)
        if run_id is not None:
            self.run.config.update(recipe, allow_val_change=True)
        self.id = self.run.id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


class MlflowTracker:
    """One MLflow run, through its client (no process-wide active run): params, `recipe.yaml`, metrics."""

    def __init__(self, options: dict[str, Any], recipe: dict, run_id: str | None):
        tracking = _import("mlflow.tracking")
        entities = _import("mlflow.entities")
        self._metric, self._error = entities.Metric, _import("mlflow.exceptions").MlflowException
        self.client = tracking.MlflowClient(tracking_uri=options.get("tracking_uri"))
        run = self._existing(run_id)
        if run is None:
            experiment = options.get("experiment") or os.environ.get("MLFLOW_EXPERIMENT_NAME", "Default")
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run = self.client.create_run(experiment_id, run_name=options.get("run_name"))
        self.id = run.info.run_id
        # a param cannot change: a resumed run adds only those it lacks (recipe.yaml has the whole recipe)
        params = [entities.Param(key, str(value)[:MLFLOW_PARAM_LIMIT]) for key, value in flatten(recipe).items()
                  if key not in run.data.params]
        self.client.log_batch(self.id, params=params)
        self.client.log_text(self.id, OmegaConf.to_yaml(OmegaConf.create(recipe)), "recipe.yaml")

    def _existing(self, run_id: str | None) -> Any:
        if run_id is None:
            return None
        try:
            return self.client.get_run(run_id)
        except self._error:  # not in this store (its tracking_uri changed on resume): a new run
            print(f"[ssl_platform] mlflow run {run_id} of the resumed run is not in this tracking store; "
                  "starting a new one", flush=True)
            return None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[self._metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.id, status)


TRACKERS = {"wandb": WandbTracker, "mlflow": MlflowTracker}


def open_trackers(specs: list[tuple[str, dict]], recipe: dict, out_dir: Path, resume: bool) -> list[Any]:
    """Start (or, when `resume`, continue) each tracker's run and record the run ids in `out_dir`.

    Returns:
        The trackers, each with `log(step, metrics)` and `close(status)`, status one of MLflow's
        `FINISHED`, `FAILED`, `KILLED`.
    """
    if not specs:
        return []
    path = Path(out_dir) / IDS_FILE
    ids = _read_ids(path) if resume else {}
    opened = []
    try:
        for name, options in specs:
            opened.append(TRACKERS[name](options, recipe, ids.get(name)))
    except BaseException:
        for tracker in opened:
            tracker.close("FAILED")
        raise
    new_ids = {name: tracker.id for (name, _), tracker in zip(specs, opened)}
    if new_ids != ids:
        write_atomic(path, (json.dumps(new_ids, indent=1) + "\n").encode())
    return opened


def _read_ids(path: Path) -> dict[str, str]:
    """The run ids of the run being resumed; anything unreadable means "start new runs"."""
    try:
        ids = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in ids.items() if k in TRACKERS and isinstance(v, str)} if isinstance(ids, dict) else {}
