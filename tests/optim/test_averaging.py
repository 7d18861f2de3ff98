import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from descend.optim.averaging import EMA, WeightAverage
from descend.train import CALLBACKS, Trainer


def _walk(model, steps, seed=0):
    """A deterministic sequence of parameter values w_1..w_T, as an optimizer would produce."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        yield [p.detach().clone() for p in model.parameters()]


def test_polyak_is_the_uniform_mean_of_the_iterates():
    m = nn.Linear(3, 2).double()
    avg = WeightAverage(m, mode="polyak")
    seen = []
    for ws in _walk(m, 7):
        avg.update()
        seen.append(ws)
    for i, a in enumerate(avg.averages):
        assert torch.allclose(a, torch.stack([s[i] for s in seen]).mean(0), rtol=1e-12, atol=1e-14)


def test_ema_by_formula_and_start():
    m = nn.Linear(2, 1, bias=False).double()
    d = 0.9
    avg = WeightAverage(m, mode="ema", decay=d, start=2)
    ref = None
    for t, (w,) in enumerate(_walk(m, 6)):
        avg.update()
        if t < 2:
            continue
        ref = w.clone() if ref is None else d * ref + (1 - d) * w
    assert avg.num_averaged == 4
    assert torch.allclose(avg.averages[0], ref, rtol=1e-12)


@pytest.mark.parametrize("mode", ["polyak", "ema"])
def test_equals_torch_averaged_model(mode):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    ours = WeightAverage(m, mode=mode, decay=0.95)
    ref = AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(0.95) if mode == "ema" else None)
    for _ in _walk(m, 10):
        ours.update()
        ref.update_parameters(m)
    for a, r in zip(ours.averages, ref.module.parameters()):
        assert torch.allclose(a, r, rtol=1e-12, atol=1e-14)


def test_swapped_restores_and_copy_to():
    m = nn.Linear(2, 2)
    avg = WeightAverage(m, mode="polyak")
    list(_walk(m, 1)); avg.update(); list(_walk(m, 1)); avg.update()
    current = [p.detach().clone() for p in m.parameters()]
    with avg.swapped():
        assert all(torch.equal(p, a) for p, a in zip(m.parameters(), avg.averages))
    assert all(torch.equal(p, c) for p, c in zip(m.parameters(), current))
    other = nn.Linear(2, 2)
    avg.copy_to(other)
    assert all(torch.equal(p, a) for p, a in zip(other.parameters(), avg.averages))


def test_ema_callback_through_the_trainer():
    assert isinstance(CALLBACKS.create("ema", decay=0.5), EMA)
    torch.manual_seed(0)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    m = nn.Linear(3, 2)
    cb = EMA(mode="polyak", apply_at_end=False)
    rec = WeightAverage(m, mode="polyak")

    class Record(EMA):
        def on_batch_end(self, trainer, logs):
            rec.update()

    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=10, callbacks=[cb, Record()],
                progress=False)
    t.fit((x, y), epochs=3)
    assert cb.average.num_averaged == 12
    assert all(torch.equal(a, r) for a, r in zip(cb.average.averages, rec.averages))
    assert not all(torch.equal(p, a) for p, a in zip(m.parameters(), cb.average.averages))
    cb2 = EMA(mode="polyak")
    Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=10, callbacks=[cb2],
            progress=False).fit((x, y), epochs=1)
    assert all(torch.equal(p, a) for p, a in zip(m.parameters(), cb2.average.averages))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`decay` must be >= 0 and < 1. Received: decay=1"):
        WeightAverage(nn.Linear(1, 1), decay=1)
    with pytest.raises(ValueError, match="`mode` must be one of 'ema', 'polyak'"):
        EMA(mode="swa")
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        WeightAverage([1, 2])
