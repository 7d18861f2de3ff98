"""Checkpoints: exact resume (in process and after kill -9), safe and atomic files, the NaN guard."""

import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import descend.io
from descend.io import CorruptFileError, StateMismatchError, UnsafeFileError
from descend.train import CALLBACKS, Callback, Trainer
from descend.train.checkpoint import (CheckpointCallback, NanGuard, latest_checkpoint,
                                      list_checkpoints, restore, save_checkpoint)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import resume_job  # noqa: E402


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    # Atomicity (rename) is what a kill tests; fsync only matters for power loss and is slow.
    monkeypatch.setattr(descend.io, "FSYNC", False)


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Crash(Exception):
    pass


class CrashAt(Callback):
    """Dies right after the given step (its checkpoint written), like a killed process."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer, logs):
        if trainer.global_step == self.step:
            raise Crash


def test_registered():
    assert "checkpoint" in CALLBACKS and "nan_guard" in CALLBACKS


@pytest.mark.parametrize("stop_step", [3, 6, 13])  # mid-epoch, last batch of an epoch, later
def test_resume_in_process_is_bitwise(tmp_path, stop_step):
    ref = resume_job.run(tmp_path / "ref")
    trainer, train, val = resume_job.build(tmp_path / "cut")
    trainer.callbacks.append(CrashAt(stop_step))
    with pytest.raises(Crash):
        trainer.fit(train, val, epochs=resume_job.EPOCHS)
    trainer.callbacks[2]._restore_handlers()  # what process exit would do
    torch.manual_seed(123)  # a new process would start from other RNG states
    resumed, train, val = resume_job.build(tmp_path / "cut")
    resumed.callbacks.append(CrashAt(-1))
    manifest = restore(resumed, latest_checkpoint(tmp_path / "cut"))
    assert manifest["step"] == stop_step == resumed.global_step
    resumed.fit(train, val, epochs=resume_job.EPOCHS - resumed.epoch)
    _assert_bitwise(_weights(ref), _weights(resumed))
    assert resumed.global_step == ref.global_step
    assert resumed.optimizer.param_groups[0]["lr"] == ref.optimizer.param_groups[0]["lr"]
    assert resumed.callbacks[1].state_dict() == ref.callbacks[1].state_dict()  # monitor counters
    assert resumed.history.epochs["val_loss"] == ref.history.epochs["val_loss"]


def _job(args, env_extra=None):
    env = dict(os.environ, DESCEND_NO_FSYNC="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, str(HERE / "resume_job.py"), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_at_random_steps_then_resume_is_bitwise(tmp_path):
    reference = _weights(resume_job.run(tmp_path / "ref"))
    rng = random.Random(2024)
    trials = [("SIGKILL", rng.randint(2, 20)), ("SIGKILL", rng.randint(2, 20)), ("SIGTERM", rng.randint(2, 20))]
    for i, (sig, target) in enumerate(trials):
        d, out = tmp_path / f"run{i}", tmp_path / f"out{i}.pt"
        p = _job([d, out], {"DESCEND_TEST_STEP_SLEEP": "0.05"})
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until training reached the target step
            last = latest_checkpoint(d)
            if last is not None and int(last.name.split("-s")[1]) >= target:
                break
            time.sleep(0.01)
        time.sleep(rng.random() * 0.05)  # land anywhere in a step, a save included
        p.send_signal(getattr(signal, sig))
        _, err = p.communicate(timeout=60)
        if sig == "SIGTERM":  # saved a checkpoint, then exited with 128 + 15
            assert p.returncode == 143, err.decode()[-2000:]
            assert b"saved checkpoint" in err
        else:
            assert p.returncode == -signal.SIGKILL
        assert not out.exists()  # it really was interrupted
        r = _job([d, out, "--resume"])
        _, err = r.communicate(timeout=120)
        assert r.returncode == 0, err.decode()[-2000:]
        _assert_bitwise(reference, torch.load(out, weights_only=True))


def test_truncated_or_corrupted_checkpoint_is_a_clear_error_and_previous_is_intact(tmp_path):
    trainer, train, val = resume_job.build(tmp_path)
    trainer.fit(train, val, epochs=1)
    older, newest = list_checkpoints(tmp_path)[-2:]
    f = newest / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    fresh, _, _ = resume_job.build(tmp_path)
    with pytest.raises(CorruptFileError) as e:
        restore(fresh, newest)
    assert str(f) in str(e.value) and f"previous checkpoint {older} is intact" in str(e.value)
    restore(fresh, older)  # the previous one still loads
    g = older / "state.pt"
    raw = bytearray(g.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped bit that torch.load alone would not notice
    g.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="state.pt is corrupted or truncated"):
        restore(fresh, older)


def test_failed_save_leaves_previous_checkpoint_untouched(tmp_path, monkeypatch):
    trainer, train, val = resume_job.build(tmp_path)
    trainer.fit(train, val, epochs=1)
    before = {p.name: sorted(x.read_bytes() for x in p.iterdir()) for p in list_checkpoints(tmp_path)}
    import descend.train.checkpoint as ck

    def fail_midway(path, state):
        Path(path).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(ck, "save_state", fail_midway)
    trainer.global_step += 1
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(trainer, tmp_path)
    after = {p.name: sorted(x.read_bytes() for x in p.iterdir()) for p in list_checkpoints(tmp_path)}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_checkpoint_with_code_running_pickle_is_refused(tmp_path):
    trainer, train, val = resume_job.build(tmp_path)
    trainer.fit(train, val, epochs=1)
    path = latest_checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "x": _Payload(marker)}, path / "state.pt")
    manifest = json.loads((path / "manifest.json").read_text())
    import hashlib
    manifest["sha256"]["state.pt"] = hashlib.sha256((path / "state.pt").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    fresh, _, _ = resume_job.build(tmp_path)
    with pytest.raises(UnsafeFileError, match="state.pt was refused"):
        restore(fresh, path)
    assert not marker.exists()
    with pytest.raises(Exception):  # control: unrestricted unpickling would have run it
        pickle.loads(pickle.dumps(_Payload(marker)))["x"]
    assert marker.exists()


def test_weights_of_another_model_name_the_mismatch(tmp_path):
    trainer, train, val = resume_job.build(tmp_path)
    trainer.fit(train, val, epochs=1)
    other = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(8, 2))
    t2 = Trainer(other, torch.optim.Adam(other.parameters()), callbacks=trainer.callbacks,
                 schedulers=trainer.schedulers)
    with pytest.raises(StateMismatchError, match=r"shape of '0.weight': expected \(8, 6\), found \(16, 6\)"):
        restore(t2, latest_checkpoint(tmp_path))


def test_keeps_last_n_and_the_best(tmp_path):
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()

    class ValLoss(Callback):  # a scripted validation metric: best at epoch 2
        def on_epoch_end(self, trainer, logs):
            logs["val_loss"] = [5.0, 1.0, 3.0, 4.0, 2.0][trainer.epoch - 1]

    m = torch.nn.Linear(3, 2)
    cb = CheckpointCallback(tmp_path, keep_last=2, monitor="val_loss")
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[ValLoss(), cb], batch_size=20)
    t.fit((x, y), epochs=5)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-e000002-s000000004", "ckpt-e000004-s000000008", "ckpt-e000005-s000000010"]
    assert json.loads((tmp_path / "best.json").read_text()) == {"checkpoint": "ckpt-e000002-s000000004",
                                                                "val_loss": 1.0}
    assert cb.best == 1.0 and cb.best_epoch == 2


def test_checkpoint_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="`keep_last` must be an integer >= 1. Received: keep_last=0"):
        CheckpointCallback(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="`every_n_steps` must be an integer >= 1"):
        CheckpointCallback(tmp_path, every_n_steps=0)
    with pytest.raises(ValueError, match="`action` must be one of 'skip', 'rollback'. Received: action='x'"):
        NanGuard("x")
    with pytest.raises(ValueError, match="`lr_factor` must be > 0 and <= 1. Received: lr_factor=0"):
        NanGuard(lr_factor=0)
    m = torch.nn.Linear(2, 2)
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[NanGuard("rollback")])
    with pytest.raises(ValueError, match="`action` must be 'skip' unless the trainer also has a CheckpointCallback"):
        t.fit((torch.randn(4, 2), torch.zeros(4, dtype=torch.long)))


# ----------------------------------------------------------------------------- NaN guard

class InjectNaN(Callback):
    """Puts a NaN into one gradient at the given steps (before the guard sees it)."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_after_backward(self, trainer):
        if trainer.global_step + 1 in self.steps:
            next(trainer.model.parameters()).grad[0, 0] = float("nan")


