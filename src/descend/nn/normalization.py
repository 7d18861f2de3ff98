"""Normalization by name for the model builders, and the SyncBatchNorm conversion.

Output normalizations (notes 002, 004) are torch's modules, whose semantics match the
notes: ``batch`` (BatchNorm{1,2,3}d: per-feature mean/variance over the minibatch, and
over space for conv), ``layer`` (per sample over all features), ``instance`` (per sample
and channel over space), ``group`` (per sample over groups of channels). Weight
normalizations reparametrize the weight of the layer instead: ``weight``
(``w = g v / ||v||``, Salimans & Kingma 2016) and ``spectral`` (``W / sigma_max(W)`` by
power iteration, Miyato et al. 2018), both through ``torch.nn.utils.parametrizations``.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrizations

from descend._validation import check_choice, check_int, fail

NORMS = (None, "batch", "layer", "instance", "group", "weight", "spectral")
OUTPUT_NORMS = ("batch", "layer", "instance", "group")
WEIGHT_NORMS = ("weight", "spectral")


def check_norm(norm):
    """Validate a ``norm`` name (None allowed).

    >>> check_norm("batch"), check_norm(None)
    ('batch', None)
    """
    return check_choice("norm", norm, NORMS)


def norm_layer(norm: str | None, num_features: int, spatial_dims: int, *, groups: int = 8) -> nn.Module | None:
    """The output-normalization module for ``num_features`` features / channels.

    ``spatial_dims`` is 0 for fully connected features (N, C), 1 for (N, C, L), 2 for
    (N, C, H, W), 3 for (N, C, D, H, W). Returns None for ``None`` and the weight norms.

    ``layer`` on conv features is ``GroupNorm(1, C)``: the statistics of torch's
    ``LayerNorm`` over (C, H, W) with a per-channel (not per-element) scale and shift,
    so the model does not depend on the input size. ``instance`` needs spatial
    dimensions. ``group`` uses ``groups`` groups, which must divide the channels.

    >>> type(norm_layer("batch", 16, 2)).__name__, type(norm_layer("layer", 16, 2)).__name__
    ('BatchNorm2d', 'GroupNorm')
    """
    check_norm(norm)
    check_int("spatial_dims", spatial_dims, ge=0, le=3)
    if norm is None or norm in WEIGHT_NORMS:
        return None
    if norm == "batch":
        return (nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[spatial_dims](num_features)
    if norm == "layer":
        return nn.LayerNorm(num_features) if spatial_dims == 0 else nn.GroupNorm(1, num_features)
    if norm == "instance":
        if spatial_dims == 0:
            fail("norm", "one of 'batch', 'layer', 'group', 'weight', 'spectral' for fully connected "
                 "layers ('instance' normalizes over space and needs a conv model)", norm)
        return (None, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)[spatial_dims](
            num_features, affine=True)
    check_int("groups", groups, ge=1)
    if num_features % groups:
        fail("groups", f"a divisor of the layer width {num_features}", groups)
    return nn.GroupNorm(groups, num_features)


def weight_normalize(layer: nn.Module, norm: str | None) -> nn.Module:
    """Reparametrize ``layer.weight`` for ``norm="weight"`` or ``"spectral"``; else unchanged.

    >>> layer = weight_normalize(nn.Linear(3, 2), "weight")
    >>> sorted(name for name, _ in layer.named_parameters())
    ['bias', 'parametrizations.weight.original0', 'parametrizations.weight.original1']
    >>> weight_normalize(nn.Linear(3, 2), None).weight.shape
    torch.Size([2, 3])
    """
    check_norm(norm)
    if norm == "weight":
        return parametrizations.weight_norm(layer)
    if norm == "spectral":
        return parametrizations.spectral_norm(layer)
    return layer


def convert_sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d of ``model`` with ``torch.nn.SyncBatchNorm``.

    In data-parallel training each process sees only its share of the minibatch; synced
    BN computes mean and variance over the whole global batch (note 002: "use
    torch.nn.SyncBatchNorm ... when using multi-GPU or multi-machine training"). The
    conversion itself needs no process group and works on CPU; running a SyncBatchNorm in
    training mode needs an initialized process group (and CUDA), in eval mode it is the
    plain BN with its running statistics. Running statistics and affine parameters are
    kept. A thin wrapper of ``nn.SyncBatchNorm.convert_sync_batchnorm``.

    >>> convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3)))[0].__class__.__name__
    'SyncBatchNorm'
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, TypeError)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)
