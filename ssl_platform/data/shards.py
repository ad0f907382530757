"""Writing shards: any map-style data set of the platform into LitData's chunked format, for
`data.datasets.ShardDataset` to read from a folder or object storage.

    sslp data shard data/my_images OUT --shard-size 256MB                    (an ImageFolder)
    sslp data shard recipes/simclr/debug.yaml OUT [k=v ...]                   (the recipe's data.dataset)
    sslp data shard eval/digits.yaml OUT --key tasks.digits.test              (one dataset of a suite)
    aws s3 sync OUT s3://bucket/name/   then   data.dataset: {_component_: ssl_platform.data.datasets.ShardDataset,
                                                              source: s3://bucket/name}

Engine: LitData (`litdata.streaming.writer.BinaryWriter`): shards `chunk-0-N.bin` of about `shard_size`
bytes each and its `index.json` (why LitData: `data/datasets/shards.py`). Next to them `sslp_shards.json`
(format version, item kind and schema, length, classes, channels, source, shard size) and
`sslp_targets.npy` (the source's `targets`, dtype and shape kept); `sslp_shards.json` is written last,
atomically, so a folder without it is an interrupted write.

Item `i` of the shards is `dataset[i]`, stored with safe encodings only, never pickle: each item is a flat
tuple of LitData `bytes` / `int` / `float` fields, and the schema says how to rebuild it:

- images the data set reads from files (ImageFolder, ImageTextPairs): the file's own bytes, decoded by the
  reader as the source decodes them (same bytes, same pixels); other PIL images: lossless PNG;
- numpy arrays and scalars, tensors: `.npy` bytes (read back with `allow_pickle=False`; dtype and shape
  kept); int, float, bool, str, bytes, None as such; dicts, tuples and lists of these;
- torch_geometric `Data`: its attributes (x, edge_index, edge_attr, y, ...) as above, rebuilt as `Data`.

Anything else fails, naming the type and where in the item it is.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # litdata would otherwise ask PyPI at import
from litdata.streaming.writer import BinaryWriter

from ssl_platform import config
from ssl_platform.data.datasets.folder import MODES, ImageFolder
from ssl_platform.data.datasets.pairs import ImageTextPairs
from ssl_platform.data.datasets.shard_format import FORMAT, INDEX, META, TARGETS, VERSION
from ssl_platform.data.root import find_data_path
from ssl_platform.data.transforms.device_inputs import EncodedImage

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")  # modes PNG stores exactly
SUPPORTED = ("PIL images, numpy arrays and scalars, tensors, int, float, bool, str, bytes, None, dicts / tuples / "
             "lists of these, torch_geometric Data")


def parse_size(size: int | str) -> int:
    """`"256MB"` -> 256_000_000 bytes; KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024, a plain
    number is bytes."""
    if isinstance(size, int) and not isinstance(size, bool):
        number, unit = size, ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(size))
        if match is None or match.group(2).lower() not in UNITS:
            raise ValueError(f"shard size {size!r} is not a size; write e.g. 256MB, 64MiB, 1GB or a number of bytes")
        number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * UNITS[unit])
    if value < 1:
        raise ValueError(f"shard size {size!r} must be at least 1 byte")
    return value


def _npy(array: np.ndarray, where: str) -> bytes:
    buffer = io.BytesIO()
    try:
        np.save(buffer, array, allow_pickle=False)
    except ValueError as err:  # object arrays would need pickle
        raise ValueError(f"{where}: a numpy array of dtype {array.dtype} cannot be stored without pickle ({err})") from err
    return buffer.getvalue()


def _png(image: Image.Image, where: str) -> bytes:
    if image.mode not in PNG_MODES:
        raise ValueError(f"{where}: a PIL image of mode {image.mode} has no lossless PNG form here (modes "
                         f"{list(PNG_MODES)}); convert it in the dataset, or return it as a numpy array")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class FileImage:
    """An image by its file's bytes and the decoding its data set applies (`decode_image`'s `decode`)."""

    def __init__(self, data: bytes, decode: str):
        self.data, self.decode = data, decode


def encode(obj: Any, leaves: list, where: str) -> dict:
    """`obj`'s schema node; its fields are appended to `leaves` in the order `decode` reads them.

    Raises:
        ValueError: a type with no safe encoding (the message names it and `where` it is in the item).
    """
    if obj is None:
        return {"type": "none"}
    if isinstance(obj, bool):
        leaves.append(int(obj))
        return {"type": "bool"}
    if isinstance(obj, np.generic):  # before int and float: np.float64 is a float, and its dtype must stay
        leaves.append(_npy(np.asarray(obj), where))
        return {"type": "scalar"}
    if isinstance(obj, int):
        if not -(2**63) <= obj < 2**63:
            raise ValueError(f"{where}: the int {obj} does not fit in 64 bits")
        leaves.append(obj)
        return {"type": "int"}
    if isinstance(obj, float):
        leaves.append(obj)
        return {"type": "float"}
    if isinstance(obj, str):
        leaves.append(obj.encode("utf-8"))
        return {"type": "str"}
    if isinstance(obj, (bytes, bytearray)):
        leaves.append(bytes(obj))
        return {"type": "bytes"}
    if isinstance(obj, (FileImage, EncodedImage)):
        leaves.append(bytes(obj.data))
        return {"type": "image", "decode": obj.decode if isinstance(obj, FileImage) else "as_is"}
    if isinstance(obj, Image.Image):
        leaves.append(_png(obj, where))
        return {"type": "image", "decode": "as_is"}
    if isinstance(obj, np.ndarray):
        leaves.append(_npy(obj, where))
        return {"type": "array"}
    if isinstance(obj, torch.Tensor):
        return _tensor(obj, leaves, where)
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {"type": "dict", "items": [[k, encode(v, leaves, f"{where}[{k!r}]")] for k, v in obj.items()]}
    if isinstance(obj, (tuple, list)):
        items = [encode(v, leaves, f"{where}[{i}]") for i, v in enumerate(obj)]
        return {"type": type(obj).__name__ if type(obj) in (tuple, list) else "tuple", "items": items}
    if type(obj).__name__ == "Data" and type(obj).__module__.startswith("torch_geometric"):
        keys = sorted(obj.keys())
        return {"type": "graph", "items": [[k, encode(obj[k], leaves, f"{where}.{k}")] for k in keys]}
    raise ValueError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which shards cannot store "
                     f"safely (no pickle); supported: {SUPPORTED}")


def _tensor(tensor: torch.Tensor, leaves: list, where: str) -> dict:
    if tensor.layout != torch.strided or tensor.dtype == torch.bfloat16 or tensor.is_complex():
        raise ValueError(f"{where}: a {tensor.layout} {tensor.dtype} tensor has no .npy form; make it a dense "
                         "tensor of a numpy dtype (e.g. float32) in the dataset")
    leaves.append(_npy(tensor.detach().cpu().numpy(), where))
    return {"type": "tensor"}


def _item(dataset: Any, index: int, file_mode: str | None) -> Any:
    """`dataset[index]` with images a data set reads from files replaced by the files' bytes."""
    item = dataset[index]
    if isinstance(dataset, ImageTextPairs):  # decoding the file checks it; the bytes are what is kept
        sample, label = item
        return {**sample, "image": FileImage(Path(dataset.paths[index]).read_bytes(), "rgb_on_white")}, label
    if file_mode is not None and isinstance(item, tuple) and item and isinstance(item[0], EncodedImage):
        return (FileImage(item[0].data, file_mode), *item[1:])
    return item


