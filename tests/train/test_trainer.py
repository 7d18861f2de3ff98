import math

import pytest
import torch
import torch.nn.functional as F

from descend.train import Callback, Trainer


def blobs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.3 + (y.float() * 2 - 1).unsqueeze(1) * 2.0
    return x, y


def make(model=None, lr=0.5, **kw):
    model = model if model is not None else torch.nn.Linear(2, 2)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=lr), progress=False, **kw)


def test_reaches_full_train_accuracy_on_separable_set():
    x, y = blobs()
    t = make(batch_size=8)
    h = t.fit((x, y), (x, y), epochs=10)
    assert t.evaluate((x, y))["acc"] == 1.0
    assert h.epochs["val_acc"][-1] == 1.0
    assert h.epochs["train_loss"][-1] < h.epochs["train_loss"][0]
    assert len(h.steps["loss"]) == 10 * 8 == t.global_step
    assert h.steps["step"] == list(range(1, 81))
    assert len(h.epochs["epoch"]) == 10
    assert all(math.isfinite(v) for v in h.steps["grad_norm"])
    assert torch.equal(t.predict(x).argmax(1), y)


class ModeRecorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.lin(x)


def test_eval_mode_and_no_grad_for_evaluation():
    x, y = blobs(16)
    m = ModeRecorder()
    t = make(m, batch_size=8)
    t.fit((x, y), (x, y), epochs=1)
    # two training batches, then one validation batch
    assert m.seen == [(True, True), (True, True), (False, False)]
    m.seen.clear()
    m.train()
    t.evaluate((x, y))
    t.predict(x)
    assert m.seen == [(False, False), (False, False)]
    assert m.training  # mode restored
    m.eval()
    t.evaluate((x, y))
    assert not m.training


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_begin(self, trainer): self.calls.append("fit_begin")
    def on_epoch_begin(self, trainer): self.calls.append("epoch_begin")

    def on_batch_begin(self, trainer, batch):
        self.calls.append("batch_begin")

    def on_loss(self, trainer, loss, batch):
        self.calls.append("loss")
        return loss

    def on_after_backward(self, trainer): self.calls.append("after_backward")
    def on_batch_end(self, trainer, logs): self.calls.append("batch_end")
    def on_epoch_end(self, trainer, logs): self.calls.append("epoch_end")
    def on_fit_end(self, trainer): self.calls.append("fit_end")


def test_hooks_called_in_documented_order():
    x, y = blobs(8)
    r = Recorder()
    make(batch_size=4, callbacks=[r]).fit((x, y), epochs=2)
    batch = ["batch_begin", "loss", "after_backward", "batch_end"]
    epoch = ["epoch_begin"] + batch * 2 + ["epoch_end"]
    assert r.calls == ["fit_begin"] + epoch * 2 + ["fit_end"]


class FailAtStep(Callback):
    def __init__(self, step, error=RuntimeError("boom")):
        self.step, self.error = step, error

    def on_batch_end(self, trainer, logs):
        if trainer.global_step == self.step:
            raise self.error


class FailingCleanup(Callback):
    def on_fit_error(self, trainer, error):
        raise ValueError("cleanup failed too")


def test_failed_fit_calls_on_fit_error_not_on_fit_end_and_reraises(tmp_path):
    import signal

    from descend.train import ActivationMonitor, CheckpointCallback

    x, y = blobs(16)
    r = Recorder()
    errors = []
    r.on_fit_error = lambda trainer, error: errors.append(error)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    mon = ActivationMonitor(interval=1)
    ckpt = CheckpointCallback(tmp_path / "ckpt", handle_signals=True)
    fail = FailAtStep(3)
    t = make(model, batch_size=4, callbacks=[mon, ckpt, r, FailingCleanup(), fail])
    with pytest.warns(RuntimeWarning, match="FailingCleanup.on_fit_error failed"):
        with pytest.raises(RuntimeError, match="boom"):
            t.fit((x, y), epochs=2)
    assert errors == [fail.error] and "fit_end" not in r.calls
    # what on_fit_begin took is given back: signal handlers, the monitor's forward hooks
    assert {s: signal.getsignal(s) for s in before} == before
    assert all(not m._forward_hooks for m in model.modules())
    # a KeyboardInterrupt goes through the same path
    r.calls.clear()
    errors.clear()
    t = make(batch_size=4, callbacks=[r, FailAtStep(1, KeyboardInterrupt())])
    with pytest.raises(KeyboardInterrupt):
        t.fit((x, y), epochs=1)
    assert len(errors) == 1 and isinstance(errors[0], KeyboardInterrupt)


