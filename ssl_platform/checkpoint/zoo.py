"""The model zoo: published backbones by name (timm's `arch.tag`), verified by sha256 before every load.

A zoo is a local directory or an http(s) base URL with this layout:

    index.json                               {"format": "ssl_platform.zoo/1", "models": {name: entry}}
    <name>-<sha256[:8]>.safetensors          a run's backbone.safetensors, byte for byte
    cards/<name>/README.md, cards/<name>/plots/...     the model card and its evaluation plots

An entry (`ZooEntry`) records the method, the timm architecture and the kwargs that rebuild it, the
input it expects, the file's full sha256 and size, the recipe, the git sha, the license and the
evaluation results of the run. It may name a `url` for the weights, so index.json and the cards can
live in the repository while weights of more than a few MB live on a release server.

Where the zoo is: the first of
  1. the `zoo=` argument (`--zoo DIR_OR_URL` on the command line);
  2. the environment variable SSL_PLATFORM_ZOO;
  3. the checkout's own `zoo/` directory (repository root, beside pyproject.toml), when it holds an
     index.json: a fresh clone lists the shipped entries, and `sslp zoo publish` adds to them;
  4. `<cache>/zoo`, a zoo of your own, for an installed package without a checkout.
`<cache>` is `$XDG_CACHE_HOME/ssl_platform` (default `~/.cache/ssl_platform`). Downloaded weights,
from an http zoo or an entry's `url`, go to `<cache>/files/` and are reused while their hash holds;
an http zoo's index.json is copied to `<cache>/indexes/` so that pulled models load offline.

Integrity: the full sha256 is recomputed before every load. A cached download that fails is deleted
and fetched again; a download that fails is deleted and refused (`IntegrityError`); a file of a
local zoo is never deleted: the error names it and says how to restore it.

Trust: the zoo you name (`--zoo`, even a `file://` URL) is your choice, but what its index.json says is
not trusted: anyone may have written it. `ZooEntry.check` refuses, when the index is read, any entry whose
`file` is not `<name>-<sha256[:8]>.safetensors`, whose `card` is not `cards/<name>/README.md`, whose `url`
is not http(s) (a relative one is resolved against an http zoo; a local zoo has nothing to resolve it
against), whose architecture names a timm source (`hf-hub:`, `local-dir:`) or whose kwargs would make
timm load a file. Before a path is used, `contained` resolves its symbolic links and refuses one that
leads out of the zoo or the cache. Downloads are http(s) only and capped at the entry's `size_bytes`, a
remote index at `MAX_INDEX_BYTES` (`checkpoint.download`). Whatever the zoo writes lands atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from torch import nn

from ssl_platform.checkpoint import io
from ssl_platform.checkpoint.download import (
    CHUNK_BYTES,
    HTTP_SCHEMES,
    DownloadError,
    IntegrityError,
    fetch_verified,
    read_limited,
)
from ssl_platform.checkpoint.io import CheckpointError
from ssl_platform.evaluation.report import file_sha256
from ssl_platform.models.backbones import check_timm_kwargs

FORMAT = "ssl_platform.zoo/1"
INDEX_FILE = "index.json"
ENV_ZOO = "SSL_PLATFORM_ZOO"
NAME = re.compile(r"[a-z0-9][a-z0-9_]*\.[a-z0-9][a-z0-9_]*")  # no "-": it separates the sha256 prefix
SHA256 = re.compile(r"[0-9a-f]{64}")
# a timm model name; no ":", because timm reads `hf-hub:repo` from the network and `local-dir:path` from disk
ARCHITECTURE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
CARDS_DIR = "cards"
MAX_INDEX_BYTES = 16 * 2**20  # an index of hundreds of models is well under 1 MiB; more is a wrong URL or hostile
REPO_ROOT = Path(__file__).resolve().parents[2]
# metrics `zoo list` and docs/zoo.md show (ZooEntry.headline); bookkeeping rows such as "lambda" are left out
HEADLINE_METRICS = ("top1", "map", "r2", "rmse")


class ZooError(CheckpointError):
    """A zoo or an entry cannot be used; the message says which and what to do."""


def _fix(name: str = "NAME") -> str:
    """What to do about a refused index.json."""
    return (f"Fix index.json, or re-publish the run (`sslp zoo publish RUN_DIR --name {name} --force`); "
            "use only zoos whose maintainers you trust")


def weights_file_name(name: str, sha256: str) -> str:
    """The name a zoo gives a weights file, beside index.json and in the download cache."""
    return f"{name}-{sha256[:8]}.safetensors"


def card_path(name: str) -> str:
    """Where a zoo keeps the model card of `name`, relative to the zoo."""
    return f"{CARDS_DIR}/{name}/README.md"


def _path_problem(value: Any) -> str:
    """Why `value` could name a file outside the directory it is joined to, or "" (see `ZooEntry.check`)."""
    if not isinstance(value, str):
        return "it is not a string"
    if "\\" in value or "\x00" in value:
        return "it holds a backslash or NUL character"
    if value.startswith("/"):
        return "it is an absolute path"
    if ".." in value.split("/"):
        return "it climbs out of its directory with '..'"
    return ""


def _url_problem(url: Any) -> str:
    """Why an index's `url` must not be fetched, or "" (relative URLs are fine: see `_weights_url`)."""
    if not isinstance(url, str) or not url:
        return "it is not a URL"
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "it holds spaces or control characters"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.scheme.lower() not in HTTP_SCHEMES:
        return (f"only http:// and https:// URLs are downloaded, not {parts.scheme}: (which would read a local "
                "file, inline data or another service)")
    if parts.scheme and not parts.netloc:
        return "it names no host"
    return ""


