"""Model builders: shapes, layer order, options, validation messages."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from descend.nn import MODELS, DropConnectLinear, GaussianNoise, Maxout, RecurrentClassifier, ResidualBlock, ScaledTanh


def test_registry_names():
    assert {"mlp", "cnn", "logistic", "rnn", "gru", "lstm"} <= set(MODELS)


@pytest.mark.parametrize("name,shape,kw", [
    ("mlp", (1, 8, 8), {}),
    ("mlp", (40,), {"hidden": [32, 16], "activation": "scaled_tanh", "norm": "layer", "dropout": [0.1, 0.2]}),
    ("mlp", (40,), {"hidden": [32, 32], "activation": "maxout", "pieces": 3, "norm": "group", "groups": 4}),
    ("mlp", (40,), {"hidden": [32, 32, 32], "residual": True, "norm": "weight"}),
    ("mlp", (40,), {"norm": "spectral", "keep": 0.8, "input_dropout": 0.2, "dropconnect": 0.5, "hidden_noise": 0.1}),
    ("cnn", (40,), {}),
    ("cnn", (3, 40), {"norm": "instance", "pool": "avg", "residual": True}),
    ("cnn", (3, 8, 8), {"channels": [8, 16], "norm": "group", "groups": 4, "global_pool": True, "activation": "elu"}),
    ("cnn", (1, 8, 8), {"activation": "maxout", "norm": "batch", "pool": None}),
    ("logistic", (1, 8, 8), {}),
    ("rnn", (40,), {}),
    ("gru", (10, 3), {"hidden_size": 8, "num_layers": 2, "dropout": 0.1}),
    ("lstm", (1, 8, 8), {"bidirectional": True}),
])
def test_shapes_and_backward(name, shape, kw):
    model = MODELS.create(name, input_shape=shape, num_classes=7, **kw)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_mlp_layer_order_and_options():
    m = MODELS.create("mlp", input_shape=(6,), num_classes=2, hidden=[4, 5], norm="batch", activation="tanh",
                      dropout=[0.1, 0.3])
    kinds = [[type(x).__name__ for x in blk] for blk in list(m)[1:3]]
    assert kinds == [["Linear", "BatchNorm1d", "Tanh", "Dropout"]] * 2  # weight -> norm -> activation -> dropout
    assert [blk[3].p for blk in list(m)[1:3]] == [0.1, 0.3]
    assert isinstance(m[0], nn.Flatten) and m[-1].out_features == 2
    keep = MODELS.create("mlp", input_shape=(6,), num_classes=2, hidden=[4, 5], keep=[0.8, 0.5])
    assert [blk[-1].p for blk in list(keep)[1:3]] == [0.2, 0.5]
    mx = MODELS.create("mlp", input_shape=(6,), num_classes=2, hidden=[4], activation="maxout", pieces=3)
    assert mx[1][0].out_features == 12 and isinstance(mx[1][1], Maxout) and mx[2].in_features == 4
    st = MODELS.create("mlp", input_shape=(6,), num_classes=2, activation="scaled_tanh")
    assert isinstance(st[1][1], ScaledTanh)
    wn = MODELS.create("mlp", input_shape=(6,), num_classes=2, norm="weight")
    assert parametrize.is_parametrized(wn[1][0], "weight") and parametrize.is_parametrized(wn[-1], "weight")
    dc = MODELS.create("mlp", input_shape=(6,), num_classes=2, dropconnect=0.5, input_noise=0.1, hidden_noise=0.2)
    assert isinstance(dc[1], GaussianNoise) and isinstance(dc[2][0], DropConnectLinear)
    assert isinstance(dc[2][2], GaussianNoise) and dc[2][2].std == 0.2


def test_residual_blocks():
    m = MODELS.create("mlp", input_shape=(6,), num_classes=2, hidden=[8, 8, 4], residual=True)
    blocks = [x for x in m.modules() if isinstance(x, ResidualBlock)]
    assert len(blocks) == 2
    assert isinstance(blocks[0].shortcut, nn.Identity) and isinstance(blocks[1].shortcut, nn.Linear)
    x = torch.randn(3, 8)
    with torch.no_grad():  # out = post(shortcut(x) + branch(x))
        torch.testing.assert_close(blocks[0](x), torch.relu(x + blocks[0].branch(x)))


def test_recurrent_reads_steps():
    model = RecurrentClassifier("gru", (40,), 3, hidden_size=6)
    x = torch.randn(2, 40)
    _, h = model.rnn(x.reshape(2, 40, 1))
    torch.testing.assert_close(model(x), model.head(h[-1]))
    img = RecurrentClassifier("lstm", (2, 4, 5), 3, hidden_size=6)
    x = torch.randn(2, 2, 4, 5)
    _, (h, _) = img.rnn(x.permute(0, 2, 1, 3).reshape(2, 4, 10))  # rows as steps
    torch.testing.assert_close(img(x), img.head(h[-1]))


def test_recurrent_all_steps_readout_is_the_mnist1d_papers_gru():
    # Greydanus (2020): bidirectional GRU, hidden 6, the 40 x 12 outputs to a linear layer.
    model = MODELS.create("gru", input_shape=(40,), num_classes=10, hidden_size=6, bidirectional=True,
                          readout="all")
    assert model.head.in_features == 40 * 12
    x = torch.randn(3, 40)
    out, _ = model.rnn(x.reshape(3, 40, 1))
    torch.testing.assert_close(model(x), model.head(out.reshape(3, -1)))
    with pytest.raises(ValueError, match=r"`x` must have 40 steps with readout='all'.*\(3, 30\)"):
        model(torch.randn(3, 30))
    with pytest.raises(ValueError, match="`readout` must be one of 'last', 'all'. Received: readout='mean'"):
        RecurrentClassifier("gru", (40,), 3, readout="mean")


@pytest.mark.parametrize("name,kw,exc,msg", [
    ("mlp", {"hidden": [0]}, ValueError, "`hidden` must be a list of positive integers. Received: hidden=[0]"),
    ("mlp", {"hidden": "64"}, TypeError, "`hidden` must be a list of positive integers"),
    ("mlp", {"activation": "relux"}, ValueError, "`activation` must be one of"),
    ("mlp", {"norm": "batchnorm"}, ValueError, "`norm` must be one of"),
    ("mlp", {"norm": "instance"}, ValueError, "`norm` must be one of 'batch', 'layer'"),
    ("mlp", {"norm": "group", "groups": 5}, ValueError, "`groups` must be a divisor of the layer width 128"),
    ("mlp", {"dropout": 1.0}, ValueError, "`dropout` must be >= 0 and < 1. Received: dropout=1.0"),
    ("mlp", {"dropout": [0.1, 0.2]}, ValueError, "`dropout` must be a drop probability or a list of 1"),
    ("mlp", {"keep": 0.0}, ValueError, "`keep` must be > 0 and <= 1"),
    ("mlp", {"keep": 0.5, "dropout": 0.5}, ValueError, "`keep` must be None when `dropout` is given"),
    ("mlp", {"residual": 1}, TypeError, "`residual` must be a bool"),
    ("mlp", {"hiden": [3]}, TypeError, "mlp got unexpected keyword argument(s): hiden"),
    ("mlp", {"activation": "maxout", "residual": True, "hidden": [4, 4]}, ValueError, "`activation` must be not 'maxout'"),
    ("cnn", {"kernel_size": 4}, ValueError, "`kernel_size` must be odd"),
    ("cnn", {"pool": "min"}, ValueError, "`pool` must be one of"),
    ("gru", {"hidden_size": 0}, ValueError, "`hidden_size` must be an integer >= 1"),
    ("logistic", {"bias": "yes"}, TypeError, "`bias` must be a bool"),
])
def test_validation_messages(name, kw, exc, msg):
    with pytest.raises(exc) as info:
        MODELS.create(name, input_shape=(12,), num_classes=3, **kw)
    assert msg in str(info.value)


def test_bad_shapes_and_names():
    with pytest.raises(ValueError, match="`input_shape` must be a non-empty tuple of positive integers"):
        MODELS.create("mlp", input_shape=(0, 3), num_classes=2)
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 1"):
        MODELS.create("mlp", input_shape=(3,), num_classes=0)
    with pytest.raises(ValueError, match="`model` must be one of .* Did you mean 'mlp'"):
        MODELS.create("mlpp", input_shape=(3,), num_classes=2)
