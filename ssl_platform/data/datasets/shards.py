"""`ShardDataset`: a data set written by `sslp data shard` (`data/shards.py`), read from a folder, s3://,
gs:// or http(s)://, item by item, exactly as the source data set returned its items.

    data.dataset: {_component_: ssl_platform.data.datasets.ShardDataset, source: s3://bucket/fmnist-train}

Engine: LitData (`litdata`): chunked binary files plus its `index.json`, random access by global index
(`StreamingDataset[int]`), its own s3:// and gs:// clients, a local cache. It lacks plain http(s), so
`HTTPDownloader` is registered for it (`litdata.streaming.downloader.register_downloader`). MosaicML
Streaming pins numpy < 2.2 and WebDataset has no random access. The sample order is the platform's own
(`samplers.ResumableSampler`: a permutation by seed and epoch); shards are read map-style by index, so a
run on shards draws the same samples and views as the run on the source.

Remote reading: the three small files (`index.json`, `sslp_shards.json`, `sslp_targets.npy`) are fetched
when the data set is built, checked, and kept under the cache folder, one subfolder per version of
`index.json`; LitData reads that checked copy of the index. Items then come as LitData reads them: over
s3:// and gs:// each item is a ranged read of its bytes (nothing is kept); over http(s) a whole shard is
downloaded into the cache (atomically) the first time one of its items is read, and kept, so the cache
grows to the data set's size within an epoch. Delete the cache folder to reclaim the space.

Credentials come only from the environment, where the clients look for them: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN / AWS_PROFILE (AWS_ENDPOINT_URL for an S3-compatible store),
GOOGLE_APPLICATION_CREDENTIALS (gs:// needs `pip install google-cloud-storage`). A source URL with
user:password@ or a query string is refused: the source is written into the run's config.yaml.

Shards come from other people: an index whose items LitData would unpickle (or decode by anything but
bytes / int / float), whose shard names are not plain file names, or a `sslp_shards.json` of another
format is refused, naming the file and the problem; arrays are read with `allow_pickle=False`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from botocore.config import Config
from PIL import Image

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # litdata would otherwise ask PyPI at import
import litdata
from litdata import StreamingDataset
from litdata.streaming.downloader import Downloader, get_downloader, register_downloader
from litdata.streaming.resolver import Dir

from ssl_platform.data.datasets.shard_format import (
    INDEX,
    META,
    TARGETS,
    ShardFormatError,
    check_index,
    check_meta,
    decode,
)
from ssl_platform.data.download import DataSourceError
from ssl_platform.data.root import find_data_path, not_found_message
from ssl_platform.data.transforms.device_inputs import EncodedImage

REMOTE = ("s3://", "gs://", "http://", "https://")
CACHE_ENV = "SSL_PLATFORM_CACHE"
MAPPED_SHARDS = 64  # local shard files a reader keeps mapped (address space only; the page cache decides RAM)


class ShardSourceError(DataSourceError):
    """A remote source could not be read; the message names the URL and the answer."""


class HTTPDownloader(Downloader):
    """LitData's downloader for http(s)://: whole files, written to a temporary name and renamed into the
    cache, so a reader never sees half a file; an HTTP error names the URL and its status."""

    def download_file(self, remote_filepath: str, local_filepath: str) -> None:
        if os.path.exists(local_filepath):
            return
        os.makedirs(os.path.dirname(local_filepath) or ".", exist_ok=True)
        tmp = f"{local_filepath}.tmp.{os.getpid()}"
        try:
            with open(tmp, "wb") as file:
                self.download_fileobj(remote_filepath, file)
            os.replace(tmp, local_filepath)  # several workers may fetch one shard: the last rename wins, same bytes
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def download_fileobj(self, remote_filepath: str, fileobj: Any) -> None:
        try:
            with urllib.request.urlopen(remote_filepath, timeout=60) as response:
                shutil.copyfileobj(response, fileobj)
        except urllib.error.HTTPError as err:
            raise ShardSourceError(f"{remote_filepath}: HTTP {err.code} {err.reason}; check the URL (a folder "
                                   "written by `sslp data shard`) and that the server serves it") from err
        except (urllib.error.URLError, OSError) as err:
            raise ShardSourceError(f"{remote_filepath}: cannot be fetched ({err}); check the URL and the network") from err


for _scheme in ("http://", "https://"):
    register_downloader(_scheme, HTTPDownloader, overwrite=True)


def remote_url(source: str) -> str | None:
    """`source` without a trailing slash when it is a URL LitData can read, None for a local folder.

    Raises:
        ValueError: an unknown scheme, or a URL carrying credentials or a query (config.yaml keeps the source).
    """
    parts = urlsplit(source)
    if not parts.scheme or len(parts.scheme) == 1:  # no scheme, or a Windows drive letter
        return None
    if not source.startswith(REMOTE):
        raise ValueError(f"ShardDataset: source {source!r} has the scheme {parts.scheme}://; give a local folder or "
                         f"one of {', '.join(REMOTE)}")
    if "@" in parts.netloc:
        raise ValueError(f"ShardDataset: source {parts.scheme}://...@{parts.hostname}{parts.path} carries credentials "
                         "in the URL, which would be written into the run's config.yaml; give them in environment "
                         "variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)")
    if parts.query or parts.fragment:
        raise ValueError(f"ShardDataset: source {parts.scheme}://{parts.netloc}{parts.path} has a query or fragment (a signed URL's token "
                         "would be written into config.yaml); give the folder's plain URL, credentials in the environment")
    return source.rstrip("/")


def default_cache_dir(source: str) -> Path:
    """`$SSL_PLATFORM_CACHE/shards/<hash of source>`, else `~/.cache/ssl_platform/shards/<hash>`."""
    base = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else Path("~/.cache/ssl_platform")
    return base.expanduser() / "shards" / hashlib.sha256(source.encode()).hexdigest()[:16]


def _fetch(url: str, name: str, cache: Path) -> bytes:
    """One small file of a remote source, read through LitData's client for its scheme."""
    # LitData's S3 client retries 1000 times: an unreachable store would hang here instead of failing
    options = {"config": Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10)}
    buffer = io.BytesIO()
    try:
        get_downloader(url, str(cache), [], options if url.startswith("s3://") else None).download_fileobj(
            f"{url}/{name}", buffer)
    except ShardSourceError:
        raise
    except Exception as err:  # the clients' own errors (botocore, google): named, with what to check
        remedy = "pip install google-cloud-storage (LitData's gs:// client)" if isinstance(err, ImportError) else \
            "check that the URL is a folder written by `sslp data shard` and the credentials in the environment"
        raise ShardSourceError(f"{url}/{name}: cannot be fetched ({type(err).__name__}: {err}); {remedy}") from err
    return buffer.getvalue()


