"""Run a chain with torch's own kernels when it is exactly an algorithm torch implements.

A chain built by :func:`~descend.optim.momentum.with_extras` around SGD's, Adagrad's,
RMSprop's, Adadelta's or Adam's core, with no option torch lacks (clipping, gradient
noise, L1, ``eps_root``, the textbook momentum form, RMSprop's Nesterov, look-ahead,
excluded parameters), computes the same math as ``torch.optim``'s functional form of
that algorithm. Then this module calls torch's multi-tensor (``foreach``) or fused
kernels on the chain's own state, which keeps torch's names (``exp_avg``, ``sum``,
``momentum_buffer``...), so the state dict is the same whichever path ran.

The math is torch's, not written again here: what this module adds is the mapping
from a parameter group to torch's arguments, and the creation of missing state with
the values the reference transforms would give it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor
from torch.optim import adadelta as _adadelta, adagrad as _adagrad, adam as _adam
from torch.optim import rmsprop as _rmsprop, sgd as _sgd

from descend.optim.adaptive import (
    scale_by_adadelta, scale_by_adagrad, scale_by_adam, scale_by_inverse_time, scale_by_rms,
)
from descend.optim.core import Chain, _scalar_dtype
from descend.optim.momentum import momentum_step, scale_by_lr, with_extras

__all__ = ["algorithm", "torch_config", "run", "HAS_FUSED"]


def _signature(*core) -> tuple[type, ...]:
    return tuple(type(t) for t in with_extras(*core).transforms)


_ALGORITHMS = {
    _signature(momentum_step()): "sgd",
    _signature(scale_by_adagrad(), scale_by_inverse_time(), scale_by_lr()): "adagrad",
    _signature(scale_by_rms(), momentum_step()): "rmsprop",
    _signature(scale_by_adadelta(), scale_by_lr()): "adadelta",
    _signature(scale_by_adam(), scale_by_lr()): "adam",
}

#: Algorithms with a fused kernel in torch, per device type.
HAS_FUSED = {"cpu": {"sgd", "adagrad", "adam"}, "cuda": {"sgd", "adam"}}


def algorithm(transform: Chain) -> str | None:
    """The torch algorithm whose chain ``transform`` is ("adam", "sgd", ...), or None.

    >>> import torch
    >>> from descend.optim import SGD, chain, scale_by_lr
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> algorithm(SGD([w], lr=0.1).transform), algorithm(chain(scale_by_lr()))   # a hand-made chain
    ('sgd', None)
    """
    seen = transform.__dict__.get("_descend_algorithm")
    if seen is not None and seen[0] is transform.transforms:
        return seen[1]
    algo = _ALGORITHMS.get(tuple(type(t) for t in transform.transforms))
    transform.__dict__["_descend_algorithm"] = (transform.transforms, algo)
    return algo


def cross_cutting_off(group: Mapping[str, Any]) -> str | None:
    """The first cross-cutting option of ``group`` that no fused kernel computes, or None:
    clipping, gradient noise, L1, or weight decay restricted by ``weight_decay_exclude``.

    >>> cross_cutting_off({"clip_norm": 1.0}), cross_cutting_off({"l1": 0.0})
    ('clipping', None)
    """
    if group.get("clip_value") is not None or group.get("clip_norm") is not None:
        return "clipping"
    if group.get("grad_noise", 0.0) > 0:
        return "grad_noise"
    if group.get("l1", 0.0) > 0:
        return "l1"
    if group.get("weight_decay", 0.0) and group.get("weight_decay_exclude", "none") != "none":
        return "weight_decay_exclude"
    return None


def _extras_off(group: Mapping[str, Any], decoupled_ok: bool) -> str | None:
    """Why the cross-cutting options of ``group`` are outside torch's algorithm, or None."""
    why = cross_cutting_off(group)
    if why is not None:
        return why
    wd = group.get("weight_decay", 0.0)
    if wd and group.get("decoupled_weight_decay", False) and not decoupled_ok:
        return "decoupled_weight_decay"
    if group.get("eps_root", 0.0):
        return "eps_root"
    return None


def _momentum_off(group: Mapping[str, Any], nesterov_ok: bool) -> str | None:
    m = group.get("momentum", 0.0)
    if m and group.get("momentum_form", "torch") != "torch":
        return "momentum_form"
    if group.get("lookahead", False):
        return "lookahead"
    if group.get("nesterov", False) and not nesterov_ok:
        return "nesterov"
    return None


