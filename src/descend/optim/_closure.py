"""Shared pieces of the optimizers that call their closure themselves (Newton, conjugate
gradients, BFGS, L-BFGS, Hessian-free, K-FAC): one flat vector over all parameters,
argument checks, a context in which ``backward()`` keeps its graph (for exact second
derivatives through a closure that calls ``loss.backward()``), and the module calls made
while a closure runs.

Not public: the optimizers built on it are (:mod:`descend.optim.second_order`,
:mod:`descend.optim.quasi_newton`, :mod:`descend.optim.hessian_free`,
:mod:`descend.optim.kfac`).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import warnings
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from descend._validation import check_int, check_range, fail

__all__: list[str] = []


def scalar(value) -> float:
    """A 0-d tensor (detached first) or a number as a Python float."""
    return float(value.detach().item()) if torch.is_tensor(value) else float(value)


def check_lr(lr):
    """``lr`` >= 0 (a number or a 0-d tensor)."""
    if torch.is_tensor(lr) and lr.numel() != 1:
        fail("lr", "a number or a 1-element tensor", lr)
    return check_range("lr", lr, ge=0)


def one_group(optimizer: torch.optim.Optimizer, why: str) -> None:
    """Refuse a second parameter group with the project's message."""
    if len(optimizer.param_groups) != 1:
        fail("params", f"a single parameter group ({why})",
             f"{len(optimizer.param_groups)} groups")


def check_dense_real(params: Sequence[Tensor], where: str) -> None:
    """Refuse complex parameters (the flat-vector methods work on real tensors)."""
    for p in params:
        if torch.is_complex(p):
            fail("params", f"real tensors ({where} does not support complex parameters)",
                 f"a {p.dtype} tensor of shape {tuple(p.shape)}", TypeError)


def check_max_params(params: Sequence[Tensor], max_params: int, where: str) -> int:
    """The number of scalars in ``params``; a clear error above ``max_params``."""
    check_int("max_params", max_params, ge=1)
    n = sum(p.numel() for p in params)
    if n > max_params:
        fail("params", f"at most max_params={max_params} scalars for {where} (it stores or "
             f"computes an n x n matrix; raise max_params or use L-BFGS, K-FAC or Shampoo)",
             f"{n} scalars")
    return n


class FlatParams:
    """All parameters of one group seen as one vector ``w`` (a copy is made on demand).

    ``grad()`` is the flat gradient (zeros where ``p.grad`` is None), ``add_(t, d)``
    does ``w <- w + t d``, ``clone()`` / ``set_(copy)`` save and restore ``w``.
    """

    def __init__(self, params: Sequence[Tensor]):
        self.params = list(params)
        self.numel = sum(p.numel() for p in self.params)

    def grad(self) -> Tensor:
        views = []
        for p in self.params:
            g = p.grad
            if g is None:
                views.append(p.new_zeros(p.numel()))
            elif g.is_sparse:
                views.append(g.to_dense().reshape(-1))
            else:
                views.append(g.reshape(-1))
        return torch.cat(views) if views else torch.zeros(0)

    def value(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def add_(self, t, d: Tensor) -> None:
        offset = 0
        for p in self.params:
            n = p.numel()
            p.add_(d[offset:offset + n].view_as(p), alpha=t)
            offset += n

    @torch.no_grad()
    def clone(self) -> list[Tensor]:
        return [p.detach().clone(memory_format=torch.contiguous_format) for p in self.params]

    @torch.no_grad()
    def set_(self, values: Sequence[Tensor]) -> None:
        for p, v in zip(self.params, values):
            p.copy_(v)

    def split(self, flat: Tensor) -> list[Tensor]:
        """``flat`` cut into the parameters' shapes (views)."""
        out, offset = [], 0
        for p in self.params:
            n = p.numel()
            out.append(flat[offset:offset + n].view_as(p))
            offset += n
        return out


# ------------------------------------------------------------- backward keeps its graph

_PATCH = threading.RLock()


@contextlib.contextmanager
def backward_keeps_graph(create_graph: bool = False) -> Iterator[None]:
    """While active, every ``backward()`` keeps its graph (``retain_graph=True``) and,
    with ``create_graph=True``, records the gradient's own graph.

    A closure written for torch's protocol calls ``loss.backward()`` and returns the loss;
    Newton's method needs ``d(grad)/dw`` and Hessian-free needs the graph again for
    Gauss-Newton products. Rather than asking for a special closure, the optimizer runs
    the user's closure inside this context (``torch.autograd.backward`` is wrapped for
    its duration, under a lock, for the calling thread only; ``Tensor.backward`` calls
    it). Example:

    >>> w = torch.tensor([3.0], requires_grad=True)
    >>> with backward_keeps_graph(create_graph=True):
    ...     (w ** 3).sum().backward()
    >>> torch.autograd.grad(w.grad.sum(), w)[0]          # d2/dw2 w^3 = 6 w
    tensor([18.])
    """
    with _PATCH:
        original = torch.autograd.backward

        signature = inspect.signature(original)
        owner = threading.get_ident()

        def backward(*args, **kwargs):
            if threading.get_ident() != owner:      # another thread's backward: untouched
                return original(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.arguments["retain_graph"] = True
            bound.arguments["create_graph"] = bool(create_graph or
                                                   bound.arguments.get("create_graph", False))
            with warnings.catch_warnings():
                # the optimizer detaches the gradients afterwards (no reference cycle stays)
                warnings.filterwarnings("ignore", message="Using backward.. with create_graph")
                return original(*bound.args, **bound.kwargs)

        torch.autograd.backward = backward
        try:
            yield
        finally:
            torch.autograd.backward = original


def detach_grads(params: Sequence[Tensor]) -> None:
    """Replace gradients that carry a graph by detached copies (no reference cycle)."""
    for p in params:
        if p.grad is not None and p.grad.grad_fn is not None:
            p.grad = p.grad.detach()


# ------------------------------------------------------------- module calls of a closure

@contextlib.contextmanager
def module_calls(on_call: Callable[[nn.Module, tuple, object, int], None]) -> Iterator[None]:
    """Call ``on_call(module, inputs, output, depth)`` after every module's forward while
    the context is active (``depth`` 0: a call not nested in another module's forward).

    Uses torch's global module hooks (``torch.nn.modules.module.register_module_forward_*``),
    so an optimizer can see the layers its closure runs without being given the model;
    calls made by other threads are ignored.

    >>> seen = []
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    >>> with module_calls(lambda m, i, o, d: seen.append((type(m).__name__, d))):
    ...     _ = net(torch.zeros(1, 2))
    >>> seen
    [('Linear', 1), ('Tanh', 1), ('Sequential', 0)]
    """
    depth = [0]
    owner = threading.get_ident()   # module calls of other threads are not this closure's

    def pre(module, inputs):
        if threading.get_ident() == owner:
            depth[0] += 1

    def post(module, inputs, output):
        if threading.get_ident() == owner:
            depth[0] -= 1
            on_call(module, inputs, output, depth[0])

    from torch.nn.modules.module import (register_module_forward_hook,
                                         register_module_forward_pre_hook)
    h1 = register_module_forward_pre_hook(pre)
    h2 = register_module_forward_hook(post)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()
