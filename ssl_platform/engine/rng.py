"""The training process's random state: seeding it, and saving it into a checkpoint and back.

Python's, numpy's and torch's generators (CUDA's too, when there is one) are all saved, so a run
resumed from a checkpoint draws exactly the numbers an uninterrupted run would have drawn (random
masks, dropout, the init of anything built later).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (all devices') global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's generator states, as a checkpoint keeps them (loadable with `weights_only`)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned (the CUDA state only where there is CUDA)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
