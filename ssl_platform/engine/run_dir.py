"""What a run does to its directory: owns it, cleans it, resumes from it and writes its files.

A run owns its directory: rank 0 holds `hold_run_lock` on it throughout (`own_run_dir`) and removes
the temp files of saves that were killed mid-write. The directory holds `config.yaml` (the resolved
recipe), `checkpoints/last.pt` (written atomically by `save_last`; a full disk keeps the previous
one) and `backbone.safetensors` (the export). A run started again resumes from `last.pt` only if
its recipe differs in nothing but `RESUME_MAY_CHANGE`, and a finished run started again changes no
file: config.yaml and the export are written only when their contents change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from ssl_platform import distributed
from ssl_platform.checkpoint.io import (
    ATOMIC_TEMP,
    CheckpointError,
    export_backbone,
    load_checkpoint,
    read_backbone_metadata,
    save_checkpoint,
    write_atomic,
)
from ssl_platform.checkpoint.run_lock import RunLockedError, hold_run_lock
from ssl_platform.provenance import git_sha

# the resize of the evaluation transforms (data.transforms.EvalTransform: torchvision's Resize default;
# ResizeBands): exported so a zoo entry's timm pretrained_cfg preprocesses as the evaluation did
EVAL_INTERPOLATION = "bilinear"

# recipe keys that may change between a run and its resumption: they do not change the result
# (how often a run saves or logs, or how long a collective may wait, leaves the weights alone)
# (data.on_bad_sample: after a run stopped at a bad file, resuming it with `skip` is the fix; the
# samples it trained on before are the same either way)
RESUME_MAY_CHANGE = ("train.max_steps", "train.resume", "train.save_every_steps", "train.save_every_minutes",
                     "train.log_every_steps", "train.log_samples", "train.collective_timeout_minutes", "data.on_bad_sample",
                     "monitor.loggers",  # where metrics are also sent: not a setting of the run
                     "source.", "paper.")  # where the settings come from: documentation, not settings


@contextlib.contextmanager
def own_run_dir(out_dir: Path, what: str = "training run") -> Iterator[None]:
    """Rank 0 holds the run lock for the whole run and removes the leftovers of killed saves; every
    rank raises when it could not (they would otherwise wait for rank 0 in their first collective)."""
    with contextlib.ExitStack() as held:
        refused = None
        if distributed.is_main():
            try:
                held.enter_context(hold_run_lock(out_dir, what))
            except RunLockedError as err:
                refused = str(err)
            else:
                _remove_leftovers(out_dir)
        refused = distributed.broadcast_object(refused)
        if refused is not None:
            raise RunLockedError(refused)
        yield


def _remove_leftovers(out_dir: Path) -> None:
    """Delete the temp files of saves killed mid-write; the files they were to replace are intact."""
    for folder in (out_dir, out_dir / "checkpoints"):
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if ATOMIC_TEMP.fullmatch(path.name) and path.is_file():
                path.unlink()
                print(f"[ssl_platform] removed {path}, the temp file of a save that was interrupted", flush=True)


def start_run_dir(out_dir: Path, recipe: dict | None) -> None:
    """Create `out_dir` and write the resolved recipe to its config.yaml (rank 0 only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if recipe is None:
        return
    path, data = out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(recipe)).encode()
    # the same command run again leaves the file as it was, modification time included
    if not (path.is_file() and path.read_bytes() == data):
        write_atomic(path, data)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


# keys added to the recipe after runs were written, with the value that does what those runs did: a
# checkpoint without the key resumes under a recipe that has this value
ADDED_SINCE = {"data.views_on": "workers"}

# how the global batch is split: these may change on resume when the global batch they make (with the
# number of processes) stays the same, which `resume_position` checks
LAYOUT_KEYS = ("data.batch_size", "train.accum_steps")

# the checkpoint's `sample_order`: "global" (ResumableSampler's global micro-batches), or, for checkpoints
# written before it, "strided" (DistributedSampler's every-world-th sample, which depends on the world size)
SAMPLE_ORDERS = ("global", "strided")


