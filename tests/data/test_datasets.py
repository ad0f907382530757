"""Datasets: the idx reader, the `limit` subset, Digits, ImageFolder, torchvision wrappers, real data."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from PIL import Image

from ssl_platform.data.datasets import (
    CIFAR10,
    CIFAR100,
    MNIST,
    STL10,
    Digits,
    FashionMNIST,
    IdxError,
    ImageFolder,
    balanced_subset,
    read_idx,
    write_idx,
)
from ssl_platform.data.datasets.idx import find_idx
from ssl_platform.data.root import data_root

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def reference_idx(path):
    """The independent one-line idx reader from reference/offline_data.md."""
    b = (gzip.open if str(path).endswith(".gz") else open)(path, "rb").read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def write_fake_set(root, name, n_train=40, n_test=20, gz=False):
    """Write a tiny 28x28 idx data set under root/name; returns (train images, train labels)."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    (root / name).mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / name / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / name / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[prefix] = images, labels
    return arrays["train"]


class TestIdx:
    @pytest.mark.parametrize("suffix", ["", ".gz"])
    @pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
    def test_round_trip(self, tmp_path, suffix, dtype):
        array = (np.random.default_rng(1).normal(size=(5, 3, 4)) * 100).astype(dtype)
        path = tmp_path / f"a-idx3-ubyte{suffix}"
        write_idx(path, array)
        back = read_idx(path)
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)

    @pytest.mark.parametrize("suffix", ["", ".gz"])
    def test_writer_matches_the_lecun_format(self, tmp_path, suffix):
        array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
        path = tmp_path / f"x{suffix}"
        write_idx(path, array)
        np.testing.assert_array_equal(reference_idx(path), array)
        if not suffix:
            header = bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
            assert path.read_bytes() == header + array.tobytes()

    def test_truncated_raw_file_names_the_file(self, tmp_path):
        path = tmp_path / "train-images-idx3-ubyte"
        write_idx(path, np.zeros((4, 28, 28), np.uint8))
        path.write_bytes(path.read_bytes()[:-10])
        with pytest.raises(IdxError, match="train-images-idx3-ubyte.*truncated"):
            read_idx(path)

    def test_truncated_gzip_names_the_file(self, tmp_path):
        path = tmp_path / "x.gz"
        write_idx(path, np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:1000])
        with pytest.raises(IdxError, match="x.gz"):
            read_idx(path)

    def test_bad_magic(self, tmp_path):
        path = tmp_path / "x"
        path.write_bytes(b"PK\x03\x04 not idx")
        with pytest.raises(IdxError, match="not an idx file"):
            read_idx(path)

    def test_find_idx_prefers_raw_then_gz(self, tmp_path):
        assert find_idx(tmp_path, "a") is None
        (tmp_path / "a.gz").write_bytes(b"")
        assert find_idx(tmp_path, "a") == tmp_path / "a.gz"
        (tmp_path / "a").write_bytes(b"")
        assert find_idx(tmp_path, "a") == tmp_path / "a"


class TestBalancedSubset:
    def test_balanced_and_deterministic(self):
        targets = np.repeat(np.arange(10), [50, 40, 30, 60, 50, 50, 45, 55, 50, 70])
        a = balanced_subset(targets, 95, seed=3)
        assert len(a) == 95 and len(np.unique(a)) == 95
        counts = np.bincount(targets[a], minlength=10)
        assert counts.max() - counts.min() <= 1
        np.testing.assert_array_equal(a, balanced_subset(targets, 95, seed=3))
        assert not np.array_equal(a, balanced_subset(targets, 95, seed=4))
        assert np.all(np.diff(a) > 0)  # kept in data order

    def test_small_class_runs_out(self):
        targets = np.array([0] * 3 + [1] * 100)
        counts = np.bincount(targets[balanced_subset(targets, 20)])
        assert counts.tolist() == [3, 17]

    def test_unlabelled_and_no_limit(self):
        targets = np.full(30, -1)
        assert len(balanced_subset(targets, 7)) == 7
        np.testing.assert_array_equal(balanced_subset(targets, None), np.arange(30))
        np.testing.assert_array_equal(balanced_subset(targets, 100), np.arange(30))
        with pytest.raises(ValueError, match="limit"):
            balanced_subset(targets, 0)


