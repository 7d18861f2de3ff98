import pytest
import torch
from torch import nn
from torch.nn import functional as F

from descend.data.samplers import bootstrap_indices
from descend.ensemble import Bagging, Ensemble, MultiTaskLoss, MultiTaskModel
from descend.train import Trainer


def noisy_problem(n_train=120, n_test=4000, d=10, seed=0):
    """A linear rule in 10-D with 20% flipped labels: wide MLPs memorize the noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, d, generator=g)
    w = torch.randn(d, generator=g)
    y = (x @ w > 0).long()
    flip = torch.rand(n_train + n_test, generator=g) < 0.2
    y = torch.where(flip, 1 - y, y)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def make_member(i):
    torch.manual_seed(100 + i)
    m = nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 2))
    return Trainer(m, torch.optim.Adam(m.parameters(), lr=1e-2), batch_size=120, seed=i, progress=False)


def test_bagged_overfitting_models_beat_their_mean_member():
    train, test = noisy_problem()
    bag = Bagging(make_member, k=9, seed=0).fit(train, epochs=30)
    # the members overfit: near perfect on their own resample (20% of labels are noise),
    # far from it on held-out data
    for t, idx in zip(bag.trainers, bag.resamples):
        assert t.evaluate((train[0][idx], train[1][idx]))["acc"] > 0.95
    res = bag.evaluate(test)
    assert len(res["members"]) == 9 and res["mean_member"] < 0.75
    assert res["ensemble"] > res["mean_member"]
    # paired over the 4000 held-out examples: d_i = [ensemble right] - mean_j [member j right];
    # the gain is significant when mean(d) > 3 sd(d) / sqrt(n)
    x, y = test
    with torch.no_grad():
        members = torch.stack([(m(x).argmax(-1) == y).double() for m in bag.models]).mean(0)
        ens = (bag.predict(x).argmax(-1) == y).double()
    d = ens - members
    assert d.mean().item() == pytest.approx(res["ensemble"] - res["mean_member"], abs=1e-9)
    assert d.mean() > 3 * d.std() / len(d) ** 0.5
    vote = Bagging(make_member, k=9, method="vote")
    vote.trainers, vote.resamples = bag.trainers, bag.resamples
    assert vote.evaluate(test)["ensemble"] > res["mean_member"]


def test_members_train_on_their_bootstrap_resample():
    x, y = torch.randn(50, 10), torch.randint(0, 2, (50,))
    seen = []

    def make(i):
        t = make_member(i)
        fit = t.fit

        def spy(data, val=None, *, epochs=1):
            seen.append(data)
            return fit(data, val, epochs=epochs)

        t.fit = spy
        return t

    bag = Bagging(make, k=3, seed=7).fit((x, y), epochs=1)
    for i, (xs, ys) in enumerate(seen):
        idx = bootstrap_indices(50, seed=7 + i)
        assert torch.equal(xs, x[idx]) and torch.equal(ys, y[idx]) and xs.shape[0] == 50
    assert len({tuple(r.tolist()) for r in bag.resamples}) == 3


def test_ensemble_average_and_vote_by_formula():
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(5)]
    x = torch.randn(6, 4)
    avg = Ensemble(members)(x)
    assert torch.allclose(avg, sum(F.softmax(m(x), -1) for m in members) / 5)
    vote = Ensemble(members, method="vote")(x)
    counts = sum(F.one_hot(m(x).argmax(-1), 3) for m in members).float()
    assert torch.allclose(vote, counts / 5)


def test_multitask_weighted_loss_and_shared_gradient():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
    model = MultiTaskModel(trunk, {"a": nn.Linear(8, 3), "b": nn.Linear(8, 2)}).double()
    x = torch.randn(10, 5, dtype=torch.float64)
    y = torch.stack([torch.randint(0, 3, (10,)), torch.randint(0, 2, (10,))], 1)
    loss = MultiTaskLoss(["a", "b"], weights=[1.0, 0.25])
    out = model(x)
    j = loss(out, y)
    ja, jb = F.cross_entropy(out["a"], y[:, 0]), F.cross_entropy(out["b"], y[:, 1])
    assert j.item() == pytest.approx((ja + 0.25 * jb).item(), rel=1e-12)
    w = model.trunk[0].weight
    (g,) = torch.autograd.grad(j, w, retain_graph=True)
    (ga,) = torch.autograd.grad(ja, w, retain_graph=True)
    (gb,) = torch.autograd.grad(jb, w)
    assert torch.allclose(g, ga + 0.25 * gb, rtol=1e-12)


def test_multitask_through_the_trainer_learns_both_tasks():
    torch.manual_seed(0)
    x = torch.randn(400, 6)
    y = torch.stack([(x[:, 0] > 0).long(), (x[:, 1] + x[:, 2] > 0).long()], 1)
    model = MultiTaskModel(nn.Sequential(nn.Linear(6, 16), nn.ReLU()),
                           {"first": nn.Linear(16, 2), "second": nn.Linear(16, 3)}, concat=True)
    loss = MultiTaskLoss(["first", "second"], sizes=[2, 3])
    t = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), loss_fn=loss, metrics=(),
                batch_size=50, progress=False)
    t.fit((x, y), epochs=30)
    with torch.no_grad():
        flat = model(x)
        model.concat = False
        out = model(x)
    assert torch.equal(flat, torch.cat([out["first"], out["second"]], -1))
    assert loss(flat, y).item() == pytest.approx(loss(out, y).item(), rel=1e-6)
    for i, task in enumerate(["first", "second"]):
        assert (out[task].argmax(-1) == y[:, i]).float().mean() > 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="`k` must be an integer >= 1. Received: k=0"):
        Bagging(make_member, k=0)
    with pytest.raises(ValueError, match="`weights` must be one weight per task"):
        MultiTaskLoss(["a", "b"], weights=[1.0])
    with pytest.raises(ValueError, match=r"`weights\[1\]` must be >= 0"):
        MultiTaskLoss(["a", "b"], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"`targets` must be of shape \(N, 2\)"):
        MultiTaskLoss(["a", "b"])({"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)}, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="`method` must be one of 'average', 'vote'"):
        Ensemble([nn.Linear(1, 1)], method="median")
    with pytest.raises(RuntimeError, match="not fitted"):
        Bagging(make_member).predict(torch.zeros(1, 10))
    same = make_member(0)
    with pytest.raises(ValueError, match="`make_trainer` must be a factory returning a new model"):
        Bagging(lambda i: same, k=2).fit((torch.randn(8, 10), torch.randint(0, 2, (8,))))
