"""Adaptive learning rates: AdaGrad, RMSProp (centered, momentum, Nesterov), AdaDelta,
Adam (AMSGrad) and AdamW, as preconditioner transforms and torch-compatible classes.

Epsilon: ``eps`` is added outside the square root, ``eps_root`` inside
(denominator sqrt(r + eps_root) + eps). torch uses ``eps`` outside (AdaDelta: inside);
the notes use both (AdaGrad, Adam: delta + sqrt(r); RMSProp Alg. 8.5: sqrt(delta + r)).
"""

from __future__ import annotations

import torch

from descend._validation import check_bool, check_pair, check_range
from descend.optim.core import Optimizer, Transform, check_torch_flags, step_values
from descend.optim.momentum import momentum_step, scale_by_lr, with_extras

__all__ = ["scale_by_adagrad", "scale_by_inverse_time", "scale_by_rms", "scale_by_adadelta",
           "scale_by_adam", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"]


def _zeros(state, updates, key, fill=0.0):
    out = []
    for st, u in zip(state, updates):
        if st.get(key) is None:
            st[key] = torch.full_like(u, fill, memory_format=torch.preserve_format)
        out.append(st[key])
    return out


def _denominator(r, hyper, scale=None):
    """sqrt(r * scale + eps_root) + eps, per tensor (scale: per-tensor floats or None)."""
    eps, eps_root = hyper["eps"], hyper.get("eps_root", 0.0)
    if eps_root:
        d = torch._foreach_mul(r, scale) if scale is not None else torch._foreach_add(r, 0.0)
        torch._foreach_add_(d, eps_root)
        torch._foreach_sqrt_(d)
    else:
        d = torch._foreach_sqrt(r)
        if scale is not None:
            torch._foreach_mul_(d, [s ** 0.5 for s in scale])
    torch._foreach_add_(d, eps)
    return d


class scale_by_adagrad(Transform):
    """AdaGrad preconditioner: divide by the root of the summed squared gradients.

    Math (Algorithm 8.4, note 001): r <- r + g*g;  g <- g / (delta + sqrt(r)).
    Args: eps=1e-10 (delta), initial_accumulator_value=0.0. State: ``sum``.
    Same as torch's Adagrad (delta outside the root). Reference: Duchi et al. (2011).

    Example:
        >>> import torch
        >>> tx = scale_by_adagrad()
        >>> tx.update([torch.tensor([2.0, -0.5])], [{}], [torch.zeros(2)], tx.defaults)
        [tensor([ 1., -1.])]
    """

    defaults = {"eps": 1e-10, "initial_accumulator_value": 0.0}

    def validate(self, hyper):
        check_range("eps", hyper["eps"], ge=0)
        check_range("initial_accumulator_value", hyper["initial_accumulator_value"], ge=0)

    def uses_step(self, hyper):
        return True

    def update(self, updates, state, params, hyper):
        r = _zeros(state, updates, "sum", hyper["initial_accumulator_value"])
        torch._foreach_addcmul_(r, updates, updates, value=1)
        torch._foreach_div_(updates, _denominator(r, hyper))
        return updates


class scale_by_inverse_time(Transform):
    """1/t learning-rate decay inside the optimizer: g <- g / (1 + (t - 1) k).

    Math (note 000): eps_t = eps_0 / (1 + k t), counted from t = 0 at the first step.
    Args: lr_decay=0.0 (k). Same as torch Adagrad's ``lr_decay``.

    Example:
        >>> import torch
        >>> tx = scale_by_inverse_time(lr_decay=0.5)
        >>> tx.update([torch.ones(1)], [{"step": torch.tensor(3.0)}], [torch.zeros(1)], tx.defaults)
        [tensor([0.5000])]
    """

    defaults = {"lr_decay": 0.0}

    def validate(self, hyper):
        check_range("lr_decay", hyper["lr_decay"], ge=0)

    def uses_step(self, hyper):
        return hyper["lr_decay"] > 0

    def update(self, updates, state, params, hyper):
        k = hyper["lr_decay"]
        if k:
            torch._foreach_div_(updates, [1 + (t - 1) * k for t in step_values(state)])
        return updates


class scale_by_rms(Transform):
    """RMSProp preconditioner: divide by the root of a decaying mean of squared gradients.

    Math (Algorithm 8.5, note 001): r <- rho r + (1 - rho) g*g;
    g <- g / (sqrt(r + eps_root) + eps). ``centered=True`` subtracts the squared mean
    gradient: r - s*s with s <- rho s + (1 - rho) g.
    Args: alpha=0.99 (rho, torch's name), eps=1e-8, eps_root=0.0, centered=False.
    State: ``square_avg``, ``grad_avg`` (torch's names).

    Differs: the notes put delta inside the root (eps=0, eps_root=1e-6 reproduces
    Algorithm 8.5); torch puts it outside (the default). Reference: Hinton, Coursera
    lecture 6e (2012); Graves (2013) for the centered form.

    Example:
        >>> import torch
        >>> tx = scale_by_rms(alpha=0.9)   # first step: g / sqrt(0.1 g^2)
        >>> tx.update([torch.tensor([2.0, -0.5])], [{}], [torch.zeros(2)], tx.defaults)
        [tensor([ 3.1623, -3.1623])]
    """

    defaults = {"alpha": 0.99, "eps": 1e-8, "eps_root": 0.0, "centered": False}

    def validate(self, hyper):
        check_range("alpha", hyper["alpha"], ge=0, le=1)
        check_range("eps", hyper["eps"], ge=0)
        check_range("eps_root", hyper["eps_root"], ge=0)
        check_bool("centered", hyper["centered"])

    def uses_step(self, hyper):
        return True

    def update(self, updates, state, params, hyper):
        a = hyper["alpha"]
        r = _zeros(state, updates, "square_avg")
        torch._foreach_mul_(r, a)
        torch._foreach_addcmul_(r, updates, updates, value=1 - a)
        if hyper["centered"]:
            s = _zeros(state, updates, "grad_avg")
            torch._foreach_lerp_(s, updates, 1 - a)
            r = torch._foreach_addcmul(r, s, s, value=-1)
        torch._foreach_div_(updates, _denominator(r, hyper))
        return updates


class scale_by_adadelta(Transform):
    """AdaDelta preconditioner: ratio of RMS of past steps to RMS of gradients.

    Math (Zeiler 2012; named in notes 003/004): r <- rho r + (1 - rho) g*g;
    d = sqrt(a + eps) / sqrt(r + eps) * g;  a <- rho a + (1 - rho) d*d;  g <- d.
    Args: rho=0.9, eps=1e-6. State: ``square_avg``, ``acc_delta`` (torch's names).
    Same as torch's Adadelta (the step is then scaled by lr, 1.0 by default).

    Example:
        >>> import torch
        >>> tx = scale_by_adadelta()       # first step: sqrt(eps) / sqrt(0.1 g^2 + eps) g
        >>> tx.update([torch.tensor([2.0, -0.5])], [{}], [torch.zeros(2)], tx.defaults)
        [tensor([ 0.0032, -0.0032])]
    """

    defaults = {"rho": 0.9, "eps": 1e-6}

    def validate(self, hyper):
        check_range("rho", hyper["rho"], ge=0, le=1)
        check_range("eps", hyper["eps"], ge=0)

    def uses_step(self, hyper):
        return True

    def update(self, updates, state, params, hyper):
        rho, eps = hyper["rho"], hyper["eps"]
        r = _zeros(state, updates, "square_avg")
        acc = _zeros(state, updates, "acc_delta")
        torch._foreach_mul_(r, rho)
        torch._foreach_addcmul_(r, updates, updates, value=1 - rho)
        std = torch._foreach_add(r, eps)
        torch._foreach_sqrt_(std)
        delta = torch._foreach_add(acc, eps)
        torch._foreach_sqrt_(delta)
        torch._foreach_div_(delta, std)
        torch._foreach_mul_(delta, updates)
        torch._foreach_mul_(acc, rho)
        torch._foreach_addcmul_(acc, delta, delta, value=1 - rho)
        return list(delta)


class scale_by_adam(Transform):
    """Adam preconditioner: bias-corrected first moment over root of second moment.

    Math (Algorithm 8.7, note 001): s <- rho1 s + (1 - rho1) g;
    r <- rho2 r + (1 - rho2) g*g;  s^ = s / (1 - rho1^t);  r^ = r / (1 - rho2^t);
    g <- s^ / (sqrt(r^ + eps_root) + eps).  ``amsgrad=True`` uses the running maximum
    of r instead of r.  Args: betas=(0.9, 0.999) (rho1, rho2), eps=1e-8 (delta),
    eps_root=0.0, amsgrad=False.  State: ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``, ``step`` (torch's names).  Same as torch when eps_root=0.

    Reference: Kingma & Ba (2015); Reddi, Kale, Kumar (2018) for AMSGrad.

    Example:
        >>> import torch
        >>> tx = scale_by_adam()           # the first bias-corrected step is sign(g)
        >>> tx.update([torch.tensor([2.0, -0.5])], [{"step": torch.tensor(1.0)}], [torch.zeros(2)], tx.defaults)
        [tensor([ 1., -1.])]
    """

    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "eps_root": 0.0, "amsgrad": False}

    def validate(self, hyper):
        check_pair("betas", hyper["betas"])
        check_range("eps", hyper["eps"], ge=0)
        check_range("eps_root", hyper["eps_root"], ge=0)
        check_bool("amsgrad", hyper["amsgrad"])

    def uses_step(self, hyper):
        return True

    def update(self, updates, state, params, hyper):
        b1, b2 = (float(b) for b in hyper["betas"])
        s = _zeros(state, updates, "exp_avg")
        r = _zeros(state, updates, "exp_avg_sq")
        torch._foreach_lerp_(s, updates, 1 - b1)
        torch._foreach_mul_(r, b2)
        torch._foreach_addcmul_(r, updates, updates, value=1 - b2)
        if hyper["amsgrad"]:
            rmax = _zeros(state, updates, "max_exp_avg_sq")
            torch._foreach_maximum_(rmax, r)
            r = rmax
        t = step_values(state)
        bc1 = [1 - b1 ** k for k in t]
        denom = _denominator(r, hyper, [1 / (1 - b2 ** k) for k in t])
        torch._foreach_copy_(updates, s)
        torch._foreach_div_(updates, bc1)
        torch._foreach_div_(updates, denom)
        return updates


