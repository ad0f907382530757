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

With `drop_edge_rate` > 0 the encoder reads a graph thinned afresh each step (`masking.graph.drop_edges`,
after the node mask is drawn, as the official code does); the decoder reads the full graph.

GraphMAE2 (Hou et al., WWW 2023, THUDM/GraphMAE2) adds two options, each off by default:
- `remask_views=K`: instead of zeroing the masked nodes' codes once, K views each replace the codes
  of a fresh random `remask_rate` of all nodes by a learnable [DMASK]; the reconstruction error of
  the masked nodes is summed over the views.
- `latent_weight=λ`: an EMA copy of the encoder (and of a projector) embeds the clean graph; a
  projector + predictor on the online codes of the unmasked nodes must match it (scaled cosine error,
  γ = 1), weighted by λ.

Deviations from the official code (THUDM/GraphMAE@b14f080, THUDM/GraphMAE2@bc473e8; docs/methods.md,
GraphMAE, has the per-recipe tables):
- Weight decay: the official Adam decays every parameter; ours exempts biases, norms, PReLU slopes
  and the mask tokens unless `decay_all=True` (the node-level recipes set it).
- Decoder dropout: the official GAT / GIN decoder applies the encoder's `in_drop` / `attn_drop`; here
  they are `decoder_feat_drop` / `decoder_attn_drop`, 0 unless a recipe sets them.
- GIN (graph level): each layer is PyG's `GINConv` over Linear-ReLU-Linear, then norm and PReLU; the
  official MLP is Linear-BN-PReLU-Linear inside the same outer BN-PReLU. The official graphs carry a
  self-loop per node and eps is fixed at 0, so a node's own features count twice: ours gives that
  with `GIN(eps=1, train_eps=False)` on loop-free graphs (by default eps is learnt from 0). The GIN
  decoder is one `GINConv` (eps 0) over Linear-ReLU-Linear; the official one is a 2-layer MLP with
  BN-PReLU inside, on the self-looped graph.
- Self-loops under drop-edge: GraphMAE's code can leave a node two self-loops (its own survived,
  one re-added); PyG's `GATConv` keeps exactly one (GraphMAE2's result). See `drop_edges`.
