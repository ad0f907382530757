"""The GPU check (`tools/gpu_check.sh`): what the engine does on a CUDA machine, in one command, < 8 min.

    tools/gpu_check.sh [--out DIR]                 on a CUDA machine (bf16)
    tools/gpu_check.sh --device cpu --tiny         the same path end to end at tiny sizes (the tests run it)

Runs, in order, each through the real engine (`ssl_platform.bench`):
1. every `recipes/*/debug.yaml` for 20 steps (bf16 on CUDA);
2. the demo recipe with device views and with worker views;
3. SimCLR ResNet-50 at 224 px (`recipes/simclr/resnet50_imagenet_100ep.yaml`, batch 256) and I-JEPA
   ViT-B/16 (`recipes/ijepa/vit_huge14_imagenet_300ep.yaml` with a ViT-B/16, batch 128) on a folder of
   generated JPEGs: engine, plain loop, model alone, input alone; the model step's FLOPs (torch's
   FlopCounterMode) give an MFU estimate against the GPU's dense bf16 peak, and the verdict says whether
   the input pipeline bounds the run (engine below 85% of the model-alone ceiling with the input slower
   than the model).
Writes `gpu_check.json` and `gpu_check.md` (the rows for docs/benchmarks.md) into --out, and prints both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssl_platform import bench, config, pretrain
from ssl_platform.engine.devices import autocast
from ssl_platform.provenance import git_sha

ROOT = Path(__file__).resolve().parents[1]
DEMO = "recipes/simclr/resnet18_fmnist_1ep.yaml"
# dense bf16 peak FLOP/s by device name (vendor data sheets); unknown devices get no MFU
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def make_folder(root: Path, n: int, side: int) -> Path:
    """An ImageFolder of `n` random JPEGs in 4 classes, sides around `side` (varied, like photos)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(side * f) for f in rng.uniform(0.8, 1.3, 2))
        # smooth noise: JPEG sizes and decode times like natural images, not like white noise
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(folder / f"{i}.jpg", quality=90)
    return root


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def step_flops(cfg, device: torch.device) -> float:
    """FLOPs of one training step (forward + backward) of the recipe's method on one of its batches."""
    from torch.utils.flop_counter import FlopCounterMode

    parts = bench._components(cfg)
    method = parts["method"].to(device)
    batch = next(bench._engine_batches(parts, cfg, device))  # the engine's input: what the step reads
    with FlopCounterMode(display=False) as counter:
        with autocast(device, torch.bfloat16 if device.type == "cuda" else None):
            loss = method(batch)["loss"]
        loss.backward()
    return float(counter.get_total_flops())


