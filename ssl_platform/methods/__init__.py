"""Every pretraining method, by the name recipes and the CLI use (`recipes/<name>/`)."""

from ssl_platform.methods.base import Method
from ssl_platform.methods.simclr import SimCLR
from ssl_platform.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "supervised": Supervised,
}

__all__ = ["METHODS", "Method", "SimCLR", "Supervised"]
