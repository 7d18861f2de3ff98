"""descend's own CPU kernels for the algorithms torch has no fused kernel for: RMSprop
(plain, centered, with momentum in either form, Nesterov) and Adadelta.

torch's fastest CPU RMSprop and Adadelta are its single-tensor loops: seven to eleven
whole-tensor operations per parameter, each one pass over memory, with freshly allocated
temporaries. The kernels here compute the same math with two tools:

- **RMSprop through torch's fused Adam kernel.** RMSprop's preconditioned update is
  Adam's with ``beta1=0`` and no bias correction: ``exp_avg = 0 * exp_avg + 1 * g = g``,
  ``v = alpha v + (1 - alpha) g*g``, ``x -= lr * g / (sqrt(v) + eps)``. torch's fused
  CPU Adam kernel (``torch._fused_adam_``) does that in one pass over memory. It runs
  with ``beta2=alpha``, ``exp_avg`` in the optimizer's gradient workspace (scratch, not
  state) and step counters of 2**40 that are not the parameters' own, so that
  ``alpha ** step == 0`` and both bias corrections are 1; the parameters' ``step`` is
  counted as the reference counts it. Without momentum the kernel's "parameter" is the
  parameter (its coupled weight decay and ``maximize`` are RMSprop's). With momentum it
  is the momentum buffer: ``b <- m b`` first, then the kernel adds ``(1 - dampening) u``
  (torch form, ``lr = -(1 - dampening)``) or ``-lr u`` (textbook form) to it, then
  ``w += -lr b`` or ``w += v``: three calls for the whole group. Used when the group
  has no ``centered``, ``eps_root``, active Nesterov, and no weight decay with momentum
  or decoupled decay, on CPU with contiguous tensors of one dtype.
- **Every other case on cache-sized tiles**: each large tensor is cut into slices of
  ``TILE_BYTES``; for each slice a fixed sequence of in-place torch operations (and
  ``out=`` into three preallocated scratch slices, never a new tensor) runs while the
  slice is in the CPU's cache. Tensors under ``SMALL_ELEMS`` elements (biases, norms)
  are packed together and run through the chain's own transforms, one multi-tensor
  call per operation.

Options these kernels compute: everything of torch's RMSprop and Adadelta (``lr``,
``alpha``/``rho``, ``eps``, ``weight_decay``, ``momentum``, ``centered``,
``maximize``) plus descend's ``eps_root``, ``dampening``, ``nesterov``, ``lookahead``,
``momentum_form="textbook"`` and ``decoupled_weight_decay``. Clipping, gradient noise,
L1 and ``weight_decay_exclude`` are left to the "tiled" and reference paths.

The state is the reference's (same names, made by one reference step: the dispatcher
runs the reference path first, as for "tiled"). Results equal the reference's up to
round-off of reordered operations (``addcdiv`` for divide-then-scale, Adadelta's
``sqrt(a / b)`` for ``sqrt(a) / sqrt(b)``, the fused Adam kernel's arithmetic): tested to
1e-12 in float64.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from descend.optim.core import Chain
from descend.optim.fused.tiled import cached_plan, chain_step, contiguous, flat_grad
from descend.optim.fused.torch_kernels import algorithm, cross_cutting_off

__all__ = ["TILE_BYTES", "SMALL_ELEMS", "ALGORITHMS", "FUSED_ADAM_FOR_RMSPROP",
           "kernel_config", "run"]

#: Bytes of one tensor's slice in a tile (a tile holds up to eight such slices).
TILE_BYTES = 1 << 20

#: Tensors with fewer elements are packed together and run through the chain's code.
SMALL_ELEMS = 1 << 13

#: Algorithms with a kernel here.
ALGORITHMS = ("rmsprop", "adadelta")

#: Run RMSprop through torch's fused Adam kernel where it can (else on tiles).
FUSED_ADAM_FOR_RMSPROP = True

# step count under which alpha ** step underflows to 0 for every alpha the trick takes
_NO_BIAS_STEP = float(2 ** 40)


def kernel_config(transform: Chain, group: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(algorithm, "")`` when a kernel here computes ``group``, else ``(None, why)``.

    >>> import torch
    >>> from descend.optim import RMSprop
    >>> opt = RMSprop([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    >>> g = opt.param_groups[0]
    >>> kernel_config(opt.transform, g), kernel_config(opt.transform, {**g, "l1": 0.01})
    (('rmsprop', ''), (None, "l1 is not in descend's rmsprop kernel"))
    """
    algo = algorithm(transform)
    if algo not in ALGORITHMS:
        return None, "descend has kernels for RMSprop and Adadelta only"
    why = cross_cutting_off(group)
    if why is not None:
        return None, f"{why} is not in descend's {algo} kernel"
    return algo, ""


