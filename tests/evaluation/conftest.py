"""Fixtures shared by the evaluation tests: every module here runs single-threaded."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The fits here are small: one thread is faster, and immune to other jobs on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # numpy's BLAS, under sklearn
        yield
    torch.set_num_threads(threads)
