"""Kill training jobs at random steps, resume them, compare with an uninterrupted run.

Usage::

    OMP_NUM_THREADS=1 python tests/train/resume_trials.py --trials 20            # every config
    python tests/train/resume_trials.py --trials 5 --configs loader2 opt:adam    # some
    python tests/train/resume_trials.py --cli 20 --configs   # `descend train --resume` only
    python tests/train/resume_trials.py --list

For each configuration of ``resume_job.py`` (every registry optimizer under a descend
Scheduler, a DataLoader with 0 and 2 workers, augmentation, input/weight/label noise,
DisturbLabelLoss, the loss-proportional sampler, EarlyStopping, plateau schedules), one
uninterrupted run gives the reference. Each trial starts the job with a short sleep per
step, checkpointing every epoch and, from two steps before a random step on, every step;
waits until it has reached that step, sleeps a random part of a step (so the kill may
land inside a checkpoint save), sends SIGKILL, runs the job again with ``--resume`` and
compares its final state with the reference *bitwise* (the reference and the resumed
run checkpoint only at epoch ends: the cadence changes nothing in the training, and
fewer saves make a trial cheaper): weights, optimizer state, schedulers, every callback's state, the global RNGs
and the trainer's generators, the history and the CSV logs (the ``time`` columns and
training seconds excluded). A trial whose job finished before the kill is redrawn.

Jobs are forked from this process (torch imported once; a fork is a real process, and
SIGKILL a real kill); ``--spawn`` runs each as a fresh ``python resume_job.py`` instead.
Exit status 0 when every trial of every configuration is bitwise equal; the report lists
the configurations and the first differing entry of each failed trial.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DESCEND_NO_FSYNC", "1")

import torch  # noqa: E402

import resume_job  # noqa: E402
from descend.train.checkpoint import latest_checkpoint  # noqa: E402


def first_difference(a, b, path="state"):
    """The path of the first entry where ``a`` and ``b`` differ (None when bitwise equal)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{path}: tensor vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        same = torch.equal(a, b) or (a.is_floating_point() and bool(
            ((a == b) | (a.isnan() & b.isnan())).all()))
        if not same:
            diff = (a.double() - b.double()).abs().nan_to_num(math.inf).max().item()
            return f"{path}: max |difference| {diff:.3g}"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):  # the order of a dict's keys is no state
            return f"{path}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b and type(a) is type(b) else f"{path}: {a!r} vs {b!r}"


# ----------------------------------------------------------------------------- jobs

