"""Batch norm for inference (Algorithm 2 of note 003): population statistics, then folding.

After training, each BN ``y = gamma (x - mu_B) / sqrt(sigma_B^2 + eps) + beta`` is frozen
with population statistics averaged over many training minibatches of size m:

    E[x] = E_B[mu_B],      Var[x] = m/(m-1) E_B[sigma_B^2]   (unbiased)

and becomes the affine map ``y = s x + (beta - s E[x])`` with ``s = gamma / sqrt(Var[x] +
eps)``, which can be folded into the Linear / Conv layer before it:

    W' = s W (per output unit / channel),   b' = s (b - E[x]) + beta.

torch's BN keeps an exponential moving average of the batch statistics instead; with
``momentum=None`` it keeps the plain average of ``mu_B`` and of the unbiased batch
variances, which equals Algorithm 2 when all minibatches have the same size.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from descend._validation import check_bool, fail

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def population_statistics(model: nn.Module, batches: Iterable, *, device=None) -> nn.Module:
    """Set every BatchNorm's running mean / variance to Algorithm 2's population statistics.

    Runs ``model`` on each minibatch (a tensor, or a tuple / list whose first entry is the
    input), with the BN layers computing batch statistics as in training and every other
    module in eval mode (no dropout noise). For each BN and minibatch of ``m`` values per
    channel (N for (N, C), N*L or N*H*W for conv features), ``mu_B`` and the biased
    ``sigma_B^2`` are recorded; then ``running_mean = mean_B mu_B`` and ``running_var =
    mean_B (m/(m-1)) sigma_B^2`` (= ``m/(m-1) E_B[sigma_B^2]`` for equal sizes). Modes
    are restored. Returns ``model``.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    >>> _ = population_statistics(net, [torch.randn(8, 3) for _ in range(5)])
    """
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        fail("model", "a model with BatchNorm layers", type(model).__name__)
    sums = {bn: [0.0, 0.0, 0] for bn in bns}

    def hook(bn, inputs):
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))
        m = x.numel() // x.shape[1]
        if m < 2:
            fail("batches", "minibatches with at least 2 values per channel", m)
        mu = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        acc = sums[bn]
        acc[0] = acc[0] + mu.double()
        acc[1] = acc[1] + var.double() * m / (m - 1)
        acc[2] += 1

    modes = {m: m.training for m in model.modules()}
    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.train()
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device) if device is not None else x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    for bn, (s_mu, s_var, count) in sums.items():
        if count == 0:
            fail("batches", "a non-empty iterable of minibatches", batches)
        bn.running_mean.copy_(s_mu / count)
        bn.running_var.copy_(s_var / count)
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.fill_(count)
    return model


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.Module) -> nn.Module:
    out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != out_features:
        fail("model", f"a BatchNorm of {out_features} features after {type(layer).__name__}", bn.num_features)
    if bn.running_mean is None:
        fail("model", "BatchNorm layers that track running statistics", bn)
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    folded = copy.deepcopy(layer)
    w = folded.weight
    w.mul_(scale.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype))
    b = shift if layer.bias is None else layer.bias * scale + shift
    if folded.bias is None:
        folded.bias = nn.Parameter(b.to(w.dtype))
    else:
        folded.bias.copy_(b)
    return folded


def _fold_children(module: nn.Module) -> int:
    count = 0
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for prev, cur in zip(names, names[1:]):
            layer, bn = module._modules[prev], module._modules[cur]
            if isinstance(bn, _BN) and isinstance(layer, _FOLDABLE) and not parametrize.is_parametrized(layer):
                module._modules[prev] = _fold_pair(layer, bn)
                module._modules[cur] = nn.Identity()
                count += 1
    for child in module.children():
        count += _fold_children(child)
    return count


def fold_batchnorm(model: nn.Module, *, inplace: bool = False, strict: bool = True) -> nn.Module:
    """Fold each eval-mode BatchNorm into the Linear / Conv just before it (Algorithm 2, line 11).

    Within every ``nn.Sequential``, a ``BatchNorm{1,2,3}d`` that directly follows a
    ``Linear`` / ``Conv{1,2,3}d`` is replaced by ``Identity`` and the layer by one with
    ``W' = s W``, ``b' = s (b - E[x]) + beta``, ``s = gamma / sqrt(Var[x] + eps)``,
    using the BN's running statistics (set them first with
    :func:`population_statistics` for the notes' estimate). The result is in eval mode
    and computes the eval-mode network's function with fewer operations.
    ``strict=True`` raises if a BatchNorm is left unfolded (e.g. one after an
    activation); ``inplace=False`` works on a copy.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU()).eval()
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(fold_batchnorm(net)(x), net(x), atol=1e-6)
    True
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, TypeError)
    check_bool("inplace", inplace)
    check_bool("strict", strict)
    target = model if inplace else copy.deepcopy(model)
    _fold_children(target)
    left = [name for name, m in target.named_modules() if isinstance(m, _BN)]
    if strict and left:
        fail("model", "a network whose BatchNorm layers each follow a Linear/Conv in a Sequential "
             f"(unfoldable: {', '.join(left)}); pass strict=False to keep them", type(model).__name__)
    return target.eval()
