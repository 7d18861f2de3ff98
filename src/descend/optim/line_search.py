"""Line search along a direction: the strong Wolfe conditions, by bracketing and zoom
with cubic interpolation (Nocedal & Wright, Numerical Optimization, 2nd ed., Algorithms
3.5 and 3.6, eq. 3.59), the safeguarded variant of Schmidt's minFunc that torch's
``LBFGS(line_search_fn="strong_wolfe")`` also uses. With the same inputs it takes the
same decisions as torch's, so descend's L-BFGS follows torch's trajectory.

A step ``t`` along a descent direction ``d`` (``phi(t) = f(w + t d)``, ``phi'(0) = g.d < 0``)
satisfies the strong Wolfe conditions when::

    phi(t) <= phi(0) + c1 t phi'(0)          (sufficient decrease, Armijo)
    |phi'(t)| <= c2 |phi'(0)|                (curvature)

with ``0 < c1 < c2 < 1``: ``c2 = 0.9`` for quasi-Newton directions, ``0.1`` for conjugate
gradients (Nocedal & Wright, section 3.1). A small ``c2`` makes the search nearly exact.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from descend._validation import check_range, fail
from descend.optim._closure import FlatParams, check_dense_real, one_group, scalar

__all__ = ["cubic_minimizer", "strong_wolfe", "check_wolfe_constants", "LineSearchOptimizer",
           "check_line_search_args", "LINE_SEARCHES"]


def cubic_minimizer(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimiser of the cubic through ``(x1, f1, g1)`` and ``(x2, f2, g2)``, clamped to ``bounds``.

    Math (Nocedal & Wright eq. 3.59), with ``a < b`` the two points ordered by position:
    ``d1 = g_a + g_b - 3 (f_a - f_b) / (a - b)``, ``d2 = sqrt(d1^2 - g_a g_b)``,
    ``t = b - (b - a) (g_b + d2 - d1) / (g_b - g_a + 2 d2)``; the midpoint of the bounds
    when the cubic has no minimiser (``d1^2 < g_a g_b``) or the two points coincide (a
    collapsed step; torch's interpolation divides by zero there). ``bounds`` default:
    ``[a, b]``.

    >>> round(cubic_minimizer(0.0, 1.0, -2.0, 2.0, 1.0, 2.0), 12)     # f = (x - 1)^2
    1.0
    >>> cubic_minimizer(0.5, 1.0, -2.0, 0.5, 1.0, -2.0, bounds=(0.0, 2.0))
    1.0
    """
    (a, fa, ga), (b, fb, gb) = sorted([(x1, f1, g1), (x2, f2, g2)], key=lambda p: p[0])
    lo, hi = (a, b) if bounds is None else bounds
    if a == b:
        return (lo + hi) / 2.0
    d1 = ga + gb - 3 * (fa - fb) / (a - b)
    disc = d1 ** 2 - ga * gb
    if disc < 0:
        return (lo + hi) / 2.0
    d2 = disc.sqrt() if torch.is_tensor(disc) else disc ** 0.5
    t = b - (b - a) * ((gb + d2 - d1) / (gb - ga + 2 * d2))
    return min(max(t, lo), hi)


def check_wolfe_constants(c1, c2) -> None:
    """``0 < c1 < c2 < 1``.

    >>> check_wolfe_constants(0.5, 0.1)
    Traceback (most recent call last):
        ...
    ValueError: `c2` must be > c1 (c1=0.5) and < 1. Received: c2=0.1
    """
    check_range("c1", c1, gt=0, lt=1)
    check_range("c2", c2, gt=0, lt=1)
    if not c1 < c2:
        fail("c2", f"> c1 (c1={c1}) and < 1", c2)


