import os

import pytest
import torch

# Two cores: keep each test process single-threaded so `pytest -n 2` does not oversubscribe.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")
# The Hugging Face tests build tiny models from configs: nothing is downloaded.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
