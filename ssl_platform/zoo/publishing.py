"""Publishing a run into a local zoo: the weights under a hashed name, an index.json entry, a model card.

    sslp zoo publish runs/simclr_resnet18_fmnist32_2ep --name simclr_resnet18.fmnist32_2ep [--zoo DIR]

The entry takes the architecture from the file's own metadata (`checkpoint.io.export_backbone`), the
recipe, method, data and input size from the run's `config.yaml`, and the evaluation results from every
`results.jsonl` under `<run dir>/../eval/` and `./runs/eval/` (or the given directories) whose rows
name this very file by its sha256 (`backbone_sha256`). A random-init twin of the run
(`backbone=random:RUN`, rows named `random-<run>`) is shown beside it in the card, and the settings
on which it scores better are recorded (`random_init_better`) and flagged.

The entry names the code by git sha: that of the weights (the code that trained them), and those of
the evaluations. A sha ending in `-dirty` names no commit that reproduces the numbers, so publishing
refuses it unless forced (`force=True`, `--force`).

Weights of more than a few MB belong on a release server: publish as usual, upload the
`.safetensors` file, and publish again with `--url` naming where it lives (the entry keeps the hash).

Every file lands atomically (`io.write_atomic`, `io.copy_atomic`), and the new entry passes the same
`ZooEntry.check` as any index read back, so a publish cannot write an index the zoo would refuse. A zoo
directory may be someone else's clone: a `cards/` link out of it is refused (`checks.contained`)
before anything under it is deleted.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ssl_platform.checkpoint import io
from ssl_platform.data.transforms import normalize_stats
from ssl_platform.engine.run_dir import EVAL_INTERPOLATION
from ssl_platform.evaluation import report
from ssl_platform.methods import METHODS
from ssl_platform.provenance import file_sha256, git_sha
from ssl_platform.zoo.card import render_card, write_docs
from ssl_platform.zoo.checks import (
    CARDS_DIR,
    NAME,
    ZooError,
    card_path,
    contained,
    is_remote,
    weights_file_name,
)
from ssl_platform.zoo.download import file_lock
from ssl_platform.zoo.index import (
    INDEX_FILE,
    REPO_ROOT,
    ZooEntry,
    cache_dir,
    read_index,
    resolve_zoo,
    write_index,
)

DEFAULT_LICENSE = "Apache-2.0"  # the code's license; pass --license when the data's terms differ
_RESULT_KEYS = ("task", "protocol", "label_fraction", "noise_kind", "noise_rate", "robust", "metric")


class DirtyTreeError(ZooError):
    """The weights or their results come from code with uncommitted changes (a `-dirty` git sha)."""


@dataclasses.dataclass
class Evaluation:
    """The rows of one evaluation directory that measured the published file, and its random-init twin's."""

    suite: str
    directory: Path
    rows: list[dict[str, Any]]
    baseline: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _suite_name(directory: Path) -> str:
    try:
        name = (yaml.safe_load((directory / "suite.yaml").read_text()) or {}).get("name")
    except (OSError, yaml.YAMLError):
        name = None
    return str(name or directory.name)


def _results_files(roots: Sequence[Path]) -> list[Path]:
    files = set()
    for root in roots:
        found = [root / "results.jsonl"] if (root / "results.jsonl").is_file() else root.glob("*/results.jsonl")
        files.update(p.resolve() for p in found)
    return sorted(files)


def find_evaluations(run_dir: str | Path, sha256: str, roots: Sequence[str | Path] | None = None) -> list[Evaluation]:
    """Every evaluation of the file with this sha256 (or, for rows without a sha, of the run's name).

    Args:
        run_dir: the pretraining run; its name is what `sslp eval backbone=RUN` calls the backbone.
        sha256: the published file's hash.
        roots: directories holding eval output directories (or a `results.jsonl` themselves);
            default `<run_dir>/../eval` and `./runs/eval`.
    """
    run_dir = Path(run_dir).resolve()
    name = run_dir.name
    roots = [Path(r) for r in roots] if roots else [run_dir.parent / "eval", Path("runs") / "eval"]
    found, baselines = [], {}
    for path in _results_files(roots):
        try:
            rows = report.read_rows(path)
        except ValueError as err:  # someone else's broken file must not stop a publish; say so
            print(f"[ssl_platform] skipping {path}: {err}", file=sys.stderr)
            continue
        suite = _suite_name(path.parent)
        own = [r for r in rows if r["backbone_sha256"] == sha256
               or (not r["backbone_sha256"] and r["backbone"] == name)]
        twin = [r for r in rows if r["backbone"] == f"random-{name}" and not r["backbone_sha256"]]
        if own:
            report.summarise(own)  # refuses repeated seeds and non-finite values, with its message
            found.append(Evaluation(suite, path.parent, own))
        if twin:
            baselines.setdefault(suite, twin)
    for evaluation in found:
        evaluation.baseline = baselines.get(evaluation.suite, [])
    return found


