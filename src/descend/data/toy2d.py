"""Synthetic 2-D classification sets for the playground: blobs, moons, circles, XOR, spirals.

Generated with ``numpy.random.default_rng(data_seed)``, classes balanced, so a given
``data_seed`` gives the same points everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from descend._validation import check_choice, check_int, check_no_unknown, check_range
from descend.data.datasets import DATASETS, TEST_SPLIT_SEED, _no_root, make_splits, stratified_split

KINDS = ["blobs", "moons", "circles", "xor", "spirals"]
DEFAULT_NOISE = {"blobs": 0.5, "moons": 0.1, "circles": 0.05, "xor": 0.05, "spirals": 0.05}
DEFAULT_CLASSES = {"blobs": 3, "moons": 2, "circles": 2, "xor": 2, "spirals": 2}


def _counts(n: int, k: int) -> list[int]:
    return [n // k + (1 if c < n % k else 0) for c in range(k)]


def make_toy2d(kind: str, n_samples: int, noise: float, classes: int, data_seed: int):
    """Points ``x`` (n, 2) float32 and labels ``y`` (n,) int64 of one kind, shuffled.

    - blobs: ``classes`` Gaussian blobs of std ``noise`` around centres on a circle of
      radius 2 (angles ``2 pi c / classes``).
    - moons: two interleaved half circles, ``(cos a, sin a)`` and ``(1 - cos a, 0.5 - sin a)``
      with ``a`` uniform in [0, pi], plus Gaussian noise.
    - circles: two concentric circles of radius 1 and 0.5, plus Gaussian noise.
    - xor: ``u`` uniform in [-1, 1]^2, label ``(u0 > 0) xor (u1 > 0)``, plus Gaussian noise.
    - spirals: ``classes`` arms ``r (cos, sin)(3 pi r + 2 pi c / classes)``, ``r`` uniform
      in [0, 1], plus Gaussian noise.

    Example:
        >>> x, y = make_toy2d("xor", 8, 0.0, 2, 0)
        >>> bool(((x[:, 0] > 0) ^ (x[:, 1] > 0) == y).all())
        True
    """
    rng = np.random.default_rng(data_seed)
    xs, ys = [], []
    for c, n in enumerate(_counts(n_samples, classes)):
        if kind == "blobs":
            a = 2 * math.pi * c / classes
            pts = np.array([2 * math.cos(a), 2 * math.sin(a)]) + np.zeros((n, 2))
        elif kind == "moons":
            a = rng.uniform(0, math.pi, n)
            pts = (np.stack([np.cos(a), np.sin(a)], 1) if c == 0
                   else np.stack([1 - np.cos(a), 0.5 - np.sin(a)], 1))
        elif kind == "circles":
            a = rng.uniform(0, 2 * math.pi, n)
            pts = (1.0 if c == 0 else 0.5) * np.stack([np.cos(a), np.sin(a)], 1)
        elif kind == "xor":
            pts = np.empty((0, 2))
            while len(pts) < n:  # rejection: keep the points of quadrant parity c
                u = rng.uniform(-1, 1, (2 * n, 2))
                pts = np.concatenate([pts, u[((u[:, 0] > 0) ^ (u[:, 1] > 0)) == bool(c)]])
            pts = pts[:n]
        else:
            r = rng.uniform(0, 1, n)
            a = 3 * math.pi * r + 2 * math.pi * c / classes
            pts = r[:, None] * np.stack([np.cos(a), np.sin(a)], 1)
        xs.append(pts + noise * rng.standard_normal((n, 2)))
        ys.append(np.full(n, c))
    x, y = np.concatenate(xs), np.concatenate(ys)
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm].astype(np.int64)


MAX_SAMPLES = 10_000_000  # 160 MB of points: a typo such as 10**12 is refused, not allocated


@DATASETS.register("toy2d")
def toy2d(*, root=None, val_fraction: float = 0.1, seed: int = 0, kind: str = "moons",
          n_samples: int = 1000, noise: float | None = None, classes: int | None = None,
          data_seed: int = 0, test_fraction: float = 0.2, **kwargs):
    """A synthetic 2-D set (``kind``: blobs, moons, circles, xor, spirals); input shape (2,).

    Args:
        kind: the shape (default ``"moons"``).
        n_samples: total points before splitting, 10 to 10,000,000 (default 1000).
        noise: std of the Gaussian noise added to the points (default per kind: blobs 0.5,
            moons 0.1, circles 0.05, xor 0.05, spirals 0.05).
        classes: number of classes for blobs / spirals, at most 1000 (default 3 / 2; 2 for
            the others).
        data_seed: seed of the generator (default 0).
        test_fraction: stratified test share, drawn with a fixed seed (default 0.2).

    Example:
        >>> d = toy2d(kind="spirals", classes=3, n_samples=300)
        >>> d.num_classes, len(d.train) + len(d.val) + len(d.test)
        (3, 300)
    """
    check_no_unknown("toy2d()", kwargs)
    _no_root("toy2d", root)
    check_choice("kind", kind, KINDS)
    check_int("n_samples", n_samples, ge=10, le=MAX_SAMPLES)
    noise = DEFAULT_NOISE[kind] if noise is None else float(check_range("noise", noise, ge=0))
    if classes is None:
        classes = DEFAULT_CLASSES[kind]
    elif kind in ("blobs", "spirals"):
        check_int("classes", classes, ge=2, le=min(1000, n_samples))
    else:
        check_choice("classes", classes, [2])
    check_int("data_seed", data_seed, ge=0, le=2**32 - 1)
    check_range("test_fraction", test_fraction, gt=0, lt=1)
    x, y = make_toy2d(kind, n_samples, noise, classes, data_seed)
    train, test = stratified_split(y, test_fraction, TEST_SPLIT_SEED)
    return make_splits("toy2d", x[train], y[train], x[test], y[test], val_fraction=val_fraction,
                       seed=seed, num_classes=classes, class_names=[str(c) for c in range(classes)],
                       info={"source": f"synthetic {kind}", "kind": kind, "noise": noise,
                             "data_seed": data_seed})
