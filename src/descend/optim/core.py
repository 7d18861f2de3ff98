"""The optimizer core: transforms on lists of tensors and ``chain``. The adapter that
turns a chain into a real ``torch.optim.Optimizer`` is :mod:`descend.optim.optimizer`
(above the transforms and the backends); this module knows neither.

Every method of the notes is the same loop::

    g  -> (sign flip, clipping, noise, L2 / L1 terms)   # gradient transforms
       -> (velocity, squared-gradient averages, bias correction)  # preconditioners
       -> scale by the learning rate                      # scale_by_lr / momentum_step
       -> (decoupled weight decay, proximal L1)           # terms on the final step
    w <- w + update

A :class:`Transform` reads its hyperparameters from the parameter group at every
step (so torch's LR schedulers and ``OneCycleLR`` momentum cycling work), and keeps
its state in the per-parameter dict ``optimizer.state[p]`` under stable names
(``exp_avg``, ``momentum_buffer``, ...), the same names torch uses.

Conventions: the updates a transform receives are owned by the chain (never the
gradients themselves), so a transform may change them in place; a transform never
returns its own state tensors. The final updates are *added* to the parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from descend._validation import check_no_unknown, fail

__all__ = ["Transform", "Chain", "chain", "step_values", "scalar_dtype"]


def scalar_dtype() -> torch.dtype:
    """The dtype of the ``step`` counters: torch.optim's rule (float64 under a float64
    default dtype, else float32).

    >>> scalar_dtype()
    torch.float32
    """
    # Same rule as torch.optim for the `step` counters.
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def step_values(state: Sequence[dict]) -> list[float]:
    """The step counter of each parameter (1 at the first update), as Python floats.

    >>> step_values([{"step": torch.tensor(3.0)}, {"step": 1}])
    [3.0, 1.0]
    """
    return [float(st["step"]) for st in state]


class Transform:
    """One stage of an optimizer: ``init(params) -> state``, ``update(...) -> updates``.

    Subclasses set ``defaults`` (the hyperparameters they read from the parameter group,
    with their default values), implement ``update`` and, when they have arguments to
    check, ``validate``. A transform built with keyword arguments
    (``scale_by_adam(betas=(0.9, 0.99))``) takes them as its defaults.

    ``update(updates, state, params, hyper)``:
      updates  list of tensors, one per parameter (the chain's working copy);
      state    list of per-parameter dicts (shared by all transforms of a chain);
      params   the parameters (read only);
      hyper    the parameter group (``lr``, ``betas``, ...), read at every step.

    Example: a transform that multiplies the updates by a hyperparameter ``factor``.

    >>> class Scale(Transform):
    ...     defaults = {"factor": 2.0}
    ...     def update(self, updates, state, params, hyper):
    ...         return [u * hyper["factor"] for u in updates]
    >>> tx, w = Scale(factor=3.0), torch.zeros(2)
    >>> tx.defaults, tx.update([torch.ones(2)], tx.init([w]), [w], tx.defaults)
    ({'factor': 3.0}, [tensor([3., 3.])])
    >>> Scale(lr=0.1)
    Traceback (most recent call last):
        ...
    TypeError: ...
    """

    defaults: dict[str, Any] = {}

    #: The names of the per-parameter state this transform may keep, under any options;
    #: ``None`` when it does not say (its state is then loaded unchecked, and only the
    #: reference path runs it). See :meth:`state_spec`.
    state_names: tuple[str, ...] | None = None

    def __init__(self, **hyper):
        unknown = {k: v for k, v in hyper.items() if k not in type(self).defaults}
        check_no_unknown(type(self).__name__, unknown)
        self.defaults = {**type(self).defaults, **hyper}
        self.validate(self.defaults)

    def init(self, params: Sequence[Tensor], hyper: Mapping[str, Any] | None = None) -> list[dict]:
        """Fresh per-parameter state; most transforms create theirs lazily in ``update``."""
        return [{} for _ in params]

    #: The per-element update, ``math(u, w, s, h) -> new u`` (see
    #: :mod:`descend.optim.elementwise`), for an elementwise transform; ``None`` for one
    #: that implements :meth:`update` on lists of tensors itself. Every path of an
    #: elementwise transform (reference, tiled, CPU and GPU kernels) is made from it.
    math: Callable | None = None

    #: The value each state starts at (a number, or the name of a hyperparameter); 0
    #: when not listed.
    fills: dict[str, Any] = {}

    #: Hyperparameters whose value (not only whether it is on) decides the code.
    exact: tuple[str, ...] = ()

    #: Of its hyperparameters, the ones a user rarely sets (the notes' variants and the
    #: cross-cutting extras): shown folded by the playground, listed apart in the docs.
    advanced: tuple[str, ...] = ()

    def options_on(self, hyper: Mapping[str, Any]) -> tuple[str, ...]:
        """The options of this transform that are on under ``hyper``: its flags, choices
        and advanced hyperparameters set away from their defaults. The one question the
        playground, the docs and the backends' reasons ask of a transform."""
        on = []
        for k, default in type(self).defaults.items():
            v = hyper.get(k, default)
            if isinstance(default, (bool, str)) or default is None or k in self.advanced:
                if torch.is_tensor(v) or v != default:
                    on.append(k)
        return tuple(on)

    @property
    def elementwise(self) -> bool:
        """Whether the transform states its update per element (:attr:`math`)."""
        return type(self).math is not None

    def program(self, hyper: Mapping[str, Any]):
        """The traced :attr:`math` under the structure of ``hyper`` (cached per structure)."""
        from descend.optim.elementwise import structure, trace
        key = (structure(hyper, self.defaults),
               tuple(hyper.get(k) for k in self.exact))
        cache = self.__dict__.setdefault("_programs", {})
        prog = cache.get(key)
        if prog is None:
            prog = cache[key] = trace(self.math, hyper, self._fills(), self.exact)
        return prog

    def _fills(self) -> dict[str, Any]:
        return {k: self.fills.get(k, 0.0) for k in (self.state_names or ())}

    def update(self, updates: list[Tensor], state: list[dict], params: list[Tensor],
               hyper: Mapping[str, Any]) -> list[Tensor]:
        """The new updates (and state) for ``updates``: :attr:`math` evaluated with torch's
        multi-tensor operations, for an elementwise transform."""
        if self.math is None:
            raise NotImplementedError(f"{type(self).__name__} has neither math nor update")
        from descend.optim.elementwise import evaluate
        return evaluate(self.program(hyper), updates, params, state, hyper)

    def torch_args(self, hyper: Mapping[str, Any]):
        """What this transform is in torch's optimizers under ``hyper``, for the backends
        that call torch's kernels: ``None`` when it does nothing under ``hyper``; the name
        of the option torch lacks (a string); or ``(stage, arguments)``, the keyword
        arguments of torch's functional optimizer it stands for, ``"algorithm"`` among them
        for a preconditioner ("adam", "rmsprop"...), and ``"lacks"`` naming an option of
        it that torch's algorithm does not have. Stages order the parts as torch
        applies them: 0 sign, 1 coupled decay, 2 preconditioner, 3 lr decay, 4 the step,
        5 decoupled decay. The default: not in torch (its class name)."""
        return type(self).__name__

    def validate(self, hyper: Mapping[str, Any]) -> None:
        """Raise ``ValueError``/``TypeError`` for a bad hyperparameter in ``hyper``."""

    def uses_step(self, hyper: Mapping[str, Any]) -> bool:
        """Whether this transform keeps ``state['step']`` under ``hyper`` (by default:
        whether its math reads it)."""
        return self.math is not None and self.program(hyper).uses_step

    def state_spec(self, hyper: Mapping[str, Any]) -> dict[str, str]:
        """The state it keeps under ``hyper``: name -> ``"param"`` (a tensor shaped like
        the parameter) or ``"scalar"`` (a 0-d counter). Names are among ``state_names``;
        by default the state its math reads or writes."""
        if self.math is None:
            return {}
        return {k: "param" for k in self.program(hyper).state}

    def lookahead_shift(self, state: list[dict], params: list[Tensor],
                        hyper: Mapping[str, Any]) -> list[Tensor] | None:
        """Where the gradient should be evaluated, as a shift of the parameters, or None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Chain(Transform):
    """Transforms applied one after the other; see :func:`chain`.

    >>> from descend.optim import clip_by_global_norm, scale_by_lr
    >>> tx = Chain(clip_by_global_norm(clip_norm=1.0), scale_by_lr(lr=0.5))
    >>> w = torch.zeros(2)
    >>> tx.update([torch.tensor([3.0, 4.0])], tx.init([w]), [w], tx.defaults)  # norm 5 -> 1, times -lr
    [tensor([-0.3000, -0.4000])]
    """

    def __init__(self, *transforms: Transform):
        for t in transforms:
            if not isinstance(t, Transform):
                fail("transforms", "Transform instances", t, TypeError)
        self.transforms = tuple(transforms)
        self.defaults = {}
        for t in self.transforms:
            for k, v in t.defaults.items():
                self.defaults.setdefault(k, v)

    def init(self, params, hyper=None):
        hyper = self.defaults if hyper is None else hyper
        state = [{} for _ in params]
        for t in self.transforms:
            for st, sub in zip(state, t.init(params, hyper)):
                st.update(sub)
        return state

    def validate(self, hyper):
        for t in self.transforms:
            t.validate(hyper)

    def uses_step(self, hyper):
        return any(t.uses_step(hyper) for t in self.transforms)

    @property
    def state_names(self):
        names = {"step"}
        for t in self.transforms:
            if t.state_names is None:
                return None
            names.update(t.state_names)
        return tuple(sorted(names))

    def state_spec(self, hyper):
        spec = {"step": "scalar"} if self.uses_step(hyper) else {}
        for t in self.transforms:
            spec.update(t.state_spec(hyper))
        return spec

    @property
    def elementwise(self) -> bool:
        return all(t.elementwise for t in self.transforms)

    @property
    def advanced(self):
        return tuple(dict.fromkeys(k for t in self.transforms for k in t.advanced))

    def options_on(self, hyper):
        return tuple(dict.fromkeys(k for t in self.transforms for k in t.options_on(hyper)))

    @property
    def exact(self):
        return tuple(k for t in self.transforms for k in t.exact)

    def _fills(self):
        out = {}
        for t in self.transforms:
            out.update(t._fills())
        return out

    def program(self, hyper):
        """The whole chain's per-element update as one program (every transform
        elementwise), traced once per structure of ``hyper``."""
        from descend.optim.elementwise import chain_math, structure, trace
        if not self.elementwise:
            raise TypeError("the chain has a transform that is not elementwise")
        key = (structure(hyper, self.defaults), tuple(hyper.get(k) for k in self.exact))
        cache = self.__dict__.setdefault("_programs", {})
        prog = cache.get(key)
        if prog is None:
            prog = cache[key] = trace(chain_math(self.transforms), hyper, self._fills(),
                                      self.exact)
        return prog

    def update(self, updates, state, params, hyper):
        """Run every transform in order; counts the step first when any transform needs it."""
        if self.uses_step(hyper):
            steps = []
            for st, p in zip(state, params):
                if "step" not in st:
                    st["step"] = torch.tensor(0.0, dtype=scalar_dtype())
                steps.append(st["step"])
            for s in steps:
                s.add_(1)
        for t in self.transforms:
            updates = list(t.update(updates, state, params, hyper))
        return updates

    def lookahead_shift(self, state, params, hyper):
        for t in self.transforms:
            shift = t.lookahead_shift(state, params, hyper)
            if shift is not None:
                return shift
        return None

    def __repr__(self):
        return "chain(" + ", ".join(repr(t) for t in self.transforms) + ")"


def chain(*transforms: Transform) -> Chain:
    """Compose transforms: the updates of one are the input of the next.

    The hyperparameters of the chain are the union of its transforms' (the first
    default wins); the state of every parameter is one dict shared by all of them.
    ``update`` may change the updates it is given in place: pass copies of gradients.

    Example:
        >>> import torch
        >>> from descend.optim import chain, scale_by_adam, scale_by_lr, clip_by_global_norm
        >>> tx = chain(clip_by_global_norm(clip_norm=1.0), scale_by_adam(), scale_by_lr(lr=0.1))
        >>> w = torch.ones(3)
        >>> state = tx.init([w])
        >>> (u,) = tx.update([torch.full((3,), 10.0)], state, [w], tx.defaults)
        >>> w += u                      # one Adam step of size lr on the clipped gradient
        >>> round(float(w[0]), 4)
        0.9
    """
    return Chain(*transforms)
