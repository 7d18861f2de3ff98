"""Model builders by name: ``MODELS.create(name, *, input_shape, num_classes, **kwargs)``.

``mlp`` (fully connected; flattens its input), ``cnn`` (1-D for input shapes ``(L,)``
or ``(C, L)``, 2-D for ``(C, H, W)``), ``logistic`` (one linear layer), and recurrent
classifiers ``rnn`` / ``gru`` / ``lstm`` (a sequence read step by step; the last state
is classified). Every keyword is flat and validated; unknown keywords are an error.

Layer order in a hidden block: weight layer -> normalization -> activation -> dropout
(note 003: "BN layer usually inserted before non-linearity layer (after FC or
convolutional layer)"). ``dropout`` is a drop probability (torch's convention: the
fraction of units zeroed, survivors scaled by 1/(1-p) at train time), one for all
hidden layers or a list with one per hidden layer; ``input_dropout`` drops inputs.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from descend._registry import Registry
from descend._validation import check_bool, check_choice, check_int, check_no_unknown, check_range, fail
from descend.nn.activations import ACTIVATIONS
from descend.nn.layers import DropConnectLinear, GaussianNoise
from descend.nn.normalization import check_norm, norm_layer, weight_normalize

MODELS = Registry("model")


class ResidualBlock(nn.Module):
    """A skip connection: ``out = post(shortcut(x) + multiplier * branch(x))``.

    ``shortcut`` is the identity unless given (a projection when widths differ);
    ``post`` is the activation after the sum (identity if None). ``multiplier`` is None
    until :func:`descend.init.fixup` adds Fixup's scalar multiplier (initialized at 1).
    Skip connections let signals and gradients pass unchanged through the identity path
    (note 004; He et al., "Deep Residual Learning", CVPR 2016).

    >>> blk = ResidualBlock(nn.Sequential(nn.Linear(4, 4)))
    >>> blk(torch.zeros(2, 4)).shape
    torch.Size([2, 4])
    """

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module | None = None, post: nn.Module | None = None):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()
        self.multiplier: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        if self.multiplier is not None:
            y = y * self.multiplier
        return self.post(self.shortcut(x) + y)


# ------------------------------------------------------------------ validation helpers

def _shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        fail("input_shape", "a tuple of positive integers", input_shape, TypeError)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        fail("input_shape", "a non-empty tuple of positive integers", input_shape)
    return shape


def _widths(name: str, value, *, allow_empty: bool = True) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        fail(name, "a list of positive integers", value, TypeError)
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            fail(name, "a list of positive integers", value)
    if not value and not allow_empty:
        fail(name, "a non-empty list of positive integers", value)
    return list(value)


def _dropouts(value, n: int, keep=None) -> list[float]:
    if keep is not None:
        if value != 0.0:
            fail("keep", "None when `dropout` is given (one of the two: drop or keep probabilities)", keep)
        keeps = list(keep) if isinstance(keep, (list, tuple)) else [keep] * n
        if len(keeps) != n:
            fail("keep", f"a keep probability or a list of {n} (one per hidden layer)", keep)
        for k in keeps:
            check_range("keep", k, gt=0, le=1)
        return [round(1.0 - float(k), 12) for k in keeps]
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            fail("dropout", f"a drop probability or a list of {n} (one per hidden layer)", value)
        probs = list(value)
    else:
        probs = [value] * n
    for p in probs:
        check_range("dropout", p, ge=0, lt=1)
    return [float(p) for p in probs]


class _Acts:
    """Builds the activation module after each layer; maxout multiplies the layer width."""

    def __init__(self, activation: str, negative_slope: float, pieces: int):
        check_choice("activation", activation, ACTIVATIONS.names())
        self.name = activation
        self.pieces = check_int("pieces", pieces, ge=2) if activation == "maxout" else 1
        self.negative_slope = float(check_range("negative_slope", negative_slope, ge=0))
        self.make()  # validate eagerly

    def make(self) -> nn.Module:
        if self.name == "maxout":
            return ACTIVATIONS.create("maxout", pieces=self.pieces, dim=1)
        if self.name == "leaky_relu":
            return ACTIVATIONS.create("leaky_relu", negative_slope=self.negative_slope)
        return ACTIVATIONS.create(self.name)


def _block(make_layer: Callable[[int, int], nn.Module], c_in: int, c_out: int, acts: _Acts, norm, spatial: int,
           groups: int, p: float, *, activate: bool = True, noise: float = 0.0) -> list[nn.Module]:
    """weight layer -> norm -> activation -> [noise] -> dropout; maxout layers are ``pieces`` times wider."""
    width = c_out * (acts.pieces if activate else 1)
    mods: list[nn.Module] = [weight_normalize(make_layer(c_in, width), norm)]
    n = norm_layer(norm, width, spatial, groups=groups)
    if n is not None:
        mods.append(n)
    if activate:
        mods.append(acts.make())
        if noise > 0:
            mods.append(GaussianNoise(noise))
        if p > 0:
            mods.append(nn.Dropout(p))
    return mods


def _stack(make_layer, widths: list[int], c_in: int, acts: _Acts, norm, spatial: int, groups: int,
           drops: list[float], residual: bool, after: Callable[[int], list[nn.Module]] | None = None,
           noise: float = 0.0) -> tuple[list, int]:
    """Hidden layers, plain or residual; returns (modules, output width)."""
    mods: list[nn.Module] = []
    for i, w in enumerate(widths):
        if residual and i > 0:
            if acts.name == "maxout":
                fail("activation", "not 'maxout' with residual=True (a maxout branch changes the width)", acts.name)
            branch = _block(make_layer, c_in, w, acts, norm, spatial, groups, drops[i], noise=noise)
            branch += _block(make_layer, w, w, acts, norm, spatial, groups, 0.0, activate=False)
            shortcut = None if c_in == w else make_layer(c_in, w)
            mods.append(ResidualBlock(nn.Sequential(*branch), shortcut, acts.make()))
        else:
            mods.append(nn.Sequential(*_block(make_layer, c_in, w, acts, norm, spatial, groups, drops[i], noise=noise)))
        if after is not None:
            mods += after(i)
        c_in = w
    return mods, c_in


# ------------------------------------------------------------------ builders

@MODELS.register("mlp")
def mlp(*, input_shape, num_classes: int, hidden=(128,), activation: str = "relu", norm: str | None = None,
        dropout=0.0, input_dropout: float = 0.0, residual: bool = False, groups: int = 8, pieces: int = 2,
        negative_slope: float = 0.01, dropconnect: float = 0.0, input_noise: float = 0.0, hidden_noise: float = 0.0,
        keep=None, **unknown) -> nn.Sequential:
    """A multilayer perceptron: flatten -> [Linear -> norm -> activation -> dropout] x depth -> Linear.

    Args: ``hidden=(128,)`` widths; ``activation="relu"`` (any ``ACTIVATIONS`` name;
    ``pieces=2`` for maxout, ``negative_slope=0.01`` for leaky_relu); ``norm=None`` |
    "batch" | "layer" | "group" (``groups=8``) | "weight" | "spectral"; ``dropout=0.0``
    drop probability (or one per hidden layer), or ``keep=None``: the notes' keep
    probabilities instead (one for all or one per hidden layer; drop = 1 - keep);
    ``input_dropout=0.0``; ``residual=False``:
    after the first hidden layer every width becomes a two-layer residual block
    ``act(x + norm(W2 act(norm(W1 x))))`` (a linear projection on the skip path when the
    width changes); ``dropconnect=0.0``: hidden Linear layers become
    :class:`DropConnectLinear` with this weight-drop probability; ``input_noise=0.0`` /
    ``hidden_noise=0.0``: std of additive Gaussian noise on the inputs / on every hidden
    activation (train time only).

    >>> m = mlp(input_shape=(1, 8, 8), num_classes=10, hidden=[32, 32], norm="batch")
    >>> m(torch.zeros(4, 1, 8, 8)).shape
    torch.Size([4, 10])
    """
    check_no_unknown("mlp", unknown)
    shape = _shape(input_shape)
    check_int("num_classes", num_classes, ge=1)
    widths = _widths("hidden", hidden)
    check_norm(norm)
    check_bool("residual", residual)
    acts = _Acts(activation, negative_slope, pieces)
    drops = _dropouts(dropout, len(widths), keep)
    check_range("input_dropout", input_dropout, ge=0, lt=1)
    check_range("dropconnect", dropconnect, ge=0, lt=1)
    check_range("input_noise", input_noise, ge=0)
    check_range("hidden_noise", hidden_noise, ge=0)
    mods: list[nn.Module] = [nn.Flatten()]
    if input_noise > 0:
        mods.append(GaussianNoise(float(input_noise)))
    if input_dropout > 0:
        mods.append(nn.Dropout(float(input_dropout)))

    def make_layer(a: int, b: int) -> nn.Module:
        return DropConnectLinear(a, b, p=float(dropconnect)) if dropconnect > 0 else nn.Linear(a, b)

    body, width = _stack(make_layer, widths, math.prod(shape), acts, norm, 0, groups, drops, residual,
                         noise=float(hidden_noise))
    head = weight_normalize(nn.Linear(width, num_classes), norm if norm in ("weight", "spectral") else None)
    return nn.Sequential(*mods, *body, head)


@MODELS.register("logistic")
def logistic(*, input_shape, num_classes: int, bias: bool = True, **unknown) -> nn.Sequential:
    """A linear classifier (multinomial logistic regression with cross-entropy): flatten -> Linear.

    >>> logistic(input_shape=(40,), num_classes=10)(torch.zeros(2, 40)).shape
    torch.Size([2, 10])
    """
    check_no_unknown("logistic", unknown)
    shape = _shape(input_shape)
    check_int("num_classes", num_classes, ge=1)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), num_classes, bias=check_bool("bias", bias)))


class _Unsqueeze(nn.Module):
    """Add a channel axis: (N, L) -> (N, 1, L)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


