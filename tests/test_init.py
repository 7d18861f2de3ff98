"""Initializers: moments from the math, equality with torch.nn.init, fans, rules, LSUV, Fixup,
and the depth experiment of the notes (activation std through 10 tanh / ReLU layers)."""

import math

import pytest
import torch
from torch import nn

from descend import init
from descend.nn import MODELS, ResidualBlock, ScalarBias


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def check_moments(w, var, uniform=False):
    """Mean and variance of n iid draws within 5 standard errors of the math.

    The sample mean has std sigma/sqrt(n); the sample variance has std
    sigma^2 sqrt(2/n) for a Gaussian and sigma^2 sqrt(0.8/n) for a uniform (kurtosis 9/5).
    """
    n = w.numel()
    x = w.double().flatten()
    sigma = math.sqrt(var)
    assert abs(x.mean().item()) < 5 * sigma / math.sqrt(n)
    se = var * math.sqrt((0.8 if uniform else 2.0) / n)
    assert abs(x.var().item() - var) < 5 * se, (x.var().item(), var)


LIN = (256, 1024)          # fan_in 1024, fan_out 256
CONV = (64, 32, 3, 3)      # fan_in 288, fan_out 576
FANS = {LIN: (1024, 256), CONV: (288, 576)}


@pytest.mark.parametrize("shape", [LIN, CONV])
def test_fans_match_torch_for_linear_and_conv(shape):
    assert init.fans(torch.empty(shape)) == FANS[shape]
    assert init.fans(torch.empty(shape)) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init.fans(torch.empty(8, 3, 2, 2, 2)) == (24, 64)  # conv3d


def test_fans_recurrent_gate():
    assert init.fans(torch.empty(4 * 32, 10), gates=4) == (10, 32)
    with pytest.raises(ValueError, match="`gates` must be"):
        init.fans(torch.empty(10, 3), gates=4)


def _var(shape, fn, **kw):
    m, n = FANS[shape]
    return {
        "normal": lambda: kw.get("std", 0.01) ** 2,
        "uniform_fan_in": lambda: 1 / (3 * m),
        "lecun_normal": lambda: 1 / m,
        "lecun_uniform": lambda: 1 / m,
        "xavier_uniform": lambda: kw.get("gain", 1.0) ** 2 * 2 / (m + n),
        "xavier_normal": lambda: kw.get("gain", 1.0) ** 2 * 2 / (m + n),
        "caffe_uniform": lambda: 1 / {"fan_in": m, "fan_out": n, "average": (m + n) / 2}[kw.get("variance_norm", "fan_in")],
        "he_normal": lambda: 2 / (1 + kw.get("negative_slope", 0) ** 2) / {"fan_in": m, "fan_out": n, "average": (m + n) / 2}[kw.get("mode", "fan_in")],
        "he_uniform": lambda: 2 / (1 + kw.get("negative_slope", 0) ** 2) / {"fan_in": m, "fan_out": n, "average": (m + n) / 2}[kw.get("mode", "fan_in")],
        "geometric_normal": lambda: kw.get("c", 1.0) / math.sqrt(m * n),
        "geometric_uniform": lambda: kw.get("c", 1.0) / math.sqrt(m * n),
    }[fn]()


CASES = [
    ("normal", {}), ("normal", {"std": 0.05}), ("uniform_fan_in", {}), ("lecun_normal", {}), ("lecun_uniform", {}),
    ("xavier_uniform", {}), ("xavier_normal", {"gain": 2.0}), ("caffe_uniform", {}),
    ("caffe_uniform", {"variance_norm": "fan_out"}), ("caffe_uniform", {"variance_norm": "average"}),
    ("he_normal", {}), ("he_normal", {"mode": "fan_out"}), ("he_normal", {"mode": "average"}),
    ("he_uniform", {"nonlinearity": "leaky_relu", "negative_slope": 0.2}), ("geometric_normal", {}),
    ("geometric_uniform", {"c": 2.0}),
]


@pytest.mark.parametrize("shape", [LIN, CONV])
@pytest.mark.parametrize("name,kw", CASES)
def test_moments_from_the_math(name, kw, shape):
    w = init.INITIALIZERS.create(name, torch.empty(shape), generator=gen(1), **kw)
    var = _var(shape, name, **kw)
    uniform = "uniform" in name
    check_moments(w, var, uniform=uniform)
    if uniform:  # support is [-b, b] with b = sqrt(3 var), and draws come close to b
        b = math.sqrt(3 * var)
        assert w.abs().max().item() <= b * (1 + 1e-6)
        assert w.abs().max().item() > 0.99 * b


