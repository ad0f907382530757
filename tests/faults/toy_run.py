"""A toy training run for the fault tests that call `fit` in-process (a second, no recipe): 64 random
points, a linear regression whose forward can run a hook (send a signal, ...) at a chosen call.
Not a test module itself."""

import torch
from torch import nn
from torch.utils.data import Dataset

from ssl_platform.data.collate import TransformedDataset
from ssl_platform.engine.rng import seed_everything
from ssl_platform.engine.trainer import TrainConfig, fit
from ssl_platform.methods.base import Method


class Points(Dataset):
    """64 fixed random vectors, `(sample, label)` like every dataset here."""

    def __init__(self, n=64, dim=6):
        self.x = torch.randn(n, dim, generator=torch.Generator().manual_seed(123))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


def jitter(x):
    return {"image": x + 0.05 * torch.randn_like(x)}


class Backbone(nn.Module):
    num_features = 8

    def __init__(self, dim=6):
        super().__init__()
        self.fc = nn.Linear(dim, 8)

    def forward_features(self, x):
        return torch.tanh(self.fc(x))

    def forward_head(self, x, pre_logits=False):
        return x


class Toy(Method):
    """Regress the first 3 inputs; `hook(call)` runs at the start of every forward (1-based count)."""

    def __init__(self, hook=None):
        super().__init__()
        self.backbone = Backbone()
        self.head = nn.Linear(8, 3)
        self.calls = 0
        self.hook = hook

    def forward(self, batch):
        self.calls += 1
        if self.hook is not None:
            self.hook(self.calls)
        y = self.head(self.backbone.forward_features(batch["image"]))
        return {"loss": (y - batch["image"][:, :3]).pow(2).mean() + 0.01 * torch.rand(())}


def train(out_dir, *, hook=None, epochs=2, batch_size=8, **train_cfg):
    """Run `fit` on a freshly seeded toy (64 / batch_size micro-steps per epoch); returns (method, fit's result)."""
    seed_everything(0)
    method = Toy(hook)
    cfg = TrainConfig(**{"epochs": epochs, "warmup_epochs": 1, "save_every_steps": 1000, "log_every_steps": 1,
                         **train_cfg})
    result = fit(method, TransformedDataset(Points(), jitter),
                 lambda groups: torch.optim.SGD(groups, lr=0.5, momentum=0.9), cfg, out_dir=out_dir,
                 batch_size=batch_size, recipe={"name": "toy", "train": {"epochs": epochs}})
    return method, result