@MODELS.register("cnn")
def cnn(*, input_shape, num_classes: int, channels=(16, 32), kernel_size: int = 3, pool: str | None = "max",
        activation: str = "relu", norm: str | None = None, dropout=0.0, residual: bool = False,
        global_pool: bool = False, groups: int = 8, pieces: int = 2, negative_slope: float = 0.01, keep=None,
        **unknown) -> nn.Sequential:
    """A convolutional network: [Conv -> norm -> activation -> dropout -> pool] per stage -> Linear.

    1-D convolutions for ``input_shape`` ``(L,)`` (one channel) or ``(C, L)``; 2-D for
    ``(C, H, W)``. Args: ``channels=(16, 32)`` one stage each; ``kernel_size=3`` (odd,
    "same" padding); ``pool="max"`` | "avg" | None: 2x down-sampling after each stage
    (skipped once a side is below 2); ``global_pool=False``: average over space before
    the classifier instead of flattening; ``activation``, ``norm`` (also "instance"),
    ``dropout`` / ``keep``, ``residual``, ``groups``, ``pieces``, ``negative_slope`` as in ``mlp``.

    >>> cnn(input_shape=(40,), num_classes=10)(torch.zeros(2, 40)).shape
    torch.Size([2, 10])
    >>> cnn(input_shape=(1, 8, 8), num_classes=10, norm="group", groups=4)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    check_no_unknown("cnn", unknown)
    shape = _shape(input_shape)
    if len(shape) > 3:
        fail("input_shape", "(L,), (C, L) or (C, H, W)", input_shape)
    check_int("num_classes", num_classes, ge=1)
    chans = _widths("channels", channels, allow_empty=False)
    k = check_int("kernel_size", kernel_size, ge=1)
    if k % 2 == 0:
        fail("kernel_size", "odd (for 'same' padding)", kernel_size)
    check_choice("pool", pool, [None, "max", "avg"])
    check_norm(norm)
    check_bool("residual", residual)
    check_bool("global_pool", global_pool)
    acts = _Acts(activation, negative_slope, pieces)
    drops = _dropouts(dropout, len(chans), keep)
    spatial = 1 if len(shape) <= 2 else 2
    conv = nn.Conv1d if spatial == 1 else nn.Conv2d
    pool_cls = {"max": (nn.MaxPool1d, nn.MaxPool2d), "avg": (nn.AvgPool1d, nn.AvgPool2d)}
    c_in, size = (1, list(shape)) if len(shape) == 1 else (shape[0], list(shape[1:]))

    def make_layer(a: int, b: int) -> nn.Module:
        return conv(a, b, k, padding=k // 2)

    def after(i: int) -> list[nn.Module]:
        if pool is None or min(size) < 2:
            return []
        size[:] = [s // 2 for s in size]
        return [pool_cls[pool][spatial - 1](2)]

    mods: list[nn.Module] = [_Unsqueeze()] if len(shape) == 1 else []
    body, width = _stack(make_layer, chans, c_in, acts, norm, spatial, groups, drops, residual, after)
    mods += body
    if global_pool:
        mods += [(nn.AdaptiveAvgPool1d if spatial == 1 else nn.AdaptiveAvgPool2d)(1), nn.Flatten()]
        features = width
    else:
        mods.append(nn.Flatten())
        features = width * math.prod(size)
    head = weight_normalize(nn.Linear(features, num_classes), norm if norm in ("weight", "spectral") else None)
    return nn.Sequential(*mods, head)


class RecurrentClassifier(nn.Module):
    """Read a sequence with an RNN / GRU / LSTM and classify its last state (or all states).

    Inputs of shape (N, T) are T steps of one feature (e.g. MNIST-1D's 40 values),
    (N, T, F) are T steps of F features, and images (N, C, H, W) are read row by row
    (H steps of C*W features). With ``readout="last"`` the logits are
    ``Linear(dropout(h_T))``, with ``h_T`` the last layer's final hidden state (both
    directions concatenated if bidirectional); with ``readout="all"`` they are
    ``Linear(dropout([h_1, ..., h_T]))``, every step's output of the last layer, as the
    MNIST-1D paper's GRU (Greydanus 2020: bidirectional, hidden 6, all 40 states). The
    sequence length must then be the one of ``input_shape``. For ``cell="gru"``,
    ``reset_after=False`` uses the notes' candidate ``tanh(W (r * h) + U x)``
    (:class:`descend.nn.recurrent.GRU`) instead of torch's ``tanh(W_in x + r * (W_hn h))``
    (the default, ``reset_after=True``, torch's and cuDNN's kernel).

    >>> RecurrentClassifier("gru", (40,), 10)(torch.zeros(3, 40)).shape
    torch.Size([3, 10])
    >>> RecurrentClassifier("gru", (40,), 10, 6, bidirectional=True, readout="all").head.in_features
    480
    """

    def __init__(self, cell: str, input_shape: Sequence[int], num_classes: int, hidden_size: int = 64,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 readout: str = "last", reset_after: bool = True):
        super().__init__()
        check_choice("cell", cell, ["rnn", "gru", "lstm"])
        check_choice("readout", readout, ["last", "all"])
        self.readout = readout
        shape = _shape(input_shape)
        if len(shape) > 3:
            fail("input_shape", "(T,), (T, F) or (C, H, W)", input_shape)
        self.input_shape = shape
        features = 1 if len(shape) == 1 else (shape[1] if len(shape) == 2 else shape[0] * shape[2])
        check_int("hidden_size", hidden_size, ge=1)
        check_int("num_layers", num_layers, ge=1)
        check_bool("bidirectional", bidirectional)
        check_range("dropout", dropout, ge=0, lt=1)
        check_bool("reset_after", reset_after)
        if cell != "gru" and not reset_after:
            fail("reset_after", "True for an RNN or LSTM (it chooses where a GRU's reset gate acts)", reset_after)
        rnn_cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        extra = {}
        if cell == "gru" and not reset_after:
            from descend.nn.recurrent import GRU
            rnn_cls, extra = GRU, {"reset_after": False}
        self.rnn = rnn_cls(features, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                           dropout=float(dropout) if num_layers > 1 else 0.0, **extra)
        self.dropout = nn.Dropout(float(dropout))
        steps = shape[0] if len(shape) < 3 else shape[1]
        width = hidden_size * (2 if bidirectional else 1)
        self.head = nn.Linear(width * (steps if readout == "all" else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, given = x.shape[0], tuple(x.shape)
        if len(self.input_shape) == 1:
            x = x.reshape(n, -1, 1)
        elif len(self.input_shape) == 3:  # rows as steps
            x = x.permute(0, 2, 1, 3).reshape(n, self.input_shape[1], -1)
        out, h = self.rnn(x)
        if self.readout == "all":
            if out.shape[1] * out.shape[2] != self.head.in_features:
                raise ValueError(f"`x` must have {self.head.in_features // out.shape[2]} steps with "
                                 f"readout='all' (the length of input_shape). Received: x of shape "
                                 f"{given}")
            return self.head(self.dropout(out.reshape(n, -1)))
        if isinstance(h, tuple):  # LSTM: (h, c)
            h = h[0]
        dirs = 2 if self.rnn.bidirectional else 1
        last = h.view(self.rnn.num_layers, dirs, n, -1)[-1]
        return self.head(self.dropout(last.transpose(0, 1).reshape(n, -1)))


def _recurrent(cell: str):
    def factory(*, input_shape, num_classes: int, hidden_size: int = 64, num_layers: int = 1,
                bidirectional: bool = False, dropout: float = 0.0, readout: str = "last",
                **unknown) -> RecurrentClassifier:
        reset_after = unknown.pop("reset_after", True) if cell == "gru" else True
        check_no_unknown(cell, unknown)
        check_int("num_classes", num_classes, ge=1)
        return RecurrentClassifier(cell, input_shape, num_classes, hidden_size, num_layers, bidirectional, dropout,
                                   readout, reset_after)

    factory.__doc__ = (f"A {cell.upper()} classifier over a sequence (hidden_size=64, num_layers=1, "
                       "bidirectional=False, dropout=0.0, readout='last' or 'all'"
                       + (", reset_after=True: torch's GRU, False: the notes'" if cell == "gru" else "")
                       + "); see RecurrentClassifier.")
    return factory


for _cell in ("rnn", "gru", "lstm"):
    MODELS.register(_cell, _recurrent(_cell))