# -- the plan: slices of large tensors, packs of small ones ------------------------------
class _Plan:
    """Views of the parameters and their state, per tile, built once for a set of tensors.

    Gradients are not part of the plan: a new gradient tensor comes with every backward
    after ``zero_grad(set_to_none=True)``, so each step slices the gradients it is given.
    The plan keeps the tensors it was built from, so that their ids (its key) cannot be
    taken by other tensors while it is in use.
    """

    def __init__(self, params, work, state, tile_bytes):
        self.refs = (list(params), list(work), [list(st.values()) for st in state])
        self.steps = [st["step"] for st in state if "step" in st]
        self.slices = []   # (parameter index, start, stop, p, {state name: view}, (dtype, device))
        self.sliced: list[int] = []
        self.packs = []    # (indices, ps, ws, states)
        self.scratch: dict[tuple, int] = {}  # (dtype, device) -> elements per scratch buffer
        self.uniform = len({(p.dtype, p.device) for p in params}) == 1
        self.contiguous = True
        pack: list[int] = []
        size = 0
        for i, (p, st) in enumerate(zip(params, state)):
            tensors = {k: v for k, v in st.items() if torch.is_tensor(v) and v.dim() > 0}
            ok = contiguous([p, *tensors.values()])
            self.contiguous &= ok and work[i].is_contiguous()
            n = p.numel()
            tile_elems = max(1, tile_bytes // p.element_size())
            if ok and n >= SMALL_ELEMS and p.dim() > 0:
                chunks = -(-n // tile_elems)
                step = -(-n // chunks)
                if step > 64:
                    step = -(-step // 64) * 64    # slices start on cache lines
                flat = {k: v.view(-1) for k, v in tensors.items()}
                pv = p.view(-1)
                kind = (p.dtype, p.device)
                self.sliced.append(i)
                for a in range(0, n, step):
                    b = min(n, a + step)
                    self.slices.append((i, a, b, pv[a:b], {k: v[a:b] for k, v in flat.items()},
                                        kind))
                    self.scratch[kind] = max(self.scratch.get(kind, 0), b - a)
                continue
            if size + n > tile_elems and pack:
                self.packs.append(self._pack(pack, params, work, state))
                pack, size = [], 0
            pack.append(i)
            size += n
        if pack:
            self.packs.append(self._pack(pack, params, work, state))

    @staticmethod
    def _pack(idx, params, work, state):
        return (idx, [params[i] for i in idx], [work[i] for i in idx], [state[i] for i in idx])


def _scratch(opt, plan: _Plan) -> dict[tuple, list[Tensor]]:
    """Three preallocated buffers per (dtype, device), as large as the plan's largest slice."""
    cache = opt.__dict__.setdefault("_descend_kernel_scratch", {})
    for (dtype, device), n in plan.scratch.items():
        bufs = cache.get((dtype, device))
        if bufs is None or bufs[0].numel() < n:
            cache[(dtype, device)] = [torch.empty(n, dtype=dtype, device=device) for _ in range(3)]
    return cache


# -- one slice: the chain's math as in-place operations -----------------------------------
def _grad(p, g, s, hyper):
    """The chain's gradient transforms: -g when maximizing, + wd w (coupled decay)."""
    wd = hyper["weight_decay"] if not hyper["decoupled_weight_decay"] else 0.0
    if hyper["maximize"]:
        torch.neg(g, out=s)
        if wd:
            s.add_(p, alpha=wd)
        return s
    if wd:
        return torch.add(g, p, alpha=wd, out=s)
    return g


def _apply(p, step, hyper, lr, scale=1.0):
    """w += scale * step, with decoupled decay (w += -lr wd w) added to the step first."""
    wd = hyper["weight_decay"]
    if wd and hyper["decoupled_weight_decay"]:
        if scale != 1.0:
            step.mul_(scale)
        step.add_(p, alpha=-lr * wd)
        p.add_(step)
    elif scale == 1.0:
        p.add_(step)
    else:
        p.add_(step, alpha=scale)


def _rmsprop_slice(p, g, st, s0, s1, s2, hyper):
    a, eps, eps_root, lr = hyper["alpha"], hyper["eps"], hyper.get("eps_root", 0.0), hyper["lr"]
    u = _grad(p, g, s0, hyper)
    r = st["square_avg"]
    r.mul_(a)
    r.addcmul_(u, u, value=1 - a)
    d = s1
    if hyper["centered"]:
        ga = st["grad_avg"]
        ga.lerp_(u, 1 - a)
        torch.addcmul(r, ga, ga, value=-1, out=d)
        if eps_root:
            d.add_(eps_root)
        d.sqrt_()
    elif eps_root:
        torch.add(r, eps_root, out=d)
        d.sqrt_()
    else:
        torch.sqrt(r, out=d)
    d.add_(eps)
    m = hyper["momentum"]
    decoupled = hyper["weight_decay"] and hyper["decoupled_weight_decay"]
    if m == 0:
        if decoupled:
            torch.div(u, d, out=d)
            _apply(p, d, hyper, lr, -lr)
        else:
            p.addcdiv_(u, d, value=-lr)
        return
    torch.div(u, d, out=d)            # d = the preconditioned update
    nesterov = hyper["nesterov"] and not hyper["lookahead"]
    if hyper["momentum_form"] == "torch":
        b = st["momentum_buffer"]
        b.mul_(m)
        b.add_(d, alpha=1 - hyper["dampening"])
        if nesterov:
            d.add_(b, alpha=m)
            _apply(p, d, hyper, lr, -lr)
        elif decoupled:
            torch.mul(b, -lr, out=d)
            _apply(p, d, hyper, lr)
        else:
            p.add_(b, alpha=-lr)
        return
    v = st["velocity"]
    v.mul_(m)
    v.add_(d, alpha=-lr)
    if nesterov:
        d.mul_(-lr)
        d.add_(v, alpha=m)
        _apply(p, d, hyper, lr)
    elif decoupled:
        d.copy_(v)
        _apply(p, d, hyper, lr)
    else:
        p.add_(v)


def _adadelta_slice(p, g, st, s0, s1, s2, hyper):
    rho, eps, lr = hyper["rho"], hyper["eps"], hyper["lr"]
    u = _grad(p, g, s0, hyper)
    r, acc = st["square_avg"], st["acc_delta"]
    r.mul_(rho)
    r.addcmul_(u, u, value=1 - rho)
    # sqrt(acc + eps) / sqrt(r + eps) as one root of the ratio: one pass less
    torch.add(r, eps, out=s1)
    torch.add(acc, eps, out=s2)
    s2.div_(s1)
    s2.sqrt_()
    s2.mul_(u)
    acc.mul_(rho)
    acc.addcmul_(s2, s2, value=1 - rho)
    _apply(p, s2, hyper, lr, -lr)


# -- RMSprop as torch's fused Adam with beta1 = 0 and no bias correction ------------------
def _adam_route(group) -> str | None:
    """How torch's fused Adam kernel computes this RMSprop group, or None.

    "plain": w -= lr u directly (Adam's own step, with its coupled decay and maximize);
    "torch" / "textbook": the momentum buffer is the kernel's "parameter": b <- m b
    first, then the kernel adds (1 - dampening) u (torch form) or -lr u (textbook form)
    to it, then w += -lr b (torch) or w += v (textbook).
    """
    if (group["centered"] or group.get("eps_root", 0.0)
            or not group["alpha"] ** _NO_BIAS_STEP == 0.0):
        return None
    wd = group["weight_decay"]
    if group["momentum"] == 0:
        return "plain" if not (wd and group["decoupled_weight_decay"]) else None
    if wd or (group["nesterov"] and not group["lookahead"]):
        return None
    return group["momentum_form"]


def _run_adam_route(opt, route, group, params, grads, work, state) -> None:
    cache = opt.__dict__.setdefault("_descend_no_bias_steps", {})
    steps = cache.get(len(params))
    if steps is None:
        steps = cache[len(params)] = [torch.tensor(_NO_BIAS_STEP) for _ in params]
    kw = dict(beta1=0.0, beta2=group["alpha"], eps=group["eps"], amsgrad=False,
              maximize=group["maximize"])
    sq = [st["square_avg"] for st in state]
    lr, m = group["lr"], group["momentum"]
    if route == "plain":
        torch._fused_adam_(params, grads, work, sq, [], steps, lr=lr,
                           weight_decay=group["weight_decay"], **kw)
        return
    key = "momentum_buffer" if route == "torch" else "velocity"
    bufs = [st[key] for st in state]
    torch._foreach_mul_(bufs, m)
    if route == "torch":
        torch._fused_adam_(bufs, grads, work, sq, [], steps, lr=-(1 - group["dampening"]),
                           weight_decay=0.0, **kw)
        torch._foreach_add_(params, bufs, alpha=-lr)
    else:
        torch._fused_adam_(bufs, grads, work, sq, [], steps, lr=lr, weight_decay=0.0, **kw)
        torch._foreach_add_(params, bufs)


def _uses_adam(algo: str, group, params, grads, plan) -> str | None:
    if not (FUSED_ADAM_FOR_RMSPROP and hasattr(torch, "_fused_adam_") and algo == "rmsprop"
            and plan.contiguous and plan.uniform
            and params[0].device.type == "cpu"
            and all(g.is_contiguous() and g.dtype == params[0].dtype for g in grads)):
        return None
    return _adam_route(group)


def run(opt, algo: str, group: dict, params: list[Tensor], grads: list[Tensor],
        state: list[dict]) -> None:
    """One step of ``algo`` on ``group`` with the kernels here (same math, same state)."""
    chain: Chain = opt.transform
    work = opt._workspace(params, grads, copy=False)
    plan, rebuilt = cached_plan(opt, "_descend_kernel_plans", group, params, work, state,
                                lambda: _Plan(params, work, state, TILE_BYTES))
    if rebuilt:
        torch._foreach_zero_(work)  # exp_avg of the fused-Adam route: no stale NaN in it
    if plan.steps:
        torch._foreach_add_(plan.steps, 1)
    route = _uses_adam(algo, group, params, grads, plan)
    if route is not None:
        _run_adam_route(opt, route, group, params, grads, work, state)
        return
    if plan.slices:
        scratch = _scratch(opt, plan)
        flat = {i: flat_grad(grads[i]) for i in plan.sliced}
        slice_fn = _rmsprop_slice if algo == "rmsprop" else _adadelta_slice
        for i, a, b, p, st, kind in plan.slices:
            s0, s1, s2 = scratch[kind]
            n = b - a
            slice_fn(p, flat[i][a:b], st, s0[:n], s1[:n], s2[:n], group)
    for idx, ps, ws, sts in plan.packs:
        chain_step(chain, group, ps, ws, sts, [grads[i] for i in idx])
