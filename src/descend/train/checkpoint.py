"""Checkpoints for exact resume, and the NaN/Inf guard.

A checkpoint is a folder ``<dir>/ckpt-e<epoch>-s<step>/`` holding

* ``model.safetensors`` — the weights (buffers included), nothing executable;
* ``state.pt`` — read back with ``torch.load(weights_only=True)``: optimizer,
  schedulers, every callback's ``state_dict()`` (early-stopping counters, monitors),
  the trainer's run state (step, epoch, batches done in the epoch and the shuffle
  generator as the epoch began, history) and the RNG states (torch, CUDA, numpy,
  python);
* ``manifest.json`` — format, step, epoch, monitored value and the SHA-256 of both
  files, so a truncated or flipped byte is caught on load.

The folder is written as ``.tmp-*`` (every file fsync-ed), then renamed in one
``os.rename``: a checkpoint either exists whole or not at all, and a failed or
killed save never touches the previous one. Old checkpoints are renamed to
``.trash-*`` before deletion; the last ``keep_last`` and the best survive.

Resume = :func:`restore` before ``fit`` (``epochs`` = total minus ``trainer.epoch``):
the run continues bit for bit as if it had not stopped (on CPU; CUDA kernels may be
non-deterministic).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from descend._validation import check_choice, check_int, check_range, fail
from descend._filelock import FileLock, FolderInUseError
from descend.io import (CorruptFileError, FileSafetyError, check_layout, load_json, load_state,
                        load_weights, save_state, save_weights, write_text)
from descend.callbacks import CALLBACKS, Callback, MonitorCallback

log = logging.getLogger("descend.train")

FORMAT = 1
# What state.pt holds, checked before anything is restored from it.
_STATE_LAYOUT = {"format": int, "trainer": dict, "optimizer": dict, "schedulers": [dict],
                 "callbacks": [{"class": str, "state": dict}], "rng": dict}
_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)$")
#: The lock file of a checkpoint folder owned by a fit (see CheckpointCallback.acquire).
LOCK_NAME = ".lock"


# ----------------------------------------------------------------------------- RNG

def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU, every CUDA device, numpy, python) as plain data.

    >>> s = rng_state()
    >>> a = torch.rand(2)
    >>> set_rng_state(s)
    >>> torch.equal(torch.rand(2), a)     # the same draws again
    True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             # one tensor rather than 625 Python ints: a checkpoint saves and loads faster
             "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                        "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`.

    >>> import random
    >>> s = rng_state(); a = (random.random(), float(np.random.rand()))
    >>> set_rng_state(s)
    >>> (random.random(), float(np.random.rand())) == a
    True
    """
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    else:  # checkpoints written before the python state became a tensor
        version, internal, gauss = py
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- files