def torch_config(transform: Chain, group: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(algorithm, "")`` when torch's kernels compute this group, else ``(None, why)``.

    >>> import torch
    >>> from descend.optim import RMSprop
    >>> opt = RMSprop([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    >>> g = opt.param_groups[0]
    >>> torch_config(opt.transform, g), torch_config(opt.transform, {**g, "clip_norm": 1.0})
    (('rmsprop', ''), (None, "clipping is not in torch's rmsprop"))
    """
    algo = algorithm(transform)
    if algo is None:
        return None, "the chain is not one of torch's algorithms"
    why = _extras_off(group, decoupled_ok=algo == "adam")
    if why is None and algo == "sgd":
        why = _momentum_off(group, nesterov_ok=True)
    if why is None and algo == "rmsprop":
        why = _momentum_off(group, nesterov_ok=False)
        if why is None and group.get("dampening", 0.0):
            why = "dampening"
    return (algo, "") if why is None else (None, f"{why} is not in torch's {algo}")


# -- state ---------------------------------------------------------------------------
def _get(state: list[dict], params: list[Tensor], key: str, fill: float = 0.0) -> list[Tensor]:
    out = []
    for st, p in zip(state, params):
        v = st.get(key)
        if v is None:
            v = st[key] = torch.full_like(p, fill, memory_format=torch.preserve_format)
        out.append(v)
    return out


def _steps(state: list[dict], fused: bool, params: list[Tensor]) -> list[Tensor]:
    out = []
    for st, p in zip(state, params):
        s = st.get("step")
        if s is None:
            s = st["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
        if fused and (s.device != p.device or s.dtype != torch.float32):
            # torch's fused kernels read the counter on the parameters' device, in float32
            s = st["step"] = s.to(p.device, torch.float32)
        out.append(s)
    return out


# -- one call per algorithm ------------------------------------------------------------
def _run_sgd(group, params, grads, state, flags):
    m = group["momentum"]
    bufs = [st.get("momentum_buffer") for st in state] if m else [None] * len(params)
    fresh = [b is None for b in bufs]
    if m and any(fresh) and not all(fresh):
        # torch's kernels take either no buffers (the first step) or all of them
        for part in (True, False):
            idx = [i for i, f in enumerate(fresh) if f == part]
            _run_sgd(group, [params[i] for i in idx], [grads[i] for i in idx],
                     [state[i] for i in idx], flags)
        return
    _sgd.sgd(params, grads, bufs, **flags, weight_decay=group["weight_decay"], momentum=m,
             lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
             maximize=group["maximize"])
    if m:
        for st, b in zip(state, bufs):
            st["momentum_buffer"] = b


def _run_adagrad(group, params, grads, state, flags):
    sums = _get(state, params, "sum", group["initial_accumulator_value"])
    steps = _steps(state, bool(flags.get("fused")), params)
    _adagrad.adagrad(params, grads, sums, steps, **flags, lr=group["lr"],
                     weight_decay=group["weight_decay"], lr_decay=group["lr_decay"],
                     eps=group["eps"], maximize=group["maximize"])


def _run_rmsprop(group, params, grads, state, flags):
    sq = _get(state, params, "square_avg")
    ga = _get(state, params, "grad_avg") if group["centered"] else []
    # torch starts the buffer at 0: m * 0 + u = u, the reference's first-step copy
    mb = _get(state, params, "momentum_buffer") if group["momentum"] > 0 else []
    steps = _steps(state, False, params)
    _rmsprop.rmsprop(params, grads, sq, ga, mb, steps, **flags, maximize=group["maximize"],
                     lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                     weight_decay=group["weight_decay"], momentum=group["momentum"],
                     centered=group["centered"])


def _run_adadelta(group, params, grads, state, flags):
    sq = _get(state, params, "square_avg")
    acc = _get(state, params, "acc_delta")
    steps = _steps(state, False, params)
    _adadelta.adadelta(params, grads, sq, acc, steps, **flags, lr=group["lr"],
                       rho=group["rho"], eps=group["eps"], weight_decay=group["weight_decay"],
                       maximize=group["maximize"])


def _run_adam(group, params, grads, state, flags):
    s = _get(state, params, "exp_avg")
    r = _get(state, params, "exp_avg_sq")
    rmax = _get(state, params, "max_exp_avg_sq") if group["amsgrad"] else []
    steps = _steps(state, bool(flags.get("fused")), params)
    b1, b2 = group["betas"]
    _adam.adam(params, grads, s, r, rmax, steps, **flags,
               decoupled_weight_decay=group["decoupled_weight_decay"] and bool(group["weight_decay"]),
               amsgrad=group["amsgrad"], beta1=b1, beta2=b2, lr=group["lr"],
               weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"])


_RUN: dict[str, Callable] = {"sgd": _run_sgd, "adagrad": _run_adagrad, "rmsprop": _run_rmsprop,
                             "adadelta": _run_adadelta, "adam": _run_adam}


def run(algo: str, kind: str, group: dict, params: list[Tensor], grads: list[Tensor],
        state: list[dict]) -> None:
    """One step of torch's ``algo`` with its ``kind`` ("foreach" or "fused") kernels."""
    if kind == "fused":
        flags = {"fused": True, "foreach": False}
    else:
        flags = {"foreach": True}
        if algo in ("adam", "sgd", "adagrad"):
            flags["fused"] = False
    _RUN[algo](group, params, grads, state, flags)
