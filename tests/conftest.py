import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests run small inputs, which gain nothing from intra-op threads; on a 2-core machine
    running other work, torch's threads thrash (a densenet121 forward went from 60 ms to 2 s)."""
    try:
        import torch
    except ImportError:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
