"""Image-to-text and text-to-image retrieval: recall at K over held-out image-text pairs.

Pair i of a held-out set is image i with text i; every image ranks every text by a score (and every
text every image), and R@K is the share of queries whose own partner is among the K best.
`recall_at_k` is the metric on a score matrix; `pair_scores` fills that matrix with a model's
matching score, encoding every image and text once and fusing every pair in blocks;
`retrieval_metrics` does both for a dataset, and `method_from_spec` rebuilds a pretraining run's
whole method (the encoders *and* fusion, which `backbone.safetensors` lacks) with
`checkpoint.io.load_run_method`. A method is asked only for what `methods.base.ImageTextMatcher`
declares (M3AE implements it): image tokens, text tokens and a score for pairs of them.

Ties count against the query (a partner tied with another candidate ranks behind it), so a
constant score gives chance, never a perfect recall.

Scoring every pair is quadratic: N pairs need N x N runs of the fusion (382 pairs: 145,924), so
before it starts `retrieval_metrics` says what it will cost (stderr, rank 0): the pairs and passes
from the sizes, then the time of the first pass extrapolated to the rest. Bars count the pairs
encoded and scored where stderr is a terminal (`features.show_progress`); `progress=False` turns
off the bars and the estimate.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssl_platform import distributed
from ssl_platform.checkpoint.io import load_run_method
from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.features import inference, show_progress
from ssl_platform.methods.base import ImageTextMatcher

KS = (1, 5, 10)


def ranks_of_partners(scores: Tensor) -> Tensor:
    """`scores: [N, N]` (query i, candidate j; the partner of query i is candidate i) -> `[N]` ranks, 0 = best.

    The rank is the number of other candidates scoring at least as high as the partner (ties pessimistic).
    """
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square [N, N] matrix of pairs, got {tuple(scores.shape)}")
    own = scores.diagonal()[:, None]  # [N, 1]
    ahead = scores >= own
    return ahead.sum(1) - 1  # the partner itself is always >= itself


def recall_at_k(scores: Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K in % both ways from `scores: [N_images, N_texts]` with image i paired with text i.

    Returns:
        `{"i2t_r1": ..., "i2t_r5": ..., "t2i_r1": ..., ...}` for each K in `ks`, plus `"rsum"`, their sum.
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {list(ks)}")
    scores = scores.float()
    out: dict[str, float] = {}
    for name, matrix in (("i2t", scores), ("t2i", scores.T)):
        ranks = ranks_of_partners(matrix)
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * (ranks < k).float().mean().item()
    out["rsum"] = sum(out.values())
    return out


def pair_scores(
    score: Callable[[Tensor, Tensor, Tensor], Tensor],
    image_tokens: Tensor,
    text_tokens: Tensor,
    text_mask: Tensor,
    block: int = 64,
    progress: bool = False,
) -> Tensor:
    """The `[N_images, N_texts]` matrix of `score` over every image-text combination, on the CPU.

    Args:
        score: `(image [P, Ni, D], text [P, L, Dt], text_mask [P, L]) -> [P]` for P pairs (e.g.
            `M3AE.match_logits`), called on blocks of `block` images x all texts: one pass each.
        image_tokens: `[N_images, Ni, D]` cached image encoder outputs.
        text_tokens: `[N_texts, L, Dt]` cached text encoder outputs.
        text_mask: `[N_texts, L]` bool, True at real tokens.
        block: images per call (memory: `block * N_texts` pairs at once).
        progress: print the time of the first pass extrapolated to all of them, and draw a bar.
    """
    n_img, n_txt = image_tokens.shape[0], text_tokens.shape[0]
    passes = math.ceil(n_img / block)
    rows = []
    with tqdm(total=n_img * n_txt, desc="retrieval: score", unit="pair", unit_scale=True, leave=False,
              dynamic_ncols=True, disable=not show_progress(progress)) as bar:
        for start in range(0, n_img, block):
            began = time.perf_counter()
            imgs = image_tokens[start:start + block]  # [b, Ni, D]
            b = imgs.shape[0]
            pairs_img = imgs.repeat_interleave(n_txt, dim=0)  # [b * N_texts, Ni, D]: image-major order
            pairs_txt = text_tokens.repeat(b, 1, 1)
            pairs_mask = text_mask.repeat(b, 1)
            # to the CPU block by block: a few floats each, and the pass is timed once it is really done
            rows.append(score(pairs_img, pairs_txt, pairs_mask).float().view(b, n_txt).cpu())
            bar.update(b * n_txt)
            if start == 0 and passes > 1 and progress:
                took = time.perf_counter() - began
                _note(f"the first pass took {took:.1f}s: about {tqdm.format_interval(took * (passes - 1))} "
                      f"for the other {passes - 1} (estimated from the timed first pass, warm-up included)")
    return torch.cat(rows)


def _note(message: str) -> None:
    """A line on stderr from rank 0, drawn above any progress bars."""
    if distributed.is_main():
        tqdm.write(f"[retrieval] {message}", file=sys.stderr)
        sys.stderr.flush()


def encode_pairs(method: ImageTextMatcher, dataset: Dataset, transform: Callable[[Any], dict], batch_size: int = 128,
                 device: str | torch.device = "cpu", progress: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every pair of `dataset` through the method's image and text encoders, in dataset order.

    Returns:
        image tokens `[N, Ni, D]`, text tokens `[N, L, Dt]`, text mask `[N, L]` and labels `[N]`, on `device`.
    """
    loader = DataLoader(TransformedDataset(dataset, transform), batch_size=batch_size, shuffle=False, collate_fn=collate)
    images, texts, masks, labels = [], [], [], []
    with tqdm(total=len(dataset), desc="retrieval: encode", unit="pair", leave=False, dynamic_ncols=True,
              disable=not show_progress(progress)) as bar:
        for batch in loader:
            ids, mask = batch["text_ids"].to(device), batch["text_mask"].to(device).bool()
            images.append(method.image_tokens(batch["image"].to(device)))
            texts.append(method.text_tokens(ids, mask))
            masks.append(mask)
            labels.append(batch["label"])
            bar.update(len(batch["label"]))
    return torch.cat(images), torch.cat(texts), torch.cat(masks), torch.cat(labels)


