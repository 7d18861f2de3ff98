"""Gradient descent and momentum: the learning-rate step, momentum in both textbook
formulations, Nesterov (reformulated, and evaluated at the look-ahead point), and the
``SGD`` optimizer with torch's signature.
"""

from __future__ import annotations

import torch

from descend._validation import check_bool, check_choice, check_range, fail
from descend.optim.core import Chain, Transform
from descend.optim.optimizer import Optimizer, check_torch_flags
from descend.optim.elementwise import where
from descend.optim.decay import add_decoupled_weight_decay, add_l1, add_weight_decay, prox_l1
from descend.optim.gradient import add_noise, clip_by_global_norm, clip_by_value, flip_sign

__all__ = ["scale_by_lr", "momentum_step", "with_extras", "SGD"]


class scale_by_lr(Transform):
    """The gradient step: multiply the update by ``-lr``.

    Math (notes 000/001): theta <- theta - eps * g.  Args: lr=1e-3.

    Example:
        >>> import torch
        >>> scale_by_lr(lr=0.1).update([torch.ones(2)], [{}], [torch.zeros(2)], {"lr": 0.1})
        [tensor([-0.1000, -0.1000])]
    """

    defaults = {"lr": 1e-3}
    state_names = ()

    def validate(self, hyper):
        check_range("lr", hyper["lr"], ge=0)

    def math(self, u, w, s, h):
        return u * -h["lr"]

    def torch_args(self, hyper):
        return (4, {"lr": hyper["lr"]})


_FORMS = ("torch", "textbook")


class momentum_step(Transform):
    """Momentum (either formulation) and the learning-rate step, in one stage.

    Math, ``momentum_form="torch"`` (note 002: v = b v + g; w -= lr v)::

        b <- m b + (1 - dampening) g      (b = g at the first step)
        step = -lr (g + m b)  if nesterov else  -lr b

    ``momentum_form="textbook"`` (notes 000/001: v = a v - lr g; w += v)::

        v <- m v - lr g
        step = m v - lr g     if nesterov else  v

    The two forms give the same trajectory at constant lr (v = -lr b); they differ
    when lr changes: the textbook velocity keeps the old learning rates inside it.
    With ``lookahead=True`` (and ``nesterov=True``) the gradient is evaluated at the
    look-ahead point w + m v (w - lr m b in the torch form) by ``step(closure)``, as in
    Algorithm 3 of note 001 and Sutskever et al. (2013); the update is then plain
    momentum. The reformulated Nesterov step stores w + m v instead of w and needs no
    closure; both give the same sequence of look-ahead points.

    Where the notes' printed Nesterov forms differ from what is implemented (the
    implemented look-ahead is Sutskever et al.'s and Goodfellow et al.'s Algorithm 8.3,
    ``w + m v`` with the textbook ``v``):

    * note 000 prints the interim point as ``theta + v`` (no ``alpha``); Algorithm 8.3 and
      Sutskever et al. use ``theta + alpha v``, which is what ``lookahead=True`` evaluates;
    * note 002 prints ``w^ = w + beta v; v = beta v + dL/dw^; w = w - alpha v``: with that
      ``v`` (accumulated gradients, torch's form) the step is ``-alpha v``, so the point
      ahead along the step is ``w - alpha beta v``; ``w + beta v`` looks backwards;
    * note 003 prints ``D_{t+1} = a grad L(theta_t + g D_t) + g D_t``: if ``theta`` moves by
      ``-D`` the same sign slip applies (the look-ahead is ``theta_t - g D_t``), if it moves
      by ``+D`` the gradient term needs a minus sign. Read literally, neither is NAG.

    Args: lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
    momentum_form="torch", lookahead=False. State: ``momentum_buffer`` (torch form,
    torch's name) or ``velocity`` (textbook form).

    Example:
        >>> import torch
        >>> tx = momentum_step(lr=0.1, momentum=0.9, momentum_form="textbook")
        >>> st = [{}]
        >>> tx.update([torch.ones(1)], st, [torch.zeros(1)], tx.defaults)
        [tensor([-0.1000])]
        >>> tx.update([torch.ones(1)], st, [torch.zeros(1)], tx.defaults)
        [tensor([-0.1900])]

    Reference: Polyak (1964); Sutskever, Martens, Dahl, Hinton (2013), On the
    importance of initialization and momentum in deep learning.
    """

    defaults = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
                "momentum_form": "torch", "lookahead": False}
    advanced = ("dampening", "momentum_form", "lookahead")
    state_names = ("momentum_buffer", "velocity")

    def validate(self, hyper):
        check_range("lr", hyper["lr"], ge=0)
        check_range("momentum", hyper["momentum"], ge=0, le=1)
        check_range("dampening", hyper["dampening"], ge=0, le=1)
        check_bool("nesterov", hyper["nesterov"])
        check_choice("momentum_form", hyper["momentum_form"], _FORMS)
        check_bool("lookahead", hyper["lookahead"])
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            fail("nesterov", f"False when momentum <= 0 or dampening != 0 (momentum="
                 f"{hyper['momentum']}, dampening={hyper['dampening']})", hyper["nesterov"])
        if hyper["lookahead"] and not hyper["nesterov"]:
            fail("lookahead", "False unless nesterov=True", hyper["lookahead"])

    def math(self, u, w, s, h):
        lr, m = h["lr"], h["momentum"]
        nesterov = h["nesterov"] and not h["lookahead"]
        if not m:
            return u * -lr
        if h["momentum_form"] == "torch":
            # b = u at the first step (no dampening), as torch
            b = where(s.fresh("momentum_buffer"), u,
                      m * s.momentum_buffer + (1 - h["dampening"]) * u)
            s.momentum_buffer = b
            return (u + m * b if nesterov else b) * -lr
        s.velocity = m * s.velocity + -lr * u
        return -lr * u + m * s.velocity if nesterov else s.velocity

    def torch_args(self, hyper):
        m = hyper["momentum"]
        args = {"lr": hyper["lr"]}
        if m and hyper["momentum_form"] != "torch":
            args["lacks"] = "momentum_form"
        elif hyper["lookahead"]:
            args["lacks"] = "lookahead"
        if m:
            args["momentum"] = m
            if hyper["dampening"]:
                args["dampening"] = hyper["dampening"]
            if hyper["nesterov"]:
                args["nesterov"] = True
        return (4, args)

    def lookahead_shift(self, state, params, hyper):
        if not (hyper["nesterov"] and hyper["lookahead"]):
            return None
        m = hyper["momentum"]
        if hyper["momentum_form"] == "torch":
            return [st["momentum_buffer"] * (-hyper["lr"] * m) if "momentum_buffer" in st
                    else torch.zeros_like(p) for st, p in zip(state, params)]
        return [st["velocity"] * m if "velocity" in st else torch.zeros_like(p)
                for st, p in zip(state, params)]


