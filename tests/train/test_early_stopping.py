import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from descend.train import CALLBACKS, Callback, Trainer
from descend.train.early_stopping import EarlyStopping, continue_on_all, retrain_on_all


def overfit_problem(seed=0):
    """Few noisy examples, a wide MLP: validation loss falls, then rises."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(80, 5, generator=g)
    y = ((x[:, 0] + 0.8 * torch.randn(80, generator=g)) > 0).long()
    return (x[:30], y[:30]), (x[30:], y[30:])


def make_trainer(callbacks=(), seed=0, lr=0.2):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(5, 64), nn.Tanh(), nn.Linear(64, 2))
    return Trainer(m, torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9), batch_size=10,
                   callbacks=list(callbacks), progress=False)


class Snapshots(Callback):
    def __init__(self):
        self.states = []

    def on_epoch_end(self, trainer, logs):
        self.states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


def test_registered():
    assert isinstance(CALLBACKS.create("early_stopping", patience=5), EarlyStopping)


def test_restores_best_epoch_weights_exactly_through_the_trainer():
    train, val = overfit_problem()
    snaps = Snapshots()
    es = EarlyStopping(patience=5)
    t = make_trainer([snaps, es])
    t.fit(train, val, epochs=200)
    val_loss = t.history.epochs["val_loss"]
    assert es.stopped_epoch == len(val_loss) < 200            # it stopped early
    best = min(range(len(val_loss)), key=val_loss.__getitem__) + 1
    assert es.best_epoch == best and es.stopped_epoch == best + 5
    assert es.best_step == t.history.epochs["step"][best - 1]
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, snaps.states[best - 1][k])
    assert t.evaluate(val)["loss"] == pytest.approx(val_loss[best - 1], rel=1e-6)


def fake_trainer(model):
    return SimpleNamespace(model=model, epoch=0, global_step=0, stop_training=False)


def run_values(es, values):
    t = fake_trainer(nn.Linear(1, 1))
    es.on_fit_begin(t)
    for v in values:
        t.epoch += 1
        es.on_epoch_end(t, {"val_loss": v})
        if t.stop_training:
            break
    return t.epoch


def test_error_change_patience_and_min_delta():
    vals = [1.0, 0.8, 0.79, 0.785, 0.78, 0.7, 0.6]
    # min_delta=0: every epoch improves, never stops
    assert run_values(EarlyStopping(patience=2), vals) == 7
    # min_delta=0.05: 0.79 and 0.785 are not improvements on 0.8 -> stop at epoch 4
    es = EarlyStopping(patience=2, min_delta=0.05)
    assert run_values(es, vals) == 4 and es.best_epoch == 2 and es.best == 0.8
    assert "did not improve" in es.stop_reason
    # mode max (accuracy)
    es = EarlyStopping(monitor="val_loss", mode="max", patience=1)
    assert run_values(es, [0.5, 0.6, 0.55]) == 3


def run_weights(es, weights, logs=None):
    """Set the weights to each vector in turn, one epoch each; return the stopping epoch."""
    m = nn.Linear(len(weights[0]), 1, bias=False)
    t = fake_trainer(m)
    es.on_fit_begin(t)
    for w in weights:
        with torch.no_grad():
            m.weight.copy_(torch.tensor(w).unsqueeze(0))
        t.epoch += 1
        es.on_epoch_end(t, dict(logs or {}))
        if t.stop_training:
            return t.epoch
    return None


def test_weight_change_absolute_uses_max_over_weights_not_vector_length():
    # each epoch every one of 100 weights moves by 0.5**t
    traj = [[sum(0.5 ** s for s in range(t))] * 100 for t in range(1, 16)]
    k, rho = 2, 0.01
    es = EarlyStopping(criterion="weight", window=k, rho=rho)
    stop = run_weights(es, traj)
    # by formula: max_i |w^t - w^(t-k)| = 0.5**(t-2) + 0.5**(t-1) (0-based exponents of the last two moves)
    def change(t):  # t is 1-based epoch
        return abs(traj[t - 1][0] - traj[t - 1 - k][0])
    expected = next(t for t in range(k + 1, 16) if change(t) < rho)
    assert stop == expected
    assert es.last_weight_change == pytest.approx(change(stop), rel=1e-6)
    # the length of the change vector is 10x the max (sqrt(100)): it would stop later
    assert math.sqrt(100) * change(stop) >= rho


def test_weight_change_relative_to_weight_norm():
    # large weights (norm 1000) moving by 0.5 each epoch: never stops in absolute terms
    traj = [[1000.0 + 0.5 * t] for t in range(12)]
    assert run_weights(EarlyStopping(criterion="weight", window=3, rho=0.1), traj) is None
    es = EarlyStopping(criterion="weight", window=3, rho=0.01, relative=True)
    stop = run_weights(es, traj)
    assert stop == 4                                           # first epoch with t-3 available
    assert es.last_weight_change == pytest.approx(1.5 / (1000.0 + 0.5 * 3), rel=1e-6)


def test_either_criterion_and_bad_arguments():
    es = EarlyStopping(criterion="either", window=1, rho=1e-9, patience=100)
    assert run_weights(es, [[1.0], [1.0], [1.0]], {"val_loss": 1.0}) == 2
    assert "weight change" in es.stop_reason
    with pytest.raises(KeyError, match="`monitor` names a metric that is not logged"):
        run_weights(EarlyStopping(criterion="either"), [[1.0]])
    with pytest.raises(ValueError, match="`criterion` must be one of 'error', 'weight', 'either'"):
        EarlyStopping(criterion="loss")
    with pytest.raises(ValueError, match="`rho` must be > 0. Received: rho=0"):
        EarlyStopping(rho=0)
    with pytest.raises(TypeError, match="`window` must be an integer"):
        EarlyStopping(window=2.5)
    with pytest.raises(TypeError):
        EarlyStopping(patients=3)


def test_retrain_on_all_same_steps_or_epochs():
    train, val = overfit_problem()
    kw = dict(max_epochs=60, patience=5)
    t, info = retrain_on_all(make_trainer, train, val, unit="steps", **kw)
    assert info["retrain_steps"] == info["best_step"] > 0
    assert info["best_step"] == info["best_epoch"] * 3         # 30 examples / batch 10
    # the union has 80 examples = 8 steps per epoch
    assert info["retrain_epochs"] == math.ceil(info["best_step"] / 8)
    t2, info2 = retrain_on_all(make_trainer, train, val, unit="epochs", **kw)
    assert info2["retrain_epochs"] == info2["best_epoch"] and info2["retrain_steps"] == 8 * info2["best_epoch"]
    with pytest.raises(ValueError, match="`make_trainer` must be a factory returning a new trainer"):
        same = make_trainer()
        retrain_on_all(lambda: same, train, val, max_epochs=5, patience=2)


@pytest.mark.parametrize("until", ["train_below_val", "val_below_train"])
def test_continue_on_all_until_target(until):
    train, val = overfit_problem()
    t = make_trainer(lr=0.05)
    info = continue_on_all(t, train, val, max_epochs=60, patience=5, until=until, max_extra_epochs=200)
    assert info["reached"] and info["final"] < info["target"]
    union = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    now = t.evaluate(union if until == "train_below_val" else val)["loss"]
    assert now == pytest.approx(info["final"], rel=1e-6)


def test_train_after_stopping_runs_m_more_epochs_at_the_lower_lr():
    from descend.train import Trainer, train_after_stopping

    torch.manual_seed(0)
    x = torch.randn(96, 4)
    y = (x[:, 0] + 0.5 * torch.randn(96) > 0).long()
    m = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.5), batch_size=16)
    info = train_after_stopping(t, (x[:64], y[:64]), (x[64:], y[64:]), max_epochs=200, patience=3,
                                extra_epochs=4, lr_factor=0.1)
    assert info["criterion_met"] and info["stopped_epoch"] < 200
    assert t.epoch == info["stopped_epoch"] + 4 and len(t.history.epochs["val_loss"]) == t.epoch
    assert info["lr"] == [pytest.approx(0.05)] and t.history.epochs["lr"][-1] == pytest.approx(0.05)
    assert t.history.epochs["lr"][info["stopped_epoch"] - 1] == pytest.approx(0.5)
    # start="best": the extra epochs begin from the best epoch's weights
    m2 = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    t2 = Trainer(m2, torch.optim.SGD(m2.parameters(), lr=0.5), batch_size=16)
    snap = {}

    class Grab(Callback):
        def on_fit_end(self, trainer):
            snap.setdefault("w", {k: v.clone() for k, v in trainer.model.state_dict().items()})

    t2.callbacks.append(Grab())
    info2 = train_after_stopping(t2, (x[:64], y[:64]), (x[64:], y[64:]), max_epochs=200, patience=3,
                                 extra_epochs=0, start="best")
    # no extra epochs: the weights are exactly the best epoch's (restored by EarlyStopping)
    assert info2["best_epoch"] <= info2["stopped_epoch"]
    with pytest.raises(ValueError, match="`lr_factor` must be > 0"):
        train_after_stopping(t, (x, y), (x, y), max_epochs=1, extra_epochs=1, lr_factor=0)
    with pytest.raises(TypeError, match="`restore_best` must be left out"):
        train_after_stopping(t, (x, y), (x, y), max_epochs=1, extra_epochs=1, restore_best=False)