class Adagrad(Optimizer):
    """AdaGrad (torch's API): per-coordinate steps shrinking with the summed squared gradient.

    Math (Algorithm 8.4, note 001): r <- r + g*g; w <- w - lr_t g / (delta + sqrt(r)),
    lr_t = lr / (1 + (t - 1) lr_decay).
    Args: params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, foreach=None; maximize=False, differentiable=False, fused=None, and the
    keywords of :func:`descend.optim.momentum.with_extras`.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = Adagrad([w], lr=0.5)
        >>> (w ** 2).sum().backward(); _ = opt.step()
        >>> round(float(w.detach()), 4)
        0.5

    Differs from torch: state is created at the first step, not in the constructor.
    Differs from the notes: the default ``eps`` (the notes' delta) is torch's 1e-10, not the
    "perhaps 10^-7" of Algorithm 8.4; pass ``eps=1e-7`` for the notes' value (it matters
    only while sqrt(r) is tiny: the first steps, or coordinates with near-zero gradients).
    Reference: Duchi, Hazan, Singer (2011).
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None, **extras):
        check_torch_flags(foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(
            params, with_extras(scale_by_adagrad(), scale_by_inverse_time(), scale_by_lr()),
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize,
            **extras)


class RMSprop(Optimizer):
    """RMSProp (torch's API), plus Nesterov momentum (Algorithm 8.6) and eps_root.

    Math (Algorithms 8.5/8.6, note 001): r <- alpha r + (1 - alpha) g*g;
    u = g / (sqrt(r + eps_root) + eps); then momentum on u as in
    :class:`~descend.optim.momentum.momentum_step` (torch form b <- m b + u,
    w -= lr b; or ``momentum_form="textbook"``: v <- m v - lr u, w += v).
    ``nesterov=True`` is Algorithm 8.6: reformulated by default, or with the gradient
    at w + m v when ``lookahead=True`` (needs ``step(closure)``).
    Args: params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
    centered=False, capturable=False, foreach=None, maximize=False,
    differentiable=False; nesterov=False, lookahead=False, momentum_form="torch",
    eps_root=0.0, and the keywords of ``with_extras``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = RMSprop([w], lr=0.01, momentum=0.9, nesterov=True)
        >>> (w ** 2).sum().backward(); _ = opt.step(); float(w.detach()) < 1
        True

    Differs from the notes: Algorithm 8.5 puts delta inside the root,
    ``-lr g / sqrt(delta + r)`` with delta "usually 10^-6"; the defaults here are torch's,
    ``eps=1e-8`` outside the root (``sqrt(r) + eps``). For Algorithm 8.5 as printed pass
    ``eps=0, eps_root=1e-6``. Algorithm 8.6 has no delta (sqrt(r)); set eps=0 and a small
    eps_root to follow it without dividing 0 by 0.
    Reference: Hinton (2012), Coursera lecture 6e; Goodfellow et al. (2016), Alg. 8.5, 8.6.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, nesterov=False, lookahead=False,
                 momentum_form="torch", eps_root=0.0, **extras):
        check_torch_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
        super().__init__(
            params, with_extras(scale_by_rms(), momentum_step()),
            lr=lr, alpha=alpha, eps=eps, eps_root=eps_root, weight_decay=weight_decay,
            momentum=momentum, centered=centered, maximize=maximize, nesterov=nesterov,
            lookahead=lookahead, momentum_form=momentum_form, **extras)


