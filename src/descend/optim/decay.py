"""Weight decay and L1: coupled L2 (a gradient term), decoupled weight decay (a term on
the step), L1 by subgradient and by the proximal soft-threshold step.

``weight_decay_exclude="bias_and_norm"`` leaves every parameter with at most one
dimension (biases, normalization scales and shifts) undecayed; for finer control give
those parameters their own group with ``weight_decay=0`` (:func:`decay_groups`).
"""

from __future__ import annotations

import torch
from torch import nn

from descend._validation import check_bool, check_choice, check_range
from descend.optim.core import Transform

__all__ = ["add_weight_decay", "add_decoupled_weight_decay", "add_l1", "prox_l1", "decay_groups"]

_EXCLUDE = ("none", "bias_and_norm")


def _decayed(params, hyper):
    if hyper.get("weight_decay_exclude", "none") == "bias_and_norm":
        return [i for i, p in enumerate(params) if p.dim() > 1]
    return list(range(len(params)))


class add_weight_decay(Transform):
    """Coupled L2 penalty (weight decay as in the notes): add ``weight_decay * w`` to g.

    Math (note 001): J~(w) = J(w) + (a/2) ||w||^2, so g <- g + a w; with plain SGD
    w <- (1 - e a) w - e g.  Args: weight_decay=0.0, decoupled_weight_decay=False
    (when True this transform is off and :class:`add_decoupled_weight_decay` acts),
    weight_decay_exclude="none" (or "bias_and_norm").
    Same as torch's ``weight_decay`` in SGD / Adam / RMSprop / Adagrad / Adadelta.

    Example:
        >>> import torch
        >>> tx = add_weight_decay(weight_decay=0.1)
        >>> tx.update([torch.zeros(2)], [{}], [torch.tensor([1.0, 2.0])], tx.defaults)
        [tensor([0.1000, 0.2000])]
    """

    defaults = {"weight_decay": 0.0, "decoupled_weight_decay": False, "weight_decay_exclude": "none"}
    state_names = ()

    def validate(self, hyper):
        check_range("weight_decay", hyper["weight_decay"], ge=0)
        check_bool("decoupled_weight_decay", hyper["decoupled_weight_decay"])
        check_choice("weight_decay_exclude", hyper["weight_decay_exclude"], _EXCLUDE)

    def update(self, updates, state, params, hyper):
        wd = hyper["weight_decay"]
        if wd == 0 or hyper["decoupled_weight_decay"]:
            return updates
        idx = _decayed(params, hyper)
        if idx:
            torch._foreach_add_([updates[i] for i in idx], [params[i] for i in idx], alpha=wd)
        return updates


class add_decoupled_weight_decay(Transform):
    """Decoupled weight decay (AdamW): shrink the weights apart from the gradient step.

    Math: w <- w - lr * wd * w + step  (the decay is not rescaled by the preconditioner).
    Args: weight_decay, decoupled_weight_decay (acts only when True),
    weight_decay_exclude — shared with :class:`add_weight_decay`; lr read from the group.
    Same as torch's ``AdamW`` / ``Adam(decoupled_weight_decay=True)``.

    Reference: Loshchilov & Hutter (2019), Decoupled weight decay regularization.

    Example:
        >>> import torch
        >>> tx = add_decoupled_weight_decay(weight_decay=0.1, decoupled_weight_decay=True)
        >>> tx.update([torch.zeros(2)], [{}], [torch.tensor([2.0, -3.0])], {**tx.defaults, "lr": 0.5})
        [tensor([-0.1000,  0.1500])]
    """

    defaults = {"weight_decay": 0.0, "decoupled_weight_decay": False, "weight_decay_exclude": "none"}
    state_names = ()

    def validate(self, hyper):
        add_weight_decay.validate(self, hyper)

    def update(self, updates, state, params, hyper):
        wd = hyper["weight_decay"]
        if wd == 0 or not hyper["decoupled_weight_decay"]:
            return updates
        idx = _decayed(params, hyper)
        if idx:
            torch._foreach_add_([updates[i] for i in idx], [params[i] for i in idx],
                                alpha=-hyper["lr"] * wd)
        return updates