@dataclasses.dataclass
class ZooEntry:
    """One published backbone, as stored in index.json (`to_dict`/`from_dict`)."""

    name: str                      # arch.tag, e.g. simclr_resnet18.fmnist_200ep
    method: str                    # the METHODS key, e.g. simclr
    architecture: str              # timm model name
    arch_kwargs: dict[str, Any]    # create_backbone kwargs besides the name (small_input, in_chans, ...)
    in_chans: int
    num_features: int
    file: str                      # <name>-<sha256[:8]>.safetensors
    sha256: str
    size_bytes: int
    input_size: list[int] | None = None    # [C, H, W] the backbone was pretrained at (None: not an image)
    mean: list[float] | None = None
    std: list[float] | None = None
    url: str | None = None                 # where the weights live if not beside index.json
    timm_kwargs: dict[str, Any] | None = None   # plain timm.create_model kwargs; None: timm cannot build it
    timm_note: str = ""                    # why timm cannot, or what to import first
    pretrain_data: str = ""
    epochs: int | None = None
    steps: int | None = None
    recipe_name: str = ""
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    git_sha: str = "unknown"
    created: str = ""
    license: str = ""
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    card: str | None = None                # path of the model card, relative to the zoo
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # keys of newer versions, kept as they are

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {**out.pop("extra"), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ZooEntry:
        """The entry `data` of the index `where`, refused (`ZooError`) unless it passes `check`."""
        if not isinstance(data, dict):
            raise ZooError(f"an entry in {where} is not a JSON object but {data!r:.80}. {_fix()}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise ZooError(f"entry {data.get('name', '?')!r} in {where} lacks {missing}; re-publish it with "
                           "`sslp zoo publish RUN_DIR --name NAME --force`")
        known = {k: v for k, v in data.items() if k in fields}
        entry = cls(**known, extra={k: v for k, v in data.items() if k not in fields})
        entry.check(where)
        return entry

    def check(self, where: str) -> None:
        """Refuse values by which an index could reach outside its zoo and the cache, or make timm load files.

        index.json is written by whoever runs the zoo's server or repository, so nothing in it is joined to
        a local path, fetched or passed to timm before this: `file` and `card` must be the names the zoo
        itself gives them, `url` http(s) (or relative), `architecture` a plain timm name, and the kwargs free
        of timm's file-loading ones (`models.backbones.check_timm_kwargs`).

        Raises:
            ZooError: naming the entry, the field, the value and what to do.
        """
        def refuse(field: str, value: Any, why: str) -> ZooError:
            fix = _fix(self.name if isinstance(self.name, str) and NAME.fullmatch(self.name) else "NAME")
            return ZooError(f"entry {self.name!r} in {where}: {field} {value!r} is refused: {why}. {fix}")

        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise refuse("name", self.name, "a zoo name is arch.tag in lowercase letters, digits and '_'")
        if not isinstance(self.sha256, str) or not SHA256.fullmatch(self.sha256):
            raise refuse("sha256", self.sha256, "it must be 64 lowercase hex digits")
        if type(self.size_bytes) is not int or self.size_bytes < 0:  # type(): True is an int, not a size
            raise refuse("size_bytes", self.size_bytes, "it must be a whole number of bytes; downloads stop there")
        for field, expected in (("file", weights_file_name(self.name, self.sha256)), ("card", card_path(self.name))):
            value = getattr(self, field)
            if value != expected and not (field == "card" and value is None):
                problem = _path_problem(value)
                raise refuse(field, value, (f"{problem}; " if problem else "") + f"the zoo names this {field} "
                             f"{expected!r}, inside the zoo")
        if self.url is not None and (problem := _url_problem(self.url)):
            raise refuse("url", self.url, problem)
        if not isinstance(self.architecture, str) or not ARCHITECTURE.fullmatch(self.architecture):
            raise refuse("architecture", self.architecture, "it must be a timm model name; timm reads `hf-hub:` "
                         "names from the network and `local-dir:` names from a directory")
        kwarg_fields = (("arch_kwargs", self.arch_kwargs, "name"), ("timm_kwargs", self.timm_kwargs, "model_name"))
        for field, kwargs, own in kwarg_fields:  # `own`: the key our own call sets to the architecture
            if kwargs is None and field == "timm_kwargs":
                continue
            if not isinstance(kwargs, dict):
                raise refuse(field, kwargs, "it must be a JSON object of keyword arguments")
            if own in kwargs:
                raise refuse(field, kwargs, f"its key {own!r} would replace the architecture")
            try:
                check_timm_kwargs(kwargs, f"entry {self.name!r} in {where}, field {field}")
            except ValueError as err:
                raise ZooError(f"{err}. {_fix(self.name)}") from err

    @property
    def backbone_spec(self) -> dict[str, Any]:
        """The `create_backbone` kwargs, name included (`models.backbones.from_spec`)."""
        return {**self.arch_kwargs, "name": self.architecture}

    def headline(self) -> list[tuple[str, float]]:
        """("task/protocol[@fraction][ metric]", mean) per task, protocol and metric: clean labels, no
        robust loss, at the largest label fraction measured (`@0.1`: a tenth of the labels)."""
        best: dict[tuple, dict[str, Any]] = {}
        for r in self.results:
            if r["noise_kind"] == "none" and r["robust"] == "none" and r["metric"] in HEADLINE_METRICS:
                key = (r["task"], r["protocol"], r["metric"])
                if key not in best or r["label_fraction"] > best[key]["label_fraction"]:
                    best[key] = r
        return [
            (f"{task}/{protocol}" + (f"@{r['label_fraction']:g}" if r["label_fraction"] < 1 else "")
             + ("" if metric == "top1" else f" {metric}"), r["mean"])
            for (task, protocol, metric), r in best.items()
        ]

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm `PretrainedCfg` fields for this entry (no weights location): strict load, preprocessing."""
        cfg: dict[str, Any] = {
            "architecture": self.architecture,
            "tag": self.name.split(".", 1)[1],
            "num_classes": 0,  # equal to the model's num_classes=0, so timm loads strictly
            "license": self.license,
            "description": f"ssl_platform zoo: {self.method} on {self.pretrain_data or 'unknown data'}",
        }
        if self.input_size:
            cfg.update(input_size=tuple(self.input_size), crop_pct=1.0)  # EvalTransform: resize + center crop
        if self.mean and self.std:
            cfg.update(mean=tuple(self.mean), std=tuple(self.std))
        return cfg


# ---- where the zoo is


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/ssl_platform`, default `~/.cache/ssl_platform`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ssl_platform"


def shipped_zoo() -> Path | None:
    """The checkout's `zoo/` directory, if this package runs from a checkout that ships one."""
    zoo = REPO_ROOT / "zoo"
    return zoo if (REPO_ROOT / "pyproject.toml").is_file() and (zoo / INDEX_FILE).is_file() else None


def resolve_zoo(zoo: str | Path | None = None) -> str:
    """The zoo to use: `zoo`, else $SSL_PLATFORM_ZOO, else the shipped `zoo/`, else `<cache>/zoo`.

    Returns a directory path or an http(s) base URL without a trailing slash (`file://` becomes a path).
    """
    zoo = str(zoo or os.environ.get(ENV_ZOO) or shipped_zoo() or cache_dir() / "zoo")
    if zoo.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(zoo).path)
    return zoo.rstrip("/") if is_remote(zoo) else zoo


