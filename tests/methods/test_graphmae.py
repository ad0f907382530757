"""GraphMAE: only masked nodes enter the loss, the codes are re-masked before the decoder, the mask
token learns, the loss is the scaled cosine error of the masked rows, embeddings per node and per graph;
drop-edge thins the encoder's graph only, the decoder's dropouts, weight decay on every parameter, and
GraphMAE2's options."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from ssl_platform.losses.cosine import scaled_cosine_error
from ssl_platform.masking.graph import corrupt_features, drop_edges, mask_nodes, remask
from ssl_platform.methods import METHODS
from ssl_platform.methods.graphmae import GraphMAE


def graph(n=30, f=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (4 * n,), generator=g)
    dst = torch.randint(0, n, (4 * n,), generator=g)
    return Data(x=torch.randn(n, f, generator=g), edge_index=torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1))


def tiny(**kw):
    torch.manual_seed(0)
    return GraphMAE(**{"backbone": "gat", "in_chans": 6, "backbone_kwargs": {"hidden": 16, "heads": 4},
                       "mask_rate": 0.5, "replace_rate": 0.2, "gamma": 2.0, **kw})


def test_loss_is_the_sce_of_the_masked_rows_only():
    assert METHODS["graphmae"] is GraphMAE
    m, g = tiny().eval(), graph()
    torch.manual_seed(5)
    masked, replaced, sources = mask_nodes(30, 0.5, 0.2)
    z = m.reconstruct(g.x, g.edge_index, masked, replaced, sources)
    torch.manual_seed(5)  # the same masks inside forward
    loss = m({"graph": g})["loss"]
    assert torch.allclose(loss, scaled_cosine_error(z[masked], g.x[masked], 2.0))
    # the gradient of the loss with respect to the reconstruction is zero on every unmasked row
    z = z.detach().requires_grad_(True)
    scaled_cosine_error(z[masked], g.x[masked], 2.0).backward()
    unmasked = torch.tensor([v for v in range(30) if v not in masked.tolist()])
    assert (z.grad[unmasked] == 0).all() and (z.grad[masked].abs().sum(1) > 0).all()


def test_codes_are_re_masked_before_the_decoder_and_the_token_learns():
    m, g = tiny(), graph()
    seen = {}

    def keep_input(module, args, out):  # returns None: the output is left alone
        seen["h"] = args[0].detach()

    m.decoder.register_forward_hook(keep_input)
    torch.manual_seed(2)
    masked, _, _ = mask_nodes(30, 0.5, 0.2)
    torch.manual_seed(2)
    m({"graph": g})["loss"].backward()
    assert (seen["h"][masked] == 0).all()
    assert (seen["h"].abs().sum(1) > 0).sum() == 30 - len(masked)
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0


def test_embed_per_node_and_per_graph():
    m = tiny().eval()
    g = graph()
    assert m.embed({"graph": g}).shape == (30, 16)
    batch = Batch.from_data_list([graph(10, seed=1), graph(14, seed=2)])
    assert m.embed({"graph": batch}).shape == (2, 16)


def test_gin_decoder_for_graph_level_and_bad_settings():
    m = tiny(backbone="gin", backbone_kwargs={"hidden": 8}, decoder="gin")
    assert m({"graph": Batch.from_data_list([graph(10, seed=3), graph(12, seed=4)])})["loss"] > 0
    with pytest.raises(ValueError, match="decoder must be"):
        tiny(decoder="mlp")
    with pytest.raises(ValueError, match="mask_rate"):
        tiny(mask_rate=1.5)
    with pytest.raises(ValueError, match="gamma"):
        tiny(gamma=0.5)


# ---- GraphMAE2's options: random re-mask views with a learnable [DMASK], latent prediction vs an EMA target

def test_graphmae2_views_re_mask_random_nodes_with_the_token_and_sum_the_errors():
    m, g = tiny(remask_views=3, remask_rate=0.4), graph()
    with torch.no_grad():
        m.dmask_token.fill_(7.0)  # recognisable in the decoder's input
    inputs = []
    m.decoder.register_forward_hook(lambda module, args, out: inputs.append((args[0].detach(), out.detach())))
    torch.manual_seed(4)
    masked, _, _ = mask_nodes(30, 0.5, 0.2)
    torch.manual_seed(4)
    out = m({"graph": g})
    assert len(inputs) == 3
    rows = [set(torch.nonzero((h == 7.0).all(1)).flatten().tolist()) for h, _ in inputs]
    assert all(len(r) == 12 for r in rows) and len({frozenset(r) for r in rows}) == 3  # int(0.4 * 30), fresh per view
    # the error counts the input-masked nodes of every view, summed
    expected = sum(scaled_cosine_error(z[masked], g.x[masked], 2.0) for _, z in inputs)
    assert torch.allclose(out["loss"], expected) and torch.allclose(out["reconstruction"], expected)
    out["loss"].backward()
    assert m.dmask_token.grad.abs().sum() > 0


def test_graphmae2_latent_loss_reads_unmasked_nodes_and_the_target_follows_by_ema():
    m, g = tiny(latent_weight=0.5, latent_dim=8, momentum=0.9).eval(), graph()  # eval: no dropout draws
    torch.manual_seed(6)
    masked, replaced, sources = mask_nodes(30, 0.5, 0.2)
    torch.manual_seed(6)
    out = m({"graph": g})
    keep = torch.tensor([v for v in range(30) if v not in masked.tolist()])
    with torch.no_grad():
        h = m.backbone.forward_features(corrupt_features(g.x, masked, replaced, sources, m.mask_token), g.edge_index)
        target = m.target_projector(m.target_encoder.forward_features(g.x, g.edge_index)[keep])
        latent = scaled_cosine_error(m.predictor(m.projector(h[keep])), target, 1.0)
    assert torch.allclose(out["latent"], latent, atol=1e-6)
    assert torch.allclose(out["loss"], out["reconstruction"] + 0.5 * latent, atol=1e-6)
    out["loss"].backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    assert all(p.grad is not None for p in m.predictor.parameters())
    before = [p.detach().clone() for p in m.target_encoder.parameters()]
    torch.optim.SGD(m.parameters(), lr=0.5).step()
    m.on_step_end(0.1)
    for old, new, online in zip(before, m.target_encoder.parameters(), m.backbone.parameters(), strict=True):
        assert torch.allclose(new, 0.9 * old + 0.1 * online.detach())


def test_graphmae2_projector_can_end_at_the_encoder_width_as_the_official_code():
    m = tiny(latent_weight=0.15, latent_dim=8, latent_out=16)  # encoder width 16
    shapes = [tuple(layer.weight.shape) for layer in (m.projector[0], m.projector[2], m.predictor[1])]
    assert shapes == [(8, 16), (16, 8), (16, 16)]  # Linear(H, 8)-PReLU-Linear(8, H), PReLU-Linear(H, H)
    assert isinstance(m.predictor[0], torch.nn.PReLU) and m({"graph": graph()})["latent"] > 0


def test_graphmae2_bad_settings():
    with pytest.raises(ValueError, match=r"remask_views must be >= 0 and remask_rate in \(0, 1\)"):
        tiny(remask_views=2, remask_rate=1.0)
    with pytest.raises(ValueError, match=r"latent_weight must be >= 0"):
        tiny(latent_weight=-1.0)


def test_embed_is_the_one_contract_a_batch_of_one_graph_is_one_row():
    """`Method.embed`'s default: a `Batch` gives a row per graph, however many it holds; a bare `Data` a row per node."""
    m = tiny().eval()
    g = graph()
    with torch.no_grad():
        pooled = m.backbone.pool(m.backbone.forward_features(g.x, g.edge_index), torch.zeros(30, dtype=torch.long))
        torch.testing.assert_close(m.embed({"graph": Batch.from_data_list([g])}), pooled)