def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (by step, then epoch).

    >>> import tempfile
    >>> from descend.train import Trainer
    >>> m = torch.nn.Linear(2, 2); d = tempfile.mkdtemp()
    >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), batch_size=4)
    >>> for _ in range(2):
    ...     _ = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=1)
    ...     _ = save_checkpoint(t, d)
    >>> [p.name for p in list_checkpoints(d)]
    ['ckpt-e000001-s000000002', 'ckpt-e000002-s000000004']
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and (p / "manifest.json").is_file():
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``directory`` (None if there is none).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> latest_checkpoint(d) is None
    True
    >>> from descend.train import Trainer
    >>> m = torch.nn.Linear(2, 2); t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1))
    >>> p = save_checkpoint(t, d)
    >>> latest_checkpoint(d) == p
    True
    """
    cks = list_checkpoints(directory)
    return cks[-1] if cks else None


def save_checkpoint(trainer, directory: str | os.PathLike, *, metric: float | None = None) -> Path:
    """Write the trainer's full state as a new checkpoint folder, atomically; return it.

    >>> import tempfile
    >>> from descend.train import Trainer
    >>> m = torch.nn.Linear(2, 2); t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1))
    >>> p = save_checkpoint(t, tempfile.mkdtemp(), metric=0.5)
    >>> p.name, sorted(f.name for f in p.iterdir())
    ('ckpt-e000000-s000000000', ['manifest.json', 'model.safetensors', 'state.pt'])
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-e{trainer.epoch:06d}-s{trainer.global_step:09d}"
    final = directory / name
    if final.exists():  # the same point was saved already (e.g. fit end right after an epoch save)
        return final
    tmp = directory / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_weights(tmp / "model.safetensors", _unwrap(trainer.model))
        state = {
            "format": FORMAT,
            "trainer": trainer.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in trainer.schedulers],
            "callbacks": [{"class": type(c).__name__, "state": c.state_dict()} for c in trainer.callbacks],
            "rng": rng_state(),
        }
        loss_state = _loss_state(trainer)
        if loss_state:  # a loss with state (DisturbLabelLoss's generator, weights buffers)
            state["loss_fn"] = loss_state
        save_state(tmp / "state.pt", state)
        manifest = {"format": FORMAT, "epoch": trainer.epoch, "step": trainer.global_step,
                    "metric": None if metric is None or math.isnan(metric) else float(metric),
                    "sha256": {f: _sha256(tmp / f) for f in ("model.safetensors", "state.pt")}}
        write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _loss_state(trainer) -> dict[str, Any]:
    fn = getattr(trainer, "loss_fn", None)
    return fn.state_dict() if isinstance(fn, torch.nn.Module) else {}


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a checkpoint folder, after checking both files' SHA-256.

    >>> import tempfile
    >>> from descend.train import Trainer
    >>> m = torch.nn.Linear(2, 2); t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1))
    >>> mf = read_manifest(save_checkpoint(t, tempfile.mkdtemp(), metric=0.5))
    >>> mf["epoch"], mf["step"], mf["metric"], sorted(mf["sha256"])
    (0, 0, 0.5, ['model.safetensors', 'state.pt'])
    """
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise CorruptFileError(f"{path} is not a complete checkpoint (no manifest.json).")
    manifest = check_layout(load_json(mf, max_bytes=1 << 20), {"sha256": {str: str}}, str(mf))
    sums = manifest["sha256"]
    for fname, want in sums.items():
        if fname not in ("model.safetensors", "state.pt"):
            raise CorruptFileError(f"{mf} is corrupted: it names a file a checkpoint does not hold. "
                                   f"Received: {fname!r}")
        f = path / fname
        if not f.is_file():
            raise CorruptFileError(f"{f} is missing from checkpoint {path}.")
        if _sha256(f) != want:
            raise CorruptFileError(f"{f} is corrupted or truncated (its SHA-256 differs from the manifest).")
    return manifest


def restore(trainer, path: str | os.PathLike, *, rng: bool = True) -> dict[str, Any]:
    """Load a checkpoint folder into ``trainer`` (model, optimizer, schedulers, callbacks,
    run state and, with ``rng``, the global RNGs). Returns its manifest.

    All or nothing: everything is read and checked first (checksums, the weights against
    the model's keys, shapes and dtypes, the optimizer's groups against the trainer's,
    callback classes, the run state); then it is applied, and if applying any part fails
    (an optimizer's ``load_state_dict`` refusing its state, say) everything already
    applied is put back as it was before the error is raised. Call
    ``trainer.fit(..., epochs=total - trainer.epoch)`` afterwards.

    Raises:
        CorruptFileError: a file is truncated, damaged or missing (the message names it,
            and the previous checkpoint, if any, which is intact).
        UnsafeFileError: ``state.pt`` would run code.
        StateMismatchError: the weights do not fit the model (names the parameter and
            both shapes).
        ValueError: the optimizer, schedulers or callbacks do not match the checkpoint's.

    Example:
        >>> import tempfile
        >>> from descend.train import Trainer
        >>> m = torch.nn.Linear(2, 2); t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1))
        >>> p = save_checkpoint(t, tempfile.mkdtemp())
        >>> restore(t, p)["step"]
        0
    """
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except CorruptFileError as e:
        older = [p for p in list_checkpoints(path.parent) if p != path]
        hint = f" The previous checkpoint {older[-1]} is intact." if older else ""
        raise CorruptFileError(f"{e}{hint}") from None
    model = _unwrap(trainer.model)
    weights = load_weights(path / "model.safetensors", model.state_dict(), device="cpu")
    state = check_layout(load_state(path / "state.pt"), {"format": int}, str(path / "state.pt"))
    if state.get("format") != FORMAT:
        raise CorruptFileError(f"{path / 'state.pt'} has format {state.get('format')!r}, expected {FORMAT}.")
    check_layout(state, _STATE_LAYOUT, str(path / "state.pt"))
    pairs = _match_callbacks(trainer.callbacks, state["callbacks"], path)
    if len(state["schedulers"]) != len(trainer.schedulers):
        raise ValueError(f"`schedulers` must match the checkpoint's ({len(state['schedulers'])}). "
                         f"Received: {len(trainer.schedulers)} schedulers")
    _check_optimizer_groups(trainer.optimizer, state["optimizer"], path)
    loss_state = state.get("loss_fn")
    if loss_state and not isinstance(getattr(trainer, "loss_fn", None), torch.nn.Module):
        raise ValueError(f"`loss_fn` must be a module with the state {path} holds for it "
                         f"({', '.join(loss_state)}). Received: loss_fn={trainer.loss_fn!r}")
    snapshot = _snapshot(trainer, model, pairs)
    try:
        model.load_state_dict(weights)
        if loss_state:
            trainer.loss_fn.load_state_dict(loss_state)
        trainer.optimizer.load_state_dict(state["optimizer"])
        for s, st in zip(trainer.schedulers, state["schedulers"]):
            s.load_state_dict(st)
        for c, st in pairs:
            c.load_state_dict(st)
        trainer.load_state_dict(state["trainer"])
        if rng:
            set_rng_state(state["rng"])
    except BaseException as error:
        try:
            _rollback(trainer, model, pairs, snapshot)
        except Exception as rollback_error:  # pragma: no cover - rollback of a rollback
            raise RuntimeError(f"restoring {path} failed ({error!r}) and so did putting the trainer "
                               f"back ({rollback_error!r}): rebuild it before training") from error
        if isinstance(error, (KeyError, TypeError, RuntimeError)) and not isinstance(error, FileSafetyError):
            raise ValueError(f"{path} does not fit this trainer: {error}. Nothing was changed.") from error
        raise
    if trainer.global_step:  # it did step before the stop: spare torch's "scheduler before
        trainer.optimizer._opt_called = True  # optimizer.step()" warning on resume
    return manifest


def _check_optimizer_groups(optimizer, saved, path) -> None:
    """The checkpoint's optimizer has as many groups, of the same sizes, as ``optimizer``."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(saved.get("state"), dict):
        raise CorruptFileError(f"{path / 'state.pt'}: its optimizer state is not an optimizer "
                               "state_dict (no 'state' and 'param_groups').")
    have = [len(g["params"]) for g in optimizer.param_groups]
    got = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in groups]
    if have != got:
        raise ValueError(f"`optimizer` must have the checkpoint's parameter groups: {path} has groups "
                         f"of {got} parameters. Received: groups of {have} parameters")


