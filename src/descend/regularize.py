"""Regularizers: norm penalties, parameter tying, noise injection, adversarial training.

Each is a plain function (usable in any loop) and a trainer callback registered in
``descend.train.CALLBACKS`` (and in :data:`REGULARIZERS`, the same objects) under
the names ``l2_penalty``, ``l1_penalty``, ``tying``, ``weight_noise``,
``input_noise``, ``label_noise`` and ``fgsm``, so a recipe says
``callbacks: [{name: l2_penalty, alpha: 1e-4}]``.

The penalties here are the *coupled* loss-term versions of notes 001,
``J~(theta) = J(theta) + alpha Omega(theta)``; decoupled weight decay lives in
``descend.optim``. Biases and normalization parameters are left unregularized by
default (notes 001: "the bias terms ... are usually left unregularized").
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from descend._registry import Registry
from descend._validation import check_bool, check_int, check_range, fail
from descend.callbacks import CALLBACKS, Callback

REGULARIZERS = Registry("regularizer")

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _register(name: str):
    def deco(cls):
        CALLBACKS.register(name, cls)
        REGULARIZERS.register(name, cls)
        return cls
    return deco


def _names(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        fail(name, "a string or a list of strings", value, TypeError)
    return tuple(value)


def select_params(model: nn.Module, exclude: Sequence[str] | str | None = ("bias", "norm"),
                  include: Sequence[str] | str | None = None) -> list[nn.Parameter]:
    """The parameters of ``model`` that a penalty applies to.

    A parameter is kept when it requires grad, its qualified name contains one of
    ``include`` (if given), and it is not excluded. ``"bias"`` in ``exclude`` drops
    every parameter whose name contains ``bias``; ``"norm"`` drops every parameter of
    a normalization layer (BatchNorm, LayerNorm, GroupNorm, ...) and any whose name
    contains ``norm``; any other entry drops names containing it.

    Args:
        model: the module.
        exclude: name fragments to leave out (default ``("bias", "norm")``); None keeps all.
        include: name fragments to keep (default None: every parameter).

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
        >>> [p.shape for p in select_params(m)]
        [torch.Size([3, 2]), torch.Size([1, 3])]
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", type(model).__name__, TypeError)
    exclude, include = _names("exclude", exclude), _names("include", include)
    norm_params = set()
    if "norm" in exclude:
        for m in model.modules():
            if isinstance(m, _NORM_TYPES):
                norm_params.update(id(p) for p in m.parameters(recurse=False))
    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in norm_params:
            continue
        if include and not any(s in name for s in include):
            continue
        if any(s in name for s in exclude):
            continue
        out.append(p)
    return out