def test_notes_formulas_written_out():
    w = torch.empty(256, 1024)
    m, n = 1024, 256
    # note 003: Xavier U(-sqrt(6)/sqrt(m+n), sqrt(6)/sqrt(m+n)); note 001: U(-1/sqrt(m), 1/sqrt(m))
    assert torch.equal(init.xavier_uniform_(w.clone(), generator=gen(3)),
                       torch.empty(256, 1024).uniform_(-math.sqrt(6) / math.sqrt(m + n), math.sqrt(6) / math.sqrt(m + n), generator=gen(3)))
    assert torch.equal(init.uniform_fan_in_(w.clone(), generator=gen(3)),
                       torch.empty(256, 1024).uniform_(-1 / math.sqrt(m), 1 / math.sqrt(m), generator=gen(3)))
    # note 000: MSRA std = sqrt(2/n); note 002: N(0,1) * sqrt(1/n_j) and N(0,1) * sqrt(1/(n_j/2))
    z = torch.empty(256, 1024).normal_(0, 1, generator=gen(4))
    assert torch.allclose(init.he_normal_(w.clone(), generator=gen(4)), z * math.sqrt(2 / m))
    assert torch.allclose(init.lecun_normal_(w.clone(), generator=gen(4)), z * math.sqrt(1 / m))
    assert torch.allclose(init.he_normal_(w.clone(), generator=gen(4)), z * math.sqrt(1 / (m / 2)))
    # note 004: geometric mean, Var = c / sqrt(m n)
    assert torch.allclose(init.geometric_normal_(w.clone(), c=2.0, generator=gen(4)), z * math.sqrt(2 / math.sqrt(m * n)))


TORCH_PAIRS = [
    (lambda t, g: init.xavier_uniform_(t, gain=1.5, generator=g), lambda t, g: nn.init.xavier_uniform_(t, gain=1.5, generator=g)),
    (lambda t, g: init.xavier_normal_(t, generator=g), lambda t, g: nn.init.xavier_normal_(t, generator=g)),
    (lambda t, g: init.he_normal_(t, generator=g), lambda t, g: nn.init.kaiming_normal_(t, nonlinearity="relu", generator=g)),
    (lambda t, g: init.he_normal_(t, mode="fan_out", generator=g),
     lambda t, g: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=g)),
    (lambda t, g: init.he_uniform_(t, nonlinearity="leaky_relu", negative_slope=0.2, generator=g),
     lambda t, g: nn.init.kaiming_uniform_(t, a=0.2, nonlinearity="leaky_relu", generator=g)),
    (lambda t, g: init.lecun_normal_(t, generator=g), lambda t, g: nn.init.kaiming_normal_(t, nonlinearity="linear", generator=g)),
    (lambda t, g: init.normal_(t, generator=g), lambda t, g: nn.init.normal_(t, 0.0, 0.01, generator=g)),
    (lambda t, g: init.orthogonal_(t, gain=2.0, generator=g), lambda t, g: nn.init.orthogonal_(t, gain=2.0, generator=g)),
]


@pytest.mark.parametrize("ours,theirs", TORCH_PAIRS)
@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (16, 8, 3, 3)])
def test_equal_to_torch_with_the_same_generator(ours, theirs, shape):
    a = ours(torch.empty(shape, dtype=torch.float64), gen(7))
    b = theirs(torch.empty(shape, dtype=torch.float64), gen(7))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,g", [((128, 64), 1.0), ((64, 128), 2.0), ((32, 16, 3, 3), 0.5)])
