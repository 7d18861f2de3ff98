"""Backends of a chain's update: the same math in fewer passes over memory.

``Optimizer._update_group`` asks :func:`choose` which path runs a group's step and
hands it to :func:`run`; the group's ``backend`` ("auto" unless given to the
constructor or a param group) decides:

- ``"reference"``: the chain's transforms one after the other on whole tensors, with
  torch's multi-tensor operations (each elementwise transform's per-element math,
  :mod:`descend.optim.elementwise`, evaluated node by node).
- ``"tiled"`` (:mod:`.tiled`): the whole chain's per-element math with torch's
  operations on cache-sized tiles, one trip to main memory per step instead of one
  per operation; any device.
- ``"kernel"`` (:mod:`.cpu`): a CPU kernel generated from the per-element math (numba):
  one pass over memory, one call per group.
- ``"triton"`` (:mod:`.triton_kernels`): a Triton kernel generated from the same math:
  one launch per group on CUDA (on CPU tensors, Triton's interpreter).
- ``"foreach"`` / ``"fused"`` (:mod:`.torch_kernels`): torch's own multi-tensor or fused
  kernels, when the chain is exactly one of torch's algorithms (asked of the
  transforms).
- ``"auto"``: on CPU, float32/float64: ``"foreach"`` for plain SGD (torch's one pass,
  measured faster than its fused kernel), torch's ``"fused"`` Adam/AdamW (measured 5-7%
  faster than the generated kernel), else ``"kernel"`` when numba is installed,
  else ``"fused"`` where torch has a fused kernel, else ``"tiled"``; on CUDA: torch's
  ``"fused"`` kernel where it has one (SGD, Adam, AdamW), else ``"triton"`` when Triton
  is installed, else ``"foreach"`` where torch has the algorithm; the reference path
  otherwise, and always inside ``torch.compile`` (one graph of plain tensor operations
  that the compiler fuses), for float16/bfloat16 parameters on CPU and for parameters
  on several devices.

"tiled", "kernel" and "triton" (float32 and float64; on CPU) compute exactly the
reference path's numbers: every operation of the program in its order, correctly
rounded (tested bitwise equal). torch's kernels order some operations differently
(tested to 1e-12 in float64). A forced backend that cannot compute the group raises
``ValueError`` naming the reason. Which path runs depends only on the group's options,
the parameters and the installed packages, never on what ran before, so a resumed run
takes the uninterrupted run's path.

Example:
    >>> import torch
    >>> from descend.optim import RMSprop
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = RMSprop([w], lr=0.1, backend="tiled")
    >>> for _ in range(2):
    ...     (w ** 2).sum().backward(); _ = opt.step(); opt.zero_grad()
    >>> opt.last_backend
    'tiled'
"""

from __future__ import annotations

from torch import Tensor

import torch

from descend.optim.backends import cpu, tiled, torch_kernels, triton_kernels
from descend.optim.backends.torch_kernels import HAS_FUSED, torch_config
from descend.optim.elementwise import is_dtensor

__all__ = ["BACKENDS", "choose", "run", "available", "cpu", "tiled", "torch_kernels",
           "triton_kernels", "generated_why"]

#: How a chain's update may run.
BACKENDS = ("auto", "reference", "tiled", "kernel", "triton", "foreach", "fused")

