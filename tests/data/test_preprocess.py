import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from torch.utils.data import TensorDataset

from descend.data.preprocess import PREPROCESSORS, PCAWhiten, Standardize, ZCAWhiten, fit_splits


def correlated(n=500, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=dtype)
    return torch.randn(n, d, generator=g, dtype=dtype) @ a + 3.0


def cov(z):
    zc = z - z.mean(0)
    return zc.T @ zc / z.shape[0]


def test_standardize_train_zero_mean_unit_variance_and_sklearn():
    x = correlated() * torch.tensor([1.0, 10, 100, 0.1, 1, 1], dtype=torch.float64)
    s = Standardize().fit(x)
    z = s.transform(x)
    assert torch.allclose(z.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(6, dtype=torch.float64), atol=1e-12)
    ref = StandardScaler().fit(x.numpy())
    assert np.allclose(z.numpy(), ref.transform(x.numpy()), rtol=1e-12, atol=1e-12)
    assert torch.allclose(s.inverse_transform(z), x, rtol=1e-12)
    # applied to another split with the *training* statistics
    x2 = correlated(seed=1)
    assert torch.allclose(s.transform(x2), (x2 - x.mean(0)) / x.std(0, unbiased=False))


def test_standardize_per_channel_and_constant_feature():
    x = torch.randn(20, 3, 4, 4) * torch.tensor([1.0, 5.0, 0.5]).view(1, 3, 1, 1) + 2
    z = Standardize(per="channel").fit_transform(x)
    assert z.shape == x.shape
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    const = torch.ones(10, 2)
    assert torch.equal(Standardize().fit_transform(const), torch.zeros(10, 2))


def test_zca_identity_covariance_and_formula():
    x = correlated()
    zca = ZCAWhiten(eps=0).fit(x)
    z = zca.transform(x)
    assert torch.allclose(cov(z), torch.eye(6, dtype=torch.float64), atol=1e-10)
    # W = C^(-1/2): symmetric, and W C W = I
    c = cov(x)
    w = zca.matrix
    assert torch.allclose(w, w.T, atol=1e-12)
    assert torch.allclose(w @ c @ w, torch.eye(6, dtype=torch.float64), atol=1e-10)
    # images keep their shape
    imgs = torch.randn(300, 1, 3, 3)
    assert ZCAWhiten().fit_transform(imgs).shape == imgs.shape


def test_pca_whitening_identity_covariance_and_sklearn():
    x = correlated()
    n = x.shape[0]
    z = PCAWhiten(eps=0).fit_transform(x)
    assert torch.allclose(cov(z), torch.eye(6, dtype=torch.float64), atol=1e-10)
    ref = PCA(whiten=True).fit_transform(x.numpy())
    ours = z.numpy() / np.sqrt(n / (n - 1))          # population vs sample covariance
    signs = np.sign((ours * ref).sum(0))              # each axis is defined up to sign
    assert np.allclose(ours * signs, ref, atol=1e-8)
    z3 = PCAWhiten(n_components=3, eps=0).fit_transform(x)
    assert z3.shape == (n, 3) and np.allclose(np.abs(z3.numpy()), np.abs(z[:, :3].numpy()))


def test_eps_shrinks_small_directions():
    x = correlated()
    z = ZCAWhiten(eps=1.0).fit_transform(x)
    ev = torch.linalg.eigvalsh(cov(z))
    lam = torch.linalg.eigvalsh(cov(x))
    assert torch.allclose(ev.sort().values, (lam / (lam + 1.0)).sort().values, atol=1e-10)


def test_fit_splits_uses_train_statistics_only():
    tr = TensorDataset(torch.randn(50, 4) * 2 + 1, torch.zeros(50, dtype=torch.long))
    te = TensorDataset(torch.randn(20, 4) + 100, torch.zeros(20, dtype=torch.long))
    out = fit_splits("standardize", {"train": tr, "test": te})
    assert out["test"].tensors[0].mean() > 30       # not re-centred on the test data
    assert torch.equal(out["test"].tensors[1], te.tensors[1])


def test_fit_splits_on_datasplits():
    from descend.data import load
    d = load("digits")
    p = fit_splits(PCAWhiten(n_components=10), d)
    assert p.input_shape == (10,) and p.train.tensors[0].shape == (len(d.train), 10)
    assert p.test.tensors[0].dtype == torch.float32
    z = p.train.tensors[0].double()
    assert torch.allclose(cov(z), torch.eye(10, dtype=torch.float64), atol=1e-3)


def test_registry_and_errors():
    assert set(PREPROCESSORS.names()) == {"standardize", "pca_whiten", "zca_whiten"}
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardize().transform(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        Standardize().fit(torch.zeros(3, dtype=torch.long).view(3, 1))
    with pytest.raises(ValueError, match="`n_components` must be <= the number of features 2"):
        PCAWhiten(n_components=3).fit(torch.randn(5, 2))
    with pytest.raises(ValueError, match="`per` must be one of 'feature', 'channel'"):
        Standardize(per="sample")
    with pytest.raises(ValueError, match=r"`x` must be examples of shape \(2,\)"):
        ZCAWhiten().fit(torch.randn(5, 2)).transform(torch.randn(5, 3))
