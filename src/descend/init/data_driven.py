"""Initializations that look at the network or the data: LSUV and Fixup."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from descend._validation import check_bool, check_int, check_range, fail
from descend.init.rules import LAYER_TYPES, MODEL_SCHEMES, NORM_TYPES, apply, set_weight


@torch.no_grad()
def lsuv(model: nn.Module, batch: torch.Tensor, *, target_var: float = 1.0, tol: float = 0.1, max_iter: int = 10,
         orthogonal: bool = True, generator: torch.Generator | None = None) -> nn.Module:
    """Layer-sequential unit-variance init (Mishkin & Matas, ICLR 2016; note 004).

    1. Orthogonal init of every Linear / Conv weight (``orthogonal=True``; biases zero).
    2. For each Linear / Conv layer in module order: run ``batch`` through the model,
       take the variance ``v`` of all entries of the layer's output, set ``W <- W
       sqrt(target_var / v)``; repeat until ``|v - target_var| < tol`` (or ``max_iter``
       passes, then fail). Later layers do not change earlier outputs, so at the end
       every layer's output variance on ``batch`` is within ``tol`` of ``target_var``.

    The model runs in eval mode (no dropout noise; BN with its initial statistics is the
    identity map) and its mode is restored. Spectral-normalized layers cannot be
    rescaled (their scale is fixed by ``sigma_max``): they are an error.

    Args: ``batch`` input tensor; ``target_var=1.0``; ``tol=0.1``; ``max_iter=10``;
    ``orthogonal=True``; ``generator=None``. Returns ``model``.

    >>> m = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5))
    >>> m = lsuv(m, torch.randn(64, 10), generator=torch.Generator().manual_seed(0))
    """
    check_range("target_var", target_var, gt=0)
    check_range("tol", tol, gt=0)
    check_int("max_iter", max_iter, ge=1)
    check_bool("orthogonal", orthogonal)
    if not isinstance(batch, torch.Tensor):
        fail("batch", "a tensor of inputs", type(batch).__name__, TypeError)
    if orthogonal:
        apply(model, "orthogonal", generator=generator, layers=("linear", "conv"))
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES["linear"] + LAYER_TYPES["conv"])]
    for name, m in layers:
        if parametrize.is_parametrized(m, "weight") and any(
                type(p).__name__ == "_SpectralNorm" for p in m.parametrizations.weight):
            fail("model", "a model without spectral norm (LSUV cannot rescale it)", name)
    was_training = model.training
    model.eval()
    try:
        for name, layer in layers:
            seen: list[torch.Tensor] = []
            handle = layer.register_forward_hook(lambda mod, inp, out: seen.append(out))
            try:
                for _ in range(max_iter + 1):
                    seen.clear()
                    model(batch)
                    var = torch.cat([o.detach().reshape(-1) for o in seen]).var().item()
                    if abs(var - target_var) < tol:
                        break
                    if not math.isfinite(var) or var <= 0:
                        fail("batch", f"a batch that gives layer {name!r} a positive output variance", var)
                    set_weight(layer, "weight", layer.weight * math.sqrt(target_var / var))
                else:
                    fail("max_iter", f"enough passes for layer {name!r} to reach variance "
                         f"{target_var} +- {tol} (last {var:.4g})", max_iter)
            finally:
                handle.remove()
    finally:
        model.train(was_training)
    return model


@torch.no_grad()
def fixup(model: nn.Module, *, generator: torch.Generator | None = None, nonlinearity: str = "relu",
          negative_slope: float = 0.0, scalar_biases: bool = True) -> nn.Module:
    """Fixup init for residual networks without normalization (Zhang, Dauphin & Ma, ICLR 2019; note 004).

    With ``L`` residual branches (:class:`descend.nn.ResidualBlock`), each holding ``m``
    weight layers:

    1. every Linear / Conv gets He init (``nonlinearity``, ``negative_slope``), biases 0;
    2. the weight layers inside a branch are scaled by ``L^(-1/(2m-2))`` (when m >= 2);
    3. the last layer of each branch and the classification layer (the model's last
       Linear outside the branches) are set to zero, so every block starts as the identity;
    4. each branch gets a scalar multiplier (1) and, with ``scalar_biases=True``, a scalar
       bias (0) before each of its weight layers and activations.

    Parameters are added (step 4): create the optimizer after calling ``fixup``. A model
    with normalization layers or weight / spectral norm is an error (Fixup replaces
    them). Calling it twice re-initializes without adding parameters twice.

    >>> from descend.nn import MODELS
    >>> net = fixup(MODELS.create("mlp", input_shape=(8,), num_classes=3, hidden=[16, 16, 16], residual=True))
    >>> float(net(torch.randn(4, 8)).detach().abs().sum())
    0.0
    """
    from descend.nn.layers import ScalarBias
    from descend.nn.models import ResidualBlock

    check_bool("scalar_biases", scalar_biases)
    norms = [n for n, m in model.named_modules() if isinstance(m, NORM_TYPES)]
    if norms:
        fail("model", "a network without normalization layers for Fixup", ", ".join(norms))
    weighted = (*LAYER_TYPES["linear"], *LAYER_TYPES["conv"])
    if any(isinstance(m, weighted) and parametrize.is_parametrized(m) for m in model.modules()):
        fail("model", "a network without weight / spectral norm for Fixup", type(model).__name__)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    if not blocks:
        fail("model", "a residual network (with descend.nn.ResidualBlock blocks) for Fixup", type(model).__name__)
    apply(model, "he_normal", generator=generator, layers=("linear", "conv"), nonlinearity=nonlinearity,
          negative_slope=negative_slope)
    n_blocks = len(blocks)
    in_branches: set[int] = set()
    for block in blocks:
        layers = [m for m in block.branch.modules() if isinstance(m, weighted)]
        in_branches.update(id(m) for m in block.branch.modules())
        if not layers:
            fail("model", "residual branches with at least one Linear / Conv layer", block)
        m = len(layers)
        if m >= 2:
            factor = n_blocks ** (-1.0 / (2 * m - 2))
            for layer in layers[:-1]:
                layer.weight.mul_(factor)
        layers[-1].weight.zero_()
        ref = layers[-1].weight
        if block.multiplier is None:
            block.multiplier = nn.Parameter(torch.ones(1, dtype=ref.dtype, device=ref.device))
        else:
            block.multiplier.fill_(1.0)
        if scalar_biases:
            _add_scalar_biases(block, weighted, ScalarBias, ref)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in in_branches]
    if heads:
        heads[-1].weight.zero_()
        if heads[-1].bias is not None:
            heads[-1].bias.zero_()
    return model


MODEL_SCHEMES["fixup"] = fixup


def _add_scalar_biases(block, weighted, scalar_bias_cls, ref: torch.Tensor) -> None:
    """Insert a ScalarBias before every weight layer and activation of the branch (once)."""
    mods = list(block.branch)
    if any(isinstance(m, scalar_bias_cls) for m in mods):
        for m in mods:
            if isinstance(m, scalar_bias_cls):
                m.bias.zero_()
        return
    out: list[nn.Module] = []
    for m in mods:
        if isinstance(m, weighted) or _is_activation(m):
            out.append(scalar_bias_cls().to(device=ref.device, dtype=ref.dtype))
        out.append(m)
    block.branch = nn.Sequential(*out)


def _is_activation(m: nn.Module) -> bool:
    from descend.nn.activations import Maxout, ScaledTanh
    return isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.Sigmoid, nn.Tanh, ScaledTanh, Maxout))
