"""torch.hub entry points: the backbones of the ssl_platform model zoo, by name.

    torch.hub.load("path/to/ssl_platform", "list_models", source="local")
    torch.hub.load("path/to/ssl_platform", "backbone", name="simclr_resnet18.fmnist32_2ep", source="local")

Works offline from a checkout. The zoo is the `zoo=` argument, else $SSL_PLATFORM_ZOO, else the
checkout's `zoo/` directory (see `ssl_platform.zoo.index`); every file is checked against its
sha256 before it is loaded.
"""

dependencies = ["torch", "timm", "safetensors"]


def backbone(name: str, zoo: str | None = None, pretrained: bool = True):
    """A zoo backbone by name (timm contract: `forward_head(forward_features(x), pre_logits=True)` -> [B, D]).

    Args:
        name: the zoo name, `arch.tag` (`list_models()` lists them).
        zoo: a zoo directory or http(s) base URL (default: see the module docstring).
        pretrained: False gives the same architecture at random init (no weights are fetched).
    """
    from ssl_platform import zoo as _zoo

    if pretrained:
        return _zoo.load_backbone(name, zoo)
    from ssl_platform.models.backbones import from_spec

    return from_spec(_zoo.get_entry(name, zoo).backbone_spec)


def list_models(zoo: str | None = None) -> list[str]:
    """The names in the zoo."""
    from ssl_platform import zoo as _zoo

    return _zoo.list_models(zoo)
