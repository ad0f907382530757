"""Checkpoint files: strict loads with errors that say what to do, backbone export, and the atomic writes
(`checkpoint.atomic`) and `CheckpointError` (`checkpoint.errors`), re-exported here from their torch-free modules.

`last.pt` holds the full train state (method, optimizer, scaler, step, data position, RNG states
and the resolved recipe); `backbone.safetensors` holds the backbone alone plus, in its metadata,
the kwargs that rebuild the architecture, so the file by itself loads into the plain timm model.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from ssl_platform import config

# re-exported, so every existing import of them from here keeps working; they live in torch-free modules
# so that the zoo's index and the evaluation reports can use them without importing torch
from ssl_platform.checkpoint.atomic import ATOMIC_TEMP, copy_atomic, write_atomic  # noqa: F401
from ssl_platform.checkpoint.errors import CheckpointError
from ssl_platform.models.backbones import from_spec, spec

FORMAT = "ssl_platform.checkpoint/1"


# The only non-tensor globals a train state holds: numpy's RNG state is a tuple with a uint32 key
# array. Under weights_only these rebuild plain arrays and dtypes and can call nothing else.
_NUMPY_RNG_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically `torch.save` a train-state dict (tagged with the format version)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    write_atomic(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a train-state dict written by `save_checkpoint`, on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # weights_only: a checkpoint may come from someone else's run directory, and a full unpickler
        # would run any code it names; tensors, containers, numbers, strings and numpy's RNG arrays
        # are all a train state holds
        with torch.serialization.safe_globals(_NUMPY_RNG_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err) and "global" not in str(err).lower():
            raise CheckpointError(f"checkpoint {path} is unreadable ({err}); delete it to start over, or point "
                                  "train.resume at another checkpoint.") from err
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        raise CheckpointError(
            f"checkpoint {path} holds Python objects other than tensors, numbers, strings and containers "
            f"({named.group(1) if named else 'an unsupported global'}); loading it could run code, so it is "
            "refused. A checkpoint "
            "written by ssl_platform never holds them: the file was made elsewhere or tampered with."
        ) from None
    # a cut inside the tensor data surfaces as OSError from torch's zip reader; bytes that are no
    # checkpoint at all make the restricted unpickler fail in any of its ways (IndexError, KeyError...)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({err}); it is not a file this program wrote completely. "
            "Delete it to start over, or point train.resume at another checkpoint."
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ssl_platform train-state checkpoint (format {FORMAT})")
    return state


def load_run_method(run_dir: str | Path, random_init: bool = False, seed: int = 0) -> nn.Module:
    """A pretraining run's whole method (decoders, heads, fusion: what `backbone.safetensors` leaves
    out), built from the run's `config.yaml` with the weights of `checkpoints/last.pt`, in eval mode.

    `random_init=True` builds the same architecture at a random init drawn with `seed` (the baseline
    a pretrained number is compared with) and reads no checkpoint.
    """
    # config.instantiate resolves the run's `_component_`s under the same trust rules as a recipe
    run_dir = Path(run_dir)
    recipe = run_dir / "config.yaml"
    if not recipe.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.yaml; give the directory of a pretraining run")
    torch.manual_seed(seed)
    method = config.instantiate(OmegaConf.load(recipe).method)
    if not random_init:
        last = run_dir / "checkpoints" / "last.pt"
        load_state_strict(method, load_checkpoint(last)["method"], str(last))
    return method.eval()


def load_state_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """`module.load_state_dict(state_dict)` that explains a mismatch instead of a raw key dump.

    The keys are compared after torch's load, not before: a module may adopt parts an older checkpoint
    of it carries in its `_load_from_state_dict` (the GAT builds the residual maps of files written
    when residual was always on, `models/graph.py`), and only the result of the load says what is
    still missing. When shapes differ nothing is loaded and the message names every kind.

    Raises:
        CheckpointError: keys missing or unexpected, or shapes differ; names a few of each.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)
    ]
    if not shapes:  # what torch's load (and the modules' own adoption of old keys) leaves unmatched
        result = module.load_state_dict(state_dict, strict=False)
        missing, unexpected = sorted(result.missing_keys), sorted(result.unexpected_keys)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} with another shape (e.g. {shapes[:2]})")
        raise CheckpointError(
            f"{source} does not match this {type(module).__name__}: " + "; ".join(parts)
            + ". It was written for another model or recipe: use the matching recipe, or another out_dir."
        )


def export_backbone(backbone: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write the backbone's weights as safetensors, with its architecture spec in the metadata.

    Metadata values must be strings in safetensors; everything is JSON-encoded under fixed keys.
    """
    fixed = {
        "format": "ssl_platform.backbone/1",
        "backbone": json.dumps(spec(backbone)),
        "num_features": str(getattr(backbone, "num_features", "")),
    }
    clash = sorted(set(fixed) & set(metadata or {}))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved for the architecture record; rename them")
    meta = {**{k: json.dumps(v) for k, v in (metadata or {}).items()}, **fixed}
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    write_atomic(path, save(tensors, metadata=meta))


def read_backbone_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata `export_backbone` wrote, JSON-decoded."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from err
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def backbone_file(path: str | Path) -> Path:
    """A run directory (its `backbone.safetensors`) or a backbone file -> the file's path."""
    path = Path(path)
    if path.is_dir():
        file = path / "backbone.safetensors"
        if not file.exists():
            raise CheckpointError(f"{path} has no backbone.safetensors; has its pretraining run finished?")
        return file
    if not path.is_file():
        raise CheckpointError(f"backbone file {path} does not exist; give a run directory or a .safetensors file")
    return path


def load_backbone(path: str | Path) -> nn.Module:
    """Rebuild the backbone from a run directory or a `backbone.safetensors` file alone and load its
    weights strictly."""
    path = backbone_file(path)
    meta = read_backbone_metadata(path)
    if not meta.get("backbone"):
        raise CheckpointError(
            f"{path} has no ssl_platform architecture metadata; build the model yourself and load the "
            "tensors with safetensors.torch.load_file"
        )
    backbone = from_spec(meta["backbone"])
    load_state_strict(backbone, load_file(str(path)), str(path))
    return backbone
