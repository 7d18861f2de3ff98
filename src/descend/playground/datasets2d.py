"""Two-class, two-dimensional toy sets for the network trainer, with noise and a split.

=============  ===============================================================
name           how the points are drawn (``u`` uniform, ``n`` standard normal)
=============  ===============================================================
``circles``    radius ``r ~ U(0, 0.5)`` -> class 1, ``r ~ U(0.7, 1)`` -> class 0,
               angle ``U(0, 2 pi)``; plus ``noise * 0.3 * n`` on each coordinate
``xor``        ``(a, b) ~ U(-1, 1)^2`` pushed 0.05 away from the axes;
               class ``a * b > 0``; plus ``noise * 0.3 * n``
``spirals``    ``t ~ U(0, 1)``, radius ``t``, angle ``3 pi t + pi * class``;
               plus ``noise * 0.15 * n``
``blobs``      ``N((0.5, 0.5), s^2)`` -> class 1, ``N((-0.5, -0.5), s^2)`` -> class 0,
               ``s = 0.15 + 0.5 * noise``
=============  ===============================================================

Classes are balanced (``n // 2`` each, the odd point goes to class 0); the points are
shuffled and the last ``round(test_fraction * n)`` are the test set. Everything is drawn
from ``numpy.random.default_rng(seed)``, so a seed gives the same set everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from descend._validation import check_choice, check_int, check_range

DATASETS2D = ("circles", "xor", "spirals", "blobs")


def make_toy2d(name: str, *, n: int = 200, noise: float = 0.1, test_fraction: float = 0.5,
               seed: int = 0):
    """Draw a toy set; return ``(x_train, y_train, x_test, y_test)`` as tensors.

    Args:
        name: one of ``circles``, ``xor``, ``spirals``, ``blobs``.
        n: number of points in all, 10..5000 (default 200).
        noise: noise level in [0, 1] (default 0.1); see the module table.
        test_fraction: share kept for the test set, in [0.1, 0.9] (default 0.5).
        seed: seed of the numpy generator (default 0).

    Returns:
        float32 inputs of shape (m, 2) and int64 labels of shape (m,).

    Example:
        >>> xtr, ytr, xte, yte = make_toy2d("xor", n=100, seed=1)
        >>> xtr.shape, xte.shape
        (torch.Size([50, 2]), torch.Size([50, 2]))
    """
    check_choice("dataset", name, DATASETS2D)
    check_int("n", n, ge=10, le=5000)
    check_range("noise", noise, ge=0, le=1)
    check_range("test_fraction", test_fraction, ge=0.1, le=0.9)
    check_int("seed", seed, ge=0)
    rng = np.random.default_rng(seed)
    n1 = n // 2
    labels = np.concatenate([np.zeros(n - n1), np.ones(n1)]).astype(np.int64)
    if name == "circles":
        r = np.where(labels == 1, rng.uniform(0, 0.5, n), rng.uniform(0.7, 1.0, n))
        a = rng.uniform(0, 2 * math.pi, n)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1) + noise * 0.3 * rng.standard_normal((n, 2))
    elif name == "xor":
        pts = rng.uniform(-1, 1, (n, 2))
        pts += np.sign(pts) * 0.05
        # the label follows from the position; re-sort so the classes stay balanced
        want = labels.copy()
        got = (pts[:, 0] * pts[:, 1] > 0).astype(np.int64)
        flip = got != want
        pts[flip, 0] *= -1  # mirroring x flips the sign of a * b
        pts += noise * 0.3 * rng.standard_normal((n, 2))
    elif name == "spirals":
        t = rng.uniform(0, 1, n)
        a = 3 * math.pi * t + math.pi * labels
        pts = np.stack([t * np.cos(a), t * np.sin(a)], 1) + noise * 0.15 * rng.standard_normal((n, 2))
    else:  # blobs
        s = 0.15 + 0.5 * noise
        centre = np.where(labels[:, None] == 1, 0.5, -0.5)
        pts = centre + s * rng.standard_normal((n, 2))
    order = rng.permutation(n)
    pts, labels = pts[order], labels[order]
    n_test = int(round(test_fraction * n))
    x = torch.tensor(pts, dtype=torch.float32)
    y = torch.tensor(labels)
    return x[: n - n_test], y[: n - n_test], x[n - n_test:], y[n - n_test:]
