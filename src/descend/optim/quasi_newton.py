"""Quasi-Newton methods: BFGS (a dense inverse-Hessian estimate) and L-BFGS (the last
``history_size`` curvature pairs, two-loop recursion), on torch's ``LBFGS`` protocol:
``step(closure)`` runs up to ``max_iter`` iterations, each a direction ``d = -H g`` and a
step along it (fixed, or by the strong Wolfe line search of
:mod:`descend.optim.line_search`).

Both learn the curvature from the pairs ``s_k = w_{k+1} - w_k`` and
``y_k = g_{k+1} - g_k`` (the secant equation ``H_{k+1} y_k = s_k``), skipping a pair when
``y.s <= 1e-10`` (no positive curvature along ``s``: the strong Wolfe conditions rule
that out for a smooth function).
"""

from __future__ import annotations

import torch

from descend._validation import check_int
from descend.optim._closure import check_max_params
from descend.optim.line_search import (LineSearchOptimizer, check_line_search_args,
                                       check_wolfe_constants)

__all__ = ["LBFGS", "BFGS"]


class LBFGS(LineSearchOptimizer):
    """L-BFGS: quasi-Newton steps from the last ``history_size`` pairs, drop-in for
    ``torch.optim.LBFGS`` (same signature, closure protocol, state names and trajectory).

    Math (Nocedal & Wright, Algorithm 7.4, the two-loop recursion): with pairs
    ``(s_i, y_i)``, ``rho_i = 1 / y_i.s_i`` (newest last) and ``gamma = s.y / y.y`` of the
    newest pair::

        q = -g
        for i = newest .. oldest:  a_i = rho_i s_i.q;  q <- q - a_i y_i
        r = gamma q
        for i = oldest .. newest:  b = rho_i y_i.r;  r <- r + (a_i - b) s_i
        d = r                                    (= -H g, H the L-BFGS inverse Hessian)

    then ``w <- w + t d`` with ``t = lr`` (``min(1, 1/sum|g|) lr`` at the first
    iteration) or the strong Wolfe step (``line_search_fn="strong_wolfe"``, c1=1e-4,
    c2=0.9). See :class:`~descend.optim.line_search.LineSearchOptimizer` for the loop
    and its stopping rules.

    Args (torch's): params (one group), lr=1, max_iter=20 (iterations per ``step``),
    max_eval=max_iter*5//4, tolerance_grad=1e-7, tolerance_change=1e-9,
    history_size=100, line_search_fn=None or "strong_wolfe".
    State (on the first parameter, torch's keys): ``d``, ``t``, ``old_dirs`` (the y's),
    ``old_stps`` (the s's), ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``,
    ``n_iter``, ``func_evals``; a torch ``LBFGS`` state dict loads into it and back.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.5, -0.5], dtype=torch.float64))
        >>> opt = LBFGS([w], line_search_fn="strong_wolfe")
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
        ...     loss.backward()
        ...     return loss
        >>> for _ in range(5):
        ...     _ = opt.step(closure)
        >>> [round(v, 4) for v in w.tolist()]          # Rosenbrock's minimum
        [1.0, 1.0]

    Differs from torch: arguments are checked with descend's messages; complex and
    sparse parameters are refused. Reference: Liu & Nocedal (1989), On the limited memory
    BFGS method for large scale optimization; Nocedal & Wright (2006), ch. 7.
    """
    advanced = ('max_eval', 'tolerance_grad', 'tolerance_change', 'c1', 'c2')   # folded under "more" in the playground

    _method = "L-BFGS"

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        max_eval = check_line_search_args(lr, max_iter, max_eval, tolerance_grad,
                                          tolerance_change, line_search_fn)
        check_int("history_size", history_size, ge=1)
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change,
                                      history_size=history_size, line_search_fn=line_search_fn))

    def _start(self, state, g):
        state["old_dirs"], state["old_stps"], state["ro"] = [], [], []
        state["H_diag"] = 1
        return g.neg()

    def _direction(self, state, g, s, y):
        m = self.param_groups[0]["history_size"]
        ys = y.dot(s)
        if ys > 1e-10:
            if len(state["old_dirs"]) == m:
                for key in ("old_dirs", "old_stps", "ro"):
                    state[key].pop(0)
            state["old_dirs"].append(y)
            state["old_stps"].append(s)
            state["ro"].append(1.0 / ys)
            state["H_diag"] = ys / y.dot(y)
        ys_, ss_, rho = state["old_dirs"], state["old_stps"], state["ro"]
        if "al" not in state or len(state["al"]) < m:
            state["al"] = [None] * m
        al = state["al"]
        q = g.neg()
        for i in range(len(ys_) - 1, -1, -1):
            al[i] = ss_[i].dot(q) * rho[i]
            q.add_(ys_[i], alpha=-al[i])
        r = torch.mul(q, state["H_diag"])
        for i in range(len(ys_)):
            b = ys_[i].dot(r) * rho[i]
            r.add_(ss_[i], alpha=al[i] - b)
        return r


