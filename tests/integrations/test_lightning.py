"""descend in Lightning: optimizer, LRScheduler, DescendCallback, exact resume, the doctor."""

import json
import math
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

import descend.optim as do  # noqa: E402
from descend import schedules as S  # noqa: E402
from descend.analysis.doctor import doctor, load_histories  # noqa: E402
from descend.cli import main as descend_main  # noqa: E402
from descend.data.samplers import LossFeedback, LossProportionalSampler, ShuffleSampler  # noqa: E402
from descend.integrations.lightning import DescendCallback  # noqa: E402
from descend.optim import EMA  # noqa: E402
from descend.train import (ActivationMonitor, EarlyStopping, GradientNormMonitor,  # noqa: E402
                           HyperparameterMonitor, NanGuard, UpdateRatioMonitor)

pytestmark = [pytest.mark.filterwarnings("ignore:.*does not have many workers"),
              pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec"),
              pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")]

N, STEPS_PER_EPOCH = 64, 4


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


class Net(pl.LightningModule):
    def __init__(self, build_optimizer, total_steps, bias=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        if bias:
            torch.nn.init.constant_(self.net[0].bias, bias)
        self.build_optimizer, self.total_steps = build_optimizer, total_steps

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = self.build_optimizer(self)
        sched = S.LRScheduler(opt, S.warmup(S.cosine(3e-2, total=self.total_steps - 2), steps=2))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loaders(x, y, seed=0, val_y=None):
    ds = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(ds, batch_size=N // STEPS_PER_EPOCH,
                                        sampler=ShuffleSampler(N, seed=seed))
    val = torch.utils.data.TensorDataset(x, y if val_y is None else val_y)
    return train, torch.utils.data.DataLoader(val, batch_size=N)


def _trainer(root, callbacks, epochs, **kwargs):
    return pl.Trainer(max_epochs=epochs, callbacks=callbacks, default_root_dir=root, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                      num_sanity_val_steps=0, **kwargs)


def _callbacks():
    return [GradientNormMonitor(1), ActivationMonitor(1, bins=0), UpdateRatioMonitor(2),
            HyperparameterMonitor(1), NanGuard(), EMA(decay=0.9, apply_at_end=False)]


def test_resume_with_ckpt_path_is_bitwise_exact_and_the_doctor_reads_it(tmp_path):
    x, y = _data()

    def adamw(module):  # one param group named "net", as Lightning's LearningRateMonitor reads
        return do.AdamW([{"params": module.parameters(), "name": "net"}], lr=1.0,
                        weight_decay=0.01)

    epochs, total = 4, 4 * STEPS_PER_EPOCH

    # uninterrupted
    full_cb = DescendCallback(_callbacks(), directory=tmp_path / "full")
    full = Net(adamw, total)
    _trainer(tmp_path / "full", [full_cb], epochs).fit(full, *_loaders(x, y))

    # two epochs, checkpointed by Lightning, then a new Trainer resumes with ckpt_path
    run = tmp_path / "run"
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=run / "ckpt", save_top_k=-1, every_n_epochs=1)
    first = Net(adamw, total)
    _trainer(run, [DescendCallback(_callbacks(), directory=run), ckpt], 2).fit(first, *_loaders(x, y))
    path = run / "ckpt" / f"epoch=1-step={2 * STEPS_PER_EPOCH}.ckpt"
    assert path.exists()
    torch.load(path, weights_only=True)  # the whole Lightning checkpoint is plain data

    resumed_cb = DescendCallback(_callbacks(), directory=run)
    resumed = Net(adamw, total)
    ckpt2 = pl.callbacks.ModelCheckpoint(dirpath=run / "ckpt", save_top_k=-1, every_n_epochs=1)
    ran = []

    class Count(pl.Callback):
        def on_train_batch_end(self, *args):
            ran.append(1)

    _trainer(run, [resumed_cb, ckpt2, Count()], epochs).fit(resumed, *_loaders(x, y),
                                                            ckpt_path=str(path))
    assert len(ran) == total - 2 * STEPS_PER_EPOCH  # it went on from epoch 2, not from scratch

    # bitwise: weights, optimizer state, the LR, the EMA average, every logged table
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    sa, sb = full.trainer.optimizers[0].state_dict(), resumed.trainer.optimizers[0].state_dict()
    assert all(torch.equal(sa["state"][k]["exp_avg_sq"], sb["state"][k]["exp_avg_sq"]) for k in sa["state"])
    assert sb["param_groups"][0]["name"] == "net"
    assert sb["param_groups"][0]["lr"] == sa["param_groups"][0]["lr"]
    ema_a, ema_b = full_cb.callbacks[-1].average, resumed_cb.callbacks[-1].average
    assert ema_a.num_averaged == ema_b.num_averaged == total
    assert all(torch.equal(u, v) for u, v in zip(ema_a.averages, ema_b.averages))
    assert full_cb.history.steps == resumed_cb.history.steps
    assert full_cb.history.steps["step"] == list(range(1, total + 1))
    for key in ("grad_norm", "activations", "update_ratio", "hyperparameters"):
        assert full_cb.history.monitors[key] == resumed_cb.history.monitors[key], key
    assert full_cb.history.monitors["grad_norm"]["step"] == list(range(total))
    ea, eb = full_cb.history.epochs, resumed_cb.history.epochs
    assert ea["epoch"] == eb["epoch"] == [1, 2, 3, 4]
    assert ea["val_loss"] == eb["val_loss"] and ea["train_loss"] == eb["train_loss"]
    # the lr column is the schedule's value at each step (warmup 2 steps, then cosine)
    lr = S.warmup(S.cosine(3e-2, total=total - 2), steps=2)
    assert resumed_cb.history.steps["lr"] == [lr(t) for t in range(total)]

    # the files descend doctor reads, written whole again by the resumed run
    hist = load_histories(run)[run.name]
    assert hist["steps"]["step"] == list(range(1, total + 1))
    assert hist["epochs"]["val_loss"] == pytest.approx(eb["val_loss"], rel=1e-15)
    assert json.loads((run / "monitors.json").read_text())["grad_norm"]["step"] == list(range(total))
    assert isinstance(doctor(run)[run.name], list)
    assert descend_main(["doctor", str(run)]) == 0


def test_the_doctor_finds_dead_units_in_a_lightning_run(tmp_path, capsys):
    x, y = _data()
    model = Net(lambda m: do.SGD(m.parameters(), lr=0.1), 8, bias=-50.0)  # every ReLU unit off
    _trainer(tmp_path, [DescendCallback(interval=1, directory=tmp_path)], 2,
             enable_checkpointing=False).fit(model, *_loaders(x, y))
    assert "dead_units" in [f.code for f in doctor(tmp_path)[tmp_path.name]]
    capsys.readouterr()
    assert descend_main(["doctor", str(tmp_path)]) == 0
    assert "Dead units" in capsys.readouterr().out


def test_early_stopping_stops_lightning_and_restores_the_best_weights(tmp_path):
    x, y = _data()
    # validation labels are the training labels flipped: the better the fit, the worse
    # the validation loss, so it is lowest after epoch 1
    model = Net(lambda m: do.SGD(m.parameters(), lr=0.5), 40)
    es = EarlyStopping(monitor="val_loss", patience=1)
    best = {}

    class KeepBest(pl.Callback):  # what the weights were at each epoch end
        def on_train_epoch_end(self, trainer, module):
            best[trainer.current_epoch + 1] = [p.detach().clone() for p in module.parameters()]

    trainer = _trainer(tmp_path, [DescendCallback([es], directory=tmp_path), KeepBest()], 10,
                       enable_checkpointing=False)
    trainer.fit(model, *_loaders(x, y, val_y=1 - y))
    assert es.best_epoch == 1 and es.stopped_epoch == 2 == trainer.current_epoch
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), best[es.best_epoch]))


