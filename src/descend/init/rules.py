"""Apply one initializer to a whole model by rules: which layers, which weights, what biases get."""

from __future__ import annotations

import inspect
import re

import torch
from torch import nn
from torch.nn.utils import parametrize

from descend._validation import check_choice, check_no_unknown, fail
from descend.init.schemes import INITIALIZERS

LAYER_TYPES = {
    "linear": (nn.Linear, nn.Bilinear),
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
    "recurrent": (nn.RNNBase,),
}
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_GATES = {"LSTM": 4, "GRU": 3}

#: Schemes that act on a whole model rather than on one tensor (name -> function of the
#: model); :mod:`descend.init.data_driven` registers ``fixup`` here, so ``apply`` reaches
#: it without this module importing the one above it.
MODEL_SCHEMES: dict = {}


def set_weight(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Write ``value`` as ``module.<name>``, through a parametrization if there is one.

    For weight norm (``w = g v/||v||``) this sets ``v = value`` and ``g = ||value||``, so the
    effective weight is ``value``; for spectral norm the stored weight becomes ``value``
    (the effective one stays ``value / sigma_max``).

    >>> from torch.nn.utils import parametrizations
    >>> layer = parametrizations.weight_norm(nn.Linear(2, 2))
    >>> set_weight(layer, "weight", torch.eye(2))
    >>> torch.equal(layer.weight, torch.eye(2))        # the effective weight, through g v/||v||
    True
    >>> plain = nn.Linear(2, 2); set_weight(plain, "bias", torch.ones(2)); plain.bias.tolist()
    [1.0, 1.0]
    """
    with torch.no_grad():
        if parametrize.is_parametrized(module, name):
            setattr(module, name, value)
        else:
            getattr(module, name).copy_(value)


def _weight_like(module: nn.Module, name: str) -> torch.Tensor:
    w = getattr(module, name)
    return torch.empty_like(w.detach())


def _init_weight(module: nn.Module, fn, generator, kwargs: dict) -> None:
    if isinstance(module, nn.RNNBase):
        gates = _GATES.get(module.mode, 1)  # LSTM 4, GRU 3, RNN_TANH / RNN_RELU 1
        for pname, p in module.named_parameters(recurse=False):
            if pname.startswith("weight"):
                new = torch.empty_like(p.detach())
                for chunk in new.chunk(gates, dim=0):  # each gate is its own matrix
                    fn(chunk, generator=generator, **kwargs)
                set_weight(module, pname, new)
        return
    w = _weight_like(module, "weight")
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        # stored as (in, out/groups, *k): initialize in the (out, in, *k) layout
        wt = w.transpose(0, 1).contiguous()
        fn(wt, generator=generator, **kwargs)
        w = wt.transpose(0, 1)
    else:  # Linear (out, in), Conv (out, in/groups, *k), Bilinear (out, in1, in2)
        fn(w, generator=generator, **kwargs)
    set_weight(module, "weight", w)


def _biases_zero(module: nn.Module) -> None:
    with torch.no_grad():
        for pname, p in module.named_parameters(recurse=False):
            if pname.startswith("bias"):
                p.zero_()


def apply(model: nn.Module, scheme: str, *, generator: torch.Generator | None = None,
          layers=("linear", "conv", "recurrent"), pattern: str | None = None, biases: bool = True,
          norms: bool = True, **kwargs) -> nn.Module:
    """Initialize every weight of ``model`` with ``scheme``; biases zero; norm scale 1, shift 0.

    Rules (in module order, so one ``generator`` gives one reproducible model):

    - weights of the modules of the types in ``layers`` ("linear", "conv", "recurrent";
      default all three) whose qualified name matches the regex ``pattern`` (default:
      all) get ``INITIALIZERS[scheme](w, generator=generator, **kwargs)``; recurrent
      weights one gate at a time (so fans are those of one gate); weight-normalized
      layers get the new weight through their parametrization;
    - their biases are set to zero (``biases=True``: "simply set the biases to zero",
      note 000);
    - normalization layers (batch/layer/instance/group norm) matching ``pattern`` get
      scale 1 and shift 0 (``norms=True``: "initialize variance or precision
      parameters to 1", note 000).

    ``scheme="fixup"`` runs :func:`descend.init.fixup` (kwargs go to it); LSUV needs a
    batch: call :func:`descend.init.lsuv`. Returns ``model``.

    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> m = apply(m, "he_normal", generator=torch.Generator().manual_seed(0))
    >>> float(m[0].bias.detach().abs().sum())
    0.0
    """
    if not isinstance(model, nn.Module):
        fail("model", "a torch.nn.Module", model, TypeError)
    if isinstance(scheme, str) and scheme.lower() in MODEL_SCHEMES:
        return MODEL_SCHEMES[scheme.lower()](model, generator=generator, **kwargs)
    if isinstance(scheme, str) and scheme.lower() == "lsuv":
        fail("scheme", "a data-free scheme here; LSUV needs a batch: call descend.init.lsuv(model, batch)", scheme)
    fn = INITIALIZERS.get(scheme)
    if isinstance(layers, str):
        layers = [layers]
    for kind in layers:
        check_choice("layers", kind, list(LAYER_TYPES))
    types = tuple(t for kind in layers for t in LAYER_TYPES[kind])
    try:
        regex = re.compile(pattern) if pattern is not None else None
    except (re.error, TypeError):
        fail("pattern", "a regular expression", pattern)
    accepted = set(inspect.signature(fn).parameters) - {"tensor", "generator"}
    check_no_unknown(f"init scheme {scheme!r}", {k: v for k, v in kwargs.items() if k not in accepted})
    for name, module in model.named_modules():
        if regex is not None and not regex.search(name):
            continue
        if isinstance(module, types) and (isinstance(module, nn.RNNBase) or module.weight is not None):
            _init_weight(module, fn, generator, kwargs)
            if biases:
                _biases_zero(module)
        elif norms and isinstance(module, NORM_TYPES):
            with torch.no_grad():
                if getattr(module, "weight", None) is not None:
                    module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
    return model
