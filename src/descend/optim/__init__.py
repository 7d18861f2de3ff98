"""descend.optim: how a gradient becomes a step.

Drop-in for ``torch.optim``: ``SGD``, ``Adagrad``, ``RMSprop``, ``Adadelta``, ``Adam``,
``AdamW`` take torch's arguments and state names, plus what the lecture notes add
(textbook momentum, look-ahead Nesterov, RMSProp with Nesterov, eps inside the root,
L1, clipping, annealed gradient noise). Every optimizer is a chain of transforms
(``chain``, ``scale_by_*``, ``add_*``, ``clip_*``) run by the :class:`Optimizer` adapter.

Beyond elementwise chains: Newton's method, nonlinear conjugate gradients, BFGS and
L-BFGS (drop-in for ``torch.optim.LBFGS``), Hessian-free, K-FAC and Shampoo, LARS and
LAMB, and SAM around any base optimizer (``second_order``, ``quasi_newton``,
``hessian_free``, ``kfac``, ``shampoo``, ``large_batch``, ``sam``).

``create(name, params, **kwargs)`` builds one by its registry name (``OPTIMIZERS``).
"""

from __future__ import annotations

from descend._registry import Registry
from descend.optim.adaptive import (
    Adadelta, Adagrad, Adam, AdamW, RMSprop, scale_by_adadelta, scale_by_adagrad,
    scale_by_adam, scale_by_inverse_time, scale_by_rms,
)
from descend.optim.averaging import EMA, WeightAverage
from descend.optim.core import Chain, Transform, chain, step_values
from descend.optim.optimizer import BACKENDS, Optimizer
from descend.optim.decay import (
    add_decoupled_weight_decay, add_l1, add_weight_decay, decay_groups, prox_l1,
)
from descend.optim.gradient import add_noise, clip_by_global_norm, clip_by_value, flip_sign
from descend.optim.momentum import SGD, momentum_step, scale_by_lr, with_extras

# after the chain API above: large_batch builds on it through this package
from descend.optim.hessian_free import HessianFree  # noqa: E402
from descend.optim.kfac import KFAC  # noqa: E402
from descend.optim.large_batch import LAMB, LARS, scale_by_lars, scale_by_trust_ratio  # noqa: E402
from descend.optim.line_search import strong_wolfe  # noqa: E402
from descend.optim.quasi_newton import BFGS, LBFGS  # noqa: E402
from descend.optim.sam import SAM  # noqa: E402
from descend.optim.second_order import Newton, NonlinearCG, conjugate_gradient  # noqa: E402
from descend.optim.shampoo import Shampoo  # noqa: E402

OPTIMIZERS = Registry("optimizer")


def _entry(name: str, cls, doc: str, **preset):
    def factory(params, **kwargs):
        return cls(params, **{**preset, **kwargs})

    factory.__name__ = name
    factory.__doc__ = doc
    OPTIMIZERS.register(name, factory)


_entry("sgd", SGD, "Plain (minibatch) gradient descent: w <- w - lr g.")
_entry("momentum", SGD, "SGD with momentum, torch's form: b <- m b + g; w <- w - lr b (m=0.9).",
       momentum=0.9)
_entry("momentum_textbook", SGD, "SGD with momentum, the notes' form: v <- m v - lr g; w <- w + v.",
       momentum=0.9, momentum_form="textbook")
_entry("nesterov", SGD, "Nesterov momentum, reformulated (torch's nesterov=True).",
       momentum=0.9, nesterov=True)
_entry("nesterov_lookahead", SGD,
       "Nesterov momentum with the gradient at w + m v (needs step(closure)).",
       momentum=0.9, nesterov=True, lookahead=True, momentum_form="textbook")
_entry("adagrad", Adagrad, "AdaGrad (Algorithm 8.4): w <- w - lr g / (delta + sqrt(sum g^2)); "
       "torch's delta 1e-10 (the notes: 1e-7, eps=1e-7).")
