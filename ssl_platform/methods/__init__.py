"""Every pretraining method, by the name recipes and the CLI use (`recipes/<name>/`)."""

from ssl_platform.methods.base import Method
from ssl_platform.methods.dae import DenoisingAutoencoder
from ssl_platform.methods.graphmae import GraphMAE
from ssl_platform.methods.gsimclr import GSimCLR
from ssl_platform.methods.ijepa import IJEPA
from ssl_platform.methods.m3ae import M3AE
from ssl_platform.methods.satmae_pp import SatMAEPP
from ssl_platform.methods.simclr import SimCLR
from ssl_platform.methods.spark import SparK
from ssl_platform.methods.supervised import Supervised
from ssl_platform.methods.tjepa import TJEPA

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "gsimclr": GSimCLR,
    "dae": DenoisingAutoencoder,  # G-SimCLR's first stage (recipes/gsimclr/)
    "spark": SparK,
    "satmae_pp": SatMAEPP,
    "graphmae": GraphMAE,
    "ijepa": IJEPA,
    "tjepa": TJEPA,
    "m3ae": M3AE,
    "supervised": Supervised,
}

__all__ = ["IJEPA", "M3AE", "METHODS", "TJEPA", "DenoisingAutoencoder", "GSimCLR", "GraphMAE", "Method", "SatMAEPP", "SimCLR", "SparK", "Supervised"]
