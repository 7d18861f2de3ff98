"""Readable layer names for reports and the doctor: ``layer 1 (Linear 64→128)`` instead of ``1.0``.

Monitors key their columns by torch's qualified module and parameter names
(``grad_norm/1.0.weight``, ``dead/1.1``), which say nothing to a reader. The weight
layers (linear, convolution, recurrent) of a model are numbered in order,
``layer 1, layer 2, ...``, the last one is the ``output`` layer; a module without
weights (an activation, a normalization, dropout) is named after the weight layer
before it (``layer 1 ReLU``).
"""

from __future__ import annotations

from torch import nn

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase, nn.Bilinear)


def _shape(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return f"{type(m).__name__} {m.in_features}→{m.out_features}"
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        k = "x".join(str(k) for k in m.kernel_size)
        return f"{type(m).__name__} {m.in_channels}→{m.out_channels}, kernel {k}"
    if isinstance(m, nn.RNNBase):
        return f"{type(m).__name__} {m.input_size}→{m.hidden_size}"
    return type(m).__name__


def layer_labels(model: nn.Module) -> dict[str, str]:
    """``{qualified module name: readable label}`` for the modules monitors report on.

    Example:
        >>> m = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 128), nn.ReLU()), nn.Linear(128, 10))
        >>> layer_labels(m)
        {'1.0': 'layer 1 (Linear 64→128)', '1.1': 'layer 1 ReLU', '2': 'output (Linear 128→10)'}
    """
    mods = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    weighted = [n for n, m in mods if isinstance(m, _WEIGHTED)]
    out: dict[str, str] = {}
    current = None
    for name, m in mods:
        if isinstance(m, _WEIGHTED):
            k = weighted.index(name) + 1
            current = "output" if name == weighted[-1] and len(weighted) > 1 else f"layer {k}"
            out[name] = f"{current} ({_shape(m)})"
        elif current is not None and not isinstance(m, (nn.Flatten, nn.Identity)):
            out[name] = f"{current} {type(m).__name__}"
    return out


def column_label(column: str, labels: dict[str, str]) -> str:
    """A monitor column (``dead/1.1``, ``grad_norm/1.0.weight``) with a readable layer name.

    Example:
        >>> labels = {"1.0": "layer 1 (Linear 64→128)", "1.1": "layer 1 ReLU"}
        >>> column_label("grad_norm/1.0.weight", labels), column_label("dead/1.1", labels)
        ('layer 1 (Linear 64→128) weight', 'layer 1 ReLU')
        >>> column_label("dead/9.9", labels)
        '9.9'
    """
    _, _, rest = column.partition("/")
    rest = rest or column
    if rest in labels:
        return labels[rest]
    module, _, param = rest.rpartition(".")
    if module in labels:
        return f"{labels[module]} {param}"
    return rest


__all__ = ["column_label", "layer_labels"]