class Snapshots(Callback):
    def __init__(self):
        self.after = {}

    def on_batch_end(self, trainer, logs):
        self.after[trainer.global_step] = [p.detach().clone() for p in trainer.model.parameters()]


def _nan_setup(tmp_path, guard, inject, extra=()):
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    m = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    snaps = Snapshots()
    t = Trainer(m, opt, callbacks=[*extra, InjectNaN(inject), guard, snaps], batch_size=8)
    return t, (x, y), snaps


def test_nan_guard_skip(tmp_path, caplog):
    t, data, snaps = _nan_setup(tmp_path, NanGuard("skip"), inject=[5])
    with caplog.at_level(logging.WARNING, logger="descend.train"):
        t.fit(data, epochs=2)
    for a, b in zip(snaps.after[4], snaps.after[5]):  # step 5 changed nothing (momentum included)
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(snaps.after[5], snaps.after[6]))
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert "non-finite gradient at step 5 (epoch 1): step skipped" in caplog.text
    assert t.callbacks[1].events == 1


class InfLoss(Callback):
    def __init__(self, step):
        self.step = step

    def on_loss(self, trainer, loss, batch):
        return loss * float("inf") if trainer.global_step + 1 == self.step else loss


def test_without_guard_the_first_nonfinite_loss_stops_the_fit(tmp_path):
    ck = CheckpointCallback(tmp_path, every_n_steps=1)
    t, data, snaps = _nan_setup(None, Callback(), inject=[], extra=[ck, InfLoss(5)])
    with pytest.raises(FloatingPointError) as e:
        t.fit(data, epochs=1)
    msg = str(e.value)
    assert "non-finite loss (inf) at step 5 (epoch 1): stopped before the optimizer applied it" in msg \
        and "NanGuard" in msg and "on_nonfinite='ignore'" in msg
    assert t.global_step == 4 and latest_checkpoint(tmp_path).name == "ckpt-e000000-s000000004"
    for a, b in zip(snaps.after[4], t.model.parameters()):  # step 5 was not applied
        assert torch.equal(a, b.detach())
    assert not ck._lock.held  # the failed fit gave its checkpoint folder up
    t, data, _ = _nan_setup(None, Callback(), inject=[5])  # a NaN gradient: the next loss is NaN
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 6"):
        t.fit(data, epochs=1)