class ZeroInputsAndPenalty(Callback):
    """Replaces x by zeros (so the data gradient vanishes) and adds 0.5 * c * ||w||^2."""

    def __init__(self, c):
        self.c = c
        self.logged = []
        self.grads = []

    def on_batch_begin(self, trainer, batch):
        x, y = batch
        return torch.zeros_like(x), y

    def on_loss(self, trainer, loss, batch):
        assert torch.equal(batch[0], torch.zeros_like(batch[0]))  # on_loss sees the new batch
        w = trainer.model.weight
        return loss + 0.5 * self.c * (w * w).sum()

    def on_after_backward(self, trainer):
        self.grads.append(trainer.model.weight.grad.clone())

    def on_batch_end(self, trainer, logs):
        self.logged.append(float(logs["loss"]))


def test_batch_replacement_and_on_loss_change_the_step():
    # Model w*x (no bias), MSE to y. With x replaced by 0 the data loss is mean(y^2) and its
    # gradient is 0; the objective's gradient is c*w, so SGD gives w <- w - lr*c*w.
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    cb = ZeroInputsAndPenalty(c=0.5)
    x = torch.ones(4, 1)
    y = torch.full((4, 1), 3.0)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.mse_loss,
                metrics=(), batch_size=4, callbacks=[cb], progress=False)
    h = t.fit((x, y), epochs=2)
    w0, w1 = 2.0, 2.0 - 0.1 * 0.5 * 2.0
    w2 = w1 - 0.1 * 0.5 * w1
    assert model.weight.item() == pytest.approx(w2, rel=1e-6)
    assert cb.grads[0].item() == pytest.approx(0.5 * w0, rel=1e-6)
    expected = [9.0 + 0.25 * w0 ** 2, 9.0 + 0.25 * w1 ** 2]
    assert cb.logged == pytest.approx(expected, rel=1e-6)
    assert h.steps["loss"] == pytest.approx(expected, rel=1e-6)
    # the epoch's train_loss is the data loss alone (comparable to val_loss)
    assert h.epochs["train_loss"] == pytest.approx([9.0, 9.0], rel=1e-6)


def test_same_as_hand_written_loop():
    x, y = blobs(40)
    torch.manual_seed(1)
    m1 = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    m2 = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    m2.load_state_dict(m1.state_dict())
    xd = x.double()
    o1 = torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9)
    t = Trainer(m1, o1, batch_size=16, seed=3, progress=False)
    h = t.fit((xd, y), epochs=3)

    o2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(3)
    losses, norms = [], []
    for _ in range(3):
        perm = torch.randperm(40, generator=g)
        for i in range(0, 40, 16):
            idx = perm[i:i + 16]
            o2.zero_grad()
            loss = F.cross_entropy(m2(xd[idx]), y[idx])
            loss.backward()
            norms.append(torch.cat([p.grad.flatten() for p in m2.parameters()]).norm().item())
            o2.step()
            losses.append(loss.item())
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=1e-12)
    assert h.steps["loss"] == pytest.approx(losses, rel=1e-12)
    assert h.steps["grad_norm"] == pytest.approx(norms, rel=1e-10)
    assert h.steps["momentum"] == [0.9] * 9


def test_seeded_shuffling_is_reproducible():
    x, y = blobs(32)

    def run(seed):
        torch.manual_seed(0)
        return make(batch_size=4, seed=seed).fit((x, y), epochs=2).steps["loss"]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_stop_training_and_step_schedulers():
    x, y = blobs(32)

    class StopAfter(Callback):
        def on_batch_end(self, trainer, logs):
            if trainer.global_step == 3:
                trainer.stop_training = True

    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + 0.5 * t))
    t = Trainer(m, opt, schedulers=[sched], callbacks=[StopAfter()], batch_size=4, progress=False)
    h = t.fit((x, y), epochs=5)
    assert t.global_step == 3 and t.epoch == 1
    # the logged lr is the one used by the step: e0 / (1 + k t) for t = 0, 1, 2
    assert h.steps["lr"] == pytest.approx([1.0, 1 / 1.5, 1 / 2.0])