def strong_wolfe(evaluate: Callable[[object], tuple[float, Tensor]], t, d: Tensor, f: float,
                 g: Tensor, gtd, *, c1: float = 1e-4, c2: float = 0.9,
                 tolerance_change: float = 1e-9, max_ls: int = 25):
    """Find a step ``t`` along ``d`` that satisfies the strong Wolfe conditions.

    Args:
        evaluate: ``t -> (f(w + t d), grad f(w + t d))`` (leaves ``w`` where it was).
        t: first trial step.  d: the direction.  f, g, gtd: ``f(w)``, its gradient and
            ``g.d`` (negative).
        c1, c2: the Wolfe constants (``0 < c1 < c2 < 1``).
        tolerance_change: stop when the bracket is narrower than this (times ``max |d|``).
        max_ls: the most evaluations.

    Returns ``(f_new, g_new, t, evaluations)``: the best point found (the lowest end of the
    final bracket when the conditions were not met within ``max_ls`` evaluations).

    Phase 1 (bracketing): try ``t``; an interval holds an acceptable step once the trial
    breaks sufficient decrease, is no lower than the previous trial, or has
    ``phi'(t) >= 0``; otherwise extrapolate by cubic interpolation within
    ``[t + 0.01 (t - t_prev), 10 t]``. Phase 2 (zoom): cubic interpolation between the
    bracket ends; a trial within 10% of the bracket width from an end, twice in a row
    (or outside), is moved to 10% inside; the bracket keeps a low end (satisfying
    sufficient decrease, lowest so far) and a high end.

    Example: on ``phi(t) = (t - 3)^2`` from ``t = 1`` the cubic step is exact.

    >>> def evaluate(t):
    ...     return float((t - 3.0) ** 2), torch.tensor([2.0 * (t - 3.0)])
    >>> f_new, g_new, t, n = strong_wolfe(evaluate, 1.0, torch.ones(1), 9.0, torch.tensor([-6.0]),
    ...                                   torch.tensor(-6.0), c2=0.1)
    >>> round(float(t), 10), n
    (3.0, 2)

    Reference: Nocedal & Wright (2006), Algorithms 3.5-3.6; Moré & Thuente (1994);
    Schmidt, minFunc (2005). Differs from SciPy's ``line_search`` (Moré-Thuente DCSRCH):
    this is the simpler bracketing-zoom scheme.
    """
    d_norm = d.abs().max()
    g = g.clone(memory_format=torch.contiguous_format)
    f_new, g_new = evaluate(t)
    evals = 1
    gtd_new = g_new.dot(d)

    # Phase 1: find an interval containing an acceptable step (or the step itself).
    prev = (0, f, g, gtd)          # (t, f, g, g.d) of the previous trial
    bracket = None
    accepted = False
    tries = 0
    while tries < max_ls:
        if f_new > f + c1 * t * gtd or (tries > 1 and f_new >= prev[1]):
            bracket = [prev, (t, f_new, g_new.clone(memory_format=torch.contiguous_format), gtd_new)]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket = [(t, f_new, g_new, gtd_new)]
            accepted = True
            break
        if gtd_new >= 0:
            bracket = [prev, (t, f_new, g_new.clone(memory_format=torch.contiguous_format), gtd_new)]
            break
        # still going down: extrapolate
        t_next = cubic_minimizer(prev[0], prev[1], prev[3], t, f_new, gtd_new,
                                 bounds=(t + 0.01 * (t - prev[0]), t * 10))
        prev = (t, f_new, g_new.clone(memory_format=torch.contiguous_format), gtd_new)
        t = t_next
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = g_new.dot(d)
        tries += 1
    if tries == max_ls:
        bracket = [(0, f, g, None), (t, f_new, g_new, None)]

    # Phase 2: shrink the bracket until a point satisfies both conditions.
    ts = [b[0] for b in bracket]
    fs = [b[1] for b in bracket]
    gs = [b[2] for b in bracket]
    gtds = [b[3] for b in bracket]
    low, high = (0, 1) if fs[0] <= fs[-1] else (1, 0)
    stuck = False
    while not accepted and tries < max_ls:
        if abs(ts[1] - ts[0]) * d_norm < tolerance_change:
            break
        t = cubic_minimizer(ts[0], fs[0], gtds[0], ts[1], fs[1], gtds[1])
        left, right = min(ts), max(ts)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if stuck or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                stuck = False
            else:
                stuck = True
        else:
            stuck = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = g_new.dot(d)
        tries += 1
        if f_new > f + c1 * t * gtd or f_new >= fs[low]:
            ts[high], fs[high] = t, f_new
            gs[high], gtds[high] = g_new.clone(memory_format=torch.contiguous_format), gtd_new
            low, high = (0, 1) if fs[0] <= fs[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                accepted = True
            elif gtd_new * (ts[high] - ts[low]) >= 0:
                ts[high], fs[high], gs[high], gtds[high] = ts[low], fs[low], gs[low], gtds[low]
            ts[low], fs[low] = t, f_new
            gs[low], gtds[low] = g_new.clone(memory_format=torch.contiguous_format), gtd_new
    return fs[low], gs[low], ts[low], evals


LINE_SEARCHES = (None, "strong_wolfe")


class LineSearchOptimizer(torch.optim.Optimizer):
    """Base of the methods that pick a direction and then a step along it (L-BFGS, BFGS,
    nonlinear conjugate gradients): torch's ``LBFGS`` protocol, any direction rule.

    One ``step(closure)`` runs up to ``max_iter`` iterations (``closure`` re-evaluates the
    loss, calls ``backward`` and returns the loss, as for ``torch.optim.LBFGS``)::

        g = grad f(w)                          (stop at once if max |g| <= tolerance_grad)
        repeat up to max_iter times:
            d = direction(memory, g)           (-g at the very first iteration)
            t = first trial step               (min(1, 1/sum|g|) lr at the very first, else rule)
            stop if g.d > -tolerance_change    (not a descent direction any more)
            t = strong_wolfe(...) or keep t    (line_search_fn)
            w <- w + t d;  g = grad f(w)       (no re-evaluation after the last fixed step)
            stop on max_eval, max |g| <= tolerance_grad, max |t d| <= tolerance_change or
            |f - f_prev| < tolerance_change

    The state of a step (direction, step length, previous gradient and loss, the memory of
    the subclass) is kept between calls under torch's ``LBFGS`` key names, on the state of
    the first parameter, so ``state_dict`` round trips resume exactly. One parameter group.

    Subclasses set ``_method`` (a name for messages) and override ``_start(state, g)``
    (the first direction, resetting the memory), ``_direction(state, g, s, y)`` (update
    the memory with ``s = t d``, ``y = g - g_prev``, return the next direction) and, if
    they wish, ``_trial_step(state, group, g, d, gtd)`` (the first trial after the first
    iteration; default ``lr``).
    """
    advanced = ('max_eval', 'tolerance_grad', 'tolerance_change', 'c1', 'c2')   # folded under "more" in the playground

    _method = "this optimizer"
    _keeps_gtd = False     # keep g.d of the last iteration in state["gtd"] (for _trial_step)

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        one_group(self, f"{self._method} takes one direction over all parameters")
        check_dense_real(self.param_groups[0]["params"], self._method)
        self._flat = FlatParams(self.param_groups[0]["params"])

    def add_param_group(self, param_group):
        """Only the constructor's group: a second one is refused."""
        if getattr(self, "_flat", None) is not None:
            fail("params", f"a single parameter group ({self._method} takes one direction "
                 "over all parameters)", "add_param_group")
        super().add_param_group(param_group)

    # -- hooks ---------------------------------------------------------------------
    def _start(self, state: dict, g: Tensor) -> Tensor:
        return g.neg()

    def _direction(self, state: dict, g: Tensor, s: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _trial_step(self, state: dict, group: dict, g: Tensor, d: Tensor, gtd):
        return group["lr"]

    def _wolfe(self, group: dict) -> tuple[float, float]:
        return group.get("c1", 1e-4), group.get("c2", 0.9)

    # -- the loop --------------------------------------------------------------------
    def _evaluate(self, closure, x, t, d):
        self._flat.add_(t, d)
        loss = scalar(closure())
        g = self._flat.grad()
        self._flat.set_(x)
        return loss, g

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """Up to ``max_iter`` iterations; returns the loss at the start of the step."""
        if closure is None:
            fail("closure", f"given ({self._method} evaluates the loss several times per "
                 "step)", None)
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr = group["lr"]
        lr = float(lr.item()) if torch.is_tensor(lr) else lr
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        search = group["line_search_fn"]
        state = self.state[self._flat.params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        first_loss = closure()
        loss = scalar(first_loss)
        evals = 1
        state["func_evals"] += 1
        g = self._flat.grad()
        if g.abs().max() <= tol_grad:
            return first_loss

        d, t = state.get("d"), state.get("t")
        prev_g, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        iters = 0
        while iters < max_iter:
            iters += 1
            state["n_iter"] += 1
            first = state["n_iter"] == 1
            d = self._start(state, g) if first else self._direction(state, g, d.mul(t), g.sub(prev_g))
            if prev_g is None:
                prev_g = g.clone(memory_format=torch.contiguous_format)
            else:
                prev_g.copy_(g)
            prev_loss = loss

            gtd = g.dot(d)
            t = min(1.0, 1.0 / g.abs().sum()) * lr if first else self._trial_step(
                state, {**group, "lr": lr}, g, d, gtd)
            if self._keeps_gtd:
                state["gtd"] = gtd
            state["d"], state["t"] = d, t
            if gtd > -tol_change:
                break

            ls_evals = 0
            if search == "strong_wolfe":
                x0 = self._flat.clone()
                c1, c2 = self._wolfe(group)
                loss, g, t, ls_evals = strong_wolfe(
                    lambda step: self._evaluate(closure, x0, step, d), t, d, loss, g, gtd,
                    c1=c1, c2=c2, tolerance_change=tol_change, max_ls=max_eval - evals)
                self._flat.add_(t, d)
                optimal = g.abs().max() <= tol_grad
            else:
                self._flat.add_(t, d)
                optimal = False
                if iters != max_iter:
                    # no re-evaluation after the last fixed step: the next step() starts
                    # with one (on a new minibatch, in stochastic use)
                    loss = scalar(closure())
                    g = self._flat.grad()
                    optimal = g.abs().max() <= tol_grad
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals
            state["t"] = t

            if iters == max_iter or evals >= max_eval or optimal:
                break
            if d.mul(t).abs().max() <= tol_change or abs(loss - prev_loss) < tol_change:
                break

        state["d"], state["t"] = d, t
        state["prev_flat_grad"], state["prev_loss"] = prev_g, prev_loss
        return first_loss


def check_line_search_args(lr, max_iter, max_eval, tolerance_grad, tolerance_change,
                           line_search_fn, *, default_evals=None) -> int:
    """Check the arguments of torch's ``LBFGS`` protocol; return ``max_eval`` filled in
    (``default_evals(max_iter)`` when None; torch's ``max_iter * 5 // 4`` by default).

    >>> check_line_search_args(1.0, 20, None, 1e-7, 1e-9, None)
    25
    """
    from descend._validation import check_choice, check_int
    from descend.optim._closure import check_lr
    check_lr(lr)
    check_int("max_iter", max_iter, ge=1)
    if max_eval is None:
        max_eval = default_evals(max_iter) if default_evals else max_iter * 5 // 4
    check_int("max_eval", max_eval, ge=1)
    check_range("tolerance_grad", tolerance_grad, ge=0)
    check_range("tolerance_change", tolerance_change, ge=0)
    check_choice("line_search_fn", line_search_fn, LINE_SEARCHES)
    return max_eval
