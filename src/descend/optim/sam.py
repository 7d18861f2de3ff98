"""Sharpness-aware minimization (Foret et al. 2021) around any base optimizer, and its
adaptive variant ASAM (Kwon et al. 2021): note 004's flat versus sharp minima, as an
optimizer.
"""

from __future__ import annotations

import torch

from descend._validation import check_bool, check_range, fail

__all__ = ["SAM"]

_OWN = ("rho", "adaptive", "sam_eps")


def _make_base(base, params, kwargs):
    if isinstance(base, str):
        from descend import optim
        return optim.create(base, params, **kwargs)
    if isinstance(base, torch.optim.Optimizer):
        fail("base", "a registry name, a torch.optim.Optimizer class or a factory "
             "(params, **kwargs) -> optimizer, not an optimizer instance", type(base).__name__,
             TypeError)
    if callable(base):
        opt = base(params, **kwargs)
        if not isinstance(opt, torch.optim.Optimizer):
            fail("base", "a factory that returns a torch.optim.Optimizer", base, TypeError)
        return opt
    fail("base", "a registry name, a torch.optim.Optimizer class or a factory", base, TypeError)


def _check(group):
    check_range("rho", group["rho"], ge=0)
    check_bool("adaptive", group["adaptive"])
    check_range("sam_eps", group["sam_eps"], ge=0)


class SAM(torch.optim.Optimizer):
    """SAM: the base optimizer's step, taken with the gradient at the worst nearby point.

    Math (Foret et al. 2021, Algorithm 1; Kwon et al. 2021 for ``adaptive``). With
    ``g = grad L(w)`` over all parameters (``T = diag(|w|)`` when adaptive, else ``I``)::

        e = rho T^2 g / (|T g| + sam_eps)          (plain SAM: e = rho g / |g|)
        g_sam = grad L(w + e)                      (the closure, called a second time)
        w <- base_step(w, g_sam)                   (e is undone first, exactly)

    ``step(closure)`` is required: the closure (zero the gradients, forward, backward,
    return the loss) runs at ``w`` and then at ``w + e``; the first loss is returned. The
    base optimizer is given ``g_sam`` and stepped without a closure, so it must not need
    one (plain momentum, Adam, LARS, Shampoo, ...).

    Args: params or groups; base="sgd" (a registry name, or a ``torch.optim.Optimizer``
    class or factory ``(params, **kwargs)``), rho=0.05, adaptive=False, sam_eps=1e-12,
    and the base's keyword arguments (``lr``, ``momentum``, ...). ``param_groups`` and
    ``state`` are the base's (so LR schedulers drive the base); ``rho`` and ``adaptive``
    are per group. ``state_dict()`` is the base's, with ``rho`` / ``adaptive`` /
    ``sam_eps`` in its groups.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> opt = SAM([w], base="sgd", rho=0.5, lr=0.1)
        >>> seen = []
        >>> def closure():
        ...     seen.append(w.detach().clone())
        ...     opt.zero_grad()
        ...     loss = 0.5 * (w ** 2).sum()          # g = w, |g| = 5
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> seen[1]                                    # w + 0.5 w / 5
        tensor([3.3000, 4.4000])
        >>> w.detach()                                 # w - 0.1 g(w + e)
        tensor([2.6700, 3.5600])

    Differs: Optax's ``contrib.sam`` and pytorch-optimizer's ``SAM`` (after Foret et al.'s
    and davda54's code) take the base as an optimizer object or class; this one also takes
    a registry name, so a recipe can write ``{name: sam, base: adam, lr: 1.0e-3}``. No
    m-sharpness (per-device perturbations). Batch-norm statistics are updated at both
    evaluations. Reference: Foret, Kleiner, Mobahi & Neyshabur (2021),
    Sharpness-aware minimization for efficiently improving generalization; Kwon et al.
    (2021), ASAM: adaptive sharpness-aware minimization.
    """
    advanced = ('sam_eps',)   # folded under "more" in the playground

    def __init__(self, params, base="sgd", rho=0.05, adaptive=False, sam_eps=1e-12,
                 **base_kwargs):
        own = dict(rho=rho, adaptive=adaptive, sam_eps=sam_eps)
        _check(own)
        params = list(params)
        per_group = []          # SAM's keys given in parameter groups, kept from the base
        if params and isinstance(params[0], dict):
            params = [dict(g) for g in params]
            per_group = [{k: g.pop(k) for k in _OWN if k in g} for g in params]
        self.base_optimizer = _make_base(base, params, base_kwargs)
        for group, mine in zip(self.base_optimizer.param_groups, per_group):
            group.update(mine)
        self._building = True
        super().__init__(self.base_optimizer.param_groups, own)
        self._building = False
        self._share()

    def _share(self) -> None:
        # one set of groups and state: the base's (schedulers, checkpoints, zero_grad)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults = {**self.base_optimizer.defaults,
                         **{k: self.defaults[k] for k in _OWN if k in self.defaults}}

    def add_param_group(self, param_group):
        """Add a group to the base optimizer (its own keys checked by it), with SAM's keys."""
        if getattr(self, "_building", False):
            super().add_param_group(param_group)
            _check(param_group)
            return
        own = {k: param_group.pop(k) for k in _OWN if k in param_group}
        _check({k: own.get(k, self.defaults[k]) for k in _OWN})
        groups = self.base_optimizer.param_groups
        n = len(groups)
        try:
            self.base_optimizer.add_param_group(param_group)
        except Exception:
            del groups[n:]           # a group the base refused is not kept
            raise
        for k in _OWN:
            groups[-1][k] = own.get(k, self.defaults[k])

    def state_dict(self):
        """The base optimizer's state dict (its groups carry ``rho``, ``adaptive``, ``sam_eps``)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict):
        """Load into the base optimizer, then share its new groups and state again."""
        self.base_optimizer.load_state_dict(state_dict)
        self._share()
        for group in self.param_groups:
            for k in _OWN:
                group.setdefault(k, self.defaults[k])

    @torch.no_grad()
    def ascent(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Move every parameter with a gradient to ``w + e``; returns ``(p, w)`` to restore."""
        sq = None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                t = p.grad * p.abs() if group["adaptive"] else p.grad
                s = t.double().pow(2).sum() if t.dtype in (torch.float16, torch.bfloat16) \
                    else t.pow(2).sum()
                sq = s if sq is None else sq + s.to(sq.dtype)
        saved = []
        if sq is None:
            return saved
        norm = sq.sqrt()
        for group in self.param_groups:
            scale = group["rho"] / (norm + group["sam_eps"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                e = p.grad * p * p if group["adaptive"] else p.grad
                saved.append((p, p.detach().clone()))
                p.add_((e * scale).to(p.dtype))
        return saved

    def step(self, closure=None):  # type: ignore[override]
        """Gradient at ``w``, ascent to ``w + e``, gradient there, back to ``w``, base step."""
        if closure is None:
            fail("closure", "given (SAM evaluates the gradient at w and at w + e)", None)
        with torch.enable_grad():
            loss = closure()
        saved = self.ascent()
        try:
            with torch.enable_grad():
                closure()
        finally:
            with torch.no_grad():
                for p, w in saved:
                    p.copy_(w)
        self.base_optimizer.step()
        return loss
