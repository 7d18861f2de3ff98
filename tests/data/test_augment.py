import math

import pytest
import torch

from descend.data.augment import (
    AUGMENTATIONS, Augment, ColorJitter, ElasticDeform, FancyPCA, GaussianBlur, GaussianNoise,
    HorizontalFlip, Rotate, Translate, VerticalFlip, build,
)
from descend.train import CALLBACKS

ALL = sorted(AUGMENTATIONS.names())


def images(n=8, c=3, h=12, w=12, dtype=torch.float32, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keeps_shape_dtype_and_labels_and_is_seeded(name, dtype):
    x, y = images(dtype=dtype), torch.arange(8)
    kwargs = {"p": 1.0}
    if name in ("color_jitter",):
        kwargs.update(saturation=0.3, hue=0.1)
    aug = AUGMENTATIONS.create(name, seed=5, **kwargs)
    out, y2 = aug(x, y)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert y2 is y
    assert torch.isfinite(out).all()
    assert not torch.equal(out, x)
    again, _ = AUGMENTATIONS.create(name, seed=5, **kwargs)(x, y)
    assert torch.equal(out, again)
    skip, _ = AUGMENTATIONS.create(name, seed=5, p=0.0)(x, y)
    assert torch.equal(skip, x)


def test_horizontal_flip_twice_is_identity_and_formula():
    x = images()
    f = HorizontalFlip(p=1.0)
    once, _ = f(x)
    assert torch.equal(once[..., 0], x[..., -1])
    assert torch.equal(f(once)[0], x)
    v, _ = VerticalFlip(p=1.0)(x)
    assert torch.equal(v[..., 0, :], x[..., -1, :])


def test_probability_p_flips_that_fraction_of_examples():
    x = images(n=4000, c=1, h=2, w=2)
    out, _ = HorizontalFlip(p=0.3)(x)
    changed = (out != x).flatten(1).any(1).double().mean().item()
    assert abs(changed - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 4000)


def test_rotate_90_degrees_is_rot90():
    x = images(n=2, c=1, h=5, w=5)
    aug = Rotate(degrees=90, p=1.0)
    aug.uniform = lambda n, lo, hi, x, cols=None: torch.full((n,), 90.0, dtype=x.dtype)
    out, _ = aug(x)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)


def test_integer_translation_is_a_shift_with_zero_fill():
    x = images(n=64, c=1, h=8, w=8)
    out, _ = Translate(fraction=0.25, p=1.0, seed=1)(x)
    for i in range(64):
        ok = False
        for dx in range(-2, 3):
            for dy in range(-2, 3):
                ref = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
                ref[:, max(0, dy):8 - max(0, -dy), max(0, dx):8 - max(0, -dx)] = src
                ok = ok or torch.allclose(out[i], ref, atol=1e-5)
        assert ok


def test_fancy_pca_adds_eigenvector_combinations_with_the_notes_variance():
    torch.manual_seed(0)
    mix = torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 0.5]])
    x = torch.einsum("nchw,cd->ndhw", torch.rand(64, 3, 4, 4), mix).double()
    aug = FancyPCA(variance=0.1, seed=2).fit(x)
    # eigen-decomposition of the channel covariance, written out
    pix = x.transpose(0, 1).reshape(3, -1)
    c = torch.cov(pix, correction=0)
    assert torch.allclose(aug.eigenvectors @ torch.diag(aug.eigenvalues) @ aug.eigenvectors.T, c, atol=1e-10)
    big = x.repeat(100, 1, 1, 1)
    out, _ = aug(big)
    delta = out - big
    assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta), atol=1e-12)  # same offset for every pixel
    a = (delta[:, :, 0, 0] @ aug.eigenvectors) / aug.eigenvalues               # recover a_i
    n = a.shape[0]
    # sample variance of n draws of N(0, 0.1): relative sd sqrt(2/n)
    assert ((a.var(0) / 0.1 - 1).abs() < 5 * math.sqrt(2 / n)).all()
    assert (a.mean(0).abs() < 5 * math.sqrt(0.1 / n)).all()


def test_gaussian_noise_statistics_any_shape():
    x = torch.zeros(500, 40)
    out, _ = GaussianNoise(sigma=0.2)(x)
    n = x.numel()
    assert abs(out.std().item() / 0.2 - 1) < 5 * math.sqrt(1 / (2 * n))
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        GaussianNoise()(torch.zeros(3, dtype=torch.long))


def test_blur_and_elastic_keep_constant_images_and_jitter_formula():
    const = torch.full((4, 3, 9, 9), 0.4)
    assert torch.allclose(GaussianBlur(p=1.0)(const)[0], const, atol=1e-6)
    assert torch.allclose(ElasticDeform(alpha=0.0, p=1.0)(const)[0], const, atol=1e-6)
    x = images(n=4)
    aug = ColorJitter(brightness=0.2, contrast=0.0, p=1.0, seed=3)
    out, _ = aug(x)
    diff = out - x
    assert torch.allclose(diff, diff[:, :1, :1, :1].expand_as(diff), atol=1e-6)  # one offset per image
    assert diff.abs().max() <= 0.2


def test_images_only_and_argument_errors():
    with pytest.raises(TypeError, match=r"`x` must be a floating-point image batch of shape \(N, C, H, W\)"):
        HorizontalFlip()(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="`x` must be RGB images"):
        ColorJitter(hue=0.1, p=1.0)(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="`p` must be >= 0 and <= 1. Received: p=2"):
        HorizontalFlip(p=2)
    with pytest.raises(ValueError, match="`kernel_size` must be odd"):
        GaussianBlur(kernel_size=4)
    with pytest.raises(ValueError, match="`augmentation` must be one of"):
        build(["mirror"])
    with pytest.raises(TypeError, match="`ops` must be a list"):
        build("hflip")


def test_augment_callback_through_the_trainer():
    from torch import nn

    from descend.train import Trainer
    assert isinstance(CALLBACKS.create("augment", ops=["hflip"]), Augment)
    x, y = images(n=32, c=1, h=6, w=6), torch.randint(0, 2, (32,))
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(36, 2)

        def forward(self, inp):
            if self.training:
                seen.append(inp.clone())
            return self.lin(inp.flatten(1))

    m = Spy()
    cb = Augment(ops=[{"name": "hflip", "p": 1.0}])
    Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=32, shuffle=False,
            callbacks=[cb], progress=False).fit((x, y), epochs=1)
    assert torch.equal(seen[0], torch.flip(x, dims=(-1,)))


def test_augment_state_resumes_the_same_draws_fancy_pca_fit_included():
    ops = ["hflip", {"name": "gaussian_noise", "sigma": 0.1}, "fancy_pca"]
    a = Augment(ops, seed=2)
    a.on_batch_begin(None, (images(), None))  # generators advanced, FancyPCA fitted on this batch
    b = Augment(ops, seed=2)
    b.load_state_dict(a.state_dict())
    x = images(seed=1)
    assert torch.equal(a.on_batch_begin(None, (x, None))[0], b.on_batch_begin(None, (x, None))[0])
    fresh = Augment(ops, seed=2)  # without the state: other draws and another PCA fit
    assert not torch.equal(a.on_batch_begin(None, (x, None))[0], fresh.on_batch_begin(None, (x, None))[0])
    assert Augment(ops).state_dict()["ops"][0] == {"generator": None, "device": None}  # nothing drawn yet
    with pytest.raises(ValueError, match="`ops` must be 3 augmentations, as in the checkpoint"):
        Augment(["hflip"]).load_state_dict(a.state_dict())
