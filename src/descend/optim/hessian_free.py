"""Hessian-free optimization (Martens 2010): truncated conjugate gradients on the damped
Gauss-Newton system, by matrix-vector products through autograd (no matrix is formed),
with the damping adapted by the Levenberg-Marquardt rule.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from descend._validation import check_bool, check_choice, check_int, check_range, fail
from descend.optim._closure import (FlatParams, backward_keeps_graph, check_dense_real, check_lr,
                                    detach_grads, module_calls, one_group, scalar)
from descend.optim.second_order import conjugate_gradient

__all__ = ["HessianFree", "CURVATURES"]

CURVATURES = ("gauss_newton", "hessian")


class HessianFree(torch.optim.Optimizer):
    """Hessian-free (truncated Newton) steps: CG on ``(G + lambda I) p = -g``.

    Math (Martens 2010, Algorithm 1). With ``z = f(x; w)`` the output of the model call
    made in the closure and ``L(z)`` the loss, the Gauss-Newton matrix is
    ``G = J^T H_L J`` (``J = dz/dw``, ``H_L = d2L/dz2``: positive semi-definite for a
    convex loss such as cross-entropy or squared error). Each step::

        p = CG((G + lambda I) p = -g, start = decay * p_prev)   (truncated, Martens' rule)
        w <- w + lr p
        rho = (f(w + lr p) - f(w)) / q(lr p),  q(s) = g.s + 1/2 s^T (G + lambda I) s
        lambda <- 3/2 lambda if rho < 1/4;  2/3 lambda if rho > 3/4     (Levenberg-Marquardt)
        rho < 0 (the loss went up): the step is undone, the next CG starts from 0

    Products ``G v`` use three autograd passes over the closure's graph (kept for the
    step): ``J v`` by the double-backward trick (``d/du (J^T u).v``), ``H_L (J v)`` by
    differentiating ``dL/dz`` and ``J^T (.)`` by a backward pass. ``curvature="hessian"``
    uses Hessian-vector products ``H v`` instead (any closure, no model call needed; CG
    stops at negative curvature). CG stops when ``phi`` (the quadratic) improves by less
    than ``cg_tol`` per iteration over the last ``max(10, i/10)`` iterations, or after
    ``cg_max_iter`` iterations.

    Args: params (one group), lr=1.0, damping=1.0 (lambda_0), curvature="gauss_newton" |
    "hessian", cg_max_iter=50, cg_tol=5e-4 (Martens' epsilon; None: off),
    cg_decay=0.95 (warm start from the previous step's solution), adapt_damping=True
    (the closure is evaluated once more, at the new point, to measure rho).
    ``step(closure)`` required; with ``"gauss_newton"`` the closure must call the model
    (an ``nn.Module`` owning the parameters) exactly once. State (first parameter):
    ``direction``, ``damping``, ``rho``, ``cg_iterations``, ``step``.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> x, y = torch.randn(64, 3), torch.randn(64, 1)
        >>> opt = HessianFree(net.parameters(), damping=0.1)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(net(x), y)
        ...     loss.backward()
        ...     return loss
        >>> first = float(opt.step(closure))
        >>> for _ in range(5):
        ...     last = float(opt.step(closure))
        >>> last < first
        True

    Differs: torch, Optax and pytorch-optimizer have no Hessian-free optimizer. Left out
    of Martens' method: the diagonal preconditioner, CG-iterate backtracking, the line
    search and computing curvature on a smaller minibatch than the gradient.
    Reference: Martens (2010), Deep learning via Hessian-free optimization, ICML;
    Schraudolph (2002) for Gauss-Newton products.
    """
    advanced = ('cg_tol', 'cg_decay')   # folded under "more" in the playground

    def __init__(self, params, lr=1.0, damping=1.0, curvature="gauss_newton", *, cg_max_iter=50,
                 cg_tol=5e-4, cg_decay=0.95, adapt_damping=True):
        check_lr(lr)
        check_range("damping", damping, ge=0)
        check_choice("curvature", curvature, CURVATURES)
        check_int("cg_max_iter", cg_max_iter, ge=1)
        check_range("cg_tol", cg_tol, gt=0, allow_none=True)
        check_range("cg_decay", cg_decay, ge=0, le=1)
        check_bool("adapt_damping", adapt_damping)
        super().__init__(params, dict(lr=lr, damping=damping, curvature=curvature,
                                      cg_max_iter=cg_max_iter, cg_tol=cg_tol, cg_decay=cg_decay,
                                      adapt_damping=adapt_damping))
        one_group(self, "Hessian-free takes one step over all parameters")
        check_dense_real(self.param_groups[0]["params"], "Hessian-free")
        self._flat = FlatParams(self.param_groups[0]["params"])

    def add_param_group(self, param_group):
        """Only the constructor's group: a second one is refused."""
        if getattr(self, "_flat", None) is not None:
            fail("params", "a single parameter group (Hessian-free takes one step over all "
                 "parameters)", "add_param_group")
        super().add_param_group(param_group)

    # -- curvature products ----------------------------------------------------------
    def _gauss_newton(self, loss: Tensor, z: Tensor):
        params = self._flat.params
        u = torch.zeros_like(z, requires_grad=True)
        jtu = torch.autograd.grad(z, params, grad_outputs=u, create_graph=True, allow_unused=True)
        jtu_pairs = [(a, p) for a, p in zip(jtu, params) if a is not None and a.requires_grad]
        (dldz,) = torch.autograd.grad(loss, z, create_graph=True)

        def product(v: Tensor) -> Tensor:
            vs = self._flat.split(v)
            index = {id(p): i for i, p in enumerate(params)}
            if not jtu_pairs:
                return torch.zeros_like(v)
            (jv,) = torch.autograd.grad([a for a, _ in jtu_pairs], u,
                                        grad_outputs=[vs[index[id(p)]] for _, p in jtu_pairs],
                                        retain_graph=True)
            if dldz.requires_grad:
                (hjv,) = torch.autograd.grad(dldz, z, grad_outputs=jv, retain_graph=True,
                                             allow_unused=True)
                hjv = torch.zeros_like(z) if hjv is None else hjv
            else:
                hjv = torch.zeros_like(z)
            out = torch.autograd.grad(z, params, grad_outputs=hjv, retain_graph=True,
                                      allow_unused=True)
            return torch.cat([torch.zeros(p.numel(), dtype=v.dtype, device=v.device) if o is None
                              else o.reshape(-1) for o, p in zip(out, params)])
        return product

    def _hessian(self, g: Tensor):
        params = self._flat.params

        def product(v: Tensor) -> Tensor:
            if not g.requires_grad:
                return torch.zeros_like(v)
            out = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True,
                                      allow_unused=True)
            return torch.cat([torch.zeros(p.numel(), dtype=v.dtype, device=v.device) if o is None
                              else o.reshape(-1) for o, p in zip(out, params)])
        return product

    # -- the step --------------------------------------------------------------------
    def step(self, closure=None):  # type: ignore[override]
        """One Hessian-free step; returns the loss at the start of the step."""
        if closure is None:
            fail("closure", "given (Hessian-free needs the loss's graph for curvature "
                 "products)", None)
        group = self.param_groups[0]
        params = self._flat.params
        state = self.state[params[0]]
        gauss_newton = group["curvature"] == "gauss_newton"
        owned = {id(p) for p in params}
        outputs: list[Tensor] = []

        def on_call(module, inputs, output, depth):
            if depth == 0 and torch.is_tensor(output) and output.requires_grad and any(
                    id(p) in owned for p in module.parameters()):
                outputs.append(output)

        watch = module_calls(on_call) if gauss_newton else contextlib.nullcontext()
        with torch.enable_grad(), backward_keeps_graph(create_graph=not gauss_newton), watch:
            loss = closure()
        try:
            with torch.enable_grad():
                if gauss_newton:
                    if len(outputs) != 1:
                        fail("closure", "a function that calls the model (a module owning the "
                             "parameters) exactly once, for curvature='gauss_newton' (use "
                             "curvature='hessian' otherwise)", f"{len(outputs)} model calls")
                    g = self._flat.grad().detach()
                    product = self._gauss_newton(loss, outputs[0])
                else:
                    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                   for p in params])
                    product = self._hessian(g)
                    g = g.detach()
                lam = float(state.get("damping", scalar(group["damping"])))

                def damped(v):
                    with torch.enable_grad():
                        return product(v).detach() + lam * v

                prev = state.get("direction")
                x0 = None if prev is None or group["cg_decay"] == 0 else prev * group["cg_decay"]
                res = conjugate_gradient(damped, -g, x0, max_iter=group["cg_max_iter"],
                                         progress_tol=group["cg_tol"])
        finally:
            detach_grads(params)
            outputs.clear()
        p = res.x
        lr = scalar(group["lr"])
        gp = float(g.dot(p))
        pap = float(p.dot(-g - res.residual))          # p.(G + lambda I) p, as A p = b - r
        model = lr * gp + 0.5 * lr * lr * pap
        saved = self._flat.clone() if group["adapt_damping"] else None
        with torch.no_grad():
            self._flat.add_(lr, p)
        rho = None
        if group["adapt_damping"]:
            with torch.enable_grad():
                new_loss = scalar(closure())
            rho = (new_loss - scalar(loss)) / model if model < 0 else float("-inf")
            if rho > 0.75:
                lam *= 2.0 / 3.0
            elif not rho >= 0.25:          # also a non-finite loss at the new point
                lam *= 1.5
            if not rho >= 0:               # the loss went up: undo the step
                self._flat.set_(saved)
                p = torch.zeros_like(p)
        state["direction"] = p.detach()
        state["damping"] = lam
        state["rho"] = rho
        state["cg_iterations"] = res.iterations
        state["step"] = state.get("step", 0) + 1
        return loss.detach() if torch.is_tensor(loss) else loss   # the graph is not kept