def item_kind(schema: dict) -> str:
    """A word for what the items hold: image, image-text, graph, table, array, or the sample's type."""
    sample = schema["items"][0] if schema["type"] == "tuple" and schema["items"] else schema
    keys = {k for k, _ in sample.get("items", [])} if sample["type"] == "dict" else set()
    for kind, needs in (("image-text", {"image", "text"}), ("graph", {"graph"}), ("table", {"x_num"})):
        if needs <= keys:
            return kind
    return {"tensor": "array"}.get(sample["type"], sample["type"])


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)  # a reader sees no sslp_shards.json or a whole one


def write_shards(dataset: Any, out: str | Path, shard_size: int | str = "256MB", *, source: str = "") -> dict:
    """Write every item `dataset[i]` (i in order) into LitData shards in the new or empty folder `out`.

    Args:
        dataset: a map-style data set of the platform (items `(sample, label)`; `targets`, `classes`,
            `channels` kept when it has them).
        out: the folder (created; refused when it holds anything).
        shard_size: bytes per shard (`parse_size`); an item larger than it gets a shard of its own.
        source: what the data set is, for `sslp_shards.json` (default: its repr).

    Returns:
        {"items", "shards", "bytes" (of the shards), "seconds", "kind", "out"}.
    """
    size, out = parse_size(shard_size), Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} is not an empty folder; shards are written only into a new or empty folder "
                              "(remove it, or choose another OUT)")
    if len(dataset) == 0:
        raise ValueError(f"{dataset!r} has no items to write")
    start, created = time.perf_counter(), not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        schema, labels = _write_items(dataset, out, size)
        targets = getattr(dataset, "targets", None)
        targets = np.asarray(labels if targets is None else targets.numpy() if torch.is_tensor(targets) else targets)
        (out / TARGETS).write_bytes(_npy(targets, f"{dataset!r}.targets"))
        channels = getattr(dataset, "channels", None)
        _write_json(out / META, {
            "format": FORMAT, "version": VERSION, "kind": item_kind(schema), "length": len(dataset), "schema": schema,
            "classes": [str(c) for c in getattr(dataset, "classes", None) or []],
            "channels": channels if isinstance(channels, int) else None,
            "targets": {"file": TARGETS, "dtype": str(targets.dtype), "shape": list(targets.shape)},
            "source": source or repr(dataset), "shard_size": size})
    except BaseException:
        for path in out.iterdir():  # `out` was empty: everything in it is this write's
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        if created:
            out.rmdir()
        raise
    chunks = json.loads((out / INDEX).read_text())["chunks"]
    return {"items": len(dataset), "shards": len(chunks), "bytes": sum(c["chunk_bytes"] for c in chunks),
            "seconds": time.perf_counter() - start, "kind": item_kind(schema), "out": str(out)}


