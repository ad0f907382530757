"""Run under `torchrun --nproc_per_node 2`: one SimCLR step's gradient under DDP equals one process's
gradient on the concatenated batch. Not a test module itself; tests/test_distributed.py launches it.

The backbone is a ViT (LayerNorm only) and the head has no BatchNorm, so nothing depends on how the
batch is split: any difference would come from the gather, the label offsets or the DDP average.
"""

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from ssl_platform import distributed
from ssl_platform.methods.simclr import SimCLR


def build() -> SimCLR:
    torch.manual_seed(0)
    return SimCLR("vit_tiny_patch16_224", in_chans=1, backbone_kwargs={"img_size": 16, "patch_size": 8},
                  proj_hidden_dim=32, proj_dim=16, proj_batch_norm=False, temperature=0.2)


def main() -> int:
    distributed.init_from_env()
    rank, world = distributed.rank(), distributed.world_size()
    assert world == 2, world
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(8, 1, 16, 16, generator=g), torch.randn(8, 1, 16, 16, generator=g)
    n = x0.shape[0] // world
    local = {"views": [x0[rank * n:(rank + 1) * n], x1[rank * n:(rank + 1) * n]]}

    ddp = DistributedDataParallel(build())
    ddp(local)["loss"].backward()
    grads = {k: p.grad.clone() for k, p in ddp.module.named_parameters()}

    status = 0
    if rank == 0:
        ref = build()
        # world size 1 semantics for the reference: call the loss without gathering
        ref.criterion.gather_distributed = False
        ref({"views": [x0, x1]})["loss"].backward()
        worst = max((grads[k] - p.grad).abs().max().item() for k, p in ref.named_parameters())
        scale = max(p.grad.abs().max().item() for p in ref.parameters())
        print(f"max |grad_ddp - grad_single| = {worst:.3e} (max |grad| {scale:.3e})", flush=True)
        status = 0 if worst <= 1e-5 * max(1.0, scale) else 1
    status = int(distributed.broadcast_object(status))
    distributed.destroy()
    return status


if __name__ == "__main__":
    sys.exit(main())
