import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from descend.data.samplers import (
    SAMPLERS, BootstrapSampler, ClassInterleavedSampler, GrowingBatchSampler,
    LossProportionalSampler, ShuffleSampler, bootstrap_indices, growing_batch_size,
)


def test_shuffle_new_permutation_each_epoch_and_reproducible():
    s = ShuffleSampler(50, seed=3)
    e0, e1 = list(s), list(s)
    assert sorted(e0) == sorted(e1) == list(range(50)) and e0 != e1
    again = ShuffleSampler(50, seed=3)
    assert list(again) == e0
    again.set_epoch(1)
    assert list(again) == e1
    assert len(s) == 50
    data = TensorDataset(torch.arange(10).float())
    seen = torch.cat([b[0] for b in DataLoader(data, batch_size=4, sampler=ShuffleSampler(data))])
    assert sorted(seen.tolist()) == list(range(10))


def test_class_interleaved_balanced_has_no_consecutive_repeats():
    y = torch.arange(3).repeat(40)[torch.randperm(120)]
    s = ClassInterleavedSampler(y, seed=0)
    for _ in range(3):
        order = list(s)
        assert sorted(order) == list(range(120))
        ys = y[order]
        assert int((ys[1:] == ys[:-1]).sum()) == 0
    # every block of 3 consecutive examples holds each class once
    ys = y[list(ClassInterleavedSampler(y, seed=1))]
    assert all(sorted(ys[i:i + 3].tolist()) == [0, 1, 2] for i in range(0, 120, 3))


def test_class_interleaved_imbalanced_spreads_the_majority_class():
    y = torch.tensor([0] * 30 + [1] * 10)
    for seed in range(5):
        ys = y[list(ClassInterleavedSampler(y, seed=seed))].tolist()
        runs, cur = [], 1
        for a, b in zip(ys, ys[1:]):
            cur = cur + 1 if a == b else 1
            runs.append(cur)
        assert max(runs) <= 3            # ceil(30 / 10): never a long single-class stretch
        repeats = sum(a == b for a, b in zip(ys, ys[1:]))
        assert repeats <= 30 - 10        # at most one more than the minimum 30 - 10 - 1


def test_loss_proportional_draws_in_proportion_to_loss():
    n = 4
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    s = LossProportionalSampler(n, num_samples=40000, mix=0.0)
    s.update(torch.arange(n), losses)
    counts = torch.bincount(torch.tensor(list(s)), minlength=n).double()
    p = losses / losses.sum()
    freq = counts / 40000
    sd = torch.sqrt(p * (1 - p) / 40000)
    assert ((freq - p).abs() < 5 * sd).all()
    # the high-error example is drawn ~4x as often as the low-error one
    assert abs(counts[3] / counts[0] - 4.0) < 0.3


def test_loss_proportional_mix_and_smoothing_by_formula():
    s = LossProportionalSampler(4, mix=0.2, beta=0.5)
    s.update([0, 1], torch.tensor([3.0, 0.0]))       # l = 0.5*1 + 0.5*new
    l = torch.tensor([2.0, 0.5, 1.0, 1.0])
    expected = 0.8 * l / l.sum() + 0.2 / 4
    assert torch.allclose(s.probabilities(), expected)
    assert (s.probabilities() > 0).all()
    with pytest.raises(ValueError, match="`losses` must be finite and >= 0"):
        s.update([0], torch.tensor([-1.0]))


def test_loss_proportional_update_from_model():
    torch.manual_seed(0)
    x, y = torch.randn(30, 3), torch.randint(0, 2, (30,))
    m = nn.Linear(3, 2)
    s = LossProportionalSampler(30, mix=0.0)
    s.update_from_model(m, x, y, batch_size=7)
    ref = nn.functional.cross_entropy(m(x), y, reduction="none").detach().double()
    assert torch.allclose(s.losses, ref, rtol=1e-6)


def test_bootstrap_fraction_of_unique_examples():
    n = 5000
    idx = bootstrap_indices(n, seed=0)
    frac = idx.unique().numel() / n
    # E = 1 - (1 - 1/n)^n ~ 1 - 1/e; sd < 0.5/sqrt(n)
    assert abs(frac - (1 - (1 - 1 / n) ** n)) < 5 * 0.5 / math.sqrt(n)
    s = BootstrapSampler(n, seed=4)
    assert list(s) == list(s)
    r = BootstrapSampler(n, seed=4, resample_each_epoch=True)
    assert list(r) != list(r)