def measure(name: str, recipe: str, overrides: list[str], steps: int, warmup: int, device: torch.device,
            full: bool = False) -> dict:
    """The engine alone (or, with `full`, all of `sslp bench`) on one recipe, with peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if full:
        row = bench.bench(recipe, overrides, steps=steps, warmup=warmup)
    else:
        row = {"engine": round(bench.engine_rate(recipe, overrides, steps, warmup), 1),
               "batch_size": pretrain.load_recipe(recipe, overrides).data.batch_size}
    row.update({"name": name, "recipe": recipe, "overrides": overrides, "seconds": round(time.perf_counter() - start, 1),
                "peak_memory_gib": peak_memory_gib(device)})
    if full:
        cfg = pretrain.load_recipe(recipe, overrides)
        flops = step_flops(cfg, device)
        peak = next((v for k, v in PEAK_BF16.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None)
        row["step_tflop"] = round(flops / 1e12, 3)
        row["mfu"] = round(flops * row["model_only"] / row["batch_size"] / peak, 3) if peak else None
        row["mfu_engine"] = round(flops * row["engine"] / row["batch_size"] / peak, 3) if peak else None
        row["data_bound"] = row["engine_vs_ceiling"] < 0.85 and row["input_only"] < row["model_only"]
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict], device_name: str, sha: str) -> str:
    lines = [f"GPU check on {device_name}, git {sha} (`tools/gpu_check.sh`):", "",
             "| run | batch | engine samples/s | plain | model only | input only | engine/ceiling | MFU | data-bound | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(key: str, fmt: str = "{:.1f}", r: dict = r) -> str:
            return fmt.format(r[key]) if r.get(key) is not None else "-"
        lines.append(f"| {r['name']} | {r['batch_size']} | {cell('engine')} | {cell('plain')} | {cell('model_only')} | "
                     f"{cell('input_only')} | {cell('engine_vs_ceiling', '{:.2f}')} | {cell('mfu', '{:.2f}')} | "
                     f"{r.get('data_bound', '-')} | {cell('peak_memory_gib', '{:.1f}')} |")
    return "\n".join(lines) + "\n"


def plan(tiny: bool, cuda: bool, folder: Path) -> list[tuple[str, str, list[str], bool]]:
    """(name, recipe, overrides, full bench) of every measurement."""
    precision = ["train.precision=bf16"] if cuda else ["train.precision=fp32"]
    quick = ["data.num_workers=0"] if tiny else []  # the debug recipes are small already
    runs = [(f"debug {p.parent.name}", str(p.relative_to(ROOT)), precision + quick, False)
            for p in sorted((ROOT / "recipes").glob("*/debug.yaml"))]
    demo = precision + (["data.batch_size=32", "data.num_workers=0"] if tiny else ["data.num_workers=8"])
    runs += [("demo, views on device", DEMO, demo + ["data.views_on=device"], False),
             ("demo, views in workers", DEMO, demo + ["data.views_on=workers"], False)]
    root = [f"data.dataset.root={folder}"]
    if tiny:
        simclr = ["method.backbone=resnet18", "data.transform.size=32", "data.transform.load_size=40",
                  "data.batch_size=8", "data.num_workers=0"]
        ijepa = ["method.backbone=vit_tiny_patch16_224", "method.image_size=64", "method.predictor_dim=96",
                 "method.predictor_depth=1", "method.min_keep=2", "method.official_collator=false", "data.transform.size=64",
                 "data.transform.load_size=72", "data.batch_size=8", "data.num_workers=0"]
    else:
        simclr = ["data.batch_size=256", "data.num_workers=14"]
        ijepa = ["method.backbone=vit_base_patch16_224", "method.predictor_dim=384", "method.predictor_depth=6",
                 "data.batch_size=128", "data.num_workers=14"]
    runs += [("SimCLR ResNet-50 224 px", "recipes/simclr/resnet50_imagenet_100ep.yaml", precision + root + simclr, True),
             ("I-JEPA ViT-B/16 224 px", "recipes/ijepa/vit_huge14_imagenet_300ep.yaml", precision + root + ijepa, True)]
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and 3 steps: the whole path in ~2 min on CPU")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: no CUDA device here; run `tools/gpu_check.sh --device cpu --tiny` to try the path on CPU",
              file=sys.stderr)
        return 2
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    steps, warmup = (4, 1) if args.tiny else (20, 5)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "images", 48 if args.tiny else 2048, 48 if args.tiny else 400)
        for name, recipe, overrides, full in plan(args.tiny, cuda, folder):
            try:
                rows.append(measure(name, recipe, overrides, steps, warmup, device, full))
            except (config.ConfigError, ValueError, RuntimeError) as err:  # one failure must not hide the others
                print(f"[gpu_check] {name} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                rows.append({"name": name, "recipe": recipe, "overrides": overrides, "error": f"{type(err).__name__}: {err}"})
    name = torch.cuda.get_device_name(0) if cuda else f"cpu x{torch.get_num_threads()} threads"
    sha = git_sha()
    (args.out / "gpu_check.json").write_text(json.dumps({"device": name, "git": sha, "rows": rows}, indent=1))
    table = markdown([r for r in rows if "error" not in r], name, sha)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    failed = [r["name"] for r in rows if "error" in r]
    if failed:
        print(f"[gpu_check] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
