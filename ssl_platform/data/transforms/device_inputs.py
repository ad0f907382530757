"""The workers' half of `data.views_on: device`, and the step from the loader's batch to the method's.

Per sample, in the loader's workers (`DeviceViewInputs`): read the image, convert it to the transform's
channels, store it at one size as uint8 (or, for decoding on the device, keep the file's bytes:
`EncodedImage`) and draw its view parameters from a generator seeded by the draw's seed. Per batch, on
the training device (`views_from_batch`): decode the files if needed, then `DeviceViews` makes the
views (`device_views.py`).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import torch
import torchvision.io
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

from ssl_platform.data.transforms.device_views import DeviceViews

MODES = {1: "L", 3: "RGB"}


@dataclasses.dataclass
class EncodedImage:
    """An image file not yet decoded (`ImageFolder(encoded=True)`): its bytes, `(width, height)` from its
    header, whether it is a JPEG (decoded on the device; other formats on the host, still per batch),
    and where it comes from (named when it cannot be decoded)."""

    data: bytes
    size: tuple[int, int]
    jpeg: bool
    source: str = ""


class DeviceViewInputs:
    """The workers' half of `data.views_on: device`: an image in, its uint8 pixels and view parameters out.

    Called by `TransformedDataset` as `seeded(image, seed)`: the parameters come from a generator seeded
    by the draw's seed (the global RNGs are not touched, so nothing needs forking per sample).

    Args:
        views: the batch half, whose `draw` gives the parameters.
        channels: 1 or 3; the image is converted to "L" or "RGB" (0: band stacks, `[C, H, W]` tensors kept as
            they are).
        load_size: side of the stored square image (crops are then taken from it, boxes scaled); None keeps
            the image's own size, which must then be the same for every image of the data set.

    Returns (from `seeded`):
        {"pixels": Tensor [channels, S, S'] uint8, "view_params": Tensor [n_views, N_PARAMS] float32}
    """

    def __init__(self, views: DeviceViews, channels: int, load_size: int | None = None):
        self.views, self.channels, self.load_size = views, channels, load_size

    def seeded(self, image: Image.Image | Tensor | EncodedImage, seed: int) -> dict[str, Tensor]:
        if isinstance(image, EncodedImage):  # the device decodes: the workers only read the file
            if self.load_size is None:
                raise ValueError("decoding on the device needs one stored size: set data.transform.load_size "
                                 "(e.g. 320 for 224 px views)")
            width, height = image.size
            params = self.views.draw(torch.Generator().manual_seed(seed), height, width)
            return {"encoded": image, "view_params": params}
        if isinstance(image, Tensor):  # a band stack [C, H, W], already scaled to [0, 1]
            height, width = image.shape[-2:]
            if self.load_size is not None and (height, width) != (self.load_size, self.load_size):
                image = torch.nn.functional.interpolate(image[None].float(), size=(self.load_size,) * 2,
                                                        mode="bilinear", antialias=True)[0]
            params = self.views.draw(torch.Generator().manual_seed(seed), int(height), int(width))
            return {"pixels": image.contiguous(), "view_params": params}
        if self.channels not in MODES:
            raise TypeError(f"{type(self.views).__name__} inputs for band stacks take [C, H, W] tensors, got a "
                            f"{type(image).__name__}; an image transform needs channels=1 or 3")
        image = image if image.mode == MODES[self.channels] else image.convert(MODES[self.channels])
        width, height = image.size
        if self.load_size is not None and image.size != (self.load_size, self.load_size):
            image = image.resize((self.load_size, self.load_size), Image.BILINEAR)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        params = self.views.draw(torch.Generator().manual_seed(seed), height, width)
        return {"pixels": pixels.contiguous(), "view_params": params}

    def __call__(self, image: Image.Image) -> dict[str, Tensor]:
        """Without a draw seed (a plain iteration): parameters from torch's global RNG."""
        return self.seeded(image, int(torch.randint(2**62, ())))


def stack_device_inputs(items: list[dict]) -> dict:
    """Collate for `data.views_on: device`: `default_collate`, with the error a user can act on when the
    stored images differ in size (a folder of photos needs one `load_size`). Undecoded images stay a
    list of `EncodedImage` (not tensors: they must not be copied to the device before decoding)."""
    if "encoded" in items[0]:
        rest = default_collate([{k: v for k, v in item.items() if k != "encoded"} for item in items])
        return {**rest, "encoded": [item["encoded"] for item in items]}
    sizes = {tuple(item["pixels"].shape) for item in items}
    if len(sizes) > 1:
        shown = ", ".join("x".join(map(str, s[1:])) for s in sorted(sizes)[:3])
        raise ValueError(f"data.views_on=device needs one stored image size, but a batch holds {shown}; set "
                         "data.transform.load_size (e.g. 256 for 224 px views), or data.views_on=workers")
    return default_collate(items)


def views_from_batch(views: DeviceViews, batch: dict, channels: int | None = None, load_size: int | None = None) -> dict:
    """The batch the method sees: `pixels` (or the `encoded` files, decoded here to `channels` and a
    `load_size` square) and `view_params` replaced by the views (on their device)."""
    batch = dict(batch)
    params = batch.pop("view_params")
    if "encoded" in batch:
        pixels = decode(batch.pop("encoded"), channels, load_size, params.device)
    else:
        pixels = batch.pop("pixels")
    return {**batch, **views(pixels, params)}


def decode(images: list[EncodedImage], channels: int, side: int, device: torch.device) -> Tensor:
    """Undecoded files -> [B, channels, side, side] uint8 on `device`: JPEGs decoded there in one call
    (nvJPEG on CUDA), other formats by PIL on the host; each resized (antialiased bilinear) to the stored
    square, as the workers would have stored it."""
    mode = torchvision.io.ImageReadMode.GRAY if channels == 1 else torchvision.io.ImageReadMode.RGB
    jpegs = [i for i, image in enumerate(images) if image.jpeg]
    decoded: list[Tensor | None] = [None] * len(images)
    if jpegs:
        data = [torch.frombuffer(bytearray(images[i].data), dtype=torch.uint8) for i in jpegs]
        try:
            batch = torchvision.io.decode_jpeg(data, mode=mode, device=device)
        except RuntimeError as err:  # the batch call does not say which file: find it
            raise _undecodable(images, jpegs, data, mode, err) from err
        for i, image in zip(jpegs, batch):
            decoded[i] = image
    for i, image in enumerate(images):
        if not image.jpeg:
            try:
                with Image.open(io.BytesIO(image.data)) as opened:
                    array = np.array(opened.convert(MODES[channels]), dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as err:
                raise _bad_file(image, err) from err
            decoded[i] = torch.from_numpy(array.reshape(*array.shape[:2], -1)).permute(2, 0, 1).to(device)
    return torch.stack([
        torch.nn.functional.interpolate(image[None].float(), size=(side, side), mode="bilinear", antialias=True,
                                        align_corners=False).round_().clamp_(0, 255)[0].to(torch.uint8)
        for image in decoded])


def _bad_file(image: EncodedImage, err: BaseException) -> ValueError:
    return ValueError(f"image {image.source or '(unnamed)'} cannot be decoded ({type(err).__name__}: {err}); fix or "
                      "remove the file (decoded on the device, a bad file cannot be skipped: "
                      "data.on_bad_sample=skip needs data.views_on=workers)")


def _undecodable(images: list[EncodedImage], jpegs: list[int], data: list[Tensor], mode, err: RuntimeError) -> ValueError:
    """The error naming the first JPEG of the batch that does not decode alone (on the host)."""
    for i, raw in zip(jpegs, data):
        try:
            torchvision.io.decode_jpeg(raw, mode=mode)
        except RuntimeError as own:
            return _bad_file(images[i], own)
    return _bad_file(EncodedImage(b"", (0, 0), True, "of this batch"), err)