def recipe_differences(saved: dict, current: dict) -> list[str]:
    """`key: saved -> current` for every recipe key that differs, except those resumption may change
    and the batch layout (`LAYOUT_KEYS`, checked by `resume_position`)."""
    a, b = {**ADDED_SINCE, **_flatten(saved)}, {**ADDED_SINCE, **_flatten(current)}
    may_change = RESUME_MAY_CHANGE + LAYOUT_KEYS
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(may_change))
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys]


def load_resume_state(out_dir: Path, resume: str, recipe: dict | None) -> dict | None:
    """The train state to resume from, or None to start afresh.

    Args:
        out_dir: the run directory.
        resume: `train.resume`: auto (`<out_dir>/checkpoints/last.pt` if present), never, or a path.
        recipe: the resolved recipe, compared with the one the checkpoint was written by.

    Raises:
        FileExistsError: resume is never and out_dir already holds a checkpoint.
        ValueError: the recipe changed in a key outside `RESUME_MAY_CHANGE` and `LAYOUT_KEYS` (it would
            make the resumed run differ from one never stopped; `resume_position` checks the layout).
    """
    last = out_dir / "checkpoints" / "last.pt"
    if resume == "never":
        if last.exists():
            raise FileExistsError(
                f"{last} exists and train.resume=never; choose another train.out_dir or delete {out_dir}"
            )
        return None
    path = last if resume == "auto" else Path(resume)
    if resume == "auto" and not path.exists():
        return None
    state = load_checkpoint(path)
    if recipe is not None and state.get("recipe") is not None:
        diff = recipe_differences(state["recipe"], recipe)
        if diff:
            raise ValueError(
                f"cannot resume {path}: the recipe changed since it was written ({'; '.join(diff)}). "
                f"Only {', '.join(RESUME_MAY_CHANGE)} may change; use another train.out_dir for a new run."
            )
    return state


def resume_position(state: dict, path: Path, batch_size: int, accum_steps: int, world: int,
                    fixed_micro_batch: bool = False) -> tuple[int, str]:
    """Where this run's layout continues the checkpoint's epoch: `(micro_in_epoch, sample_order)`.

    A run may resume on another number of processes (elastic resumption) when its global batch
    (batch_size x processes x accum_steps) is the checkpoint's: the sample order depends on the
    global batch alone (`ResumableSampler`), and a checkpoint sits on an optimizer-step boundary, so
    the samples done so far map onto whole micro-steps of the new layout.

    Args:
        state: the checkpoint's train state.
        path: the checkpoint (for messages).
        batch_size, accum_steps, world: this run's layout.
        fixed_micro_batch: the method's own batch sampler fixes the global micro-batch (batch_size x
            processes; G-SimCLR's distinct-label batches), so only that split may change.

    Raises:
        ValueError: the layout change would change the order, saying which keys to set instead.
    """
    old_world = state["world_size"]
    old_data = (state.get("recipe") or {}).get("data", {})
    old_train = (state.get("recipe") or {}).get("train", {})
    layout = state.get("layout") or {"batch_size": old_data.get("batch_size", batch_size),
                                     "accum_steps": old_train.get("accum_steps", accum_steps)}
    old_b, old_accum = layout["batch_size"], layout["accum_steps"]
    order = state.get("sample_order", "strided")
    old, new = (old_b, old_world, old_accum), (batch_size, world, accum_steps)
    if old == new:
        return state["micro_in_epoch"], order
    if order == "strided":
        raise ValueError(
            f"{path} was written before runs could change their layout (data.batch_size {old_b} x {old_world} "
            f"processes x train.accum_steps {old_accum}; this run: {batch_size} x {world} x {accum_steps}): its "
            "sample order depends on the number of processes. Resume it with that layout, or start a new out_dir."
        )
    old_global, new_global = old_b * old_world * old_accum, batch_size * world * accum_steps
    split = f"data.batch_size {old_b} x {old_world} processes x train.accum_steps {old_accum}"
    if fixed_micro_batch and old_b * old_world != batch_size * world:
        per_process = old_b * old_world / world
        raise ValueError(
            f"cannot resume {path} with data.batch_size {batch_size} x {world} processes: this method's batch "
            f"sampler builds each global micro-batch of {old_b * old_world} ({split}) as a whole, so that product "
            f"must stay; set data.batch_size={per_process:g}" + ("" if per_process.is_integer() else
                                                                " (not a whole number: use another process count)"))
    if old_global != new_global:
        need = old_global / (world * accum_steps)
        hint = (f"set data.batch_size={need:g}" if need.is_integer() else
                f"choose data.batch_size and train.accum_steps with batch_size x {world} x accum_steps = {old_global}")
        raise ValueError(
            f"cannot resume {path} with global batch {new_global} (data.batch_size {batch_size} x {world} processes "
            f"x train.accum_steps {accum_steps}): it was written with {old_global} ({split}), and the global batch "
            f"fixes the sample order and the lr schedule; {hint}, or start a new out_dir"
        )
    done = state["micro_in_epoch"] * old_b * old_world  # samples of this epoch already trained on
    return done // (batch_size * world), order