def is_remote(zoo: str) -> bool:
    return zoo.startswith(("http://", "https://"))


# ---- index.json


def _parse_index(text: str, where: str) -> dict[str, ZooEntry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ZooError(f"{where} is not valid JSON ({err}); restore it from version control or re-publish") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ZooError(f"{where} is not an ssl_platform zoo index (format {FORMAT!r}); check --zoo / {ENV_ZOO}")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ZooError(f"{where}: 'models' is not a JSON object. {_fix()}")
    entries = {}
    for name, raw in models.items():
        entry = ZooEntry.from_dict(raw, where)
        if entry.name != name:  # lookups go by the key, paths by the entry's name: they must agree
            raise ZooError(f"entry {name!r} in {where}: name {entry.name!r} is refused: it must equal its key "
                           f"{name!r}. {_fix(entry.name)}")
        entries[name] = entry
    return entries


def _remote_index(zoo: str) -> dict[str, ZooEntry]:
    """The entries of an http zoo's index.json; those of its cached copy when the server cannot be reached.

    Only an index that parses is cached, so a copy never holds entries `ZooEntry.check` refuses.
    """
    url = f"{zoo}/{INDEX_FILE}"
    copy = cache_dir() / "indexes" / f"{hashlib.sha256(zoo.encode()).hexdigest()[:16]}.json"
    try:
        data = read_limited(url, MAX_INDEX_BYTES, timeout=30)  # DownloadError (too large, not http) goes up
    except OSError as err:  # URLError and HTTPError are OSErrors
        if copy.exists():
            print(f"[ssl_platform] cannot reach {url} ({err}); using the copy of {copy.stat().st_size} bytes "
                  f"cached at {copy}", file=sys.stderr)
            return _parse_index(copy.read_text(), f"{copy} (the cached copy of {url})")
        raise DownloadError(f"cannot read the zoo index {url} ({err}); check the URL (--zoo or {ENV_ZOO}) "
                            "and the network") from err
    try:
        text = data.decode()
    except UnicodeDecodeError as err:
        raise ZooError(f"{url} is not UTF-8 text, so not a zoo index; check --zoo / {ENV_ZOO}") from err
    entries = _parse_index(text, url)
    io.write_atomic(copy, data)
    return entries


def read_index(zoo: str | Path | None = None) -> dict[str, ZooEntry]:
    """The entries of a zoo (see `resolve_zoo`), by name; `ZooEntry.check` has passed each of them."""
    zoo = resolve_zoo(zoo)
    if is_remote(zoo):
        return _remote_index(zoo)
    path = Path(zoo) / INDEX_FILE
    if not path.is_file():
        raise ZooError(
            f"no zoo at {zoo}: {path} does not exist. Publish a run into it "
            f"(`sslp zoo publish RUN_DIR --name arch.tag --zoo {zoo}`), or point --zoo / {ENV_ZOO} at a zoo "
            "directory or http(s) URL"
        )
    return _parse_index(path.read_text(), str(path))


def contained(root: str | Path, relative: str, name: str, field: str) -> Path:
    """`root / relative`, once its resolved path (symbolic links followed) is found inside the resolved `root`.

    `relative` has passed `ZooEntry.check`, so only a symbolic link can lead out: a link in a cloned zoo
    or a planted one in the cache must not make the zoo read, copy, overwrite or delete another file.
    The returned path is the unresolved one, as messages and callers know it.

    Raises:
        ZooError: the path leads out of `root`; it names the entry, the field and where the link goes.
    """
    path = Path(root) / relative
    resolved, top = path.resolve(), Path(root).resolve()
    if not resolved.is_relative_to(top):
        raise ZooError(
            f"{field} {relative!r} of {name}: {path} is or passes through a symbolic link that leads to {resolved}, "
            f"outside {top}; the zoo reads and writes only inside its directory and its cache. Replace the link "
            "with the file or directory itself, or remove it"
        )
    return path


def copy_atomic(src: str | Path, dst: str | Path, sha256: str | None = None) -> None:
    """Copy `src` to `dst` through a temp file in `dst`'s directory and a rename: readers see the old file or
    the whole new one, never half (`io.write_atomic`, streamed for weights files of any size).

    The copy keeps `src`'s permission bits. With `sha256`, the copy's hash is checked before it takes the name.

    Raises:
        IntegrityError: the copy's sha256 is not `sha256` (a failing disk); nothing is left behind.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, CHUNK_BYTES)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(src, tmp)
        if sha256 is not None and file_sha256(tmp) != sha256:
            raise IntegrityError(f"copying {src} to {dst} changed its bytes; check the disk and try again")
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def write_index(zoo_dir: str | Path, entries: dict[str, ZooEntry]) -> Path:
    """Atomically replace `zoo_dir/index.json` (sorted, indented: it is meant to be diffed and reviewed)."""
    path = Path(zoo_dir) / INDEX_FILE
    data = {"format": FORMAT, "models": {n: entries[n].to_dict() for n in sorted(entries)}}
    io.write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
    return path


def list_models(zoo: str | Path | None = None) -> list[str]:
    """The names in a zoo, sorted."""
    return sorted(read_index(zoo))


def get_entry(name: str, zoo: str | Path | None = None) -> ZooEntry:
    """The entry called `name`; an unknown name is an error that lists the available ones."""
    zoo = resolve_zoo(zoo)
    entries = read_index(zoo)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ZooError(
            f"no model {name!r} in the zoo {zoo}.{hint} Available: {', '.join(sorted(entries)) or 'none'} "
            f"(`sslp zoo list`; another zoo: --zoo or {ENV_ZOO})"
        )
    return entries[name]


# ---- the weights file


def _weights_url(entry: ZooEntry, zoo: str) -> str | None:
    """Where to download the entry's file: its `url` (relative ones against an http zoo), else beside index.json.

    A relative `url` in a local zoo is refused rather than guessed at: the directory has no base URL, and
    reading it as a path would be a second `file` that escapes the rules of the first.
    """
    if entry.url:
        if is_remote(zoo):
            return urllib.parse.urljoin(f"{zoo}/", entry.url)
        if not urllib.parse.urlsplit(entry.url).scheme:
            raise ZooError(
                f"url {entry.url!r} of {entry.name} is relative, and the local zoo {zoo} has no base URL to resolve "
                f"it against. Make it an absolute http(s) URL, or put {entry.file} beside {INDEX_FILE}"
            )
        return entry.url
    return f"{zoo}/{urllib.parse.quote(entry.file)}" if is_remote(zoo) else None


def _check_local(path: Path, entry: ZooEntry, zoo: str) -> Path:
    actual = file_sha256(path)
    if actual != entry.sha256:
        source = f"download it again from {entry.url}, " if entry.url else ""
        raise IntegrityError(
            f"{path} has sha256 {actual}, but {zoo}/{INDEX_FILE} records {entry.sha256} for {entry.name}: the "
            "file is corrupt or was changed, and was left as it is. Restore it (`git checkout -- <file>` or your "
            f"backup if the zoo is versioned), {source}or re-publish the run with "
            f"`sslp zoo publish RUN_DIR --name {entry.name} --force`"
        )
    return path


def pull(name: str, zoo: str | Path | None = None) -> Path:
    """The verified weights file of `name`: a local zoo's own file, else a download cached in `<cache>/files`.

    Raises:
        ZooError: unknown name, or the file is neither in the zoo nor downloadable.
        IntegrityError: the file's sha256 is not the recorded one.
        DownloadError: the file cannot be fetched.
    """
    zoo = resolve_zoo(zoo)
    return _pull(get_entry(name, zoo), zoo)


def _pull(entry: ZooEntry, zoo: str) -> Path:
    if not is_remote(zoo):
        local = contained(zoo, entry.file, entry.name, "file")
        if local.is_file():
            return _check_local(local, entry, zoo)
    url = _weights_url(entry, zoo)
    if url is None:
        raise ZooError(
            f"{Path(zoo) / entry.file}, the weights of {entry.name}, is missing and its entry has no url. Restore "
            f"the file, or re-publish the run with `sslp zoo publish RUN_DIR --name {entry.name} --force`"
        )
    # the cache name is rebuilt from the checked name and hash; fetch_verified deletes a dest with another hash
    dest = contained(cache_dir() / "files", weights_file_name(entry.name, entry.sha256), entry.name, "file")
    return fetch_verified(url, dest, entry.sha256, entry.size_bytes)


def verify(names: list[str] | None = None, zoo: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """(name, ok, where the file is or what is wrong) for `names` (default: every entry).

    Recomputes each file's sha256; entries whose weights are remote are downloaded (into the cache) first.
    """
    zoo = resolve_zoo(zoo)
    entries = read_index(zoo)
    out = []
    for name in names or sorted(entries):
        try:
            if name not in entries:
                get_entry(name, zoo)  # raises, naming the available ones
            path = _pull(entries[name], zoo)
            card = entries[name].card
            if card and not is_remote(zoo) and not contained(zoo, card, name, "card").is_file():
                raise ZooError(f"the model card {Path(zoo) / card} is missing; re-publish with --force")
            out.append((name, True, str(path)))
        except CheckpointError as err:
            out.append((name, False, str(err)))
    return out


# ---- using a backbone


def load_backbone(name: str, zoo: str | Path | None = None) -> nn.Module:
    """The backbone published as `name`, with weights checked against their sha256 and loaded strictly.

    It is the `create_backbone` model the run trained (timm contract: `forward_features`,
    `forward_head(x, pre_logits=True)` -> `[B, num_features]`); its `pretrained_cfg` holds the entry's
    input size, mean and std, so `timm.data.resolve_data_config(model=backbone)` gives its preprocessing.

    Example:
        >>> backbone = load_backbone("simclr_resnet18.fmnist_200ep")
    """
    zoo = resolve_zoo(zoo)
    entry = get_entry(name, zoo)
    backbone = io.load_backbone(_pull(entry, zoo))
    backbone.pretrained_cfg = {**getattr(backbone, "pretrained_cfg", {}), **entry.pretrained_cfg()}
    return backbone


def timm_kwargs(name: str, zoo: str | Path | None = None) -> dict[str, Any]:
    """Keyword arguments of `timm.create_model` that build plain timm's model with this entry's weights.

        model = timm.create_model(**timm_kwargs("vit_tiny.digits_100ep"))

    The weights are pulled and verified first; `pretrained_cfg_overlay` names the file and sets
    `num_classes=0`, which makes timm's load strict (with another num_classes timm drops classifier keys
    and loads non-strictly).

    Raises:
        ZooError: plain timm cannot build this architecture (e.g. a `small_input` stem); the message
            says to use `load_backbone` instead.
    """
    zoo = resolve_zoo(zoo)
    entry = get_entry(name, zoo)
    if entry.timm_kwargs is None:
        raise ZooError(f"{name} does not load into plain timm: {entry.timm_note}")
    if entry.timm_note:
        print(f"[ssl_platform] {name}: {entry.timm_note}", file=sys.stderr)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.timm_kwargs.items()}
    overlay = {"file": str(_pull(entry, zoo)), **entry.pretrained_cfg()}
    # the entry's kwargs first: ours win over any that slipped past ZooEntry.check
    return {**kwargs, "model_name": entry.architecture, "pretrained": True, "num_classes": 0,
            "pretrained_cfg_overlay": overlay}


def export_timm(name: str, out_dir: str | Path, zoo: str | Path | None = None) -> Path:
    """Write timm's Hugging Face Hub folder layout: `config.json`, `model.safetensors` and `README.md`.

    The folder loads with `timm.create_model("local-dir:" + out_dir, pretrained=True)`, and can be
    uploaded to the Hub as it is (then `hf-hub:user/repo`).
    """
    zoo = resolve_zoo(zoo)
    entry = get_entry(name, zoo)
    if entry.timm_kwargs is None:
        raise ZooError(f"{name} cannot be exported for plain timm: {entry.timm_note}")
    weights = _pull(entry, zoo)
    card = contained(zoo, entry.card, name, "card") if entry.card and not is_remote(zoo) else None
    card_files = _card_files(card.parent, name) if card and card.is_file() else []  # it links its plots relatively
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for relative in card_files:
        copy_atomic(card.parent / relative, out / relative)
    config = {
        "architecture": entry.architecture,
        "num_classes": 0,
        "num_features": entry.num_features,
        "model_args": entry.timm_kwargs,
        "pretrained_cfg": entry.pretrained_cfg(),
    }
    # after the card: a config.json or model.safetensors in the card's directory must not replace these
    io.write_atomic(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    copy_atomic(weights, out / "model.safetensors", entry.sha256)
    return out


def _card_files(card_dir: Path, name: str) -> list[Path]:
    """The files under a model card's directory, relative to it; refused if any is a link or not a plain file.

    Checked before anything is copied, so a refused card leaves the export folder as it was.
    """
    files = []
    for dirpath, dirnames, filenames in os.walk(card_dir):  # does not descend into linked directories
        for entry_name in dirnames + filenames:
            path = Path(dirpath) / entry_name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise ZooError(
                    f"the model card directory of {name} holds {path}, a symbolic link or special file; export "
                    "copies only plain files of the zoo (a link could copy any file you can read). Remove it"
                )
            if entry_name in filenames:
                files.append(path.relative_to(card_dir))
    return sorted(files)