class BFGS(LineSearchOptimizer):
    """BFGS: quasi-Newton steps ``d = -H g`` from a dense estimate ``H`` of the inverse
    Hessian, for small problems (``H`` is n x n; at most ``max_params`` scalars).

    Math (Nocedal & Wright, eq. 6.17 and 6.20): ``H_0 = I``, scaled to
    ``(y.s / y.y) I`` before the first update; for each pair with ``y.s > 1e-10``::

        rho = 1 / y.s
        H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T

    then ``w <- w + t d`` along ``d = -H g`` (``t`` as in :class:`LBFGS`: ``lr``, the
    first iteration ``min(1, 1/sum|g|) lr``, or the strong Wolfe step). On a strictly
    convex quadratic with exact line searches, ``H`` equals the inverse Hessian after n
    updates (quadratic termination of the Broyden class, Nocedal & Wright section 6.3).

    Args: params (one group), lr=1, max_iter=1 (one iteration per ``step``, as
    Newton; torch's LBFGS: 20), max_eval=max_iter+25 (evaluations per
    step), tolerance_grad=1e-7, tolerance_change=1e-9, line_search_fn="strong_wolfe" (or None),
    c1=1e-4, c2=0.9 (Wolfe constants; tiny c1 < c2 make the search nearly exact),
    max_params=4096. State (first parameter): ``inverse_hessian`` and the keys of
    :class:`LBFGS` (``d``, ``t``, ``prev_flat_grad``, ``prev_loss``, ``n_iter``,
    ``func_evals``).

    Example:
        >>> import torch
        >>> a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
        >>> opt = BFGS([w], max_iter=1, tolerance_grad=0.0, c1=1e-12, c2=1e-10)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * w @ a @ w
        ...     loss.backward()
        ...     return loss
        >>> for _ in range(3):                 # two updates for n = 2, at steps 2 and 3
        ...     _ = opt.step(closure)
        >>> torch.allclose(opt.state[w]["inverse_hessian"], torch.linalg.inv(a))
        True

    Differs: torch has no BFGS; SciPy's ``minimize(method="BFGS")`` is the same update
    with Moré-Thuente's line search and its own stopping rules. Reference: Broyden,
    Fletcher, Goldfarb, Shanno (1970); Nocedal & Wright (2006), ch. 6.
    """
    advanced = ('max_eval', 'tolerance_grad', 'tolerance_change', 'c1', 'c2', 'max_params')   # folded under "more" in the playground

    _method = "BFGS"

    def __init__(self, params, lr=1, max_iter=1, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, line_search_fn="strong_wolfe", *, c1=1e-4, c2=0.9,
                 max_params=4096):
        max_eval = check_line_search_args(lr, max_iter, max_eval, tolerance_grad,
                                          tolerance_change, line_search_fn,
                                          default_evals=lambda n: n + 25)
        check_wolfe_constants(c1, c2)
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change,
                                      line_search_fn=line_search_fn, c1=c1, c2=c2,
                                      max_params=max_params))
        check_max_params(self._flat.params, max_params, "BFGS")

    def _start(self, state, g):
        state["inverse_hessian"] = None
        return g.neg()

    def _direction(self, state, g, s, y):
        h = state.get("inverse_hessian")
        ys = y.dot(s)
        if ys > 1e-10:
            rho = 1.0 / ys
            if h is None:
                h = torch.eye(g.numel(), dtype=g.dtype, device=g.device) * (ys / y.dot(y))
            hy = h @ y
            # (I - rho s y^T) H (I - rho y s^T) + rho s s^T, expanded (H symmetric)
            h = (h - rho * (torch.outer(s, hy) + torch.outer(hy, s))
                 + (rho * rho * y.dot(hy) + rho) * torch.outer(s, s))
            state["inverse_hessian"] = h
        if h is None:
            return g.neg()
        return -(h @ g)
