"""Batched, on-device, seeded data augmentation for images ``(N, C, H, W)``.

Notes 001 and 003: augmentation (flips, rotations, translations, affine and elastic
distortion, colour jitter / hue shift, fancy PCA, noise, blur) multiplies the training
data and regularizes; it must not alter the correct label (b/d under a flip).

Every augmentation is called as ``aug(x, y) -> (x', y)``: the whole batch at once on
``x``'s device, each example transformed with probability ``p`` and its own random
parameters drawn from the augmentation's ``torch.Generator`` (``seed``), shapes,
dtype and labels kept. Geometric and colour ops use kornia (the optional extra
``descend[augment]``); fancy PCA, noise and flips need only torch.

In a :class:`descend.train.Trainer`, the ``augment`` callback applies a list of them to
every training batch: ``callbacks: [{name: augment, ops: [hflip, {name: rotate, degrees: 10}]}]``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from descend._extras import require
from descend._registry import Registry
from descend._validation import check_bool, check_int, check_range, fail
from descend.callbacks import CALLBACKS, Callback

AUGMENTATIONS = Registry("augmentation")


def _kornia():
    kornia = require("kornia", "this augmentation needs", "augment")
    import kornia.enhance  # noqa: F401
    import kornia.filters  # noqa: F401
    import kornia.geometry.transform  # noqa: F401
    return kornia


def _images(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        fail("x", "a floating-point image batch of shape (N, C, H, W)",
             getattr(x, "shape", type(x).__name__), TypeError)
    return x


class Augmentation:
    """Base class: draw which examples to change, then :meth:`apply` to those only.

    Example: a subclass only writes ``apply``; each example is changed with probability ``p``.

    >>> class Negate(Augmentation):
    ...     def apply(self, x):
    ...         return -x
    >>> x, y = Negate(p=0.5, seed=0)(torch.ones(6, 1, 2, 2), "labels")
    >>> x[:, 0, 0, 0].tolist(), y
    ([-1.0, 1.0, -1.0, -1.0, -1.0, 1.0], 'labels')
    """

    images_only = True

    def __init__(self, p: float = 0.5, seed: int = 0):
        self.p = float(check_range("p", p, ge=0, le=1))
        self.seed = check_int("seed", seed)
        self._gen: torch.Generator | None = None

    def generator(self, device) -> torch.Generator:
        device = torch.device(device)
        if self._gen is None or self._gen.device.type != device.type:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending_state is not None:  # restored before the first draw
                self._gen.set_state(self._pending_state)
                self._pending_state = None
        return self._gen

    _pending_state: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """The generator's state (None before the first draw), for exact resume.

        >>> a = GaussianNoise(seed=3); _ = a(torch.zeros(4))
        >>> b = GaussianNoise(seed=3); b.load_state_dict(a.state_dict())
        >>> torch.equal(a(torch.zeros(4))[0], b(torch.zeros(4))[0])
        True
        """
        g = self._gen.get_state() if self._gen is not None else self._pending_state
        return {"generator": None if g is None else g.clone(),
                "device": None if self._gen is None else self._gen.device.type}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        g = state.get("generator")
        if g is not None and not isinstance(g, torch.Tensor):
            fail("generator", "a torch.Generator state (a uint8 tensor) or None", type(g).__name__, TypeError)
        self._gen = None
        self._pending_state = None if g is None else g.clone()
        if g is not None and state.get("device") is not None:
            self.generator(state["device"])  # created now: a bad state fails here, not later

    def uniform(self, n: int, lo: float, hi: float, x: torch.Tensor, cols: int | None = None):
        shape = (n,) if cols is None else (n, cols)
        u = torch.rand(shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)
        return lo + (hi - lo) * u

    def normal(self, shape, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: Any = None):
        if self.images_only:
            _images(x)
        elif not isinstance(x, torch.Tensor) or not x.is_floating_point():
            fail("x", "a floating-point tensor", getattr(x, "dtype", type(x).__name__), TypeError)
        if self.p >= 1.0:
            return self.apply(x), y
        chosen = torch.rand(x.shape[0], generator=self.generator(x.device), device=x.device) < self.p
        idx = torch.nonzero(chosen).flatten()
        out = x.clone()
        if idx.numel():
            out[idx] = self.apply(x[idx])
        return out, y

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


@AUGMENTATIONS.register("hflip")
class HorizontalFlip(Augmentation):
    """Mirror left-right: ``x'[..., j] = x[..., W - 1 - j]`` (p=0.5). Twice is the identity.

    Example:
        >>> x = torch.arange(4.).view(1, 1, 1, 4)
        >>> HorizontalFlip(p=1)(x)[0]
        tensor([[[[3., 2., 1., 0.]]]])
    """

    def apply(self, x):
        return torch.flip(x, dims=(-1,))


@AUGMENTATIONS.register("vflip")
class VerticalFlip(Augmentation):
    """Mirror top-bottom: ``x'[..., i, :] = x[..., H - 1 - i, :]`` (p=0.5).

    >>> x = torch.arange(4.).view(1, 1, 4, 1)
    >>> VerticalFlip(p=1)(x)[0].flatten()
    tensor([3., 2., 1., 0.])
    """

    def apply(self, x):
        return torch.flip(x, dims=(-2,))


@AUGMENTATIONS.register("rotate")
class Rotate(Augmentation):
    """Rotate about the centre by an angle uniform in ``[-degrees, degrees]`` (kornia; zero fill).

    Args: degrees (>= 0, default 15), p (default 0.5), seed (default 0).

    >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, :] = 1          # a horizontal bar
    >>> out, _ = Rotate(degrees=90, p=1)(x)
    >>> out.shape, round(float(out[0, 0, 2, 2]), 4)            # the centre stays put
    (torch.Size([1, 1, 5, 5]), 1.0)
    """

    def __init__(self, degrees: float = 15.0, p: float = 0.5, seed: int = 0):
        super().__init__(p, seed)
        self.degrees = float(check_range("degrees", degrees, ge=0, le=360))

    def apply(self, x):
        k = _kornia()
        angle = self.uniform(x.shape[0], -self.degrees, self.degrees, x)
        return k.geometry.transform.rotate(x, angle)


@AUGMENTATIONS.register("translate")
class Translate(Augmentation):
    """Shift by up to ``fraction`` of the width/height in each direction (kornia; zero fill).

    Args: fraction in [0, 1] (default 0.1), integer (round shifts to whole pixels,
    default True), p (default 0.5), seed.

    >>> x = torch.arange(16.).view(1, 1, 4, 4)
    >>> Translate(fraction=0.5, p=1)(x)[0][0, 0].round().long()  # here one row down, zero fill
    tensor([[ 0,  0,  0,  0],
            [ 0,  1,  2,  3],
            [ 4,  5,  6,  7],
            [ 8,  9, 10, 11]])
    """

    def __init__(self, fraction: float = 0.1, integer: bool = True, p: float = 0.5, seed: int = 0):
        super().__init__(p, seed)
        self.fraction = float(check_range("fraction", fraction, ge=0, le=1))
        self.integer = check_bool("integer", integer)

    def apply(self, x):
        k = _kornia()
        h, w = x.shape[-2:]
        shift = self.uniform(x.shape[0], -1.0, 1.0, x, cols=2) * self.fraction
        shift = shift * torch.tensor([w, h], device=x.device, dtype=x.dtype)
        if self.integer:
            shift = shift.round()
        return k.geometry.transform.translate(x, shift)


@AUGMENTATIONS.register("affine")
class Affine(Augmentation):
    """Random affine distortion: rotation, translation, isotropic scale and shear (kornia).

    Args: degrees (default 10), translate (fraction, default 0.1), scale ``(lo, hi)``
    (default (0.9, 1.1)), shear (degrees, default 5), p (default 0.5), seed.

    >>> x = torch.rand(2, 1, 8, 8)
    >>> out, _ = Affine(degrees=30, p=1)(x)
    >>> out.shape, bool((out != x).any())
    (torch.Size([2, 1, 8, 8]), True)
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1,
                 scale: Sequence[float] = (0.9, 1.1), shear: float = 5.0, p: float = 0.5, seed: int = 0):
        super().__init__(p, seed)
        self.degrees = float(check_range("degrees", degrees, ge=0, le=360))
        self.translate = float(check_range("translate", translate, ge=0, le=1))
        if (not isinstance(scale, (list, tuple)) or len(scale) != 2
                or not 0 < float(scale[0]) <= float(scale[1])):
            fail("scale", "a pair (lo, hi) with 0 < lo <= hi", scale)
        self.scale = (float(scale[0]), float(scale[1]))
        self.shear = float(check_range("shear", shear, ge=0, lt=90))

    def apply(self, x):
        k = _kornia()
        n, (h, w) = x.shape[0], x.shape[-2:]
        angle = self.uniform(n, -self.degrees, self.degrees, x)
        shift = self.uniform(n, -self.translate, self.translate, x, cols=2)
        shift = shift * torch.tensor([w, h], device=x.device, dtype=x.dtype)
        s = self.uniform(n, *self.scale, x)
        sx = self.uniform(n, -self.shear, self.shear, x)
        sy = self.uniform(n, -self.shear, self.shear, x)
        center = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=x.device, dtype=x.dtype).expand(n, 2)
        m = k.geometry.transform.get_affine_matrix2d(shift, center, torch.stack([s, s], 1), angle, sx, sy)
        return k.geometry.transform.warp_affine(x, m[:, :2, :], (h, w))


