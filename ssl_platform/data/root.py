"""Where prepared data sets live: the data root, `$SSL_PLATFORM_DATA` or `./data`.

`python -m ssl_platform data prepare NAME` writes `<data root>/<name>/` and every dataset that reads
prepared or downloaded files looks there unless given `root=`; both resolve it here, so the one
variable moves all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SSL_PLATFORM_DATA"


def data_root() -> Path:
    """The data root: `$SSL_PLATFORM_DATA`, or `./data` relative to the working directory."""
    return Path(os.environ.get(ENV_VAR) or "data").expanduser()


def resolve_root(root: str | Path | None) -> Path:
    """`root` as a Path (`~` expanded), or the data root (`data_root()`) when None."""
    if root is not None:
        return Path(root).expanduser()
    return data_root()


def describe_data_root() -> str:
    """What `$SSL_PLATFORM_DATA` is set to, for messages that tell the user where files were looked for."""
    return os.environ.get(ENV_VAR, "unset, so ./data")