_TORCH_DTYPES = {"cpu": (torch.float32, torch.float64),
                 "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def available(backend: str) -> bool:
    """Whether the package a backend needs is installed ("kernel": numba, "triton": Triton)."""
    if backend == "kernel":
        return cpu.available()
    if backend == "triton":
        return triton_kernels.available()
    return backend in BACKENDS


def _device(params: list[Tensor]) -> str | None:
    dev = params[0].device
    if any(p.device != dev for p in params):
        return None
    return dev.type


def generated_why(transform, group) -> str | None:
    """Why the chain's per-element math cannot run as one program (None when it can)."""
    for t in getattr(transform, "transforms", (transform,)):
        if not t.elementwise:
            return f"{type(t).__name__} is not elementwise"
    prog = transform.program(group)
    for op, args, _ in prog.nodes:
        if op == "norm":
            stack, seen = [args[0]], set()
            while stack:
                i = stack.pop()
                if i in seen:
                    continue
                seen.add(i)
                o, a, _ = prog.nodes[i]
                if o in ("state", "randn"):
                    return "a norm of values that depend on the state"
                if o not in ("const", "hyper", "step", "fresh", "tensor", "grad", "param"):
                    stack.extend(a if o != "norm" else [a[0]])
    return None


#: Algorithms for which "auto" on CPU calls torch's fused kernel (measured faster).
CPU_TORCH_FIRST = ("adam",)


def _plain_sgd(algo, args) -> bool:
    return algo == "sgd" and not args.get("momentum")


def choose(transform, group: dict, params: list[Tensor]) -> tuple[str, str]:
    """``(backend, why)``: the path ``group``'s ``backend`` setting gives these params.

    ``why`` explains a forced backend that cannot run (then ``backend`` is "").

    >>> import torch
    >>> from descend.optim import Adam
    >>> w = torch.nn.Parameter(torch.zeros(3)); opt = Adam([w], lr=0.1)
    >>> g = opt.param_groups[0]
    >>> choose(opt.transform, {**g, "backend": "tiled"}, [w])
    ('tiled', '')
    >>> choose(opt.transform, {**g, "backend": "foreach", "clip_norm": 1.0}, [w])
    ('', "clipping is not in torch's adam")
    """
    want = group.get("backend", "auto")
    if want == "reference":
        return "reference", ""
    dev = _device(params)
    algo, why_torch, args = torch_config(transform, group)
    if any(is_dtensor(p) for p in params):
        # FSDP2's sharded parameters: DTensor has sharding rules for torch's multi-tensor
        # kernels, not for its fused ones, and the generated kernels read raw memory
        if want == "auto":
            return ("foreach", "") if algo is not None else ("reference", "")
        if want not in ("foreach",):
            return "", ("DTensor parameters (FSDP2) run on 'auto', 'foreach' or 'reference', "
                        f"not {want!r}")
    why_gen = generated_why(transform, group)
    if want == "auto":
        if torch.compiler.is_compiling() or dev is None:
            return "reference", ""
        dtypes = {p.dtype for p in params}
        if not dtypes <= set(_TORCH_DTYPES.get(dev, ())):
            return "reference", ""
        if dev == "cpu":
            # measured (benchmarks/results/optimizer_step_cpu.md): torch's foreach SGD
            # beats its fused one, and its fused Adam/AdamW the generated kernel (by 5-7%);
            # the generated kernel beats everything of torch's for the other algorithms
            if _plain_sgd(algo, args):
                return "foreach", ""
            if algo in CPU_TORCH_FIRST:
                return "fused", ""
            if why_gen is None and cpu.available():
                return "kernel", ""
            if algo is not None and algo in HAS_FUSED["cpu"]:
                return "fused", ""
            if why_gen is None:
                return "tiled", ""
            return ("foreach", "") if algo is not None else ("reference", "")
        if algo is not None and algo in HAS_FUSED.get(dev, ()):
            return "fused", ""
        if why_gen is None and dev == "cuda" and triton_kernels.available():
            return "triton", ""
        if algo is not None:
            return "foreach", ""
        return "reference", ""
    if want in ("tiled", "kernel", "triton"):
        if why_gen is not None:
            return "", why_gen
        if want == "kernel":
            if not cpu.available():
                return "", "numba is not installed (pip install descend[cpu])"
            if dev != "cpu" or not cpu.supported(params):
                return "", "the CPU kernels take float32/float64 parameters on the CPU"
        if want == "triton":
            if not triton_kernels.available():
                return "", "Triton is not installed (pip install descend[gpu])"
            if dev is None or not triton_kernels.supported(params):
                return "", ("the Triton kernels take float32/bfloat16/float16/float64 "
                            "parameters on one device")
        return want, ""
    if algo is None:
        return "", why_torch
    if want == "fused" and algo not in HAS_FUSED.get(dev or "", ()):
        return "", f"torch has no fused {algo} kernel for these parameters"
    return want, ""


_RUN = {"tiled": tiled.run, "kernel": cpu.run, "triton": triton_kernels.run}


def run(backend: str, opt, group: dict, params: list[Tensor], grads: list[Tensor],
        state: list[dict]) -> None:
    """Run the group's step on ``backend`` (one :func:`choose` gave)."""
    if backend in _RUN:
        _RUN[backend](opt, group, params, grads, state)
    else:
        torch_kernels.run(backend, opt, group, params, grads, state)