def _snapshot(trainer, model, pairs) -> dict[str, Any]:
    """Everything :func:`restore` may change, copied, for :func:`_rollback`."""
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": _optimizer_snapshot(trainer.optimizer),
            "schedulers": [(copy.deepcopy(s.state_dict()), copy.copy(vars(s))) for s in trainer.schedulers],
            "callbacks": [(copy.deepcopy(c.state_dict()), copy.copy(vars(c))) for c, _ in pairs],
            "trainer": trainer._snapshot() if hasattr(trainer, "_snapshot") else None,
            "loss_fn": copy.deepcopy(_loss_state(trainer)),
            "rng": rng_state()}


def _optimizer_snapshot(opt) -> tuple:
    """The optimizer's attributes, its state and groups (the same objects, their contents
    copied) and a copy of every tensor in them: enough to undo any ``load_state_dict``
    without calling it again (it may be the part that fails)."""
    state = [(p, s, dict(s)) for p, s in opt.state.items()]
    groups = [(g, dict(g)) for g in opt.param_groups]
    values = [v for _, s, _ in state for v in s.values()] + \
        [v for g, _ in groups for k, v in g.items() if k != "params"]
    tensors = [(t, t.detach().clone()) for t in values if isinstance(t, torch.Tensor)]
    return dict(vars(opt)), list(opt.param_groups), state, groups, tensors


def _optimizer_rollback(opt, snap) -> None:
    attrs, group_list, state, groups, tensors = snap
    vars(opt).clear()
    vars(opt).update(attrs)
    opt.param_groups[:] = group_list
    for g, saved in groups:
        g.clear()
        g.update(saved)
    opt.state.clear()
    for p, s, saved in state:
        s.clear()
        s.update(saved)
        opt.state[p] = s
    with torch.no_grad():
        for t, saved in tensors:
            t.copy_(saved)


