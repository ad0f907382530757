"""ssl_platform: self-supervised representation pretraining."""

__version__ = "0.1.0"