@AUGMENTATIONS.register("elastic")
class ElasticDeform(Augmentation):
    """Elastic deformation (Simard et al., 2003): a random displacement field, Gaussian-smoothed.

    Uniform noise in [-1, 1] per pixel and direction, smoothed with a Gaussian of
    ``sigma`` pixels and scaled by ``alpha`` (kornia's ``elastic_transform2d``, noise
    drawn from this augmentation's generator).

    Args: alpha (default 1.0), sigma (default 4.0), kernel_size (odd, default 9), p, seed.

    >>> x = torch.rand(2, 1, 8, 8)
    >>> torch.allclose(ElasticDeform(alpha=0.0, p=1)(x)[0], x, atol=1e-5)   # no displacement
    True
    >>> bool((ElasticDeform(alpha=2.0, p=1)(x)[0] != x).any())
    True
    """

    def __init__(self, alpha: float = 1.0, sigma: float = 4.0, kernel_size: int = 9,
                 p: float = 0.5, seed: int = 0):
        super().__init__(p, seed)
        self.alpha = float(check_range("alpha", alpha, ge=0))
        self.sigma = float(check_range("sigma", sigma, gt=0))
        self.kernel_size = check_int("kernel_size", kernel_size, ge=1)
        if kernel_size % 2 == 0:
            fail("kernel_size", "odd", kernel_size)

    def apply(self, x):
        k = _kornia()
        n, (h, w) = x.shape[0], x.shape[-2:]
        noise = self.uniform(n * 2 * h * w, -1.0, 1.0, x).view(n, 2, h, w)
        ks = self.kernel_size
        return k.geometry.transform.elastic_transform2d(
            x, noise, kernel_size=(ks, ks), sigma=(self.sigma, self.sigma),
            alpha=(self.alpha, self.alpha), align_corners=True)