# ---- drop-edge, decoder dropout, weight decay on every parameter (GraphMAE's code)


def record(seen, key, pick):
    """A forward hook that keeps `pick(args, out)` of the first call under `key` and returns None (output untouched)."""
    def hook(module, args, out):
        seen.setdefault(key, pick(args, out))
    return hook


def test_drop_edge_thins_the_encoders_graph_and_the_decoder_reads_the_full_one():
    m, g = tiny(drop_edge_rate=0.5).eval(), graph()  # eval: no dropout draws
    seen = {}
    m.backbone.convs[0].register_forward_hook(record(seen, "encoder", lambda args, out: args[1]))
    m.decoder.register_forward_hook(record(seen, "decoder", lambda args, out: args[1]))
    torch.manual_seed(3)
    masked, replaced, sources = mask_nodes(30, 0.5, 0.2)
    thinned = drop_edges(g.edge_index, 0.5)  # drawn right after the mask, from the same RNG
    torch.manual_seed(3)
    loss = m({"graph": g})["loss"]
    assert torch.equal(seen["encoder"], thinned) and torch.equal(seen["decoder"], g.edge_index)
    assert 0 < thinned.shape[1] < g.edge_index.shape[1]
    z = m.reconstruct(g.x, g.edge_index, masked, replaced, sources, encoder_edges=thinned)
    assert torch.allclose(loss, scaled_cosine_error(z[masked], g.x[masked], 2.0))
    with pytest.raises(ValueError, match="drop_edge_rate"):
        tiny(drop_edge_rate=1.0)


def test_decoder_dropout_acts_on_the_re_masked_codes_and_the_attention():
    m, g = tiny(decoder_feat_drop=0.5, decoder_attn_drop=0.1).train(), graph()
    assert m.decoder.dropout == 0.1  # GATConv's dropout on the attention coefficients
    seen = {}
    m.encoder_to_decoder.register_forward_hook(record(seen, "code", lambda args, out: out.detach()))
    m.decoder.register_forward_hook(record(seen, "input", lambda args, out: args[0].detach()))
    torch.manual_seed(1)
    masked, _, _ = mask_nodes(30, 0.5, 0.2)
    torch.manual_seed(1)
    m({"graph": g})
    code, dropped = remask(seen["code"], masked), seen["input"]
    zeroed = (dropped == 0) & (code != 0)
    assert torch.allclose(dropped[~zeroed], 2.0 * code[~zeroed])  # survivors scaled by 1 / (1 - 0.5)
    assert 0.4 < zeroed.sum() / (code != 0).sum() < 0.6
    assert (dropped[masked] == 0).all()


def test_decay_all_puts_every_parameter_in_the_decayed_group():
    m = tiny()
    names = {id(p): n for n, p in m.named_parameters()}
    split = {g["group"]: {names[id(p)] for p in g["params"]} for g in m.param_groups()}
    assert "mask_token" in split["no_decay"] and "decoder.bias" in split["no_decay"]
    m = tiny(decay_all=True)
    [group] = m.param_groups()
    assert group["wd_scale"] == 1.0 and {id(p) for p in group["params"]} == {id(p) for p in m.parameters()}
