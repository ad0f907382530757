"""Where the batch transform runs (`devices.place_batch_transform`): the views are the same wherever it does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from ssl_platform import pretrain
from ssl_platform.data.collate import TransformedDataset, collate
from ssl_platform.data.datasets import Digits
from ssl_platform.data.transforms import SimCLRViews
from ssl_platform.engine.devices import place_batch_transform, prefetch

CPU = torch.device("cpu")
DEBUG = str(Path(__file__).resolve().parents[2] / "recipes/simclr/debug.yaml")


def test_on_a_cpu_with_workers_the_transform_runs_after_collation_and_nothing_runs_after_the_loader():
    def views(batch):
        return {**batch, "views": batch["pixels"] * 2}

    collate_fn, transform = place_batch_transform(collate, views, CPU, num_workers=2)
    assert transform is None
    out = collate_fn([{"pixels": torch.ones(1, 2, 2)}, {"pixels": torch.zeros(1, 2, 2)}])
    assert torch.equal(out["views"], torch.stack([torch.full((1, 2, 2), 2.0), torch.zeros(1, 2, 2)]))


@pytest.mark.parametrize("device, workers", [(CPU, 0), (torch.device("cuda"), 2)])
def test_in_the_training_process_or_on_a_gpu_the_transform_stays_after_the_loader(device, workers):
    def views(batch):
        return batch

    assert place_batch_transform(collate, views, device, workers) == (collate, views)
    assert place_batch_transform(collate, None, CPU, 2) == (collate, None)


@pytest.mark.slow  # starts a loader worker
def test_views_made_in_a_worker_equal_the_views_made_in_the_training_process():
    """SimCLR's device views of the same samples and seeds, made in one loader worker after collation and
    in the training process after the loader: equal (the transform draws nothing, every draw came with
    the samples)."""
    workers, batch_views, collate_fn = pretrain.device_halves(SimCLRViews(8, 1, min_scale=0.3, cj_strength=0.5,
                                                                          blur_prob=0.0, gray_prob=0.0), None)
    dataset = TransformedDataset(Digits("train"), workers)
    indices = [[(i, 1000 + i) for i in range(32 * b, 32 * b + 32)] for b in range(3)]  # (index, seed) per sample

    def batches(num_workers):
        placed, after = place_batch_transform(collate_fn, batch_views, CPU, num_workers)
        loader = DataLoader(dataset, batch_sampler=indices, num_workers=num_workers, collate_fn=placed)
        return list(prefetch(loader, CPU, transform=after))

    here, there = batches(0), batches(1)
    for a, b in zip(here, there, strict=True):
        assert set(a) == set(b) and "pixels" not in b and "view_params" not in b
        for va, vb in zip(a["views"], b["views"], strict=True):
            assert va.shape == (32, 1, 8, 8)
            torch.testing.assert_close(va, vb, rtol=0, atol=1e-6)


@pytest.mark.slow  # two 4-step runs of the debug recipe
def test_a_run_with_loader_workers_trains_the_weights_of_a_run_without(tmp_path):
    """The debug recipe (device views) with data.num_workers 0 and 1: the same views, hence the same weights."""
    weights = []
    for workers in (0, 1):
        out = tmp_path / f"w{workers}"
        pretrain.run(pretrain.load_recipe(DEBUG, [
            f"train.out_dir={out}", f"data.num_workers={workers}", "train.max_steps=4", "train.save_every_steps=4"]))
        weights.append(load_file(out / "backbone.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6, msg=name)
