"""Training throughput and peak memory of a recipe: `python tools/bench.py RECIPE [k=v ...] [--steps N]`.

Runs the recipe through the real engine for `--steps` optimizer steps in a temporary run directory
(the first `--warmup` steps are not timed), then prints one JSON line: samples/s (global), step time,
peak memory (CUDA allocator on GPU, max RSS on CPU), device and the recipe's key settings. Results
go into docs/benchmarks.md by hand, with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ssl_platform import pretrain


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*args.overrides, f"train.out_dir={tmp}/run", f"train.max_steps={args.steps}",
                     "train.log_every_steps=1", f"train.save_every_steps={args.steps}", "train.resume=never"]
        cfg = pretrain.load_recipe(args.recipe, overrides)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        pretrain.run(cfg)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = [r["samples_per_s"] for r in rows if "samples_per_s" in r][args.warmup:]
    if not timed:
        raise SystemExit(f"--steps {args.steps} leaves no timed step after --warmup {args.warmup}")
    cuda = torch.cuda.is_available()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {
        "recipe": args.recipe, "overrides": args.overrides, "git": git_sha(),
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads",
        "batch_size": cfg.data.batch_size, "precision": cfg.train.precision,
        "samples_per_s_median": round(statistics.median(timed), 1),
        "step_s_median": round(cfg.data.batch_size / statistics.median(timed), 4),
        "peak_memory_gib": round(peak, 3), "peak_memory_kind": "cuda allocated" if cuda else "process max RSS",
        "timed_steps": len(timed),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