class Job:
    """One training job in its own process (forked, or spawned with ``spawn=True``)."""

    def __init__(self, config, ckpt_dir, out, *, resume=False, sleep=0.0, spawn=False, every=None,
                 steps_from=0):
        self.out, self.spawn = Path(out), spawn
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if spawn:
            env = dict(os.environ, DESCEND_TEST_STEP_SLEEP=str(sleep))
            cmd = [sys.executable, str(HERE / "resume_job.py"), str(ckpt_dir), str(out),
                   "--config", config, "--every", str(every or 0), "--from", str(steps_from)] + \
                (["--resume"] if resume else [])
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                         stderr=open(self.out.with_suffix(".err"), "w"))
            self.pid = self.proc.pid
            return
        self.pid = os.fork()
        if self.pid == 0:  # the child: a new process, as after a restart
            code = 0
            err = os.open(self.out.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(err, 2)  # its DataLoader workers' complaints when it is killed go there
            try:
                torch.set_num_threads(1)
                random.seed()  # whatever states a new process starts with
                torch.manual_seed(random.getrandbits(62))
                logs = self.out.with_suffix(".logs")
                t = resume_job.run_config(config, ckpt_dir, logs, resume=resume, sleep=sleep,
                                          every_n_steps=every, steps_from=steps_from)
                torch.save(resume_job.final_state(t, logs), out)
            except BaseException:
                self.out.with_suffix(".err").write_text(traceback.format_exc())
                code = 1
            finally:
                os._exit(code)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    _status: int | None = None

    @staticmethod
    def _decode(status: int) -> int:
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def wait(self) -> int:
        """The exit status (negative: killed by that signal)."""
        if self.spawn:
            return self.proc.wait()
        if self._status is None:
            self._status = self._decode(os.waitpid(self.pid, 0)[1])
        return self._status

    def running(self) -> bool:
        if self.spawn:
            return self.proc.poll() is None
        if self._status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._status = self._decode(status)
        return False

    def error(self) -> str:
        f = self.out.with_suffix(".err")
        return f.read_text()[-3000:] if f.is_file() else ""


def _steps(ckpt_dir) -> int:
    last = latest_checkpoint(ckpt_dir)
    return -1 if last is None else int(last.name.split("-s")[1])


def reference(config, work: Path, spawn: bool):
    """The uninterrupted run's final state. Forking: run here, which also loads whatever
    the first run imports lazily (a forked job would otherwise redo it, ~20x its cost)."""
    d = work / config.replace(":", "_").replace("@", "_") / "ref"
    if spawn:
        job = Job(config, d / "ck", d / "final.pt", spawn=spawn)
        if job.wait() != 0:
            raise RuntimeError(f"{config}: the uninterrupted run failed:\n{job.error()}")
    else:
        logs = d / "final.logs"
        t = resume_job.run_config(config, d / "ck", logs, every_n_steps=None)
        torch.save(resume_job.final_state(t, logs), d / "final.pt")
    return torch.load(d / "final.pt", weights_only=True)


def trial(config, work: Path, i: int, rng: random.Random, total_steps: int, *, sleep: float,
          spawn: bool, ref) -> tuple[str, int, str | None]:
    """One kill-and-resume trial: ``("equal" | "differs" | "missed", kill step, difference)``."""
    d = work / config.replace(":", "_").replace("@", "_") / f"trial{i}"
    if d.exists():
        shutil.rmtree(d)
    ckpt = d / "ck"
    target = rng.randint(1, max(1, total_steps - 1))
    job = Job(config, ckpt, d / "killed.pt", sleep=sleep, spawn=spawn, every=1, steps_from=target - 2)
    deadline = time.time() + 120
    while time.time() < deadline and job.running() and _steps(ckpt) < target - 1:
        time.sleep(0.002)
    time.sleep(rng.random() * sleep * 1.5)  # anywhere in a step, a save included
    if not job.running() or (d / "killed.pt").exists():
        job.wait()
        return "missed", target, None
    job.kill()
    status = job.wait()
    if status != -signal.SIGKILL or (d / "killed.pt").exists():
        return "missed", target, None
    killed_at = _steps(ckpt)
    resumed = Job(config, ckpt, d / "resumed.pt", resume=True, spawn=spawn)
    if resumed.wait() != 0:
        last = [line for line in resumed.error().splitlines() if line.strip()][-1:] or ["?"]
        return "differs", killed_at, f"the resumed run failed: {last[0]}"
    diff = first_difference(ref, torch.load(d / "resumed.pt", weights_only=True))
    return ("equal" if diff is None else "differs"), killed_at, diff


# ----------------------------------------------------------------------------- the command line

#: A recipe with everything random or stateful a recipe can name, for ``--cli``.
CLI_RECIPE = {
    "name": "resume",
    "data": {"name": "digits", "val_fraction": 0.1,
             "augment": [{"name": "gaussian_noise", "sigma": 0.05}],
             "sampler": {"name": "loss_proportional", "mix": 0.2}},
    "model": {"name": "mlp", "hidden": [16], "dropout": 0.2},
    "optimizer": {"name": "adam", "lr": 0.01},
    "schedule": {"lr": {"name": "plateau", "e0": 0.01, "factor": 0.5, "patience": 0, "min_delta": 0.05}},
    "callbacks": [{"name": "early_stopping", "patience": 2}],
    "regularizers": [{"name": "label_noise", "num_classes": 10, "alpha": 0.1},
                     {"name": "input_noise", "sigma": 0.05}, {"name": "weight_noise", "sigma": 0.01}],
    "batch_size": 128, "epochs": 4, "seeds": [0], "monitors": 5,
}

_TIMINGS = {"time", "train_seconds", "wall_seconds", "seconds_to_target", "meta",
            "load"}   # the machine's load average when the run ended: not the run's


def _run_folder(folder: Path) -> dict:
    """A ``descend train`` run folder as data, timings dropped: results.json, the CSV logs,
    monitors.json and the weights."""
    import json

    from safetensors.torch import load_file

    def drop(v):
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if k not in _TIMINGS}
        return [drop(x) for x in v] if isinstance(v, list) else v

    out = {"results": drop(json.loads((folder / "results.json").read_text())),
           "weights": load_file(folder / "model.safetensors"),
           "csv": {f: resume_job._csv(folder / f) for f in ("steps.csv", "epochs.csv")}}
    if (folder / "monitors.json").is_file():
        out["monitors"] = json.loads((folder / "monitors.json").read_text())
    return out


