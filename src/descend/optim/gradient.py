"""Gradient transforms: sign flip (maximize), clipping by value and by global norm,
annealed gradient noise. Each reads its hyperparameter from the parameter group and
does nothing when it is off (``None`` / ``0``), so every optimizer can carry them.
"""

from __future__ import annotations

import math

from descend._validation import check_bool, check_choice, check_range, fail
from descend.optim.core import Transform
from descend.optim.elementwise import clamp, group_norm, minimum, randn, sqrt

__all__ = ["flip_sign", "clip_by_value", "clip_by_global_norm", "add_noise"]


class flip_sign(Transform):
    """Negate the gradient when ``maximize=True`` (ascend instead of descend).

    Math: g <- -g.  Args: maximize=False.  Same as torch's ``maximize`` flag.

    Example:
        >>> import torch
        >>> flip_sign().update([torch.ones(2)], [{}], [torch.zeros(2)], {"maximize": True})
        [tensor([-1., -1.])]
    """

    defaults = {"maximize": False}
    state_names = ()

    def validate(self, hyper):
        check_bool("maximize", hyper["maximize"])

    def math(self, u, w, s, h):
        return -u if h["maximize"] else u

    def torch_args(self, hyper):
        return (0, {"maximize": True}) if hyper["maximize"] else None


class clip_by_value(Transform):
    """Clip every gradient entry to ``[-clip_value, clip_value]``.

    Math: g_i <- min(max(g_i, -c), c).  Args: clip_value=None (off).
    Same result as ``torch.nn.utils.clip_grad_value_``.

    Example:
        >>> import torch
        >>> clip_by_value().update([torch.tensor([-3.0, 0.5])], [{}], [torch.zeros(2)], {"clip_value": 1.0})
        [tensor([-1.0000,  0.5000])]
    """

    defaults = {"clip_value": None}
    advanced = ('clip_value',)
    state_names = ()

    def validate(self, hyper):
        check_range("clip_value", hyper["clip_value"], gt=0, allow_none=True)

    def math(self, u, w, s, h):
        c = h["clip_value"]
        return u if c is None else clamp(u, -c, c)

    def torch_args(self, hyper):
        return None if hyper["clip_value"] is None else "clipping"


class clip_by_global_norm(Transform):
    """Rescale the gradients so that their joint norm is at most ``clip_norm``.

    Math: n = ||(g_1, ..., g_k)||_p;  g <- g * min(1, c / (n + 1e-6)).
    Args: clip_norm=None (off), clip_norm_type=2.0 (any p > 0, or inf),
    clip_norm_scope="global" | "group": which gradients ``n`` is taken over.

    - ``"global"`` (default): every gradient of the optimizer, all parameter groups
      (those that clip with this scope) together: the same result as
      ``torch.nn.utils.clip_grad_norm_(model.parameters(), c)`` before ``step()``, Keras'
      ``global_clipnorm`` or Lightning's ``gradient_clip_val``. The optimizer computes
      ``n`` once per step before the groups run, and every backend uses that number.
      Each group scales by its own ``clip_norm`` (usually the same for all). It needs
      the clipped values to depend on the gradients and parameters only (the clipping
      comes before any state, as in every named optimizer); a chain that clips after a
      stateful transform must use ``"group"``.
    - ``"group"``: each parameter group's gradients on their own.

    Differs from Optax's ``clip_by_global_norm`` (its "global" is over the pytree it
    is given) only in that a descend optimizer may hold several groups.
    Applied by itself to a list of tensors (``update``, as below), the norm is over
    that list.

    Example:
        >>> import torch
        >>> tx = clip_by_global_norm(clip_norm=1.0)
        >>> (g,) = tx.update([torch.tensor([3.0, 4.0])], [{}], [torch.zeros(2)], tx.defaults)
        >>> round(float(g.norm()), 5)
        1.0

    Reference: Pascanu, Mikolov, Bengio (2013), On the difficulty of training RNNs.
    """

    defaults = {"clip_norm": None, "clip_norm_type": 2.0, "clip_norm_scope": "global"}
    advanced = ('clip_norm', 'clip_norm_type', 'clip_norm_scope')
    state_names = ()
    #: The values of ``clip_norm_scope``.
    SCOPES = ("global", "group")

    def validate(self, hyper):
        check_range("clip_norm", hyper["clip_norm"], gt=0, allow_none=True)
        t = hyper["clip_norm_type"]
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and (t == math.inf or t > 0)):
            fail("clip_norm_type", "a number > 0 or inf", t)
        check_choice("clip_norm_scope", hyper["clip_norm_scope"], self.SCOPES)

    exact = ("clip_norm_type",)

    def math(self, u, w, s, h):
        c = h["clip_norm"]
        if c is None:
            return u
        n = group_norm(u, float(h["clip_norm_type"]), h["clip_norm_scope"])
        return u * minimum(c / (n + 1e-6), 1.0)

    def torch_args(self, hyper):
        return None if hyper["clip_norm"] is None else "clipping"


class add_noise(Transform):
    """Add annealed Gaussian noise to the gradient.

    Math (note 003, Neelakantan et al.):  g_t <- g_t + N(0, sigma_t^2),
    sigma_t^2 = eta / (1 + t)^gamma, with t = 0 at the first update.
    Args: grad_noise=0.0 (eta; 0 is off), grad_noise_gamma=0.55.

    Differs from the notes: the slide prints ``sigma_t^2 = eta/(1+t)^gamma sigma_{t-1}^2``
    (a product); the paper and this transform use eta / (1+t)^gamma.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> tx = add_noise(grad_noise=0.01)
        >>> (g,) = tx.update([torch.zeros(3)], [{"step": torch.tensor(1.0)}], [torch.zeros(3)], tx.defaults)
        >>> bool((g != 0).all())
        True

    Reference: Neelakantan et al. (2015), Adding gradient noise improves learning
    for very deep networks.
    """

    defaults = {"grad_noise": 0.0, "grad_noise_gamma": 0.55}
    advanced = ('grad_noise', 'grad_noise_gamma')
    state_names = ()

    def validate(self, hyper):
        check_range("grad_noise", hyper["grad_noise"], ge=0)
        check_range("grad_noise_gamma", hyper["grad_noise_gamma"], ge=0)

    def uses_step(self, hyper):
        return hyper["grad_noise"] > 0

    def math(self, u, w, s, h):
        eta = h["grad_noise"]
        if not eta:
            return u
        sigma = sqrt(eta / (1.0 + (s.step - 1.0)) ** h["grad_noise_gamma"])
        return u + sigma * randn()

    def torch_args(self, hyper):
        return "grad_noise" if hyper["grad_noise"] > 0 else None

