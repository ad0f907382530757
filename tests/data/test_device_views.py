"""`data.views_on: device`: the views made per batch on the device against the worker path (PIL).

Distributions: our per-sample draws against torchvision's own parameter draws (the ones lightly's
SimCLRTransform makes in the workers), two-sample KS tests over thousands of draws. Pixels: for the same
parameters, the batched device ops against the PIL ops the worker path runs, operation by operation,
within 1/255 where the arithmetic allows it and within a documented, tested bound where PIL rounds
differently (saturation, hue, blur).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageFilter
from scipy import ndimage, stats
from torchvision.transforms import ColorJitter, RandomResizedCrop

from ssl_platform.config import ConfigError
from ssl_platform.data.transforms import SimCLRViews, SupervisedTransform
from ssl_platform.data.transforms import device_views as dv
from ssl_platform.data.transforms.device_views import DeviceViews, stack_device_inputs
from ssl_platform.pretrain import device_halves

PX = 1 / 255
N_DRAWS = 3000


def smooth_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """[H, W, C] uint8 with structure at several scales (pure noise would make resampling trivial)."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((height, width, channels)) * 255, (1.5, 1.5, 0))
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.round().astype(np.uint8)


def tensor_of(image: Image.Image) -> torch.Tensor:
    """PIL -> [C, H, W] float in [0, 1]."""
    array = np.array(image, dtype=np.float32) / 255
    return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)


def draws(views: DeviceViews, height: int, width: int, n: int = N_DRAWS) -> torch.Tensor:
    """[n, N_PARAMS]: one view's parameters of n samples, each from its own seeded generator."""
    return torch.cat([views.draw(torch.Generator().manual_seed(i), height, width) for i in range(n)])


# ---- distributions: our draws against torchvision's ----

@pytest.mark.parametrize("height,width,min_scale", [(28, 28, 0.3), (40, 64, 0.08), (224, 160, 0.08)])
def test_crop_area_and_aspect_match_torchvision_random_resized_crop(height, width, min_scale):
    ours = draws(DeviceViews(24, 3, n_views=1, min_scale=min_scale), height, width)
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = torch.tensor([RandomResizedCrop.get_params(image, [min_scale, 1.0], [3 / 4, 4 / 3])
                           for _ in range(N_DRAWS)], dtype=torch.float32)  # (top, left, h, w)
    for name, fn in {"area": lambda p: p[:, 2] * p[:, 3] / (height * width), "aspect": lambda p: p[:, 3] / p[:, 2],
                     "top": lambda p: p[:, 0] / height, "left": lambda p: p[:, 1] / width}.items():
        a = fn(ours[:, [dv.TOP, dv.LEFT, dv.HEIGHT, dv.WIDTH]]).numpy()
        b = fn(theirs).numpy()
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name
    boxes = ours[:, [dv.TOP, dv.LEFT, dv.HEIGHT, dv.WIDTH]]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()


def test_jitter_factors_and_order_match_torchvision_color_jitter():
    views = DeviceViews(8, 3, n_views=1, cj_prob=1.0, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
    ours = draws(views, 8, 8)
    torch.manual_seed(0)
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2)
    theirs = [ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
              for _ in range(N_DRAWS)]
    for k, column in enumerate((dv.BRIGHT, dv.CONTRAST, dv.SAT, dv.HUE)):
        b = np.array([t[1 + k] for t in theirs])
        assert stats.ks_2samp(ours[:, column].numpy(), b).pvalue > 1e-3, column
    # every one of the 24 orders about equally often (chi-square), as torch.randperm(4) in ColorJitter
    orders = [tuple(int(v) for v in row) for row in ours[:, dv.ORDER]]
    counts = np.array([orders.count(p) for p in set(orders)])
    assert len(counts) == 24 and stats.chisquare(counts).pvalue > 1e-3


