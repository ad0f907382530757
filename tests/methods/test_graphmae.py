"""GraphMAE: only masked nodes enter the loss, the codes are re-masked before the decoder, the mask
token learns, the loss is the scaled cosine error of the masked rows, embeddings per node and per graph."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from ssl_platform.losses.cosine import scaled_cosine_error
from ssl_platform.masking.graph import mask_nodes
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
