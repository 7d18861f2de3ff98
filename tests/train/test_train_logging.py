import csv
import os

import pytest
import torch

from descend.train import CALLBACKS, CSVLogger, Trainer
from descend.train.metrics import METRICS, Mean, accuracy, top_k_accuracy


def fit_with(cb, epochs=2):
    x = torch.randn(12, 2)
    y = (x[:, 0] > 0).long()
    m = torch.nn.Linear(2, 2)
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5), batch_size=4,
                callbacks=[cb], progress=False)
    t.fit((x, y), (x, y), epochs=epochs)
    return t


def test_csv_logger_writes_steps_and_epochs(tmp_path):
    t = fit_with(CSVLogger(tmp_path / "log"))
    t.fit((torch.randn(4, 2), torch.zeros(4, dtype=torch.long)), epochs=1)  # continues, appends
    with open(tmp_path / "log" / "steps.csv") as f:
        steps = list(csv.DictReader(f))
    with open(tmp_path / "log" / "epochs.csv") as f:
        epochs = list(csv.DictReader(f))
    assert [int(r["step"]) for r in steps] == list(range(1, 8))
    assert [float(r["loss"]) for r in steps] == pytest.approx(t.history.steps["loss"])
    assert all(float(r["momentum"]) == 0.5 for r in steps)
    assert [int(r["epoch"]) for r in epochs] == [1, 2, 3]
    assert epochs[2]["val_acc"] == ""  # no validation data in the third epoch
    assert 0 <= float(epochs[0]["val_acc"]) <= 1


def test_tensorboard_logger_writes_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    cb = CALLBACKS.create("tensorboard", log_dir=str(tmp_path / "tb"))
    fit_with(cb)
    cb.close()
    files = os.listdir(tmp_path / "tb")
    assert any(f.startswith("events.out.tfevents") for f in files)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert len(acc.Scalars("step/loss")) == 6
    assert [e.step for e in acc.Scalars("epoch/val_acc")] == [1, 2]


def test_logger_arguments_are_checked():
    with pytest.raises(TypeError, match="`directory` must be a path. Received: directory=3"):
        CSVLogger(3)


def test_metrics_are_batch_sums():
    out = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    y = torch.tensor([0, 1, 0, 1])
    assert accuracy(out, y).item() == 2
    assert top_k_accuracy(out, y, k=2).item() == 4
    assert top_k_accuracy(out, y, k=1).item() == 2
    assert accuracy(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 1])).item() == 1
    assert set(METRICS.names()) >= {"accuracy", "top_k_accuracy"}
    m = Mean()
    assert m.value() != m.value()  # NaN before any batch
    m.add(torch.tensor(3.0), 4)
    m.add(torch.tensor(1.0), 1)  # a smaller last batch counts with its true weight
    assert m.value() == pytest.approx(4 / 5)
