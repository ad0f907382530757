"""Graph encoders for GraphMAE: GAT (node level) and GIN (graph level), on torch_geometric layers.

Registered with timm as `gat` and `gin`, so `create_backbone("gat", in_chans=F, hidden=512, heads=4)`
builds one and an exported `backbone.safetensors` loads back by its spec. They keep the contract of
the harness's node extractor (`evaluation.features.extract_node_features`):
`backbone(x: [N, F], edge_index: [2, E]) -> [N, num_features]` node codes; `forward_features` is the
same call, and `pool(h, batch)` averages (or sums) them per graph for graph-level tasks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

# torch_geometric is imported where a graph encoder is built or pools, not with this module: timm's
# registry imports every registered model family, and torch_geometric costs about a second to import
# in every process (the CLI, each DataLoader worker) that never touches a graph
POOLS = ("mean", "sum", "max")


class _GraphEncoder(nn.Module):
    """Shared by GAT and GIN: feature dropout -> conv -> norm -> PReLU per layer (the last layer too,
    as in GraphMAE's encoder), `num_features` = hidden width."""

    def __init__(self, convs: list[nn.Module], widths: list[int], norm: str, feat_drop: float, pool: str,
                 num_classes: int):
        super().__init__()
        if norm not in ("none", "layer", "batch"):
            raise ValueError(f"norm must be none, layer or batch, got {norm!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {sorted(POOLS)}, got {pool!r}")
        self.convs = nn.ModuleList(convs)
        make_norm = {"none": lambda w: nn.Identity(), "layer": nn.LayerNorm, "batch": nn.BatchNorm1d}[norm]
        self.norms = nn.ModuleList(make_norm(w) for w in widths)
        self.acts = nn.ModuleList(nn.PReLU() for _ in widths)
        self.drop = nn.Dropout(feat_drop)
        self.pool_name = pool
        self.num_features = widths[-1]
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """`x: [N, F]`, `edge_index: [2, E]` -> node codes `[N, num_features]`."""
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            x = act(norm(conv(self.drop(x), edge_index)))
        return x

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, edge_index)

    def forward_head(self, h: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Node codes `[N, D]` -> themselves (pre_logits) or per-node logits."""
        return h if pre_logits else self.head(h)

    def pool(self, h: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Node codes `[N, D]` and the graph id of each node `[N]` -> graph embeddings `[G, D]`."""
        from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

        return {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}[self.pool_name](h, batch)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head


class GAT(_GraphEncoder):
    """GraphMAE's node-level encoder: GAT layers whose `hidden` width is split across `heads`
    (concatenated back), optionally with residual connections.

    Args:
        in_chans: node feature width F.
        hidden: output width of every layer (512 for Cora; must be divisible by `heads`).
        heads: attention heads (the paper: 4).
        num_layers: GAT layers (the paper: 2).
        feat_drop, attn_drop: dropout on layer inputs and on attention weights (0.2, 0.1).
        norm: "none" | "layer" | "batch" after each layer.
        pool: graph pooling for `pool` ("mean", "sum", "max").
        residual: add a bias-free linear map of each layer's input to its output (PyG's `GATConv`
            `residual`). Off by default, as in GraphMAE's code (`--residual` is off; its configs turn
            it on only for ppi and reddit).

    Checkpoints written before `residual` existed come from GATs with residual connections on every
    layer (then hard-coded), and their stored kwargs do not say so. Their state dicts carry
    `convs.<i>.res.weight`; `adopt_checkpoint` gives a GAT built without `residual` those maps, so
    the weights run as they were trained. Every torch load calls it (`_load_from_state_dict`), and
    `checkpoint.io.load_state_strict` compares keys after the load, so no loader needs to know.
    """

    def __init__(self, in_chans: int = 1, hidden: int = 512, heads: int = 4, num_layers: int = 2,
                 feat_drop: float = 0.2, attn_drop: float = 0.1, norm: str = "none", pool: str = "mean",
                 num_classes: int = 0, residual: bool = False):
        from torch_geometric.nn import GATConv

        if hidden % heads:
            raise ValueError(f"hidden width {hidden} is not divisible by heads {heads}")
        convs = [GATConv(in_chans if i == 0 else hidden, hidden // heads, heads=heads, dropout=attn_drop,
                         residual=residual) for i in range(num_layers)]
        super().__init__(convs, [hidden] * num_layers, norm, feat_drop, pool, num_classes)

    def adopt_checkpoint(self, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> None:
        """Give each layer without a residual map the one `state_dict` holds for it (`{prefix}convs.<i>.res.weight`,
        `[hidden, in]`), as `GATConv(residual=True)` builds it; layers the checkpoint has none for stay as they are."""
        from torch_geometric.nn.dense import Linear

        for i, conv in enumerate(self.convs):
            weight = state_dict.get(f"{prefix}convs.{i}.res.weight")
            # only a map of the layer's own shape ([hidden, in], as GATConv(residual=True) builds it):
            # any other is left unexpected, and the load names it instead of a later forward failing
            if weight is not None and conv.res is None and weight.shape == conv.lin.weight.shape:
                del conv.res  # registered as a None parameter: a module cannot take its name otherwise
                conv.res = Linear(weight.shape[1], weight.shape[0], bias=False).to(conv.lin.weight.device)
                conv.residual = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # runs before the layers load their own keys, so an adopted residual map loads with them
        self.adopt_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class GIN(_GraphEncoder):
    """GraphMAE's graph-level encoder: GIN layers (a 2-layer MLP each) with BatchNorm.

    Args:
        in_chans: node feature width F.
        hidden: width of every layer (32 for MUTAG, 512 for larger sets).
        num_layers: GIN layers.
        feat_drop: dropout on layer inputs.
        norm: "batch" (the paper), "layer" or "none".
        pool: graph pooling ("mean", "sum", "max").
        eps: GIN's self-weight, each node's own features enter as (1 + eps) x_i + sum of neighbours.
        train_eps: learn eps (from its initial value). GraphMAE's code keeps eps fixed at 0
            (`learn_eps=False`) on graphs that carry a self-loop per node, i.e. 2 x_i + the neighbours;
            our graphs carry none, so `eps=1, train_eps=False` computes the official sum. True is this
            module's original behaviour, kept as the default so recipes written before the option
            train as they did. Either way `eps` is in the state dict (a parameter or a buffer), so
            checkpoints load into both.
    """

    def __init__(self, in_chans: int = 1, hidden: int = 32, num_layers: int = 3, feat_drop: float = 0.0,
                 norm: str = "batch", pool: str = "mean", num_classes: int = 0, eps: float = 0.0,
                 train_eps: bool = True):
        from torch_geometric.nn import GINConv

        convs = [GINConv(nn.Sequential(nn.Linear(in_chans if i == 0 else hidden, hidden), nn.ReLU(),
                                       nn.Linear(hidden, hidden)), eps=eps, train_eps=train_eps)
                 for i in range(num_layers)]
        super().__init__(convs, [hidden] * num_layers, norm, feat_drop, pool, num_classes)


_CFG = {"num_classes": 0, "input_size": None, "pool_size": None, "mean": None, "std": None,
        "classifier": "head", "first_conv": None, "license": "apache-2.0"}
default_cfgs = generate_default_cfgs({"gat.untrained": dict(_CFG), "gin.untrained": dict(_CFG)})


@register_model
def gat(pretrained: bool = False, **kwargs) -> GAT:
    """GraphMAE's GAT encoder (hidden 512, 4 heads, 2 layers by default); `in_chans` = node features."""
    return build_model_with_cfg(GAT, "gat", pretrained, feature_cfg={"flatten_sequential": False}, **kwargs)


@register_model
def gin(pretrained: bool = False, **kwargs) -> GIN:
    """GraphMAE's GIN encoder for graph-level tasks; `in_chans` = node features."""
    return build_model_with_cfg(GIN, "gin", pretrained, feature_cfg={"flatten_sequential": False}, **kwargs)
