import shutil
import tempfile
from pathlib import Path

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


@pytest.fixture
def short_tmp_path():
    """A fresh folder with a short name (``/tmp/afXXXXXXXX``), for tests that pin messages quoting whole
    paths: messages shorten a file name over 80 characters, which pytest's own ``tmp_path`` can be (under
    pytest-xdist, ``/tmp/pytest-of-USER/pytest-N/popen-gwK/TEST-NAME0``)."""
    d = Path(tempfile.mkdtemp(prefix="af"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
