"""Layer-wise trust ratios for large-batch training: LARS (You, Gitman & Ginsburg 2017)
and LAMB (You et al. 2019), as transforms chained with descend's momentum and Adam
transforms (note 004: training with very large batches across machines).

A layer's step is rescaled so that its size is a fixed fraction of the layer's weight
norm: ``|step| ~ lr * trust * |w|``. Biases and normalization parameters (tensors with at
most one dimension) are left out of the ratio and of the weight decay by default, as in
the papers' experiments and common practice.
"""

from __future__ import annotations

import torch

from descend._validation import check_bool, check_choice, check_range
from descend.optim import Optimizer, Transform, chain, momentum_step, scale_by_adam, scale_by_lr

__all__ = ["scale_by_lars", "scale_by_trust_ratio", "LARS", "LAMB"]

EXCLUDE = ("none", "bias_and_norm")


def _included(p, mode: str) -> bool:
    return mode == "none" or p.dim() > 1


def _ratio(num, den, coefficient, eps):
    """``coefficient num / (den + eps)``, 1 where either norm is 0 (Optax's rule)."""
    safe = (num > 0) & (den > 0)
    return torch.where(safe, coefficient * num / (den + eps), torch.ones_like(num))


class scale_by_lars(Transform):
    """LARS's layer-wise rate: ``u = eta |w| / (|g| + wd |w| + eps) (g + wd w)``.

    Math (You, Gitman & Ginsburg 2017, Algorithm 1): for each layer (parameter tensor)
    the local rate ``lambda = eta |w| / (|g| + beta |w|)`` (``eta`` =
    ``trust_coefficient``, ``beta`` = ``weight_decay``) multiplies ``g + beta w``; 1 when
    ``|w|`` or ``|g|`` is 0. Parameters excluded by ``trust_ratio_exclude`` keep
    ``u = g`` (and no decay when ``weight_decay_exclude`` excludes them too).
    Args: weight_decay=0.0, trust_coefficient=0.001, trust_eps=0.0,
    weight_decay_exclude="bias_and_norm", trust_ratio_exclude="bias_and_norm".

    Example:
        >>> w = torch.full((2, 2), 2.0)                    # |w| = 4, |g| = 2
        >>> tx = scale_by_lars(trust_coefficient=0.5)
        >>> tx.update([torch.ones(2, 2)], [{}], [w], tx.defaults)[0]   # 0.5 * 4 / 2 = 1
        tensor([[1., 1.],
                [1., 1.]])

    Differs from Optax's ``lars``: Optax's ratio is ``eta |w| / |g + beta w|`` (after
    adding the decay); the two agree when ``weight_decay=0``.
    """
    state_names = ()   # no state of its own
    advanced = ('trust_eps', 'trust_ratio_exclude')   # folded under "more" in the playground

    defaults = {"weight_decay": 0.0, "trust_coefficient": 0.001, "trust_eps": 0.0,
                "weight_decay_exclude": "bias_and_norm", "trust_ratio_exclude": "bias_and_norm"}

    def validate(self, hyper):
        check_range("weight_decay", hyper["weight_decay"], ge=0)
        check_range("trust_coefficient", hyper["trust_coefficient"], gt=0)
        check_range("trust_eps", hyper["trust_eps"], ge=0)
        check_choice("weight_decay_exclude", hyper["weight_decay_exclude"], EXCLUDE)
        check_choice("trust_ratio_exclude", hyper["trust_ratio_exclude"], EXCLUDE)

    def update(self, updates, state, params, hyper):
        wd, eta, eps = hyper["weight_decay"], hyper["trust_coefficient"], hyper["trust_eps"]
        out = []
        for u, p in zip(updates, params):
            decay = wd if _included(p, hyper["weight_decay_exclude"]) else 0.0
            if _included(p, hyper["trust_ratio_exclude"]):
                wn, gn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(u)
                rate = _ratio(wn, gn + decay * wn, eta, eps)
                if decay:
                    u.add_(p, alpha=decay)
                u.mul_(rate)
            elif decay:
                u.add_(p, alpha=decay)
            out.append(u)
        return out


class scale_by_trust_ratio(Transform):
    """LAMB's layer-wise ratio on an update ``r``: ``u = phi(|w|) / |r + wd w| (r + wd w)``.

    Math (You et al. 2019, Algorithm 2, ``phi`` the identity): ``r`` is the incoming
    update (Adam's ``m^ / (sqrt(v^) + eps)`` in LAMB), ``wd`` the decoupled decay added
    before the ratio; ratio ``trust_coefficient |w| / (|r + wd w| + trust_eps)``, 1 when
    a norm is 0 or the parameter is excluded. Args: weight_decay=0.0,
    trust_coefficient=1.0, trust_eps=0.0, weight_decay_exclude="bias_and_norm",
    trust_ratio_exclude="bias_and_norm". Same as Optax's
    ``chain(add_decayed_weights(wd), scale_by_trust_ratio())`` with masks.

    Example:
        >>> w = torch.full((2, 2), 2.0)                   # |w| = 4, |r| = 2
        >>> tx = scale_by_trust_ratio()
        >>> tx.update([torch.ones(2, 2)], [{}], [w], tx.defaults)[0]
        tensor([[2., 2.],
                [2., 2.]])
    """
    state_names = ()   # no state of its own
    advanced = ('trust_eps', 'trust_ratio_exclude')   # folded under "more" in the playground

    defaults = {"weight_decay": 0.0, "trust_coefficient": 1.0, "trust_eps": 0.0,
                "weight_decay_exclude": "bias_and_norm", "trust_ratio_exclude": "bias_and_norm"}

    def validate(self, hyper):
        scale_by_lars.validate(self, hyper)

    def update(self, updates, state, params, hyper):
        wd, eta, eps = hyper["weight_decay"], hyper["trust_coefficient"], hyper["trust_eps"]
        for u, p in zip(updates, params):
            if wd and _included(p, hyper["weight_decay_exclude"]):
                u.add_(p, alpha=wd)
            if _included(p, hyper["trust_ratio_exclude"]):
                u.mul_(_ratio(torch.linalg.vector_norm(p), torch.linalg.vector_norm(u), eta, eps))
        return updates


