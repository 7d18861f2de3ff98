"""Synthetic 2-D sets: each kind follows its stated geometry; generation is seeded."""

import math

import numpy as np
import pytest

from descend import data
from descend.data.toy2d import make_toy2d


@pytest.mark.parametrize("kind", ["blobs", "moons", "circles", "xor", "spirals"])
def test_shapes_balance_and_determinism(kind):
    d = data.load("toy2d", kind=kind, n_samples=300)
    assert d.input_shape == (2,) and len(d.train) + len(d.val) + len(d.test) == 300
    y = np.concatenate([s.tensors[1].numpy() for s in (d.train, d.val, d.test)])
    assert np.bincount(y).tolist() == [300 // d.num_classes] * d.num_classes
    x1, y1 = make_toy2d(kind, 100, 0.1, 2, 5)
    x2, y2 = make_toy2d(kind, 100, 0.1, 2, 5)
    x3, _ = make_toy2d(kind, 100, 0.1, 2, 6)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)


def test_noise_free_geometry():
    x, y = make_toy2d("circles", 200, 0.0, 2, 0)
    r = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(r, np.where(y == 0, 1.0, 0.5), atol=1e-6)
    x, y = make_toy2d("xor", 200, 0.0, 2, 0)
    assert np.array_equal((x[:, 0] > 0) ^ (x[:, 1] > 0), y.astype(bool))
    x, y = make_toy2d("moons", 200, 0.0, 2, 0)
    c = np.where(y[:, None] == 0, x, np.array([1.0, 0.5]) - x)  # (1 - cos, 0.5 - sin) -> (cos, sin)
    np.testing.assert_allclose(np.hypot(c[:, 0], c[:, 1]), 1.0, atol=1e-6)
    assert (c[:, 1] >= -1e-6).all()
    x, y = make_toy2d("blobs", 90, 0.0, 3, 0)
    centres = np.array([[2 * math.cos(2 * math.pi * k / 3), 2 * math.sin(2 * math.pi * k / 3)]
                        for k in range(3)])
    np.testing.assert_allclose(x, centres[y], atol=1e-6)
    x, y = make_toy2d("spirals", 90, 0.0, 3, 0)
    r = np.hypot(x[:, 0], x[:, 1])
    angle = 3 * math.pi * r + 2 * math.pi * y / 3
    np.testing.assert_allclose(x, r[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1), atol=1e-5)


def test_blob_noise_std_matches_the_argument():
    # 6000 points, noise std 0.5: the sample std of the offsets has standard error
    # about 0.5 / sqrt(2 * 6000) = 0.0046; 5 standard errors -> 0.023.
    x, y = make_toy2d("blobs", 6000, 0.5, 2, 0)
    centres = np.array([[2.0, 0.0], [-2.0, 0.0]])
    off = x - centres[y]
    assert abs(off.std() - 0.5) < 0.023 and abs(off.mean()) < 0.023  # mean: SE 0.5 / sqrt(12000)
