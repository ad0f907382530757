"""Shards (`data/shards.py` writes, `data/datasets/shards.py` reads): every item kind of the platform comes
back equal to the source's item (pixels, arrays, dtypes, graphs, label types), from a folder, over http
and from S3; untrusted shards that would unpickle or escape the cache are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from http_shards import serve_directory  # tests/data/http_shards.py (this folder is on sys.path)
from PIL import Image

from ssl_platform import config
from ssl_platform.data.collate import TransformedDataset
from ssl_platform.data.datasets import ArrayImages, ImageFolder, ImageTextPairs, ShardDataset, Table
from ssl_platform.data.datasets.pairs import CaptionedImages
from ssl_platform.data.datasets.shards import (
    HTTPDownloader,
    ShardFormatError,
    ShardSourceError,
    default_cache_dir,
)
from ssl_platform.data.shards import parse_size, write_shards
from ssl_platform.data.transforms import SimCLRViews
from ssl_platform.data.transforms.device_inputs import EncodedImage


def assert_same(a, b, where="item"):
    """Equal values of the same types: PIL pixels and mode, array / tensor dtypes, graph attributes."""
    if isinstance(a, Image.Image):
        assert isinstance(b, Image.Image) and (a.mode, a.size) == (b.mode, b.size), where
        assert np.array_equal(np.asarray(a), np.asarray(b)), where
    elif isinstance(a, np.ndarray | np.generic):
        assert type(b) is type(a) and a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif type(a).__name__ == "Data":
        assert type(b) is type(a) and sorted(a.keys()) == sorted(b.keys()), where
        for key in a.keys():  # noqa: SIM118 - iterating a Data gives (key, value) pairs
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, tuple | list):
        assert type(b) is type(a) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{k}]")
    else:
        assert type(b) is type(a) and a == b, (where, a, b)


def round_trip(dataset, tmp_path: Path, **kwargs) -> ShardDataset:
    """Shards of `dataset`, read back; every item checked equal to the source's."""
    summary = write_shards(dataset, tmp_path / "shards", **kwargs)
    assert summary["items"] == len(dataset) and summary["shards"] >= 1
    shards = ShardDataset(str(tmp_path / "shards"))
    assert len(shards) == len(dataset)
    for i in range(len(dataset)):
        assert_same(dataset[i], shards[i], f"item {i}")
    assert np.array_equal(shards.targets, np.asarray(dataset.targets))
    assert shards.targets.dtype == np.asarray(dataset.targets).dtype
    assert shards.classes == [str(c) for c in getattr(dataset, "classes", [])]
    return shards


