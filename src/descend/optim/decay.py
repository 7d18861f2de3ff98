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
from descend.optim.elementwise import maximum, per_tensor, sign, where

__all__ = ["add_weight_decay", "add_decoupled_weight_decay", "add_l1", "prox_l1", "decay_groups"]


_EXCLUDE = ("none", "bias_and_norm")
_L1_MODES = ("subgradient", "proximal")


def _has_two_dims(p) -> bool:
    return p.dim() > 1


def _only_decayed(decayed, u, h):
    """``decayed`` for the parameters that ``weight_decay_exclude`` leaves decayed, else ``u``."""
    if h["weight_decay_exclude"] == "bias_and_norm":
        return where(per_tensor("two_dims", _has_two_dims), decayed, u)
    return decayed


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
    advanced = ("decoupled_weight_decay", "weight_decay_exclude")
    state_names = ()

    def validate(self, hyper):
        check_range("weight_decay", hyper["weight_decay"], ge=0)
        check_bool("decoupled_weight_decay", hyper["decoupled_weight_decay"])
        check_choice("weight_decay_exclude", hyper["weight_decay_exclude"], _EXCLUDE)

    def math(self, u, w, s, h):
        wd = h["weight_decay"]
        if not wd or h["decoupled_weight_decay"]:
            return u
        return _only_decayed(u + wd * w, u, h)

    def torch_args(self, hyper):
        if not hyper["weight_decay"] or hyper["decoupled_weight_decay"]:
            return None
        if hyper["weight_decay_exclude"] != "none":
            return "weight_decay_exclude"
        return (1, {"weight_decay": hyper["weight_decay"]})


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
    advanced = ("decoupled_weight_decay", "weight_decay_exclude")
    state_names = ()

    def validate(self, hyper):
        add_weight_decay.validate(self, hyper)

    def math(self, u, w, s, h):
        wd = h["weight_decay"]
        if not wd or not h["decoupled_weight_decay"]:
            return u
        return _only_decayed(u - (h["lr"] * wd) * w, u, h)

    def torch_args(self, hyper):
        if not hyper["weight_decay"] or not hyper["decoupled_weight_decay"]:
            return None
        if hyper["weight_decay_exclude"] != "none":
            return "weight_decay_exclude"
        return (5, {"weight_decay": hyper["weight_decay"], "decoupled_weight_decay": True})


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
    advanced = ("l1", "l1_mode", "weight_decay_exclude")
    state_names = ()

    def validate(self, hyper):
        check_range("l1", hyper["l1"], ge=0)
        check_choice("l1_mode", hyper["l1_mode"], _L1_MODES)

    def math(self, u, w, s, h):
        a = h["l1"]
        if not a or h["l1_mode"] != "subgradient":
            return u
        return _only_decayed(u + a * sign(w), u, h)

    def torch_args(self, hyper):
        return "l1" if hyper["l1"] and hyper["l1_mode"] == "subgradient" else None


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
    advanced = ("l1", "l1_mode", "weight_decay_exclude")
    state_names = ()

    def validate(self, hyper):
        add_l1.validate(self, hyper)

    def math(self, u, w, s, h):
        a = h["l1"]
        if not a or h["l1_mode"] != "proximal":
            return u
        x = w + u
        shrunk = sign(x) * maximum(abs(x) - h["lr"] * a, 0.0)
        # the update is shrunk - w, so w + update is exactly 0 where shrunk is 0
        return _only_decayed(shrunk - w, u, h)

    def torch_args(self, hyper):
        return "l1" if hyper["l1"] and hyper["l1_mode"] == "proximal" else None


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
