"""Initializers as in-place functions on one weight tensor, each taking a ``generator``.

Fans: a weight of shape ``(out, in, *kernel)`` has ``fan_in = in * prod(kernel)`` and
``fan_out = out * prod(kernel)`` (Linear: no kernel; Conv of any dimension). A recurrent
weight stacks its gates along dim 0 (LSTM 4, GRU 3); ``fans(w, gates=g)`` gives the fans of
one gate's matrix, and :func:`descend.init.apply` initializes each gate separately.

Variances (zero mean everywhere), with ``m = fan_in``, ``n = fan_out``:

================== ===================================== ==========================
scheme             distribution                          source
================== ===================================== ==========================
constant           W = val (the degenerate symmetric     note 002
                   solution: every unit gets equal
                   updates)
normal             N(0, std^2), std = 0.01               note 002
uniform_fan_in     U(-1/sqrt(m), 1/sqrt(m)), Var = 1/(3m) note 001 (the "naive" one)
lecun_*            Var = 1/m                             note 004, 003 (sigma=1/sqrt(m))
xavier_*           Var = gain^2 2/(m+n); uniform bound   Glorot & Bengio 2010
                   gain sqrt(6/(m+n))
caffe_uniform      U(+-sqrt(3/k)), k = m | n | (m+n)/2   Caffe's XavierFiller
he_*               Var = gain^2/k, k = m | n | (m+n)/2,  He et al. 2015 (MSRA)
                   gain^2 = 2/(1+a^2) (ReLU a=0)
orthogonal         gain * Q, Q orthogonal (QR of a       Saxe et al. 2013
                   Gaussian matrix, signs fixed)
sparse             k non-zeros per unit, N(0, std^2)     Martens 2010
geometric_*        Var = c / sqrt(m n)                   note 004
================== ===================================== ==========================

Where torch has the scheme, the draws are made exactly as torch.nn.init makes them, so
the same ``generator`` state gives the same tensor (``xavier_*``, ``he_*`` with
``mode`` fan_in/fan_out, ``orthogonal``). Differences from the notes' printed formulas
are listed in ``docs/init.md`` (notes 001 / 002 print Xavier's bound without its square
root; note 003 prints the Caffe and He variants as their variances).
"""

from __future__ import annotations

import math

import torch

from descend._registry import Registry
from descend._validation import check_choice, check_int, check_range, fail

INITIALIZERS = Registry("init")

_MODES = ["fan_in", "fan_out", "average"]
_NONLINEARITIES = ["linear", "identity", "sigmoid", "tanh", "relu", "leaky_relu", "scaled_tanh"]


def _check_tensor(tensor, min_dim: int = 2) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        fail("tensor", "a torch.Tensor", tensor, TypeError)
    if tensor.dim() < min_dim:
        fail("tensor", f"a tensor with at least {min_dim} dimensions (out, in, *kernel)", tuple(tensor.shape))
    return tensor