def test_growing_batch_schedule_and_sampler():
    b = growing_batch_size(8, factor=2, every=1, max_batch_size=50)
    assert [b(e) for e in range(5)] == [8, 16, 32, 50, 50]
    s = GrowingBatchSampler(100, start=10, factor=2, max_batch_size=40)
    sizes = [[len(batch) for batch in s] for _ in range(3)]
    assert sizes == [[10] * 10, [20] * 5, [40, 40, 20]]
    for epoch_batches in [list(s)]:
        assert sorted(i for bt in epoch_batches for i in bt) == list(range(100))
    s.set_epoch(0)
    assert len(s) == 10
    data = TensorDataset(torch.arange(100).float())
    loader = DataLoader(data, batch_sampler=GrowingBatchSampler(100, start=25, drop_last=True))
    assert [len(bt[0]) for bt in loader] == [25] * 4


def test_registry_and_errors():
    assert set(SAMPLERS.names()) == {"shuffle", "class_interleaved", "loss_proportional",
                                     "bootstrap", "growing_batch"}
    with pytest.raises(ValueError, match="`n` must be an integer >= 1. Received: n=0"):
        ShuffleSampler(0)
    with pytest.raises(ValueError, match="`mix` must be >= 0 and <= 1"):
        LossProportionalSampler(3, mix=1.5)
    with pytest.raises(ValueError, match="`factor` must be >= 1"):
        growing_batch_size(4, factor=0.5)
    with pytest.raises(TypeError, match="`labels` must be a non-empty 1-D tensor"):
        ClassInterleavedSampler(torch.zeros(3, 2, dtype=torch.long))


# ------------------------------------------------------------- batches and loss feedback in a Trainer
def _xy(n=40, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, (x[:, 0] > 0).long()


def test_per_example_loss_matches_torch_and_the_fallback():
    from descend.data.samplers import per_example_loss
    x, y = _xy()
    out = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = nn.functional.cross_entropy(out, y, reduction="none")
    mod = nn.CrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(per_example_loss(nn.CrossEntropyLoss(), out, y), ref, rtol=0, atol=1e-15)
    assert mod.reduction == "mean"  # the caller's module is not changed
    torch.testing.assert_close(per_example_loss(mod, out, y),
                               nn.functional.cross_entropy(out, y, reduction="none", label_smoothing=0.1))
    # a plain function (no `reduction`): one call per example
    torch.testing.assert_close(per_example_loss(nn.functional.cross_entropy, out, y), ref, rtol=0, atol=1e-15)


def test_sampled_batches_follow_the_sampler_and_the_epoch():
    from descend.data.samplers import SampledBatches
    from descend.train import Callback, Trainer
    x, y = _xy()
    s = ShuffleSampler(40, seed=7)
    batches = SampledBatches(TensorDataset(x, y), s, batch_size=16)
    assert len(batches) == 3
    seen = []

    class Record(Callback):
        def on_batch_begin(self, trainer, batch):
            seen.append(batch[0])

    model = nn.Linear(3, 2).double()
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[batches, Record()],
                progress=False)
    t.fit(batches, epochs=2)
    assert [b.shape[0] for b in seen] == [16, 16, 8] * 2
    ref = ShuffleSampler(40, seed=7)
    order = torch.tensor(list(ref) + list(ref))
    assert torch.equal(torch.cat(seen), x[order])
    # the epoch comes from the trainer, so a second fit continues with epoch 2
    t.fit(batches, epochs=1)
    ref.set_epoch(2)
    assert torch.equal(torch.cat(seen[6:]), x[list(ref)])
    # a batch-size schedule and a batch sampler
    sched = SampledBatches(TensorDataset(x, y), ShuffleSampler(40), batch_size=lambda e: 10 * (e + 1))
    assert [len(b[0]) for b in sched] == [10] * 4
    sched._epoch = 1
    assert [len(b[0]) for b in sched] == [20, 20]
    grow = SampledBatches(TensorDataset(x, y), GrowingBatchSampler(40, start=8, factor=2))
    assert [len(b[0]) for b in grow] == [8] * 5 and [len(b[0]) for b in grow] == [16, 16, 8]
    with pytest.raises(TypeError, match="`dataset` must be a TensorDataset"):
        SampledBatches([1, 2], s)
    with pytest.raises(ValueError, match="`batch_size` must be"):
        SampledBatches(TensorDataset(x, y), s, batch_size=0)


