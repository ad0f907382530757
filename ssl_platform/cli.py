"""Command line: `python -m ssl_platform {pretrain,eval,data}` (console script `sslp`).

    sslp pretrain recipes/simclr/debug.yaml train.max_steps=5 [--dry-run]
    torchrun --nproc_per_node 2 -m ssl_platform pretrain RECIPE [k=v ...]
    torchrun --nproc_per_node 2 -m ssl_platform eval SUITE backbone=...   (same results, rank 0 writes)
    sslp eval eval/digits.yaml backbone=random|random:RUN_DIR|RUN_DIR|FILE.safetensors [out_dir=DIR]
              [overwrite=true] [device=cuda] [k=v ...]     (backbone=A,B,... compares several)
    sslp eval eval/tables_wine.yaml backbone=RUN_DIR,raw   (raw: the table's own columns, no backbone)
    sslp data prepare fashion-mnist|mnist [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ssl_platform.config import ConfigError


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


def resolve_backbone(spec: str, suite_cfg, seed: int = 0):
    """A `backbone=` value -> (module, name, sha256 of its file or "" for a random init).

    See the module docstring for the accepted forms. `raw` is the raw-feature baseline of tables
    (`evaluation.tabular.RawTabular`), sized by the suite's `random_backbone` schema (num_numeric,
    cat_cardinalities).
    """
    import torch

    from ssl_platform.checkpoint.io import backbone_file, load_backbone, read_backbone_metadata
    from ssl_platform.config import to_plain
    from ssl_platform.evaluation.report import file_sha256
    from ssl_platform.models.backbones import from_spec

    if spec == "raw":
        from ssl_platform.evaluation.tabular import RawTabular

        arch = to_plain(suite_cfg.get("random_backbone")) or {}
        if "num_numeric" not in arch:
            raise ConfigError(
                "backbone=raw is the raw-feature baseline of a table: it needs the table's schema in the suite, "
                "random_backbone: {name: ..., num_numeric: N, cat_cardinalities: [...]} (Table(...).schema())"
            )
        return RawTabular(arch["num_numeric"], arch.get("cat_cardinalities") or ()), "raw", ""
    if spec == "random" or spec.startswith("random:"):
        torch.manual_seed(seed)
        if spec == "random":
            arch = to_plain(suite_cfg.get("random_backbone"))
            if not arch:
                raise ConfigError("backbone=random needs random_backbone: {name: ..., ...} in the suite")
            return from_spec(arch), "random", ""
        source = Path(spec.split(":", 1)[1])
        file = source / "backbone.safetensors" if source.is_dir() else source
        name = f"random-{source.name if source.is_dir() else source.stem}"
        return from_spec(read_backbone_metadata(file)["backbone"]), name, ""
    path = Path(spec)
    if path.exists():
        file = backbone_file(path)
        return load_backbone(file), path.name if path.is_dir() else path.stem, file_sha256(file)
    raise FileNotFoundError(
        f"backbone={spec!r} is neither a run directory nor a .safetensors file; "
        "use backbone=random, backbone=random:RUN_DIR, backbone=RUN_DIR, backbone=FILE.safetensors or, for "
        "tables, backbone=raw"
    )


def _eval(args: argparse.Namespace) -> int:
    import torch

    from ssl_platform import distributed
    from ssl_platform.evaluation.plots import write_plots
    from ssl_platform.evaluation.report import compare
    from ssl_platform.evaluation.suite import load_suite, run_suite

    plain = [o for o in args.overrides if not o.startswith(("backbone=", "out_dir=", "device=", "overwrite="))]
    options = dict(o.split("=", 1) for o in args.overrides if o not in plain)
    if not options.get("backbone"):
        raise ConfigError("eval needs backbone=random | random:RUN_DIR | RUN_DIR | FILE.safetensors | raw "
                          "(comma-separated for several)")
    specs = options["backbone"].split(",")
    if options.get("out_dir") and len(specs) > 1:
        raise ConfigError("out_dir= takes one backbone; with several, each writes to runs/eval/<suite>-<backbone>")
    suite = load_suite(args.suite, plain)
    device = distributed.init_from_env()  # under torchrun: every rank extracts a share of the features
    device = torch.device(options["device"]) if "device" in options else device
    overwrite = options.get("overwrite", "false").lower() in ("1", "true", "yes")
    rows = []
    try:
        for spec in specs:
            backbone, name, sha256 = resolve_backbone(spec, suite)
            out_dir = Path(options.get("out_dir") or Path("runs") / "eval" / f"{Path(args.suite).stem}-{name}")
            rows += run_suite(suite, backbone.to(device), name, out_dir, device=str(device), overwrite=overwrite,
                              backbone_sha256=sha256)
            if distributed.is_main():
                print(f"[ssl_platform] {name}: results in {out_dir}", flush=True)
        if distributed.is_main():
            table = compare(rows)
            if len(specs) > 1:  # the side-by-side table and plots of every backbone, next to the runs
                both = Path("runs") / "eval" / f"{Path(args.suite).stem}-compare"
                both.mkdir(parents=True, exist_ok=True)
                (both / "compare.md").write_text(table)
                write_plots(both, rows)
                print(f"[ssl_platform] comparison table and plots in {both}", flush=True)
            print(table)
    finally:
        distributed.destroy()
    return 0


def _data(args: argparse.Namespace) -> int:
    from ssl_platform.data.prepare import prepare

    path = prepare(args.name, Path(args.root) if args.root else None)
    print(f"[ssl_platform] {args.name} is ready in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sslp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain a backbone from a recipe")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe, validate it, and exit")
    p.set_defaults(fn=_pretrain)
    e = sub.add_parser("eval", help="run an evaluation suite on a backbone")
    e.add_argument("suite")
    e.add_argument("overrides", nargs="*",
                   help="backbone=..., out_dir=..., device=..., overwrite=true, and suite key=value")
    e.set_defaults(fn=_eval)
    d = sub.add_parser("data", help="prepare offline data sets")
    dsub = d.add_subparsers(dest="action", required=True)
    dp = dsub.add_parser("prepare", help="put a data set under the data root (SSL_PLATFORM_DATA, default ./data)")
    dp.add_argument("name", choices=["fashion-mnist", "mnist"])
    dp.add_argument("--root", default=None)
    dp.set_defaults(fn=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors about the user's input print one clear message (exit 2), not a traceback.

    Set SSLP_TRACEBACK=1 to see the traceback as well.
    """
    args = build_parser().parse_args(argv)
    from ssl_platform.checkpoint.io import CheckpointError
    from ssl_platform.data.prepare import DataSourceError
    from ssl_platform.engine.trainer import NonFiniteLossError

    try:
        return args.fn(args)
    except (ConfigError, CheckpointError, DataSourceError, NonFiniteLossError, FileNotFoundError,
            FileExistsError, ValueError) as err:
        if os.environ.get("SSLP_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