def test_apply_probabilities_match_their_settings():
    views = DeviceViews(8, 3, n_views=1, hflip_prob=0.5, cj_prob=0.8, brightness=0.4, gray_prob=0.2,
                        blur_prob=0.5, solarize_prob=0.1)
    ours = draws(views, 8, 8)
    for column, p in ((dv.FLIP, 0.5), (dv.JITTER, 0.8), (dv.GRAY, 0.2), (dv.BLUR, 0.5), (dv.SOLARIZE, 0.1)):
        assert stats.binomtest(int(ours[:, column].sum()), N_DRAWS, p).pvalue > 1e-3, column
    not_jittered = ours[ours[:, dv.JITTER] == 0]
    assert (not_jittered[:, dv.BRIGHT] == 1).all()  # identity factor when the jitter is not applied
    sigmas = ours[:, dv.SIGMA].numpy()
    assert stats.ks_2samp(sigmas, np.random.default_rng(0).uniform(0.1, 2.0, N_DRAWS)).pvalue > 1e-3


def test_simclr_views_device_half_has_lightlys_ranges():
    gray = SimCLRViews(28, 1, min_scale=0.3, cj_strength=0.5, blur_prob=0.0, gray_prob=0.0).device_views
    assert gray.ranges[:2] == ((0.6, 1.4), (0.6, 1.4)) and gray.jitter_ops == [0, 1]
    color = SimCLRViews(32, 3).device_views  # lightly: brightness, contrast, saturation 0.8, hue 0.2 (x strength)
    assert color.ranges == ((0.19999999999999996, 1.8), (0.19999999999999996, 1.8), (0.19999999999999996, 1.8),
                            (-0.2, 0.2))
    assert (color.cj_prob, color.gray_prob, color.blur_prob, color.blur_sigmas) == (0.8, 0.2, 0.5, (0.1, 2.0))


# ---- pixels: the same parameters through PIL (the worker path) and through the batched device ops ----

def params_with(views: DeviceViews, seed: int, height: int, width: int, **set_columns) -> torch.Tensor:
    p = views.draw(torch.Generator().manual_seed(seed), height, width)
    for column, value in set_columns.items():
        p[:, getattr(dv, column)] = value
    return p


@pytest.mark.parametrize("height,width,size", [(28, 28, 28), (40, 64, 24), (96, 80, 32), (20, 30, 48)])
def test_crop_resize_flip_equal_pil_within_one_level(height, width, size):
    """Downscaling (antialiased), upscaling and non-square crops: PIL's resize, our separable matrices."""
    image = smooth_image(height, width)
    views = DeviceViews(size, 3, n_views=8, min_scale=0.08, mean=(0, 0, 0), std=(1, 1, 1))
    params = torch.stack([views.draw(torch.Generator().manual_seed(s), height, width) for s in range(4)])
    out = views(torch.from_numpy(image).permute(2, 0, 1).expand(4, -1, -1, -1), params)["views"]
    pil = Image.fromarray(image)
    for b in range(4):
        for v in range(8):
            top, left, h, w = (int(x) for x in params[b, v, :4])
            ref = F.resized_crop(pil, top, left, h, w, [size, size], antialias=True)
            ref = F.hflip(ref) if params[b, v, dv.FLIP] else ref
            assert (out[v][b] - tensor_of(ref)).abs().max() <= PX + 1e-4, (b, v)


PIL_OPS = {"BRIGHT": F.adjust_brightness, "CONTRAST": F.adjust_contrast, "SAT": F.adjust_saturation,
           "HUE": F.adjust_hue}
# PIL rounds its grayscale to uint8 before the saturation blend, and the contrast blend's mean to a whole
# level (each <= 1.5 levels); it shifts hue on an 8-bit HSV image (a hue step of 1/256 turn moves a
# saturated colour by up to ~6 levels: <= 8; torchvision's float adjust_hue, tested below, is the exact
# reference)
BOUND = {"BRIGHT": PX, "CONTRAST": 1.5 * PX, "SAT": 1.5 * PX, "HUE": 8 * PX}