_L1_MODES = ("subgradient", "proximal")


class add_l1(Transform):
    """L1 penalty by subgradient: add ``l1 * sign(w)`` to the gradient.

    Math (note 001): J~(w) = J(w) + a ||w||_1,  g <- g + a sign(w).
    Args: l1=0.0, l1_mode="subgradient" (this transform acts) or "proximal"
    (then :class:`prox_l1` acts). Weights oscillate around 0 rather than reach it;
    use the proximal mode for exact zeros.

    Example:
        >>> import torch
        >>> tx = add_l1(l1=0.1)
        >>> tx.update([torch.zeros(2)], [{}], [torch.tensor([2.0, -3.0])], tx.defaults)
        [tensor([ 0.1000, -0.1000])]
    """

    defaults = {"l1": 0.0, "l1_mode": "subgradient", "weight_decay_exclude": "none"}
    state_names = ()

    def validate(self, hyper):
        check_range("l1", hyper["l1"], ge=0)
        check_choice("l1_mode", hyper["l1_mode"], _L1_MODES)

    def update(self, updates, state, params, hyper):
        a = hyper["l1"]
        if a == 0 or hyper["l1_mode"] != "subgradient":
            return updates
        idx = _decayed(params, hyper)
        if idx:
            signs = torch._foreach_sign([params[i] for i in idx])
            torch._foreach_add_([updates[i] for i in idx], signs, alpha=a)
        return updates


class prox_l1(Transform):
    """L1 penalty by the proximal step: soft-threshold the weights after the step.

    Math: w+ = w + step;  w <- sign(w+) max(|w+| - lr * a, 0)  — the exact minimiser
    of a ||w||_1 + ||w - w+||^2 / (2 lr), which sets small weights exactly to 0
    (note 001: w_i = sign(w*_i) max(|w*_i| - a / H_ii, 0)).
    Args: l1, l1_mode (acts only when "proximal"); lr read from the group.

    Differs from the exact proximal method for adaptive optimizers: the threshold is
    lr * a for every coordinate, not scaled by the per-coordinate step size.

    Example:
        >>> import torch
        >>> tx = prox_l1(l1=1.0, l1_mode="proximal")
        >>> w = torch.tensor([0.05, 2.0]); u = torch.zeros(2)
        >>> (u,) = tx.update([u], [{}], [w], {**tx.defaults, "lr": 0.1})
        >>> w + u
        tensor([0.0000, 1.9000])
    """

    defaults = {"l1": 0.0, "l1_mode": "subgradient", "weight_decay_exclude": "none"}
    state_names = ()

    def validate(self, hyper):
        add_l1.validate(self, hyper)

    def update(self, updates, state, params, hyper):
        a = hyper["l1"]
        if a == 0 or hyper["l1_mode"] != "proximal":
            return updates
        thr = hyper["lr"] * a
        for i in _decayed(params, hyper):
            w = params[i] + updates[i]
            shrunk = torch.sign(w) * torch.clamp(w.abs() - thr, min=0)
            # updates = shrunk - w_old, so w_old + updates is exactly 0 where shrunk is 0
            updates[i] = shrunk - params[i]
        return updates


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def decay_groups(model: nn.Module, weight_decay: float, **group_kwargs) -> list[dict]:
    """Two parameter groups: decayed weights, and biases + normalization parameters.

    The second group has ``weight_decay=0``; every other keyword is given to both.

    Example:
        >>> import torch
        >>> from descend.optim import SGD
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        >>> groups = decay_groups(model, 1e-4)
        >>> [len(g["params"]) for g in groups]
        [1, 3]
        >>> opt = SGD(groups, lr=0.1)
    """
    check_range("weight_decay", weight_decay, ge=0)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if isinstance(module, _NORMS) or name.endswith("bias") or p.dim() <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, **group_kwargs},
        {"params": no_decay, "weight_decay": 0.0, **group_kwargs},
    ]
