"""One torch thread for the viz / report tests: their tensors are small, and on a shared 2-core
machine thread oversubscription makes small ops much slower. Restored after each module (module scope: module fixtures run single-threaded too)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
