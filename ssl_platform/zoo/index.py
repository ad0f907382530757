"""The model zoo: published backbones by name (timm's `arch.tag`), verified by sha256 before every load.

This module holds the entries (`ZooEntry`), where the zoo is, its index.json, and pulling and verifying
the weights; it imports no torch, so `sslp zoo list` answers without it. Loading a backbone by name is
`zoo.loading`. What an index may be trusted with is decided in `zoo.checks`; publishing a run is
`zoo.publishing`; model cards, docs/zoo.md and `sslp zoo show` are `zoo.card`, `sslp zoo list` is `zoo.listing`.

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

Trust: what a zoo's index.json says is not trusted (anyone may have written it). Every entry passes
`ZooEntry.check` as the index is read, and every path `contained` before it is used (`zoo.checks`).
Downloads are http(s) only and capped at the entry's `size_bytes`, a remote index at `MAX_INDEX_BYTES`
(`zoo.download`). Whatever the zoo writes lands atomically (`checkpoint.atomic`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from ssl_platform.checkpoint.atomic import copy_atomic, write_atomic
from ssl_platform.checkpoint.errors import CheckpointError
from ssl_platform.zoo.checks import (
    ZooError,
    card_files,
    check_entry,
    check_local_file,
    contained,
    fix_hint,
    is_remote,
    weights_file_name,
    weights_url,
)
from ssl_platform.zoo.download import DownloadError, fetch_verified, read_limited

FORMAT = "ssl_platform.zoo/1"
INDEX_FILE = "index.json"
ENV_ZOO = "SSL_PLATFORM_ZOO"
MAX_INDEX_BYTES = 16 * 2**20  # an index of hundreds of models is well under 1 MiB; more is a wrong URL or hostile
REPO_ROOT = Path(__file__).resolve().parents[2]
# the resize an entry without `interpolation` was evaluated with: one published before index.json recorded
# it was evaluated with EvalTransform's bilinear resize. A fact of those old entries, hence a literal rather
# than engine.run_dir.EVAL_INTERPOLATION (the resize of new runs' exports; importing it imports torch)
UNRECORDED_INTERPOLATION = "bilinear"


@dataclasses.dataclass
class ZooEntry:
    """One published backbone, as stored in index.json (`to_dict`/`from_dict`)."""

    name: str                      # arch.tag, e.g. simclr_resnet18.fmnist32_2ep
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
    epochs: int | float | None = None      # epochs trained: fractional where a run stopped mid-epoch (1.5)
    steps: int | None = None
    recipe_name: str = ""
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    git_sha: str = "unknown"
    created: str = ""
    license: str = ""
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the settings on which a random init scored better (`report.random_init_wins`); None: none compared
    random_init_better: list[dict[str, Any]] | None = None
    interpolation: str = UNRECORDED_INTERPOLATION  # the resize of the transform it was evaluated with
    card: str | None = None                # path of the model card, relative to the zoo
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # keys of newer versions, kept as they are

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {**out.pop("extra"), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ZooEntry:
        """The entry `data` of the index `where`, refused (`ZooError`) unless it passes `check`."""
        if not isinstance(data, dict):
            raise ZooError(f"an entry in {where} is not a JSON object but {data!r:.80}. {fix_hint()}")
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
        """Refuse values by which this entry could reach outside its zoo and the cache, or make timm load
        files (`checks.check_entry`; raises `ZooError`)."""
        check_entry(self, where)

    @property
    def backbone_spec(self) -> dict[str, Any]:
        """The `create_backbone` kwargs, name included (`models.backbones.from_spec`)."""
        return {**self.arch_kwargs, "name": self.architecture}

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm `PretrainedCfg` fields for this entry (no weights location): strict load, preprocessing."""
        cfg: dict[str, Any] = {
            "architecture": self.architecture,
            "tag": self.name.split(".", 1)[1],
            "num_classes": 0,  # equal to the model's num_classes=0, so timm loads strictly
            "license": self.license,
            "description": f"ssl_platform zoo: {self.method} on {self.pretrain_data or 'unknown data'}",
        }
        if self.input_size:  # EvalTransform: resize (bilinear) + center crop of the same size
            cfg.update(input_size=tuple(self.input_size), crop_pct=1.0, interpolation=self.interpolation)
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
        raise ZooError(f"{where}: 'models' is not a JSON object. {fix_hint()}")
    entries = {}
    for name, raw in models.items():
        entry = ZooEntry.from_dict(raw, where)
        if entry.name != name:  # lookups go by the key, paths by the entry's name: they must agree
            raise ZooError(f"entry {name!r} in {where}: name {entry.name!r} is refused: it must equal its key "
                           f"{name!r}. {fix_hint(entry.name)}")
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
    write_atomic(copy, data)
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


def write_index(zoo_dir: str | Path, entries: dict[str, ZooEntry]) -> Path:
    """Atomically replace `zoo_dir/index.json` (sorted, indented: it is meant to be diffed and reviewed)."""
    path = Path(zoo_dir) / INDEX_FILE
    data = {"format": FORMAT, "models": {n: entries[n].to_dict() for n in sorted(entries)}}
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
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


def pull(name: str, zoo: str | Path | None = None) -> Path:
    """The verified weights file of `name`: a local zoo's own file, else a download cached in `<cache>/files`.

    Raises:
        ZooError: unknown name, or the file is neither in the zoo nor downloadable.
        IntegrityError: the file's sha256 is not the recorded one.
        DownloadError: the file cannot be fetched.
    """
    zoo = resolve_zoo(zoo)
    return pull_entry(get_entry(name, zoo), zoo)


def pull_entry(entry: ZooEntry, zoo: str) -> Path:
    """`pull` for an entry already read from the resolved zoo `zoo` (no second read of its index)."""
    if not is_remote(zoo):
        local = contained(zoo, entry.file, entry.name, "file")
        if local.is_file():
            return check_local_file(local, entry, zoo)
    url = weights_url(entry, zoo)
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
            path = pull_entry(entries[name], zoo)
            card = entries[name].card
            if card and not is_remote(zoo) and not contained(zoo, card, name, "card").is_file():
                raise ZooError(f"the model card {Path(zoo) / card} is missing; re-publish with --force")
            out.append((name, True, str(path)))
        except CheckpointError as err:
            out.append((name, False, str(err)))
    return out


# ---- plain timm (the backbone itself: `zoo.loading.load_backbone`)


def timm_kwargs(name: str, zoo: str | Path | None = None) -> dict[str, Any]:
    """Keyword arguments of `timm.create_model` that build plain timm's model with this entry's weights.

        model = timm.create_model(**timm_kwargs("ijepa_vit_tiny.fmnist_4ep"))

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
    overlay = {"file": str(pull_entry(entry, zoo)), **entry.pretrained_cfg()}
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
    weights = pull_entry(entry, zoo)
    card = contained(zoo, entry.card, name, "card") if entry.card and not is_remote(zoo) else None
    files = card_files(card.parent, name) if card and card.is_file() else []  # it links its plots relatively
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for relative in files:
        copy_atomic(card.parent / relative, out / relative)
    config = {
        "architecture": entry.architecture,
        "num_classes": 0,
        "num_features": entry.num_features,
        "model_args": entry.timm_kwargs,
        "pretrained_cfg": entry.pretrained_cfg(),
    }
    # after the card: a config.json or model.safetensors in the card's directory must not replace these
    write_atomic(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    copy_atomic(weights, out / "model.safetensors", entry.sha256)
    return out
