"""Run a chain with torch's own kernels when it is exactly an algorithm torch implements.

The chain is recognised by asking its transforms what they are in torch's optimizers
(:meth:`~descend.optim.core.Transform.torch_args`): each answers, under the group's
options, nothing (it is off), the option torch lacks, or the keyword arguments of
torch's functional optimizer it stands for. A chain whose parts come in torch's order
(sign, coupled decay, preconditioner, lr decay, step, decoupled decay) and whose
arguments the algorithm takes computes the same math as ``torch.optim``'s functional
form of that algorithm; this module then calls torch's multi-tensor (``foreach``) or
fused kernels on the chain's own state, which keeps torch's names (``exp_avg``,
``sum``, ``momentum_buffer``...), so the state dict is the same whichever path ran.

The math is torch's, not written again here: what this module adds is the mapping
from a parameter group to torch's arguments, and the creation of missing state with
the values the transforms declare.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor
from torch.optim import adadelta as _adadelta, adagrad as _adagrad, adam as _adam
from torch.optim import rmsprop as _rmsprop, sgd as _sgd

from descend.optim.core import Chain, scalar_dtype

__all__ = ["algorithm", "torch_config", "run", "HAS_FUSED", "TAKES"]

#: The arguments each of torch's algorithms takes (beyond the parameters and state).
TAKES = {
    "sgd": {"lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize"},
    "adagrad": {"lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps",
                "maximize"},
    "rmsprop": {"lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"},
    "adadelta": {"lr", "rho", "eps", "weight_decay", "maximize"},
    "adam": {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
             "decoupled_weight_decay"},
}

#: Algorithms with a fused kernel in torch, per device type.
HAS_FUSED = {"cpu": {"sgd", "adagrad", "adam"}, "cuda": {"sgd", "adam"}}


def torch_config(transform: Chain, group: Mapping[str, Any]) -> tuple[str | None, str, dict]:
    """``(algorithm, "", arguments)`` when torch's kernels compute this group, else
    ``(None, why, {})``.

    >>> import torch
    >>> from descend.optim import RMSprop
    >>> opt = RMSprop([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    >>> g = opt.param_groups[0]
    >>> torch_config(opt.transform, g)[:2], torch_config(opt.transform, {**g, "clip_norm": 1.0})[:2]
    (('rmsprop', ''), (None, "clipping is not in torch's rmsprop"))
    """
    transforms = getattr(transform, "transforms", (transform,))
    parts, why = [], None
    for t in transforms:
        r = t.torch_args(group)
        if r is None:
            continue
        if isinstance(r, str):
            why = why or r
            continue
        if "lacks" in r[1]:
            why = why or r[1]["lacks"]
        parts.append(r)
    algos = [a["algorithm"] for _, a in parts if "algorithm" in a]
    if len(algos) > 1:
        return None, "the chain is not one of torch's algorithms", {}
    algo = algos[0] if algos else ("sgd" if any(st == 4 for st, _ in parts) else None)
    if algo is None:
        return None, "the chain is not one of torch's algorithms", {}
    if why is not None:
        return None, f"{why} is not in torch's {algo}", {}
    stages = [st for st, _ in parts]
    if stages != sorted(stages) or len(set(stages)) != len(stages) or 4 not in stages:
        return None, "the chain is not one of torch's algorithms", {}
    args: dict[str, Any] = {}
    for _, a in parts:
        args.update({k: v for k, v in a.items() if k not in ("algorithm", "lacks")})
    extra = sorted(set(args) - TAKES[algo])
    if extra:
        return None, f"{extra[0]} is not in torch's {algo}", {}
    return algo, "", args


def algorithm(transform: Chain, group: Mapping[str, Any]) -> str | None:
    """The torch algorithm ``transform`` computes under ``group`` ("adam", "sgd"...), or None.

    >>> import torch
    >>> from descend.optim import SGD, chain, scale_by_adam, scale_by_lr
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = SGD([w], lr=0.1)
    >>> algorithm(opt.transform, opt.param_groups[0])
    'sgd'
    >>> algorithm(chain(scale_by_lr(), scale_by_adam()), {"lr": 0.1, **scale_by_adam().defaults})
    """
    return torch_config(transform, group)[0]


# -- state ---------------------------------------------------------------------------
def _get(state: list[dict], params: list[Tensor], key: str, fill: float = 0.0) -> list[Tensor]:
    out = []
    for st, p in zip(state, params):
        v = st.get(key)
        if v is None:
            v = st[key] = torch.full_like(p, fill, memory_format=torch.preserve_format)
        out.append(v)
    return out


def _steps(state: list[dict], fused: bool, params: list[Tensor], capturable: bool) -> list[Tensor]:
    out = []
    for st, p in zip(state, params):
        s = st.get("step")
        if s is None:
            s = st["step"] = torch.tensor(0.0, dtype=scalar_dtype(),
                                          device=p.device if capturable else None)
        if (fused or capturable) and (s.device != p.device or s.dtype != torch.float32):
            # torch's fused kernels read the counter on the parameters' device, in float32
            s = st["step"] = s.to(p.device, torch.float32)
        out.append(s)
    return out


# -- one call per algorithm ------------------------------------------------------------
def _run_sgd(a, params, grads, state, flags):
    m = a.get("momentum", 0.0)
    bufs = [st.get("momentum_buffer") for st in state] if m else [None] * len(params)
    fresh = [b is None for b in bufs]
    if m and any(fresh) and not all(fresh):
        # torch's kernels take either no buffers (the first step) or all of them
        for part in (True, False):
            idx = [i for i, f in enumerate(fresh) if f == part]
            _run_sgd(a, [params[i] for i in idx], [grads[i] for i in idx],
                     [state[i] for i in idx], flags)
        return
    flags = {k: v for k, v in flags.items() if k != "capturable"}
    _sgd.sgd(params, grads, bufs, **flags, weight_decay=a.get("weight_decay", 0.0), momentum=m,
             lr=a["lr"], dampening=a.get("dampening", 0.0), nesterov=a.get("nesterov", False),
             maximize=a.get("maximize", False))
    if m:
        for st, b in zip(state, bufs):
            st["momentum_buffer"] = b


def _run_adagrad(a, params, grads, state, flags):
    sums = _get(state, params, "sum", a["initial_accumulator_value"])
    steps = _steps(state, bool(flags.get("fused")), params, False)
    flags = {k: v for k, v in flags.items() if k != "capturable"}
    _adagrad.adagrad(params, grads, sums, steps, **flags, lr=a["lr"],
                     weight_decay=a.get("weight_decay", 0.0), lr_decay=a.get("lr_decay", 0.0),
                     eps=a["eps"], maximize=a.get("maximize", False))


def _run_rmsprop(a, params, grads, state, flags):
    sq = _get(state, params, "square_avg")
    ga = _get(state, params, "grad_avg") if a["centered"] else []
    m = a.get("momentum", 0.0)
    # torch starts the buffer at 0: m * 0 + u = u, the reference's first-step copy
    mb = _get(state, params, "momentum_buffer") if m > 0 else []
    steps = _steps(state, False, params, flags.get("capturable", False))
    _rmsprop.rmsprop(params, grads, sq, ga, mb, steps, **flags, maximize=a.get("maximize", False),
                     lr=a["lr"], alpha=a["alpha"], eps=a["eps"],
                     weight_decay=a.get("weight_decay", 0.0), momentum=m, centered=a["centered"])


def _run_adadelta(a, params, grads, state, flags):
    sq = _get(state, params, "square_avg")
    acc = _get(state, params, "acc_delta")
    steps = _steps(state, False, params, flags.get("capturable", False))
    _adadelta.adadelta(params, grads, sq, acc, steps, **flags, lr=a["lr"],
                       rho=a["rho"], eps=a["eps"], weight_decay=a.get("weight_decay", 0.0),
                       maximize=a.get("maximize", False))


def _run_adam(a, params, grads, state, flags):
    s = _get(state, params, "exp_avg")
    r = _get(state, params, "exp_avg_sq")
    rmax = _get(state, params, "max_exp_avg_sq") if a["amsgrad"] else []
    steps = _steps(state, bool(flags.get("fused")), params, flags.get("capturable", False))
    b1, b2 = a["betas"]
    _adam.adam(params, grads, s, r, rmax, steps, **flags,
               decoupled_weight_decay=a.get("decoupled_weight_decay", False),
               amsgrad=a["amsgrad"], beta1=b1, beta2=b2, lr=a["lr"],
               weight_decay=a.get("weight_decay", 0.0), eps=a["eps"],
               maximize=a.get("maximize", False))


_RUN: dict[str, Callable] = {"sgd": _run_sgd, "adagrad": _run_adagrad, "rmsprop": _run_rmsprop,
                             "adadelta": _run_adadelta, "adam": _run_adam}


def run(kind: str, opt, group: dict, params: list[Tensor], grads: list[Tensor],
        state: list[dict]) -> None:
    """One step of torch's algorithm for ``group`` with its ``kind`` ("foreach" or "fused")
    kernels."""
    algo, why, args = torch_config(opt.transform, group)
    capturable = bool(group.get("capturable", False))
    if kind == "fused":
        flags = {"fused": True, "foreach": False}
    else:
        flags = {"foreach": True, "capturable": capturable}
        if algo in ("adam", "sgd", "adagrad"):
            flags["fused"] = False
    if algo in ("adam",):
        flags["capturable"] = capturable
    _RUN[algo](args, params, grads, state, flags)