def test_nonfinite_policy_ignore_trains_on_and_nan_guard_takes_over(tmp_path):
    t, data, snaps = _nan_setup(None, Callback(), inject=[5])
    t.on_nonfinite = "ignore"
    t.fit(data, epochs=1)
    assert not torch.isfinite(next(t.model.parameters())).all()  # what "ignore" means
    t, data, snaps = _nan_setup(None, NanGuard("skip"), inject=[5])
    t.fit(data, epochs=1)  # the guard skips the step: no error, finite weights
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    with pytest.raises(ValueError, match="`on_nonfinite` must be one of 'raise', 'ignore'"):
        Trainer(t.model, t.optimizer, on_nonfinite="skip")


def test_nan_guard_rollback_restores_last_checkpoint_and_lowers_lr(tmp_path, caplog):
    ck = CheckpointCallback(tmp_path, every_n_steps=2)
    t, data, snaps = _nan_setup(tmp_path, NanGuard("rollback", lr_factor=0.5), inject=[5], extra=[ck])
    with caplog.at_level(logging.WARNING, logger="descend.train"):
        t.fit(data, epochs=1)
    for a, b in zip(snaps.after[4], snaps.after[5]):  # back to the step-4 checkpoint
        assert torch.equal(a, b)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert "non-finite gradient at step 5 (epoch 1): rolled back to ckpt-e000000-s000000004, lr 0.1 -> 0.05" \
        in caplog.text


def test_nan_guard_stops_instead_of_training_on_nan(tmp_path):
    t, data, _ = _nan_setup(tmp_path, NanGuard("skip", max_events=3), inject=range(1, 100))
    with pytest.raises(FloatingPointError, match="4 bad steps in a row"):
        t.fit(data, epochs=1)