class TestIdxDatasets:
    @pytest.mark.parametrize("gz", [False, True])
    def test_reads_prepared_layout(self, tmp_path, gz):
        images, labels = write_fake_set(tmp_path, "mnist", gz=gz)
        ds = MNIST("train", root=tmp_path)
        assert len(ds) == 40 and ds.channels == 1 and ds.classes == [str(d) for d in range(10)]
        assert ds.targets.dtype == np.int64
        image, label = ds[7]
        assert isinstance(image, Image.Image) and image.mode == "L" and image.size == (28, 28)
        assert label == labels[7] and isinstance(label, int)
        np.testing.assert_array_equal(np.asarray(image), images[7])
        assert len(MNIST("test", root=tmp_path)) == 20

    def test_limit_is_balanced_and_deterministic(self, tmp_path):
        write_fake_set(tmp_path, "fashion-mnist", n_train=200)
        a = FashionMNIST(root=tmp_path, limit=30, seed=1)
        assert np.bincount(a.targets).tolist() == [3] * 10
        b = FashionMNIST(root=tmp_path, limit=30, seed=1)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(np.asarray(a[5][0]), np.asarray(b[5][0]))
        assert a.classes[0] == "T-shirt/top" and len(a.classes) == 10

    def test_missing_data_names_prepare_command(self, tmp_path, monkeypatch):
        with pytest.raises(
            FileNotFoundError, match="python -m ssl_platform data prepare fashion-mnist"
        ) as info:
            FashionMNIST(root=tmp_path)
        assert "SSL_PLATFORM_DATA" in str(info.value)
        monkeypatch.setenv("SSL_PLATFORM_DATA", str(tmp_path / "elsewhere"))
        with pytest.raises(FileNotFoundError, match="prepare mnist") as info:
            MNIST()
        assert str(tmp_path / "elsewhere" / "mnist") in str(info.value)

    def test_env_var_sets_default_root(self, tmp_path, monkeypatch):
        write_fake_set(tmp_path, "mnist")
        monkeypatch.setenv("SSL_PLATFORM_DATA", str(tmp_path))
        assert len(MNIST("test")) == 20

    def test_corrupt_file_says_to_prepare_again(self, tmp_path):
        write_fake_set(tmp_path, "mnist")
        path = tmp_path / "mnist" / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-1])
        with pytest.raises(IdxError, match="train-images-idx3-ubyte.*data prepare mnist"):
            MNIST(root=tmp_path)

    def test_images_and_labels_must_pair_up(self, tmp_path):
        write_fake_set(tmp_path, "mnist")
        write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
        with pytest.raises(IdxError, match="pair up"):
            MNIST("test", root=tmp_path)

    def test_bad_split_lists_valid_ones(self, tmp_path):
        with pytest.raises(ValueError, match=r"\['train', 'test'\]"):
            MNIST("val", root=tmp_path)


class TestDigits:
    def test_split_is_disjoint_stratified_and_matches_sklearn(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        train, test = Digits("train"), Digits("test")
        assert set(train.rows).isdisjoint(test.rows)
        assert len(train) + len(test) == len(digits.target) == 1797
        for cls in range(10):
            n_cls = (digits.target == cls).sum()
            assert abs((test.targets == cls).sum() - 0.25 * n_cls) <= 1
        np.testing.assert_array_equal(test.targets, digits.target[test.rows])
        image, label = test[3]
        assert image.mode == "L" and image.size == (8, 8) and label == digits.target[test.rows[3]]
        expected = np.rint(digits.images[test.rows[3]] * 255 / 16).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(image), expected)
        assert np.asarray(image).max() <= 255 and expected.max() == 255

    def test_deterministic_and_seeded(self):
        np.testing.assert_array_equal(Digits("test", seed=0).rows, Digits("test", seed=0).rows)
        assert not np.array_equal(Digits("test", seed=0).rows, Digits("test", seed=1).rows)
        assert len(Digits("test", test_fraction=0.5)) in (898, 899)

    def test_limit_keeps_rows_aligned(self):
        from sklearn.datasets import load_digits

        ds = Digits("train", limit=50)
        assert np.bincount(ds.targets).tolist() == [5] * 10
        np.testing.assert_array_equal(ds.targets, load_digits().target[ds.rows])

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="valid splits"):
            Digits("validation")
        with pytest.raises(ValueError, match="test_fraction"):
            Digits(test_fraction=1.5)


