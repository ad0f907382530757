"""Show what a SparK run reconstructs: test images, what the encoder saw, and the filled-in result.

    python tools/spark_reconstruct.py runs/spark_resnet18_fmnist_2ep --out docs/img/spark/reconstructions.png

Rebuilds the method from the run's `config.yaml`, loads `checkpoints/last.pt` (the decoder is not in
`backbone.safetensors`), hides cells with a fixed seed and reconstructs. The model predicts each
hidden patch normalised to zero mean and unit variance, so, as in MAE's and SparK's figures, the
prediction is shown with the true patch's mean and std put back; the shapes and edges are the model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from omegaconf import OmegaConf

from ssl_platform import config
from ssl_platform.checkpoint.io import load_run_method
from ssl_platform.data.transforms import EvalTransform
from ssl_platform.losses.reconstruction import patchify, unpatchify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = OmegaConf.load(args.run / "config.yaml")
    method = load_run_method(args.run)
    dataset = config.instantiate({**OmegaConf.to_container(cfg.data.dataset), "split": "test"})
    size, channels = int(cfg.method.image_size), int(cfg.method.in_chans)
    transform = EvalTransform(size=size, channels=channels)
    x = torch.stack([transform(dataset[i][0])["image"] for i in range(args.images)])

    torch.manual_seed(args.seed)
    grid = method.visible_grid(len(x), size, size, x.device)
    with torch.no_grad():
        pred = patchify(method.reconstruct(x, grid), method.stride)
    target = patchify(x, method.stride)
    mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
    shown = unpatchify(pred * std + mean, method.stride, (size // method.stride,) * 2, channels)
    visible = grid.repeat_interleave(method.stride, 2).repeat_interleave(method.stride, 3)
    rows = {"image": x, "encoder input": x.masked_fill(~visible, float("nan")),
            "reconstruction": torch.where(visible, x, shown)}

    fig, axes = plt.subplots(len(rows), len(x), figsize=(1.2 * len(x), 1.3 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.imshow(image[0] if channels == 1 else image.permute(1, 2, 0).clamp(-3, 3), cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel(title, fontsize=8)
    fig.suptitle(f"{cfg.name}: hidden cells reconstructed (mask ratio {method.mask_ratio})", fontsize=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
