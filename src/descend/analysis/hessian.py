"""Sharpness from Hessian-vector products: top eigenvalues and the trace.

The Hessian ``H = d^2 L / dw^2`` is never formed. A Hessian-vector product is the
gradient of ``g(w) . v`` (Pearlmutter's trick): ``Hv = d/dw (dL/dw . v)``, one extra
backward pass. On top of it:

* :func:`top_eigenvalues` by power iteration, ``v <- Hv / |Hv|`` with the found
  eigenvectors projected out (deflation); the Rayleigh quotient ``v.Hv`` converges to
  the eigenvalue of largest magnitude among the remaining ones.
* :func:`lanczos` builds the Krylov basis ``q_1..q_m`` with ``H q_j = b_{j-1} q_{j-1} +
  a_j q_j + b_j q_{j+1}`` (full re-orthogonalization) and returns the Ritz values, the
  eigenvalues of the tridiagonal ``T_m``; the extreme ones converge first.
* :func:`hessian_trace` by Hutchinson's estimator ``tr H = E[v^T H v]`` with Rademacher
  ``v`` (entries +-1); its variance is ``2 sum_{i != j} H_ij^2 / n`` for ``n`` probes.

Large top eigenvalue / trace = sharp minimum; the notes recall that wide minima
generalize better than sharp ones (Keskar et al., 2017).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from descend._validation import check_choice, check_int, check_range

Tensors = Sequence[torch.Tensor]


class HessianOperator:
    """``v -> Hv`` for the loss ``loss_fn()`` w.r.t. ``params`` (a list of tensors).

    The gradient graph is built once; each product costs one backward pass.

    Args:
        loss_fn: zero-argument callable returning the scalar loss (closes over the model
            and a fixed batch).
        params: tensors that require grad.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> H = HessianOperator(lambda: (3 * w[0] ** 2 + w[1] ** 2) / 2, [w])
        >>> H.matvec([torch.tensor([1.0, 1.0])])[0]
        tensor([3., 1.])
    """

    def __init__(self, loss_fn: Callable[[], torch.Tensor], params: Tensors):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("`params` must contain at least one tensor that requires grad. "
                             f"Received: params with {len(list(params))} tensors")
        loss = loss_fn()
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)
        self.numel = sum(p.numel() for p in self.params)

    def matvec(self, v: Tensors) -> list[torch.Tensor]:
        dot = sum((g * vi).sum() for g, vi in zip(self.grads, v))
        hv = torch.autograd.grad(dot, self.params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, self.params)]

    def random_like(self, kind: str = "gaussian", generator=None) -> list[torch.Tensor]:
        out = []
        for p in self.params:
            if kind == "rademacher":
                r = torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype)
                out.append(2 * r - 1)
            else:
                out.append(torch.randn(p.shape, generator=generator, dtype=p.dtype,
                                       device=p.device))
        return out


def _dot(a: Tensors, b: Tensors) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _axpy(alpha, x: Tensors, y: Tensors) -> list[torch.Tensor]:
    return [yi + alpha * xi for xi, yi in zip(x, y)]


def _normalize(v: Tensors) -> list[torch.Tensor]:
    n = torch.sqrt(_dot(v, v))
    return [x / n for x in v]


def _as_operator(loss_fn, params):
    return loss_fn if isinstance(loss_fn, HessianOperator) else HessianOperator(loss_fn, params)


def top_eigenvalues(loss_fn, params: Tensors | None = None, *, k: int = 1, iters: int = 100,
                    tol: float = 1e-6, seed: int = 0) -> tuple[list[float], list[list[torch.Tensor]]]:
    """Top-``k`` Hessian eigenvalues (largest magnitude) by power iteration with deflation.

    For each ``i``: ``v <- P(Hv) / |P(Hv)|`` where ``P`` projects out the eigenvectors
    already found; stop when the Rayleigh quotient ``v.Hv`` changes by less than
    ``tol * |lambda|``.

    Args:
        loss_fn: zero-argument loss callable, or a :class:`HessianOperator`.
        params: the parameters (ignored when ``loss_fn`` is an operator).
        k: number of eigenvalues (default 1).
        iters: maximum iterations per eigenvalue (default 100).
        tol: relative tolerance (default 1e-6).
        seed: seed of the random start vectors (default 0).

    Returns:
        ``(eigenvalues, eigenvectors)``, eigenvalues in the order found (decreasing magnitude).

    Example:
        >>> w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        >>> d = torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)
        >>> vals, _ = top_eigenvalues(lambda: 0.5 * (d * w * w).sum(), [w], k=2)
        >>> [round(v, 4) for v in vals]
        [5.0, 2.0]

    Reference: Yao et al., "PyHessian", 2020 (same power iteration).
    """
    check_int("k", k, ge=1)
    check_int("iters", iters, ge=1)
    check_range("tol", tol, gt=0)
    op = _as_operator(loss_fn, params)
    if k > op.numel:
        raise ValueError(f"`k` must be <= the number of parameters ({op.numel}). Received: k={k}")
    gen = torch.Generator(device=op.params[0].device).manual_seed(seed)
    vals, vecs = [], []

    def project(v):
        for u in vecs:
            v = _axpy(-_dot(u, v), u, v)
        return v

    for _ in range(k):
        v = _normalize(project(op.random_like("gaussian", gen)))
        lam = None
        for _ in range(iters):
            hv = project(op.matvec(v))
            new = float(_dot(v, hv))
            norm = torch.sqrt(_dot(hv, hv))
            if norm == 0:
                lam = 0.0
                break
            v = [x / norm for x in hv]
            if lam is not None and abs(new - lam) <= tol * (abs(lam) + 1e-12):
                lam = new
                break
            lam = new
        vals.append(float(_dot(v, op.matvec(v))))
        vecs.append(v)
    return vals, vecs


def lanczos(loss_fn, params: Tensors | None = None, *, steps: int = 30, k: int = 1,
            which: str = "largest", seed: int = 0) -> list[float]:
    """Extreme Hessian eigenvalues by the Lanczos method (full re-orthogonalization).

    ``q_1`` random unit; for ``j = 1..m``: ``w = H q_j - b_{j-1} q_{j-1}``, ``a_j = q_j.w``,
    ``w <- w - a_j q_j`` then re-orthogonalized against all ``q``, ``b_j = |w|``,
    ``q_{j+1} = w / b_j``. The eigenvalues of the tridiagonal ``T`` (diagonal ``a``,
    off-diagonal ``b``) are the Ritz values. With ``steps >= n`` they are exact.

    Args:
        loss_fn: zero-argument loss callable, or a :class:`HessianOperator`.
        params: the parameters.
        steps: Krylov dimension ``m`` (default 30; capped at the number of parameters).
        k: number of Ritz values returned (default 1).
        which: ``"largest"`` (algebraic, default) or ``"smallest"``.
        seed: seed of the start vector.

    Example:
        >>> w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        >>> d = torch.tensor([5.0, 2.0, -1.0], dtype=torch.float64)
        >>> [round(v, 6) for v in lanczos(lambda: 0.5 * (d * w * w).sum(), [w], k=3)]
        [5.0, 2.0, -1.0]

    Reference: Lanczos (1950); Ghorbani et al., "An investigation into neural net
    optimization via Hessian eigenvalue density", 2019.
    """
    check_int("steps", steps, ge=1)
    check_int("k", k, ge=1)
    check_choice("which", which, ["largest", "smallest"])
    op = _as_operator(loss_fn, params)
    m = min(steps, op.numel)
    gen = torch.Generator(device=op.params[0].device).manual_seed(seed)
    q = _normalize(op.random_like("gaussian", gen))
    qs, alphas, betas = [q], [], []
    prev, beta = None, 0.0
    for j in range(m):
        w = op.matvec(qs[-1])
        if prev is not None:
            w = _axpy(-beta, prev, w)
        a = float(_dot(qs[-1], w))
        alphas.append(a)
        w = _axpy(-a, qs[-1], w)
        for u in qs:  # full re-orthogonalization (twice is enough)
            w = _axpy(-_dot(u, w), u, w)
        for u in qs:
            w = _axpy(-_dot(u, w), u, w)
        beta = float(torch.sqrt(_dot(w, w)))
        if j == m - 1 or beta < 1e-10:
            break
        betas.append(beta)
        prev = qs[-1]
        qs.append([x / beta for x in w])
    n = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if n > 1:
        off = torch.tensor(betas[: n - 1], dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(T)
    ritz = ritz.flip(0) if which == "largest" else ritz
    return [float(x) for x in ritz[:k]]


def hessian_trace(loss_fn, params: Tensors | None = None, *, samples: int = 100,
                  seed: int = 0) -> float:
    """Hutchinson's estimate of ``tr H``: the mean of ``v^T H v`` over Rademacher ``v``.

    Unbiased; exact for a diagonal Hessian; variance ``2 sum_{i != j} H_ij^2 / samples``.

    Args:
        loss_fn: zero-argument loss callable, or a :class:`HessianOperator`.
        params: the parameters.
        samples: number of probe vectors (default 100).
        seed: seed of the probes.

    Example:
        >>> w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        >>> d = torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)
        >>> hessian_trace(lambda: 0.5 * (d * w * w).sum(), [w], samples=4)
        8.0

    Reference: Hutchinson (1990); Avron & Toledo (2011).
    """
    check_int("samples", samples, ge=1)
    op = _as_operator(loss_fn, params)
    gen = torch.Generator(device=op.params[0].device).manual_seed(seed)
    total = 0.0
    for _ in range(samples):
        v = op.random_like("rademacher", gen)
        total += float(_dot(v, op.matvec(v)))
    return total / samples


def model_loss(model: torch.nn.Module, loss_fn: Callable, data) -> Callable[[], torch.Tensor]:
    """A zero-argument closure: ``loss_fn(model(x), y)`` on a fixed ``data = (x, y)``.

    Example:
        >>> m = torch.nn.Linear(2, 1)
        >>> f = model_loss(m, torch.nn.functional.mse_loss, (torch.ones(4, 2), torch.zeros(4, 1)))
        >>> f().shape
        torch.Size([])
    """
    x, y = data
    return lambda: loss_fn(model(x), y)


def sharpness(model: torch.nn.Module, loss_fn: Callable, data, *, k: int = 1, steps: int = 20,
              samples: int = 20, seed: int = 0) -> dict[str, object]:
    """Sharpness of ``model`` at its current weights on ``data = (x, y)``.

    Returns ``{"top_eigenvalues": [...] (Lanczos, k largest), "trace": Hutchinson estimate}``.
    The model is evaluated in its current mode (call ``model.eval()`` first to use BN's
    running statistics).

    Example:
        >>> m = torch.nn.Linear(2, 1)  # loss 0.5 ((w1 + b)^2 + (w2 + b)^2): H eigenvalues 3, 1, 0
        >>> s = sharpness(m, torch.nn.functional.mse_loss, (torch.eye(2), torch.zeros(2, 1)), k=2)
        >>> [round(v, 4) for v in s["top_eigenvalues"]]  # the trace (4) is estimated: s["trace"]
        [3.0, 1.0]
    """
    params = [p for p in model.parameters() if p.requires_grad]
    op = HessianOperator(model_loss(model, loss_fn, data), params)
    return {"top_eigenvalues": lanczos(op, steps=steps, k=k, seed=seed),
            "trace": hessian_trace(op, samples=samples, seed=seed)}


__all__ = ["HessianOperator", "sharpness", "top_eigenvalues", "lanczos", "hessian_trace", "model_loss"]
