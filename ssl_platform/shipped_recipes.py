"""The recipes shipped in the checkout's `recipes/<method>/`: listed by `sslp recipes ls`, copied by `sslp recipes cp`.

A shipped recipe begins with the command that launches it and a comment that describes it:

    # python -m ssl_platform pretrain recipes/simclr/debug.yaml
    # A few SimCLR steps on scikit-learn's bundled digits (8x8, no data preparation): seconds on a CPU.
    name: simclr_debug

`list_recipes` names each one `method/file` (`simclr/debug`) with the first sentence of that
description. `copy_recipe` starts a recipe of your own from one (as torchtune's `tune cp`): the copy
is named after its file (`name:` sets the run directory, `runs/<name>`), and its launch line and the
comments' `runs/<name>` paths follow. It never overwrites a file.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ssl_platform.config import ConfigError

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
# a recipe's name becomes its run directory (runs/<name>) and the zoo's tags: a plain file name
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# a note on what to prepare first ("Needs the data once: python -m ...") is not what the recipe is
DATA_NOTE = "Needs the data"
# a sentence ends at . ! ? before a capital or digit, but not after e.g. / i.e. / et al.
SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<!\bal\.)(?<=[.!?])\s+(?=[A-Z0-9])")


def recipe_files(root: Path = RECIPES_DIR) -> dict[str, Path]:
    """`method/file` -> path, for every YAML file under `root`, sorted by name.

    Raises:
        ConfigError: `root` does not exist (an installed package without its checkout).
    """
    if not root.is_dir():
        raise ConfigError(f"no shipped recipes at {root}: they come with the source checkout (git clone the "
                          "repository and install it with pip install -e .)")
    paths = sorted(root.rglob("*.yaml"))
    return {path.relative_to(root).with_suffix("").as_posix(): path for path in paths}


def find_recipe(name: str, root: Path = RECIPES_DIR) -> Path:
    """The shipped recipe `name` (`simclr/debug`; also `simclr/debug.yaml` or `recipes/simclr/debug.yaml`).

    Raises:
        ConfigError: no shipped recipe has that name; the message offers the closest one.
    """
    files = recipe_files(root)
    key = name.removeprefix("recipes/").removesuffix(".yaml")
    if key in files:
        return files[key]
    close = difflib.get_close_matches(key, list(files), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"no shipped recipe {name!r}{hint}; `sslp recipes ls` lists them")


def summary(text: str, width: int = 100) -> str:
    """The first sentence of a recipe's header comment (after its launch line), at most `width` characters.

    The header is the comment block at the top of the file, up to its first empty comment line; a
    note on data to prepare first is left out. A first sentence shorter than 40 characters ("GPU
    scale.") takes the next one along.
    """
    lines = []
    for line in text.splitlines()[1:]:
        if not line.startswith("#") or not line.strip("# \t"):
            break
        lines.append(line[1:].strip())
    prose, open_note = [], 0
    for line in lines:
        if line.startswith(DATA_NOTE) or open_note > 0:  # the note, and its lines until its parentheses close
            open_note += line.count("(") - line.count(")")
            continue
        prose.append(line)
    sentences = SENTENCE_END.split(" ".join(prose))
    first = sentences[0]
    for more in sentences[1:]:
        if len(first) >= 40:
            break
        first = f"{first} {more}"
    if len(first) > width:
        first = first[: width - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return first


def list_recipes(root: Path = RECIPES_DIR) -> str:
    """One line per shipped recipe: its name and `summary`, then how to copy one."""
    files = recipe_files(root)
    if not files:
        return f"no recipes under {root}\n"
    column = max(map(len, files)) + 2
    lines = [f"{name:{column}}{summary(path.read_text(encoding='utf-8'))}" for name, path in files.items()]
    example = "simclr/debug" if "simclr/debug" in files else next(iter(files))
    lines.append(f"\nstart your own from one: sslp recipes cp {example} my_recipes/{example.replace('/', '_')}.yaml")
    return "\n".join(lines) + "\n"


def copy_recipe(name: str, dest: str | Path, root: Path = RECIPES_DIR) -> Path:
    """Copy the shipped recipe `name` to `dest` (a .yaml file, or an existing folder to copy into).

    The copy's top-level `name:` becomes `dest`'s stem, its launch line (the first line) names `dest`
    instead of the shipped path, and `runs/<old name>` in its comments becomes `runs/<new name>`.

    Returns:
        the path written.

    Raises:
        ConfigError: unknown `name`, `dest` not a .yaml file, or a stem unfit for a run name.
        FileExistsError: `dest` exists (never overwritten).
    """
    source = find_recipe(name, root)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{dest}: the copy must be a .yaml file, e.g. {dest}.yaml")
    if not SAFE_NAME.fullmatch(dest.stem):
        raise ConfigError(f"{dest.name}: the copy's name is its file name and names its run directory "
                          "(runs/<name>); use letters, digits and _ . + - only")
    if dest.exists():
        raise FileExistsError(f"{dest} exists; sslp recipes cp never overwrites a file: choose another path or "
                              "delete it first")
    text = source.read_text(encoding="utf-8")
    old = re.search(r"^name:[ \t]*(\S+)[ \t]*$", text, flags=re.MULTILINE)
    if old is None:
        raise ConfigError(f"{source} has no top-level `name: ...` line to rename")
    text = f"{text[: old.start()]}name: {dest.stem}{text[old.end():]}"
    lines = text.splitlines(keepends=True)
    shipped = source.relative_to(root.parent).as_posix()  # recipes/<method>/<file>.yaml, as launch lines say
    lines[0] = lines[0].replace(shipped, dest.as_posix())
    run_dir = re.compile(rf"runs/{re.escape(old.group(1))}(?![\w.+-])")
    lines = [run_dir.sub(f"runs/{dest.stem}", line) if line.startswith("#") else line for line in lines]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("x", encoding="utf-8") as f:  # "x": a file that appeared meanwhile is not overwritten
        f.write("".join(lines))
    return dest
