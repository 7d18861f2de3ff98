"""Fast paths for a chain's update: the same math in fewer passes over memory.

``Optimizer._update_group`` asks :func:`dispatch` first; the group's ``backend``
("auto" unless given to the constructor or a param group) chooses the path:

- ``"reference"``: the chain's transforms on whole tensors (multi-tensor ops).
- ``"kernel"``: descend's own kernels for RMSprop and Adadelta (:mod:`.kernels`), the
  two algorithms torch has no fused CPU kernel for: RMSprop through torch's fused Adam
  kernel (``beta1=0``, no bias correction) where the options allow, else a fixed
  sequence of in-place operations on cache-sized tiles with preallocated scratch.
- ``"tiled"``: the same transforms, run on cache-sized tiles of the tensors
  (:mod:`.tiled`) - one trip to main memory per step instead of one per operation.
  For chains of elementwise transforms, on any device.
- ``"foreach"`` / ``"fused"``: torch's own multi-tensor or fused kernels
  (:mod:`.torch_kernels`), when the chain is exactly SGD, Adagrad, RMSprop, Adadelta
  or Adam/AdamW with options torch has. torch has fused kernels for SGD, Adagrad and
  Adam on CPU and for SGD and Adam on CUDA.
- ``"auto"``: ``"fused"`` when torch has a fused kernel for this chain and device,
  else on CPU ``"kernel"`` when one computes the group, else ``"tiled"`` when the
  chain allows it, else ``"foreach"`` when torch has the algorithm, else the reference
  path. Float16/bfloat16 parameters on CPU and parameters on several devices always
  take the reference path under "auto".

The first step of a group (and any step whose options would create new state, such
as turning on ``amsgrad``) runs the reference path under "tiled" and "kernel", so the
state is made by the transforms themselves. A forced backend that cannot compute the
group raises ``ValueError`` naming the reason.

Results: "tiled" runs the same operations on the same numbers as the reference and
is tested equal to it; "kernel", "foreach" and "fused" are tested equal to the
reference in float64 to 1e-12 (they order some operations differently, e.g. AdamW's
decay multiplies w by (1 - lr wd)).

Example:
    >>> import torch
    >>> from descend.optim import RMSprop
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = RMSprop([w], lr=0.1, backend="tiled")
    >>> for _ in range(2):
    ...     (w ** 2).sum().backward(); _ = opt.step(); opt.zero_grad()
    >>> opt.last_backend
    'tiled'
    >>> opt = RMSprop([w], lr=0.1)   # backend="auto": descend's kernel on CPU
    >>> for _ in range(2):
    ...     (w ** 2).sum().backward(); _ = opt.step(); opt.zero_grad()
    >>> opt.last_backend
    'kernel'
"""

from __future__ import annotations

from torch import Tensor

from descend._validation import fail
from descend.optim.fused import kernels, tiled, torch_kernels
from descend.optim.fused.kernels import kernel_config
from descend.optim.fused.tiled import tiled_config
from descend.optim.fused.torch_kernels import HAS_FUSED, torch_config

__all__ = ["dispatch", "choose", "kernels", "tiled", "torch_kernels"]

_TORCH_DTYPES = {"cpu": ("float32", "float64"),
                 "cuda": ("float16", "bfloat16", "float32", "float64")}


def _device_ok(params: list[Tensor]) -> str | None:
    dev = params[0].device
    if any(p.device != dev for p in params):
        return None
    return dev.type


def choose(transform, group: dict, params: list[Tensor]) -> tuple[str, str]:
    """``(backend, why)``: the path ``group``'s ``backend`` setting gives these params.

    ``why`` explains a forced backend that cannot run (then ``backend`` is "").

    >>> import torch
    >>> from descend.optim import Adam
    >>> w = torch.nn.Parameter(torch.zeros(3)); opt = Adam([w], lr=0.1)
    >>> g = opt.param_groups[0]
    >>> choose(opt.transform, {**g, "backend": "tiled"}, [w])
    ('tiled', '')
    >>> choose(opt.transform, {**g, "backend": "kernel"}, [w])
    ('', 'descend has kernels for RMSprop and Adadelta only')
    >>> choose(opt.transform, {**g, "backend": "foreach", "clip_norm": 1.0}, [w])
    ('', "clipping is not in torch's adam")
    """
    want = group.get("backend", "auto")
    if want == "reference":
        return "reference", ""
    algo, why_torch = torch_config(transform, group)
    kernel_algo, why_kernel = kernel_config(transform, group)
    why_tiled = tiled_config(transform, group)
    dev = _device_ok(params)
    if want == "auto":
        if dev is None or str(params[0].dtype).replace("torch.", "") not in _TORCH_DTYPES.get(dev, ()):
            return "reference", ""
        if algo is not None and algo in HAS_FUSED.get(dev, ()):
            return "fused", ""
        if dev == "cpu" and kernel_algo is not None:
            return "kernel", ""
        if dev == "cpu" and why_tiled is None:
            return "tiled", ""
        if algo is not None:
            return "foreach", ""
        return "reference", ""
    if want == "tiled":
        return ("tiled", "") if why_tiled is None else ("", why_tiled)
    if want == "kernel":
        return ("kernel", "") if kernel_algo is not None else ("", why_kernel)
    if algo is None:
        return "", why_torch
    if want == "fused" and algo not in HAS_FUSED.get(dev or "", ()):
        return "", f"torch has no fused {algo} kernel for these parameters"
    return want, ""


def dispatch(opt, group: dict, params: list[Tensor], grads: list[Tensor],
             state: list[dict]) -> bool:
    """Run the group's step on a fast path; False when the reference path must run it."""
    backend, why = choose(opt.transform, group, params)
    if not backend:
        fail("backend", f"a backend that computes this group ({why})", group["backend"])
    opt.last_backend = backend
    if backend == "reference":
        return False
    if backend in ("tiled", "kernel"):
        # the transforms make their state lazily: when a state the options need is not
        # there yet, let the reference path make it. Decided from the state alone (not
        # from what this optimizer ran before), so that a resumed run takes the path the
        # uninterrupted run takes
        spec = opt.transform.state_spec(group)
        if any(st.get(k) is None for st in state for k in spec):
            opt.last_backend = "reference"
            opt._reference_update(group, params, grads, state)
            return True
        if backend == "tiled":
            tiled.run(opt, group, params, grads, state)
        else:
            kernels.run(opt, torch_kernels.algorithm(opt.transform), group, params, grads, state)
        return True
    torch_kernels.run(torch_kernels.algorithm(opt.transform), backend, group, params, grads, state)
    return True