class ShardDataset:
    """Items of shards written by `sslp data shard` (`ssl_platform.data.shards.write_shards`).

    `dataset[i]` is the source's item i, `(sample, label)`, with the same types and values: images decoded
    as the source decodes them (ImageFolder: the file's own bytes, converted to its mode; in-memory
    images: lossless PNG), arrays and tensors with their dtypes, graphs as torch_geometric `Data`.

    Args:
        source: a local folder (a relative path by the rule of `data/root.py`), or s3://, gs://,
            http(s):// URL of the folder (credentials from the environment; see the module docstring).
        cache_dir: where remote shards are cached (None: `$SSL_PLATFORM_CACHE/shards/<hash of source>`,
            else `~/.cache/ssl_platform/shards/<hash>`).
        encoded: images the source read from files (ImageFolder) come as `EncodedImage` (the file's bytes,
            not decoded), as `ImageFolder(encoded=True)` gives them; `sslp pretrain` sets it for device views
            on a GPU. Every other sample (in-memory images stored as PNG too) comes as the source gave it.
            There is no cache budget: LitData evicts only while it iterates the data itself, and here it is
            read by index, so an http(s) cache grows to the data set's size (delete the folder to reclaim it).

    Attributes:
        targets: the source's targets ([N] int64, -1 unlabelled; float32 or [N, K] as the source had them).
        classes: the source's class names.
        channels: the source's channels (None when the source had none).
        kind: "image", "image-text", "graph", ...
        schema: how an item is stored (`sslp_shards.json`).
    """

    DATA_PATHS = ("source",)  # checked before any work, like every dataset's root (data/root.py), unless a URL

    def __init__(self, source: str, cache_dir: str | None = None, encoded: bool = False):
        self.source, self.encoded = str(source), encoded
        self.url = remote_url(self.source)
        if self.url is None:
            found = find_data_path(self.source)
            if found is None or not found.is_dir():
                raise FileNotFoundError(not_found_message(self.source, "give the folder `sslp data shard` wrote, or "
                                                          "an s3:// gs:// http(s):// URL of one"))
            self.root = found.resolve()
            missing = [n for n in (INDEX, META, TARGETS) if not (self.root / n).is_file()]
            if missing:
                raise FileNotFoundError(f"ShardDataset: {self.root} lacks {missing}; it is not a complete folder "
                                        "written by `sslp data shard` (an interrupted write leaves no sslp_shards.json)")
            index, meta, targets = ((self.root / n).read_bytes() for n in (INDEX, META, TARGETS))
        else:
            cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(self.url)
            cache.mkdir(parents=True, exist_ok=True)
            index, meta, targets = (_fetch(self.url, n, cache) for n in (INDEX, META, TARGETS))
            # one folder per version of the index: a source rewritten in place never mixes with its old cache
            self.root = cache / hashlib.sha256(index).hexdigest()[:16]
            self.root.mkdir(exist_ok=True)
        self._load(index, meta, targets)
        if self.url is not None:
            tmp = self.root / f"{INDEX}.tmp.{os.getpid()}"  # the checked copy LitData reads (index_path),
            tmp.write_bytes(index)
            os.replace(tmp, self.root / INDEX)  # atomically: other ranks of this node write the same bytes
        self._stream: StreamingDataset | None = None
        self.mapped = False  # local shard files kept mapped by this process's reader (`_map_local_shards`)
        self._pid: int | None = None

    def _load(self, index: bytes, meta: bytes, targets: bytes) -> None:
        where = self.url or str(self.root)
        try:
            index_json, meta_json = json.loads(index), json.loads(meta)
        except (ValueError, UnicodeDecodeError) as err:
            raise ShardFormatError(f"{where}: {INDEX} or {META} is not JSON ({err})") from err
        try:
            chunks = check_index(index_json, f"{where}/{INDEX}")
            sizes = np.array([c["chunk_size"] for c in chunks], dtype=np.int64)
            meta_json = check_meta(meta_json, f"{where}/{META}", int(sizes.sum()), len(index_json["config"]["data_format"]))
        except (TypeError, AttributeError, KeyError, json.JSONDecodeError) as err:  # unexpected types anywhere
            raise ShardFormatError(f"{where}: {INDEX} or {META} is malformed ({type(err).__name__}: {err})") from err
        try:
            self.targets = np.load(io.BytesIO(targets), allow_pickle=False)
        except ValueError as err:
            raise ShardFormatError(f"{where}/{TARGETS}: not a plain .npy array ({err})") from err
        self.schema, self.kind = meta_json["schema"], str(meta_json.get("kind", ""))
        self.classes = [str(c) for c in meta_json.get("classes") or []]
        self.channels = meta_json.get("channels")
        self.description = str(meta_json.get("source", ""))
        self._ends, self._files = np.cumsum(sizes), [c["filename"] for c in chunks]
        # items `(image file, label)` (ImageFolder): only these have an undecoded form, `encoded`
        items = self.schema.get("items") or [None]
        self._file_images = (self.schema["type"] == "tuple" and len(items) == 2 and items[0]["type"] == "image"
                             and items[0]["decode"] in ("L", "RGB"))

    def _streaming(self) -> StreamingDataset:
        """This process's LitData reader, made on first use: DataLoader workers each make their own."""
        if self._stream is None or self._pid != os.getpid():
            # batch_decode=0: the sampler's order is random, so decoding LitData's default window of up to 256
            # neighbours per read would be wasted (measured: 300 us against 8 us a read of 3 kB items)
            if self.url is None:
                self._stream = StreamingDataset(str(self.root), batch_decode=0)
                self._stream[0]  # makes its reader, which `_map_local_shards` needs
                self._map_local_shards(self._stream)
            else:
                self._stream = StreamingDataset(Dir(path=None, url=self.url), cache_dir=str(self.root / "chunks"),
                                                index_path=str(self.root / INDEX), batch_decode=0)
            self._pid = os.getpid()
        return self._stream

    def _map_local_shards(self, stream: StreamingDataset) -> None:
        """Keep up to `MAPPED_SHARDS` local shard files mapped: in a random order nearly every read is in
        another shard than the last, and LitData maps the file again on each switch (measured on 7 shards
        of 64 px JPEGs: 6400 reads/s, 9600 with the files kept mapped; the folder 10700). Its "POSIX
        fast" reader keeps them; it never deletes a source."""
        reader = getattr(getattr(stream, "cache", None), "_reader", None)
        if reader is None or not hasattr(reader, "enable_posix_fast"):
            raise RuntimeError(f"this litdata version ({litdata.__version__}) reads differently from the one "
                               "ShardDataset was written for (0.2.76): pin litdata==0.2.76")
        reader.enable_posix_fast(list(range(len(self._files))), keep=min(len(self._files), MAPPED_SHARDS),
                                 prefetch=False)
        self.mapped = True

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None, "_pid": None}  # a live reader never crosses processes

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"ShardDataset: index {index} out of range for {len(self)} items")
        fields = self._streaming()[index]
        fields = fields if isinstance(fields, (tuple, list)) else (fields,)
        try:
            if self.encoded and self._file_images:
                return self._encoded(bytes(fields[0]), index), decode(self.schema["items"][1], iter(fields[1:]))
            return decode(self.schema, iter(fields))
        except (OSError, ValueError, TypeError, SyntaxError, KeyError, StopIteration) as err:
            raise OSError(f"ShardDataset: cannot decode {self.sample_source(index)} ({err}); the shard is damaged "
                          "or was written by another version: write it again with `sslp data shard`") from err

    def _encoded(self, data: bytes, index: int) -> EncodedImage:
        with Image.open(io.BytesIO(data)) as image:  # the header only: size and format
            size, jpeg = image.size, image.format == "JPEG"
        return EncodedImage(data, size, jpeg, self.sample_source(index))

    def sample_source(self, index: int) -> str:
        """`<source> item i, shard <file>` (named by `TransformedDataset`'s bad-sample errors and skip log)."""
        shard = self._files[int(np.searchsorted(self._ends, int(index), side="right"))]
        return f"{self.source} item {index}, shard {shard}"

    def __repr__(self) -> str:
        return f"ShardDataset({self.source!r}, n={len(self)}, kind={self.kind!r}, classes={len(self.classes)})"
