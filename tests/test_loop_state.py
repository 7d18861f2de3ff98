"""descend.callbacks.LoopState: descend's callbacks in a loop other than the Trainer."""

import math

import pytest
import torch

from descend.callbacks import Callback, LoopHistory, LoopState
from descend.train import (ActivationMonitor, GradientNormMonitor, HyperparameterMonitor, Trainer,
                           UpdateRatioMonitor)


def _monitors():
    return [GradientNormMonitor(2), ActivationMonitor(2, bins=4), UpdateRatioMonitor(3),
            HyperparameterMonitor(1)]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def test_monitors_in_a_hand_written_loop_equal_the_trainers():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, generator=g), torch.randint(0, 2, (40,), generator=g)

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    inside = _monitors()
    Trainer(model, opt, callbacks=inside, batch_size=8, shuffle=False, progress=False).fit((x, y), epochs=2)

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    outside = _monitors()
    loop = LoopState(model, opt, callbacks=outside)
    loop.call("on_fit_begin")
    for _ in range(2):
        loop.call("on_epoch_begin")
        for i in range(0, 40, 8):
            batch = loop.call("on_batch_begin", (x[i:i + 8], y[i:i + 8]))
            opt.zero_grad()
            loss = loop.call("on_loss", torch.nn.functional.cross_entropy(model(batch[0]), batch[1]), batch)
            loss.backward()
            loop.call("on_after_backward")
            opt.step()
            loop.global_step += 1
            loop.call("on_batch_end", {"loss": loss})
        loop.epoch += 1
        loop.call("on_epoch_end", {})
    loop.call("on_fit_end")

    for a, b in zip(inside, outside):
        assert a.history == b.history, type(a).__name__
        assert loop.history.monitors[b.key] is b.history
    assert inside[1].histograms == outside[1].histograms


def test_call_chains_replacements_and_rejects_unknown_hooks():
    class Double(Callback):
        def on_batch_begin(self, trainer, batch):
            return batch * 2

        def on_loss(self, trainer, loss, batch):
            return loss + 1

    class Keep(Callback):
        pass

    loop = LoopState(torch.nn.Linear(1, 1), callbacks=[Double(), Keep(), Double()])
    assert loop.call("on_batch_begin", 1) == 4
    assert loop.call("on_loss", 0, None) == 2
    assert loop.call("on_epoch_begin") is None
    assert loop.device == torch.device("cpu") and loop.optimizer is None
    with pytest.raises(ValueError, match="`hook` must be one of"):
        loop.call("on_step", None)
    with pytest.raises(TypeError, match="`callbacks` must be descend.callbacks.Callback"):
        LoopState(torch.nn.Linear(1, 1), callbacks=[object()])


def test_loop_history_pads_missing_columns():
    h = LoopHistory()
    h.append("epochs", {"epoch": 1, "train_loss": 0.5})
    h.append("epochs", {"epoch": 2, "val_loss": 0.7})
    assert h.epochs["epoch"] == [1, 2]
    assert h.epochs["train_loss"][0] == 0.5 and math.isnan(h.epochs["train_loss"][1])
    assert math.isnan(h.epochs["val_loss"][0]) and h.epochs["val_loss"][1] == 0.7
    with pytest.raises(ValueError, match="`table` must be 'steps' or 'epochs'"):
        h.append("monitors", {})
