"""What the test markers promise, checked while the tests run; the hypothesis profile every test uses.

`make test-fast` runs `-m "not slow and not dist"`: unit tests that start no process. A test without
`slow` or `dist` that starts one anyway (a subprocess, torchrun, a DataLoader worker, a fork) fails,
naming what it started and the marker to add, so the fast selection stays fast as tests are added.
Two programs are allowed: `git` (`provenance.git_sha` asks it for the commit: milliseconds, cached per
process, so which test pays for it depends on the order the tests run in) `ldconfig` (ctypes'
library lookups, e.g. torch's first import, run it) and `lscpu` (joblib asks it for the number of
physical cores the first time scikit-learn parallelises; cached).

`gpu` tests are skipped on a machine without CUDA.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# derandomize: CI draws the same examples every run, so a fuzz find cannot make CI flaky; to explore,
# run with `--hypothesis-profile=explore` (new random examples, more of them)
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=1000, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

ALLOWED_PROGRAMS = {"git", "ldconfig", "lscpu"}  # what a fast test may still run (see the module docstring)
MARKERS_THAT_MAY_START_PROCESSES = ("slow", "dist")

# the test being guarded (None between tests and for slow/dist ones) and what it started in this phase
_guard: dict = {"item": None, "started": []}


def _refuse(what: str) -> None:
    """Called where a process would start: fail the running test unless its markers allow processes.

    pytest.fail raises a BaseException, which the code under test's `except Exception` does not swallow.
    """
    item = _guard["item"]
    if item is None:
        return
    _guard["started"].append(what)
    pytest.fail(f"{item.nodeid} starts a process ({what}) but is not marked slow or dist: add "
                "`@pytest.mark.slow` (or `@pytest.mark.dist` for torch.distributed), or run the code in-process, "
                "so that `make test-fast` stays free of processes", pytrace=False)


_execute_child = subprocess.Popen._execute_child
_process_start = multiprocessing.process.BaseProcess.start
_fork, _system = os.fork, os.system


def _guarded_execute_child(self, args, *rest, **kwargs):
    # args: what Popen passes on, a list or one string (shell=True already made it [sh, -c, cmd])
    argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
    words = os.fsdecode(argv[0]).split() if argv else []
    if not words or Path(words[0]).name not in ALLOWED_PROGRAMS:
        _refuse(f"subprocess {[os.fsdecode(a) for a in argv[:4]]}")
    return _execute_child(self, args, *rest, **kwargs)


def _guarded_process_start(self):
    _refuse(f"multiprocessing {type(self).__name__} {self.name}")
    return _process_start(self)


def _guarded_fork():
    _refuse("os.fork()")
    return _fork()


def _guarded_system(command):
    _refuse(f"os.system({command!r})")
    return _system(command)


subprocess.Popen._execute_child = _guarded_execute_child
multiprocessing.process.BaseProcess.start = _guarded_process_start
os.fork, os.system = _guarded_fork, _guarded_system


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Guard setup, call and teardown of every test without `slow` or `dist`."""
    may_start = any(item.get_closest_marker(name) for name in MARKERS_THAT_MAY_START_PROCESSES)
    _guard["item"], _guard["started"] = (None if may_start else item), []
    try:
        return (yield)
    finally:
        _guard["item"] = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A start that the test swallowed (a bare `except BaseException`, a thread) still fails its phase."""
    report = yield
    started, _guard["started"] = _guard["started"], []
    if started and report.passed and _guard["item"] is item:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} started a process ({started[0]}) in its {call.when} but is not marked "
                           "slow or dist: add `@pytest.mark.slow` (or `@pytest.mark.dist`), or run it in-process")
    return report


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu:
            item.add_marker(skip)