class LARS(Optimizer):
    """LARS: momentum SGD with a layer-wise rate ``eta |w| / (|g| + wd |w|)``.

    Math (You, Gitman & Ginsburg 2017, Algorithm 1), per layer::

        lambda = eta |w| / (|g| + wd |w| + trust_eps)   (1 if |w| or |g| is 0, or excluded)
        v <- m v + lr lambda (g + wd w);   w <- w - v    (textbook momentum: lr inside v)

    ``nesterov=True``: the step is ``m v + lr lambda (g + wd w)`` (reformulated Nesterov).
    Biases and normalization parameters (at most one dimension) get ``v <- m v + lr g``
    unless ``trust_ratio_exclude="none"`` / ``weight_decay_exclude="none"``.

    Args: params or groups; lr=1.0, momentum=0.9, weight_decay=0.0,
    trust_coefficient=0.001, trust_eps=0.0, nesterov=False,
    weight_decay_exclude="bias_and_norm", trust_ratio_exclude="bias_and_norm",
    backend="auto" (the reference path: a layer's norms are not elementwise).
    State: ``velocity``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.full((2, 2), 2.0))
        >>> opt = LARS([w], lr=1.0, momentum=0.0, trust_coefficient=0.5)
        >>> w.grad = torch.ones(2, 2); _ = opt.step()
        >>> w.detach()                                     # step 0.5 * 4 / 2 * g = 1
        tensor([[1., 1.],
                [1., 1.]])

    Differs: Optax's ``lars`` has no exclusion by default (masks), divides by
    ``|g + wd w|`` and puts lr inside the momentum as here; pytorch-optimizer's LARS
    follows the paper. torch has none. Reference: You, Gitman & Ginsburg (2017), Large
    batch training of convolutional networks.
    """

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001,
                 trust_eps=0.0, nesterov=False, *, weight_decay_exclude="bias_and_norm",
                 trust_ratio_exclude="bias_and_norm", backend="auto"):
        check_bool("nesterov", nesterov)
        super().__init__(params, chain(scale_by_lars(), momentum_step()), lr=lr, backend=backend,
                         momentum=momentum, weight_decay=weight_decay,
                         trust_coefficient=trust_coefficient, trust_eps=trust_eps,
                         nesterov=nesterov, momentum_form="textbook",
                         weight_decay_exclude=weight_decay_exclude,
                         trust_ratio_exclude=trust_ratio_exclude)

class LAMB(Optimizer):
    """LAMB: Adam's direction rescaled per layer to ``|w|`` (layer-wise adaptive moments).

    Math (You et al. 2019, Algorithm 2, ``phi`` the identity)::

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g*g
        r = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd w
        w <- w - lr |w| / |r| r          (|w| / |r| -> 1 if a norm is 0, or excluded)

    Args: params or groups; lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
    trust_coefficient=1.0, trust_eps=0.0, weight_decay_exclude="bias_and_norm",
    trust_ratio_exclude="bias_and_norm", eps_root=0.0, backend="auto" (the reference
    path: a layer's norms are not elementwise). State: ``exp_avg``,
    ``exp_avg_sq``, ``step`` (Adam's names).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.full((2, 2), 2.0))
        >>> opt = LAMB([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = torch.ones(2, 2); _ = opt.step()     # r = sign(g); |w| / |r| = 4 / 2
        >>> w.detach()
        tensor([[1.8000, 1.8000],
                [1.8000, 1.8000]])

    Differs: the same as Optax's ``lamb`` (``scale_by_adam``, ``add_decayed_weights``,
    ``scale_by_trust_ratio``) when Optax's masks exclude the same parameters (Optax
    excludes none by default) and ``eps`` agrees (Optax 1e-6 as here); pytorch-optimizer's
    Lamb clamps the ratio by default. torch has none. Reference: You et al. (2019), Large
    batch optimization for deep learning: training BERT in 76 minutes.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 trust_coefficient=1.0, trust_eps=0.0, *, weight_decay_exclude="bias_and_norm",
                 trust_ratio_exclude="bias_and_norm", eps_root=0.0, backend="auto"):
        super().__init__(params, chain(scale_by_adam(), scale_by_trust_ratio(), scale_by_lr()),
                         lr=lr, backend=backend, betas=betas, eps=eps, eps_root=eps_root, weight_decay=weight_decay,
                         trust_coefficient=trust_coefficient, trust_eps=trust_eps,
                         weight_decay_exclude=weight_decay_exclude,
                         trust_ratio_exclude=trust_ratio_exclude)