def test_orthogonal_gram_is_gain_squared_identity(shape, g):
    w = init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=g, generator=gen(0)).reshape(shape[0], -1)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    torch.testing.assert_close(gram, g * g * torch.eye(gram.shape[0], dtype=torch.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape,k", [((64, 100), 15), ((32, 8, 3, 3), 5)])
def test_sparse_has_exactly_k_nonzeros_per_unit(shape, k):
    w = init.sparse_(torch.empty(shape), k=k, generator=gen(0))
    assert (w.reshape(shape[0], -1) != 0).sum(dim=1).tolist() == [k] * shape[0]
    big = init.sparse_(torch.empty(2000, 300), k=20, std=1.0, generator=gen(1))
    vals = big[big != 0]
    check_moments(vals, 1.0)
    # the chosen inputs are spread uniformly: every column is hit about rows * k / fan_in times
    hits = (big != 0).sum(dim=0).double()
    expect = 2000 * 20 / 300
    assert abs(hits.mean().item() - expect) < 1e-9 and hits.min() > 0


def test_sparse_and_constant_and_errors():
    with pytest.raises(ValueError, match=r"`k` must be <= fan_in \(10\). Received: k=11"):
        init.sparse_(torch.empty(3, 10), k=11)
    w = init.constant_(torch.empty(4, 4), 0.3)
    assert torch.all(w == 0.3)
    with pytest.raises(ValueError, match="`gain` must be >= 0"):
        init.xavier_uniform_(torch.empty(3, 3), gain=-1)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        init.he_normal_(torch.empty(3, 3), mode="fanin")
    with pytest.raises(ValueError, match="`tensor` must be a tensor with at least 2 dimensions"):
        init.xavier_uniform_(torch.empty(3))
    with pytest.raises(ValueError, match="`init` must be one of"):
        init.INITIALIZERS.get("xavier")


def test_constant_init_is_the_degenerate_symmetric_solution():
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    init.apply(net, "constant", val=0.1)
    nn.functional.cross_entropy(net(torch.randn(16, 5)), torch.randint(0, 3, (16,))).backward()
    g = net[0].weight.grad  # every hidden unit has the same gradient row
    assert torch.allclose(g, g[:1].expand_as(g))


# ------------------------------------------------------------------ apply

def test_apply_rules_weights_biases_norms():
    net = MODELS.create("cnn", input_shape=(1, 8, 8), num_classes=3, channels=[4, 8], norm="batch")
    for p in net.parameters():
        nn.init.normal_(p)
    init.apply(net, "xavier_normal", generator=gen(0))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in convs)
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    # same generator, same draws in module order
    g = gen(0)
    expect = init.xavier_normal_(torch.empty_like(convs[0].weight), generator=g)
    torch.testing.assert_close(convs[0].weight.detach(), expect)
    again = init.apply(MODELS.create("cnn", input_shape=(1, 8, 8), num_classes=3, channels=[4, 8], norm="batch"),
                       "xavier_normal", generator=gen(0))
    for a, b in zip(net.parameters(), again.parameters()):
        torch.testing.assert_close(a, b)


def test_apply_pattern_and_layer_types():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    before = net[0].weight.detach().clone()
    init.apply(net, "constant", val=0.5, pattern=r"^2$")
    assert torch.equal(net[0].weight, before) and torch.all(net[2].weight == 0.5)
    init.apply(net, "constant", val=0.7, layers="conv")
    assert torch.all(net[2].weight == 0.5)
    with pytest.raises(ValueError, match="`layers` must be one of"):
        init.apply(net, "constant", layers=["dense"])
    with pytest.raises(TypeError, match="unexpected keyword argument.*gainn"):
        init.apply(net, "xavier_uniform", gainn=2)
    with pytest.raises(ValueError, match="LSUV needs a batch"):
        init.apply(net, "lsuv")


def test_apply_recurrent_initializes_each_gate_with_its_own_fans():
    lstm = nn.LSTM(256, 256)
    init.apply(lstm, "xavier_normal", generator=gen(0))
    for w in (lstm.weight_ih_l0, lstm.weight_hh_l0):
        for chunk in w.detach().chunk(4, dim=0):  # one gate: 256 x 256, Var = 2 / (256 + 256)
            check_moments(chunk, 2 / 512)
    assert float(lstm.bias_ih_l0.detach().abs().sum()) == 0
    gru = init.apply(nn.GRU(8, 16), "orthogonal", generator=gen(0))
    for chunk in gru.weight_hh_l0.detach().chunk(3, dim=0):
        torch.testing.assert_close(chunk @ chunk.T, torch.eye(16), atol=1e-5, rtol=0)


def test_apply_through_weight_norm_sets_the_effective_weight():
    net = MODELS.create("mlp", input_shape=(6,), num_classes=2, hidden=[5], norm="weight")
    init.apply(net, "he_normal", generator=gen(2))
    layer = net[1][0]
    expect = init.he_normal_(torch.empty(5, 6), generator=gen(2))
    torch.testing.assert_close(layer.weight.detach(), expect)


# ------------------------------------------------------------------ LSUV

def _layer_vars(model, batch):
    outs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o.detach().var().item()))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    with torch.no_grad():
        model.eval()(batch)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("name,shape,kw", [
    ("mlp", (20,), {"hidden": [64, 64, 64], "activation": "tanh"}),
    ("mlp", (20,), {"hidden": [64, 32], "activation": "relu", "dropout": 0.3}),
    ("cnn", (1, 8, 8), {"channels": [4, 8]}),
])
def test_lsuv_output_variance_is_one_per_layer(name, shape, kw):
    torch.manual_seed(0)
    model = MODELS.create(name, input_shape=shape, num_classes=5, **kw).train()
    batch = 3 * torch.randn(128, *shape) + 1
    init.lsuv(model, batch, tol=0.05, generator=gen(0))
    assert model.training  # mode restored
    vs = _layer_vars(model, batch)
    assert len(vs) == len([m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))])
    assert all(abs(v - 1) < 0.05 for v in vs), vs


