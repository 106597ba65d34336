"""One torch thread for these small-tensor tests: on a shared 2-core machine, thread
oversubscription makes tiny ops up to ~20x slower. Restored after each test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
