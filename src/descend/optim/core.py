"""The optimizer core: transforms on lists of tensors, ``chain``, and the adapter that
turns a chain into a real ``torch.optim.Optimizer``.

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

from descend._validation import check_bool, check_choice, check_no_unknown, fail

__all__ = ["Transform", "Chain", "chain", "Optimizer", "step_values", "BACKENDS"]

#: How a chain's update may run (see :mod:`descend.optim.fused`).
BACKENDS = ("auto", "reference", "kernel", "tiled", "foreach", "fused")


def _scalar_dtype() -> torch.dtype:
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

    def update(self, updates: list[Tensor], state: list[dict], params: list[Tensor],
               hyper: Mapping[str, Any]) -> list[Tensor]:
        raise NotImplementedError

    def validate(self, hyper: Mapping[str, Any]) -> None:
        """Raise ``ValueError``/``TypeError`` for a bad hyperparameter in ``hyper``."""

    def uses_step(self, hyper: Mapping[str, Any]) -> bool:
        """Whether this transform reads ``state['step']`` under ``hyper``."""
        return False

    def state_spec(self, hyper: Mapping[str, Any]) -> dict[str, str]:
        """The state it keeps under ``hyper``: name -> ``"param"`` (a tensor shaped like
        the parameter) or ``"scalar"`` (a 0-d counter). Names are among ``state_names``."""
        return {}

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

    def update(self, updates, state, params, hyper):
        """Run every transform in order; counts the step first when any transform needs it."""
        if self.uses_step(hyper):
            steps = []
            for st, p in zip(state, params):
                if "step" not in st:
                    st["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
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


def _check_group_keys(where: str, group: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed) | {"params", "initial_lr", "param_names"}
    check_no_unknown(where, {k: v for k, v in group.items() if k not in allowed})


class Optimizer(torch.optim.Optimizer):
    """Turn a transform (usually a :func:`chain`) into a ``torch.optim.Optimizer``.

    ``param_groups`` hold the hyperparameters, read at every step, so torch's LR
    schedulers (including ``OneCycleLR`` with ``cycle_momentum`` and
    ``ReduceLROnPlateau``) and ``torch.amp.GradScaler`` work unchanged. State lives in
    ``self.state[p]`` under the transforms' stable names; ``state_dict`` /
    ``load_state_dict`` / ``zero_grad`` / ``add_param_group`` are torch's.

    Args:
        params: parameters or parameter groups (dicts), as for any torch optimizer.
        transform: the transform to run (a single transform is wrapped in a chain).
        backend: "auto" (default), "reference", "kernel", "tiled", "foreach" or "fused":
            how the update runs (:mod:`descend.optim.fused`); also a per-group key. The
            path the last group's step took is ``last_backend``.
        **hyper: default hyperparameters; each must be one the transform reads.

    Example:
        >>> import torch
        >>> from descend.optim import Optimizer, chain, scale_by_rms, momentum_step
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Optimizer([w], chain(scale_by_rms(), momentum_step()), lr=0.01, momentum=0.9)
        >>> (w ** 2).sum().backward(); _ = opt.step()
        >>> opt.param_groups[0]["momentum"]
        0.9

    Differs from torch: ``step(closure)`` is required when a group uses look-ahead
    Nesterov (``lookahead=True``): the gradient is evaluated at the look-ahead point.
    """

    def __init__(self, params, transform: Transform, *, backend: str = "auto", **hyper):
        if not isinstance(transform, Transform):
            fail("transform", "a Transform", transform, TypeError)
        if not isinstance(transform, Chain):
            transform = Chain(transform)
        unknown = {k: v for k, v in hyper.items() if k not in transform.defaults}
        check_no_unknown(type(self).__name__, unknown)
        check_choice("backend", backend, BACKENDS)
        defaults = {**transform.defaults, **hyper, "backend": backend}
        transform.validate(defaults)
        self.transform = transform
        super().__init__(params, defaults)

    # -- torch API -------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its hyperparameters are checked like the constructor's."""
        if isinstance(param_group, dict):
            _check_group_keys("param group", param_group, self.defaults)
        super().add_param_group(param_group)
        self.transform.validate(self.param_groups[-1])
        check_choice("backend", self.param_groups[-1].get("backend", "auto"), BACKENDS)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # A state dict saved by torch (or an older version) may lack our keys.
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
        self._drop_caches()

    def _drop_caches(self) -> None:
        """Forget plans, workspaces and scratch made for the state that was there."""
        for k in [k for k in self.__dict__ if k.startswith("_descend_")]:
            del self.__dict__[k]

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """torch's ``load_state_dict``, after checking everything it would load.

        Every state tensor is checked against its parameter before anything is changed:
        a state the chain keeps per parameter (``exp_avg``, ``square_avg``...) must be a
        tensor of the parameter's shape (floating point; cast to the parameter's dtype and
        device as torch does, and copied when its memory layout differs from the
        parameter's or it shares memory with another tensor); ``step`` must be a finite
        count >= 0; the names must be ones the chain keeps, and every name the chain
        needs under the loaded options must be there; the numbers of groups and of
        parameters per group must match; the loaded hyperparameters pass the same checks
        as the constructor's. A mismatch raises ``ValueError`` naming the parameter
        (its index, and its name when the groups carry ``param_names``) and both shapes,
        and leaves the optimizer as it was. Plans and workspaces made for the old state
        are dropped.

        Example:
            >>> import torch
            >>> from descend.optim import Adam
            >>> a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
            >>> opt = Adam([a, b], lr=0.1)
            >>> (a.sum() + b.sum()).backward(); _ = opt.step()
            >>> Adam([b, a], lr=0.1).load_state_dict(opt.state_dict())   # another order
            Traceback (most recent call last):
                ...
            ValueError: `state` of parameter 0 must have 'exp_avg' shaped like the parameter, (2, 2). Received: 'exp_avg' of shape (3,)
        """
        if not isinstance(state_dict, Mapping):
            fail("state_dict", "a mapping with 'state' and 'param_groups'",
                 type(state_dict).__name__, TypeError)
        state_dict = dict(state_dict)
        hooks = self._optimizer_load_state_dict_pre_hooks
        for hook in hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        checked = _checked_state(self, state_dict)
        self._optimizer_load_state_dict_pre_hooks = type(hooks)()
        try:
            super().load_state_dict(checked)
        finally:
            self._optimizer_load_state_dict_pre_hooks = hooks
        self._drop_caches()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is None and any(g.get("lookahead", False) for g in self.param_groups):
            raise ValueError(
                "`closure` must be given when lookahead=True (the gradient is "
                "evaluated at the look-ahead point w + momentum * v). Received: closure=None"
            )
        shifted = self._shift_to_lookahead()
        if shifted:
            try:
                with torch.enable_grad():
                    loss = closure()
            finally:
                self._restore(shifted)
        elif closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, state = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                state.append(self.state[p])
            if params:
                self._update_group(group, params, grads, state)
        return loss

    # -- the one dispatch point ------------------------------------------------------
    def _update_group(self, group: dict, params: list[Tensor], grads: list[Tensor],
                      state: list[dict]) -> None:
        """How a chain's update is executed: the single place to add fast backends.

        The reference path runs the chain on the whole group with multi-tensor
        (``torch._foreach_*``) operations, in the parameters' own dtype. The gradients
        are copied into a persistent workspace (one buffer per parameter, not part of
        the state dict), so that transforms may work in place without touching
        ``p.grad`` and without allocating memory at every step. A fast backend must
        give the same results as this path (and be tested equal to it).

        The group's ``backend`` ("auto" by default) picks a fast path from
        :mod:`descend.optim.fused` when one computes this chain; "reference" forces
        this path.
        """
        if group.get("backend", "auto") != "reference":
            from descend.optim import fused
            if fused.dispatch(self, group, params, grads, state):
                return
        self._reference_update(group, params, grads, state)

    def _reference_update(self, group: dict, params: list[Tensor], grads: list[Tensor],
                          state: list[dict]) -> None:
        """The reference path: the chain on whole tensors, on a copy of the gradients."""
        self.last_backend = "reference"
        updates = self._workspace(params, grads)
        updates = self.transform.update(updates, state, params, group)
        torch._foreach_add_(params, updates)

    def _workspace(self, params: list[Tensor], grads: list[Tensor],
                   copy: bool = True) -> list[Tensor]:
        space = self.__dict__.setdefault("_descend_workspace", {})
        out = []
        for p, g in zip(params, grads):
            buf = space.get(p)
            if buf is None or buf.shape != g.shape or buf.dtype != g.dtype or buf.device != g.device:
                buf = space[p] = torch.empty_like(g, memory_format=torch.preserve_format)
            out.append(buf)
        if copy:
            torch._foreach_copy_(out, grads)
        return out

    # -- look-ahead (Nesterov evaluated at w + a v) -----------------------------------
    def _shift_to_lookahead(self) -> list[tuple[Tensor, Tensor]]:
        saved = []
        for group in self.param_groups:
            if not group.get("lookahead", False):
                continue
            params = [p for p in group["params"] if self.state[p]]
            if not params:
                continue
            shift = self.transform.lookahead_shift([self.state[p] for p in params], params, group)
            if shift is None:
                continue
            for p, s in zip(params, shift):
                saved.append((p, p.detach().clone()))
                p.add_(s)
        return saved

    @staticmethod
    def _restore(saved: list[tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            for p, w in saved:
                p.copy_(w)


# -- checks of a loaded state ---------------------------------------------------------
def _param_label(group: Mapping[str, Any], j: int, index: int) -> str:
    names = group.get("param_names")
    if isinstance(names, (list, tuple)) and j < len(names):
        return f"parameter {index} ({names[j]!r})"
    return f"parameter {index}"


def _shape(t) -> str:
    return str(tuple(t.shape))


def _checked_step(label: str, value: Any) -> Tensor:
    if torch.is_tensor(value):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"`state` of {label} must have 'step' as a real number (a 0-d "
                             f"tensor). Received: 'step' of shape {_shape(value)} and dtype "
                             f"{str(value.dtype).replace('torch.', '')}")
        if value.device.type == "meta":
            raise ValueError(f"`state` of {label} must have 'step' with a value. Received: a "
                             f"'step' on the meta device")
        v = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        value = torch.tensor(v, dtype=_scalar_dtype())
    else:
        raise ValueError(f"`state` of {label} must have 'step' as a real number (a 0-d tensor). "
                         f"Received: 'step'={value!r}")
    if not (v >= 0 and v == v and v != float("inf") and float(v).is_integer()):
        raise ValueError(f"`state` of {label} must have 'step' as a count >= 0. "
                         f"Received: 'step'={v}")
    if not value.is_floating_point():
        value = value.to(_scalar_dtype())
    return value


def _checked_tensor(label: str, key: str, value: Any, p: Tensor) -> Tensor:
    if not torch.is_tensor(value):
        raise ValueError(f"`state` of {label} must have {key!r} as a tensor shaped like the "
                         f"parameter, {_shape(p)}. Received: {key!r}={type(value).__name__}")
    if tuple(value.shape) != tuple(p.shape):
        raise ValueError(f"`state` of {label} must have {key!r} shaped like the parameter, "
                         f"{_shape(p)}. Received: {key!r} of shape {_shape(value)}")
    if value.is_complex() != p.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"`state` of {label} must have {key!r} of a real floating dtype like "
                         f"the parameter's ({p.dtype}). Received: {key!r} of dtype {value.dtype}")
    if value.is_sparse or value.layout != torch.strided:
        raise ValueError(f"`state` of {label} must have {key!r} as a dense tensor. Received: "
                         f"{key!r} with layout {value.layout}")
    if value.device.type == "meta":
        raise ValueError(f"`state` of {label} must have {key!r} with values. Received: "
                         f"{key!r} on the meta device")
    # torch's policy: floating state follows the parameter's dtype and device
    return value.to(dtype=p.dtype if p.is_floating_point() else value.dtype, device=p.device)