def cli_trials(trials: int, work: Path, rng: random.Random) -> int:
    """``descend train RECIPE --checkpoint-every 1 --resume`` killed at random steps, then
    resumed with ``descend train RECIPE --resume``, against one uninterrupted run; returns
    the number of trials that differ."""
    import yaml

    recipe = work / "resume.yaml"
    recipe.write_text(yaml.safe_dump(CLI_RECIPE))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "descend", "train", str(recipe)]
    ref = subprocess.run([*base, "--out", str(work / "cli-ref")], env=env, capture_output=True, text=True)
    if ref.returncode:
        raise RuntimeError(f"the uninterrupted `descend train` failed:\n{ref.stderr[-3000:]}")
    want = _run_folder(work / "cli-ref" / "resume-base")
    total = want["results"]["result"]["steps_run"]
    equal, kills, notes = 0, [], []
    i = 0
    while len(kills) < trials:
        out = work / f"cli-{i}"
        i += 1
        ckpt = out / "resume-base-seed0.checkpoints"
        target = rng.randint(1, total - 1)
        p = subprocess.Popen([*base, "--out", str(out), "--checkpoint-every", "1", "--resume"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None and _steps(ckpt) < target:
            time.sleep(0.005)
        time.sleep(rng.random() * 0.05)
        if p.poll() is not None:
            continue  # finished before the kill: redraw
        p.kill()
        p.wait()
        killed_at = _steps(ckpt)
        r = subprocess.run([*base, "--out", str(out), "--resume"], env=env, capture_output=True, text=True)
        kills.append(killed_at)
        said = next((line for line in r.stdout.splitlines() if "resumed from" in line or
                     "no checkpoint" in line), "")
        if r.returncode:
            notes.append(f"kill after step {killed_at}: the resumed run failed: {r.stderr[-300:]}")
            continue
        diff = first_difference(want, _run_folder(out / "resume-base"))
        if diff is None and (f"step {killed_at}," in said or (killed_at < 0 and "starting fresh" in said)):
            equal += 1
        else:
            notes.append(f"kill after step {killed_at}: {diff or 'printed: ' + said!r}")
    print(f"{'cli: descend train':<24} {equal:>3}/{trials:<3}  {sorted(kills)}", flush=True)
    for note in notes[:3]:
        print(f"{'':<26}{note.splitlines()[0][:160]}", flush=True)
    return trials - equal


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20, help="trials per configuration (default 20)")
    p.add_argument("--configs", nargs="*", default=None,
                   help="configurations (default: all; `--configs` alone: none, e.g. with --cli)")
    p.add_argument("--sleep", type=float, default=0.005, help="seconds slept per step (default 0.005)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill steps (default 0)")
    p.add_argument("--spawn", action="store_true", help="fresh python processes instead of forks")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--list", action="store_true", help="list the configurations and exit")
    p.add_argument("--cli", type=int, default=0, metavar="N",
                   help="also N trials of `descend train --resume` on a recipe with augmentation, "
                        "the loss-proportional sampler, noise, a plateau schedule and early stopping")
    args = p.parse_args(argv)
    names = resume_job.configs()
    if args.list:
        print("\n".join(names))
        return 0
    configs = names if args.configs is None else args.configs
    unknown = [c for c in configs if c not in names]
    if unknown:
        p.error(f"unknown configurations {unknown}; see --list")
    spawn = args.spawn or not hasattr(os, "fork")
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="resume-trials-"))
    rng = random.Random(args.seed)
    t0, bad = time.time(), 0
    print(f"{'configuration':<24} {'equal':>7}  kill steps / first difference   "
          f"(load {os.getloadavg()[0]:.2f})", flush=True)
    try:
        for config in configs:
            ref = reference(config, work, spawn)
            total = ref["position"][1]
            counts = {"equal": 0, "differs": 0}
            kills, notes = [], []
            i = 0
            while counts["equal"] + counts["differs"] < args.trials:
                outcome, step, diff = trial(config, work, i, rng, total, sleep=args.sleep,
                                            spawn=spawn, ref=ref)
                i += 1
                if outcome == "missed":
                    continue
                counts[outcome] += 1
                kills.append(step)
                if diff:
                    notes.append(f"kill after step {step}: {diff}")
            n = counts["equal"] + counts["differs"]
            bad += counts["differs"]
            print(f"{config:<24} {counts['equal']:>3}/{n:<3}  {sorted(kills)}", flush=True)
            for note in notes[:3]:
                print(f"{'':<26}{note.splitlines()[0][:160]}", flush=True)
        if args.cli:
            bad += cli_trials(args.cli, work, rng)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'all bitwise equal' if not bad else f'{bad} trials differ'} "
          f"({time.time() - t0:.0f}s, load {os.getloadavg()[0]:.2f})")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