def _rollback(trainer, model, pairs, snap) -> None:
    with torch.no_grad():
        model.load_state_dict(snap["model"])
    if snap["loss_fn"]:
        trainer.loss_fn.load_state_dict(snap["loss_fn"])
    _optimizer_rollback(trainer.optimizer, snap["optimizer"])
    objs = [*trainer.schedulers, *(c for c, _ in pairs)]
    for obj, (st, attrs) in zip(objs, [*snap["schedulers"], *snap["callbacks"]]):
        try:  # undoes in-place changes to their containers; may fail where the restore did
            obj.load_state_dict(st)
        except Exception:
            pass
        vars(obj).clear()
        vars(obj).update(attrs)
    if snap["trainer"] is not None:
        trainer._rollback(snap["trainer"])
    set_rng_state(snap["rng"])


def _match_callbacks(callbacks, saved, path) -> list[tuple[Callback, dict]]:
    """Pair callbacks with saved states by (class name, occurrence). Callbacks without
    state (loggers, printers) may differ between the runs; one with state may not."""
    def keyed(names):
        seen: dict[str, int] = {}
        out = []
        for n in names:
            out.append((n, seen.get(n, 0)))
            seen[n] = seen.get(n, 0) + 1
        return out

    saved_by = dict(zip(keyed([c["class"] for c in saved]), [c["state"] for c in saved]))
    pairs, used = [], set()
    for c, key in zip(callbacks, keyed([type(c).__name__ for c in callbacks])):
        if key in saved_by:
            pairs.append((c, saved_by[key]))
            used.add(key)
        elif c.state_dict():
            raise ValueError(f"`callbacks` must match the checkpoint's: {path} has no state for "
                             f"{key[0]} (occurrence {key[1] + 1}). Received: "
                             f"callbacks={[type(x).__name__ for x in callbacks]}")
    for key, st in saved_by.items():
        if key not in used and st:
            raise ValueError(f"`callbacks` must match the checkpoint's: {path} holds state for "
                             f"{key[0]} (occurrence {key[1] + 1}), which this trainer lacks. Received: "
                             f"callbacks={[type(x).__name__ for x in callbacks]}")
    return pairs


def _is_rank0() -> bool:
    d = torch.distributed
    return not (d.is_available() and d.is_initialized()) or d.get_rank() == 0


# ----------------------------------------------------------------------------- callback