@pytest.mark.parametrize("op", sorted(PIL_OPS))
@pytest.mark.parametrize("factor_index", range(4))
def test_each_colour_op_equals_pil_within_its_bound(op, factor_index):
    image = smooth_image(16, 16, seed=factor_index)
    factor = [0.2, 0.7, 1.3, 1.8][factor_index] if op != "HUE" else [-0.2, -0.05, 0.1, 0.2][factor_index]
    views = DeviceViews(16, 3, n_views=1, min_scale=1.0, hflip_prob=0.0, cj_prob=1.0,
                        **{{"BRIGHT": "brightness", "CONTRAST": "contrast", "SAT": "saturation",
                            "HUE": "hue"}[op]: 0.9 if op != "HUE" else 0.3},
                        mean=(0, 0, 0), std=(1, 1, 1))
    params = params_with(views, 0, 16, 16, TOP=0, LEFT=0, HEIGHT=16, WIDTH=16, **{op: factor})
    out = views(torch.from_numpy(image).permute(2, 0, 1)[None], params[None])["views"][0][0]
    ref = tensor_of(PIL_OPS[op](Image.fromarray(image), factor))
    assert (out - ref).abs().max() <= BOUND[op] + 1e-4


@pytest.mark.parametrize("factor", [-0.5, -0.2, 0.05, 0.3])
def test_hue_equals_torchvisions_float_adjust_hue(factor):
    x = torch.from_numpy(smooth_image(12, 12)).permute(2, 0, 1).float()[None] / 255
    ours = dv._hue(x, torch.tensor([factor]))
    torch.testing.assert_close(ours, F.adjust_hue(x, factor), atol=1e-4, rtol=0)


def test_each_sample_keeps_its_own_jitter_order():
    """Brightness then contrast differs from contrast then brightness (clamping); each sample gets its own."""
    image = smooth_image(16, 16)
    views = DeviceViews(16, 3, n_views=1, min_scale=1.0, hflip_prob=0.0, cj_prob=1.0, brightness=0.9,
                        contrast=0.9, mean=(0, 0, 0), std=(1, 1, 1))
    order_bc = params_with(views, 0, 16, 16, BRIGHT=1.8, CONTRAST=0.3, SAT=1.0, HUE=0.0)
    order_bc[:, dv.ORDER] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    order_cb = order_bc.clone()
    order_cb[:, dv.ORDER] = torch.tensor([1.0, 0.0, 3.0, 2.0])
    pixels = torch.from_numpy(image).permute(2, 0, 1).expand(2, -1, -1, -1)
    out = views(pixels, torch.stack([order_bc, order_cb]))["views"][0]
    pil = Image.fromarray(image)
    bc = F.adjust_contrast(F.adjust_brightness(pil, 1.8), 0.3)
    cb = F.adjust_brightness(F.adjust_contrast(pil, 0.3), 1.8)
    assert (out[0] - tensor_of(bc)).abs().max() <= 2 * PX and (out[1] - tensor_of(cb)).abs().max() <= 2 * PX
    assert (tensor_of(bc) - tensor_of(cb)).abs().max() > 10 * PX  # the orders really differ


def test_grayscale_and_solarize_equal_pil():
    image = smooth_image(16, 16)
    views = DeviceViews(16, 3, n_views=1, min_scale=1.0, hflip_prob=0.0, gray_prob=1.0, solarize_prob=1.0,
                        mean=(0, 0, 0), std=(1, 1, 1))
    params = params_with(views, 0, 16, 16, TOP=0, LEFT=0, HEIGHT=16, WIDTH=16, GRAY=1.0, SOLARIZE=1.0)
    out = views(torch.from_numpy(image).permute(2, 0, 1)[None], params[None])["views"][0][0]
    from PIL import ImageOps

    ref = ImageOps.solarize(Image.fromarray(image).convert("L").convert("RGB"), threshold=128)
    assert (out - tensor_of(ref)).abs().max() <= PX + 1e-4


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_blur_is_the_exact_gaussian_and_close_to_pils_box_approximation(sigma):
    """PIL's GaussianBlur (the worker path) is three box blurs approximating a Gaussian; ours is the exact
    kernel: equal to scipy's Gaussian (same reflect border) within a level, near PIL's on average."""
    image = smooth_image(32, 32)
    views = DeviceViews(32, 3, n_views=1, min_scale=1.0, hflip_prob=0.0, blur_prob=1.0, mean=(0, 0, 0),
                        std=(1, 1, 1))
    params = params_with(views, 0, 32, 32, TOP=0, LEFT=0, HEIGHT=32, WIDTH=32, BLUR=1.0, SIGMA=sigma)
    out = views(torch.from_numpy(image).permute(2, 0, 1)[None], params[None])["views"][0][0]
    exact = ndimage.gaussian_filter(image.astype(np.float64) / 255, (sigma, sigma, 0), mode="mirror",
                                    truncate=(2 * math.ceil(3 * 2.0) + 1) // 2 / sigma)
    assert (out - torch.from_numpy(exact).permute(2, 0, 1).float()).abs().max() <= PX
    pil = tensor_of(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))
    assert (out - pil)[:, 4:-4, 4:-4].abs().mean() <= 2 * PX  # the approximation, away from the borders