def fans(tensor: torch.Tensor, gates: int = 1) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight ``(out, in, *kernel)``; ``gates`` splits dim 0 (recurrent).

    >>> fans(torch.empty(64, 3, 5, 5))
    (75, 1600)
    >>> fans(torch.empty(4 * 32, 10), gates=4)   # one LSTM gate: 32 x 10
    (10, 32)
    """
    _check_tensor(tensor)
    check_int("gates", gates, ge=1)
    if tensor.shape[0] % gates:
        fail("gates", f"a divisor of the first dimension {tensor.shape[0]}", gates)
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] // gates * receptive


def gain(nonlinearity: str = "linear", negative_slope: float = 0.0) -> float:
    """Gain of the activation after the layer: relu sqrt(2), leaky_relu sqrt(2/(1+a^2)),
    tanh 5/3 (torch's value), linear / identity / sigmoid / scaled_tanh 1.

    >>> gain("relu") == math.sqrt(2)
    True
    """
    check_choice("nonlinearity", nonlinearity, _NONLINEARITIES)
    check_range("negative_slope", negative_slope, ge=0)
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + negative_slope ** 2))
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    return 1.0


def _fan(tensor: torch.Tensor, mode: str) -> float:
    check_choice("mode", mode, _MODES)
    fan_in, fan_out = fans(tensor)
    return {"fan_in": fan_in, "fan_out": fan_out, "average": (fan_in + fan_out) / 2}[mode]


def _normal(tensor, std: float, generator) -> torch.Tensor:
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def _uniform(tensor, bound: float, generator) -> torch.Tensor:
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


@INITIALIZERS.register("constant")
def constant_(tensor: torch.Tensor, val: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill with ``val``: every unit of a layer computes the same function and gets the same update.

    The degenerate symmetric solution of note 002 (kept to show it). ``generator`` is unused.

    >>> constant_(torch.empty(2, 2), 0.5)
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]])
    """
    _check_tensor(tensor, 1)
    check_range("val", val)
    with torch.no_grad():
        return tensor.fill_(float(val))


@INITIALIZERS.register("normal")
def normal_(tensor: torch.Tensor, std: float = 0.01, mean: float = 0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Small Gaussian weights ``N(mean, std^2)``, default ``std = 0.01`` (note 002).

    Same draws as ``torch.nn.init.normal_(t, mean, std, generator)`` (whose default std is 1).

    >>> normal_(torch.empty(100, 100), generator=torch.Generator().manual_seed(0)).std().item() < 0.011
    True
    """
    _check_tensor(tensor, 1)
    check_range("std", std, ge=0)
    check_range("mean", mean)
    with torch.no_grad():
        return tensor.normal_(float(mean), float(std), generator=generator)


@INITIALIZERS.register("uniform_fan_in")
def uniform_fan_in_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The naive heuristic ``W ~ U(-1/sqrt(m), 1/sqrt(m))``, ``m = fan_in``: Var = 1/(3m).

    Note 001 ("for a fully connected layer with m inputs"). With tanh the variance of the
    activations shrinks layer after layer, the effect Xavier init fixes (Glorot & Bengio
    2010). Torch's default Linear init is ``U(+-1/sqrt(m))`` too (via kaiming_uniform a=sqrt 5).

    >>> w = uniform_fan_in_(torch.empty(4, 25)); bool(w.abs().max() <= 0.2)
    True
    """
    fan_in, _ = fans(tensor)
    return _uniform(tensor, 1.0 / math.sqrt(fan_in), generator)


@INITIALIZERS.register("lecun_normal")
def lecun_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """LeCun normal ``N(0, 1/m)``, ``m = fan_in`` (LeCun et al., Efficient BackProp 1998).

    Note 003's ``sigma_w = 1/sqrt(m)`` and note 002's "simpler Xavier" ``N(0,1) sqrt(1/n_j)``.
    Equals ``torch.nn.init.kaiming_normal_(t, nonlinearity="linear")``.

    >>> lecun_normal_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    return _normal(tensor, 1.0 / math.sqrt(fans(tensor)[0]), generator)


@INITIALIZERS.register("lecun_uniform")
def lecun_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """LeCun uniform ``U(+-sqrt(3/m))``: Var = 1/m, ``m = fan_in``.

    >>> lecun_uniform_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    return _uniform(tensor, math.sqrt(3.0 / fans(tensor)[0]), generator)


@INITIALIZERS.register("xavier_uniform")
@INITIALIZERS.register("glorot_uniform")
def xavier_uniform_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Xavier/Glorot uniform ``U(+-gain sqrt(6/(m+n)))``: Var = gain^2 2/(m+n).

    Keeps forward and backward variances for linear / tanh-like units (Glorot & Bengio,
    AISTATS 2010; notes 000, 003, 004). Same draws as ``torch.nn.init.xavier_uniform_``.
    Notes 001 and 002 print the bound as ``6/sqrt(m+n)`` / ``sqrt(6)/(m+n)``; the
    variance 2/(m+n) that all notes state needs ``sqrt(6/(m+n))`` (note 003).

    >>> xavier_uniform_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    check_range("gain", gain, ge=0)
    fan_in, fan_out = fans(tensor)
    return _uniform(tensor, gain * math.sqrt(6.0 / (fan_in + fan_out)), generator)


@INITIALIZERS.register("xavier_normal")
@INITIALIZERS.register("glorot_normal")
def xavier_normal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Xavier/Glorot normal ``N(0, gain^2 2/(m+n))``. Same draws as ``torch.nn.init.xavier_normal_``.

    >>> xavier_normal_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    check_range("gain", gain, ge=0)
    fan_in, fan_out = fans(tensor)
    return _normal(tensor, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


@INITIALIZERS.register("caffe_uniform")
@INITIALIZERS.register("caffe")
def caffe_uniform_(tensor: torch.Tensor, variance_norm: str = "fan_in",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Caffe's "simpler Xavier": ``U(+-sqrt(3/k))``, Var = 1/k, ``k`` = fan_in (default) | fan_out | average.

    Caffe's ``XavierFiller`` normalizes by one fan only. With ``variance_norm="average"``,
    ``k = (m+n)/2`` and Var = 2/(m+n): the value note 003 prints (as the interval
    ``+-2/(m+n)``, the square root and the factor 3 of a uniform bound lost in transcription).

    >>> caffe_uniform_(torch.empty(3, 12)).abs().max().item() <= 0.5
    True
    """
    return _uniform(tensor, math.sqrt(3.0 / _fan(tensor, variance_norm)), generator)


def _he_std(tensor, mode, nonlinearity, negative_slope) -> float:
    check_choice("nonlinearity", nonlinearity, ["relu", "leaky_relu", "linear"])
    return gain(nonlinearity, negative_slope) / math.sqrt(_fan(tensor, mode))


@INITIALIZERS.register("he_normal")
@INITIALIZERS.register("kaiming_normal")
def he_normal_(tensor: torch.Tensor, mode: str = "fan_in", nonlinearity: str = "relu", negative_slope: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """He/MSRA normal ``N(0, 2/((1+a^2) k))``, ``k`` = fan_in | fan_out | average.

    ReLU halves the variance, so double it (note 000: Var(W) = 2/n; forward pass with
    fan_in, backward with fan_out; note 002's "Xavier2" ``N(0,1) sqrt(2/n_j)``). ``mode=
    "average"`` gives Var = 4/(m+n), note 003's He variant. Same draws as
    ``torch.nn.init.kaiming_normal_(t, a, mode, nonlinearity)`` for fan_in / fan_out
    (torch's default nonlinearity "leaky_relu" with a=0 equals "relu"). He et al., ICCV 2015.

    >>> he_normal_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    return _normal(tensor, _he_std(tensor, mode, nonlinearity, negative_slope), generator)


@INITIALIZERS.register("he_uniform")
@INITIALIZERS.register("kaiming_uniform")
def he_uniform_(tensor: torch.Tensor, mode: str = "fan_in", nonlinearity: str = "relu", negative_slope: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """He/MSRA uniform ``U(+-sqrt(3) std)`` with the He std. Same draws as ``torch.nn.init.kaiming_uniform_``.

    >>> he_uniform_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    return _uniform(tensor, math.sqrt(3.0) * _he_std(tensor, mode, nonlinearity, negative_slope), generator)


@INITIALIZERS.register("orthogonal")
def orthogonal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2013; notes 000, 001, 004).

    Draw ``A ~ N(0,1)`` of shape (rows, cols) = (out, in * prod(kernel)), take ``A = QR``
    (on ``A^T`` when rows < cols), fix signs ``Q <- Q diag(sign(diag R))`` so Q is
    uniform (Haar), scale by ``gain``: ``W^T W = gain^2 I`` (rows >= cols) or ``W W^T =
    gain^2 I``. QR is Gram-Schmidt orthogonalization done stably (note 000). Same draws
    as ``torch.nn.init.orthogonal_``.

    >>> w = orthogonal_(torch.empty(5, 3), gain=2.0)
    >>> torch.allclose(w.T @ w, 4 * torch.eye(3), atol=1e-5)
    True
    """
    check_range("gain", gain, ge=0)
    _check_tensor(tensor)
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    with torch.no_grad():
        a = tensor.new_empty((rows, cols)).normal_(0.0, 1.0, generator=generator)
        if rows < cols:
            a = a.T
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))
        if rows < cols:
            q = q.T
        tensor.copy_(q.reshape(tensor.shape)).mul_(gain)
        return tensor


@INITIALIZERS.register("sparse")
def sparse_(tensor: torch.Tensor, k: int = 15, std: float | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Martens' sparse init: each unit receives exactly ``k`` non-zero incoming weights ~ N(0, std^2).

    For every output unit (row), ``k`` of its ``fan_in`` inputs are chosen uniformly
    without replacement; the rest are zero (note 001; Martens, "Deep learning via
    Hessian-free optimization", ICML 2010, with k = 15). ``std=None`` uses
    ``1/sqrt(k)`` so each unit's input variance is preserved; Martens drew N(0, 1)
    (``std=1.0``). torch's ``sparse_`` differs: it zeroes a *fraction* of each column.

    >>> w = sparse_(torch.empty(4, 50), k=3)
    >>> (w != 0).sum(dim=1).tolist()
    [3, 3, 3, 3]
    """
    fan_in, _ = fans(tensor)
    check_int("k", k, ge=1)
    if k > fan_in:
        fail("k", f"<= fan_in ({fan_in})", k)
    std = 1.0 / math.sqrt(k) if std is None else float(check_range("std", std, gt=0))
    rows = tensor.shape[0]
    with torch.no_grad():
        keys = torch.rand(rows, fan_in, generator=generator, device=tensor.device)
        chosen = keys.argsort(dim=1)[:, :k]
        values = torch.empty(rows, k, dtype=tensor.dtype, device=tensor.device).normal_(0.0, std, generator=generator)
        out = torch.zeros(rows, fan_in, dtype=tensor.dtype, device=tensor.device).scatter_(1, chosen, values)
        return tensor.copy_(out.view_as(tensor))


@INITIALIZERS.register("geometric_normal")
@INITIALIZERS.register("geometric")
def geometric_normal_(tensor: torch.Tensor, c: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Geometric-mean init ``N(0, c / sqrt(m n))``: the geometric mean of the forward (1/m) and
    backward (1/n) conditions instead of Xavier's harmonic mean (note 004); ``c=2`` for ReLU.

    >>> geometric_normal_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    check_range("c", c, gt=0)
    fan_in, fan_out = fans(tensor)
    return _normal(tensor, math.sqrt(c / math.sqrt(fan_in * fan_out)), generator)


@INITIALIZERS.register("geometric_uniform")
def geometric_uniform_(tensor: torch.Tensor, c: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Geometric-mean init, uniform: ``U(+-sqrt(3 c / sqrt(m n)))``, Var = c / sqrt(m n).

    >>> geometric_uniform_(torch.empty(3, 4)).shape
    torch.Size([3, 4])
    """
    check_range("c", c, gt=0)
    fan_in, fan_out = fans(tensor)
    return _uniform(tensor, math.sqrt(3.0 * c / math.sqrt(fan_in * fan_out)), generator)