def l2_penalty(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``Omega(w) = 1/2 ||w||_2^2 = 1/2 sum_i w_i^2`` over all ``params`` (notes 001).

    Its gradient is ``w``, so ``J + alpha Omega`` under SGD gives
    ``w <- (1 - e alpha) w - e grad J``: weight decay.

    Example:
        >>> l2_penalty([torch.tensor([3.0, 4.0])])
        tensor(12.5000)
    """
    params = list(params)
    if not params:
        return torch.zeros(())
    return 0.5 * sum((p * p).sum() for p in params)


def l1_penalty(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``Omega(w) = ||w||_1 = sum_i |w_i|`` over all ``params`` (notes 001).

    Its (sub)gradient is ``sign(w)``: a constant pull toward zero.

    Example:
        >>> l1_penalty([torch.tensor([3.0, -4.0])])
        tensor(7.)
    """
    params = list(params)
    if not params:
        return torch.zeros(())
    return sum(p.abs().sum() for p in params)


def soft_threshold(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """The proximal map of ``threshold * ||w||_1``: ``sign(w) max(|w| - threshold, 0)``.

    It is notes 001's closed-form L1 optimum ``w_i = sign(w*_i) max(|w*_i| - alpha/H_ii, 0)``
    applied after each gradient step; it sets small weights to exactly zero.

    Example:
        >>> soft_threshold(torch.tensor([0.5, 0.05, -2.0]), 0.1)
        tensor([ 0.4000,  0.0000, -1.9000])
    """
    return torch.sign(w) * torch.clamp(w.abs() - threshold, min=0)


def tying_penalty(a: nn.Module | Iterable[torch.Tensor], b: nn.Module | Iterable[torch.Tensor],
                  squared: bool = True) -> torch.Tensor:
    """Parameter tying: ``||w^(A) - w^(B)||`` between two models or layers (notes 001).

    ``squared=True`` (default) gives ``1/2 ||w^(A) - w^(B)||_2^2`` (smooth at zero; the
    usual choice); ``squared=False`` gives the plain Euclidean norm of the notes.
    Parameters are matched in order and must have equal shapes.

    Example:
        >>> tying_penalty([torch.tensor([1.0, 2.0])], [torch.tensor([1.0, 0.0])])
        tensor(2.)
    """
    pa = list(a.parameters()) if isinstance(a, nn.Module) else list(a)
    pb = list(b.parameters()) if isinstance(b, nn.Module) else list(b)
    if len(pa) != len(pb) or any(x.shape != y.shape for x, y in zip(pa, pb)):
        fail("b", "parameters with the same shapes as `a`",
             f"{[tuple(p.shape) for p in pb]} vs {[tuple(p.shape) for p in pa]}")
    sq = sum(((x - y) ** 2).sum() for x, y in zip(pa, pb))
    return 0.5 * sq if squared else torch.sqrt(sq)


def fgsm(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, eps: float,
         clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """Fast gradient sign method: ``x_adv = x + eps sign(grad_x J(theta, x, y))``.

    Computes the input gradient without touching the parameters' ``.grad``. With
    ``clamp=(lo, hi)`` the result is clipped to the valid input range.

    Args:
        model, loss_fn: the network and ``loss_fn(outputs, y) -> scalar``.
        x, y: the clean batch. eps: perturbation size (>= 0), the max-norm of ``x_adv - x``.
        clamp: optional ``(lo, hi)`` input range (default None).

    Reference: Goodfellow, Shlens, Szegedy, "Explaining and harnessing adversarial
    examples", ICLR 2015 (the panda/gibbon example of notes 001).

    Example:
        >>> m = nn.Linear(3, 2); x = torch.zeros(4, 3); y = torch.zeros(4, dtype=torch.long)
        >>> (fgsm(m, nn.functional.cross_entropy, x, y, 0.1) - x).abs().max() <= 0.1
        tensor(True)
    """
    check_range("eps", eps, ge=0)
    xr = x.detach().clone().requires_grad_(True)
    loss = loss_fn(model(xr), y)
    (g,) = torch.autograd.grad(loss, xr)
    x_adv = x.detach() + eps * g.sign()
    if clamp is not None:
        x_adv = x_adv.clamp(clamp[0], clamp[1])
    return x_adv


class _ParamCallback(Callback):
    def __init__(self, exclude, include):
        self.exclude = _names("exclude", exclude)
        self.include = _names("include", include)
        self._params: list[nn.Parameter] | None = None

    def params(self, trainer) -> list[nn.Parameter]:
        if self._params is None:
            self._params = select_params(trainer.model, self.exclude, self.include)
        return self._params

    def on_fit_begin(self, trainer) -> None:
        self._params = None


@_register("l2_penalty")
class L2Penalty(_ParamCallback):
    """Add ``alpha/2 ||w||_2^2`` to the loss (coupled L2 / weight decay, notes 001).

    Under SGD with learning rate ``e`` each step is ``w <- (1 - e alpha) w - e grad J``,
    the same as ``torch.optim.SGD(weight_decay=alpha)``.

    Args:
        alpha: penalty weight (>= 0), default 1e-4.
        exclude: name fragments not penalized (default ``("bias", "norm")``).
        include: name fragments penalized (default None: all the rest).

    Example:
        >>> cb = L2Penalty(alpha=1e-3)
    """

    def __init__(self, alpha: float = 1e-4, exclude=("bias", "norm"), include=None):
        super().__init__(exclude, include)
        self.alpha = float(check_range("alpha", alpha, ge=0))

    def on_loss(self, trainer, loss, batch):
        return loss + self.alpha * l2_penalty(self.params(trainer))


@_register("l1_penalty")
class L1Penalty(_ParamCallback):
    """L1 regularization ``alpha ||w||_1`` (notes 001), by subgradient or proximal step.

    ``proximal=False`` (default) adds ``alpha ||w||_1`` to the loss (gradient
    ``alpha sign(w)``; weights oscillate around zero and are rarely exactly zero).
    ``proximal=True`` adds nothing to the loss and, after each optimizer step, applies
    ``w <- sign(w) max(|w| - lr alpha, 0)`` with the first param group's ``lr``:
    small weights become exactly zero (sparse solutions, feature selection).

    Args:
        alpha: penalty weight (>= 0), default 1e-4.
        proximal: soft-threshold after the step instead of a loss term (default False).
        exclude, include: as in :func:`select_params`.

    Example:
        >>> cb = L1Penalty(alpha=1e-3, proximal=True)
    """

    def __init__(self, alpha: float = 1e-4, proximal: bool = False, exclude=("bias", "norm"),
                 include=None):
        super().__init__(exclude, include)
        self.alpha = float(check_range("alpha", alpha, ge=0))
        self.proximal = check_bool("proximal", proximal)

    def on_loss(self, trainer, loss, batch):
        if self.proximal:
            return loss
        return loss + self.alpha * l1_penalty(self.params(trainer))

    def on_batch_end(self, trainer, logs) -> None:
        if not self.proximal:
            return
        t = float(trainer.optimizer.param_groups[0]["lr"]) * self.alpha
        with torch.no_grad():
            for p in self.params(trainer):
                p.copy_(soft_threshold(p, t))


@_register("tying")
class Tying(Callback):
    """Parameter tying between two submodules: add ``alpha ||w^(A) - w^(B)||`` (notes 001).

    Args:
        a, b: dotted names of two submodules of the trained model with equally shaped
            parameters (e.g. ``"branch_a"``, ``"branch_b"``).
        alpha: penalty weight (>= 0), default 1e-3.
        squared: ``1/2 ||.||_2^2`` (default True) or the plain norm (False).

    Example:
        >>> cb = Tying(a="0", b="2", alpha=0.1)
    """

    def __init__(self, a: str, b: str, alpha: float = 1e-3, squared: bool = True):
        for n, v in (("a", a), ("b", b)):
            if not isinstance(v, str) or not v:
                fail(n, "a submodule name", v, TypeError)
        self.a, self.b = a, b
        self.alpha = float(check_range("alpha", alpha, ge=0))
        self.squared = check_bool("squared", squared)

    def _module(self, model, name, arg):
        try:
            return model.get_submodule(name)
        except AttributeError:
            names = ", ".join(n for n, _ in model.named_modules() if n)
            fail(arg, f"a submodule of the model ({names})", name)

    def on_loss(self, trainer, loss, batch):
        ma = self._module(trainer.model, self.a, "a")
        mb = self._module(trainer.model, self.b, "b")
        return loss + self.alpha * tying_penalty(ma, mb, self.squared)


class _Noisy(Callback):
    def __init__(self, seed):
        self.seed = check_int("seed", seed)
        self._gen: torch.Generator | None = None

    def gen(self, device) -> torch.Generator:
        if self._gen is None or self._gen.device != torch.device(device):
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending_state is not None:  # restored before the first draw
                self._gen.set_state(self._pending_state)
                self._pending_state = None
        return self._gen

    _pending_state: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """The noise generator's state (None before the first draw), for exact resume."""
        g = self._gen.get_state() if self._gen is not None else self._pending_state
        return {"generator": None if g is None else g.clone(),
                "device": None if self._gen is None else str(self._gen.device)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        g = state.get("generator")
        if g is not None and not isinstance(g, torch.Tensor):
            fail("generator", "a torch.Generator state (a uint8 tensor) or None", type(g).__name__, TypeError)
        self._gen = None
        self._pending_state = None if g is None else g.clone()
        if g is not None and state.get("device") is not None:
            self.gen(state["device"])  # created now: a bad state fails here, not later

    def randn_like(self, t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=self.gen(t.device), device=t.device, dtype=t.dtype)


@_register("input_noise")
class InputNoise(_Noisy):
    """Add Gaussian noise to the inputs of every training batch: ``x + sigma n, n ~ N(0, I)``.

    Notes 001/003: noise of small variance at the input is equivalent to a weight-norm
    penalty (Bishop, 1995). Evaluation data are untouched.

    Args:
        sigma: noise standard deviation (>= 0), default 0.1. seed: noise seed (default 0).

    Example:
        >>> x, y = InputNoise(sigma=0.1).on_batch_begin(None, (torch.zeros(2, 3), torch.zeros(2)))
    """

    def __init__(self, sigma: float = 0.1, seed: int = 0):
        super().__init__(seed)
        self.sigma = float(check_range("sigma", sigma, ge=0))

    def on_batch_begin(self, trainer, batch):
        x, y = batch[0], batch[1]
        if not x.is_floating_point():
            fail("inputs", "floating point for input noise", str(x.dtype), TypeError)
        return (x + self.sigma * self.randn_like(x), y)


@_register("weight_noise")
class WeightNoise(_Noisy):
    """Evaluate each step's gradient at noisy weights ``w + sigma n`` and apply it to ``w``.

    Notes 001: noise on the weights pushes toward flat minima, where small weight
    perturbations change the output little (Hochreiter & Schmidhuber, 1995). The noise
    is added before the forward pass and removed right after the backward pass, so the
    optimizer steps from the clean weights.

    Args:
        sigma: noise standard deviation (>= 0), default 0.01.
        exclude, include: as in :func:`select_params` (default: weights only).
        seed: noise seed (default 0).

    Example:
        >>> cb = WeightNoise(sigma=0.01)
    """

    def __init__(self, sigma: float = 0.01, exclude=("bias", "norm"), include=None, seed: int = 0):
        super().__init__(seed)
        self.sigma = float(check_range("sigma", sigma, ge=0))
        self.exclude = _names("exclude", exclude)
        self.include = _names("include", include)
        self._clean: list[torch.Tensor] | None = None

    def on_batch_begin(self, trainer, batch):
        params = select_params(trainer.model, self.exclude, self.include)
        with torch.no_grad():
            self._clean = [p.detach().clone() for p in params]
            for p in params:
                p.add_(self.sigma * self.randn_like(p))
        self._noisy = params
        return None

    def on_after_backward(self, trainer) -> None:
        if self._clean is None:
            return
        with torch.no_grad():
            for p, c in zip(self._noisy, self._clean):
                p.copy_(c)
        self._clean = None


@_register("label_noise")
class LabelNoise(_Noisy):
    """DisturbLabel: with probability ``alpha`` replace a label by one drawn uniformly.

    Notes 003 (Xie et al., "DisturbLabel", CVPR 2016): each training example is
    disturbed with probability ``alpha``; its new label is uniform over
    ``{0, ..., C-1}`` regardless of the true one (so it may stay the same).

    Args:
        num_classes: ``C`` (>= 2). alpha: disturb probability in [0, 1], default 0.1.
        seed: seed (default 0).

    Example:
        >>> x, y = LabelNoise(num_classes=10, alpha=1.0).on_batch_begin(
        ...     None, (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))
    """

    def __init__(self, num_classes: int, alpha: float = 0.1, seed: int = 0):
        super().__init__(seed)
        self.num_classes = check_int("num_classes", num_classes, ge=2)
        self.alpha = float(check_range("alpha", alpha, ge=0, le=1))

    def on_batch_begin(self, trainer, batch):
        x, y = batch[0], batch[1]
        g = self.gen(y.device)
        disturb = torch.rand(y.shape, generator=g, device=y.device) < self.alpha
        new = torch.randint(0, self.num_classes, y.shape, generator=g, device=y.device, dtype=y.dtype)
        return (x, torch.where(disturb, new, y))


@_register("fgsm")
class FGSM(Callback):
    """Adversarial training: ``J~ = alpha J(x, y) + (1 - alpha) J(x + eps sign(grad_x J), y)``.

    Notes 001 (Goodfellow et al., ICLR 2015): training on adversarially perturbed
    examples imposes local constancy around the training data. The adversarial batch
    costs one extra forward/backward (for ``grad_x J``) and one extra forward; with
    batch-norm layers those passes also update the running statistics.

    Args:
        eps: perturbation size (>= 0), default 0.1.
        alpha: weight of the clean loss in [0, 1], default 0.5 (the paper's value).
        clamp_min, clamp_max: optional valid input range (default None).

    Example:
        >>> cb = FGSM(eps=0.05)
    """

    def __init__(self, eps: float = 0.1, alpha: float = 0.5, clamp_min: float | None = None,
                 clamp_max: float | None = None):
        self.eps = float(check_range("eps", eps, ge=0))
        self.alpha = float(check_range("alpha", alpha, ge=0, le=1))
        check_range("clamp_min", clamp_min, allow_none=True)
        check_range("clamp_max", clamp_max, allow_none=True)
        if (clamp_min is None) != (clamp_max is None):
            fail("clamp_max", "given together with clamp_min", clamp_max)
        self.clamp = None if clamp_min is None else (float(clamp_min), float(clamp_max))

    def on_loss(self, trainer, loss, batch):
        x, y = batch[0], batch[1]
        x_adv = fgsm(trainer.model, trainer.loss_fn, x, y, self.eps, self.clamp)
        adv = trainer.loss_fn(trainer.model(x_adv), y)
        return self.alpha * loss + (1 - self.alpha) * adv


__all__ = [
    "REGULARIZERS", "select_params", "l2_penalty", "l1_penalty", "soft_threshold",
    "tying_penalty", "fgsm", "L2Penalty", "L1Penalty", "Tying", "InputNoise", "WeightNoise",
    "LabelNoise", "FGSM",
]
