"""Newton's method and conjugate gradients: the classic second-order methods of the notes'
outline ("Approximate Second-order Methods"; note 003: "many acceleration techniques
(e.g. conjugate gradient) only operate in batch learning").

- :class:`Newton`: ``w <- w - lr (H + lambda I)^-1 g`` with the exact Hessian by autograd
  (``|H|`` for the saddle-free variant), for small problems.
- :func:`conjugate_gradient`: the linear CG solver of ``A x = b`` (``A`` symmetric positive
  definite, given as a matrix or a product ``v -> A v``), used by Hessian-free.
- :class:`NonlinearCG`: Fletcher-Reeves / Polak-Ribiere conjugate directions with restarts
  and a strong Wolfe line search, on torch's ``LBFGS`` protocol.

Newton and Hessian-free need second derivatives through a closure that only calls
``loss.backward()``: they run it inside :func:`descend.optim._closure.backward_keeps_graph`.
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from descend._validation import check_bool, check_choice, check_int, check_range, fail
from descend.optim._closure import (FlatParams, backward_keeps_graph, check_dense_real, check_lr,
                                    check_max_params, detach_grads, one_group, scalar)
from descend.optim.line_search import (LineSearchOptimizer, check_line_search_args,
                                       check_wolfe_constants)

__all__ = ["Newton", "conjugate_gradient", "CGResult", "NonlinearCG", "flat_hessian"]


def flat_hessian(g: Tensor, params: list[Tensor]) -> Tensor:
    """The n x n Hessian from a flat gradient ``g`` that carries its graph: row ``i`` is
    ``d g_i / d w``, all rows in one vectorised backward pass (``is_grads_batched``), or
    one pass per row where an operation has no batching rule.

    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> (g,) = torch.autograd.grad((w[0] ** 2 * w[1]), [w], create_graph=True)
    >>> flat_hessian(g, [w])                    # [[2 w1, 2 w0], [2 w0, 0]]
    tensor([[4., 2.],
            [2., 0.]])
    """
    n = g.numel()
    if not g.requires_grad:
        return g.new_zeros(n, n)

    def rows(parts, batch):
        return torch.cat([torch.zeros(*batch, p.numel(), dtype=g.dtype, device=g.device)
                          if h is None else h.reshape(*batch, -1) for p, h in zip(params, parts)],
                         dim=-1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # vmap's fallback notice
            parts = torch.autograd.grad(g, params, grad_outputs=torch.eye(n, dtype=g.dtype,
                                        device=g.device), retain_graph=True, allow_unused=True,
                                        is_grads_batched=True)
        return rows(parts, (n,))
    except RuntimeError:
        return torch.stack([rows(torch.autograd.grad(g[i], params, retain_graph=True,
                                                     allow_unused=True), ()) for i in range(n)])


class Newton(torch.optim.Optimizer):
    """Newton's method with the exact Hessian (autograd), damping, and the saddle-free
    variant, for problems of at most ``max_params`` scalars.

    Math: with ``g = grad f(w)`` and ``H = hess f(w)`` (symmetrised, ``(H + H^T) / 2``)::

        w <- w - lr (H + damping I)^-1 g          (damped Newton / Levenberg)
        w <- w - lr (|H| + damping I)^-1 g        (saddle_free=True, |H| = Q |Lambda| Q^T)

    On ``f(w) = 1/2 w^T A w - b^T w`` (A positive definite), one step with ``lr=1``,
    ``damping=0`` lands on the minimum ``A^-1 b``. Plain Newton is attracted by saddle
    points (it follows negative curvature upwards); the saddle-free step of Dauphin et
    al. (2014) flips the sign of the negative eigen-directions so it moves away from them.
    A singular system is solved in the least-squares sense.

    Args: params (one group), lr=1.0, damping=0.0 (lambda >= 0), saddle_free=False,
    max_params=1000 (the Hessian costs one backward pass per scalar; more is an error).
    ``step(closure)`` is required: the closure is run once, with its ``backward`` keeping
    the graph so the Hessian can be taken. State: ``step``.

    Example:
        >>> import torch
        >>> a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, -1.0], dtype=torch.float64)
        >>> w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        >>> opt = Newton([w])
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * w @ a @ w - b @ w
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> torch.allclose(w, torch.linalg.solve(a, b))
        True

    Differs: torch and Optax have no Newton optimizer (``torch.autograd.functional.hessian``
    and ``jax.hessian`` compute the matrix). Reference: Nocedal & Wright (2006), ch. 3.3;
    Dauphin et al. (2014), Identifying and attacking the saddle point problem in
    high-dimensional non-convex optimization.
    """
    advanced = ('max_params',)   # folded under "more" in the playground

    def __init__(self, params, lr=1.0, damping=0.0, saddle_free=False, *, max_params=1000):
        check_lr(lr)
        check_range("damping", damping, ge=0)
        check_bool("saddle_free", saddle_free)
        super().__init__(params, dict(lr=lr, damping=damping, saddle_free=saddle_free,
                                      max_params=max_params))
        one_group(self, "Newton's method takes one step over all parameters")
        check_dense_real(self.param_groups[0]["params"], "Newton")
        self._flat = FlatParams(self.param_groups[0]["params"])
        check_max_params(self._flat.params, max_params, "Newton's method")

    def add_param_group(self, param_group):
        """Only the constructor's group: a second one is refused."""
        if getattr(self, "_flat", None) is not None:
            fail("params", "a single parameter group (Newton's method takes one step over "
                 "all parameters)", "add_param_group")
        super().add_param_group(param_group)

    def direction(self, g: Tensor, h: Tensor) -> Tensor:
        """The Newton direction ``-(H + damping I)^-1 g`` (``|H|`` when saddle-free)."""
        group = self.param_groups[0]
        h = (h + h.T) / 2
        lam = scalar(group["damping"])
        if group["saddle_free"]:
            evals, evecs = torch.linalg.eigh(h)
            denom = evals.abs() + lam
            # a zero eigenvalue without damping: no step along it (the pseudo-inverse)
            tiny = torch.finfo(denom.dtype).eps * max(float(denom.max()), 1.0) * h.shape[0]
            inv = torch.where(denom > tiny, 1.0 / denom, torch.zeros_like(denom))
            return -(evecs @ ((evecs.T @ g) * inv))
        a = h + lam * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        sol, info = torch.linalg.solve_ex(a, g)
        if int(info) != 0 or not torch.isfinite(sol).all():
            sol = torch.linalg.lstsq(a, g.unsqueeze(1), driver="gelsd").solution.squeeze(1)
        return -sol

    def step(self, closure=None):  # type: ignore[override]
        """One Newton step; returns the closure's loss."""
        if closure is None:
            fail("closure", "given (Newton's method needs the loss's graph for the Hessian)",
                 None)
        params = self._flat.params
        with torch.enable_grad(), backward_keeps_graph(create_graph=True):
            loss = closure()
        try:
            g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                           for p in params])
            h = flat_hessian(g, params)
        finally:
            detach_grads(params)
        with torch.no_grad():
            d = self.direction(g.detach(), h.detach())
            self._flat.add_(scalar(self.param_groups[0]["lr"]), d)
        st = self.state[params[0]]
        st["step"] = st.get("step", 0) + 1
        return loss.detach() if torch.is_tensor(loss) else loss   # the graph is not kept