def write_png(path, value, size=(6, 5), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


class TestImageFolder:
    def test_labelled_layout(self, tmp_path):
        write_png(tmp_path / "dog" / "a.png", (10, 20, 30))
        write_png(tmp_path / "cat" / "b.PNG", (1, 2, 3))
        write_png(tmp_path / "cat" / "nested" / "c.png", (4, 5, 6))
        (tmp_path / "cat" / "notes.txt").write_text("not an image")
        write_png(tmp_path / "cat" / ".hidden.png", (0, 0, 0))
        ds = ImageFolder(tmp_path)
        assert ds.classes == ["cat", "dog"] and ds.channels == 3
        assert ds.targets.tolist() == [0, 0, 1] and ds.targets.dtype == np.int64
        image, label = ds[2]
        assert image.mode == "RGB" and label == 1 and image.getpixel((0, 0)) == (10, 20, 30)

    def test_unlabelled_layout_and_gray(self, tmp_path):
        for i in range(5):
            write_png(tmp_path / f"{i}.png", (i * 40, 0, 0))
        ds = ImageFolder(tmp_path, channels=1, limit=3, seed=0)
        assert ds.classes == [] and ds.targets.tolist() == [-1, -1, -1] and len(ds) == 3
        image, label = ds[0]
        assert image.mode == "L" and label == -1

    def test_limit_is_class_balanced(self, tmp_path):
        for cls, n in (("a", 6), ("b", 2), ("c", 6)):
            for i in range(n):
                write_png(tmp_path / cls / f"{i}.png", (i, i, i))
        assert np.bincount(ImageFolder(tmp_path, limit=6).targets).tolist() == [2, 2, 2]

    def test_corrupt_image_names_the_file(self, tmp_path):
        write_png(tmp_path / "good.png", (1, 1, 1))
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        ds = ImageFolder(tmp_path)
        with pytest.raises(OSError, match=str(bad)):
            [ds[i] for i in range(len(ds))]

    def test_truncated_image_names_the_file(self, tmp_path):
        path = tmp_path / "x" / "cut.jpg"
        path.parent.mkdir()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
        with pytest.raises(OSError, match="cut.jpg"):
            ImageFolder(tmp_path)[0]

    def test_layout_errors(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="root="):
            ImageFolder(tmp_path / "missing")
        with pytest.raises(FileNotFoundError, match="no images"):
            ImageFolder(tmp_path)
        write_png(tmp_path / "loose.png", (0, 0, 0))
        write_png(tmp_path / "cls" / "x.png", (0, 0, 0))
        with pytest.raises(ValueError, match="directly and in the subdirectories"):
            ImageFolder(tmp_path)
        (tmp_path / "loose.png").unlink()
        (tmp_path / "empty").mkdir()
        with pytest.raises(ValueError, match=r"\['empty'\].*hold no images"):
            ImageFolder(tmp_path)
        with pytest.raises(ValueError, match="channels"):
            ImageFolder(tmp_path, channels=2)


class TestTorchvisionSets:
    @pytest.mark.parametrize("cls", [CIFAR10, CIFAR100, STL10])
    def test_missing_says_download_true(self, cls, tmp_path):
        with pytest.raises(FileNotFoundError, match="download=True") as info:
            cls("train", root=tmp_path)
        assert str(tmp_path) in str(info.value) and "prepare" in str(info.value)

    def test_bad_split(self, tmp_path):
        with pytest.raises(ValueError, match="unlabeled"):
            STL10("val", root=tmp_path)
        with pytest.raises(ValueError, match="valid splits"):
            CIFAR10("unlabeled", root=tmp_path)


def _require(name):
    directory = data_root() / name
    if find_idx(directory, "train-labels-idx1-ubyte") is None:
        pytest.skip(
            f"{name} is not prepared under {directory}; run `python -m ssl_platform data prepare {name}`"
        )


@pytest.mark.data
class TestRealData:
    def test_fashion_mnist(self):
        _require("fashion-mnist")
        train, test = FashionMNIST("train"), FashionMNIST("test")
        assert np.bincount(train.targets).tolist() == [6000] * 10
        assert np.bincount(test.targets).tolist() == [1000] * 10
        image, _ = train[0]
        assert image.mode == "L" and image.size == (28, 28)

    def test_mnist(self):
        _require("mnist")
        train, test = MNIST("train"), MNIST("test")
        assert np.bincount(train.targets).tolist() == MNIST_TRAIN_COUNTS
        assert train.targets[:5].tolist() == [5, 0, 4, 1, 9] and len(test) == 10000
        assert np.asarray(train[0][0]).max() == 255
