"""What a recipe may make this process call or read, and what only the user may allow.

Trust: a recipe, an eval suite or a run directory's config.yaml may come from someone else, and
`_component_` names a callable this process will call. `locate` therefore resolves only classes
from the trusted libraries (`TRUSTED_ROOTS`), never from their parts that load pickles, compile or
run code, open sockets or write files (`DENIED`), never private names, and no plain functions except
the feature extractors of `FUNCTION_MODULES`. Code of the user's own (a package of datasets or
methods) is allowed by the user, never by the file: `--allow-components PKG` on the command line or
`SSLP_ALLOW_COMPONENTS=PKG[,PKG...]` in the environment (see docs/security.md).

The rules live here, below `config`, so that one module states them and `config.locate` (recipes,
suites, run directories) and the command line apply the same ones.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence
from typing import Any


class UntrustedError(ValueError):
    """A recipe names something no trust rule allows; the message says why and how to allow your own code."""


# libraries whose classes a recipe may name; everything else needs the user's explicit permission
TRUSTED_ROOTS = ("ssl_platform", "torch", "torchvision", "timm", "lightly", "torch_geometric")
ENV_ALLOW = "SSLP_ALLOW_COMPONENTS"
# parts of the trusted libraries a recipe may never name: they unpickle files (torch.package,
# torch.serialization, PyG's and torchvision's dataset caches are reached only through our wrappers,
# which check them), compile or run code (jit, cpp_extension, export, onnx), open sockets or spawn
# processes (distributed, multiprocessing, lightly's web client), or write files (tensorboard), or
# are this program's own plumbing (cli, checkpoints, data preparation, the process group)
DENIED = (
    "torch.hub", "torch.package", "torch.serialization", "torch.jit", "torch.utils.cpp_extension",
    "torch.export", "torch.onnx", "torch.compiler", "torch.distributed", "torch.multiprocessing",
    "torch.testing", "torch.utils.tensorboard", "torch.utils.data.datapipes", "torch.backends", "torch.cuda",
    "torch.fx", "torch.library", "torch.ops", "torch.classes",
    "torchvision.datasets", "torchvision.io",
    "torch_geometric.datasets", "torch_geometric.data", "torch_geometric.io", "torch_geometric.loader",
    "lightly.api", "lightly.cli", "lightly.openapi_generated", "lightly.data",
    "timm.models._hub", "timm.models._helpers",
    "ssl_platform.cli", "ssl_platform.config", "ssl_platform.checkpoint", "ssl_platform.zoo", "ssl_platform.data.prepare",
    "ssl_platform.data.sources", "ssl_platform.data.download",
    "ssl_platform.distributed", "ssl_platform.pretrain", "ssl_platform.engine",
)
# the only modules whose plain functions a recipe may name (a suite's `extractor:`)
FUNCTION_MODULES = ("ssl_platform.evaluation.features",)
_allowed_by_user: set[str] = set()
ENV_READ = re.compile(r"\$\{\s*oc\.env\s*:\s*([^,}\s]+)")
ENV_READABLE = ("SSL_PLATFORM_", "SSLP_")


def allow_components(prefixes: Sequence[str]) -> None:
    """Let recipes name callables of these packages or modules (the user's own code) in this process.

    The command line's `--allow-components PKG` calls this; `SSLP_ALLOW_COMPONENTS` does the same
    from the environment. A recipe or run directory can never widen the list itself.
    """
    for prefix in prefixes:
        prefix = prefix.strip()
        if not prefix or not all(part.isidentifier() for part in prefix.split(".")):
            raise UntrustedError(f"--allow-components {prefix!r} is not a dotted package name (e.g. mylab.datasets)")
        _allowed_by_user.add(prefix)


def user_allowed() -> set[str]:
    env = {p.strip() for p in os.environ.get(ENV_ALLOW, "").split(",") if p.strip()}
    return _allowed_by_user | env


def _under(path: str, prefixes: Sequence[str] | set[str]) -> str | None:
    """The first of `prefixes` that `path` is (or lies under, module-wise), else None."""
    return next((p for p in prefixes if path == p or path.startswith(p + ".")), None)


def check_path(path: str, user: set[str]) -> None:
    """Refuse, before anything is imported, a dotted path that no trust rule lets a recipe name."""
    parts = path.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise UntrustedError(f"_component_ {path!r} is not a dotted path such as torch.optim.AdamW")
    if _under(path, user):
        return
    private = [part for part in parts if part.startswith("_")]
    if private:
        raise UntrustedError(f"_component_ {path!r} names the private attribute {private[0]!r}; recipes may only "
                          "name public classes")
    if parts[0] not in TRUSTED_ROOTS:
        raise UntrustedError(
            f"_component_ {path!r} is not in a trusted library ({', '.join(TRUSTED_ROOTS)}). If it is your own "
            f"code and you trust this recipe, allow it with --allow-components {parts[0]} (or "
            f"{ENV_ALLOW}={parts[0]}); see docs/security.md"
        )
    denied = _under(path, DENIED)
    if denied:
        raise UntrustedError(f"_component_ {path!r} is refused: {denied} can load pickles, run code, open sockets "
                          "or write files, so no recipe may name it (docs/security.md)")


def check_resolved(path: str, obj: Any, user: set[str]) -> None:
    """Refuse what a trusted path resolved to when it is a re-export of untrusted code or a function."""
    if _under(path, user):
        return
    module = getattr(obj, "__module__", None) or ""
    target = f"{module or 'an object'}.{getattr(obj, '__qualname__', '?')}"
    if module.split(".")[0] not in TRUSTED_ROOTS:
        raise UntrustedError(f"_component_ {path!r} resolves to {target}, outside the trusted libraries; it is refused")
    denied = _under(module, DENIED)
    if denied:
        raise UntrustedError(f"_component_ {path!r} is refused: it is {target}, and {denied} can load pickles, run "
                          "code, open sockets or write files (docs/security.md)")
    if not inspect.isclass(obj) and not (inspect.isfunction(obj) and _under(module, FUNCTION_MODULES)):
        raise UntrustedError(
            f"_component_ {path!r} is a {type(obj).__name__}, not a class; recipes may name classes (datasets, "
            "transforms, methods, optimizers) and the feature extractors of "
            f"{', '.join(FUNCTION_MODULES)}. Allow your own functions with --allow-components PKG"
        )


def check_env_reads(node: Any, where: str, key: str = "") -> None:
    """Refuse `${oc.env:VAR}` of any variable but the platform's own (SSL_PLATFORM_*, SSLP_*).

    A recipe is often someone else's, and what it resolves is written to config.yaml, metrics and
    zoo cards that are shared: `name: ${oc.env:AWS_SECRET_ACCESS_KEY}` would publish the secret.
    """
    if isinstance(node, dict):
        for k, v in node.items():
            check_env_reads(v, where, f"{key}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_env_reads(v, where, f"{key}{i}.")
    elif isinstance(node, str):
        for var in ENV_READ.findall(node):
            if not var.startswith(ENV_READABLE):
                raise UntrustedError(
                    f"{where}: {key.rstrip('.')} reads the environment variable {var} (${{oc.env:...}}); recipes "
                    f"may read only {', '.join(p + '*' for p in ENV_READABLE)}, because resolved values are written "
                    "to the run directory. Give the value on the command line instead"
                )