# ------------------------------------------------------------------ linear CG

class CGResult(NamedTuple):
    """Result of :func:`conjugate_gradient`: the solution, the iterations done, the final
    residual ``r = b - A x``, and why it stopped ("converged", "max_iter", "progress",
    "negative_curvature")."""

    x: Tensor
    iterations: int
    residual: Tensor
    reason: str


def conjugate_gradient(a, b: Tensor, x0: Tensor | None = None, *, max_iter: int | None = None,
                       rtol: float = 1e-10, atol: float = 0.0, progress_tol: float | None = None,
                       callback: Callable[[int, Tensor], None] | None = None) -> CGResult:
    """Solve ``A x = b`` for a symmetric positive definite ``A`` by conjugate gradients.

    Math (Hestenes & Stiefel 1952; Nocedal & Wright Algorithm 5.2): ``r = b - A x``,
    ``p = r``; repeat ``alpha = r.r / p.A p``, ``x += alpha p``, ``r -= alpha A p``,
    ``beta = r_new.r_new / r.r``, ``p = r + beta p``. In exact arithmetic it reaches the
    solution in at most n iterations; equivalently it minimises
    ``phi(x) = 1/2 x^T A x - b^T x`` over growing Krylov subspaces.

    Args:
        a: an n x n tensor or a function ``v -> A v``.
        b: the right-hand side (1-D).  x0: start (default 0; replaced by 0 when
            ``phi(x0) >= phi(0) = 0``, as Hessian-free's warm starts may be).
        max_iter: most iterations (default n).
        rtol, atol: stop when ``|r| <= max(rtol |b|, atol)``.
        progress_tol: Martens' (2010) truncation: stop at iteration i when
            ``phi(x_i) < 0`` and ``(phi(x_i) - phi(x_{i-k})) / phi(x_i) < k progress_tol``
            with ``k = max(10, i / 10)`` (the quadratic no longer improves); None: off.
        callback: called as ``callback(i, x)`` after each iteration.

    A direction of non-positive curvature (``p.A p <= 0``: ``A`` not positive definite)
    stops the solver with the current ``x`` (the truncated-Newton rule), or the steepest
    descent direction ``b`` scaled to minimise along it when at the first iteration.

    Example:
        >>> a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> res = conjugate_gradient(a, b)
        >>> res.iterations, torch.allclose(res.x, torch.linalg.solve(a, b))
        (2, True)

    Differs from ``scipy.sparse.linalg.cg``: the operator is a torch function; Martens'
    progress rule and the negative-curvature stop are options for Hessian-free.
    """
    matvec = (lambda v: a @ v) if torch.is_tensor(a) else a
    if not callable(matvec):
        fail("a", "a square tensor or a function v -> A v", type(a).__name__, TypeError)
    n = b.numel()
    max_iter = n if max_iter is None else check_int("max_iter", max_iter, ge=0)
    check_range("rtol", rtol, ge=0)
    check_range("atol", atol, ge=0)
    check_range("progress_tol", progress_tol, gt=0, allow_none=True)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    if x0 is not None and float(-0.5 * x.dot(r + b)) >= 0:
        x, r = torch.zeros_like(b), b.clone()      # a start no better than 0: start at 0
    p = r.clone()
    rr = r.dot(r)
    stop = max(rtol * float(b.norm()), atol)
    phis = [float(-0.5 * x.dot(r + b))]  # phi(x) = -1/2 x.(r + b)
    if float(rr) ** 0.5 <= stop:
        return CGResult(x, 0, r, "converged")
    for i in range(1, max_iter + 1):
        ap = matvec(p)
        pap = p.dot(ap)
        if pap <= 0:
            if i == 1 and x0 is None:
                bab = b.dot(matvec(b))
                x = b * (rr / bab) if bab > 0 else b.clone()
                r = b - matvec(x)
            return CGResult(x, i - 1, r, "negative_curvature")
        alpha = rr / pap
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r.dot(r)
        if callback is not None:
            callback(i, x)
        if float(rr_new) ** 0.5 <= stop:
            return CGResult(x, i, r, "converged")
        if progress_tol is not None:
            phis.append(float(-0.5 * x.dot(r + b)))
            k = max(10, i // 10)
            if i > k and phis[-1] < 0 and (phis[-1] - phis[-1 - k]) / phis[-1] < k * progress_tol:
                return CGResult(x, i, r, "progress")
        p = r + (rr_new / rr) * p
        rr = rr_new
    return CGResult(x, max_iter, r, "max_iter")


# ------------------------------------------------------------------ nonlinear CG

BETAS = ("polak_ribiere", "fletcher_reeves")


class NonlinearCG(LineSearchOptimizer):
    """Nonlinear conjugate gradients (Fletcher-Reeves or Polak-Ribiere+) with restarts and
    a strong Wolfe line search, on torch's ``LBFGS`` protocol.

    Math (Nocedal & Wright, Algorithms 5.4 and eq. 5.44-5.45): ``d_0 = -g_0``; then::

        beta_FR = g_k.g_k / g_{k-1}.g_{k-1}
        beta_PR = max(0, g_k.(g_k - g_{k-1}) / g_{k-1}.g_{k-1})      (PR+, the default)
        d_k = -g_k + beta d_{k-1}
        w <- w + t d_k                    (t from the strong Wolfe line search)

    Restart (``d = -g``) every ``restart_every`` iterations (default: the number of
    parameters n), when ``|g_k.g_{k-1}| >= 0.2 g_k.g_k`` (Powell's test, ``powell=True``)
    and whenever ``d`` is not a descent direction. The first trial step of a line search
    is ``t_{k-1} g_{k-1}.d_{k-1} / g_k.d_k`` (Nocedal & Wright eq. 3.60). On a strictly
    convex quadratic with exact line searches both formulas are linear CG (n steps).

    Args: params (one group), lr=1 (first trial step scale), max_iter=1
    (one iteration per ``step``), max_eval=max_iter+25,
    tolerance_grad=1e-7, tolerance_change=1e-9, line_search_fn="strong_wolfe" (None: fixed
    steps of lr), beta="polak_ribiere" | "fletcher_reeves", restart_every=None (n),
    powell=False, c1=1e-4, c2=0.1. State (first parameter): ``d``, ``t``, ``gtd``,
    ``prev_flat_grad``, ``prev_loss``, ``since_restart``, ``n_iter``, ``func_evals``.

    Example:
        >>> import torch
        >>> a = torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64))
        >>> w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        >>> opt = NonlinearCG([w], max_iter=3, c1=1e-12, c2=1e-10)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * w @ a @ w
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> float(w.detach().abs().max()) < 1e-8
        True

    Differs: torch and Optax have none; SciPy's ``minimize(method="CG")`` is
    Polak-Ribiere with its own line search. Reference: Fletcher & Reeves (1964);
    Polak & Ribiere (1969); Powell (1977), Restart procedures for the conjugate gradient
    method; Nocedal & Wright (2006), ch. 5.2.
    """
    advanced = ('max_eval', 'tolerance_grad', 'tolerance_change', 'c1', 'c2', 'restart_every', 'powell')   # folded under "more" in the playground

    _method = "nonlinear CG"
    _keeps_gtd = True

    def __init__(self, params, lr=1, max_iter=1, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, line_search_fn="strong_wolfe", *,
                 beta="polak_ribiere", restart_every=None, powell=False, c1=1e-4, c2=0.1):
        max_eval = check_line_search_args(lr, max_iter, max_eval, tolerance_grad,
                                          tolerance_change, line_search_fn,
                                          default_evals=lambda n: n + 25)
        check_choice("beta", beta, BETAS)
        check_int("restart_every", restart_every, ge=1, allow_none=True)
        check_bool("powell", powell)
        check_wolfe_constants(c1, c2)
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change,
                                      line_search_fn=line_search_fn, beta=beta,
                                      restart_every=restart_every, powell=powell, c1=c1, c2=c2))

    def _start(self, state, g):
        state["since_restart"] = 0
        return g.neg()

    def _direction(self, state, g, s, y):
        group = self.param_groups[0]
        g_prev = g - y
        gg_prev = g_prev.dot(g_prev)
        every = group["restart_every"] or self._flat.numel
        state["since_restart"] += 1
        restart = state["since_restart"] >= every or gg_prev <= 0
        if group["powell"] and abs(g.dot(g_prev)) >= 0.2 * g.dot(g):
            restart = True
        if not restart:
            if group["beta"] == "fletcher_reeves":
                beta = g.dot(g) / gg_prev
            else:
                beta = torch.clamp(g.dot(y) / gg_prev, min=0)
            d = g.neg().add_(state["d"], alpha=float(beta))
            if g.dot(d) < 0:
                return d
        state["since_restart"] = 0
        return g.neg()

    def _trial_step(self, state, group, g, d, gtd):
        t_prev, gtd_prev = state.get("t"), state.get("gtd")
        if t_prev is None or gtd_prev is None or gtd >= 0:
            return group["lr"]
        return float(t_prev) * float(gtd_prev) / float(gtd)