def with_extras(*core: Transform) -> Chain:
    """The chain every named optimizer uses: gradient transforms, ``core``, step terms.

    Order: maximize sign flip, clip by value, clip by global norm, annealed noise,
    coupled L2, L1 subgradient, then ``core`` (preconditioner and lr step), then
    decoupled weight decay and the proximal L1 step. Off by default, each is enabled
    by its keyword: clip_value, clip_norm (clip_norm_type), grad_noise
    (grad_noise_gamma), weight_decay (decoupled_weight_decay, weight_decay_exclude),
    l1 (l1_mode).

    >>> from descend.optim import scale_by_lr
    >>> tx = with_extras(scale_by_lr())
    >>> len(tx.transforms), type(tx.transforms[6]).__name__, tx.defaults["clip_norm"]   # extras off
    (9, 'scale_by_lr', None)
    >>> w = torch.zeros(2); hyper = {**tx.defaults, "lr": 0.1, "clip_norm": 1.0}
    >>> tx.update([torch.tensor([3.0, 4.0])], tx.init([w]), [w], hyper)   # clipped to norm 1, times -lr
    [tensor([-0.0600, -0.0800])]
    """
    return Chain(flip_sign(), clip_by_value(), clip_by_global_norm(), add_noise(),
                 add_weight_decay(), add_l1(), *core, add_decoupled_weight_decay(), prox_l1())


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov and weight decay (torch's API).

    Math (notes 000/001, torch form): b <- m b + (1 - d) (g + wd w);
    w <- w - lr (g + m b) with nesterov, else w <- w - lr b; plain SGD when m = 0
    (w <- w - lr g: batch, stochastic or minibatch GD depending on the batch).

    Args:
        params: parameters or groups.  lr=1e-3, momentum=0, dampening=0,
        weight_decay=0, nesterov=False: as torch.  maximize=False; foreach=None and
        fused=None choose the backend as in torch (fused=True: torch's fused kernel,
        foreach=True its multi-tensor kernels, foreach=False the reference path; see
        :func:`~descend.optim.optimizer.flags_backend`); differentiable=False (the only
        value supported); backend="auto" (or one of ``BACKENDS``).
        momentum_form="torch" | "textbook" (v = m v - lr g; w += v), lookahead=False
        (gradient at w + m v via ``step(closure)``), decoupled_weight_decay=False,
        and the cross-cutting keywords of :func:`with_extras`.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = SGD([w], lr=0.1, momentum=0.9, nesterov=True)
        >>> (w ** 2).sum().backward(); _ = opt.step()
        >>> round(float(w.detach()), 4)   # 1 - 0.1 * (2 + 0.9 * 2)
        0.62

    Differs from torch: the extra keywords; ``momentum`` must be in [0, 1].
    Reference: Robbins & Monro (1951); Polyak (1964); Nesterov (1983).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, momentum_form="torch", lookahead=False, **extras):
        backend = check_torch_flags(foreach=foreach, differentiable=differentiable, fused=fused,
                                    backend=extras.pop("backend", "auto"))
        super().__init__(params, with_extras(momentum_step()), backend=backend,
                         _fused=bool(fused), lr=lr, momentum=momentum,
                         dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                         maximize=maximize, momentum_form=momentum_form, lookahead=lookahead,
                         **extras)
