"""descend in a Hugging Face Trainer: optimizer, LRScheduler, DescendCallback, resume, the doctor.

A tiny GPT-2 built from a config (random weights, no download, no tokenizer)."""

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import descend.optim as do  # noqa: E402
from descend import schedules as S  # noqa: E402
from descend.analysis.doctor import doctor, load_histories  # noqa: E402
from descend.cli import main as descend_main  # noqa: E402
from descend.data.samplers import LossFeedback  # noqa: E402
from descend.integrations.transformers import STATE_FILE, DescendCallback  # noqa: E402
from descend.optim import EMA  # noqa: E402
from descend.regularize import REGULARIZERS  # noqa: E402
from descend.train import (ActivationMonitor, EarlyStopping, GradientNormMonitor,  # noqa: E402
                           HyperparameterMonitor, NanGuard, UpdateRatioMonitor)

VOCAB, LEN = 64, 16
EPOCHS, STEPS_PER_EPOCH, BATCH = 3, 4, 4
TOTAL = EPOCHS * STEPS_PER_EPOCH


def _model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=LEN,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, LEN), generator=g)
    ids[:, 1::2] = ids[:, 0::2]  # a pattern to learn: every token repeats the one before
    return [{"input_ids": x, "labels": x.clone()} for x in ids]


def _callbacks():
    return [GradientNormMonitor(1), ActivationMonitor(1, bins=0), UpdateRatioMonitor(2),
            HyperparameterMonitor(1), NanGuard(), EMA(decay=0.9, apply_at_end=False)]


class Count(transformers.TrainerCallback):
    """Counts the optimizer steps this Trainer ran."""

    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kw):
        self.steps += 1


def _trainer(out, callbacks, model, *, stop_at=None, counter=None, **kwargs):
    opt = do.AdamW(model.parameters(), lr=1.0, weight_decay=0.01)
    sched = S.LRScheduler(opt, S.warmup(S.cosine(3e-3, total=TOTAL - 2), steps=2))
    settings = dict(num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH, logging_steps=1,
                    eval_strategy="epoch", save_strategy="steps", save_steps=3, report_to=[],
                    use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    settings.update(kwargs)
    args = transformers.TrainingArguments(str(out), **settings)
    extra = [counter] if counter is not None else []
    if stop_at is not None:
        class Stop(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == stop_at:
                    control.should_training_stop = True
        extra.append(Stop())
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_data(BATCH * STEPS_PER_EPOCH, 1),
                                   eval_dataset=_data(8, 2), optimizers=(opt, sched),
                                   callbacks=callbacks + extra)
    trainer.remove_callback(transformers.PrinterCallback)
    return trainer


def test_resume_from_checkpoint_equals_the_uninterrupted_run_and_the_doctor_reads_it(tmp_path):
    full_cb = DescendCallback(_callbacks())
    full_model = _model()
    _trainer(tmp_path / "full", [full_cb], full_model).train()

    out = tmp_path / "run"
    _trainer(out, [DescendCallback(_callbacks())], _model(), stop_at=6).train()
    ckpt = out / "checkpoint-6"  # mid-epoch 2 (4 steps an epoch)
    assert (ckpt / "scheduler.pt").exists() and (ckpt / STATE_FILE).exists()
    for name in ("scheduler.pt", "optimizer.pt", STATE_FILE):
        torch.load(ckpt / name, weights_only=True)  # plain data, as the Trainer loads them

    resumed_cb, count = DescendCallback(_callbacks()), Count()
    resumed_model = _model()
    trainer = _trainer(out, [resumed_cb], resumed_model, counter=count)
    trainer.train(resume_from_checkpoint=str(ckpt))  # the default weights_only loading
    assert count.steps == TOTAL - 6  # it went on from step 6, it did not start again

    for (n, a), b in zip(full_model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(a, b), n
    assert trainer.lr_scheduler.last_epoch == TOTAL
    ema_a, ema_b = full_cb.callbacks[-1].average, resumed_cb.callbacks[-1].average
    assert ema_a.num_averaged == ema_b.num_averaged == TOTAL
    assert all(torch.equal(u, v) for u, v in zip(ema_a.averages, ema_b.averages))
    sa, sb = full_cb.history.steps, resumed_cb.history.steps
    assert sa["step"] == sb["step"] == list(range(1, TOTAL + 1))
    assert sa["lr"] == sb["lr"]
    lr = S.warmup(S.cosine(3e-3, total=TOTAL - 2), steps=2)
    assert sb["lr"] == [lr(t) for t in range(TOTAL)]
    assert sa["loss"] == sb["loss"] and sa["grad_norm"] == sb["grad_norm"]
    for key in ("grad_norm", "activations", "update_ratio", "hyperparameters"):
        assert full_cb.history.monitors[key] == resumed_cb.history.monitors[key], key
    ea, eb = full_cb.history.epochs, resumed_cb.history.epochs
    assert ea["epoch"] == eb["epoch"] == [1, 2, 3]
    assert sorted(eb) == ["epoch", "lr", "step", "train_loss", "val_loss"]
    assert ea["val_loss"] == eb["val_loss"] and ea["train_loss"] == eb["train_loss"]

    hist = load_histories(out)[out.name]
    assert hist["steps"]["step"] == list(range(1, TOTAL + 1))
    assert hist["epochs"]["val_loss"] == pytest.approx(eb["val_loss"], rel=1e-15)
    assert json.loads((out / "monitors.json").read_text())["grad_norm"]["step"] == list(range(TOTAL))
    assert isinstance(doctor(out)[out.name], list)
    assert descend_main(["doctor", str(out)]) == 0


def test_early_stopping_stops_the_hf_trainer(tmp_path):
    # validation never improves by min_delta=10: stop after patience=1 epoch
    es = EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0, restore_best=False)
    trainer = _trainer(tmp_path, [DescendCallback([es])], _model(), save_strategy="no",
                       num_train_epochs=5)
    trainer.train()
    assert es.stopped_epoch == 2
    assert trainer.state.global_step == 2 * STEPS_PER_EPOCH
    assert load_histories(tmp_path)[tmp_path.name]["epochs"]["epoch"] == [1, 2]


def test_nan_guard_skips_the_step_under_hf(tmp_path):
    guard = NanGuard()

    class Poison(transformers.TrainerCallback):  # NaN gradients at step 3 only
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if state.global_step == 2:
                next(model.parameters()).grad.fill_(float("nan"))

    model = _model()
    trainer = _trainer(tmp_path, [Poison(), DescendCallback([guard])], model, save_strategy="no",
                       num_train_epochs=1, max_grad_norm=0.0)
    trainer.train()
    assert guard.events == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("make", [lambda: REGULARIZERS.create("l2_penalty", alpha=0.1),
                                  lambda: REGULARIZERS.create("input_noise", sigma=0.1),
                                  lambda: LossFeedback()])
def test_callbacks_that_need_the_batch_or_the_loss_are_refused(make):
    with pytest.raises(ValueError, match="Hugging Face Trainer"):
        DescendCallback([make()])
    DescendCallback([ActivationMonitor(1), NanGuard(), EMA()])  # these only read
