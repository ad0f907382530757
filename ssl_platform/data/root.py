"""Where data lives: the data root (`$SSL_PLATFORM_DATA`, or `./data`) and the one rule for data paths.

`python -m ssl_platform data prepare NAME` writes `<data root>/<name>/` and every dataset that reads
prepared or downloaded files looks there unless given `root=`; both resolve it here, so the one
variable moves all of them.

The rule for a data path that a recipe or suite names (a dataset's `root`, a manifest, an
`image_root`, a CSV, a tokenizer file: the kwargs in `DATA_PATH_KEYS`):

- an absolute path (or one starting with `~`) is used as it is;
- a relative path is looked for in two places, in this order, and the first that exists is used:
  1. under the data root, with a leading `data/` dropped: `data/` is how the default data root
     `./data` is written from the repository root, so `data/emoji/wordpiece.json` and
     `emoji/wordpiece.json` both name `<data root>/emoji/wordpiece.json`;
  2. as written, relative to the working directory (what such a path always meant).

The data root comes first so that a dataset read from the data root and a file named beside it
(EmojiPairs and `data/emoji/wordpiece.json`) come from the same `data prepare`. With
`SSL_PLATFORM_DATA` unset both places are one for a `data/...` path, so shipped recipes and suites
work from the repository root; with it set, `data/...` follows the variable. When neither exists,
`not_found_message` names both places and the variable's value.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path, PurePath
from typing import Any

from ssl_platform import config

ENV_VAR = "SSL_PLATFORM_DATA"
# component kwargs that name data on disk: the datasets' `root` (a data root or a data set's own
# folder), manifests and their image folder, fMoW's CSV, `Table`'s file, and tokenizer files
DATA_PATH_KEYS = ("root", "manifest", "image_root", "csv", "path", "tokenizer")


def data_root() -> Path:
    """The data root: `$SSL_PLATFORM_DATA`, or `./data` relative to the working directory."""
    return Path(os.environ.get(ENV_VAR) or "data").expanduser()


def describe_data_root() -> str:
    """What `$SSL_PLATFORM_DATA` is set to, for messages that tell the user where files were looked for."""
    return os.environ.get(ENV_VAR, "unset, so ./data")


def data_path_candidates(path: str | PurePath) -> list[Path]:
    """Where the rule above looks for `path`, in order (one place for an absolute path; duplicates dropped)."""
    given = Path(path).expanduser()
    if given.is_absolute():
        return [given]
    parts = given.parts[1:] if given.parts[:1] == ("data",) else given.parts
    candidates = [data_root().joinpath(*parts), given]
    return [c for k, c in enumerate(candidates) if c not in candidates[:k]]


def find_data_path(path: str | PurePath) -> Path | None:
    """The first of `data_path_candidates(path)` that exists, else None."""
    return next((c for c in data_path_candidates(path) if c.exists()), None)


def _shown(candidate: Path) -> str:
    return str(candidate) if candidate.is_absolute() else f"./{candidate}"


def not_found_message(path: str | PurePath, remedy: str | None = None, prepared: Collection[str] = ()) -> str:
    """`path: not found as A nor as B (SSL_PLATFORM_DATA=...); what to do`.

    Args:
        path: the path as the recipe or suite writes it.
        remedy: what to do (default: `default_remedy`; for an absolute path: fix it).
        prepared: names of `sslp data prepare` (`data.prepare.NAMES`): when the path lies in the
            folder one of them writes, the remedy says to run it.
    """
    if Path(path).expanduser().is_absolute():
        return f"{path}: not found (an absolute path is used as it is); {remedy or 'fix the path'}"
    candidates = " nor as ".join(_shown(c) for c in data_path_candidates(path))
    return f"{path}: not found as {candidates} ({ENV_VAR}={describe_data_root()}); {remedy or default_remedy(path, prepared)}"


def default_remedy(path: str | PurePath, prepared: Collection[str] = ()) -> str:
    """For a relative `path`: run `data prepare NAME` when it lies in NAME's folder, else put the file
    there; or set the variable."""
    parts = data_path_candidates(path)[0].relative_to(data_root()).parts
    setting = f"or set {ENV_VAR} to the data root that holds it"
    if parts and parts[0] in prepared:
        return f"run `python -m ssl_platform data prepare {parts[0]}` (it writes <data root>/{parts[0]}/), {setting}"
    return (f"put it there, {setting} (a relative data path is looked for under the data root, then in the "
            "working directory), or give an absolute path")


def resolve_data_path(path: str | PurePath, remedy: str | None = None) -> Path:
    """The path the rule above finds for `path`.

    Raises:
        FileNotFoundError: it is in none of the places; the message names them (`not_found_message`).
    """
    found = find_data_path(path)
    if found is None:
        raise FileNotFoundError(not_found_message(path, remedy))
    return found


def resolve_root(root: str | PurePath | None) -> Path:
    """A dataset's `root=`: the data root when None, else `root` by the rule above.

    A relative `root` that exists nowhere stays as written (relative to the working directory), so a
    dataset that downloads creates it where the user said and its own message names that place.
    """
    if root is None:
        return data_root()
    found = find_data_path(root)
    return found if found is not None else Path(root).expanduser()


# ---- checks of a recipe's or suite's components, before any work


def _reads_data_root(component: str, prepared: Collection[str]) -> tuple[bool, str | None]:
    """Whether the callable has a `root` parameter (a node without `root` then reads the data root), and
    the `data prepare` name its docstring gives (`python -m ssl_platform data prepare NAME`), if any."""
    try:
        fn = config.locate(component)
        takes_root = "root" in inspect.signature(fn).parameters
    except (config.ConfigError, TypeError, ValueError):  # unknown names fail the recipe's own validation
        return False, None
    named = re.search(r"data prepare ([\w-]+)", inspect.getdoc(fn) or "")
    return takes_root, named.group(1) if named and named.group(1) in prepared else None


def _own_path_keys(component: str) -> tuple[str, ...]:
    """Kwargs a component names as data paths beyond `DATA_PATH_KEYS` (its `DATA_PATHS`, e.g. ShardDataset's
    `source`, a name other components use for things that are not paths)."""
    try:
        return tuple(getattr(config.locate(component), "DATA_PATHS", ()))
    except config.ConfigError:  # unknown names fail the recipe's own validation
        return ()


def data_problems(nodes: Mapping[str, Any], prepared: Collection[str] = (),
                  will_exist: Collection[str] = ()) -> list[str]:
    """What is missing on disk for the `_component_` nodes of a recipe or suite (plain values).

    Every string kwarg in `DATA_PATH_KEYS` must resolve by the rule above, except a `root` of a node
    with `download: true` and the paths in `will_exist` (e.g. a tokenizer the method trains); a path
    missing under several keys is one problem naming them all. A node that reads the data root
    without saying so (a `root` parameter left unset) needs `$SSL_PLATFORM_DATA`, when set, to be a
    directory.

    Args:
        nodes: `{key in the recipe or suite: node}`, e.g. `{"data.dataset": {...}}`; nodes that are
            not components are skipped.
        prepared: names of `sslp data prepare` (`data.prepare.NAMES`), for the remedy.
        will_exist: paths (as written) that something earlier in the run creates.

    Returns:
        One message per problem: the keys, the path, where it was looked for, what to do.
    """
    missing: dict[str, list[str]] = {}  # path -> the keys that name it
    unrooted: dict[str | None, list[str]] = {}  # prepare name (None: unknown) -> the nodes that read the data root
    for where, node in nodes.items():
        if not isinstance(node, Mapping) or config.COMPONENT not in node:
            continue
        for key in DATA_PATH_KEYS + _own_path_keys(str(node[config.COMPONENT])):
            value = node.get(key)
            if not isinstance(value, str) or value in will_exist or (key == "root" and node.get("download") is True):
                continue
            if "://" in value:  # a URL (ShardDataset's s3:// or https:// source): not a path on this disk
                continue
            if find_data_path(value) is None:
                missing.setdefault(value, []).append(f"{where}.{key}")
        takes_root, name = _reads_data_root(str(node[config.COMPONENT]), prepared)
        if node.get("root") is None and takes_root:
            unrooted.setdefault(name, []).append(f"{where} ({str(node[config.COMPONENT]).rsplit('.', 1)[-1]})")
    problems = [f"{', '.join(keys)}={not_found_message(path, prepared=prepared)}" for path, keys in missing.items()]
    env = os.environ.get(ENV_VAR)
    for name, nodes_here in unrooted.items() if env and not data_root().is_dir() else ():
        prepare = f"run `python -m ssl_platform data prepare {name}` (it creates the data root), " if name else ""
        problems.append(f"{', '.join(nodes_here)} read files from the data root, and {ENV_VAR}={env} is not a "
                        f"directory; {prepare}set {ENV_VAR} to the folder that holds the prepared data sets, unset "
                        "it (default ./data), or give a root")
    return problems