@CALLBACKS.register("checkpoint")
class CheckpointCallback(MonitorCallback):
    """Save checkpoints every ``every_n_steps`` steps and every ``every_n_epochs`` epochs;
    keep the last ``keep_last`` and the best; save on SIGTERM / SIGINT, then exit.

    Epoch checkpoints are written when the *next* epoch begins (or the fit ends), after
    the per-epoch schedulers stepped, so the state is consistent. The best epoch is the
    one whose ``monitor`` value improved (``MonitorCallback`` rule with ``mode`` and
    ``min_delta``); its checkpoint is never deleted. On SIGTERM / SIGINT the callback
    saves at the next step boundary, then raises ``SystemExit(128 + signum)``; a second
    signal before that point is handled by the previous handler at once.

    Args:
        directory: folder of the checkpoints (created).
        every_n_steps: also save every this many optimizer steps (None: only epochs).
        every_n_epochs: save every this many epochs (default 1; 0: never by epoch).
        keep_last: how many recent checkpoints to keep (default 2, >= 1).
        monitor: logged metric whose best epoch is kept (default None: no best).
        mode, min_delta: see :class:`~descend.callbacks.MonitorCallback`.
        handle_signals: install the SIGTERM / SIGINT handlers during fit (default True).

    Example:
        >>> import tempfile
        >>> from descend.train import Trainer
        >>> m = torch.nn.Linear(2, 2); d = tempfile.mkdtemp()
        >>> t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[CheckpointCallback(d)])
        >>> _ = t.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=2)
        >>> [p.name for p in list_checkpoints(d)]
        ['ckpt-e000001-s000000001', 'ckpt-e000002-s000000002']
    """

    def __init__(self, directory: str | os.PathLike, *, every_n_steps: int | None = None,
                 every_n_epochs: int = 1, keep_last: int = 2, monitor: str | None = None,
                 mode: str = "min", min_delta: float = 0.0, handle_signals: bool = True):
        super().__init__(monitor=monitor or "val_loss", mode=mode, min_delta=min_delta, patience=0)
        self.keep_best = monitor is not None
        self.directory = Path(directory)
        self.every_n_steps = check_int("every_n_steps", every_n_steps, ge=1, allow_none=True)
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, ge=0)
        self.keep_last = check_int("keep_last", keep_last, ge=1)
        self.handle_signals = bool(handle_signals)
        self.best_path: str | None = None
        self._pending_metric: float | None = None
        self._pending = False
        self._pending_best = False
        self._signal: int | None = None
        self._old_handlers: dict[int, Any] = {}
        self.last_path: Path | None = None
        self._lock = FileLock(self.directory / LOCK_NAME)

    # -- state carried by the checkpoint itself
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_path": self.best_path}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_path = state["best_path"]

    # -- owning the folder
    def acquire(self) -> None:
        """Own ``directory`` (a lock file ``.lock`` holding the pid) until :meth:`release`;
        the fit does it at its start. Leftovers of killed saves are removed then.

        Raises:
            FolderInUseError: another live process (or fit) owns it. A lock left by a
                dead process is free: the operating system released it.
        """
        if self._lock.held:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self._lock.acquire():
            who = self._lock.holder()
            raise FolderInUseError(
                f"checkpoint folder {self.directory} is in use by another fit "
                f"({'pid ' + who if who else 'another process'}): wait for it to finish, or "
                "use another folder")
        for p in self.directory.iterdir():  # leftovers of a save or prune that was killed
            if p.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(p, ignore_errors=True)

    def release(self) -> None:
        """Give ``directory`` up (see :meth:`acquire`)."""
        self._lock.release()

    # -- saving
    def save(self, trainer, *, metric: float | None = None, best: bool = False) -> Path | None:
        """Write a checkpoint now (rank 0 only under torch.distributed) and prune old ones."""
        if not _is_rank0():
            return None
        self.acquire()
        path = save_checkpoint(trainer, self.directory, metric=metric)
        self.last_path = path
        if best:
            self.best_path = path.name
            write_text(self.directory / "best.json",
                       json.dumps({"checkpoint": path.name, self.monitor: metric}))
        self._prune()
        return path

    def _prune(self) -> None:
        cks = list_checkpoints(self.directory)
        keep = set(cks[-self.keep_last:])
        for p in cks:
            if p not in keep and p.name != self.best_path:
                trash = p.with_name(f".trash-{p.name}")
                os.rename(p, trash)  # atomic: the folder is gone as a checkpoint at once
                shutil.rmtree(trash, ignore_errors=True)

    # -- hooks
    def on_fit_begin(self, trainer) -> None:
        if _is_rank0():
            self.acquire()
        self._signal = None
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        # Only records: the save happens at the next step boundary, where the state is
        # consistent. A second signal (or one after a fit that died) acts at once.
        if self._signal is not None:
            self._restore_handlers()
            signal.raise_signal(signum)
            return
        self._signal = signum

    def _check_signal(self, trainer) -> None:
        if self._signal is not None:
            signum = self._signal
            path = self.save(trainer)
            log.warning("received signal %d: saved checkpoint %s, exiting", signum, path)
            self._restore_handlers()
            raise SystemExit(128 + signum)

    def _flush_pending(self, trainer) -> None:
        if self._pending:
            self._pending = False
            self.save(trainer, metric=self._pending_metric, best=self._pending_best)

    def on_epoch_begin(self, trainer) -> None:
        self._flush_pending(trainer)
        self._check_signal(trainer)

    def on_batch_end(self, trainer, logs) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)
        self._check_signal(trainer)

    def on_epoch_end(self, trainer, logs) -> None:
        improved = False
        metric = None
        if self.keep_best:
            metric = self.value_from(logs)
            improved = self.update(metric, trainer.epoch)
        if improved or (self.every_n_epochs and trainer.epoch % self.every_n_epochs == 0):
            self._pending, self._pending_metric, self._pending_best = True, metric, improved

    def on_fit_end(self, trainer) -> None:
        try:
            self._flush_pending(trainer)
            self._restore_handlers()
            self._check_signal(trainer)
        finally:
            self.release()

    def on_fit_error(self, trainer, error) -> None:
        # Give SIGTERM/SIGINT back (a notebook's Ctrl-C must work again); no save: the
        # state of a failed step is not one to resume from, the earlier checkpoints are.
        self._restore_handlers()
        self.release()

    def _restore_handlers(self) -> None:
        for sig, h in self._old_handlers.items():
            signal.signal(sig, h)
        self._old_handlers.clear()


# ----------------------------------------------------------------------------- NaN guard

def _all_finite(tensors) -> bool:
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


