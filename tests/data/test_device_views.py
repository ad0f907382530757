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
from ssl_platform.data.transforms.device_inputs import stack_device_inputs
from ssl_platform.data.transforms.device_views import DeviceViews
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


# ---- image-text pairs (M3AE) ----

def test_image_text_device_half_gives_the_worker_paths_tokens_and_resize(tmp_path):
    from ssl_platform.data.transforms import ImageTextTransform
    from ssl_platform.models.text import train_wordpiece

    train_wordpiece(["a red circle", "a blue square"], tmp_path / "wp.json", vocab_size=60)
    transform = ImageTextTransform(str(tmp_path / "wp.json"), size=24, max_length=8, min_scale=None)
    workers, views = transform.for_device()
    sample = {"image": Image.fromarray(smooth_image(40, 30)), "text": "a red circle"}
    item = workers.seeded(sample, seed=3)
    reference = transform(sample)  # the worker path: plain resize of the whole image, then tokens
    assert torch.equal(item["text_ids"], reference["text_ids"]) and torch.equal(item["text_mask"], reference["text_mask"])
    out = views(item["pixels"][None], item["view_params"][None])["image"][0]
    assert (out - reference["image"]).abs().max() * 0.5 <= PX + 1e-4  # normalised by 0.5 / 0.5


def test_image_text_random_crop_matches_the_worker_paths_pixels_for_its_parameters(tmp_path):
    from ssl_platform.data.transforms import ImageTextTransform

    workers, views = ImageTextTransform(None, size=24, min_scale=0.5).for_device()
    image = smooth_image(40, 40)
    item = workers.seeded({"image": Image.fromarray(image), "text": "x"}, seed=11)
    assert set(item) == {"pixels", "view_params"}  # no tokenizer: images only
    top, left, h, w = (int(x) for x in item["view_params"][0, :4])
    assert item["view_params"][0, dv.FLIP] == 0  # M3AE's crop has no flip
    ref = tensor_of(F.resized_crop(Image.fromarray(image), top, left, h, w, [24, 24], antialias=True))
    out = views(item["pixels"][None], item["view_params"][None])["image"][0] * 0.5 + 0.5
    assert (out - ref).abs().max() <= PX + 1e-4


# ---- band stacks (SatMAE++): bicubic crops, flips, right-angle rotations ----