def test_stateless_callbacks_may_differ_but_stateful_ones_must_match(tmp_path):
    trainer, train, val = resume_job.build(tmp_path)
    trainer.fit(train, val, epochs=1)
    path = latest_checkpoint(tmp_path)
    fresh, _, _ = resume_job.build(tmp_path)
    fresh.callbacks.insert(0, Callback())  # e.g. a logger only on rank 0
    restore(fresh, path)
    fresh, _, _ = resume_job.build(tmp_path)
    del fresh.callbacks[1]  # the Watch monitor, which has counters
    with pytest.raises(ValueError, match="holds state for Watch"):
        restore(fresh, path)


@pytest.mark.slow
def test_descend_train_resume_after_kill_9_is_bitwise(tmp_path):
    from safetensors.torch import load_file

    env = dict(os.environ, DESCEND_NO_FSYNC="1")
    base = [sys.executable, "-m", "descend", "train", "tiny", "--epochs", "6", "--quiet"]
    ref = subprocess.run([*base, "--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    cmd = [*base, "--out", str(tmp_path / "cut"), "--checkpoint-every", "1", "--resume"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckdir = tmp_path / "cut" / "tiny-sgd-seed0.checkpoints"
    deadline = time.time() + 60
    while time.time() < deadline:
        last = latest_checkpoint(ckdir)
        if last is not None and int(last.name.split("-s")[1]) >= 30:
            break
        time.sleep(0.005)
    p.kill()
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "tiny-sgd").exists()  # the run folder appears only when complete
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_file(tmp_path / "ref" / "tiny-sgd" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "tiny-sgd" / "model.safetensors")
    _assert_bitwise(a, b)
    res = json.loads((tmp_path / "cut" / "tiny-sgd" / "results.json").read_text())["result"]
    assert res["steps_run"] == 126 and len(res["steps"]["step"]) == 126  # the whole history


def test_recipe_names_checkpoint_and_nan_guard(tmp_path):
    from descend.experiments import recipe as recipes
    from descend.experiments import runner

    raw = {"name": "x", "data": {"name": "digits", "val_fraction": 0.1}, "model": {"name": "mlp", "hidden": [8]},
           "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64, "epochs": 1, "seeds": [0],
           "callbacks": [{"name": "checkpoint", "directory": "ck", "every_n_steps": 5},
                         {"name": "nan_guard", "action": "rollback", "lr_factor": 0.5}]}
    built = runner.build(recipes.load(raw).runs()[0], 0, out=tmp_path)
    kinds = [type(c).__name__ for c in built.trainer.callbacks]
    assert kinds[-2:] == ["CheckpointCallback", "NanGuard"] and built.trainer.callbacks[-1].action == "rollback"


# ----------------------------------------------------------------------------- all or nothing

def _state(trainer):
    return ({k: v.clone() for k, v in trainer.model.state_dict().items()},
            repr(trainer.optimizer.state_dict()), trainer.global_step, trainer.epoch,
            [repr(c.state_dict()) for c in trainer.callbacks], trainer.generator.get_state().clone(),
            torch.get_rng_state().clone())


def _same(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1:5] == b[1:5] and torch.equal(a[5], b[5]) and torch.equal(a[6], b[6])


class BrokenOptimizer(torch.optim.SGD):
    def load_state_dict(self, state):
        self.param_groups[0]["lr"] = 123.0  # half-applied, then refuses
        raise RuntimeError("size mismatch for exp_avg")


def test_restore_is_all_or_nothing_whatever_the_optimizer_raises(tmp_path):
    trainer, train, val = resume_job.build(tmp_path)
    trainer.fit(train, val, epochs=1)
    path = latest_checkpoint(tmp_path)
    fresh, _, _ = resume_job.build(tmp_path)
    fresh.optimizer.__class__ = type("Broken", (BrokenOptimizer, torch.optim.Adam), {})
    before = _state(fresh)
    with pytest.raises(ValueError, match="does not fit this trainer: size mismatch for exp_avg. "
                                         "Nothing was changed"):
        restore(fresh, path)
    fresh.optimizer.__class__ = torch.optim.Adam
    after = _state(fresh)
    _same(before, after)
    assert fresh.optimizer.param_groups[0]["lr"] != 123.0 and not fresh.resuming
    restore(fresh, path)  # and it still restores once the optimizer accepts the state
    assert fresh.global_step == trainer.global_step


def test_restore_refuses_other_parameter_groups_before_changing_anything(tmp_path):
    trainer, train, val = resume_job.build(tmp_path)
    trainer.fit(train, val, epochs=1)
    fresh, _, _ = resume_job.build(tmp_path)
    params = list(fresh.model.parameters())
    fresh.optimizer = torch.optim.Adam([{"params": params[:2]}, {"params": params[2:]}])
    before = _state(fresh)
    with pytest.raises(ValueError, match=r"groups of \[4\] parameters. Received: groups of \[2, 2\]"):
        restore(fresh, latest_checkpoint(tmp_path))
    _same(before, _state(fresh))


def test_trainer_load_state_dict_checks_before_changing_anything():
    m = torch.nn.Linear(2, 2)
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1))
    good = t.state_dict()
    for bad, match in [({**good, "epoch": -1}, r"`state\['epoch'\]` must be an integer >= 0"),
                       ({**good, "generator": torch.zeros(3)}, "`state\\['generator'\\]` must be a torch.Generator state"),
                       ({k: v for k, v in good.items() if k != "history"}, "missing: history")]:
        with pytest.raises(ValueError, match=match):
            t.load_state_dict(bad)
        assert t.epoch == 0 and not t.resuming