def _checked_state(opt: "Optimizer", state_dict: dict) -> dict:
    """A copy of ``state_dict`` that is safe to load into ``opt``; raises ``ValueError``."""
    if "state" not in state_dict or "param_groups" not in state_dict:
        fail("state_dict", "a mapping with 'state' and 'param_groups'",
             sorted(map(str, state_dict)), ValueError)
    saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(saved_groups, (list, tuple)) or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), (list, tuple))
            for g in saved_groups):
        fail("param_groups", "a list of groups, each with a list of 'params'",
             type(saved_groups).__name__)
    if not isinstance(saved_state, Mapping):
        fail("state", "a mapping from parameter index to its state",
             type(saved_state).__name__, ValueError)
    sizes = [len(g["params"]) for g in opt.param_groups]
    saved_sizes = [len(g["params"]) for g in saved_groups]
    if sizes != saved_sizes:
        fail("param_groups", f"{len(sizes)} group(s) of sizes {sizes} (this optimizer's)",
             f"{len(saved_sizes)} group(s) of sizes {saved_sizes}")
    where: dict[Any, tuple[Tensor, str, dict]] = {}
    index = 0
    groups = []
    for group, saved in zip(opt.param_groups, saved_groups):
        hyper = {**opt.defaults, **{k: v for k, v in saved.items() if k != "params"}}
        opt.transform.validate(hyper)
        check_choice("backend", hyper.get("backend", "auto"), BACKENDS)
        for j, (p, pid) in enumerate(zip(group["params"], saved["params"])):
            if not isinstance(pid, int) or isinstance(pid, bool) or pid in where:
                fail("param_groups", "lists of distinct integer parameter indices",
                     list(saved["params"]))
            where[pid] = (p, _param_label(group, j, index), hyper)
            index += 1
        groups.append(saved)
    names = opt.transform.state_names
    state = {}
    seen_memory = {(p.device, p.untyped_storage().data_ptr()) for p, _, _ in where.values()
                   if p.numel()}
    for pid, st in saved_state.items():
        if pid not in where:
            fail("state", f"keyed by the indices of the {index} parameters of the groups",
                 pid if not isinstance(pid, Tensor) else type(pid).__name__)
        p, label, hyper = where[pid]
        if not isinstance(st, Mapping):
            raise ValueError(f"`state` of {label} must be a mapping of names to values. "
                             f"Received: {type(st).__name__}")
        out = {}
        for key, value in st.items():
            if not isinstance(key, str):
                raise ValueError(f"`state` of {label} must have string names. Received: {key!r}")
            if names is not None and key not in names:
                raise ValueError(f"`state` of {label} must have names among "
                                 f"{', '.join(map(repr, names))}. Received: {key!r}")
        if names is None:
            state[pid] = dict(st)
            continue
        spec = opt.transform.state_spec(hyper) if st else {}
        missing = [k for k in spec if st.get(k) is None]
        if missing:
            raise ValueError(f"`state` of {label} must have {', '.join(map(repr, missing))} "
                             f"(kept under the loaded options). Received: names "
                             f"{sorted(st)}")
        for key, value in st.items():
            if value is None:   # torch keeps momentum_buffer=None when momentum is 0
                out[key] = value
            elif key == "step":
                out[key] = _checked_step(label, value)
            else:
                value = _checked_tensor(label, key, value, p)
                memory = (value.device, value.untyped_storage().data_ptr())
                if (value.stride() != p.stride() or memory in seen_memory
                        or value.storage_offset() != 0
                        or value.untyped_storage().nbytes() != value.numel() * value.element_size()):
                    value = torch.empty_like(p, memory_format=torch.preserve_format).copy_(value)
                    memory = (value.device, value.untyped_storage().data_ptr())
                if value.numel():
                    seen_memory.add(memory)
                out[key] = value
        state[pid] = out
    return {**state_dict, "state": state, "param_groups": groups}


def check_torch_flags(*, foreach=None, capturable=False, differentiable=False,
                      fused=None) -> None:
    """Check torch's implementation flags: accepted for drop-in use, not all supported.

    >>> check_torch_flags(foreach=True)          # accepted
    >>> check_torch_flags(fused=True)
    Traceback (most recent call last):
        ...
    ValueError: ...
    """
    if foreach is not None:
        check_bool("foreach", foreach)
    if capturable is not False:
        fail("capturable", "False (CUDA-graph capture is not supported)", capturable)
    if differentiable is not False:
        fail("differentiable", "False (the update is not differentiable)", differentiable)
    if fused not in (None, False):
        fail("fused", "None or False (no fused backend is installed)", fused)
