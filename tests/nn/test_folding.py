"""BN inference (Algorithm 2 of note 003): population statistics and folding into Linear/Conv."""

import pytest
import torch
from torch import nn

from descend.nn import MODELS, convert_sync_batchnorm, fold_batchnorm, population_statistics


def _batches(shape, n=6, m=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [2 * torch.randn(m, *shape, generator=g) + 0.5 for _ in range(n)]


def test_population_statistics_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 3), nn.BatchNorm1d(3))
    batches = _batches((5,), n=5, m=10)
    net.train()
    population_statistics(net, batches)
    assert net.training and net[3].training  # modes restored
    # written out for the first BN: E[x] = mean_B mu_B; Var[x] = m/(m-1) mean_B sigma_B^2 (biased sigma_B^2)
    with torch.no_grad():
        xs = [net[0](b) for b in batches]
    mu = torch.stack([x.mean(0) for x in xs]).mean(0)
    var = 10 / 9 * torch.stack([((x - x.mean(0)) ** 2).mean(0) for x in xs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mu)
    torch.testing.assert_close(net[1].running_var, var)
    # the second BN sees activations with dropout off and BN1 using batch statistics
    with torch.no_grad():
        xs2 = [net[4](torch.relu(nn.functional.batch_norm(x, None, None, net[1].weight, net[1].bias, True))) for x in xs]
    torch.testing.assert_close(net[5].running_mean, torch.stack([x.mean(0) for x in xs2]).mean(0))


def test_population_statistics_equals_torch_cumulative_average():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).double()
    batches = [b.double() for b in _batches((2, 6, 6), n=4, m=5)]
    ref = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, momentum=None)).double()
    ref.load_state_dict(conv.state_dict())
    ref.train()
    with torch.no_grad():
        for b in batches:
            ref(b)
    population_statistics(conv, batches)
    torch.testing.assert_close(conv[1].running_mean, ref[1].running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv[1].running_var, ref[1].running_var, rtol=1e-12, atol=1e-12)


def _trained_like(model):
    """Give the BN layers non-trivial affine parameters, as training would."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


@pytest.mark.parametrize("name,shape,kw", [
    ("mlp", (12,), {"hidden": [16, 16], "norm": "batch", "dropout": 0.2}),
    ("mlp", (12,), {"hidden": [16, 16, 16], "norm": "batch", "residual": True}),
    ("cnn", (20,), {"channels": [4, 8], "norm": "batch"}),
    ("cnn", (3, 8, 8), {"channels": [4, 8], "norm": "batch", "residual": True}),
])
def test_folded_network_equals_eval_network(name, shape, kw):
    torch.manual_seed(0)
    net = _trained_like(MODELS.create(name, input_shape=shape, num_classes=5, **kw))
    population_statistics(net, _batches(shape, n=8, m=32))
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert net.training  # the original is untouched
    x = _batches(shape, n=1, m=64, seed=9)[0]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net.eval()(x), rtol=1e-5, atol=1e-5)


def test_fold_formula_and_strict():
    lin, bn = nn.Linear(3, 2).double(), nn.BatchNorm1d(2).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.3, -1.0]))
        bn.running_var.copy_(torch.tensor([2.0, 0.5]))
        bn.weight.copy_(torch.tensor([1.5, -0.7]))
        bn.bias.copy_(torch.tensor([0.1, 0.2]))
    folded = fold_batchnorm(nn.Sequential(lin, bn))[0]
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.weight, s[:, None] * lin.weight)
    torch.testing.assert_close(folded.bias, s * (lin.bias - bn.running_mean) + bn.bias)
    after_act = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.BatchNorm1d(2))
    with pytest.raises(ValueError, match="unfoldable: 2"):
        fold_batchnorm(after_act)
    kept = fold_batchnorm(after_act, strict=False)
    assert isinstance(kept[2], nn.BatchNorm1d) and not kept.training
    with pytest.raises(ValueError, match="`model` must be a model with BatchNorm"):
        population_statistics(nn.Linear(2, 2), [torch.randn(3, 2)])


def test_convert_sync_batchnorm_on_cpu():
    net = MODELS.create("cnn", input_shape=(1, 8, 8), num_classes=3, channels=[4], norm="batch")
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
    synced = convert_sync_batchnorm(net)
    sbn = [m for m in synced.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(sbn) == 1 and torch.all(sbn[0].running_mean == 0.5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in synced.modules())
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        convert_sync_batchnorm("net")