def band_stack(channels: int = 6, side: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(smooth_image(side, side, channels, seed).transpose(2, 0, 1).copy()).float() / 255


@pytest.mark.parametrize("size", [24, 64])
def test_band_crops_flips_rotations_equal_torchvisions_bicubic_resized_crop(size):
    """The worker path (MultispectralAugment): torchvision's bicubic antialiased resized crop on tensors,
    clamped to [0, 1], then flip and rot90; the same parameters through the batched matrices."""
    from torchvision.transforms import InterpolationMode

    from ssl_platform.data.transforms import MultispectralAugment

    workers, views = MultispectralAugment(size=size, min_scale=0.3).for_device()
    stacks = [band_stack(seed=s) for s in range(6)]
    items = [workers.seeded(x, seed=20 + i) for i, x in enumerate(stacks)]
    batch = stack_device_inputs(items)
    out = views(batch["pixels"], batch["view_params"])["image"]
    assert out.shape == (6, 6, size, size)
    assert {int(r) for item in items for r in item["view_params"][:, dv.ROTATE]} <= {0, 1, 2, 3}
    for i, (x, item) in enumerate(zip(stacks, items)):
        p = item["view_params"][0]
        top, left, h, w = (int(v) for v in p[:4])
        ref = F.resized_crop(x, top, left, h, w, [size, size], interpolation=InterpolationMode.BICUBIC,
                             antialias=True).clamp(0, 1)
        ref = ref.flip(-1) if p[dv.FLIP] else ref
        ref = torch.rot90(ref, int(p[dv.ROTATE]), dims=(-2, -1))
        assert (out[i] - ref).abs().max() <= 1e-4, i


def test_rotations_are_uniform_over_the_four_turns():
    views = DeviceViews(None, 0, n_views=1, min_scale=None, mean=None, std=None, rotate=True)
    turns = draws(views, 8, 8)[:, dv.ROTATE].long()
    assert stats.chisquare(torch.bincount(turns, minlength=4).numpy()).pvalue > 1e-3


def test_band_stacks_without_size_keep_their_size_and_values_up_to_flip_and_rotation():
    from ssl_platform.data.transforms import MultispectralAugment

    workers, views = MultispectralAugment().for_device()
    x = band_stack(side=16)
    item = workers.seeded(x, seed=4)
    out = views(item["pixels"][None], item["view_params"][None])["image"][0]
    p = item["view_params"][0]
    ref = torch.rot90(x.flip(-1) if p[dv.FLIP] else x, int(p[dv.ROTATE]), dims=(-2, -1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


# ---- decoding on the device: the workers only read the files ----

@pytest.fixture
def photo_folder(tmp_path):
    """Two classes of JPEGs and PNGs of different sizes."""
    for i in range(6):
        folder = tmp_path / "photos" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(smooth_image(30 + 7 * i, 44 - 3 * i, seed=i))
        image.save(folder / f"{i}.jpg", quality=95) if i % 3 else image.save(folder / f"{i}.png")
    return tmp_path / "photos"


def test_decoding_on_the_device_gives_the_views_of_decoding_in_the_workers(photo_folder):
    from ssl_platform.data.collate import TransformedDataset
    from ssl_platform.data.datasets import ImageFolder

    transform = SimCLRViews(24, 3, load_size=32)
    workers, batch_views = device_halves(transform, None)[:2]
    stored = stack_device_inputs([TransformedDataset(ImageFolder(photo_folder), workers)[(i, 50 + i)] for i in range(6)])
    files = stack_device_inputs([TransformedDataset(ImageFolder(photo_folder, encoded=True), workers)[(i, 50 + i)]
                                 for i in range(6)])
    assert isinstance(files["encoded"], list) and "pixels" not in files  # bytes stay on the host until decoded
    assert torch.equal(files["view_params"], stored["view_params"])  # sizes from the headers: the same draws
    a, b = batch_views(stored), batch_views(files)
    for v in range(2):
        # PIL's and torch's resize to the stored square differ by rounding (<= 1 level before the views)
        diff = (a["views"][v] - b["views"][v]).abs() * torch.tensor(transform.device_views.std).view(1, 3, 1, 1)
        assert diff.max() <= 3 * PX and diff.mean() <= 0.5 * PX


def test_decoding_on_the_device_needs_load_size(photo_folder):
    from ssl_platform.data.datasets import ImageFolder

    workers, _ = SimCLRViews(24, 3).for_device()
    with pytest.raises(ValueError, match="data.transform.load_size"):
        workers.seeded(ImageFolder(photo_folder, encoded=True)[0][0], seed=0)


def test_a_damaged_jpeg_decoded_on_the_device_is_named_with_what_to_do(photo_folder):
    """The header reads (the worker only reads it), the body does not: the batch's decode names the file."""
    from ssl_platform.data.collate import TransformedDataset
    from ssl_platform.data.datasets import ImageFolder

    damaged = photo_folder / "c1" / "1.jpg"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:len(data) // 2])  # the header reads, the scan data is cut
    workers, batch_views = device_halves(SimCLRViews(24, 3, load_size=32), None)[:2]
    dataset = TransformedDataset(ImageFolder(photo_folder, encoded=True), workers)
    batch = stack_device_inputs([dataset[(i, i)] for i in range(len(dataset))])
    with pytest.raises(ValueError, match=r"image .*c1/1\.jpg cannot be decoded .*fix or remove the file"):
        batch_views(batch)


@pytest.mark.parametrize("rotate", [True, False])
def test_whole_images_at_their_stored_size_keep_exactly_their_pixels_up_to_flip_and_turn(rotate):
    """No crop and no resize: each view is one of the 8 flips and turns of the image, read by index."""
    from ssl_platform.data.transforms import MultispectralAugment

    workers, views = MultispectralAugment(rotate=rotate).for_device()
    stacks = [band_stack(side=16, seed=s) for s in range(24)]
    items = [workers.seeded(x, seed=s) for s, x in enumerate(stacks)]
    params = torch.stack([item["view_params"] for item in items])
    assert len({(int(p[0, dv.FLIP]), int(p[0, dv.ROTATE])) for p in params}) == (8 if rotate else 2)
    out = views(torch.stack([item["pixels"] for item in items]), params)["image"]
    for i, x in enumerate(stacks):
        p = params[i, 0]
        assert torch.equal(out[i], torch.rot90(x.flip(-1) if p[dv.FLIP] else x, int(p[dv.ROTATE]), dims=(-2, -1)))
    # what the selection stands for: the whole axis resampled to its own length is exactly the identity
    for kernel in dv.KERNELS.values():
        n = torch.tensor([16.0])
        assert torch.equal(dv._resample_matrix(torch.zeros(1), n, n, 16, 16, kernel)[0], torch.eye(16))