def test_lsuv_errors():
    with pytest.raises(ValueError, match="`tol` must be > 0"):
        init.lsuv(nn.Linear(2, 2), torch.randn(4, 2), tol=0)
    spec = MODELS.create("mlp", input_shape=(4,), num_classes=2, norm="spectral")
    with pytest.raises(ValueError, match="spectral norm"):
        init.lsuv(spec, torch.randn(8, 4))


# ------------------------------------------------------------------ Fixup

def test_fixup_rules():
    net = MODELS.create("mlp", input_shape=(10,), num_classes=4, hidden=[32, 32, 32, 32], residual=True)
    init.fixup(net, generator=gen(5))
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    L, m = len(blocks), 2
    assert L == 3
    # written out: He init in module order, branch layers scaled by L^(-1/(2m-2)), last branch layer and head zero
    ref = MODELS.create("mlp", input_shape=(10,), num_classes=4, hidden=[32, 32, 32, 32], residual=True)
    init.apply(ref, "he_normal", generator=gen(5))
    ref_blocks = [m for m in ref.modules() if isinstance(m, ResidualBlock)]
    for b, rb in zip(blocks, ref_blocks):
        lin = [x for x in b.branch if isinstance(x, nn.Linear)]
        rlin = [x for x in rb.branch if isinstance(x, nn.Linear)]
        torch.testing.assert_close(lin[0].weight, rlin[0].weight * L ** (-1 / (2 * m - 2)))
        assert float(lin[1].weight.detach().abs().sum()) == 0
        assert b.multiplier.item() == 1.0
        assert sum(isinstance(x, ScalarBias) for x in b.branch) == 3  # before 2 linears and the activation
    torch.testing.assert_close(net[1][0].weight, ref[1][0].weight)  # stem: plain He
    assert float(net[-1].weight.detach().abs().sum()) == 0
    x = torch.randn(8, 10)
    assert float(net(x).detach().abs().sum()) == 0
    # training can start: the zeroed layers receive gradients
    nn.functional.cross_entropy(net(x), torch.randint(0, 4, (8,))).backward()
    assert net[-1].weight.grad.abs().sum() > 0
    n_params = sum(p.numel() for p in net.parameters())
    init.fixup(net, generator=gen(5))
    assert sum(p.numel() for p in net.parameters()) == n_params  # idempotent


def test_fixup_conv_and_errors():
    net = MODELS.create("cnn", input_shape=(2, 16), num_classes=3, channels=[4, 8, 8], residual=True)
    init.fixup(net)
    assert float(net(torch.randn(2, 2, 16)).detach().abs().sum()) == 0
    with pytest.raises(ValueError, match="without normalization"):
        init.fixup(MODELS.create("mlp", input_shape=(4,), num_classes=2, hidden=[8, 8], residual=True, norm="batch"))
    with pytest.raises(ValueError, match="residual network"):
        init.fixup(MODELS.create("mlp", input_shape=(4,), num_classes=2))
    net = MODELS.create("mlp", input_shape=(4,), num_classes=2, hidden=[8, 8], residual=True)
    assert init.apply(net, "fixup") is net and net[2].multiplier is not None


# ------------------------------------------------------------------ the depth experiment (notes 002 / 000 / 004)

def _activation_stds(activation, scheme, **kw):
    torch.manual_seed(0)
    net = MODELS.create("mlp", input_shape=(256,), num_classes=10, hidden=[256] * 10, activation=activation)
    init.apply(net, scheme, generator=gen(0), **kw)
    stds = []
    act_cls = nn.Tanh if activation == "tanh" else nn.ReLU
    hooks = [m.register_forward_hook(lambda mod, i, o: stds.append(o.std().item()))
             for m in net.modules() if isinstance(m, act_cls)]
    with torch.no_grad():
        net(torch.randn(512, 256, generator=gen(1)))
    for h in hooks:
        h.remove()
    assert len(stds) == 10
    return stds


def test_depth_naive_uniform_shrinks_xavier_keeps_he_keeps():
    naive = _activation_stds("tanh", "uniform_fan_in")
    assert naive[-1] < naive[0] / 20, naive  # shrinks geometrically (about 1/sqrt(3) per layer)
    assert all(b < a for a, b in zip(naive, naive[1:]))
    xavier = _activation_stds("tanh", "xavier_uniform")
    assert max(xavier) / min(xavier) < 4, xavier
    he = _activation_stds("relu", "he_normal")
    assert max(he) / min(he) < 2, he
