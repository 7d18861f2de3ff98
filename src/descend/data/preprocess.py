"""Input preprocessing fitted on the training split only: standardization, PCA / ZCA whitening.

Notes 003 ("Data Transformation"): convergence is faster when every input has zero mean
over the training set and the inputs are decorrelated with similar variances (KL
expansion / PCA). Every preprocessor is ``fit(x_train)`` once, then ``transform(x)`` on
every split, so no statistic of the validation or test data leaks into training.

* ``Standardize``: ``z = (x - mu) / sigma`` per feature (or per channel).
* ``PCAWhiten`` (KLT): ``z = diag(lambda + eps)^(-1/2) U^T (x - mu)``, with
  ``C = U diag(lambda) U^T`` the training covariance; optionally the top ``k`` components.
* ``ZCAWhiten``: ``z = U diag(lambda + eps)^(-1/2) U^T (x - mu)``, the whitening closest to
  the input (same shape, images stay images).

Statistics use the population normalization ``1/N`` (so the whitened training data has
exactly identity covariance with ``eps=0``); scikit-learn's PCA divides by ``N - 1``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import TensorDataset

from descend._registry import Registry
from descend._validation import check_choice, check_int, check_range, fail

PREPROCESSORS = Registry("preprocessor")


def _check_x(x, name="x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        fail(name, "a floating-point tensor of shape (N, ...)",
             getattr(x, "shape", type(x).__name__), TypeError)
    return x


class _Fitted:
    fitted = False

    def _need_fit(self):
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(x_train) first")

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.fit(x).transform(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x)


@PREPROCESSORS.register("standardize")
class Standardize(_Fitted):
    """Zero mean and unit variance per feature (or per channel), from the training split.

    ``z = (x - mu) / sigma``, ``mu`` and ``sigma`` (population sd) over the training
    examples; a feature with ``sigma < eps`` is only centred (as scikit-learn does).

    Args:
        per: ``"feature"`` (default: every input coordinate) or ``"channel"`` (images
            ``(N, C, ...)``: one mean/sd per channel, over examples and positions).
        eps: smallest sd that is divided by (default 1e-8).

    Example:
        >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
        >>> Standardize().fit(x).transform(x)
        tensor([[-1., -1.],
                [ 1.,  1.]])

    Same as ``sklearn.preprocessing.StandardScaler`` for ``per="feature"``.
    """

    def __init__(self, per: str = "feature", eps: float = 1e-8):
        self.per = check_choice("per", per, ["feature", "channel"])
        self.eps = float(check_range("eps", eps, ge=0))

    def fit(self, x: torch.Tensor) -> "Standardize":
        _check_x(x)
        dims = [0] if self.per == "feature" else [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False)
        self.mean, self.std = mean[0], torch.where(std < self.eps, torch.ones_like(std), std)[0]
        self.fitted = True
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        self._need_fit()
        return (_check_x(x) - self.mean.to(x)) / self.std.to(x)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        self._need_fit()
        return z * self.std.to(z) + self.mean.to(z)


class _Whiten(_Fitted):
    def __init__(self, eps: float):
        self.eps = float(check_range("eps", eps, ge=0))

    def _fit_eig(self, x: torch.Tensor):
        _check_x(x)
        flat = x.reshape(x.shape[0], -1).double()
        self.shape = tuple(x.shape[1:])
        self.mean = flat.mean(0)
        xc = flat - self.mean
        cov = xc.T @ xc / flat.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        self.eigenvalues = evals[order].clamp(min=0)
        self.components = evecs[:, order]       # columns: principal directions
        self.fitted = True

    def _center(self, x):
        self._need_fit()
        _check_x(x)
        if tuple(x.shape[1:]) != self.shape:
            fail("x", f"examples of shape {self.shape} (as fitted)", tuple(x.shape[1:]))
        return x.reshape(x.shape[0], self.mean.numel()).double() - self.mean.to(x.device)


@PREPROCESSORS.register("pca_whiten")
class PCAWhiten(_Whiten):
    """PCA (KLT) whitening: rotate onto the principal axes and scale each to unit variance.

    ``z = diag(lambda_1..k + eps)^(-1/2) U_k^T (x - mu)``: decorrelated inputs, identity
    covariance on the training split (exactly, with ``eps=0``). Output ``(N, k)``.

    Args:
        n_components: ``k``, the number of leading components kept (default None: all).
        eps: added to the eigenvalues before the inverse square root (default 1e-5).

    Example:
        >>> x = torch.randn(100, 3) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.1]])
        >>> z = PCAWhiten(eps=0).fit_transform(x)
        >>> torch.allclose(z.T @ z / 100, torch.eye(3), atol=1e-4)
        True

    Differs from ``sklearn.decomposition.PCA(whiten=True)`` by the factor
    ``sqrt(N/(N-1))`` (population covariance) and possibly the sign of each axis.
    """

    def __init__(self, n_components: int | None = None, eps: float = 1e-5):
        super().__init__(eps)
        self.n_components = check_int("n_components", n_components, ge=1, allow_none=True)

    def fit(self, x: torch.Tensor) -> "PCAWhiten":
        self._fit_eig(x)
        d = self.components.shape[0]
        if self.n_components is not None and self.n_components > d:
            fail("n_components", f"<= the number of features {d}", self.n_components)
        k = self.n_components or d
        self.matrix = self.components[:, :k] / torch.sqrt(self.eigenvalues[:k] + self.eps)
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (self._center(x) @ self.matrix.to(x.device)).to(x.dtype)


@PREPROCESSORS.register("zca_whiten")
class ZCAWhiten(_Whiten):
    """ZCA whitening: ``z = U diag(lambda + eps)^(-1/2) U^T (x - mu)``, same shape as ``x``.

    The symmetric whitening matrix ``C^(-1/2)``: identity covariance on the training
    split (with ``eps=0``) while staying as close as possible to the original inputs.

    Args:
        eps: regularizer added to the eigenvalues (default 1e-5; 0.1 is common for images).

    Example:
        >>> x = torch.randn(200, 4) @ torch.randn(4, 4)
        >>> z = ZCAWhiten(eps=0).fit_transform(x)
        >>> torch.allclose(z.T @ z / 200, torch.eye(4), atol=1e-3)
        True

    Reference: Bell & Sejnowski (1997); Krizhevsky (2009), "Learning multiple layers of
    features from tiny images", Appendix A.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__(eps)

    def fit(self, x: torch.Tensor) -> "ZCAWhiten":
        self._fit_eig(x)
        u = self.components
        self.matrix = (u / torch.sqrt(self.eigenvalues + self.eps)) @ u.T
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        z = self._center(x) @ self.matrix.to(x.device)
        return z.to(x.dtype).reshape(x.shape)