def test_nan_guard_skips_the_bad_step_under_lightning(tmp_path):
    x, y = _data()
    x[5] = math.nan  # one poisoned example: the batch holding it gives NaN gradients
    model = Net(lambda m: do.SGD(m.parameters(), lr=0.1), 8)
    guard = NanGuard()
    cb = DescendCallback([guard], directory=tmp_path)
    _trainer(tmp_path, [cb], 2, enable_checkpointing=False).fit(model, *_loaders(x, y))
    assert guard.events == 2  # one bad batch per epoch
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_loss_feedback_updates_the_sampler_in_lightning(tmp_path):
    x, y = _data()
    sampler = LossProportionalSampler(N, mix=0.0)
    model = Net(lambda m: do.SGD(m.parameters(), lr=0.1), 8)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16,
                                        sampler=sampler)
    cb = DescendCallback([LossFeedback(sampler, (x, y))], directory=tmp_path,
                         loss_fn=torch.nn.CrossEntropyLoss())
    _trainer(tmp_path, [cb], 1, enable_checkpointing=False).fit(model, train, _loaders(x, y)[1])
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    assert torch.allclose(sampler.losses.float(), expected, atol=1e-6)


@pytest.mark.parametrize("name, kwargs", [("l2_penalty", {"alpha": 0.1}),
                                          ("input_noise", {"sigma": 0.1})])
def test_callbacks_that_change_the_loss_or_the_batch_are_refused(tmp_path, name, kwargs):
    from descend.regularize import REGULARIZERS

    x, y = _data()
    model = Net(lambda m: do.SGD(m.parameters(), lr=0.1), 8)
    cb = DescendCallback([REGULARIZERS.create(name, **kwargs)], directory=tmp_path)
    with pytest.raises(RuntimeError, match="training_step"):
        _trainer(tmp_path, [cb], 1, enable_checkpointing=False).fit(model, *_loaders(x, y))