def test_loss_feedback_feeds_the_per_example_losses_by_formula():
    from descend.data.samplers import LossFeedback, SampledBatches
    from descend.train import CALLBACKS, Trainer
    x, y = _xy()
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    s = LossProportionalSampler(40, mix=0.0, beta=0.5)
    fb = CALLBACKS.create("loss_feedback", every=1, batch_size=7)
    assert isinstance(fb, LossFeedback) and fb.bind(s, (x, y)) is fb
    batches = SampledBatches(TensorDataset(x, y), s, batch_size=8)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), callbacks=[batches, fb],
                progress=False)
    t.fit(batches, epochs=1)
    with torch.no_grad():
        l1 = nn.functional.cross_entropy(model(x), y, reduction="none")
    # l <- beta l + (1 - beta) loss, from l = 1
    torch.testing.assert_close(s.losses, 0.5 + 0.5 * l1, rtol=0, atol=1e-12)
    t.fit(batches, epochs=1)
    with torch.no_grad():
        l2 = nn.functional.cross_entropy(model(x), y, reduction="none")
    torch.testing.assert_close(s.losses, 0.5 * (0.5 + 0.5 * l1) + 0.5 * l2, rtol=0, atol=1e-12)
    torch.testing.assert_close(s.probabilities().double(), s.losses / s.losses.sum(), rtol=1e-6, atol=0)
    assert model.training  # the evaluation pass restores the mode
    # every 2 epochs: the first epoch end leaves the losses alone
    s2 = LossProportionalSampler(40)
    m2 = nn.Linear(3, 2).double()
    t2 = Trainer(m2, torch.optim.SGD(m2.parameters(), lr=0.1),
                 callbacks=[LossFeedback(s2, TensorDataset(x, y), every=2)], progress=False)
    t2.fit((x, y), epochs=1)
    assert torch.equal(s2.losses, torch.ones(40, dtype=torch.float64))
    t2.fit((x, y), epochs=1)
    assert not torch.equal(s2.losses, torch.ones(40, dtype=torch.float64))


def test_loss_feedback_errors():
    from descend.data.samplers import LossFeedback
    from descend.train import Trainer
    with pytest.raises(TypeError, match="`sampler` must be a sampler with an update"):
        LossFeedback(ShuffleSampler(4))
    with pytest.raises(ValueError, match="`every` must be"):
        LossFeedback(every=0)
    x, y = _xy()
    model = nn.Linear(3, 2).double()
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[LossFeedback()],
                progress=False)
    with pytest.raises(ValueError, match="loss_feedback needs both"):
        t.fit((x, y), epochs=1)


def test_state_dicts_resume_the_same_draws():
    from descend.data.samplers import LossFeedback, SampledBatches
    s = LossProportionalSampler(10, mix=0.1, seed=3)
    s.update(torch.arange(10), torch.arange(10.0))
    list(s)  # epoch 0 drawn
    t = LossProportionalSampler(10, mix=0.1, seed=3)
    t.load_state_dict(s.state_dict())
    assert torch.equal(t.losses, s.losses) and list(t) == list(s)  # epoch 1, same losses
    with pytest.raises(ValueError, match=r"`losses` must be a tensor of shape \(10,\)"):
        t.load_state_dict({**s.state_dict(), "losses": torch.ones(3)})
    g = GrowingBatchSampler(ShuffleSampler(10, seed=1), start=2)
    list(g)
    h = GrowingBatchSampler(ShuffleSampler(10, seed=1), start=2)
    h.load_state_dict(g.state_dict())
    assert list(h) == list(g)
    ds = TensorDataset(torch.arange(10.0)[:, None], torch.arange(10))
    a = SampledBatches(ds, LossProportionalSampler(10, seed=0), 4)
    a.sampler.update([1], torch.tensor([9.0]))
    b = SampledBatches(ds, LossProportionalSampler(10, seed=0), 4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.sampler.losses, a.sampler.losses)
    fb = LossFeedback(LossProportionalSampler(10, seed=0), ds)
    fb.load_state_dict({"sampler": a.sampler.state_dict()})
    assert torch.equal(fb.sampler.losses, a.sampler.losses)