# ----------------------------------------------------------------------------- folder ownership

def test_a_checkpoint_folder_is_owned_by_one_fit_at_a_time(tmp_path):
    from descend._filelock import FolderInUseError
    x, y = torch.randn(16, 2), torch.zeros(16, dtype=torch.long)
    m = torch.nn.Linear(2, 2)
    first = CheckpointCallback(tmp_path, every_n_steps=1)
    first.acquire()  # a fit in progress
    (tmp_path / ".tmp-ckpt-e000000-s000000001-999").mkdir()  # its save under way
    second = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[CheckpointCallback(tmp_path)])
    with pytest.raises(FolderInUseError, match=f"checkpoint folder {tmp_path} is in use by another "
                                               f"fit \\(pid {os.getpid()}\\)"):
        second.fit((x, y), epochs=1)
    assert (tmp_path / ".tmp-ckpt-e000000-s000000001-999").exists()  # not deleted under it
    first.release()
    second.fit((x, y), epochs=1)  # free again; now the leftovers of the dead save go
    assert not (tmp_path / ".tmp-ckpt-e000000-s000000001-999").exists()
    assert list_checkpoints(tmp_path)


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    code = ("import sys, time; from descend.train.checkpoint import CheckpointCallback; "
            "c = CheckpointCallback(sys.argv[1]); c.acquire(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"held"
    mine = CheckpointCallback(tmp_path)
    from descend._filelock import FolderInUseError
    with pytest.raises(FolderInUseError, match=f"pid {p.pid}"):
        mine.acquire()
    p.kill()
    p.wait()
    mine.acquire()  # the dead process left its lock file, not its lock
    mine.release()


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path):
    # a DataLoader worker outlives its killed trainer for a few seconds: the folder must be
    # free as soon as the trainer is dead
    code = ("import os, sys, time; from descend.train.checkpoint import CheckpointCallback; "
            "c = CheckpointCallback(sys.argv[1]); c.acquire(); pid = os.fork()\n"
            "if pid == 0:\n    time.sleep(30); os._exit(0)\n"
            "print(pid, flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    child = int(p.stdout.readline())
    try:
        p.kill()
        p.wait()
        os.kill(child, 0)  # the child still lives
        mine = CheckpointCallback(tmp_path)
        mine.acquire()
        mine.release()
    finally:
        os.kill(child, signal.SIGKILL)


def test_early_stopping_counters_survive_restore(tmp_path):
    from descend.train import EarlyStopping
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()

    def make(d):
        torch.manual_seed(0)
        m = torch.nn.Linear(3, 2)
        es = EarlyStopping(patience=3)
        return Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=8,
                       callbacks=[es, CheckpointCallback(d)]), es

    t, es = make(tmp_path)
    t.fit((x, y), (x, y), epochs=3)
    saved = es.state_dict()
    t2, es2 = make(tmp_path)
    restore(t2, latest_checkpoint(tmp_path))
    t2.fit((x, y), (x, y), epochs=0)  # on_fit_begin must not reset what was restored
    assert es2.best == saved["best"] and es2.best_epoch == saved["best_epoch"] == 3
    assert es2.wait == saved["wait"]
    t2.fit((x, y), (x, y), epochs=0)  # a later fit (no restore in between) starts afresh
    assert es2.best_epoch == -1
