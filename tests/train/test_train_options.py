"""Trainer(precision=, accumulate=, compile=): each equals a hand-written torch loop doing the
same, and each resumes bitwise from a checkpoint taken mid-epoch."""

import pytest
import torch
import torch.nn.functional as F

import descend.io
from descend.train import Callback, Trainer
from descend.train.checkpoint import CheckpointCallback, latest_checkpoint, restore
from descend.train.checkpoint import save_checkpoint
from descend.io import load_weights


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    monkeypatch.setattr(descend.io, "FSYNC", False)


def data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def mlp(dropout=0.0):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 16), torch.nn.ReLU()]
    if dropout:
        layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers, torch.nn.Linear(16, 2))


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def hand_loop(model, x, y, *, steps_per_epoch, epochs, batch, k=1, dtype=None, scaler=None,
              compile=False, lr=0.1):
    """SGD + a per-step LambdaLR, in order (no shuffling), as a user writes it: autocast
    around forward and loss, ``scaler.scale(loss).backward()``, loss/k per batch, and a
    step on the partial accumulation at the epoch's end."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + 0.1 * t))
    fwd = torch.compile(model) if compile else model
    n = x.shape[0]
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]
    steps = 0
    for _ in range(epochs):
        for w in range(0, len(batches), k):
            opt.zero_grad(set_to_none=True)
            for xb, yb in batches[w:w + k]:
                with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                    loss = F.cross_entropy(fwd(xb), yb)
                loss = loss / k if k > 1 else loss
                (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                before = scaler.get_scale()
                scaler.step(opt)
                scaler.update()
                if scaler.get_scale() < before:
                    continue  # skipped: not a step
            else:
                opt.step()
            sched.step()
            steps += 1
    return steps


def trainer_for(model, *, batch, lr=0.1, callbacks=(), **kw):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + 0.1 * t))
    return Trainer(model, opt, schedulers=[sched], batch_size=batch, shuffle=False, progress=False,
                   callbacks=list(callbacks), **kw)


# 40 examples in batches of 4: 10 batches an epoch; with accumulate=4 that is 3 optimizer
# steps an epoch (4 + 4 + the partial 2).
CASES = {
    "bf16-mixed": dict(precision="bf16-mixed"),
    "16-mixed": dict(precision="16-mixed"),
    "accumulate4": dict(accumulate=4),
    "bf16+accumulate4": dict(precision="bf16-mixed", accumulate=4),
}


def _loop_kwargs(case):
    kw = CASES[case]
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(kw.get("precision"))
    scaler = torch.amp.GradScaler("cpu") if kw.get("precision") == "16-mixed" else None
    return dict(dtype=dtype, scaler=scaler, k=kw.get("accumulate", 1))


@pytest.mark.parametrize("case", list(CASES))
def test_equals_a_hand_written_loop(case):
    # Tolerance: none. The trainer runs the same operations in the same order as the loop
    # (the same autocast regions, the same loss/k, the same accumulation order), so the
    # weights are bitwise equal, bf16/fp16 rounding included.
    x, y = data()
    ref = mlp()
    loop_steps = hand_loop(ref, x, y, steps_per_epoch=10, epochs=2, batch=4, **_loop_kwargs(case))
    t = trainer_for(mlp(), batch=4, **CASES[case])
    h = t.fit((x, y), epochs=2)
    for a, b in zip(params(ref), params(t.model)):
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b)
    k = CASES[case].get("accumulate", 1)
    assert t.global_step == loop_steps == 2 * -(-10 // k)
    assert h.steps["step"] == list(range(1, t.global_step + 1))
    assert t.schedulers[0].last_epoch == t.global_step  # schedules count optimizer steps
    assert len(h.epochs["train_loss"]) == 2


def test_accumulation_equals_one_large_batch():
    # 4 batches of 4 with loss/4 = one batch of 16 (a mean loss), up to float32 summation
    # order: rtol 1e-5 on 5 SGD steps.
    x, y = data(80)
    a = trainer_for(mlp(), batch=4, accumulate=4)
    a.fit((x, y), epochs=1)
    b = trainer_for(mlp(), batch=16)
    b.fit((x, y), epochs=1)
    assert a.global_step == b.global_step == 5
    for p, q in zip(params(a.model), params(b.model)):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # the logged loss of a step is the mean of its batches' losses
    torch.testing.assert_close(torch.tensor(a.history.steps["loss"][0]),
                               torch.tensor(b.history.steps["loss"][0]), rtol=1e-5, atol=1e-6)


class Record(Callback):
    def __init__(self):
        self.begins, self.after, self.ends, self.norms = 0, 0, 0, []

    def on_batch_begin(self, trainer, batch):
        self.begins += 1

    def on_after_backward(self, trainer):
        self.after += 1
        g = [p.grad for p in trainer.model.parameters()]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g)))))

    def on_batch_end(self, trainer, logs):
        self.ends += 1


def test_hooks_count_batches_and_steps_and_see_unscaled_gradients():
    x, y = data()
    rec = Record()
    t = trainer_for(mlp(), batch=4, accumulate=4, precision="16-mixed", callbacks=[rec])
    h = t.fit((x, y), epochs=1)
    assert rec.begins == 10 and rec.after == rec.ends == 3 == t.global_step
    # the norms the callbacks read are those of the unscaled gradients (scale 65536)
    assert rec.norms == pytest.approx(h.steps["grad_norm"], rel=1e-6)
    assert max(rec.norms) < 100


def test_a_step_the_grad_scaler_skips_is_not_an_optimizer_step():
    x, y = data()
    t = trainer_for(mlp(), batch=4, precision="16-mixed")
    # float16 holds up to 65504 = 2^16: scaled by 2^24, the gradients overflow to Inf
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
    before = params(t.model)
    h = t.fit((x, y), epochs=1)
    # the scale halves per skipped step until float16 holds the gradients
    assert 0 < t.skipped_steps < 10 and t.global_step == 10 - t.skipped_steps
    assert t.schedulers[0].last_epoch == t.global_step
    assert h.steps["step"] == list(range(1, t.global_step + 1))
    assert t.scaler.get_scale() == 2.0 ** (24 - t.skipped_steps)
    assert len(h.epochs["train_loss"]) == 1
    # a run that skipped only: weights untouched
    u = trainer_for(mlp(), batch=4, precision="16-mixed")
    u.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)
    u.fit((x[:8], y[:8]), epochs=1)
    assert u.global_step == 0 and u.skipped_steps == 2
    assert all(torch.equal(a, b) for a, b in zip(before, params(u.model)))


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, logs):
        if trainer.global_step == self.step:
            raise Crash


def _run(directory, kw, crash=None, epochs=3):
    x, y = data()
    ck = CheckpointCallback(directory, every_n_steps=1, keep_last=2)
    cbs = [ck] + ([CrashAt(crash)] if crash is not None else [])
    t = trainer_for(mlp(dropout=0.2), batch=4, callbacks=cbs, lr=0.05, **kw)
    t.shuffle = True
    try:
        t.fit((x, y), (x[:12], y[:12]), epochs=epochs)
    finally:
        ck._restore_handlers()
    return t


@pytest.mark.parametrize("case", list(CASES))
def test_resumes_bitwise_mid_epoch(tmp_path, case):
    kw = CASES[case]
    ref = _run(tmp_path / "ref", kw)
    crash = 4 if "accumulate" in kw else 13  # mid-epoch 2 either way
    with pytest.raises(Crash):
        _run(tmp_path / "cut", kw, crash=crash)
    torch.manual_seed(123)  # a new process would start from other RNG states
    x, y = data()
    resumed = trainer_for(mlp(dropout=0.2), batch=4, lr=0.05,
                          callbacks=[CheckpointCallback(tmp_path / "cut", every_n_steps=1, keep_last=2)], **kw)
    resumed.shuffle = True
    restore(resumed, latest_checkpoint(tmp_path / "cut"))
    assert resumed.global_step == crash and resumed.epoch == 1 and 0 < resumed.batches_done < 10
    try:
        resumed.fit((x, y), (x[:12], y[:12]), epochs=3 - resumed.epoch)
    finally:
        resumed.callbacks[0]._restore_handlers()
    assert resumed.global_step == ref.global_step
    for a, b in zip(params(ref.model), params(resumed.model)):
        assert torch.equal(a, b)
    assert resumed.history.steps["loss"] == ref.history.steps["loss"]
    assert resumed.history.epochs["train_loss"] == ref.history.epochs["train_loss"]
    if ref.scaler is not None:
        assert resumed.scaler.state_dict() == ref.scaler.state_dict()


def test_grad_scaler_state_is_checkpointed(tmp_path):
    x, y = data()
    t = trainer_for(mlp(), batch=4, precision="16-mixed")
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24, growth_interval=3)
    t.fit((x, y), epochs=1)
    path = save_checkpoint(t, tmp_path)
    u = trainer_for(mlp(), batch=4, precision="16-mixed")
    restore(u, path)
    assert u.scaler.state_dict() == t.scaler.state_dict()
    assert u.scaler.get_scale() != 2.0 ** 24 and u.skipped_steps == t.skipped_steps > 0
    # a float32 trainer resumes a 16-mixed checkpoint (the scaler's state is not needed)
    v = trainer_for(mlp(), batch=4)
    restore(v, path)
    assert v.global_step == t.global_step and v.scaler is None


def test_option_errors():
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^`precision` must be one of '32', '32-true', 'bf16-mixed', "
                                         r"'16-mixed'. Received: precision='fp8'$"):
        Trainer(m, opt, precision="fp8")
    with pytest.raises(ValueError, match=r"`accumulate` must be an integer >= 1. Received: accumulate=0"):
        Trainer(m, opt, accumulate=0)
    with pytest.raises(TypeError, match="`accumulate`"):
        Trainer(m, opt, accumulate=2.0)
    with pytest.raises(TypeError, match=r"`compile` must be False, True or a dict"):
        Trainer(m, opt, compile="yes")
    with pytest.raises(ValueError, match=r"`compile` must be a dict of torch.compile keyword arguments"):
        Trainer(m, opt, compile={"modes": "max-autotune"})
    assert Trainer(m, opt, precision=32).precision == "32"
    assert Trainer(m, opt, precision="32-true").precision == "32-true"


def test_16_mixed_without_a_cpu_grad_scaler_is_a_clear_error(monkeypatch):
    class NoCPU:
        def __init__(self, device):
            raise RuntimeError(f"GradScaler is not supported on {device}")
    monkeypatch.setattr(torch.amp, "GradScaler", NoCPU)
    m = mlp()
    with pytest.raises(ValueError, match=r"'16-mixed' needs a torch.amp.GradScaler for cpu.*use CUDA"):
        Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), precision="16-mixed")


def test_bf16_evaluate_and_predict_run_under_autocast():
    x, y = data()
    t = trainer_for(mlp(), batch=4, precision="bf16-mixed")
    assert t.predict(x).dtype == torch.bfloat16  # the last Linear ran in bfloat16
    assert trainer_for(mlp(), batch=4).predict(x).dtype == torch.float32
    ev = t.evaluate((x, y))
    assert ev["loss"] == pytest.approx(trainer_for(mlp(), batch=4).evaluate((x, y))["loss"], rel=2e-2)


@pytest.mark.slow
def test_compiled_model_equals_the_eager_loop_and_saves_plain_keys(tmp_path):
    # Tolerance: inductor fuses and reorders float32 operations, so the compiled run equals
    # the eager loop's to 1e-5 (and the compiled loop's bitwise: the same compiled graph).
    x, y = data(24)
    eager = mlp()
    hand_loop(eager, x, y, steps_per_epoch=6, epochs=1, batch=4)
    compiled_loop = mlp()
    hand_loop(compiled_loop, x, y, steps_per_epoch=6, epochs=1, batch=4, compile=True)
    t = trainer_for(mlp(), batch=4, compile={"dynamic": False})
    ck = CheckpointCallback(tmp_path / "ck", every_n_steps=3, keep_last=5)
    t.callbacks.append(ck)
    try:
        t.fit((x, y), epochs=1)
    finally:
        ck._restore_handlers()
    for a, b, c in zip(params(eager), params(compiled_loop), params(t.model)):
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-5)
        assert torch.equal(c, b)
    keys = set(mlp().state_dict())
    assert set(t.model.state_dict()) == keys  # trainer.model is the uncompiled module
    path = latest_checkpoint(tmp_path / "ck")
    assert set(load_weights(path / "model.safetensors", mlp().state_dict())) == keys
    # resume: from the step-3 checkpoint into a fresh compiled trainer, bitwise
    first = sorted((tmp_path / "ck").glob("ckpt-*"))[0]
    rck = CheckpointCallback(tmp_path / "ck2", every_n_steps=3)
    r = trainer_for(mlp(), batch=4, compile=True, callbacks=[rck])
    restore(r, first)
    assert r.global_step == 3
    try:
        r.fit((x, y), epochs=1 - r.epoch)
    finally:
        rck._restore_handlers()
    for a, b in zip(params(t.model), params(r.model)):
        assert torch.equal(a, b)


def test_the_compiled_forward_follows_a_replaced_model():
    # prepare_fit (descend train --nproc) replaces trainer.model by its DDP wrapper after
    # the Trainer is built: the forward pass must go through the wrapper (its all-reduce)
    m = mlp()
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), compile=True)
    first = t._forward
    assert first is t._forward and first._orig_mod is m  # compiled once, lazily
    wrapper = torch.nn.Sequential(m)
    t.model = wrapper
    assert t._forward._orig_mod is wrapper
    plain = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1))
    plain.model = wrapper
    assert plain._forward is wrapper
