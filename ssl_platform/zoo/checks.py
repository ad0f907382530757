"""Whether what a zoo's index.json says may be used: the names a zoo gives its files, the entry check,
where an entry's weights may be fetched from, and the paths and files a zoo may read, copy or write.

The zoo you name (`--zoo`, even a `file://` URL) is your choice, but what its index.json says is not
trusted: anyone may have written it. `check_entry` (run by `ZooEntry.check` as the index is read)
refuses any entry whose `file` is not `<name>-<sha256[:8]>.safetensors` (`weights_file_name`), whose
`card` is not `cards/<name>/README.md` (`card_path`), whose `url` is not http(s) (a relative one is
resolved against an http zoo by `weights_url`; a local zoo has nothing to resolve it against), whose
architecture names a timm source (`hf-hub:`, `local-dir:`), whose kwargs would make timm load a file,
or whose interpolation timm does not know.
Before a path is used, `contained` resolves its symbolic links and refuses one that leads out of the zoo
or the cache; `card_files` refuses a card directory holding links before export copies it; and
`check_local_file` refuses a local zoo's weights file whose sha256 is not the entry's.

The rest of the defence lives beside what it guards: downloads are http(s) only and capped
(`zoo.download`), timm's file-loading kwargs are listed in `models.safe_kwargs`.
This module imports neither `zoo` nor `zoo_publish`: they import it.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from ssl_platform.checkpoint.errors import CheckpointError
from ssl_platform.models.safe_kwargs import check_timm_kwargs
from ssl_platform.provenance import file_sha256
from ssl_platform.zoo.download import HTTP_SCHEMES, IntegrityError

NAME = re.compile(r"[a-z0-9][a-z0-9_]*\.[a-z0-9][a-z0-9_]*")  # no "-": it separates the sha256 prefix
SHA256 = re.compile(r"[0-9a-f]{64}")
# a timm model name; no ":", because timm reads `hf-hub:repo` from the network and `local-dir:path` from disk
ARCHITECTURE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
CARDS_DIR = "cards"
# the resize modes timm's data config knows (`timm.data.transforms.str_to_interp_mode`)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")


class ZooError(CheckpointError):
    """A zoo or an entry cannot be used; the message says which and what to do."""


def fix_hint(name: str = "NAME") -> str:
    """What to do about a refused index.json."""
    return (f"Fix index.json, or re-publish the run (`sslp zoo publish RUN_DIR --name {name} --force`); "
            "use only zoos whose maintainers you trust")


def weights_file_name(name: str, sha256: str) -> str:
    """The name a zoo gives a weights file, beside index.json and in the download cache."""
    return f"{name}-{sha256[:8]}.safetensors"


def card_path(name: str) -> str:
    """Where a zoo keeps the model card of `name`, relative to the zoo."""
    return f"{CARDS_DIR}/{name}/README.md"


def is_remote(zoo: str) -> bool:
    """Whether a resolved zoo is an http(s) base URL (else a directory): what an index's relative values
    are resolved against."""
    return zoo.startswith(("http://", "https://"))


def _path_problem(value: Any) -> str:
    """Why `value` could name a file outside the directory it is joined to, or "" (see `check_entry`)."""
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
    """Why an index's `url` must not be fetched, or "" (relative URLs are fine: see `weights_url`)."""
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


