"""Pixel reconstruction losses (losses/reconstruction.py) against naive loops."""

import pytest
import torch

from ssl_platform.losses.reconstruction import masked_patch_mse, normalize_patches, patchify, unpatchify


def _naive_patchify(x, p):
    b, _, h, w = x.shape
    rows = []
    for n in range(b):
        patches = []
        for i in range(h // p):
            for j in range(w // p):
                block = x[n, :, i * p:(i + 1) * p, j * p:(j + 1) * p]   # [C, p, p]
                patches.append(block.permute(1, 2, 0).reshape(-1))     # flattened as (p, p, C)
        rows.append(torch.stack(patches))
    return torch.stack(rows)


def test_patchify_matches_a_loop_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 8, 12)
    patches = patchify(x, 4)
    assert patches.shape == (2, 6, 48)
    assert torch.equal(patches, _naive_patchify(x, 4))
    assert torch.equal(unpatchify(patches, 4, (2, 3), 3), x)
    with pytest.raises(ValueError, match="does not split into 5x5"):
        patchify(x, 5)


def test_patch_normalisation_uses_the_unbiased_variance_of_each_patch():
    p = torch.randn(2, 5, 16) * 4 + 2
    out = normalize_patches(p)
    for b in range(2):
        for i in range(5):
            v = p[b, i]
            mean = sum(v.tolist()) / 16
            var = sum((t - mean) ** 2 for t in v.tolist()) / 15
            expected = (v - mean) / (var + 1e-6) ** 0.5
            torch.testing.assert_close(out[b, i], expected)


def test_masked_patch_mse_matches_a_loop_over_masked_patches():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 7, 12, generator=g), torch.randn(3, 7, 12, generator=g)
    masked = torch.rand(3, 7, generator=g) < 0.6
    for norm in (True, False):
        t = normalize_patches(target) if norm else target
        total, count = 0.0, 0
        for b in range(3):
            for i in range(7):
                if masked[b, i]:
                    total += sum((pred[b, i, d] - t[b, i, d]).item() ** 2 for d in range(12)) / 12
                    count += 1
        assert masked_patch_mse(pred, target, masked, norm_pix=norm).item() == pytest.approx(total / count, rel=1e-5)


def test_visible_patches_do_not_count():
    target = torch.randn(2, 4, 8)
    masked = torch.tensor([[True, False, True, False], [False, False, True, True]])
    perfect = normalize_patches(target).clone()
    assert masked_patch_mse(perfect, target, masked).item() == pytest.approx(0.0, abs=1e-10)
    perfect[~masked] = 1e3  # garbage where the encoder saw the input
    assert masked_patch_mse(perfect, target, masked).item() == pytest.approx(0.0, abs=1e-10)
    perfect[0, 0] += 1.0
    assert masked_patch_mse(perfect, target, masked).item() > 0


def test_bad_shapes_and_an_empty_mask_are_errors():
    x = torch.zeros(2, 4, 8)
    with pytest.raises(ValueError, match="must be"):
        masked_patch_mse(x, x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no patch is masked"):
        masked_patch_mse(x, x, torch.zeros(2, 4, dtype=torch.bool))