def save_last(out_dir: Path, state: dict[str, Any], saved_step: int) -> None:
    """Write the train state of step `state["step"]` to `<out_dir>/checkpoints/last.pt` (rank 0 only).

    Raises:
        CheckpointError: the write failed (a full disk, a quota); `last.pt` still holds `saved_step`.
    """
    path = out_dir / "checkpoints" / "last.pt"
    try:
        save_checkpoint(path, state)
    except OSError as err:  # write_atomic removed its temp file; the previous last.pt is untouched
        kept = f"the checkpoint of step {saved_step} is kept" if path.exists() else "no checkpoint was kept"
        raise CheckpointError(
            f"could not save {path} at step {state['step']}: {err.strerror or err}; {kept}. Free space on that "
            "disk (or lift the quota or file-size limit, or set train.out_dir elsewhere), then run the same "
            "command again to resume."
        ) from err


def export_once(backbone: nn.Module, out_dir: Path, step: int, epoch: int, recipe: dict | None, *,
                trained: bool, steps_per_epoch: int | None = None) -> None:
    """Export `backbone` to `<out_dir>/backbone.safetensors` (rank 0 only), unless no step was
    `trained` by this call and the file already holds the export of `step`.

    The file's metadata records `epoch`: with `steps_per_epoch`, the epochs trained as a fraction
    (`step / steps_per_epoch`, e.g. 1.5 for a run stopped half-way through its second epoch), else the
    completed epochs `epoch`; also `step`, `steps_per_epoch`, the recipe's name, the git sha and the
    evaluation transform's `interpolation` (`EVAL_INTERPOLATION`).

    Raises:
        CheckpointError: the write failed; the checkpoint of `step` is intact.
    """
    path = out_dir / "backbone.safetensors"
    # a finished run started again (no step trained here) keeps its export untouched: its sha256
    # identifies it (e.g. to G-SimCLR's pseudo-labels), and its git_sha is the code that trained it
    if trained or not _exported_at(path, step):
        _export(backbone, path, step, fractional_epochs(step, steps_per_epoch) if steps_per_epoch else epoch,
                recipe, steps_per_epoch)


def fractional_epochs(step: int, steps_per_epoch: int) -> float:
    """Epochs trained after `step` steps: whole as an int (2), else rounded to 4 decimals (1.5, 0.2132)."""
    epochs = round(step / steps_per_epoch, 4)
    return int(epochs) if epochs == int(epochs) else epochs


def _exported_at(path: Path, step: int) -> bool:
    """Whether `path` already holds the backbone export of `step` (a finished run started again)."""
    try:
        return path.is_file() and read_backbone_metadata(path).get("step") == step
    except CheckpointError:  # unreadable: export again
        return False


def _export(backbone: nn.Module, path: Path, step: int, epoch: float, recipe: dict | None,
            steps_per_epoch: int | None) -> None:
    meta = {"step": step, "epoch": epoch, "recipe_name": (recipe or {}).get("name"),
            "git_sha": git_sha(),  # the code that trained it, for the zoo card
            "interpolation": EVAL_INTERPOLATION}
    if steps_per_epoch:
        meta["steps_per_epoch"] = steps_per_epoch
    try:
        export_backbone(backbone, path, meta)
    except OSError as err:  # write_atomic removed its temp file
        raise CheckpointError(
            f"could not export {path} at step {step}: {err.strerror or err}; the checkpoint of that step is "
            "intact. Free space on that disk, then run the same command again: it exports without training."
        ) from err