def test_epoch_scheduler_and_batch_size_schedule():
    x, y = blobs(32)
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    t = Trainer(m, opt, schedulers=[sched], scheduler_unit="epoch",
                batch_size=lambda epoch: 8 * 2 ** epoch, progress=False)
    h = t.fit((x, y), epochs=3)
    assert h.epochs["batch_size"] == [8, 16, 32]
    assert t.global_step == 4 + 2 + 1
    assert h.steps["lr"] == [1.0] * 4 + [0.5] * 2 + [0.25]


def test_closure_optimizers_and_plain_step():
    x, y = blobs(32)
    m = torch.nn.Linear(2, 2)
    t = Trainer(m, torch.optim.LBFGS(m.parameters(), lr=0.5, max_iter=4), batch_size=32, progress=False)
    h = t.fit((x, y), epochs=3)
    assert len(h.steps["loss"]) == 3 and h.steps["loss"][-1] < h.steps["loss"][0]

    class NoClosureSGD(torch.optim.SGD):
        def step(self):  # noqa: D401 - an optimizer whose step takes no closure
            return super().step()

    m = torch.nn.Linear(2, 2)
    t = Trainer(m, NoClosureSGD(m.parameters(), lr=0.5), batch_size=8, progress=False)
    t.fit((x, y), epochs=5)
    assert t.evaluate((x, y))["acc"] == 1.0


def test_dataloader_input_and_float_targets():
    x, y = blobs(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    t = make(batch_size=8)
    h = t.fit(loader, loader, epochs=2)
    assert t.global_step == 8 and "val_acc" in h.epochs
    # regression: no accuracy
    m = torch.nn.Linear(2, 1)
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), loss_fn=F.mse_loss, progress=False)
    h = t.fit((x, y.float().unsqueeze(1)), epochs=1)
    assert "train_acc" not in h.epochs and set(t.evaluate((x, y.float().unsqueeze(1)))) == {"loss"}


@pytest.mark.parametrize("kw, match", [
    ({"batch_size": 0}, "`batch_size` must be an integer >= 1. Received: batch_size=0"),
    ({"metrics": ("acuracy",)}, "`metric` must be one of"),
    ({"scheduler_unit": "batch"}, "`scheduler_unit` must be one of 'step', 'epoch'"),
    ({"device": "tpu"}, "`device` must be"),
])
def test_bad_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match.replace("(", r"\(").replace(")", r"\)")):
        make(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="device"):
        make(device="cuda")


@pytest.mark.gpu
def test_cuda_fit_matches_classes():
    x, y = blobs()
    t = make(batch_size=8, device="cuda")
    t.fit((x, y), (x, y), epochs=10)
    assert t.evaluate((x, y))["acc"] == 1.0
    assert next(t.model.parameters()).is_cuda


@pytest.mark.parametrize("reduce_every", [64, 2])
def test_state_dict_mid_epoch_resumes_exactly(reduce_every, monkeypatch):
    import descend.train.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "_REDUCE_EVERY", reduce_every)
    x, y = blobs(40)

    def fresh():
        torch.manual_seed(0)
        m = torch.nn.Linear(2, 2)
        return make(m, lr=0.3, batch_size=8, seed=4)

    ref = fresh()
    ref.fit((x, y), epochs=2)

    saved = {}

    class SaveAndStop(Callback):
        def on_batch_end(self, trainer, logs):
            if trainer.global_step == 7:  # mid second epoch (5 batches per epoch)
                saved["trainer"] = trainer.state_dict()
                saved["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
                trainer.stop_training = True

    first = fresh()
    first.callbacks.append(SaveAndStop())
    first.fit((x, y), epochs=2)
    resumed = fresh()
    resumed.model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["trainer"])
    assert resumed.epoch == 1 and resumed.global_step == 7
    resumed.fit((x, y), epochs=1)
    assert resumed.global_step == 10
    assert resumed.history.steps["step"] == list(range(1, 11))
    assert resumed.history.steps["loss"] == ref.history.steps["loss"]
    assert resumed.history.steps["grad_norm"] == ref.history.steps["grad_norm"]
    for p, q in zip(resumed.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)


