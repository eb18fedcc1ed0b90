"""Repository-wide test settings.

Torch runs on one thread during tests: on this 2-core machine a second process (DDP ranks, the
resume subprocess, a parallel job) with two threads each made tiny models up to 100x slower.
"""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):  # BLAS of numpy / scikit-learn too
        yield
    torch.set_num_threads(before)