def fit_splits(preprocessor, splits):
    """Fit ``preprocessor`` on ``splits.train`` inputs and apply it to every split.

    Works on a :class:`descend.data.DataSplits` (returns a new one, ``input_shape``
    updated) or on a dict of ``TensorDataset``s with a ``"train"`` key.

    Example:
        >>> ds = {"train": TensorDataset(torch.randn(10, 2), torch.zeros(10)),
        ...       "test": TensorDataset(torch.randn(5, 2), torch.zeros(5))}
        >>> out = fit_splits(Standardize(), ds)
        >>> out["train"].tensors[0].mean(0).abs().max() < 1e-6
        tensor(True)
    """
    if isinstance(preprocessor, str):
        preprocessor = PREPROCESSORS.create(preprocessor)
    if isinstance(splits, dict):
        if "train" not in splits:
            fail("splits", "a dict with a 'train' key", sorted(splits))
        preprocessor.fit(splits["train"].tensors[0])
        return {k: _apply(preprocessor, v) for k, v in splits.items()}
    preprocessor.fit(splits.train.tensors[0])
    new = {f: _apply(preprocessor, getattr(splits, f)) for f in ("train", "val", "test")}
    shape = tuple(new["train"].tensors[0].shape[1:])
    return dataclasses.replace(splits, **new, input_shape=shape)


def _apply(pre, ds: TensorDataset) -> TensorDataset:
    x, *rest = ds.tensors
    return TensorDataset(pre.transform(x), *rest)


__all__ = ["PREPROCESSORS", "Standardize", "PCAWhiten", "ZCAWhiten", "fit_splits"]