def check_entry(entry: Any, where: str) -> None:
    """Refuse values by which an index could reach outside its zoo and the cache, or make timm load files.

    `entry` is a `zoo.ZooEntry` read from (or about to be written to) the index `where`. index.json is
    written by whoever runs the zoo's server or repository, so nothing in it is joined to a local path,
    fetched or passed to timm before this: `file` and `card` must be the names the zoo itself gives them,
    `url` http(s) (or relative), `architecture` a plain timm name, and the kwargs free of timm's
    file-loading ones (`models.safe_kwargs.check_timm_kwargs`).

    Raises:
        ZooError: naming the entry, the field, the value and what to do.
    """
    name = entry.name

    def refuse(field: str, value: Any, why: str) -> ZooError:
        fix = fix_hint(name if isinstance(name, str) and NAME.fullmatch(name) else "NAME")
        return ZooError(f"entry {name!r} in {where}: {field} {value!r} is refused: {why}. {fix}")

    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise refuse("name", name, "a zoo name is arch.tag in lowercase letters, digits and '_'")
    if not isinstance(entry.sha256, str) or not SHA256.fullmatch(entry.sha256):
        raise refuse("sha256", entry.sha256, "it must be 64 lowercase hex digits")
    if type(entry.size_bytes) is not int or entry.size_bytes < 0:  # type(): True is an int, not a size
        raise refuse("size_bytes", entry.size_bytes, "it must be a whole number of bytes; downloads stop there")
    for field, expected in (("file", weights_file_name(name, entry.sha256)), ("card", card_path(name))):
        value = getattr(entry, field)
        if value != expected and not (field == "card" and value is None):
            problem = _path_problem(value)
            raise refuse(field, value, (f"{problem}; " if problem else "") + f"the zoo names this {field} "
                         f"{expected!r}, inside the zoo")
    if entry.url is not None and (problem := _url_problem(entry.url)):
        raise refuse("url", entry.url, problem)
    if entry.interpolation not in INTERPOLATIONS:
        raise refuse("interpolation", entry.interpolation, f"it must be one of timm's {', '.join(INTERPOLATIONS)}")
    wins = entry.random_init_better
    if wins is not None and not (isinstance(wins, list) and all(isinstance(w, dict) for w in wins)):
        raise refuse("random_init_better", wins, "it must be null or a list of JSON objects")
    if not isinstance(entry.architecture, str) or not ARCHITECTURE.fullmatch(entry.architecture):
        raise refuse("architecture", entry.architecture, "it must be a timm model name; timm reads `hf-hub:` "
                     "names from the network and `local-dir:` names from a directory")
    kwarg_fields = (("arch_kwargs", entry.arch_kwargs, "name"), ("timm_kwargs", entry.timm_kwargs, "model_name"))
    for field, kwargs, own in kwarg_fields:  # `own`: the key our own call sets to the architecture
        if kwargs is None and field == "timm_kwargs":
            continue
        if not isinstance(kwargs, dict):
            raise refuse(field, kwargs, "it must be a JSON object of keyword arguments")
        if own in kwargs:
            raise refuse(field, kwargs, f"its key {own!r} would replace the architecture")
        try:
            check_timm_kwargs(kwargs, f"entry {name!r} in {where}, field {field}")
        except ValueError as err:
            raise ZooError(f"{err}. {fix_hint(name)}") from err


def contained(root: str | Path, relative: str, name: str, field: str) -> Path:
    """`root / relative`, once its resolved path (symbolic links followed) is found inside the resolved `root`.

    `relative` has passed `check_entry`, so only a symbolic link can lead out: a link in a cloned zoo
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


def weights_url(entry: Any, zoo: str) -> str | None:
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
                f"it against. Make it an absolute http(s) URL, or put {entry.file} beside index.json"
            )
        return entry.url
    return f"{zoo}/{urllib.parse.quote(entry.file)}" if is_remote(zoo) else None


def check_local_file(path: Path, entry: Any, zoo: str) -> Path:
    """`path`, a local zoo's own weights file, once its sha256 is the entry's; a file that fails is left as it is.

    Raises:
        IntegrityError: naming the file, both hashes and how to restore it.
    """
    actual = file_sha256(path)
    if actual != entry.sha256:
        source = f"download it again from {entry.url}, " if entry.url else ""
        raise IntegrityError(
            f"{path} has sha256 {actual}, but {zoo}/index.json records {entry.sha256} for {entry.name}: the "
            "file is corrupt or was changed, and was left as it is. Restore it (`git checkout -- <file>` or your "
            f"backup if the zoo is versioned), {source}or re-publish the run with "
            f"`sslp zoo publish RUN_DIR --name {entry.name} --force`"
        )
    return path


def card_files(card_dir: Path, name: str) -> list[Path]:
    """The files under a model card's directory, relative to it; refused if any is a link or not a plain file.

    Checked before export copies anything, so a refused card leaves the export folder as it was.
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
