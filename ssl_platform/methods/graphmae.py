"""GraphMAE: masked node-feature reconstruction for graph encoders.

Hou, Liu, Cen, Dong, Yang, Wang, Tang. "GraphMAE: Self-Supervised Masked Graph Autoencoders",
KDD 2022 (THUDM/GraphMAE).

Per step a fresh random set of nodes loses its input features: most get a learnable mask token,
a few (`replace_rate`) another node's features (`masking/graph.py`). The encoder (GAT for nodes, GIN
for graphs: `models/graph.py`) encodes the corrupted graph; its codes go through a linear map, the
masked nodes' codes are zeroed again ("re-masking"), and a single-layer GNN decoder rebuilds the
features. The loss is the scaled cosine error over the masked nodes only (`losses/cosine.py`).
Evaluation reads the encoder on the clean graph (`Method.embed`: node codes of one graph, pooled
codes of a batch of graphs).

GraphMAE2 (Hou et al., WWW 2023, THUDM/GraphMAE2) adds two options, each off by default:
- `remask_views=K`: instead of zeroing the masked nodes' codes once, K views each replace the codes
  of a fresh random `remask_rate` of all nodes by a learnable [DMASK]; the reconstruction error of
  the masked nodes is summed over the views.
- `latent_weight=λ`: an EMA copy of the encoder (and of a projector) embeds the clean graph; a
  projector + predictor on the online codes of the unmasked nodes must match it (scaled cosine error,
  γ = 1), weighted by λ.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv, GINConv

from ssl_platform.engine.ema import ema_update, frozen_copy
from ssl_platform.losses.cosine import scaled_cosine_error
from ssl_platform.masking.graph import corrupt_features, mask_nodes, remask
from ssl_platform.methods.base import Method, build_backbone


class GraphMAE(Method):
    """GraphMAE over a `gat` / `gin` encoder.

    Batch keys: `graph`: a torch_geometric `Batch` (or `Data`) with `x: [N, F]` float node features
    and `edge_index: [2, E]`; node-level data is one graph per step, graph-level data a batch of
    graphs (`data.collate` builds it).

    Args:
        backbone: `gat` or `gin` (built here with `backbone_kwargs`; `in_chans` = F), or a module
            with `forward_features(x, edge_index) -> [N, D]` and `num_features`.
        in_chans: node feature width F.
        backbone_kwargs: e.g. `{hidden: 512, heads: 4, num_layers: 2}` for the paper's Cora GAT.
        mask_rate: fraction of nodes masked per step (Cora 0.5, PubMed 0.75).
        replace_rate: fraction of the masked nodes that get random nodes' features (Cora 0.05).
        gamma: the scaled cosine error's exponent (Cora 3).
        decoder: "gat" (one GAT layer, 1 head, the paper's node-level decoder) or "gin" (graph level).
        remask_views: 0 (GraphMAE's fixed re-masking) or GraphMAE2's number of random re-mask views K (3).
        remask_rate: share of all nodes re-masked per view (GraphMAE2: 0.5).
        latent_weight: GraphMAE2's λ for latent prediction (0: off; Cora 0.15, PubMed 1).
        momentum: EMA momentum of the latent target encoder (GraphMAE2: 0.996).
        latent_dim: width of the projector / predictor outputs (GraphMAE2: 256).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "gat",
        in_chans: int = 1,
        backbone_kwargs: dict | None = None,
        mask_rate: float = 0.5,
        replace_rate: float = 0.05,
        gamma: float = 3.0,
        decoder: str = "gat",
        remask_views: int = 0,
        remask_rate: float = 0.5,
        latent_weight: float = 0.0,
        momentum: float = 0.996,
        latent_dim: int = 256,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, False, in_chans, backbone_kwargs)
        if not hasattr(self.backbone, "num_features"):
            raise TypeError(f"GraphMAE needs a graph encoder with num_features (gat, gin); got {type(self.backbone).__name__}")
        mask_nodes(100, mask_rate, replace_rate)  # bad rates fail here, not at step 1
        scaled_cosine_error(torch.ones(1, 1), torch.ones(1, 1), gamma)
        self.mask_rate, self.replace_rate, self.gamma = mask_rate, replace_rate, gamma
        width = self.backbone.num_features
        self.mask_token = nn.Parameter(torch.zeros(1, in_chans))  # GraphMAE: zero-initialised
        self.encoder_to_decoder = nn.Linear(width, width, bias=False)
        if decoder == "gat":
            self.decoder = GATConv(width, in_chans, heads=1)
        elif decoder == "gin":
            self.decoder = GINConv(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, in_chans)))
        else:
            raise ValueError(f"decoder must be 'gat' or 'gin', got {decoder!r}")
        if remask_views < 0 or not 0.0 < remask_rate < 1.0:
            raise ValueError(f"remask_views must be >= 0 and remask_rate in (0, 1), got {remask_views}, {remask_rate}")
        if latent_weight < 0 or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"latent_weight must be >= 0 and momentum in [0, 1], got {latent_weight}, {momentum}")
        self.remask_views, self.remask_rate = remask_views, remask_rate
        self.latent_weight, self.momentum = latent_weight, momentum
        if remask_views:
            self.dmask_token = nn.Parameter(torch.zeros(1, width))
        if latent_weight:
            self.projector = nn.Sequential(nn.Linear(width, latent_dim), nn.PReLU(), nn.Linear(latent_dim, latent_dim))
            self.predictor = nn.Sequential(nn.PReLU(), nn.Linear(latent_dim, latent_dim))
            self.target_encoder = frozen_copy(self.backbone)
            self.target_projector = frozen_copy(self.projector)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "dmask_token"}

    def reconstruct(self, x: torch.Tensor, edge_index: torch.Tensor, masked: torch.Tensor, replaced: torch.Tensor,
                    sources: torch.Tensor) -> torch.Tensor:
        """The corrupted graph through encoder, re-masking and decoder -> reconstructed features `[N, F]`."""
        h = self.backbone.forward_features(corrupt_features(x, masked, replaced, sources, self.mask_token), edge_index)
        return self.decoder(remask(self.encoder_to_decoder(h), masked), edge_index)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        graph = batch["graph"]
        x, edge_index = graph.x.float(), graph.edge_index
        masked, replaced, sources = (t.to(x.device) for t in mask_nodes(x.shape[0], self.mask_rate, self.replace_rate))
        if not self.remask_views and not self.latent_weight:  # GraphMAE
            z = self.reconstruct(x, edge_index, masked, replaced, sources)
            return {"loss": scaled_cosine_error(z[masked], x[masked], self.gamma)}
        h = self.backbone.forward_features(corrupt_features(x, masked, replaced, sources, self.mask_token), edge_index)
        code = self.encoder_to_decoder(h)
        if self.remask_views:  # GraphMAE2: K views, each with its own random re-masked nodes
            n = x.shape[0]
            views = [torch.randperm(n)[: max(1, int(self.remask_rate * n))].to(x.device) for _ in range(self.remask_views)]
            recon = sum(scaled_cosine_error(self.decoder(remask(code, v, self.dmask_token), edge_index)[masked],
                                            x[masked], self.gamma) for v in views)
        else:
            recon = scaled_cosine_error(self.decoder(remask(code, masked), edge_index)[masked], x[masked], self.gamma)
        out = {"loss": recon, "reconstruction": recon.detach()}
        if self.latent_weight:
            keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            keep[masked] = False
            with torch.no_grad():
                target = self.target_projector(self.target_encoder.forward_features(x, edge_index)[keep])
            latent = scaled_cosine_error(self.predictor(self.projector(h[keep])), target, 1.0)
            out["loss"] = recon + self.latent_weight * latent
            out["latent"] = latent.detach()
        return out

    def on_step_end(self, progress: float) -> None:
        """GraphMAE2's EMA update of the latent target (encoder and projector), after the optimizer step."""
        if self.latent_weight:
            ema_update(self.target_encoder, self.backbone, self.momentum)
            ema_update(self.target_projector, self.projector, self.momentum)
