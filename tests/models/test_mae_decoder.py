"""MAE's shared pixel decoder: against a naive per-sample loop in both layouts (band groups with a
[G, L, D] code; a class-token prefix with a zero slot), what the blocks receive, bf16 autocast with an
fp32 mask token, and the errors on a bad `keep` or code."""

import pytest
import torch
from torch import nn

from ssl_platform.models.mae_decoder import fill_masked, mae_decode, mae_decoder_blocks

D_ENC, D, L = 12, 16, 9


def layers(depth=2):
    torch.manual_seed(0)
    return {"embed": nn.Linear(D_ENC, D), "mask_token": nn.Parameter(torch.randn(1, 1, D)),
            "blocks": nn.ModuleList(mae_decoder_blocks(D, depth, 4)), "norm": nn.LayerNorm(D)}


def random_keep(*rows: int, k: int) -> torch.Tensor:
    """`[*rows, k]` distinct positions in [0, L) per row, in random order (ascending is not required)."""
    return torch.rand(*rows, L).argsort(-1)[..., :k]


def naive_decode(tokens, keep, code, embed, mask_token, blocks, norm, num_prefix=0):
    """`tokens: [B, R, P + K, D_enc]` (R rows: band groups), `keep: [B, R, K]`, `code: [R, P + L, D]`
    -> `[B, R, P + L, D]`, one sample at a time, each row filled position by position."""
    out = []
    for b in range(tokens.shape[0]):
        rows = []
        for r in range(tokens.shape[1]):
            seq = [mask_token.reshape(D)] * L
            for j, p in enumerate(keep[b, r].tolist()):
                seq[p] = embed(tokens[b, r, num_prefix + j])
            seq = [embed(t) for t in tokens[b, r, :num_prefix]] + seq
            rows.append(torch.stack(seq) + code[r])
        x = torch.cat(rows)[None]  # [1, R (P + L), D]: the rows of a sample attend to each other
        for block in blocks:
            x = block(x)
        out.append(norm(x[0]).view(tokens.shape[1], num_prefix + L, D))
    return torch.stack(out)


def test_band_groups_match_a_naive_loop():
    m = layers()
    g, k = 3, 4
    tokens, keep, code = torch.randn(2, g, k, D_ENC), random_keep(2, g, k=k), torch.randn(g, L, D)
    out = mae_decode(tokens, keep, L, code=code, **m)
    assert out.shape == (2, g, L, D)
    torch.testing.assert_close(out, naive_decode(tokens, keep, code, **m))


def test_a_class_token_prefix_matches_a_naive_loop_and_keeps_its_slot():
    m = layers()
    k = 3
    tokens, keep = torch.randn(2, 1 + k, D_ENC), random_keep(2, k=k)
    code = torch.cat([torch.zeros(1, D), torch.randn(L, D)])[None]  # [1, 1 + L, D], M3AE's zero class slot
    out = mae_decode(tokens, keep, L, code=code, num_prefix=1, **m)
    assert out.shape == (2, 1 + L, D)
    naive = naive_decode(tokens[:, None], keep[:, None], code, num_prefix=1, **m)[:, 0]  # one row
    torch.testing.assert_close(out, naive)


@pytest.mark.parametrize("token_shape", [(1, 1, D), (1, 1, 1, D), (D,)])
def test_the_blocks_see_visible_tokens_at_their_positions_and_the_mask_token_elsewhere(token_shape):
    m = layers()
    m["mask_token"] = nn.Parameter(torch.randn(token_shape))
    seen = []
    m["blocks"][0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    g, k = 2, 4
    tokens, keep, code = torch.randn(3, g, 1 + k, D_ENC), random_keep(3, g, k=k), torch.randn(g, 1 + L, D)
    mae_decode(tokens, keep, L, code=code, num_prefix=1, **m)
    x = (seen[0].view(3, g, 1 + L, D) - code).detach()  # the blocks' input less the code
    emb = m["embed"](tokens).detach()
    for b in range(3):
        for r in range(g):
            torch.testing.assert_close(x[b, r, 0], emb[b, r, 0])  # the prefix stays in front
            for i in range(L):
                hits = (keep[b, r] == i).nonzero().flatten().tolist()
                want = emb[b, r, 1 + hits[0]] if hits else m["mask_token"].detach().reshape(D)
                torch.testing.assert_close(x[b, r, 1 + i], want)


def test_fill_masked_scatters_every_row_independently():
    visible, keep = torch.randn(2, 3, 4, D), random_keep(2, 3, k=4)
    out = fill_masked(visible, keep, torch.zeros(1, 1, D), L)
    for b in range(2):
        for r in range(3):
            torch.testing.assert_close(out[b, r, keep[b, r]], visible[b, r])
            hidden = torch.ones(L, dtype=torch.bool).scatter(0, keep[b, r], False)
            assert (out[b, r, hidden] == 0).all()


def test_bf16_autocast_with_an_fp32_mask_token_and_code():
    # the GPU recipes run under bf16 autocast: the projected tokens turn bf16, the parameters stay fp32
    m = layers()
    tokens, keep, code = torch.randn(2, 1 + 3, D_ENC), random_keep(2, k=3), torch.randn(1, 1 + L, D)
    full = mae_decode(tokens, keep, L, code=code, num_prefix=1, **m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = mae_decode(tokens, keep, L, code=code, num_prefix=1, **m)
    assert (full - half.float()).abs().max() < 0.1
    half.float().sum().backward()
    assert m["mask_token"].grad is not None and m["mask_token"].grad.dtype == torch.float32


def test_every_parameter_gets_a_gradient():
    m = layers()
    out = mae_decode(torch.randn(2, 3, 4, D_ENC), random_keep(2, 3, k=4), L, code=torch.randn(3, L, D), **m)
    out.sum().backward()
    params = [m["mask_token"], *m["embed"].parameters(), *m["blocks"].parameters(), *m["norm"].parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_decoder_blocks_are_maes():
    blocks = mae_decoder_blocks(D, 3, 4)
    assert len(blocks) == 3 and all(b.attn.num_heads == 4 and b.attn.qkv.bias is not None for b in blocks)
    assert blocks[0].mlp.fc1.out_features == 4 * D


def test_a_bad_keep_or_code_is_named():
    m = layers()
    tokens, code = torch.randn(2, 1 + 3, D_ENC), torch.randn(1, 1 + L, D)
    wanted = r"keep must be int64 \[\.\.\., K\] = \(2, 3\).*3 visible tokens \(after 1 prefix tokens\)"
    with pytest.raises(ValueError, match=wanted + r".*got torch.int64 \(2, 4\)"):  # the prefix taken for a patch
        mae_decode(tokens, random_keep(2, k=4), L, code=code, num_prefix=1, **m)
    keep_mask = torch.zeros(2, L, dtype=torch.bool)
    keep_mask[:, :3] = True
    with pytest.raises(ValueError, match=r"got torch.bool \(2, 9\)"):  # a visibility mask, not positions
        mae_decode(tokens, keep_mask, L, code=code, num_prefix=1, **m)
    with pytest.raises(ValueError, match="code has 9 positions, the decoder 1 prefix \\+ 9 patches"):
        mae_decode(tokens, random_keep(2, k=3), L, code=code[:, 1:], num_prefix=1, **m)