def aggregate(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One index.json result per setting: mean, sample std (ddof=1, None for one seed), n, the seeds
    and the git shas. A value the protocol selected (`report.SELECTED`, e.g. the probe's λ) has no
    mean or std: its `values`, one per seed in the order of `seeds`."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in evaluation.rows:
        groups.setdefault(tuple(row[k] for k in _RESULT_KEYS), []).append(row)
    out = []
    for key, members in sorted(groups.items()):
        members = sorted(members, key=lambda r: r["seed"])
        values = [r["value"] for r in members]
        selected = key[_RESULT_KEYS.index("metric")] in report.SELECTED
        out.append({
            "suite": evaluation.suite,
            **dict(zip(_RESULT_KEYS, key)),
            "mean": None if selected else round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 and not selected else None,
            **({"values": [float(f"{v:.6g}") for v in values]} if selected else {}),  # 1e-05, not 9.99...e-06
            "n": len(values),
            "seeds": [r["seed"] for r in members],
            "git_shas": sorted({r["git_sha"] for r in members}),
        })
    return out


def random_init_better(evaluations: Sequence[Evaluation]) -> list[dict[str, Any]] | None:
    """The settings on which the evaluations' random-init twins scored better (`report.random_init_wins`),
    with the suite, for index.json; None when no evaluation has a twin (nothing was compared)."""
    if not any(ev.baseline for ev in evaluations):
        return None
    return [w for ev in evaluations for w in _wins(ev)]


def _wins(evaluation: Evaluation) -> list[dict[str, Any]]:
    if not evaluation.baseline:
        return []
    # the twin is `random-<run>`; the file may have been evaluated under another name (a zoo name, a path)
    run = evaluation.baseline[0]["backbone"].removeprefix("random-")
    keys = (*_RESULT_KEYS, "mean", "n", "random", "random_mean", "random_n")
    return [{"suite": evaluation.suite, **{k: round(w[k], 4) if k.endswith("mean") else w[k] for k in keys}}
            for w in report.random_init_wins([{**r, "backbone": run} for r in evaluation.rows] + evaluation.baseline)]


def check_clean(name: str, code_sha: str, sha_is_the_tree: bool, evaluations: Sequence[Evaluation]) -> None:
    """Refuse (`DirtyTreeError`) a publish whose weights or results come from a `-dirty` git sha.

    Args:
        name: the zoo name being published.
        code_sha: the git sha the entry records for the weights.
        sha_is_the_tree: `code_sha` is this checkout's (the file names no code of its own).
        evaluations: the evaluations whose rows go into the entry.
    """
    dirty, remedy = [], []
    if code_sha.endswith("-dirty") and sha_is_the_tree:
        dirty.append(f"the working tree is dirty (git {code_sha}: uncommitted changes to tracked files)")
        remedy.append("commit (or stash) the changes")
    elif code_sha.endswith("-dirty"):
        dirty.append(f"the weights were trained by code with uncommitted changes (git {code_sha})")
        remedy.append("commit the changes and train again (`sslp pretrain`)")
    evaluated = sorted({r["git_sha"] for ev in evaluations for r in ev.rows + ev.baseline
                        if r["git_sha"].endswith("-dirty")})
    if evaluated:
        dirty.append(f"its results were measured by code with uncommitted changes (git {', '.join(evaluated)})")
        remedy.append("evaluate again with the committed code (`sslp eval ... overwrite=true`)")
    if dirty:
        raise DirtyTreeError(
            f"refusing to publish {name}: {'; '.join(dirty)}, and no commit holds the code a -dirty sha "
            f"names. To publish clean shas, {', then '.join(remedy)}, and publish again; or pass force=True "
            "(`sslp zoo publish ... --force`) to publish with the -dirty sha recorded"
        )


def _method_key(recipe: dict[str, Any]) -> str:
    """The `METHODS` key of the recipe's method class (`ssl_platform.methods.simclr.SimCLR` -> `simclr`),
    found by class, so a method's key need not be its module's name; a user's own method (not in
    `METHODS`): its class name in lower case."""
    component = str((recipe.get("method") or {}).get("_component_") or "")
    for key, cls in METHODS.items():
        if component in (f"{cls.__module__}.{cls.__qualname__}", f"ssl_platform.methods.{cls.__qualname__}"):
            return key
    return component.rsplit(".", 1)[-1].lower() or "unknown"


def _data_name(recipe: dict[str, Any]) -> str:
    dataset = (recipe.get("data") or {}).get("dataset") or {}
    cls = str(dataset.get("_component_") or "unknown").rsplit(".", 1)[-1]
    source = dataset.get("source") or dataset.get("name")
    return f"{cls}({source})" if source else cls


def _input_spec(recipe: dict[str, Any], in_chans: int) -> tuple[list[int] | None, list | None, list | None]:
    """[C, H, W], mean and std of the pretraining transform (None for data that is not images)."""
    transform = (recipe.get("data") or {}).get("transform") or {}
    size = transform.get("size") or (recipe.get("method") or {}).get("image_size")
    if not size:
        return None, None, None
    hw = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    channels = int(transform.get("channels", in_chans))
    try:  # the transforms' own defaults where the recipe states none
        mean, std = normalize_stats(channels, transform.get("mean"), transform.get("std"))
    except ValueError:  # e.g. multispectral: only what the recipe states
        mean, std = transform.get("mean"), transform.get("std")
    return [in_chans, *hw], mean, std


def _timm_compat(backbone_spec: dict[str, Any], file: Path) -> tuple[dict[str, Any] | None, str]:
    """(kwargs of plain `timm.create_model`, note), or (None, why plain timm cannot load the file)."""
    import timm
    import torch
    from safetensors import safe_open

    arch = backbone_spec["name"]
    kwargs = {k: v for k, v in backbone_spec.items() if k not in ("name", "small_input")}
    if backbone_spec.get("small_input") or "stem_stride" in kwargs:
        return None, (
            "it was built with small_input=True, a 3x3 stem without max-pool that timm's "
            f"{arch} does not have, so timm.create_model cannot take its weights. Use "
            "ssl_platform.zoo.load_backbone(name), which rebuilds it with "
            "ssl_platform.models.backbones.create_backbone(architecture, **arch_kwargs)"
        )
    plain = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    model = None
    for device in ("meta", "cpu"):  # meta: shapes only, no memory or init time; cpu if a model needs values
        try:
            with torch.device(device):
                model = timm.create_model(arch, num_classes=0, **plain)
            break
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as err:
            error = err
    if model is None:
        return None, f"timm.create_model({arch!r}, num_classes=0, **{kwargs}) fails ({error}); use load_backbone"
    with safe_open(str(file), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if own != shapes:
        differ = sorted(set(own) ^ set(shapes) | {k for k in own if k in shapes and own[k] != shapes[k]})
        return None, f"timm's {arch} has other parameters than the file (e.g. {differ[:3]}); use load_backbone"
    module = timm.models.model_entrypoint(arch).__module__
    note = "" if module.startswith("timm.") else f"{arch} is registered with timm by {module}: import it first"
    return kwargs, note


def _write_card(zoo_dir: Path, entry: ZooEntry, evaluations: list[Evaluation]) -> None:
    """cards/<name>/README.md plus the evaluations' plots (PNG and CSV) under cards/<name>/plots/."""
    # a cards/ link out of the zoo would make the rmtree below delete someone else's directory
    card_dir = contained(zoo_dir, f"{CARDS_DIR}/{entry.name}", entry.name, "card")
    if card_dir.is_symlink():  # a link to another card of this zoo: drop the link, not that card
        card_dir.unlink()
    shutil.rmtree(card_dir, ignore_errors=True)  # a re-publish must not keep plots of another file
    sections = []
    for ev in evaluations:
        plots = []
        for src in sorted((ev.directory / "plots").glob("*.*")):
            if src.suffix in (".png", ".csv"):
                dst = card_dir / "plots" / ev.directory.name / src.name
                io.copy_atomic(src, dst)
                if src.suffix == ".png":
                    plots.append(dst.relative_to(card_dir).as_posix())
        table = report.compare(ev.rows + ev.baseline) if ev.baseline else report.summarise(ev.rows)
        sections.append((ev.suite, ev.directory.name, table, plots))
    io.write_atomic(zoo_dir / card_path(entry.name), render_card(entry, sections).encode())


def publish(
    run_dir: str | Path,
    name: str,
    zoo: str | Path | None = None,
    *,
    license: str = DEFAULT_LICENSE,
    force: bool = False,
    url: str | None = None,
    eval_dirs: Sequence[str | Path] | None = None,
) -> ZooEntry:
    """Publish a run's backbone.safetensors into a local zoo as `name`; returns the new entry.

    Args:
        run_dir: a pretraining run directory (or a backbone .safetensors file beside a config.yaml).
        name: `arch.tag`, lowercase letters, digits and `_` (e.g. `simclr_resnet18.fmnist32_2ep`).
        zoo: a local zoo directory (see `zoo.resolve_zoo`); created if missing.
        license: the weights' license, recorded in the entry and the card.
        force: replace an entry of this name whose file has another sha256, and publish weights or
            results whose git sha is `-dirty` (see `check_clean`).
        url: where the weights file is downloadable (a URL ending in `/` gets the file name appended).
        eval_dirs: where to look for results (see `find_evaluations`).

    Raises:
        ZooError: bad name, remote zoo, or an existing entry with another file and no `force`.
        DirtyTreeError: the weights or their results name a `-dirty` git sha, and no `force`.
    """
    zoo = resolve_zoo(zoo)
    if is_remote(zoo):
        raise ZooError(f"publish writes into a local zoo directory, not {zoo}: publish into a directory, then "
                       "copy it (index.json, *.safetensors, cards/) to the server")
    if not NAME.fullmatch(name):
        raise ZooError(f"zoo name {name!r} must be arch.tag in lowercase letters, digits and '_', e.g. "
                       "simclr_resnet18.fmnist_200ep ('-' separates the hash in file names)")
    file = io.backbone_file(run_dir)
    run_dir = file.parent
    meta = io.read_backbone_metadata(file)
    if not meta.get("backbone"):
        raise ZooError(f"{file} has no architecture metadata; only backbones written by the engine "
                       "(checkpoint.io.export_backbone) can be published")
    sha256 = file_sha256(file)
    zoo_dir = Path(zoo)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    # the lock lives in the cache, so a zoo kept under version control gets no lock file
    with file_lock(cache_dir() / "locks" / f"{hashlib.sha256(str(zoo_dir.resolve()).encode()).hexdigest()[:16]}.lock"):
        entries = read_index(zoo_dir) if (zoo_dir / INDEX_FILE).is_file() else {}
        old = entries.get(name)
        if old and old.sha256 != sha256 and not force:
            raise ZooError(
                f"the zoo {zoo} already has {name} with another file (sha256 {old.sha256[:8]}..., published "
                f"{old.created}); this one is {sha256[:8]}... Choose another tag (e.g. {name}_v2), or pass "
                "--force to replace it"
            )
        io.load_backbone(file)  # a file that does not load back is never published
        spec = meta["backbone"]
        recipe = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
        in_chans = int(spec.get("in_chans", 3))
        input_size, mean, std = _input_spec(recipe or {}, in_chans)
        timm_kwargs, timm_note = _timm_compat(spec, file)
        file_name = weights_file_name(name, sha256)
        evaluations = find_evaluations(run_dir, sha256, eval_dirs)
        code_sha = str(meta.get("git_sha") or git_sha())
        if not force:
            check_clean(name, code_sha, not meta.get("git_sha"), evaluations)
        entry = ZooEntry(
            name=name, method=_method_key(recipe or {}), architecture=spec["name"],
            arch_kwargs={k: v for k, v in spec.items() if k != "name"}, in_chans=in_chans,
            num_features=int(meta.get("num_features") or 0), file=file_name, sha256=sha256,
            size_bytes=file.stat().st_size, input_size=input_size, mean=mean, std=std,
            url=(url + file_name if url and url.endswith("/") else url), timm_kwargs=timm_kwargs,
            timm_note=timm_note, pretrain_data=_data_name(recipe or {}), epochs=meta.get("epoch"),
            steps=meta.get("step"), recipe_name=str(meta.get("recipe_name") or (recipe or {}).get("name") or ""),
            recipe=recipe or {}, git_sha=code_sha,
            created=old.created if old and old.sha256 == sha256 else
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            license=license, results=[r for ev in evaluations for r in aggregate(ev)], card=card_path(name),
            random_init_better=random_init_better(evaluations),
            interpolation=str(meta.get("interpolation") or EVAL_INTERPOLATION),
        )
        entry.check(f"the entry published into {zoo}")  # e.g. a --url of another scheme: refused before any write
        weights = contained(zoo_dir, file_name, name, "file")
        if not (weights.is_file() and file_sha256(weights) == sha256):
            io.copy_atomic(file, weights, sha256)
        _write_card(zoo_dir, entry, evaluations)
        entries[name] = entry
        write_index(zoo_dir, entries)
        if old and old.file != file_name:
            (zoo_dir / old.file).unlink(missing_ok=True)
    if zoo_dir.resolve() == (REPO_ROOT / "zoo").resolve():  # the shipped zoo: keep its page in step
        write_docs(zoo_dir, REPO_ROOT / "docs" / "zoo.md")
    return entry