def test_per_step_records_reduced_in_chunks_equal_the_per_step_values(monkeypatch):
    # the global gradient norms are reduced every _REDUCE_EVERY steps and the epoch's sums
    # at its end: the figures are those of each step, with or without callbacks
    import descend.train.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "_REDUCE_EVERY", 2)
    x, y = blobs(40)
    x = x.double()

    class Grab(Callback):
        def __init__(self):
            self.norms, self.logged = [], []

        def on_after_backward(self, trainer):
            self.norms.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).norm().item())

        def on_batch_end(self, trainer, logs):
            self.logged.append((float(logs["grad_norm"]), float(trainer.last_grad_norm)))

    def run(callbacks):
        torch.manual_seed(0)
        m = torch.nn.Linear(2, 2).double()
        t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.3), batch_size=16,
                    callbacks=callbacks, progress=False)
        return t, t.fit((x, y), epochs=3)

    grab = Grab()
    _, h = run([grab])
    t, h2 = run([])
    assert h.steps["grad_norm"] == pytest.approx(grab.norms, rel=1e-12)
    assert [a for a, _ in grab.logged] == pytest.approx(grab.norms, rel=1e-12)
    assert [b for _, b in grab.logged] == pytest.approx(grab.norms, rel=1e-12)
    assert h2.steps == h.steps | {"time": h2.steps["time"]}
    assert float(t.last_grad_norm) == pytest.approx(grab.norms[-1], rel=1e-12)
    # train_loss: the batch losses weighted by the batch sizes (16, 16, 8)
    for e in range(3):
        losses = h.steps["loss"][3 * e:3 * e + 3]
        want = (16 * losses[0] + 16 * losses[1] + 8 * losses[2]) / 40
        assert h.epochs["train_loss"][e] == pytest.approx(want, rel=1e-12)
    # off: NaN norms, no per-step reduction
    torch.manual_seed(0)
    m = torch.nn.Linear(2, 2).double()
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.3), batch_size=16, grad_norm=False,
                progress=False)
    h3 = t.fit((x, y), epochs=1)
    assert all(math.isnan(v) for v in h3.steps["grad_norm"]) and t.last_grad_norm is None
    assert h3.steps["loss"] == h.steps["loss"][:3]


@pytest.mark.parametrize("every,elems", [(2, 1 << 20), (16, 1 << 20), (16, 40)])
def test_metrics_on_several_batches_at_once_give_the_per_batch_sums(every, elems, monkeypatch):
    # the outputs of several batches go to the metrics together (their sums add up)
    import descend.train.trainer as trainer_module

    def fit(every, elems):
        monkeypatch.setattr(trainer_module, "_METRIC_EVERY", every)
        monkeypatch.setattr(trainer_module, "_METRIC_ELEMS", elems)
        x, y = blobs(40)
        torch.manual_seed(0)
        m = torch.nn.Linear(2, 3)
        t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=16,
                    metrics=("accuracy", "top_k_accuracy"), progress=False)
        return t.fit((x, y), epochs=3).epochs

    ref = fit(1, 1 << 20)
    got = fit(every, elems)
    assert got["train_acc"] == ref["train_acc"]
    assert got["train_top_k_accuracy"] == ref["train_top_k_accuracy"]
    assert got["train_loss"] == ref["train_loss"]


def test_a_dataloader_draws_from_the_trainers_generators_not_the_global_rng():
    from descend.data.samplers import ShuffleSampler
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()
    ds = torch.utils.data.TensorDataset(x, y)
    m = torch.nn.Linear(3, 2)  # no dropout: nothing else draws from the global RNG

    def orders(loader, epochs=2):
        seen = []

        class Record(Callback):
            def on_batch_begin(self, trainer, batch):
                seen.append(batch[1].tolist())

        t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[Record()], seed=7)
        before = torch.get_rng_state()
        t.fit(loader, epochs=epochs)
        assert torch.equal(torch.get_rng_state(), before)  # the global RNG was not drawn from
        return seen, t

    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    a, t = orders(loader)
    assert loader.generator is t.worker_generator and loader.sampler.generator is t.sampler_generator
    b, _ = orders(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True))
    assert a == b and a[:5] != a[5:]  # seeded by the trainer; a new order each epoch
    own = torch.Generator().manual_seed(3)  # a user's generator is kept
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=own)
    orders(loader)
    assert loader.generator is own
    # a sampler with set_epoch is told the epoch: a fresh trainer at epoch 1 draws epoch 1's order
    s = ShuffleSampler(40, seed=0)
    list(s)  # iterated once before the fit: without set_epoch the fit would start at epoch 1
    c, _ = orders(torch.utils.data.DataLoader(ds, batch_size=8, sampler=s))

    def epoch_order(e):
        perm = torch.randperm(40, generator=torch.Generator().manual_seed(e))
        return [y[perm[i:i + 8]].tolist() for i in range(0, 40, 8)]

    assert s.epoch == 1 and c == epoch_order(0) + epoch_order(1)
