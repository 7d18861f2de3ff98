"""K-FAC: Kronecker-factored approximate curvature for linear and convolutional layers
(Martens & Grosse 2015; convolutions: Grosse & Martens 2016), momentum SGD on the
preconditioned gradients, and plain momentum SGD for every other parameter.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from descend._validation import check_bool, check_int, check_range, fail
from descend.optim._closure import check_lr, module_calls, scalar

__all__ = ["KFAC", "kfac_factors"]

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _conv_patches(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """The input patches a convolution multiplies by its kernel: ``(m * positions, C k...)``."""
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, stride = (1, *module.kernel_size), (1, *module.stride)
        dilation, padding = (1, *module.dilation), module.padding
        padding = padding if isinstance(padding, str) else (0, *padding)
    else:
        kernel, stride, dilation, padding = (module.kernel_size, module.stride, module.dilation,
                                             module.padding)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        pads = []
        for k, d in zip(reversed(kernel), reversed(dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        padding = (0, 0)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _supported(module: nn.Module) -> bool:
    if not isinstance(module, _SUPPORTED):
        return False
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return module.groups == 1 and module.padding_mode == "zeros"
    return True


def kfac_factors(module: nn.Module, inputs: Tensor, grad_outputs: Tensor, with_bias: bool):
    """The Kronecker factors of one layer on one batch: ``(A, G)``.

    Math: ``a`` = the layer's input rows (convolutions: the unfolded patches, one row per
    output position), with a trailing 1 when the bias is included (homogeneous
    coordinates); ``g`` = the gradient of the (batch-mean) loss with respect to the
    layer's output rows; ``m`` the batch size and ``N = m T`` rows (``T`` positions)::

        A = a^T a / N           G = m g^T g

    so that ``A (x) G`` approximates the Fisher of the per-example losses
    (``m g`` is the gradient of one example's loss; convolutions: Grosse & Martens' KFC
    with spatial homogeneity, ``G`` summed over positions).

    >>> lin = nn.Linear(3, 2)
    >>> a, g = kfac_factors(lin, torch.ones(4, 3), torch.ones(4, 2) / 4, with_bias=True)
    >>> a.shape, g.shape, float(a[0, 0]), float(g[0, 0])
    (torch.Size([4, 4]), torch.Size([2, 2]), 1.0, 1.0)
    """
    m = inputs.shape[0]
    if isinstance(module, nn.Linear):
        a = inputs.reshape(-1, inputs.shape[-1])
        g = grad_outputs.reshape(-1, grad_outputs.shape[-1])
    else:
        a = _conv_patches(module, inputs)
        g = grad_outputs.movedim(1, -1).reshape(-1, grad_outputs.shape[1])
    if with_bias:
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
    return a.T @ a / a.shape[0], (g.T @ g) * m


def _inverse(mat: Tensor) -> Tensor:
    """Inverse of a symmetric positive definite matrix (Cholesky; eigh as a fallback)."""
    work = mat.double() if mat.dtype in (torch.float16, torch.bfloat16) else mat
    if not torch.isfinite(work).all():   # diverged: propagate, as a torch optimizer would
        return torch.full_like(mat, float("nan"))
    work = (work + work.T) / 2
    chol, info = torch.linalg.cholesky_ex(work)
    if int(info) == 0:
        return torch.cholesky_inverse(chol).to(mat.dtype)
    vals, vecs = torch.linalg.eigh(work)
    vals = vals.clamp(min=torch.finfo(work.dtype).tiny)
    return ((vecs / vals) @ vecs.T).to(mat.dtype)


class KFAC(torch.optim.Optimizer):
    """K-FAC: each linear / convolutional layer's gradient preconditioned by the inverse
    of a Kronecker-factored Fisher ``A (x) G``; momentum SGD on the result.

    Math (Martens & Grosse 2015, sections 3, 6.3; Grosse & Martens 2016 for convolutions).
    For a layer with weight ``W`` (``out x in``, convolutions flattened to
    ``out x (C k...)``) and bias ``b``, ``V = [grad W, grad b]``; per step, from the
    factors of :func:`kfac_factors` on the step's batch::

        A <- stat_decay A + (1 - stat_decay) A_batch      (A = A_batch at the first step)
        G <- stat_decay G + (1 - stat_decay) G_batch
        every inverse_every steps: pi = sqrt((tr A / dim A) / (tr G / dim G))  (pi_damping)
                                   A_inv = (A + pi sqrt(damping) I)^-1,
                                   G_inv = (G + sqrt(damping) / pi I)^-1
        U = G_inv V A_inv              (= ((A + ..) (x) (G + ..))^-1 vec(V), column-major vec)

    ``kl_clip``: all ``U`` scaled by ``nu = min(1, sqrt(kl_clip / (lr^2 sum U.V)))`` (a
    trust region on the KL change, Ba et al. 2017). Then for every parameter
    (``u = U`` for K-FAC layers, ``u = grad`` for all other parameters: the elementwise
    fallback)::

        u <- u + weight_decay w;  b <- momentum b + u;  w <- w - lr b

    The layers are found while the closure runs (torch's global module hooks): a
    ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d`` (groups=1, zero padding) whose weight is
    optimized is preconditioned; the rest (normalization, embeddings, grouped or 3-D
    convolutions, recurrent cells) falls back. Give ``model=`` to record with hooks on its
    layers instead, and call ``step()`` without a closure.

    Args: params or groups; lr=0.01, momentum=0.9, damping=1e-3, stat_decay=0.95,
    inverse_every=10, weight_decay=0.0, kl_clip=1e-3 (None: off), pi_damping=True;
    model=None. The loss is taken to be a mean over the batch (torch's default
    reduction). State: ``kfac_A``, ``kfac_G``, ``kfac_A_inv``, ``kfac_G_inv`` (on a
    layer's weight), ``momentum_buffer`` and ``step`` on every parameter.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> opt = KFAC(net.parameters(), lr=0.05)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.cross_entropy(net(x), y)
        ...     loss.backward()
        ...     return loss
        >>> losses = [opt.step(closure).item() for _ in range(20)]
        >>> losses[-1] < losses[0], sorted(k for k in opt.state[net[0].weight])
        (True, ['kfac_A', 'kfac_A_inv', 'kfac_G', 'kfac_G_inv', 'momentum_buffer', 'step'])

    Differs: the Fisher is the empirical one (from the closure's own backward pass, the
    data's labels) rather than sampled from the model's predictions, as in most
    practical implementations (e.g. KFAC-pytorch); no adaptive damping or re-scaling of
    the update by the exact quadratic model (Martens & Grosse's sections 6.4-6.6 and 7).
    torch and Optax have no K-FAC (KFAC-JAX is separate). Reference: Martens & Grosse
    (2015), Optimizing neural networks with Kronecker-factored approximate curvature;
    Grosse & Martens (2016), A Kronecker-factored approximate Fisher matrix for
    convolution layers; Ba, Grosse & Martens (2017), Distributed second-order
    optimization using Kronecker-factored approximations.
    """
    advanced = ('pi_damping', 'stat_decay', 'kl_clip')   # folded under "more" in the playground

    def __init__(self, params, lr=0.01, momentum=0.9, damping=1e-3, stat_decay=0.95,
                 inverse_every=10, weight_decay=0.0, kl_clip=1e-3, pi_damping=True, *,
                 model: nn.Module | None = None):
        defaults = dict(lr=lr, momentum=momentum, damping=damping, stat_decay=stat_decay,
                        inverse_every=inverse_every, weight_decay=weight_decay, kl_clip=kl_clip,
                        pi_damping=pi_damping)
        self._check(defaults)
        if model is not None and not isinstance(model, nn.Module):
            fail("model", "an nn.Module or None", model, TypeError)
        super().__init__(params, defaults)
        self._calls: dict[nn.Module, list[dict]] = {}
        self._handles = []
        self._model = model
        if model is not None:
            for module in model.modules():
                if _supported(module):
                    self._handles.append(module.register_forward_hook(self._record_call))

    @staticmethod
    def _check(group):
        check_lr(group["lr"])
        check_range("momentum", group["momentum"], ge=0, le=1)
        check_range("damping", group["damping"], gt=0)
        check_range("stat_decay", group["stat_decay"], ge=0, lt=1)
        check_int("inverse_every", group["inverse_every"], ge=1)
        check_range("weight_decay", group["weight_decay"], ge=0)
        check_range("kl_clip", group["kl_clip"], gt=0, allow_none=True)
        check_bool("pi_damping", group["pi_damping"])

    def add_param_group(self, param_group):
        """Add a group; its hyperparameters are checked (before it is added) like the constructor's."""
        if isinstance(param_group, dict):
            self._check({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self._ids = {id(p) for g in self.param_groups for p in g["params"]}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_calls", {})
        self.__dict__.setdefault("_handles", [])
        self.__dict__.setdefault("_model", None)
        self._ids = {id(p) for g in self.param_groups for p in g["params"]}

    # -- recording -------------------------------------------------------------------
    def _owned(self) -> dict[int, dict]:
        return {id(p): g for g in self.param_groups for p in g["params"]}

    def _record_call(self, module, inputs, output):
        if not (module.training and torch.is_grad_enabled() and torch.is_tensor(output)
                and output.requires_grad):
            return
        if id(module.weight) not in self._ids:
            return
        call = {"a": inputs[0].detach(), "g": None}
        self._calls.setdefault(module, []).append(call)

        def keep(grad, call=call):
            call["g"] = grad.detach()
        output.register_hook(keep)

    def _on_call(self, module, inputs, output, depth):
        if _supported(module):
            self._record_call(module, inputs, output)

    # -- the step --------------------------------------------------------------------
    def step(self, closure=None):
        """Precondition the recorded layers' gradients, then one momentum SGD step.

        ``closure`` (zero the gradients, forward, ``backward``, return the loss) is
        required unless the optimizer was given ``model=``.
        """
        loss = None
        if closure is not None:
            watch = module_calls(self._on_call) if self._model is None else contextlib.nullcontext()
            with torch.enable_grad(), watch:
                loss = closure()
        elif self._model is None:
            fail("closure", "given, or the optimizer built with model= (K-FAC records the "
                 "layers' inputs and output gradients while the closure runs)", None)
        calls, self._calls = self._calls, {}
        with torch.no_grad():
            self._update(calls)
        return loss

    def _layer_direction(self, module, records, group) -> dict[Tensor, Tensor] | None:
        w, b = module.weight, module.bias
        records = [r for r in records if r["g"] is not None]
        if w.grad is None or not records:
            return None
        with_bias = b is not None and id(b) in self._ids and b.grad is not None
        a_b = g_b = None
        for r in records:
            a, g = kfac_factors(module, r["a"].to(w.dtype), r["g"].to(w.dtype), with_bias)
            a_b, g_b = (a, g) if a_b is None else (a_b + a, g_b + g)
        a_b, g_b = a_b / len(records), g_b / len(records)
        st = self.state[w]
        st["step"] = st.get("step", 0) + 1
        decay = group["stat_decay"]
        if "kfac_A" not in st:
            st["kfac_A"], st["kfac_G"] = a_b.clone(), g_b.clone()
        else:
            st["kfac_A"].mul_(decay).add_(a_b, alpha=1 - decay)
            st["kfac_G"].mul_(decay).add_(g_b, alpha=1 - decay)
        if (st["step"] - 1) % group["inverse_every"] == 0 or "kfac_A_inv" not in st:
            A, G = st["kfac_A"], st["kfac_G"]
            lam = math.sqrt(scalar(group["damping"]))
            pi = 1.0
            if group["pi_damping"]:
                ta = float(torch.trace(A)) / A.shape[0]
                tg = float(torch.trace(G)) / G.shape[0]
                pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0
            eye_a = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
            eye_g = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
            st["kfac_A_inv"] = _inverse(A + pi * lam * eye_a)
            st["kfac_G_inv"] = _inverse(G + lam / pi * eye_g)
        grad = w.grad.reshape(w.shape[0], -1)
        if with_bias:
            grad = torch.cat([grad, b.grad.reshape(-1, 1)], dim=1)
        u = st["kfac_G_inv"] @ grad @ st["kfac_A_inv"]
        out = {w: u[:, :grad.shape[1] - int(with_bias)].reshape(w.shape)}
        if with_bias:
            out[b] = u[:, -1].reshape(b.shape)
            self.state[b]["step"] = self.state[b].get("step", 0) + 1
        return out

    def _update(self, calls) -> None:
        owned = self._owned()
        directions: dict[Tensor, Tensor] = {}
        for module, records in calls.items():
            group = owned.get(id(module.weight))
            if group is None:
                continue
            d = self._layer_direction(module, records, group)
            if d:
                directions.update(d)
        clips = [g["kl_clip"] for g in self.param_groups if g["kl_clip"] is not None]
        if clips and directions:
            vg = sum(float((u * p.grad).sum()) * scalar(owned[id(p)]["lr"]) ** 2
                     for p, u in directions.items())
            nu = min(1.0, math.sqrt(min(clips) / vg)) if vg > 0 else 1.0
            if nu < 1.0:
                for u in directions.values():
                    u.mul_(nu)
        for group in self.param_groups:
            lr, m, wd = scalar(group["lr"]), group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                u = directions.get(p)
                if u is None:
                    u = p.grad.clone()
                    st["step"] = st.get("step", 0) + 1
                if wd:
                    u.add_(p, alpha=wd)
                if m:
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = u.clone()
                    else:
                        buf.mul_(m).add_(u)
                    u = buf
                p.add_(u, alpha=-lr)
