"""Shampoo: a preconditioner per tensor dimension (Gupta, Koren & Singer 2018), with
layer-wise grafting onto an elementwise method (Agarwal et al. 2020; Anil et al. 2020)
and that elementwise method for vectors, scalars and oversized dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from descend._validation import check_choice, check_int, check_pair, check_range
from descend.optim._closure import check_lr, scalar

__all__ = ["Shampoo", "matrix_power", "GRAFTS"]

GRAFTS = ("adagrad", "adam", "sgd", "none")


def matrix_power(mat: Tensor, power: float, eps: float = 0.0) -> Tensor:
    """``(M + eps I)^power`` of a symmetric positive semi-definite matrix, by ``eigh`` in
    float64 (eigenvalues below ``1e-30`` are clamped there).

    >>> m = torch.tensor([[4.0, 0.0], [0.0, 16.0]])
    >>> matrix_power(m, -0.25)
    tensor([[0.7071, 0.0000],
            [0.0000, 0.5000]])
    """
    work = mat.double()
    work = (work + work.T) / 2 + eps * torch.eye(work.shape[0], dtype=work.dtype, device=work.device)
    vals, vecs = torch.linalg.eigh(work)
    vals = vals.clamp(min=1e-30)
    return ((vecs * vals.pow(power)) @ vecs.T).to(mat.dtype)


def _mode_product(t: Tensor, mat: Tensor, dim: int) -> Tensor:
    """``t x_dim mat``: multiply dimension ``dim`` of ``t`` by ``mat`` (``mat @`` along it)."""
    return torch.tensordot(mat, t, dims=([1], [dim])).movedim(0, dim)


class Shampoo(torch.optim.Optimizer):
    """Shampoo: ``L^-1/4 G R^-1/4`` for matrices, one preconditioner per dimension of any
    tensor, grafted onto an elementwise method's step size.

    Math (Gupta, Koren & Singer 2018, Algorithms 1-2). For a parameter of order ``k >= 2``
    (a matrix: ``k = 2``) with gradient ``G`` and, per dimension ``i``, the contraction
    ``G_(i) G_(i)^T`` of all other dimensions (``G G^T`` and ``G^T G`` for a matrix)::

        H_i <- beta2 H_i + (1 - beta2) G_(i) G_(i)^T      (beta2 = 1: the paper's sum, H_i += ...)
        every update_interval steps:  P_i = (H_i + eps I)^(-1/(2k))
        D = G x_1 P_1 x_2 P_2 ... x_k P_k               (matrix: D = L^-1/4 G R^-1/4)

    Grafting (layer-wise, Agarwal et al. 2020): ``D <- D |E| / |D|`` with ``E`` the step
    direction of the ``graft`` method on the same gradient (AdaGrad ``g / (sqrt(sum g^2)
    + graft_eps)``, Adam's bias-corrected ``m / (sqrt(v) + graft_eps)``, SGD ``g``; "none":
    no grafting). Parameters with fewer than 2 dimensions, and every dimension larger than
    ``max_preconditioner_dim`` (left unpreconditioned), fall back: such a parameter's
    direction is ``E`` itself (``g`` when graft="none"). Then, for every parameter::

        D <- D + weight_decay w;  b <- momentum b + D;  w <- w - lr b

    Args: params or groups; lr=0.1 (graft="adagrad": AdaGrad's scale), momentum=0.0,
    eps=1e-6 (added to each H at the root: the paper's ``H_0 = eps I``), beta2=1.0, update_interval=1 (steps between inverse
    roots), graft="adagrad" | "adam" | "sgd" | "none", graft_eps=1e-8,
    graft_betas=(0.9, 0.999) (for "adam"), weight_decay=0.0, max_preconditioner_dim=1024.
    State: ``shampoo_H<i>`` and ``shampoo_P<i>`` per preconditioned dimension i,
    ``graft_sum`` / ``graft_exp_avg`` / ``graft_exp_avg_sq``, ``momentum_buffer``,
    ``step``. The roots are computed in float64 by ``eigh``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64))
        >>> opt = Shampoo([w], lr=1.0, graft="none", eps=0.0)
        >>> w.grad = torch.eye(2, dtype=torch.float64) * 4   # L = R = 16 I, L^-1/4 G R^-1/4 = I
        >>> _ = opt.step()
        >>> w.detach()
        tensor([[0., 2.],
                [3., 3.]], dtype=torch.float64)

    Differs: torch and Optax have no Shampoo (Optax's contrib has a distributed variant,
    pytorch-optimizer another); descend's is the paper's algorithm with grafting and an
    update interval, without blocking of large dimensions (they are left out instead),
    without the coupled-Newton root iterations and without distributed computation.
    Reference: Gupta, Koren & Singer (2018), Shampoo: preconditioned stochastic tensor
    optimization; Anil et al. (2020), Scalable second order optimization for deep
    learning; Agarwal et al. (2020), Disentangling adaptive gradient methods from learning
    rates (grafting).
    """
    advanced = ('graft_eps', 'graft_betas', 'max_preconditioner_dim')   # folded under "more" in the playground

    def __init__(self, params, lr=0.1, momentum=0.0, eps=1e-6, beta2=1.0, update_interval=1,
                 graft="adagrad", graft_eps=1e-8, graft_betas=(0.9, 0.999), weight_decay=0.0,
                 max_preconditioner_dim=1024):
        defaults = dict(lr=lr, momentum=momentum, eps=eps, beta2=beta2,
                        update_interval=update_interval, graft=graft, graft_eps=graft_eps,
                        graft_betas=graft_betas, weight_decay=weight_decay,
                        max_preconditioner_dim=max_preconditioner_dim)
        self._check(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def _check(group):
        check_lr(group["lr"])
        check_range("momentum", group["momentum"], ge=0, le=1)
        check_range("eps", group["eps"], ge=0)
        check_range("beta2", group["beta2"], gt=0, le=1)
        check_int("update_interval", group["update_interval"], ge=1)
        check_choice("graft", group["graft"], GRAFTS)
        check_range("graft_eps", group["graft_eps"], ge=0)
        check_pair("graft_betas", group["graft_betas"])
        check_range("weight_decay", group["weight_decay"], ge=0)
        check_int("max_preconditioner_dim", group["max_preconditioner_dim"], ge=1)

    def add_param_group(self, param_group):
        """Add a group; its hyperparameters are checked (before it is added) like the constructor's."""
        if isinstance(param_group, dict):
            self._check({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _graft(self, st: dict, g: Tensor, group: dict) -> Tensor | None:
        kind = group["graft"]
        if kind == "none":
            return None
        if kind == "sgd":
            return g.clone()
        eps = group["graft_eps"]
        if kind == "adagrad":
            acc = st.get("graft_sum")
            if acc is None:
                acc = st["graft_sum"] = torch.zeros_like(g)
            acc.addcmul_(g, g)
            return g / (acc.sqrt() + eps)
        b1, b2 = (float(b) for b in group["graft_betas"])
        m, v = st.get("graft_exp_avg"), st.get("graft_exp_avg_sq")
        if m is None:
            m = st["graft_exp_avg"] = torch.zeros_like(g)
            v = st["graft_exp_avg_sq"] = torch.zeros_like(g)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        t = st["step"]
        return (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)

    def _precondition(self, st: dict, g: Tensor, group: dict) -> Tensor | None:
        dims = [i for i, n in enumerate(g.shape) if n <= group["max_preconditioner_dim"]]
        if g.dim() < 2 or not dims:
            return None
        k = g.dim()
        beta2 = group["beta2"]
        refresh = (st["step"] - 1) % group["update_interval"] == 0
        d = g
        for i in dims:
            gi = g.movedim(i, 0).reshape(g.shape[i], -1)
            stat = gi @ gi.T
            key = f"shampoo_H{i}"
            if key not in st:
                st[key] = torch.zeros_like(stat)
            h = st[key]
            if beta2 == 1.0:
                h.add_(stat)
            else:
                h.mul_(beta2).add_(stat, alpha=1 - beta2)
            if refresh or f"shampoo_P{i}" not in st:
                st[f"shampoo_P{i}"] = matrix_power(h, -1.0 / (2 * k), group["eps"])
            d = _mode_product(d, st[f"shampoo_P{i}"], i)
        return d

    @torch.no_grad()
    def step(self, closure=None):
        """One Shampoo step for every parameter with a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = scalar(group["lr"]), group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                st["step"] = st.get("step", 0) + 1
                graft = self._graft(st, g, group)
                d = self._precondition(st, g, group)
                if d is None:
                    d = g.clone() if graft is None else graft
                elif graft is not None:
                    dn = d.norm()
                    d = d * (graft.norm() / dn) if dn > 0 else d
                if wd:
                    d = d + wd * p
                if m:
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(m).add_(d)
                    d = buf
                p.add_(d, alpha=-lr)
        return loss
