"""Checkpoint files: atomic writes, strict loads whose errors say what to do, backbone export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ssl_platform.checkpoint import io as ckpt_io
from ssl_platform.checkpoint.io import (
    CheckpointError,
    export_backbone,
    load_backbone,
    load_checkpoint,
    load_run_method,
    load_state_strict,
    read_backbone_metadata,
    save_checkpoint,
    write_atomic,
)
from ssl_platform.models.backbones import create_backbone

NARROW = [8, 16, 32, 64]


def small_resnet(**kwargs) -> nn.Module:
    return create_backbone("resnet18", small_input=True, in_chans=1, channels=NARROW, **kwargs)


def tiny_vit() -> nn.Module:
    # depth=2 keeps init fast; it is one more timm kwarg the spec must carry
    return create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)


def perturb_buffers(model: nn.Module) -> None:
    """Give BatchNorm non-default running stats, so a round trip that drops buffers is caught in eval."""
    g = torch.Generator().manual_seed(1)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=g))


# ---- write_atomic


def test_write_atomic_creates_and_replaces_leaving_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "file.bin"  # missing parent directories are created
    write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    write_atomic(target, b"second, longer content")
    assert target.read_bytes() == b"second, longer content"
    assert sorted(os.listdir(target.parent)) == ["file.bin"]


def test_write_atomic_gives_the_mode_open_would(tmp_path):
    import stat

    from ssl_platform.checkpoint import atomic

    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")  # open() applies the umask to 0666 (mkstemp alone would give 0600)
    write_atomic(tmp_path / "atomic.bin", b"x")
    mode = stat.S_IMODE((tmp_path / "atomic.bin").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~atomic._UMASK


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    write_atomic(target, b"old and complete")

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)  # what write_atomic renames with
    with pytest.raises(OSError, match="simulated crash"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old and complete"
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_failed_write_before_rename_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    write_atomic(target, b"old and complete")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old and complete"
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


# ---- train-state checkpoints


def test_save_load_round_trip(tmp_path):
    model = small_resnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 16, 16)).sum().backward()
    opt.step()
    state = {
        "method": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 7,
        "rng": {"torch": torch.get_rng_state()},
        "recipe": {"method": {"temperature": 0.5}, "tags": ["a", "b"]},
    }
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == ckpt_io.FORMAT
    assert set(loaded) == set(state) | {"format"}
    assert loaded["step"] == 7 and loaded["recipe"] == state["recipe"]
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    for k, v in state["method"].items():
        assert torch.equal(loaded["method"][k], v), k
    for k, v in state["optimizer"]["state"].items():
        assert torch.equal(loaded["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"]), k


def test_missing_checkpoint_is_named(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def write_truncated_checkpoint(tmp_path, keep: float):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"weights": torch.randn(64, 64), "step": 3})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def assert_unreadable_message(err: CheckpointError, path) -> None:
    message = str(err)
    assert str(path) in message
    assert "unreadable" in message
    assert "Delete it" in message and "train.resume" in message  # what to do about it


@pytest.mark.parametrize("keep", [0.0, 0.05])
def test_truncated_header_raises_checkpoint_error_with_advice(tmp_path, keep):
    path = write_truncated_checkpoint(tmp_path, keep)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_unreadable_message(info.value, path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_data_raises_checkpoint_error_with_advice(tmp_path, keep):
    path = write_truncated_checkpoint(tmp_path, keep)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_unreadable_message(info.value, path)


def test_garbage_file_raises_checkpoint_error_with_advice(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_unreadable_message(info.value, path)


def test_reserved_metadata_keys_are_refused(tmp_path):
    backbone = create_backbone("resnet18", small_input=True, in_chans=1, channels=[8, 16, 32, 64])
    with pytest.raises(ValueError, match="reserved"):
        export_backbone(backbone, tmp_path / "b.safetensors", {"backbone": "mine"})
    assert not (tmp_path / "b.safetensors").exists()


@pytest.mark.parametrize("payload", [torch.zeros(3), {"model": {"w": torch.zeros(3)}}, {"format": "other/1"}])
def test_foreign_torch_file_is_refused(tmp_path, payload):
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="not an ssl_platform train-state checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


# ---- load_state_strict


def test_load_state_strict_loads_exactly():
    src, dst = small_resnet(), small_resnet()
    perturb_buffers(src)
    load_state_strict(dst, src.state_dict(), "src.pt")
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_load_state_strict_reports_another_architecture():
    # a resnet10t state into a resnet18: different stem (3 convs), one block per stage, different widths
    other = create_backbone("resnet10t", small_input=False, in_chans=1)
    model = small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_state_strict(model, other.state_dict(), "runs/x/last.pt")
    message = str(info.value)
    assert message.startswith("runs/x/last.pt does not match this ResNet")
    own, theirs = set(model.state_dict()), set(other.state_dict())
    missing, unexpected = sorted(own - theirs), sorted(theirs - own)
    assert "layer1.1.conv1.weight" in missing and "conv1.0.weight" in unexpected  # 1 block/stage; deep stem
    assert f"{len(missing)} missing (e.g. {missing[:3]})" in message
    assert f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" in message
    assert "with another shape" in message and "file (64,) vs model (8,)" in message
    assert "use the matching recipe" in message
    # nothing was half-loaded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_load_state_strict_reports_each_kind_with_counts():
    model = small_resnet()
    state = dict(small_resnet().state_dict())
    state.pop("bn1.bias")
    state["extra.weight"] = torch.zeros(2)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    with pytest.raises(CheckpointError) as info:
        load_state_strict(model, state, "f.pt")
    message = str(info.value)
    assert "1 missing (e.g. ['bn1.bias'])" in message
    assert "1 unexpected (e.g. ['extra.weight'])" in message
    assert "1 with another shape" in message
    assert "conv1.weight: file (64, 1, 7, 7) vs model (64, 1, 3, 3)" in message


@pytest.mark.parametrize("kind", ["missing", "unexpected", "shape"])
def test_load_state_strict_refuses_a_single_problem(kind):
    model = small_resnet()
    state = dict(small_resnet().state_dict())
    if kind == "missing":
        state.pop("layer4.1.bn2.running_var")
        expected = "1 missing"
    elif kind == "unexpected":
        state["head.weight"] = torch.zeros(3, 3)
        expected = "1 unexpected"
    else:
        state["layer4.1.bn2.weight"] = torch.zeros(3)
        expected = "1 with another shape"
    with pytest.raises(CheckpointError, match=expected):
        load_state_strict(model, state, "f.pt")


# ---- backbone export


@pytest.mark.parametrize("make, x_shape", [(small_resnet, (3, 1, 28, 28)), (tiny_vit, (3, 3, 32, 32))])
def test_export_load_backbone_round_trip_same_outputs(tmp_path, make, x_shape):
    original = make()
    perturb_buffers(original)
    original.eval()
    path = tmp_path / "backbone.safetensors"
    export_backbone(original, path)
    loaded = load_backbone(path).eval()
    assert type(loaded) is type(original)
    x = torch.randn(*x_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
        assert torch.equal(loaded.forward_features(x), original.forward_features(x))
    assert sorted(os.listdir(tmp_path)) == ["backbone.safetensors"]


@pytest.mark.parametrize(
    "name, kwargs, x_shape",
    [
        ("resnet18", {"in_chans": 1, "channels": NARROW}, (2, 1, 32, 32)),
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}, (2, 3, 32, 32)),
    ],
)
def test_exported_backbone_loads_into_plain_timm_model(tmp_path, name, kwargs, x_shape):
    original = create_backbone(name, **kwargs).eval()
    path = tmp_path / "backbone.safetensors"
    export_backbone(original, path)
    timm_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    plain = timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs).eval()
    plain.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randn(*x_shape)
    with torch.no_grad():
        assert torch.equal(plain(x), original(x))


def test_backbone_metadata_round_trip(tmp_path):
    model = small_resnet(stem_stride=2)
    path = tmp_path / "backbone.safetensors"
    extra = {"method": "simclr", "step": 1200, "recipe": {"lr": 0.3, "views": [32, 32]}, "ok": True}
    export_backbone(model, path, metadata=extra)
    meta = read_backbone_metadata(path)
    assert meta["format"] == "ssl_platform.backbone/1"
    assert meta["backbone"] == {
        "name": "resnet18", "small_input": True, "in_chans": 1, "channels": NARROW, "stem_stride": 2,
    }
    assert meta["num_features"] == 64
    for k, v in extra.items():
        assert meta[k] == v, k
    assert load_backbone(path).conv1.stride == (2, 2)


def test_file_without_metadata_is_refused_with_advice(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(small_resnet().state_dict(), str(path))
    with pytest.raises(CheckpointError) as info:
        load_backbone(path)
    message = str(info.value)
    assert str(path) in message
    assert "no ssl_platform architecture metadata" in message
    assert "safetensors.torch.load_file" in message


def test_foreign_module_export_is_refused_on_load(tmp_path):
    # a module not built by create_backbone has an empty spec: the file cannot rebuild it
    path = tmp_path / "linear.safetensors"
    export_backbone(nn.Linear(4, 2), path)
    with pytest.raises(CheckpointError, match="no ssl_platform architecture metadata"):
        load_backbone(path)


def test_missing_or_unreadable_backbone_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(tmp_path / "nope.safetensors")
    path = tmp_path / "backbone.safetensors"
    export_backbone(small_resnet(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_backbone(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_backbone_metadata(path)


def test_backbone_file_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "backbone.safetensors"
    export_backbone(small_resnet(), path)
    # keep the metadata but swap in another model's tensors: the strict load must catch it
    meta = {k: v for k, v in load_metadata_raw(path).items()}
    save_file(create_backbone("resnet18", in_chans=1).state_dict(), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="with another shape") as info:
        load_backbone(path)
    assert str(path) in str(info.value)


def load_metadata_raw(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


# ---- load_run_method: a run's whole method from config.yaml + last.pt


def test_load_run_method_rebuilds_the_whole_method_or_its_random_init(tmp_path):
    from ssl_platform import pretrain

    root = Path(__file__).resolve().parents[2]
    with pytest.raises(FileNotFoundError, match="has no config.yaml; give the directory of a pretraining run"):
        load_run_method(tmp_path)
    pretrain.run(pretrain.load_recipe(root / "recipes/graphmae/debug.yaml", [f"train.out_dir={tmp_path}"]))
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["method"]
    method = load_run_method(tmp_path)
    assert not method.training and any(k.startswith("decoder.") for k in saved)  # not only the backbone
    assert all(torch.equal(v, saved[k]) for k, v in method.state_dict().items())
    a, b = (load_run_method(tmp_path, random_init=True, seed=s) for s in (3, 3))
    c = load_run_method(tmp_path, random_init=True, seed=4)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.decoder.lin.weight, c.decoder.lin.weight)
    assert not torch.equal(a.decoder.lin.weight, method.decoder.lin.weight)
