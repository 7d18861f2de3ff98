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


@pytest.fixture
def with_group_keys():
    """Build ``cls(groups, **kwargs)`` with param groups that carry keys other tools put
    there (Lightning's ``name``, timm's ``lr_scale`` / ``layer_id``).

    torch.optim keeps such keys. Where descend's Optimizer still refuses them at
    construction ("param group got unexpected keyword argument(s)"), the groups are built
    without them and the keys are put into ``param_groups`` afterwards, where torch's
    loops and state dicts carry them; once the constructor accepts them this is a plain
    constructor call and the tests exercise the real path. Returns ``(optimizer,
    refused)``.
    """
    def build(cls, groups, **kwargs):
        try:
            return cls(groups, **kwargs), False
        except TypeError as e:
            if "unexpected keyword argument" not in str(e):
                raise
        known = set(cls([torch.nn.Parameter(torch.zeros(1))], **kwargs).defaults) | {"params"}
        extra = [{k: v for k, v in g.items() if k not in known} for g in groups]
        plain = [{k: v for k, v in g.items() if k in known} for g in groups]
        opt = cls(plain, **kwargs)
        for g, keys in zip(opt.param_groups, extra):
            g.update(keys)
        return opt, True
    return build