def _write_items(dataset: Any, out: Path, size: int) -> tuple[dict, list[int]]:
    """The items through LitData's writer; (the schema of item 0, which every item must share; the int labels)."""
    encoded = getattr(dataset, "encoded", None)
    # a data set with `encoded` (ImageFolder) hands over its files' bytes; its reader converts to its mode
    file_mode = MODES.get(getattr(dataset, "channels", None)) if encoded is not None else None
    writer, schema, labels = BinaryWriter(str(out), chunk_bytes=size), None, []
    try:
        if file_mode is not None:
            dataset.encoded = True
        # one process reads every item: for millions of files this takes minutes, so it shows progress
        for i in tqdm(range(len(dataset)), desc="shard", unit="item", mininterval=2.0, disable=len(dataset) < 10_000):
            item, leaves = _item(dataset, i, file_mode), []
            node = encode(item, leaves, f"item {i}")
            if schema is None and not leaves:
                raise ValueError(f"item 0 of {dataset!r} holds nothing to store: {item!r}")
            if schema is not None and node != schema:
                raise ValueError(f"item {i} of {dataset!r} has the structure {node}, item 0 {schema}; every item of "
                                 "a data set must have the same structure and types to be sharded")
            schema = node
            label = item[1] if isinstance(item, tuple) and len(item) == 2 else None
            labels.append(label if isinstance(label, int) and not isinstance(label, bool) else -1)
            writer[i] = tuple(leaves)
    finally:
        if file_mode is not None:
            dataset.encoded = encoded
    writer.done()
    writer.merge()
    return schema, labels


def dataset_from(source: str, overrides: Sequence[str] = (), key: str | None = None) -> tuple[Any, str]:
    """What `sslp data shard SOURCE` writes, and its description: a folder of images (ImageFolder), or the
    `key` node (default `data.dataset`) of a recipe or suite file with `overrides` applied."""
    folder = find_data_path(source)
    if folder is not None and folder.is_dir():
        if overrides or key:
            raise config.ConfigError(f"{source} is a folder (read as ImageFolder): overrides and --key are for a "
                                     "recipe or suite file")
        return ImageFolder(folder), f"ImageFolder {folder}"
    if folder is None or folder.suffix not in (".yaml", ".yml"):
        raise FileNotFoundError(f"{source}: neither a folder of images nor a recipe / suite .yaml file")
    cfg = config.load(folder, overrides)
    tasks = cfg.get("tasks") or {}
    candidates = [f"tasks.{t}.{s}" for t in tasks for s in ("train", "test") if config.is_component(tasks[t].get(s))]
    node = cfg
    for part in (key or ("data.dataset" if not candidates else "")).split("."):
        node = node.get(part) if hasattr(node, "get") else None
    if not config.is_component(node):
        hint = f"one of {candidates}" if candidates else "e.g. data.dataset"
        raise config.ConfigError(f"{folder}: {key or 'data.dataset'} is not a dataset (a mapping with _component_); "
                                 f"name the one to shard with --key, {hint}")
    where = key or "data.dataset"
    return config.instantiate(node, where=f"{where}."), f"{folder} {where}"


def shard_command(source: str, out: str, shard_size: str = "256MB", overrides: Sequence[str] = (),
                  key: str | None = None) -> str:
    """`sslp data shard`: write the data set `dataset_from` finds; the summary line it prints."""
    dataset, described = dataset_from(source, overrides, key)
    done = write_shards(dataset, out, shard_size, source=described)
    return (f"[ssl_platform] {done['items']} items ({done['kind']}) of {described} in {done['shards']} shards, "
            f"{done['bytes']:,} bytes, {done['seconds']:.1f} s: {done['out']}")