@CALLBACKS.register("nan_guard")
class NanGuard(Callback):
    """Never step on a NaN/Inf: skip the step, or roll back to the last checkpoint and
    lower the learning rate.

    After every backward pass the loss and the global gradient norm are checked
    (``isfinite``, one host read per step). If either is not finite:

    * ``action="skip"``: every ``p.grad`` is set to ``None``, so the optimizer leaves
      the weights and its state unchanged (torch optimizers skip parameters without a
      gradient); the scheduler and step counter still advance.
    * ``action="rollback"``: the weights and optimizer state of the last checkpoint of
      the trainer's :class:`CheckpointCallback` are loaded (one is written when the fit
      begins if none exists), every group's ``lr`` (and schedulers' ``base_lrs``) is
      multiplied by ``lr_factor``, and the step is skipped. Data order and RNGs go on.

    Each event is logged on the ``descend.train`` logger. After ``max_events``
    events in a row without a good step in between, ``FloatingPointError`` is raised:
    a run never trains on NaN silently.

    Args:
        action: ``"skip"`` (default) or ``"rollback"``.
        lr_factor: LR multiplier on rollback, in (0, 1] (default 0.5).
        max_events: consecutive bad steps tolerated (default 10).

    Example:
        >>> g = NanGuard(action="skip")
        >>> g.events
        0
    """

    handles_nonfinite = True  # the Trainer's default stop at a non-finite loss defers to it

    def __init__(self, action: str = "skip", *, lr_factor: float = 0.5, max_events: int = 10):
        self.action = check_choice("action", action, ["skip", "rollback"])
        self.lr_factor = float(check_range("lr_factor", lr_factor, gt=0, le=1))
        self.max_events = check_int("max_events", max_events, ge=1)
        self.events = 0          # all bad steps seen
        self.consecutive = 0
        self._loss: torch.Tensor | None = None
        self._ckpt: CheckpointCallback | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"events": self.events, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events, self.consecutive = int(state["events"]), int(state["consecutive"])

    def on_fit_begin(self, trainer) -> None:
        if self.action == "rollback":
            found = [c for c in trainer.callbacks if isinstance(c, CheckpointCallback)]
            if not found:
                fail("action", "'skip' unless the trainer also has a CheckpointCallback to roll back to",
                     self.action)
            self._ckpt = found[0]
            if latest_checkpoint(self._ckpt.directory) is None:
                self._ckpt.save(trainer)

    def on_loss(self, trainer, loss, batch):
        self._loss = loss.detach()
        return loss

    def on_after_backward(self, trainer) -> None:
        params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        grads = [p.grad for p in params]
        if _all_finite(grads + [self._loss]):
            self.consecutive = 0
            return
        self.events += 1
        self.consecutive += 1
        for p in params:
            p.grad = None
        step = trainer.global_step + 1
        what = "loss" if self._loss is not None and not bool(torch.isfinite(self._loss)) else "gradient"
        if self.consecutive > self.max_events:
            raise FloatingPointError(
                f"non-finite {what} at step {step}: {self.consecutive} bad steps in a row "
                f"(more than max_events={self.max_events}); stopping rather than training on NaN")
        if self.action == "skip":
            log.warning("non-finite %s at step %d (epoch %d): step skipped", what, step, trainer.epoch + 1)
            return
        path = latest_checkpoint(self._ckpt.directory)
        model = _unwrap(trainer.model)
        load_weights(path / "model.safetensors", model)
        lrs = [g["lr"] for g in trainer.optimizer.param_groups]
        trainer.optimizer.load_state_dict(load_state(path / "state.pt")["optimizer"])
        old = lrs[0]
        for g, lr in zip(trainer.optimizer.param_groups, lrs):
            g["lr"] = lr * self.lr_factor
        for s in trainer.schedulers:  # so that the next scheduler step keeps the lower LR
            if hasattr(s, "base_lrs"):  # torch LR schedulers
                s.base_lrs = [lr * self.lr_factor for lr in s.base_lrs]
            elif getattr(s, "scale", None) == "relative" and "lr" in getattr(s, "schedules", {}):
                for init in s.initial:  # descend.schedules.Scheduler(scale="relative")
                    init["lr"] *= self.lr_factor
            elif "lr" in getattr(s, "schedules", {}):
                log.warning("an absolute lr schedule will override the lowered lr at its next step")
        log.warning("non-finite %s at step %d (epoch %d): rolled back to %s, lr %.4g -> %.4g",
                    what, step, trainer.epoch + 1, path.name, old, trainer.optimizer.param_groups[0]["lr"])