@AUGMENTATIONS.register("color_jitter")
class ColorJitter(Augmentation):
    """Random brightness ``x + b``, contrast ``(x - m) c + m``, saturation and hue (kornia).

    ``b ~ U(-brightness, brightness)``, ``c ~ U(1 - contrast, 1 + contrast)`` (``m``: the
    image mean), saturation factor ``~ U(1 - saturation, 1 + saturation)`` and hue shift
    ``~ U(-hue, hue)`` in turns (``hue=0.5`` is half the colour wheel). Saturation and hue
    need RGB images (C=3) and inputs in [0, 1]; brightness/contrast work for any C and
    are not clipped (inputs may be standardized).

    Args: brightness (0.2), contrast (0.2), saturation (0.0), hue (0.0), p (0.5), seed.

    >>> out, _ = ColorJitter(brightness=0.5, contrast=0.0, p=1)(torch.zeros(2, 1, 2, 2))
    >>> out[:, 0, 0, 0], bool((out == out[:, :1, :1, :1]).all())  # one shift per image
    (tensor([-0.0037,  0.2682]), True)
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.0,
                 hue: float = 0.0, p: float = 0.5, seed: int = 0):
        super().__init__(p, seed)
        self.brightness = float(check_range("brightness", brightness, ge=0))
        self.contrast = float(check_range("contrast", contrast, ge=0, le=1))
        self.saturation = float(check_range("saturation", saturation, ge=0, le=1))
        self.hue = float(check_range("hue", hue, ge=0, le=0.5))

    def apply(self, x):
        n = x.shape[0]
        view = (n, 1, 1, 1)
        b = self.uniform(n, -self.brightness, self.brightness, x)
        c = self.uniform(n, 1 - self.contrast, 1 + self.contrast, x)
        s = self.uniform(n, 1 - self.saturation, 1 + self.saturation, x)
        h = self.uniform(n, -self.hue, self.hue, x)
        x = x + b.view(view)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c.view(view) + mean
        if self.saturation or self.hue:
            if x.shape[1] != 3:
                fail("x", "RGB images (C=3) for saturation / hue jitter", tuple(x.shape))
            k = _kornia()
            if self.saturation:
                x = k.enhance.adjust_saturation(x, s)
            if self.hue:
                x = k.enhance.adjust_hue(x, h * 2 * math.pi)
        return x


@AUGMENTATIONS.register("hue_shift")
class HueShift(ColorJitter):
    """Shift the hue of RGB images by ``U(-hue, hue)`` turns (kornia), nothing else.

    Args: hue in [0, 0.5] (default 0.1), p (0.5), seed.

    >>> grey = torch.full((1, 3, 2, 2), 0.5)                  # grey has no hue to shift
    >>> torch.allclose(HueShift(hue=0.5, p=1)(grey)[0], grey, atol=1e-5)
    True
    """

    def __init__(self, hue: float = 0.1, p: float = 0.5, seed: int = 0):
        super().__init__(brightness=0.0, contrast=0.0, saturation=0.0, hue=hue, p=p, seed=seed)


@AUGMENTATIONS.register("fancy_pca")
class FancyPCA(Augmentation):
    """Fancy PCA colour augmentation (Krizhevsky et al., 2012), as notes 001 give it.

    PCA on the 3x3 covariance of the colour channels over the training set gives
    eigenvalues ``lambda_i`` and eigenvectors ``p_i``; for each augmented image draw
    ``a_i ~ N(0, variance)`` and add ``[p_1 p_2 p_3] [a_1 lambda_1, a_2 lambda_2, a_3 lambda_3]^T``
    to every pixel. Works for any channel count C (C x C covariance).

    Args:
        variance: variance of ``a_i`` (default 0.1, the notes' value; the paper's standard
            deviation 0.1 is ``variance=0.01``).
        p: probability per image (default 1.0). seed: seed.

    Call :meth:`fit` on the training images first; if not fitted, the first batch seen
    is used.

    Example:
        >>> x = torch.rand(16, 3, 4, 4)
        >>> FancyPCA().fit(x)(x)[0].shape
        torch.Size([16, 3, 4, 4])
    """

    def __init__(self, variance: float = 0.1, p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        self.variance = float(check_range("variance", variance, ge=0))
        self.eigenvalues: torch.Tensor | None = None
        self.eigenvectors: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """The generator's state and the fitted eigenvalues / eigenvectors (fitted on the
        first batch when :meth:`fit` was not called)."""
        return {**super().state_dict(), "eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.eigenvalues, self.eigenvectors = state.get("eigenvalues"), state.get("eigenvectors")

    def fit(self, x: torch.Tensor) -> "FancyPCA":
        _images(x)
        pixels = x.transpose(0, 1).reshape(x.shape[1], -1).double()   # (C, N*H*W)
        pixels = pixels - pixels.mean(1, keepdim=True)
        cov = pixels @ pixels.T / pixels.shape[1]
        evals, evecs = torch.linalg.eigh(cov)
        self.eigenvalues, self.eigenvectors = evals.clamp(min=0), evecs
        return self

    def apply(self, x):
        if self.eigenvalues is None:
            self.fit(x)
        if self.eigenvalues.numel() != x.shape[1]:
            fail("x", f"images with {self.eigenvalues.numel()} channels (as fitted)", tuple(x.shape))
        lam = self.eigenvalues.to(x.device, x.dtype)
        vecs = self.eigenvectors.to(x.device, x.dtype)
        a = self.normal((x.shape[0], lam.numel()), x) * math.sqrt(self.variance)
        delta = (a * lam) @ vecs.T                                   # (N, C): sum_i p_i a_i lambda_i
        return x + delta[:, :, None, None]


@AUGMENTATIONS.register("gaussian_noise")
class GaussianNoise(Augmentation):
    """Add ``N(0, sigma^2)`` noise to every input coordinate (any shape, not only images).

    Args: sigma (>= 0, default 0.1), p (default 1.0), seed.

    >>> out, _ = GaussianNoise(sigma=0.1)(torch.zeros(10000))
    >>> round(float(out.std()), 2)
    0.1
    """

    images_only = False

    def __init__(self, sigma: float = 0.1, p: float = 1.0, seed: int = 0):
        super().__init__(p, seed)
        self.sigma = float(check_range("sigma", sigma, ge=0))

    def apply(self, x):
        return x + self.sigma * self.normal(x.shape, x)


@AUGMENTATIONS.register("blur")
class GaussianBlur(Augmentation):
    """Gaussian blur with a per-image ``sigma ~ U(sigma_min, sigma_max)`` (kornia, reflect border).

    Args: kernel_size (odd, default 3), sigma_min (0.1), sigma_max (1.5), p (0.5), seed.

    >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1
    >>> out, _ = GaussianBlur(p=1)(x)
    >>> round(float(out.sum()), 4), bool(out[0, 0, 2, 2] < 1)   # spread out, total kept
    (1.0, True)
    """

    def __init__(self, kernel_size: int = 3, sigma_min: float = 0.1, sigma_max: float = 1.5,
                 p: float = 0.5, seed: int = 0):
        super().__init__(p, seed)
        self.kernel_size = check_int("kernel_size", kernel_size, ge=1)
        if kernel_size % 2 == 0:
            fail("kernel_size", "odd", kernel_size)
        self.sigma_min = float(check_range("sigma_min", sigma_min, gt=0))
        self.sigma_max = float(check_range("sigma_max", sigma_max, ge=self.sigma_min))

    def apply(self, x):
        k = _kornia()
        s = self.uniform(x.shape[0], self.sigma_min, self.sigma_max, x)
        ks = self.kernel_size
        return k.filters.gaussian_blur2d(x, (ks, ks), torch.stack([s, s], dim=1))


class Compose:
    """Apply augmentations in order: ``Compose([HorizontalFlip(), Rotate(10)])(x, y)``.

    Example:
        >>> aug = Compose([HorizontalFlip(p=1), HorizontalFlip(p=1)])
        >>> x = torch.rand(2, 1, 3, 3); torch.equal(aug(x, None)[0], x)
        True
    """

    def __init__(self, ops: Sequence[Augmentation]):
        for i, op in enumerate(ops):
            if not callable(op):
                fail(f"ops[{i}]", "an augmentation", op, TypeError)
        self.ops = list(ops)

    def __call__(self, x, y=None):
        for op in self.ops:
            x, y = op(x, y)
        return x, y


def build(ops: Sequence[Any], seed: int = 0) -> Compose:
    """A :class:`Compose` from names or ``{name: ..., **kwargs}`` dicts; op ``i`` gets ``seed + i``
    unless it names its own.

    Example:
        >>> build(["hflip", {"name": "gaussian_noise", "sigma": 0.05}]).ops[1].sigma
        0.05
    """
    if isinstance(ops, (str, dict)) or not isinstance(ops, (list, tuple)):
        fail("ops", "a list of augmentation names or {name: ..., ...} dicts", ops, TypeError)
    built = []
    for i, op in enumerate(ops):
        if isinstance(op, Augmentation):
            built.append(op)
            continue
        if isinstance(op, str):
            name, kwargs = op, {}
        elif isinstance(op, dict) and "name" in op:
            kwargs = dict(op)
            name = kwargs.pop("name")
        else:
            fail(f"ops[{i}]", "a name or a dict with a 'name' key", op, TypeError)
        kwargs.setdefault("seed", check_int("seed", seed) + i)
        built.append(AUGMENTATIONS.create(name, **kwargs))
    return Compose(built)


@CALLBACKS.register("augment")
class Augment(Callback):
    """Trainer callback: augment every training batch (evaluation data are untouched).

    Args:
        ops: augmentation names or ``{name: ..., **kwargs}`` dicts (see :data:`AUGMENTATIONS`),
            or augmentation objects.
        seed: base seed; op ``i`` uses ``seed + i`` (default 0).

    Example:
        >>> cb = Augment(ops=["hflip", {"name": "translate", "fraction": 0.125}])
    """

    def __init__(self, ops: Sequence[Any], seed: int = 0):
        self.pipeline = build(ops, seed)

    def on_batch_begin(self, trainer, batch):
        return self.pipeline(batch[0], batch[1])

    def state_dict(self) -> dict[str, Any]:
        """Each op's state (its generator, a fitted FancyPCA): a resumed fit draws the same."""
        return {"ops": [op.state_dict() if hasattr(op, "state_dict") else {}
                        for op in self.pipeline.ops]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ops = state["ops"]
        if len(ops) != len(self.pipeline.ops):
            fail("ops", f"{len(ops)} augmentations, as in the checkpoint", len(self.pipeline.ops))
        for op, st in zip(self.pipeline.ops, ops):
            if hasattr(op, "load_state_dict"):
                op.load_state_dict(st)


__all__ = [
    "AUGMENTATIONS", "Augmentation", "HorizontalFlip", "VerticalFlip", "Rotate", "Translate",
    "Affine", "ElasticDeform", "ColorJitter", "HueShift", "FancyPCA", "GaussianNoise",
    "GaussianBlur", "Compose", "build", "Augment",
]
