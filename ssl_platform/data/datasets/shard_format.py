"""The format of `sslp data shard`'s shards: what a shard folder may hold, and how an item is rebuilt.

Shards come from other people, so `check_index` and `check_meta` accept only what `data/shards.py`
writes: LitData's PyTreeLoader with bytes / int / float fields (no serializer that unpickles), plain
shard file names (nothing that could be written outside the cache), and `sslp_shards.json` of this
format and version. `decode` rebuilds an item from its fields by the schema in `sslp_shards.json`.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from ssl_platform.data.datasets.pairs import rgb_on_white

META, TARGETS, INDEX = "sslp_shards.json", "sslp_targets.npy", "index.json"
FORMAT, VERSION = "sslp-shards", 1
LEAF_FORMATS = ("bytes", "int", "float")  # LitData serializers a shard may use: none of them unpickles
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
_TREESPEC_TYPES = (None, "builtins.tuple")  # an item is a flat tuple of leaves
IMAGE_DECODES = ("as_is", "rgb_on_white", "L", "RGB")  # how a stored image becomes the source's (`decode_image`)


class ShardFormatError(ValueError):
    """Shards that are not what `sslp data shard` writes, or that would run code or escape the cache."""


def check_index(index: Any, where: str) -> list[dict]:
    """The chunks of a LitData `index.json` that `sslp data shard` could have written, else ShardFormatError."""
    config = index.get("config") if isinstance(index, dict) else None
    chunks = index.get("chunks") if isinstance(index, dict) else None
    if not isinstance(config, dict) or not isinstance(chunks, list) or not chunks:
        raise ShardFormatError(f"{where}: not a LitData chunk index (no 'config' and 'chunks'); write shards with "
                               "`sslp data shard SOURCE OUT`")
    formats = config.get("data_format")
    if not isinstance(formats, list) or not formats or not set(formats) <= set(LEAF_FORMATS):
        raise ShardFormatError(f"{where}: data_format {formats} would decode items with LitData serializers other "
                               f"than {list(LEAF_FORMATS)} ('pickle' runs code); these shards are refused")
    unexpected = {k: config.get(k) for k in ("compression", "encryption") if config.get(k)}
    if config.get("item_loader") != "PyTreeLoader" or unexpected:
        raise ShardFormatError(f"{where}: item_loader {config.get('item_loader')!r} {unexpected or ''} is not what "
                               "`sslp data shard` writes (PyTreeLoader, no compression, no encryption)")
    spec = json.loads(config.get("data_spec") or "null")
    top = spec[1] if isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], dict) else None
    nodes = [top, *top.get("children_spec", [])] if top is not None else [None]
    if any(not isinstance(n, dict) or n.get("type") not in _TREESPEC_TYPES for n in nodes):
        raise ShardFormatError(f"{where}: data_spec is not a flat tuple of leaves: {config.get('data_spec')!r}")
    for chunk in chunks:
        name = chunk.get("filename") if isinstance(chunk, dict) else None
        if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
            raise ShardFormatError(f"{where}: shard file name {name!r} is not a plain file name (no '/', '..' or "
                                   "absolute path); it could be written outside the cache, so the index is refused")
        if not isinstance(chunk.get("chunk_size"), int) or chunk["chunk_size"] < 1:
            raise ShardFormatError(f"{where}: shard {name} has chunk_size {chunk.get('chunk_size')!r}")
    if not _PLAIN_NAME.fullmatch(str(index.get("updated_at", "0"))):  # LitData names a cache folder after it
        raise ShardFormatError(f"{where}: updated_at {index.get('updated_at')!r} is not a timestamp")
    return chunks


def check_meta(meta: Any, where: str, length: int, leaves: int) -> dict:
    """`sslp_shards.json` of this format and version, agreeing with the index's item count and leaves."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ShardFormatError(f"{where}: not a {META} written by `sslp data shard` (format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ShardFormatError(f"{where}: format version {meta.get('version')!r}; this ssl_platform reads version "
                               f"{VERSION}: write the shards again with this version's `sslp data shard`")
    if meta.get("length") != length or schema_leaves(meta.get("schema")) != leaves:
        raise ShardFormatError(f"{where}: length {meta.get('length')} and schema do not match {INDEX} ({length} items "
                               f"of {leaves} fields), or the schema is malformed: the folder mixes two writes, or "
                               "was not written by `sslp data shard`")
    return meta


def schema_leaves(node: Any) -> int:
    """How many LitData fields an item of this schema has; -1 when `node` is not a schema `encode` writes."""
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return -1
    kind, items = node["type"], node.get("items")
    if kind == "none":
        return 0
    if kind in ("dict", "graph", "tuple", "list"):
        if not isinstance(items, list):
            return -1
        if kind in ("dict", "graph"):
            pairs = [i for i in items if isinstance(i, list) and len(i) == 2 and isinstance(i[0], str)]
            items = [child for _, child in pairs] if len(pairs) == len(items) else [None]
        counts = [schema_leaves(child) for child in items]
        return -1 if -1 in counts else sum(counts)
    if kind == "image" and node.get("decode") not in IMAGE_DECODES:
        return -1
    return 1 if kind in LEAF_DECODERS else -1


def _npy(leaf: Any) -> np.ndarray:
    return np.load(io.BytesIO(leaf), allow_pickle=False)  # a pickled (object) array is refused here


def decode_image(data: bytes, decode: str) -> Image.Image:
    """An image's stored bytes as the source returned it: `as_is` (lossless PNG of an in-memory image),
    `rgb_on_white` (ImageTextPairs), or a mode to convert to (ImageFolder)."""
    with Image.open(io.BytesIO(data)) as image:
        if decode == "rgb_on_white":
            return rgb_on_white(image)
        if decode == "as_is":
            image.load()
            return image.copy()  # a plain image, no longer tied to the buffer
        return image.convert(decode)  # convert() decodes, so damage shows up here


def _graph(values: dict) -> Any:
    from torch_geometric.data import Data  # only graph shards pay for torch_geometric's import

    return Data(**values)


LEAF_DECODERS = {
    "int": lambda leaf, node: int(leaf),
    "float": lambda leaf, node: float(leaf),
    "bool": lambda leaf, node: bool(leaf),
    "str": lambda leaf, node: bytes(leaf).decode("utf-8"),
    "bytes": lambda leaf, node: bytes(leaf),
    "array": lambda leaf, node: _npy(leaf),
    "scalar": lambda leaf, node: _npy(leaf)[()],
    "tensor": lambda leaf, node: torch.from_numpy(_npy(leaf)),
    "image": lambda leaf, node: decode_image(bytes(leaf), node["decode"]),
}


def decode(node: dict, leaves: Iterator[Any]) -> Any:
    """Rebuild one object of `node`'s schema from the item's fields, in order."""
    kind = node["type"]
    if kind == "none":
        return None
    if kind in ("dict", "graph"):
        values = {key: decode(child, leaves) for key, child in node["items"]}
        return values if kind == "dict" else _graph(values)
    if kind in ("tuple", "list"):
        values = [decode(child, leaves) for child in node["items"]]
        return tuple(values) if kind == "tuple" else values
    return LEAF_DECODERS[kind](next(leaves), node)