def test_normalisation_and_supervised_crop_key():
    image = smooth_image(28, 28, channels=1)[..., 0]
    workers, views = SupervisedTransform(24, 1, min_scale=0.5, mean=(0.3,), std=(0.2,)).for_device()
    item = workers.seeded(Image.fromarray(image), seed=5)
    out = views(item["pixels"][None], item["view_params"][None])
    assert set(out) == {"image"} and out["image"].shape == (1, 1, 24, 24)
    top, left, h, w = (int(x) for x in item["view_params"][0, :4])
    ref = F.resized_crop(Image.fromarray(image), top, left, h, w, [24, 24], antialias=True)
    ref = F.hflip(ref) if item["view_params"][0, dv.FLIP] else ref
    assert ((out["image"][0] * 0.2 + 0.3) - tensor_of(ref)).abs().max() <= PX + 1e-4


# ---- determinism and the batch ----

def test_views_depend_on_the_draw_seed_only_not_on_the_batch():
    """A sample's views are the same alone or among others (any number of processes, any batch split)."""
    workers, views = SimCLRViews(28, 1, min_scale=0.3, cj_strength=0.5, blur_prob=0.0, gray_prob=0.0).for_device()
    images = [Image.fromarray(smooth_image(28, 28, 1, seed=s)[..., 0]) for s in range(6)]
    items = [workers.seeded(img, seed=100 + i) for i, img in enumerate(images)]
    again = workers.seeded(images[3], seed=103)
    assert torch.equal(again["view_params"], items[3]["view_params"]) and torch.equal(again["pixels"], items[3]["pixels"])
    batch = stack_device_inputs(items)
    together = views(batch["pixels"], batch["view_params"])["views"]
    alone = views(items[3]["pixels"][None], items[3]["view_params"][None])["views"]
    for v in range(2):
        torch.testing.assert_close(together[v][3], alone[v][0], atol=1e-6, rtol=0)
    assert not torch.equal(workers.seeded(images[3], seed=104)["view_params"], items[3]["view_params"])


def test_load_size_stores_a_fixed_square_and_keeps_boxes_in_source_pixels():
    workers, views = SimCLRViews(32, 3, load_size=48).for_device()
    item = workers.seeded(Image.fromarray(smooth_image(60, 90)), seed=1)
    assert item["pixels"].shape == (3, 48, 48) and item["pixels"].dtype == torch.uint8
    p = item["view_params"]
    assert (p[:, dv.SRC_H] == 60).all() and (p[:, dv.SRC_W] == 90).all()
    assert (p[:, dv.TOP] + p[:, dv.HEIGHT] <= 60).all() and (p[:, dv.LEFT] + p[:, dv.WIDTH] <= 90).all()
    out = views(item["pixels"][None], p[None])["views"]
    assert all(torch.isfinite(v).all() and v.shape == (1, 3, 32, 32) for v in out)


def test_mixed_image_sizes_say_to_set_load_size():
    workers, _ = SimCLRViews(16, 3).for_device()
    items = [workers.seeded(Image.fromarray(smooth_image(20, 20)), 0), workers.seeded(Image.fromarray(smooth_image(20, 30)), 1)]
    with pytest.raises(ValueError, match=r"one stored image size.*20x20, 20x30.*data.transform.load_size"):
        stack_device_inputs(items)


def test_a_transform_without_device_half_is_refused_naming_the_setting():
    from ssl_platform.data.transforms import EvalTransform

    with pytest.raises(ConfigError, match=r"EvalTransform has no device half.*data.views_on=workers"):
        device_halves(EvalTransform(28, 1), None)


def test_channel_mismatched_jitter_is_refused():
    with pytest.raises(ValueError, match="mean nothing for 1 channel"):
        DeviceViews(8, 1, saturation=0.5)
