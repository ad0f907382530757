"""How well a SatMAE++ run on the Landsat-7 scene rebuilds the held-out rows, and how hard the tile task is.

    python tools/satmae_heldout.py runs/satmae_pp_grouped_vit_landsat7_100ep

1. Reconstruction: the run's method (rebuilt from `config.yaml`, weights from `checkpoints/last.pt`,
   since the decoder is not in `backbone.safetensors`) against the same architecture at its
   initialisation, on the 64-px crops (stride 8) of the scene's test rows; each loss term is the mean
   over 5 mask draws, the same draws for both.
2. The band-mean baseline of `eval/landsat_landcover.yaml`: a logistic regression on each 16-px
   tile's 6 mean band values (standardised, C swept), scored on the same test tiles — what a
   representation must beat for the tile task to say anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ssl_platform import pretrain
from ssl_platform.checkpoint.io import load_run_method
from ssl_platform.data.datasets.multispectral import MultispectralTiles


def heldout_reconstruction(run: Path, draws: int = 5) -> dict[str, dict[str, float]]:
    """{"init": {loss term: mean}, "trained": {...}} over `draws` mask draws on the held-out crops."""
    cfg = pretrain.load_recipe(run / "config.yaml", [])
    methods = {"init": load_run_method(run, random_init=True, seed=cfg.train.seed), "trained": load_run_method(run)}
    crops = MultispectralTiles(split="test", tile_size=cfg.method.image_size, stride=8).tiles
    out = {}
    for name, method in methods.items():
        totals: dict[str, float] = {}
        with torch.no_grad():
            for draw in range(draws):
                torch.manual_seed(100 + draw)
                for key, value in method({"image": crops}).items():
                    totals[key] = totals.get(key, 0.0) + float(value) / draws
        out[name] = totals
    return out


def band_mean_baseline(cs=(0.1, 1.0, 10.0, 100.0)) -> dict[float, float]:
    """{C: test top-1 %} of a logistic regression on the tiles' mean band values."""
    train = MultispectralTiles(split="train", tile_size=16, labels="landcover")
    test = MultispectralTiles(split="test", tile_size=16, labels="landcover")
    x, x_test = train.tiles.mean((2, 3)).numpy(), test.tiles.mean((2, 3)).numpy()  # [N, bands]
    scaler = StandardScaler().fit(x)
    return {c: 100.0 * float((LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x), train.targets)
                              .predict(scaler.transform(x_test)) == test.targets).mean()) for c in cs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    for name, terms in heldout_reconstruction(args.run_dir).items():
        print(name, {k: round(v, 4) for k, v in sorted(terms.items())})
    for c, acc in band_mean_baseline().items():
        print(f"band means, logistic regression C={c:g}: top-1 {acc:.2f}%")


if __name__ == "__main__":
    main()
