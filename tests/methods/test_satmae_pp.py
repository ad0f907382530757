"""SatMAE++: exact per-group mask counts drawn independently per group, the shapes of the reference
CPU check, the loss (masked-patch MSE + L1 of the upsampled whole prediction at every finer scale)
against naive loops (ours and the official head/band pairing), gradients, the RGB mode, and the debug recipe on the real Landsat-7 tiles
(lowers the loss, exports a backbone timm rebuilds by name, resumes exactly)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssl_platform import pretrain
from ssl_platform.methods.satmae_pp import SatMAEPP
from ssl_platform.models.grouped_vit import GroupedChannelViT

ROOT = Path(__file__).resolve().parents[2]
GROUPS = [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]


def tiny(**kw) -> SatMAEPP:
    """The reference notes' CPU check: 10 bands in 3 groups, 32-px encoder input (128-px images),
    patch 8, embed 64 = 48 + 16, depth 2; decoder 32 = 24 + 8, depth 1."""
    torch.manual_seed(0)
    args = {"backbone": "grouped_vit", "in_chans": 10, "image_size": 128,
            "backbone_kwargs": {"patch_size": 8, "band_groups": GROUPS, "embed_dim": 64, "group_dim": 16, "depth": 2,
                                "num_heads": 4},
            "decoder_dim": 32, "decoder_group_dim": 8, "decoder_depth": 1, "decoder_heads": 4}
    return SatMAEPP(**{**args, **kw})


def test_masks_keep_exactly_a_quarter_of_each_group_independently():
    m = tiny()
    torch.manual_seed(1)
    keep = m.sample_keep(64, torch.device("cpu"))
    assert keep.shape == (64, 3, 16)  # [N, G, L]: 48 tokens
    assert (keep.sum(-1) == 4).all() and (keep.sum((1, 2)) == 12).all()  # 12 kept, 36 hidden per sample
    assert (keep[:, 0] != keep[:, 1]).any(-1).float().mean() > 0.9  # groups masked independently
    spatial = tiny(spatial_mask=True).sample_keep(8, torch.device("cpu"))
    assert (spatial == spatial[:, :1]).all() and (spatial.sum(-1) == 4).all()


def test_shapes_of_the_reference_cpu_check():
    m = tiny()
    x = torch.rand(2, 10, 128, 128)
    scales = m.pyramid(x)
    assert [s.shape[-1] for s in scales] == [32, 64, 128]
    torch.testing.assert_close(scales[1], F.interpolate(x, size=64, mode="bilinear", align_corners=False))
    keep = m.sample_keep(2, x.device)
    preds = m.predict(m.backbone.tokens(scales[0]), keep)
    assert [p.shape for p in preds] == [(2, 16, 4 * 64), (2, 16, 4 * 64), (2, 16, 2 * 64)]
    image = m.to_image(preds)
    assert image.shape == (2, 10, 32, 32)
    feats = m.upsample_stem(image)
    feats, out_2x = m.upsample[0](feats)
    _, out_4x = m.upsample[1](feats)
    assert out_2x.shape == (2, 10, 64, 64) and out_4x.shape == (2, 10, 128, 128)


def naive_patches(x: torch.Tensor, group: list[int], p: int) -> torch.Tensor:
    """`[B, C, s, s]` -> `[B, L, p*p*|g|]`, patch (i, j) in row-major order, pixels as (row, col, band)."""
    b, _, s, _ = x.shape
    out = torch.zeros(b, (s // p) ** 2, p * p * len(group))
    for n in range(b):
        for i in range(s // p):
            for j in range(s // p):
                values = [x[n, c, i * p + r, j * p + q] for r in range(p) for q in range(p) for c in group]
                out[n, i * (s // p) + j] = torch.stack(values)
    return out


def test_predicted_patches_go_back_to_their_bands_and_places():
    m = tiny()
    x = torch.rand(2, 10, 32, 32)
    preds = [naive_patches(x, g, 8) for g in GROUPS]  # a "prediction" that is the image itself
    torch.testing.assert_close(m.to_image(preds), x)


def test_loss_matches_naive_loops():
    m = tiny()
    x = torch.rand(2, 10, 128, 128)
    scales = m.pyramid(x)
    keep = m.sample_keep(2, x.device)
    preds = [torch.randn(2, 16, len(g) * 64) for g in GROUPS]
    out = m.losses(scales, preds, keep)
    # MSE: mean over the |g| p² values of each hidden (group, patch), averaged over all of them
    errors = []
    for g, (group, pred) in enumerate(zip(GROUPS, preds)):
        target = naive_patches(scales[0], group, 8)
        for n in range(2):
            for patch in range(16):
                if not keep[n, g, patch]:
                    errors.append(((pred[n, patch] - target[n, patch]) ** 2).mean())
    assert len(errors) == 2 * 36
    torch.testing.assert_close(out["mse"], torch.stack(errors).mean())
    # L1: the whole predicted image, upsampled, against every pixel of each finer scale
    image = torch.zeros(2, 10, 32, 32)
    for group, pred in zip(GROUPS, preds):
        for patch in range(16):
            i, j = divmod(patch, 4)
            pixels = pred[:, patch].view(2, 8, 8, len(group))  # (row, col, band)
            for k, c in enumerate(group):
                image[:, c, i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] = pixels[..., k]
    feats = m.upsample_stem(image)
    l1 = []
    for block, target in zip(m.upsample, scales[1:]):
        feats, up = block(feats)
        l1.append((up - target).abs().sum() / target.numel())
    torch.testing.assert_close(out["l1_2x"], l1[0])
    torch.testing.assert_close(out["l1_4x"], l1[1])
    torch.testing.assert_close(out["loss"], 0.6 * out["mse"] + 0.4 * 0.5 * (l1[0] + l1[1]))


def test_mse_sees_hidden_patches_only_and_l1_sees_the_whole_prediction():
    m = tiny()
    x = torch.rand(2, 10, 128, 128)
    scales = m.pyramid(x)
    keep = m.sample_keep(2, x.device)
    exact = [naive_patches(scales[0], g, 8) for g in GROUPS]
    edited = [p.clone() for p in exact]
    for g, p in enumerate(edited):
        p[keep[:, g]] += 5.0  # wrong only where the encoder could see
    out = m.losses(scales, [p.requires_grad_() for p in edited], keep)
    assert out["mse"] == 0
    out["l1"].backward()
    # the upsampling branch reads visible patches too (it upsamples the prediction, not the target)
    assert all(p.grad[keep[:, g]].abs().sum() > 0 for g, p in enumerate(edited))


def test_gradients_reach_every_group_embedding_and_both_upsampling_blocks():
    m = tiny()
    m({"image": torch.rand(2, 10, 128, 128)})["loss"].backward()
    for name in ("backbone.patch_embeds.0", "backbone.patch_embeds.1", "backbone.patch_embeds.2", "upsample.0",
                 "upsample.1", "mask_token", "heads.2"):
        grads = [p.grad for n, p in m.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    assert all(p.grad is not None for p in m.parameters())  # nothing unused (DDP would stop on it)
    # the encodings are fixed buffers, rebuilt from the kwargs rather than trained or stored
    assert {"decoder_code", "backbone.group_code"} <= {n for n, _ in m.named_buffers()}
    assert not {"decoder_code", "backbone.group_code"} & {n for n, _ in m.named_parameters()}


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    # the GPU recipes train under bf16 autocast: mixed dtypes must not break the mask-token scatter
    m = tiny()
    x = torch.rand(2, 10, 128, 128)
    torch.manual_seed(3)
    full = m({"image": x})
    torch.manual_seed(3)  # the same masks
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = m({"image": x})
    assert torch.isfinite(half["loss"]) and abs(float(half["loss"]) - float(full["loss"])) < 0.05
    half["loss"].backward()
    assert m.mask_token.grad is not None and m.mask_token.grad.dtype == torch.float32


def test_decoder_checkpoint_keys_are_the_trained_runs():
    # runs trained before the decoder moved to models/mae_decoder.py store these names and shapes
    state = tiny().state_dict()
    decoder = {k.split(".")[0] for k in state if not k.startswith(("backbone.", "upsample"))}
    assert decoder == {"decoder_embed", "mask_token", "decoder", "decoder_norm", "heads"}
    assert state["mask_token"].shape == (1, 1, 1, 32) and "decoder.0.attn.qkv.weight" in state
    assert "decoder_code" not in state  # rebuilt from the kwargs


def test_rgb_mode_has_one_group_and_one_scale():
    torch.manual_seed(0)
    m = SatMAEPP("grouped_vit", in_chans=3, image_size=64, num_scales=1,
                 backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                 decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert m.backbone.band_groups == ((0, 1, 2),) and len(m.upsample) == 1
    out = m({"image": torch.rand(2, 3, 64, 64)})
    assert "l1_4x" not in out
    torch.testing.assert_close(out["loss"], 0.6 * out["mse"] + 0.4 * out["l1_2x"])


def test_bad_inputs_are_named():
    m = tiny()
    with pytest.raises(ValueError, match=r"built for images \[B, 10, 128, 128\], got \(2, 6, 128, 128\)"):
        m({"image": torch.rand(2, 6, 128, 128)})
    with pytest.raises(ValueError, match="not a multiple of patch_size 8; use image_size = a multiple of 32"):
        tiny(image_size=112)
    with pytest.raises(ValueError, match="must split the 6 input channels"):
        tiny(in_chans=6)


# ---- the debug recipe on the real Landsat-7 tiles


def rows(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def run_debug(out_dir: Path, *overrides: str) -> None:
    cfg = pretrain.load_recipe(ROOT / "recipes/satmae_pp/debug.yaml", [f"train.out_dir={out_dir}", *overrides])
    pretrain.run(cfg)


@pytest.fixture(scope="module")
def landsat7(tmp_path_factory):
    from ssl_platform.data.root import data_root
    from ssl_platform.data.sources import landsat7_stars

    directory = data_root() / "landsat7-stars"
    if landsat7_stars.verify(directory) is not None:
        directory = landsat7_stars.fetch(tmp_path_factory.mktemp("l7"), "needs the Debian archive")
    return directory


@pytest.mark.slow
@pytest.mark.data
def test_debug_recipe_lowers_the_loss_and_exports_a_timm_backbone(tmp_path, landsat7):
    from ssl_platform.checkpoint.io import load_backbone
    from ssl_platform.data.datasets.multispectral import MultispectralTiles
    from ssl_platform.evaluation.features import extract_features

    run_debug(tmp_path, f"data.dataset.root={landsat7}", "train.max_steps=null", "train.epochs=2")
    losses = [r["train/loss"] for r in rows(tmp_path)]
    assert len(losses) == 22 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:3]) / 3
    backbone = load_backbone(tmp_path)  # rebuilt through timm by name from the file's metadata
    assert isinstance(backbone, GroupedChannelViT)
    tiles = MultispectralTiles(landsat7, split="test", tile_size=16, labels="landcover")
    feats, labels = extract_features(backbone, tiles, None, batch_size=64)
    assert labels.tolist() == tiles.targets.tolist()
    assert feats.shape == (len(tiles), 32) and torch.isfinite(feats).all() and feats.std(0).mean() > 1e-3


@pytest.mark.slow
@pytest.mark.data
def test_debug_recipe_resumes_exactly(tmp_path, landsat7):
    from safetensors.torch import load_file

    root = f"data.dataset.root={landsat7}"
    run_debug(tmp_path / "straight", root, "train.max_steps=6")
    run_debug(tmp_path / "split", root, "train.max_steps=4")  # checkpoints at 3 and 4
    run_debug(tmp_path / "split", root, "train.max_steps=6")
    a = load_file(str(tmp_path / "straight" / "backbone.safetensors"))
    b = load_file(str(tmp_path / "split" / "backbone.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in rows(tmp_path / "split")] == list(range(1, 7))


def test_official_head_order_pairs_concatenated_channels_with_bands_by_index():
    """The official forward_loss / forward_multiscale, restated naively: the heads' channels are
    concatenated in group order and channel k is then scored as band k, under the mask of band k's group."""
    m = tiny(official_head_order=True)
    x = torch.rand(2, 10, 128, 128)
    scales = m.pyramid(x)
    keep = m.sample_keep(2, x.device)
    preds = [torch.randn(2, 16, len(g) * 64) for g in GROUPS]
    out = m.losses(scales, preds, keep)
    # channel k of the concatenation, as an image: head h's output channels in its group's listed order
    concat = torch.zeros(2, 10, 32, 32)
    k = 0
    for pred, group in zip(preds, GROUPS):
        for c in range(len(group)):
            for patch in range(16):
                i, j = divmod(patch, 4)
                concat[:, k, i * 8:(i + 1) * 8, j * 8:(j + 1) * 8] = pred[:, patch].view(2, 8, 8, len(group))[..., c]
            k += 1
    errors = []
    for g, group in enumerate(GROUPS):
        for n in range(2):
            for patch in range(16):
                if not keep[n, g, patch]:
                    i, j = divmod(patch, 4)
                    cell = (slice(i * 8, (i + 1) * 8), slice(j * 8, (j + 1) * 8))
                    errors.append(torch.stack([((concat[n, b][cell] - scales[0][n, b][cell]) ** 2).mean()
                                               for b in group]).mean())
    torch.testing.assert_close(out["mse"], torch.stack(errors).mean())
    _, up = m.upsample[0](m.upsample_stem(concat))  # the multi-scale branch reads the same image
    torch.testing.assert_close(out["l1_2x"], (up - scales[1]).abs().mean())
    # ours pairs each head with its own bands: a different loss whenever a group is out of band order
    assert not torch.allclose(tiny().losses(scales, preds, keep)["mse"], out["mse"])
    in_order = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    same = [tiny(official_head_order=flag, backbone_kwargs={"patch_size": 8, "band_groups": in_order, "embed_dim": 64,
                                                               "group_dim": 16, "depth": 2, "num_heads": 4})
            for flag in (False, True)]
    torch.testing.assert_close(same[0].losses(scales, preds, keep)["loss"], same[1].losses(scales, preds, keep)["loss"])