- GraphMAE2 EMA timing: the official model updates the target inside the forward pass, before the
  optimizer step, so its target lags the online encoder by one step (at momentum 0, the Cora
  config, the target is the online encoder of the previous step); ours updates in `on_step_end`,
  after the step (at momentum 0: this step's online encoder).
- GraphMAE2 `replace_rate`: the official `encoding_mask_noise` never replaces (the configs' value is
  unused); ours applies it, so a faithful recipe sets 0.
- GraphMAE2 latent target under drop-edge: the official mini-batch code gives the EMA encoder its own
  independently thinned graph; ours reads the full graph (the full-batch code passes no drop-edge).
- GraphMAE2 initialisation: outside cora / citeseer / pubmed the official mask tokens are Xavier-
  initialised (and `encoder_to_decoder` with gain 1.414); ours are always zero-initialised.
- Schedules are per optimizer step; GraphMAE's per-epoch cosine is the same on one graph per step
  (node level), and on batches of graphs ours decays within an epoch too. The engine's loader drops
  the last partial batch of graphs (the official DGL loader keeps it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv, GINConv

from ssl_platform.engine.ema import ema_update, frozen_copy
from ssl_platform.losses.cosine import scaled_cosine_error
from ssl_platform.masking.graph import corrupt_features, drop_edges, mask_nodes, remask
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
        momentum: EMA momentum of the latent target encoder (GraphMAE2: 0 for Cora, 0.996 at ogbn scale).
        latent_dim: the projector's hidden width (GraphMAE2: 256).
        latent_out: the projector's output and the predictor's width; None: `latent_dim` (this
            module's original shape). GraphMAE2's code uses the encoder width (Linear(H, 256)-PReLU-
            Linear(256, H), predictor PReLU-Linear(H, H)): set it to `backbone_kwargs.hidden`.
        drop_edge_rate: share of edges dropped from the encoder's graph each step (GraphMAE: 0, ogbn-arxiv 0.5).
        decoder_feat_drop, decoder_attn_drop: dropout on the decoder's input and (GAT) attention
            weights (GraphMAE's code: the encoder's in_drop / attn_drop, 0.2 / 0.1 on Cora).
        decay_all: weight decay on every parameter, as GraphMAE's Adam over `model.parameters()`;
            False: biases, norms, PReLU slopes and the mask tokens get none (the engine's default).
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
        latent_out: int | None = None,
        drop_edge_rate: float = 0.0,
        decoder_feat_drop: float = 0.0,
        decoder_attn_drop: float = 0.0,
        decay_all: bool = False,
    ):
        super().__init__()
        self.backbone = build_backbone(backbone, False, in_chans, backbone_kwargs)
        if not hasattr(self.backbone, "num_features"):
            raise TypeError(f"GraphMAE needs a graph encoder with num_features (gat, gin); got {type(self.backbone).__name__}")
        mask_nodes(100, mask_rate, replace_rate)  # bad rates fail here, not at step 1
        scaled_cosine_error(torch.ones(1, 1), torch.ones(1, 1), gamma)
        if not 0.0 <= drop_edge_rate < 1.0:
            raise ValueError(f"drop_edge_rate must be in [0, 1), got {drop_edge_rate}")
        self.mask_rate, self.replace_rate, self.gamma = mask_rate, replace_rate, gamma
        self.drop_edge_rate, self.decay_all = drop_edge_rate, decay_all
        width = self.backbone.num_features
        self.mask_token = nn.Parameter(torch.zeros(1, in_chans))  # GraphMAE: zero-initialised
        self.encoder_to_decoder = nn.Linear(width, width, bias=False)
        self.decoder_drop = nn.Dropout(decoder_feat_drop) if decoder_feat_drop else nn.Identity()
        if decoder == "gat":
            self.decoder = GATConv(width, in_chans, heads=1, dropout=decoder_attn_drop)
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
            out = latent_out or latent_dim
            self.projector = nn.Sequential(nn.Linear(width, latent_dim), nn.PReLU(), nn.Linear(latent_dim, out))
            self.predictor = nn.Sequential(nn.PReLU(), nn.Linear(out, out))
            self.target_encoder = frozen_copy(self.backbone)
            self.target_projector = frozen_copy(self.projector)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "dmask_token"}

    def param_groups(self) -> list[dict]:
        """`decay_all`: one group, decayed, as GraphMAE's `create_optimizer`; else the engine's split."""
        if not self.decay_all:
            return super().param_groups()
        return [{"params": [p for p in self.parameters() if p.requires_grad], "wd_scale": 1.0, "group": "decay"}]

    def decode(self, code: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Re-masked codes `[N, D]` on the full graph -> reconstructed features `[N, F]`."""
        return self.decoder(self.decoder_drop(code), edge_index)

    def reconstruct(self, x: torch.Tensor, edge_index: torch.Tensor, masked: torch.Tensor, replaced: torch.Tensor,
                    sources: torch.Tensor, encoder_edges: torch.Tensor | None = None) -> torch.Tensor:
        """The corrupted graph through encoder (on `encoder_edges`, default the full graph), re-masking and
        decoder (on `edge_index`) -> reconstructed features `[N, F]`."""
        enc_edges = edge_index if encoder_edges is None else encoder_edges
        h = self.backbone.forward_features(corrupt_features(x, masked, replaced, sources, self.mask_token), enc_edges)
        return self.decode(remask(self.encoder_to_decoder(h), masked), edge_index)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        graph = batch["graph"]
        x, edge_index = graph.x.float(), graph.edge_index
        masked, replaced, sources = (t.to(x.device) for t in mask_nodes(x.shape[0], self.mask_rate, self.replace_rate))
        enc_edges = drop_edges(edge_index, self.drop_edge_rate)  # drawn after the mask, as the official code
        if not self.remask_views and not self.latent_weight:  # GraphMAE
            z = self.reconstruct(x, edge_index, masked, replaced, sources, enc_edges)
            return {"loss": scaled_cosine_error(z[masked], x[masked], self.gamma)}
        h = self.backbone.forward_features(corrupt_features(x, masked, replaced, sources, self.mask_token), enc_edges)
        code = self.encoder_to_decoder(h)
        if self.remask_views:  # GraphMAE2: K views, each with its own random re-masked nodes
            n = x.shape[0]
            views = [torch.randperm(n)[: max(1, int(self.remask_rate * n))].to(x.device) for _ in range(self.remask_views)]
            recon = sum(scaled_cosine_error(self.decode(remask(code, v, self.dmask_token), edge_index)[masked],
                                            x[masked], self.gamma) for v in views)
        else:
            recon = scaled_cosine_error(self.decode(remask(code, masked), edge_index)[masked], x[masked], self.gamma)
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