class Adadelta(Optimizer):
    """AdaDelta (torch's API): steps scaled by RMS of past steps over RMS of gradients.

    Math: see :class:`scale_by_adadelta`; w <- w - lr d.
    Args: params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None;
    capturable=False, maximize=False, differentiable=False, and ``with_extras``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = Adadelta([w])
        >>> (w ** 2).sum().backward(); _ = opt.step(); float(w.detach()) < 1
        True

    Reference: Zeiler (2012), ADADELTA: an adaptive learning rate method.
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False, **extras):
        check_torch_flags(foreach=foreach, capturable=capturable, differentiable=differentiable)
        super().__init__(params, with_extras(scale_by_adadelta(), scale_by_lr()), lr=lr,
                         rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                         **extras)


class Adam(Optimizer):
    """Adam (torch's API): RMSProp with bias-corrected momentum.

    Math (Algorithm 8.7, note 001): w <- w - lr s^ / (sqrt(r^ + eps_root) + eps),
    see :class:`scale_by_adam`; coupled L2 ``weight_decay`` by default, decoupled
    (AdamW) with ``decoupled_weight_decay=True``.
    Args: params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False;
    foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
    decoupled_weight_decay=False, eps_root=0.0, and ``with_extras``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = Adam([w], lr=0.1)
        >>> (w ** 2).sum().backward(); _ = opt.step()
        >>> round(float(w.detach()), 4)   # the first Adam step has size lr
        0.9

    Reference: Kingma & Ba (2015), Adam: a method for stochastic optimization.
    """

    _decoupled_default = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=None, eps_root=0.0,
                 **extras):
        check_torch_flags(foreach=foreach, capturable=capturable,
                          differentiable=differentiable, fused=fused)
        if decoupled_weight_decay is None:
            decoupled_weight_decay = self._decoupled_default
        super().__init__(params, with_extras(scale_by_adam(), scale_by_lr()), lr=lr,
                         betas=betas, eps=eps, eps_root=eps_root, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize,
                         decoupled_weight_decay=decoupled_weight_decay, **extras)


class AdamW(Adam):
    """AdamW (torch's API): Adam with decoupled weight decay.

    Math: w <- w - lr wd w - lr s^ / (sqrt(r^) + eps) (Loshchilov & Hutter, 2019).
    Args: as :class:`Adam`, with weight_decay=1e-2 and decoupled_weight_decay=True.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
        >>> (w ** 2).sum().backward(); _ = opt.step()
        >>> round(float(w.detach()), 4)   # 1 - 0.1 * 0.5 * 1 - 0.1
        0.85
    """

    _decoupled_default = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, **kwargs):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, **kwargs)