def retrieval_metrics(method: nn.Module, dataset: Dataset, transform: Callable[[Any], dict], ks: Sequence[int] = KS,
                      batch_size: int = 128, block: int = 32, device: str | torch.device = "cpu",
                      progress: bool = True) -> dict[str, float]:
    """R@K both ways over the pairs of `dataset`, ranked by `method.match_logits` (e.g. M3AE's ITM head).

    The method (an `nn.Module` implementing `ImageTextMatcher`) runs in eval mode under
    `torch.inference_mode()`; its train/eval flags are restored. With `progress`, the cost is printed
    first (stderr, rank 0) and bars drawn where stderr is a terminal.
    """
    if not isinstance(method, ImageTextMatcher):
        raise TypeError(f"retrieval ranks image-text pairs with a method's matching score (image_tokens, text_tokens, "
                        f"match_logits); {type(method).__name__} has none: give the run of an image-text method "
                        "such as M3AE")
    if progress:
        n = len(dataset)
        _note(f"{n} pairs: every image scored against every text, {n * n:,} runs of the matching head in "
              f"{math.ceil(n / block)} passes of {min(block, n)} images x {n} texts (estimated from the sizes; "
              "the time follows the first pass)")
    with inference(method):
        image, text, mask, _ = encode_pairs(method, dataset, transform, batch_size, device, progress)
        scores = pair_scores(method.match_logits, image, text, mask, block, progress)
    return recall_at_k(scores, ks)


def method_from_spec(spec: str, seed: int = 0) -> tuple[nn.Module, str]:
    """A `backbone=` value of the eval command -> (whole method, name): `RUN_DIR` (trained weights) or
    `random:RUN_DIR` (that run's architecture at random init, seeded by `seed`)."""
    if spec.startswith("random:"):
        run_dir = Path(spec.removeprefix("random:"))
        return load_run_method(run_dir, random_init=True, seed=seed), f"random-{run_dir.name}"
    return load_run_method(spec), Path(spec).name
