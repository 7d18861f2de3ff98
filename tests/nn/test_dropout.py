import math

import pytest
import torch
from torch import nn

from descend.nn.dropout import Dropout, DropoutMLP, is_stochastic, mc_predict, weight_scaling_predict


def test_inverted_mode_is_torch_dropout_with_the_same_masks():
    x = torch.randn(50, 40, dtype=torch.float64)
    torch.manual_seed(3)
    ours = Dropout(keep=0.8).train()(x)
    torch.manual_seed(3)
    ref = nn.Dropout(p=0.2).train()(x)
    assert torch.equal(ours, ref)
    assert torch.equal(Dropout(keep=0.8).eval()(x), x)


@pytest.mark.parametrize("keep", [0.5, 0.8])
@pytest.mark.parametrize("mode", ["inverted", "scale_at_test"])
def test_expected_activation_unchanged(keep, mode):
    n = 400_000
    x = torch.ones(n, dtype=torch.float64)
    d = Dropout(keep=keep, mode=mode)
    y_train = d.train()(x)
    y_eval = d.eval()(x)
    # each training output is c * Bernoulli(keep), c = 1/keep (inverted) or 1 (scale_at_test);
    # its mean is c * keep = y_eval and its sd is c * sqrt(keep (1 - keep)).
    c = 1 / keep if mode == "inverted" else 1.0
    assert torch.allclose(y_eval, torch.full_like(x, c * keep))
    sd_mean = c * math.sqrt(keep * (1 - keep) / n)
    assert abs(y_train.mean().item() - c * keep) < 5 * sd_mean
    frac_kept = (y_train != 0).double().mean().item()
    assert abs(frac_kept - keep) < 5 * math.sqrt(keep * (1 - keep) / n)


def test_dropout_mlp_has_per_layer_keep_probabilities():
    m = DropoutMLP([10, 32, 16, 3], keep_input=0.8, keep_hidden=0.5, activation="tanh")
    drops = [l for l in m if isinstance(l, Dropout)]
    assert [d.keep for d in drops] == [0.8, 0.5, 0.5]
    assert isinstance(m[-1], nn.Linear) and isinstance(m[0], Dropout)   # no dropout on outputs
    assert m(torch.randn(4, 10)).shape == (4, 3)


def test_mc_average_approaches_weight_scaling_output():
    # Dropout followed by a linear map: E_mu[f(x; mu)] equals the weight-scaling output exactly,
    # so the MC mean over S masks is within a few sd/sqrt(S) of it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), Dropout(keep=0.5), nn.Linear(20, 3)).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    ws = weight_scaling_predict(model, x)
    errs = {}
    for s in (16, 4096):
        mc = mc_predict(model, x, samples=s, seed=1)
        errs[s] = (mc - ws).abs().max().item()
    # per-sample sd of the output, estimated from 2000 independent passes
    torch.manual_seed(2)
    model.train()
    with torch.no_grad():
        outs = torch.stack([model(x) for _ in range(2000)])
    sd = outs.std(dim=0).max().item()
    assert errs[4096] < 5 * sd / math.sqrt(4096)
    assert errs[4096] < errs[16]
    assert model.training   # mode restored


def test_mc_predict_keeps_batchnorm_in_eval_and_is_seeded():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), Dropout(0.5), nn.Linear(8, 2))
    model.eval()
    x = torch.randn(16, 4)
    before = model[1].running_mean.clone()
    a = mc_predict(model, x, samples=5, seed=7)
    b = mc_predict(model, x, samples=5, seed=7)
    assert torch.equal(a, b)
    assert torch.equal(model[1].running_mean, before)
    assert not model.training and not model[2].training
    p = mc_predict(model, x, samples=5, seed=7, probs=True)
    assert torch.allclose(p.sum(-1), torch.ones(16))


def test_dropconnect_plugs_in_by_the_stochastic_flag():
    class MaskedWeights(nn.Linear):
        stochastic = True

        def forward(self, x):
            if not self.training:
                return super().forward(x)
            mask = torch.empty_like(self.weight).bernoulli_(0.5)
            return nn.functional.linear(x, self.weight * mask / 0.5, self.bias)

    layer = MaskedWeights(5, 2)
    assert is_stochastic(layer) and is_stochastic(nn.Dropout()) and not is_stochastic(nn.Linear(2, 2))
    x = torch.randn(3, 5)
    ws = weight_scaling_predict(layer, x)
    assert not torch.equal(mc_predict(layer, x, samples=3, seed=0), ws)   # masks are on
    assert (mc_predict(layer, x, samples=20000, seed=0) - ws).abs().max() < 0.1


def test_mc_with_descend_dropconnect_layer():
    layers = pytest.importorskip("descend.nn.layers")
    torch.manual_seed(0)
    layer = layers.DropConnectLinear(6, 3, p=0.5).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    assert is_stochastic(layer)
    ws = weight_scaling_predict(layer, x)
    # one pass: y_j = sum_i M_ji W_ji x_i / keep, var = sum_i (W_ji x_i)^2 (1 - keep) / keep
    sd = torch.sqrt(((layer.weight.unsqueeze(0) * x.unsqueeze(1)) ** 2).sum(-1)).max().item()
    mc = mc_predict(layer, x, samples=4000, seed=1)
    assert (mc - ws).abs().max().item() < 5 * sd / math.sqrt(4000)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`keep` must be > 0 and <= 1. Received: keep=0"):
        Dropout(keep=0)
    with pytest.raises(ValueError, match="`mode` must be one of 'inverted', 'scale_at_test'"):
        Dropout(mode="gaussian")
    with pytest.raises(ValueError, match="`samples` must be an integer >= 1"):
        mc_predict(nn.Linear(1, 1), torch.zeros(1, 1), samples=0)
    with pytest.raises(TypeError, match="`sizes` must be a list of at least two layer widths"):
        DropoutMLP([3])
