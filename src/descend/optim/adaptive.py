"""Adaptive learning rates: AdaGrad, RMSProp (centered, momentum, Nesterov), AdaDelta,
Adam (AMSGrad) and AdamW, as preconditioner transforms and torch-compatible classes.

Epsilon: ``eps`` is added outside the square root, ``eps_root`` inside
(denominator sqrt(r + eps_root) + eps). torch uses ``eps`` outside (AdaDelta: inside);
the notes use both (AdaGrad, Adam: delta + sqrt(r); RMSProp Alg. 8.5: sqrt(delta + r)).
"""

from __future__ import annotations

from descend._validation import check_bool, check_pair, check_range
from descend.optim.core import Transform
from descend.optim.optimizer import Optimizer, check_torch_flags
from descend.optim.elementwise import maximum, sqrt
from descend.optim.momentum import momentum_step, scale_by_lr, with_extras

__all__ = ["scale_by_adagrad", "scale_by_inverse_time", "scale_by_rms", "scale_by_adadelta",
           "scale_by_adam", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"]


def _denominator(r, h, scale=None):
    """sqrt(r * scale + eps_root) + eps (scale: a scalar or None)."""
    eps_root = h["eps_root"] if "eps_root" in h else 0.0
    if eps_root:
        d = sqrt((r * scale if scale is not None else r) + eps_root)
    else:
        d = sqrt(r)
        if scale is not None:
            d = d * sqrt(scale)
    return d + h["eps"]


def _torch(algorithm, hyper, **args):
    """A preconditioner's answer to ``torch_args``: torch's ``algorithm`` with ``args``,
    or that algorithm lacking ``eps_root`` when it is on."""
    out = {"algorithm": algorithm, **args}
    if hyper.get("eps_root", 0.0):
        out["lacks"] = "eps_root"
    return (2, out)


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
    advanced = ("initial_accumulator_value",)
    state_names = ("sum",)
    fills = {"sum": "initial_accumulator_value"}

    def validate(self, hyper):
        check_range("eps", hyper["eps"], ge=0)
        check_range("initial_accumulator_value", hyper["initial_accumulator_value"], ge=0)

    def uses_step(self, hyper):
        return True

    def math(self, u, w, s, h):
        s.sum = s.sum + u * u
        return u / _denominator(s.sum, h)

    def torch_args(self, hyper):
        return _torch("adagrad", hyper, eps=hyper["eps"],
                      initial_accumulator_value=hyper["initial_accumulator_value"])


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
    advanced = ("lr_decay",)
    state_names = ()

    def validate(self, hyper):
        check_range("lr_decay", hyper["lr_decay"], ge=0)

    def uses_step(self, hyper):
        return hyper["lr_decay"] > 0

    def math(self, u, w, s, h):
        k = h["lr_decay"]
        return u / (1 + (s.step - 1) * k) if k else u

    def torch_args(self, hyper):
        return (3, {"lr_decay": hyper["lr_decay"]}) if hyper["lr_decay"] else None


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
    advanced = ("eps_root",)
    state_names = ("square_avg", "grad_avg")

    def validate(self, hyper):
        check_range("alpha", hyper["alpha"], ge=0, le=1)
        check_range("eps", hyper["eps"], ge=0)
        check_range("eps_root", hyper["eps_root"], ge=0)
        check_bool("centered", hyper["centered"])

    def uses_step(self, hyper):
        return True

    def math(self, u, w, s, h):
        a = h["alpha"]
        s.square_avg = a * s.square_avg + (1 - a) * u * u
        r = s.square_avg
        if h["centered"]:
            s.grad_avg = s.grad_avg + (1 - a) * (u - s.grad_avg)
            r = r - s.grad_avg * s.grad_avg
        return u / _denominator(r, h)

    def torch_args(self, hyper):
        return _torch("rmsprop", hyper, alpha=hyper["alpha"], eps=hyper["eps"],
                      centered=hyper["centered"])


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
    state_names = ("square_avg", "acc_delta")

    def validate(self, hyper):
        check_range("rho", hyper["rho"], ge=0, le=1)
        check_range("eps", hyper["eps"], ge=0)

    def uses_step(self, hyper):
        return True

    def math(self, u, w, s, h):
        rho, eps = h["rho"], h["eps"]
        s.square_avg = rho * s.square_avg + (1 - rho) * u * u
        delta = sqrt(s.acc_delta + eps) / sqrt(s.square_avg + eps) * u
        s.acc_delta = rho * s.acc_delta + (1 - rho) * delta * delta
        return delta

    def torch_args(self, hyper):
        return _torch("adadelta", hyper, rho=hyper["rho"], eps=hyper["eps"])


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
    advanced = ("eps_root",)
    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def validate(self, hyper):
        check_pair("betas", hyper["betas"])
        check_range("eps", hyper["eps"], ge=0)
        check_range("eps_root", hyper["eps_root"], ge=0)
        check_bool("amsgrad", hyper["amsgrad"])

    def uses_step(self, hyper):
        return True

    def math(self, u, w, s, h):
        b1, b2 = h["betas"]
        s.exp_avg = s.exp_avg + (1 - b1) * (u - s.exp_avg)
        s.exp_avg_sq = b2 * s.exp_avg_sq + (1 - b2) * u * u
        r = s.exp_avg_sq
        if h["amsgrad"]:
            s.max_exp_avg_sq = maximum(s.max_exp_avg_sq, r)
            r = s.max_exp_avg_sq
        t = s.step
        return s.exp_avg / (1 - b1 ** t) / _denominator(r, h, 1 / (1 - b2 ** t))

    def torch_args(self, hyper):
        return _torch("adam", hyper, betas=hyper["betas"], eps=hyper["eps"],
                      amsgrad=hyper["amsgrad"])


class Adagrad(Optimizer):
    """AdaGrad (torch's API): per-coordinate steps shrinking with the summed squared gradient.

    Math (Algorithm 8.4, note 001): r <- r + g*g; w <- w - lr_t g / (delta + sqrt(r)),
    lr_t = lr / (1 + (t - 1) lr_decay).
    Args: params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
    eps=1e-10, foreach=None; maximize=False, differentiable=False, fused=None (foreach
    and fused choose the backend as in torch, see :class:`~descend.optim.SGD`), and the
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
        backend = check_torch_flags(foreach=foreach, differentiable=differentiable, fused=fused,
                                    backend=extras.pop("backend", "auto"))
        super().__init__(
            params, with_extras(scale_by_adagrad(), scale_by_inverse_time(), scale_by_lr()),
            backend=backend, _fused=bool(fused), lr=lr, lr_decay=lr_decay,
            weight_decay=weight_decay,
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
        backend = check_torch_flags(foreach=foreach, capturable=capturable,
                                    differentiable=differentiable,
                                    backend=extras.pop("backend", "auto"))
        super().__init__(
            params, with_extras(scale_by_rms(), momentum_step()),
            backend=backend, lr=lr, alpha=alpha, eps=eps, eps_root=eps_root,
            weight_decay=weight_decay,
            momentum=momentum, centered=centered, maximize=maximize, nesterov=nesterov,
            lookahead=lookahead, momentum_form=momentum_form, capturable=capturable, **extras)


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
        backend = check_torch_flags(foreach=foreach, capturable=capturable,
                                    differentiable=differentiable,
                                    backend=extras.pop("backend", "auto"))
        super().__init__(params, with_extras(scale_by_adadelta(), scale_by_lr()),
                         backend=backend, lr=lr,
                         rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                         capturable=capturable, **extras)


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
        backend = check_torch_flags(foreach=foreach, capturable=capturable,
                                    differentiable=differentiable, fused=fused,
                                    backend=extras.pop("backend", "auto"))
        if decoupled_weight_decay is None:
            decoupled_weight_decay = self._decoupled_default
        super().__init__(params, with_extras(scale_by_adam(), scale_by_lr()), backend=backend,
                         _fused=bool(fused), lr=lr,
                         betas=betas, eps=eps, eps_root=eps_root, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, capturable=capturable,
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
