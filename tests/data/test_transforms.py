"""Transforms: batch keys, shapes, dtypes, independence of views, seeding, normalisation by hand, the
multispectral augmentation, and the dotted paths stored recipes name them by."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_platform import config
from ssl_platform.data.transforms import (
    EvalTransform,
    ImageTextTransform,
    MultispectralAugment,
    ResizeBands,
    SimCLRViews,
    SupervisedTransform,
    normalize_stats,
)


def gray_image(size=28, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8))


def rgb_image(size=32, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def seeded(transform, image, seed, numpy_seed=0):
    """Apply `transform` after seeding only what the engine seeds (torch and random); numpy is noise."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(numpy_seed)
    return transform(image)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("make_image", [gray_image, rgb_image])
class TestShapes:
    def test_simclr_views(self, channels, size, make_image):
        out = SimCLRViews(size, channels=channels, n_views=3)(make_image())
        assert list(out) == ["views"] and len(out["views"]) == 3
        for view in out["views"]:
            assert view.shape == (channels, size, size) and view.dtype == torch.float32
            assert torch.isfinite(view).all()

    def test_eval_and_supervised(self, channels, size, make_image):
        for transform in (
            EvalTransform(size, channels=channels),
            SupervisedTransform(size, channels=channels),
        ):
            out = transform(make_image())
            assert list(out) == ["image"]
            assert out["image"].shape == (channels, size, size) and out["image"].dtype == torch.float32


class TestSimCLRViews:
    @pytest.mark.parametrize("channels, image", [(1, gray_image()), (3, rgb_image())])
    def test_views_differ(self, channels, image):
        views = seeded(SimCLRViews(28, channels=channels), image, 0)["views"]
        assert not torch.allclose(views[0], views[1])

    @pytest.mark.parametrize("channels, image", [(1, gray_image()), (3, rgb_image())])
    def test_same_torch_and_random_seed_same_views(self, channels, image):
        # blur always on, so a numpy-RNG blur would show up as a difference between numpy seeds
        transform = SimCLRViews(28, channels=channels, blur_prob=1.0)
        a = seeded(transform, image, 7, numpy_seed=1)["views"]
        b = seeded(transform, image, 7, numpy_seed=2)["views"]
        c = seeded(transform, image, 8, numpy_seed=1)["views"]
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert not torch.equal(a[0], c[0])

    def test_gray_has_no_color_ops_and_one_channel_stats(self):
        text = repr(SimCLRViews(28, channels=1))
        assert "saturation" not in text and "hue" not in text and "mean=[0.5]" in text

    def test_no_augmentation_is_plain_normalisation(self):
        # every random op off and a full-size crop: the view is just the normalised image
        transform = SimCLRViews(
            8, channels=1, min_scale=1.0, cj_prob=0, blur_prob=0, hflip_prob=0, mean=(0.25,), std=(0.5,)
        )
        image = gray_image(8)
        torch.manual_seed(0)
        view = transform(image)["views"][0]
        expected = (np.asarray(image, dtype=np.float32) / 255 - 0.25) / 0.5
        # at scale 1 every crop RandomResizedCrop accepts on an 8x8 image rounds to the whole image
        np.testing.assert_allclose(view[0].numpy(), expected, atol=1e-6)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="channels"):
            SimCLRViews(28, channels=2)
        with pytest.raises(ValueError, match="3 values"):
            SimCLRViews(28, channels=3, mean=(0.5,), std=(0.5,))
        with pytest.raises(ValueError, match="n_views"):
            SimCLRViews(28, n_views=0)


class TestEvalTransform:
    def test_normalisation_by_hand_gray(self):
        image = gray_image(28)
        out = EvalTransform(28, channels=1, mean=(0.2,), std=(0.3,))(image)["image"]
        expected = (np.asarray(image, dtype=np.float64) / 255 - 0.2) / 0.3
        np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)

    def test_normalisation_by_hand_rgb_imagenet_default(self):
        image = rgb_image(32)
        out = EvalTransform(32, channels=3)(image)["image"]
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        expected = ((np.asarray(image, dtype=np.float64) / 255 - mean) / std).transpose(2, 0, 1)
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)

    def test_center_crop_of_the_shorter_side(self):
        array = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8) * 7  # H=4, W=8
        out = EvalTransform(4, channels=1, mean=(0.0,), std=(1.0,))(Image.fromarray(array))["image"]
        np.testing.assert_allclose(out[0].numpy() * 255, array[:, 2:6], atol=1e-3)

    def test_gray_input_to_three_channels(self):
        out = EvalTransform(28, channels=3, mean=(0, 0, 0), std=(1, 1, 1))(gray_image(28))["image"]
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])

    def test_resize_before_crop(self):
        out = EvalTransform(16, channels=3, resize=20)(rgb_image(40))["image"]
        assert out.shape == (3, 16, 16)


class TestSupervisedTransform:
    def test_seeded_and_random(self):
        transform = SupervisedTransform(28, channels=1)
        image = gray_image(28)
        a, b = seeded(transform, image, 3)["image"], seeded(transform, image, 3, numpy_seed=5)["image"]
        assert torch.equal(a, b)
        outs = [transform(image)["image"] for _ in range(5)]
        assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_augment_crops_flips_and_rotates_within_the_band_range():
    x = torch.rand(6, 40, 40)
    torch.manual_seed(0)
    outs = [MultispectralAugment()(x)["image"] for _ in range(40)]
    # without a crop the output is one of the 8 flips / rotations of the input, and all 8 occur
    variants = [torch.rot90(v, k, (-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    seen = {next(i for i, v in enumerate(variants) if torch.equal(o, v)) for o in outs}
    assert seen == set(range(8))
    cropped = MultispectralAugment(size=32, min_scale=0.6)(x)["image"]
    assert cropped.shape == (6, 32, 32) and 0 <= cropped.min() and cropped.max() <= 1
    assert ResizeBands(16)(x)["image"].shape == (6, 16, 16) and ResizeBands()(x)["image"] is x


@pytest.mark.parametrize(("path", "cls"), [
    ("ssl_platform.data.transforms.SimCLRViews", SimCLRViews),
    ("ssl_platform.data.transforms.EvalTransform", EvalTransform),
    ("ssl_platform.data.transforms.SupervisedTransform", SupervisedTransform),
    # the paths of the transforms' old homes, which recipes, eval suites and zoo entries still name
    ("ssl_platform.data.datasets.multispectral.MultispectralAugment", MultispectralAugment),
    ("ssl_platform.data.datasets.multispectral.ResizeBands", ResizeBands),
    ("ssl_platform.data.datasets.pairs.ImageTextTransform", ImageTextTransform),
])
def test_stored_dotted_paths_name_the_transforms(path, cls):
    assert config.locate(path) is cls


def test_normalize_stats_defaults_and_errors():
    assert normalize_stats(1, None, None) == ([0.5], [0.5])
    mean, std = normalize_stats(3, None, None)
    assert mean == pytest.approx([0.485, 0.456, 0.406]) and std == pytest.approx([0.229, 0.224, 0.225])
    assert normalize_stats(3, (0.1, 0.2, 0.3), (1, 1, 1)) == ([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="channels must be one of"):
        normalize_stats(4, None, None)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        normalize_stats(3, (0.5,), (0.5,))