_entry("rmsprop", RMSprop, "RMSProp (Algorithm 8.5) with torch's defaults: eps=1e-8 outside the root, "
       "g / (sqrt(r) + eps); the notes' sqrt(delta + r) is eps=0, eps_root=1e-6.")
_entry("rmsprop_nesterov", RMSprop,
       "RMSProp with Nesterov momentum (Algorithm 8.6), reformulated; lookahead=True for the closure form.",
       momentum=0.9, nesterov=True, momentum_form="textbook", eps=0.0, eps_root=1e-6)
_entry("adadelta", Adadelta, "AdaDelta: RMS of past steps over RMS of gradients.")
_entry("adam", Adam, "Adam (Algorithm 8.7).")
_entry("adamw", AdamW, "Adam with decoupled weight decay.")
_entry("newton", Newton, "Newton's method, exact Hessian: w <- w - lr (H + damping I)^-1 g (needs step(closure)).")
_entry("newton_saddle_free", Newton,
       "Saddle-free Newton: w <- w - lr (|H| + damping I)^-1 g, |H| from the eigenvalues (needs step(closure)).",
       saddle_free=True)
_entry("cg", NonlinearCG,
       "Nonlinear conjugate gradients (Polak-Ribiere+, restarts) with a strong Wolfe line search (needs step(closure)).")
_entry("bfgs", BFGS, "BFGS: dense inverse-Hessian estimate, strong Wolfe line search (needs step(closure)).")
_entry("lbfgs", LBFGS, "L-BFGS, drop-in for torch.optim.LBFGS: two-loop recursion (needs step(closure)).")
_entry("hessian_free", HessianFree,
       "Hessian-free: truncated CG on the damped Gauss-Newton system, Levenberg-Marquardt damping (needs step(closure)).")
_entry("kfac", KFAC, "K-FAC: linear/conv gradients preconditioned by (A (x) G)^-1, momentum SGD (needs step(closure)).")
_entry("shampoo", Shampoo, "Shampoo: L^-1/4 G R^-1/4 per matrix, grafted onto AdaGrad's step size.")
_entry("lars", LARS, "LARS: momentum SGD with the layer-wise rate eta |w| / (|g| + wd |w|).")
_entry("lamb", LAMB, "LAMB: Adam's step rescaled per layer by |w| / |r + wd w|.")
_entry("sam", SAM, "SAM: the base optimizer's step with the gradient at w + rho g / |g| (needs step(closure)).")

#: Entries whose update is defined per layer (a weight matrix, a kernel, a model call):
#: on one 2-D parameter vector they reduce to their elementwise fallback or need a model,
#: so 2-D trajectory races (the playground, ``descend.analysis.trajectories``) leave them out.
LAYERWISE = frozenset({"hessian_free", "kfac", "shampoo", "lars", "lamb"})


def create(name: str, params, **kwargs) -> Optimizer:
    """Build the optimizer registered as ``name`` (see ``OPTIMIZERS.names()``).

    Example:
        >>> import torch
        >>> opt = create("nesterov", [torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        >>> type(opt).__name__, opt.defaults["momentum"], opt.defaults["nesterov"]
        ('SGD', 0.9, True)
    """
    return OPTIMIZERS.create(name, params, **kwargs)


__all__ = [
    "OPTIMIZERS", "create", "Optimizer", "BACKENDS", "Transform", "Chain", "chain", "step_values",
    "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW",
    "scale_by_lr", "momentum_step", "scale_by_adagrad", "scale_by_inverse_time",
    "scale_by_rms", "scale_by_adadelta", "scale_by_adam",
    "flip_sign", "clip_by_value", "clip_by_global_norm", "add_noise",
    "add_weight_decay", "add_decoupled_weight_decay", "add_l1", "prox_l1", "decay_groups",
    "with_extras",
]
__all__ += ["WeightAverage", "EMA"]
__all__ += ["Newton", "NonlinearCG", "conjugate_gradient", "BFGS", "LBFGS", "strong_wolfe",
            "HessianFree", "KFAC", "Shampoo", "LARS", "LAMB", "scale_by_lars",
            "scale_by_trust_ratio", "SAM", "LAYERWISE"]