def image_folder(root: Path, n_per_class: int = 3) -> Path:
    """Two classes of small images: JPEG and PNG files, RGB, grayscale and RGBA, odd sizes."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for k in range(n_per_class):
            pixels = rng.integers(0, 256, (5 + k, 7 + c, 3), dtype=np.uint8)
            image = Image.fromarray(pixels)
            if k == 0:
                image.save(root / name / f"{k}.jpg", quality=80)
            elif k == 1:
                image.convert("L").save(root / name / f"{k}.png")
            else:
                image.convert("RGBA").save(root / name / f"{k}.png")
    return root


class ListDataset:
    """A map-style set of given items, with `targets` (the platform's datasets' attributes)."""

    def __init__(self, items, targets=None, classes=(), channels=None):
        self.items, self.classes, self.channels = list(items), list(classes), channels
        self.targets = np.asarray(targets if targets is not None else [-1] * len(self.items))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


# ---- every item kind


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_round_trip_keeps_each_files_bytes(tmp_path, channels):
    source = ImageFolder(image_folder(tmp_path / "images"), channels=channels)
    shards = round_trip(source, tmp_path, shard_size="1KB")
    assert shards.kind == "image" and shards.channels == channels and shards.classes == ["cat", "dog"]
    source.encoded = shards.encoded = True  # what `sslp pretrain` sets for device views on a GPU
    for i in range(len(source)):
        want, got = source[i][0], shards[i][0]
        assert isinstance(got, EncodedImage) and got.data == Path(source.paths[i]).read_bytes()
        assert (got.size, got.jpeg) == (want.size, want.jpeg) and got.source == shards.sample_source(i)
        assert shards[i][1] == source[i][1]


@pytest.mark.parametrize("shape", [(12, 6, 5), (12, 4, 4, 3)])
def test_in_memory_images_round_trip_as_lossless_png(tmp_path, shape):
    images = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    source = ArrayImages(images, np.arange(12) % 4, ["a", "b", "c", "d"])  # as MNIST / FashionMNIST hold them
    shards = round_trip(source, tmp_path)
    assert shards.channels == source.channels and shards.schema["items"][0] == {"type": "image", "decode": "as_is"}


def test_image_text_pairs_round_trip_from_manifest_files_and_in_memory(tmp_path):
    folder = image_folder(tmp_path / "images")
    rows = [{"image": str(p.relative_to(folder)), "text": f"caption {k} é", "label": p.parent.name}
            for k, p in enumerate(sorted(folder.rglob("*.*")))]
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pairs = ImageTextPairs(folder / "pairs.jsonl")
    shards = round_trip(pairs, tmp_path / "manifest")
    assert shards.kind == "image-text" and shards.schema["items"][0]["items"][0][1]["decode"] == "rgb_on_white"
    captioned = CaptionedImages(ArrayImages(np.zeros((4, 3, 3), np.uint8), np.arange(4) % 2, ["x", "y"]))
    round_trip(captioned, tmp_path / "captioned")


class Tiles(ListDataset):
    """Items as MultispectralTiles / BigEarthNetPatches give them: float32 band stacks, float or multi-hot targets."""

    def __init__(self, targets):
        rng = np.random.default_rng(2)
        self.tiles = torch.from_numpy(rng.random((5, 4, 6, 6), dtype=np.float32))
        super().__init__([], targets, channels=4)

    def __len__(self):
        return len(self.tiles)

    def __getitem__(self, index):
        target = self.targets[index]
        return self.tiles[index], (target.item() if target.ndim == 0 else torch.from_numpy(target))


@pytest.mark.parametrize("targets", [np.linspace(0, 1, 5, dtype=np.float32), np.arange(5, dtype=np.int64),
                                     np.eye(5, 7, dtype=np.float32)])
def test_multispectral_tiles_round_trip_with_their_target_types(tmp_path, targets):
    shards = round_trip(Tiles(targets), tmp_path)
    assert shards.kind == "array" and shards.channels == 4


@pytest.mark.slow  # pandas
def test_table_rows_round_trip(tmp_path):
    rows = ["age,city,price"] + [f"{20 + k},{'ab'[k % 2]},{k * 1.5}" for k in range(20)]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    table = Table(str(tmp_path / "t.csv"), columns={"age": "num", "city": "cat"}, target="price", task="regression")
    shards = round_trip(table, tmp_path / "out")
    assert shards.kind == "table" and shards.targets.dtype == np.float32


def test_graphs_round_trip_as_torch_geometric_data(tmp_path):
    from torch_geometric.data import Data

    rng = np.random.default_rng(3)
    graphs = []
    for k in range(6):
        n = 3 + k
        graphs.append(({"graph": Data(x=torch.from_numpy(rng.random((n, 4), dtype=np.float32)),
                                      edge_index=torch.from_numpy(rng.integers(0, n, (2, 2 * n))),
                                      edge_attr=torch.ones(2 * n, 2), y=torch.tensor([k % 2]), num_nodes=n)}, k % 2))
    shards = round_trip(ListDataset(graphs, [k % 2 for k in range(6)], ["a", "b"]), tmp_path)
    assert shards.kind == "graph"


def test_plain_python_and_numpy_values_round_trip(tmp_path):
    items = [({"s": f"é{k}", "b": bytes([k]), "f": k / 3, "t": k % 2 == 0, "n": None, "i": -k, "l": [k, 2.5],
               "scalar": np.float32(k) / 7, "u8": np.arange(k + 1, dtype=np.uint8)}, np.int64(k)) for k in range(4)]
    round_trip(ListDataset(items), tmp_path)


def test_views_of_shards_equal_views_of_the_source_for_the_same_seed(tmp_path):
    source = ImageFolder(image_folder(tmp_path / "images"))
    write_shards(source, tmp_path / "shards")
    views = SimCLRViews(size=4)
    a, b = TransformedDataset(source, views), TransformedDataset(ShardDataset(str(tmp_path / "shards")), views)
    for index, seed in [(0, 11), (5, 12), (3, 13)]:
        x, y = a[(index, seed)], b[(index, seed)]
        assert all(torch.equal(u, v) for u, v in zip(x["views"], y["views"])) and x["label"] == y["label"]


# ---- layout: shards, sizes, sources


def test_a_small_shard_size_splits_into_several_shards_named_by_sample_source(tmp_path):
    source = ArrayImages(np.random.default_rng(4).integers(0, 256, (40, 8, 8), dtype=np.uint8), np.zeros(40), ["x"])
    summary = write_shards(source, tmp_path / "shards", shard_size="2KB")
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert summary["shards"] == len(index["chunks"]) > 3
    assert summary["bytes"] == sum((tmp_path / "shards" / c["filename"]).stat().st_size for c in index["chunks"])
    shards = ShardDataset(str(tmp_path / "shards"))
    first = 0
    for chunk in index["chunks"]:
        for i in range(first, first + chunk["chunk_size"]):
            assert shards.sample_source(i) == f"{tmp_path / 'shards'} item {i}, shard {chunk['filename']}"
            assert_same(source[i], shards[i])
        first += chunk["chunk_size"]
    assert first == 40
    meta = json.loads((tmp_path / "shards" / "sslp_shards.json").read_text())
    assert (meta["format"], meta["version"], meta["length"], meta["shard_size"]) == ("sslp-shards", 1, 40, 2000)
    with pytest.raises(IndexError, match="out of range"):
        shards[40]


@pytest.mark.parametrize("size, expected", [("256MB", 256 * 10**6), ("64MiB", 64 * 2**20), ("1.5GB", 15 * 10**8),
                                            ("2kb", 2000), (" 12 ", 12), ("3KiB", 3072), (1000, 1000), ("7B", 7)])
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["lots", "-5MB", "5XB", "0", "MB", "", True])
def test_parse_size_refuses_what_is_not_a_size(size):
    with pytest.raises(ValueError, match="shard size"):
        parse_size(size)


def test_relative_source_resolves_under_the_data_root(tmp_path, monkeypatch):
    write_shards(ArrayImages(np.zeros((3, 2, 2), np.uint8), np.zeros(3), ["x"]), tmp_path / "root" / "fm-shards")
    monkeypatch.setenv("SSL_PLATFORM_DATA", str(tmp_path / "root"))
    assert len(ShardDataset("data/fm-shards")) == 3
    with pytest.raises(FileNotFoundError, match="sslp data shard"):
        ShardDataset("data/absent")


def test_recipes_and_suites_may_name_it():
    node = {"_component_": "ssl_platform.data.datasets.ShardDataset", "source": "s3://bucket/x"}
    assert config.locate(node["_component_"]) is ShardDataset


def test_default_cache_dir_follows_ssl_platform_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_PLATFORM_CACHE", str(tmp_path))
    a, b = default_cache_dir("s3://b/x"), default_cache_dir("s3://b/y")
    assert a.parent == tmp_path / "shards" and a != b
    monkeypatch.delenv("SSL_PLATFORM_CACHE")
    assert default_cache_dir("s3://b/x").parent == Path("~/.cache/ssl_platform/shards").expanduser()


# ---- refusals: untrusted shards, credentials in URLs, what cannot be stored


def small_shards(tmp_path: Path, n: int = 6) -> Path:
    write_shards(ArrayImages(np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2), np.arange(n) % 2, ["a", "b"]),
                 tmp_path / "shards", shard_size=200)
    return tmp_path / "shards"


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


SPRUNG = []


def _spring():
    SPRUNG.append("unpickled")  # what a hostile pickle could run instead


class _Trap:
    def __reduce__(self):
        return _spring, ()


def test_shards_whose_items_litdata_would_unpickle_are_refused_before_any_read(tmp_path):
    from litdata import StreamingDataset
    from litdata.streaming.writer import BinaryWriter

    folder = tmp_path / "pickled"
    writer = BinaryWriter(str(folder), chunk_bytes=1000)
    writer[0] = (_Trap(), 1)
    writer.done()
    writer.merge()
    assert json.loads((folder / "index.json").read_text())["config"]["data_format"][0] == "pickle"
    (folder / "sslp_shards.json").write_text("{}")
    np.save(folder / "sslp_targets.npy", np.zeros(1, np.int64))
    with pytest.raises(ShardFormatError, match=r"index.json: data_format \['pickle', 'int'\] .*'pickle' runs code"):
        ShardDataset(str(folder))
    assert SPRUNG == []
    StreamingDataset(str(folder))[0]  # read unguarded, the same shard does run its payload
    assert SPRUNG == ["unpickled"]


@pytest.mark.parametrize("name", ["../evil.bin", "/tmp/evil.bin", "sub/chunk-0-0.bin", "..", "a\\..\\b"])
def test_shard_names_that_could_leave_the_cache_are_refused(tmp_path, name):
    folder = small_shards(tmp_path)
    edit_json(folder / "index.json", lambda d: d["chunks"][0].update(filename=name))
    with pytest.raises(ShardFormatError, match="index.json: shard file name .* is not a plain file name"):
        ShardDataset(str(folder))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["config"].update(item_loader="ParquetLoader"), "item_loader 'ParquetLoader'"),
    (lambda d: d["config"].update(compression="zstd"), "compression"),
    (lambda d: d["config"].update(data_spec='[1, {"type": "builtins.dict", "context": "[]", "children_spec": []}]'),
     "not a flat tuple"),
    (lambda d: d.update(updated_at="../../x"), "not a timestamp"),
    (lambda d: d.pop("chunks"), "not a LitData chunk index"),
])
def test_indexes_other_than_what_sslp_writes_are_refused(tmp_path, edit, message):
    folder = small_shards(tmp_path)
    edit_json(folder / "index.json", edit)
    with pytest.raises(ShardFormatError, match=message):
        ShardDataset(str(folder))


def test_a_foreign_or_inconsistent_meta_or_targets_file_is_refused(tmp_path):
    folder = small_shards(tmp_path)
    meta = (folder / "sslp_shards.json").read_text()
    edit_json(folder / "sslp_shards.json", lambda d: d.update(version=99))
    with pytest.raises(ShardFormatError, match="format version 99"):
        ShardDataset(str(folder))
    (folder / "sslp_shards.json").write_text(meta)
    edit_json(folder / "sslp_shards.json", lambda d: d.update(length=5))
    with pytest.raises(ShardFormatError, match="mixes two writes"):
        ShardDataset(str(folder))
    (folder / "sslp_shards.json").write_text(meta)
    np.save(folder / "sslp_targets.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ShardFormatError, match="sslp_targets.npy: not a plain .npy"):
        ShardDataset(str(folder))
    (folder / "sslp_shards.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['sslp_shards.json'\].*interrupted"):
        ShardDataset(str(folder))


@pytest.mark.parametrize("source", ["s3://AKIAX:hunter2@bucket/x", "https://user:hunter2@example.com/shards",
                                    "gs://hunter2@bucket/x"])
def test_a_url_with_credentials_is_refused_without_repeating_them(source):
    with pytest.raises(ValueError, match="environment variables") as err:
        ShardDataset(source)
    assert "hunter2" not in str(err.value)


def test_a_url_with_a_query_or_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="query") as err:
        ShardDataset("https://example.com/shards?X-Amz-Signature=hunter2")
    assert "hunter2" not in str(err.value)
    with pytest.raises(ValueError, match="scheme ftp://"):
        ShardDataset("ftp://example.com/shards")


def test_out_must_be_new_or_empty(tmp_path):
    data = ArrayImages(np.zeros((2, 2, 2), np.uint8), np.zeros(2), ["x"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="full is not an empty folder"):
        write_shards(data, tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_shards(data, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert write_shards(data, tmp_path / "empty")["items"] == 2
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("items, message", [
    ([(object(), 0)], r"item 0\[0\] is a builtins.object, which shards cannot store safely"),
    ([(1, 0), ("a", 0)], "item 1 .* has the structure .* same structure"),
    ([(torch.zeros(2, dtype=torch.bfloat16), 0)], r"item 0\[0\]: a torch.strided torch.bfloat16 tensor"),
    ([(Image.new("F", (2, 2)), 0)], r"item 0\[0\]: a PIL image of mode F"),
    ([({"x": np.array([None, 1], dtype=object)}, 0)], r"item 0\[0\]\['x'\]: a numpy array of dtype object"),
    ([({1: "a"}, 0)], "builtins.dict"),
    ([(2**70, 0)], "does not fit in 64 bits"),
])
def test_what_has_no_safe_encoding_fails_naming_it_and_leaves_nothing(tmp_path, items, message):
    with pytest.raises(ValueError, match=message):
        write_shards(ListDataset(items), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- remote: http from a local server, S3 from moto


def test_reading_over_http_fetches_the_small_files_and_only_the_shards_it_reads(tmp_path):
    folder, requests = small_shards(tmp_path), []
    chunks = json.loads((folder / "index.json").read_text())["chunks"]
    local = ShardDataset(str(folder))
    with serve_directory(folder, requests) as url:
        shards = ShardDataset(url + "/", cache_dir=str(tmp_path / "cache"))
        assert len(shards) == 6 and np.array_equal(shards.targets, local.targets)
        assert_same(local[0], shards[0])
        assert_same(local[5], shards[5])
        assert_same(local[0], shards[0])  # from the cache
    assert requests == ["/index.json", "/sslp_shards.json", "/sslp_targets.npy", f"/{chunks[0]['filename']}",
                        f"/{chunks[-1]['filename']}"]
    cached = {p.name for p in (tmp_path / "cache").rglob("*.bin")}
    assert cached == {chunks[0]["filename"], chunks[-1]["filename"]}
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]
    assert shards.sample_source(5) == f"{url}/ item 5, shard {chunks[-1]['filename']}"


def test_a_source_rewritten_in_place_is_not_read_from_its_old_cache(tmp_path):
    folder = small_shards(tmp_path / "a")
    with serve_directory(folder) as url:
        first = ShardDataset(url, cache_dir=str(tmp_path / "cache"))
        assert first[1][1] == 1
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        write_shards(ArrayImages(np.full((3, 2, 2), 7, np.uint8), np.array([2, 2, 2]), ["a", "b", "c"]), folder)
        second = ShardDataset(url, cache_dir=str(tmp_path / "cache"))
        assert len(second) == 3 and second[1][1] == 2 and np.asarray(second[1][0]).max() == 7


def test_http_errors_name_the_url_and_status_and_leave_no_partial_file(tmp_path):
    folder = small_shards(tmp_path)
    with serve_directory(folder) as url:
        with pytest.raises(ShardSourceError, match=f"{url}/absent/index.json: HTTP 404"):
            ShardDataset(url + "/absent", cache_dir=str(tmp_path / "cache"))
        local = tmp_path / "dl" / "chunk.bin"
        with pytest.raises(ShardSourceError, match="HTTP 404"):
            HTTPDownloader(url, str(tmp_path / "dl"), []).download_file(f"{url}/nope.bin", str(local))
        assert not list((tmp_path / "dl").iterdir())
        HTTPDownloader(url, str(tmp_path / "dl"), []).download_file(f"{url}/index.json", str(local))
        assert local.read_bytes() == (folder / "index.json").read_bytes()


@pytest.fixture
def moto_s3(monkeypatch):
    """A moto S3 server on 127.0.0.1 and the environment that points boto3 (LitData's S3 client) at it."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    yield
    server.stop()


@pytest.mark.slow  # a moto server
def test_reading_from_s3(tmp_path, moto_s3):
    import boto3

    folder = small_shards(tmp_path)
    client = boto3.client("s3")
    client.create_bucket(Bucket="sslp-shards")
    for path in folder.iterdir():
        client.upload_file(str(path), "sslp-shards", f"fmnist/train/{path.name}")
    local, shards = ShardDataset(str(folder)), ShardDataset("s3://sslp-shards/fmnist/train", cache_dir=str(tmp_path / "c"))
    assert len(shards) == len(local) and np.array_equal(shards.targets, local.targets)
    for i in (4, 0, 5, 1):
        assert_same(local[i], shards[i])
    with pytest.raises(ShardSourceError, match="s3://sslp-shards/absent/index.json: cannot be fetched .*404"):
        ShardDataset("s3://sslp-shards/absent", cache_dir=str(tmp_path / "c"))


@pytest.mark.slow  # a few seconds of retries
def test_an_unreachable_s3_endpoint_fails_naming_it_instead_of_retrying_for_hours(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    for var, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(var, value)
    with pytest.raises(ShardSourceError, match="s3://bucket/x/index.json: cannot be fetched .*127.0.0.1:9"):
        ShardDataset("s3://bucket/x", cache_dir=str(tmp_path))


def test_gs_without_its_client_library_says_what_to_install(tmp_path):
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        with pytest.raises(ShardSourceError, match="pip install google-cloud-storage"):
            ShardDataset("gs://bucket/x", cache_dir=str(tmp_path))
    else:
        pytest.skip("google-cloud-storage is installed")


@pytest.mark.slow  # DataLoader workers
@pytest.mark.parametrize("remote", [False, True])
def test_a_dataloader_with_two_workers_reads_every_item_once(tmp_path, remote):
    source = ArrayImages(np.random.default_rng(5).integers(0, 256, (24, 3, 3), dtype=np.uint8), np.arange(24) % 5,
                         list("abcde"))
    write_shards(source, tmp_path / "shards", shard_size="300B")
    with serve_directory(tmp_path / "shards") as url:
        shards = ShardDataset(url if remote else str(tmp_path / "shards"), cache_dir=str(tmp_path / "cache"))
        loader = torch.utils.data.DataLoader(shards, batch_size=5, num_workers=2, collate_fn=list)
        items = [item for batch in loader for item in batch]
    assert len(items) == 24 and shards._stream is None  # the workers made their own readers
    for i, item in enumerate(items):
        assert_same(source[i], item, f"item {i}")


@pytest.mark.parametrize("edit", [
    lambda d: d["config"].update(data_spec="not json"),
    lambda d: d["config"].update(data_format=[{"a": 1}]),
    lambda d: d["chunks"].append("chunk-0-9.bin"),
    lambda d: d["chunks"][0].update(chunk_size="3"),
])
def test_malformed_indexes_are_refused_with_a_format_error(tmp_path, edit):
    folder = small_shards(tmp_path)
    edit_json(folder / "index.json", edit)
    with pytest.raises(ShardFormatError, match="index.json"):
        ShardDataset(str(folder))


@pytest.mark.parametrize("schema", [{"type": "tuple", "items": [{"type": "image", "decode": "CMYK"}, {"type": "int"}]},
                                    {"type": "tuple", "items": [{"type": "pickle"}, {"type": "int"}]},
                                    {"type": "dict", "items": [[1, {"type": "int"}], ["b", {"type": "int"}]]}])
def test_a_schema_sslp_does_not_write_is_refused(tmp_path, schema):
    folder = small_shards(tmp_path)
    edit_json(folder / "sslp_shards.json", lambda d: d.update(schema=schema))
    with pytest.raises(ShardFormatError, match="schema is malformed"):
        ShardDataset(str(folder))


def test_encoded_leaves_in_memory_images_as_the_source_gives_them(tmp_path):
    shards = round_trip(ArrayImages(np.zeros((3, 4, 4), np.uint8), np.zeros(3), ["x"]), tmp_path)
    shards.encoded = True  # the source has no `encoded`: its images are never undecoded files
    assert isinstance(shards[0][0], Image.Image)


def test_targets_that_need_pickle_are_refused(tmp_path):
    data = ListDataset([(1, 0)])
    data.targets = np.array([object()], dtype=object)
    with pytest.raises(ValueError, match=r"\.targets: a numpy array of dtype object cannot be stored without pickle"):
        write_shards(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_local_shards_stay_mapped_between_reads_in_a_random_order(tmp_path):
    """LitData maps a shard file again whenever a read is in another shard than the last; ShardDataset turns
    on its reader that keeps the files mapped (a litdata that lacks it fails loudly, not slowly)."""
    shards = small_shards(tmp_path, n=12)
    data = ShardDataset(shards)
    assert not data.mapped  # nothing read yet
    first = [data[i] for i in (11, 0, 7, 3)]
    assert data.mapped
    again = ShardDataset(shards)
    for a, b in zip(first, [again[i] for i in (11, 0, 7, 3)]):
        assert_same(a, b)
