"""The adapter that turns a transform (a :func:`~descend.optim.core.chain`) into a real
``torch.optim.Optimizer``: parameter groups, ``step``, ``state_dict`` /
``load_state_dict`` (every loaded state checked first), and the one place where a group's
step is handed to a backend (:mod:`descend.optim.backends`).

It sits above the transforms and the backends: the transforms know no backend, and the
backends know the transforms only by asking them (their per-element math, their state,
what they are in torch's optimizers).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from descend._validation import check_bool, check_choice, check_no_unknown, fail
from descend.optim import backends, elementwise
from descend.optim.backends import BACKENDS
from descend.optim.core import Chain, Transform, scalar_dtype

__all__ = ["Optimizer", "check_torch_flags", "flags_backend", "BACKENDS", "TORCH_FLAGS"]


#: torch's implementation flags: accepted in a param group like torch's (``foreach`` and
#: ``fused`` choose the group's backend, see :func:`flags_backend`).
TORCH_FLAGS = ("foreach", "fused", "differentiable", "capturable")


def flags_backend(backend: str = "auto", *, foreach=None, fused=None,
                  where: str = "") -> str:
    """The backend torch's ``foreach`` / ``fused`` flags mean, given an explicit ``backend``.

    ``fused=True`` is "fused" (torch's fused kernel; whether it has one for the algorithm
    and the options is checked against the parameters by the optimizer), ``foreach=True``
    is "foreach" (torch's multi-tensor kernels), ``foreach=False`` the single path of
    operations on whole tensors, "reference"; ``None`` / ``fused=False`` leave
    ``backend`` as it is. Both ``True`` is refused as torch refuses it, and so is a
    ``backend`` other than "auto" that the flags contradict.

    >>> flags_backend(fused=True), flags_backend(foreach=False), flags_backend("tiled")
    ('fused', 'reference', 'tiled')
    >>> flags_backend("tiled", foreach=True)
    Traceback (most recent call last):
        ...
    ValueError: `backend` must be 'auto' or 'foreach' when foreach=True. Received: backend='tiled'
    """
    prefix = f"{where} " if where else ""
    if foreach is not None:
        check_bool(f"{prefix}foreach".strip(), foreach)
    if fused is not None:
        check_bool(f"{prefix}fused".strip(), fused)
    if fused and foreach:
        raise ValueError(f"`fused` and `foreach` cannot be True together (as in torch.optim). "
                         f"Received: {prefix}fused=True, foreach=True")
    flag, want = None, None
    if fused:
        flag, want = "fused=True", "fused"
    elif foreach:
        flag, want = "foreach=True", "foreach"
    elif foreach is False:
        flag, want = "foreach=False", "reference"
    if want is None:
        return backend
    if backend not in ("auto", want):
        raise ValueError(f"`backend` must be 'auto' or {want!r} when {flag}. "
                         f"Received: {prefix}backend={backend!r}")
    return want


def _check_group_flags(group: dict, defaults: Mapping[str, Any]) -> None:
    """Check a param group's torch flags and set the backend its ``foreach`` / ``fused``
    keys mean (a group key wins over the constructor's flags, as in torch)."""
    if "capturable" in group:
        check_bool("capturable", group["capturable"])
    if group.get("differentiable", False) is not False:
        fail("differentiable", "False (the update is not differentiable)",
             group["differentiable"])
    if "foreach" in group or "fused" in group:
        explicit = group.get("backend", "auto")
        check_choice("backend", explicit, BACKENDS)
        group["backend"] = flags_backend(explicit, foreach=group.get("foreach"),
                                         fused=group.get("fused"), where="param group")


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
        backend: "auto" (default), "reference", "tiled", "kernel", "triton", "foreach" or
            "fused": how the update runs (:mod:`descend.optim.backends`); also a per-group
            key, as are torch's ``foreach`` / ``fused`` (:func:`flags_backend`). The path
            the last group's step took is ``last_backend``. Groups may carry any other
            key (``name``, ``lr_scale``...): kept, and ignored by the math, as in torch.
        **hyper: default hyperparameters; each must be one the transform reads.

    Example:
        >>> import torch
        >>> from descend.optim import Optimizer, chain, scale_by_rms, momentum_step
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Optimizer([w], chain(scale_by_rms(), momentum_step()), lr=0.01, momentum=0.9)
        >>> (w ** 2).sum().backward(); _ = opt.step()
        >>> opt.param_groups[0]["momentum"]
        0.9

        capturable: keep the step counters and the scalars of the step (bias
            corrections) as tensors on the parameters' device, so that a step reads
            nothing back to the host and can be captured in a CUDA graph (as torch's).

    Differs from torch: ``step(closure)`` is required when a group uses look-ahead
    Nesterov (``lookahead=True``): the gradient is evaluated at the look-ahead point.
    """

    def __init__(self, params, transform: Transform, *, backend: str = "auto",
                 capturable: bool = False, _fused: bool = False, **hyper):
        if not isinstance(transform, Transform):
            fail("transform", "a Transform", transform, TypeError)
        if not isinstance(transform, Chain):
            transform = Chain(transform)
        unknown = {k: v for k, v in hyper.items() if k not in transform.defaults}
        check_no_unknown(type(self).__name__, unknown, known=transform.defaults)
        check_choice("backend", backend, BACKENDS)
        check_bool("capturable", capturable)
        defaults = {**transform.defaults, **hyper, "backend": backend}
        if capturable:
            defaults["capturable"] = True
        transform.validate(defaults)
        self.transform = transform
        super().__init__(params, defaults)
        if _fused:   # the class's fused=True: refused at once where torch has no kernel
            for group in self.param_groups:
                if group["backend"] == "fused":
                    self._check_fused(group)

    # -- torch API -------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group; its hyperparameters are checked like the constructor's.

        As in torch, a group may carry keys the math does not read (Lightning's ``name``,
        timm's ``lr_scale`` / ``layer_id``, any of the user's): they are kept in the group
        (and in the state dict) and ignored by the update. torch's flags are accepted per
        group too: ``foreach`` / ``fused`` choose the group's backend as in
        :func:`flags_backend` (``fused=True`` is refused at once where torch has no fused
        kernel for the group), ``capturable`` must be a bool and ``differentiable``
        False.
        """
        if isinstance(param_group, dict):   # check first: a refused group is never added
            _check_group_flags(param_group, self.defaults)
            merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
            self.transform.validate(merged)
            check_choice("backend", merged.get("backend", "auto"), BACKENDS)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group.get("fused"):
            try:
                self._check_fused(group)
            except ValueError:
                self.param_groups.pop()
                raise

    def _check_fused(self, group: dict) -> None:
        """Refuse ``fused=True`` for a group torch has no fused kernel for (as torch does)."""
        params = list(group["params"])
        if not params:
            return
        backend, why = backends.choose(self.transform, {**group, "backend": "fused"}, params)
        if not backend:
            raise ValueError(f"`fused=True` needs one of torch's fused kernels for the group "
                             f"({why}). Received: fused=True")

    def __setstate__(self, state: dict) -> None:
        defaults = getattr(self, "defaults", None) or state.get("defaults") or {}
        had_differentiable = "differentiable" in defaults
        super().__setstate__(state)
        if not had_differentiable:
            # torch's __setstate__ adds `differentiable` to the defaults (for its own
            # optimizers' step); ours do not read it, and a loaded state dict must come
            # back as it was saved
            self.defaults.pop("differentiable", None)
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
        work = []
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
                work.append((group, params, grads, state))
        norms = self._global_norms(work)
        if not norms:
            for group, params, grads, state in work:
                self._update_group(group, params, grads, state)
            return loss
        with elementwise.shared_norms(norms):
            for group, params, grads, state in work:
                self._update_group(group, params, grads, state)
        return loss

    # -- norms over every group (clip_norm_scope="global") ---------------------------
    def _norm_prefix(self, group: dict):
        """The part of the chain up to its first norm over all groups under ``group``'s
        options (a chain whose program's ``scope="global"`` norm node reads the values
        the norm is taken of), or None when the group has no such norm."""
        transforms = self.transform.transforms
        for k, t in enumerate(transforms):
            if not t.elementwise:
                continue
            if any(op == "norm" and args[2] == "global" for op, args, _ in t.program(group).nodes):
                cache = self.__dict__.setdefault("_descend_norm_prefix", {})
                if k not in cache:
                    bad = [type(x).__name__ for x in transforms[:k] if not x.elementwise]
                    cache[k] = (Chain(*transforms[:k + 1]), bad)
                return cache[k]
        return None

    def _global_norms(self, work: list) -> dict[float, Tensor]:
        """The norms over every group, once per step before the groups run: for each
        order ``p``, the ``p``-norm of the values every group's ``scope="global"`` norm
        reads (torch's ``_foreach_norm`` per tensor, then the norm of all of them in the
        order of the groups and parameters: with one group, exactly the group's norm)."""
        per: dict[float, list[Tensor]] = {}
        for group, params, grads, state in work:
            if group.get("clip_norm") is None:   # the one such norm of the library's chains
                continue
            found = self._norm_prefix(group)
            if found is None:
                continue
            prefix, bad = found
            if bad:
                fail("clip_norm_scope", "'group' for a chain that clips after "
                     f"{', '.join(bad)} (not elementwise)", group.get("clip_norm_scope"))
            from descend.optim.backends.generated import _prefix_values
            prog = prefix.program(group)
            why = backends.generated_why(prefix, group)
            if why is not None:
                fail("clip_norm_scope", f"'group' for a chain that clips {why}",
                     group.get("clip_norm_scope"))
            mode = elementwise.scalar_mode(group, [], params[0].device)
            vals = _prefix_values(prog, group, params, grads, state, {}, [], mode)
            for op, args, _ in prog.nodes:
                if op == "norm" and args[2] == "global":
                    per.setdefault(args[1], []).extend(torch._foreach_norm(vals[args[0]], args[1]))
        out = {}
        for p, norms in per.items():
            dev, dtype = norms[0].device, norms[0].dtype
            for t in norms[1:]:
                dtype = torch.promote_types(dtype, t.dtype)
            out[p] = torch.linalg.vector_norm(torch.stack([t.to(dev, dtype) for t in norms]), p)
        return out

    # -- the one dispatch point ------------------------------------------------------
    def _update_group(self, group: dict, params: list[Tensor], grads: list[Tensor],
                      state: list[dict]) -> None:
        """How a group's step is executed: the single place that hands it to a backend.

        :func:`descend.optim.backends.choose` picks the path from the group's ``backend``
        ("auto" by default), the chain and the parameters; the reference path runs the
        chain's transforms one after the other with torch's multi-tensor operations.
        Every fast path gives the reference path's results (tested equal to it).
        """
        backend, why = backends.choose(self.transform, group, params)
        if not backend:
            fail("backend", f"a backend that computes this group ({why})", group["backend"])
        self.last_backend = backend
        if backend == "reference":
            self._reference_update(group, params, grads, state)
        else:
            backends.run(backend, self, group, params, grads, state)

    def _reference_update(self, group: dict, params: list[Tensor], grads: list[Tensor],
                          state: list[dict]) -> None:
        """The reference path: the chain's transforms on whole tensors. An elementwise
        chain reads the gradients and makes new tensors; a chain with a transform that
        works in place gets a copy of the gradients (a persistent workspace)."""
        chain: Chain = self.transform
        updates = list(grads) if chain.elementwise else self._workspace(params, grads)
        updates = chain.update(updates, state, params, group)
        torch._foreach_add_(params, updates)

    def _workspace(self, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        space = self.__dict__.setdefault("_descend_workspace", {})
        out = []
        for p, g in zip(params, grads):
            buf = space.get(p)
            if buf is None or buf.shape != g.shape or buf.dtype != g.dtype or buf.device != g.device:
                buf = space[p] = torch.empty_like(g, memory_format=torch.preserve_format)
            out.append(buf)
        elementwise.foreach_copy_(out, grads)
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
        value = torch.tensor(v, dtype=scalar_dtype())
    else:
        raise ValueError(f"`state` of {label} must have 'step' as a real number (a 0-d tensor). "
                         f"Received: 'step'={value!r}")
    if not (v >= 0 and v == v and v != float("inf") and float(v).is_integer()):
        raise ValueError(f"`state` of {label} must have 'step' as a count >= 0. "
                         f"Received: 'step'={v}")
    if not value.is_floating_point():
        value = value.to(scalar_dtype())
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
                      fused=None, backend: str = "auto") -> str:
    """Check torch's implementation flags and return the backend they choose.

    ``foreach`` / ``fused`` mean what they mean in torch.optim (see
    :func:`flags_backend`): ``fused=True`` is torch's fused kernel, ``foreach=True`` its
    multi-tensor kernels, ``foreach=False`` the single path on whole tensors
    ("reference"); ``capturable`` must be a bool; ``differentiable=True`` is refused
    (the update is not differentiable).

    >>> check_torch_flags(foreach=True), check_torch_flags(fused=True), check_torch_flags()
    ('foreach', 'fused', 'auto')
    >>> check_torch_flags(fused=True, foreach=True)
    Traceback (most recent call last):
        ...
    ValueError: `fused` and `foreach` cannot be True together (as in torch.optim). Received: fused=True, foreach=True
    """
    check_bool("capturable", capturable)
    if differentiable is not False:
        fail("differentiable", "False (the update is not differentiable)", differentiable)
    if fused is not None:
        check_bool("fused", fused)
    check_choice("backend", backend, BACKENDS)
    return flags_backend(backend, foreach=foreach, fused=fused)
