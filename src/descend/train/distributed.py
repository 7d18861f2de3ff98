"""Data-parallel training on ``torch.distributed`` (one process per device, under torchrun).

Each of the ``W`` processes (ranks) holds a replica of the model and reads its own
shard of every global minibatch (``DistributedSampler``: one seeded permutation per
epoch, rank ``r`` takes entries ``r, r+W, r+2W, ...``). ``DistributedDataParallel``
averages the gradients across ranks during ``backward``, so each step is the step of
one process on the global batch of ``W * b`` examples::

    g = (1/W) sum_r (1/b) sum_{i in B_r} grad L_i  =  (1/(W b)) sum_{i in B} grad L_i

Large batches need a larger learning rate: the linear scaling rule with gradual warmup
(Goyal et al. 2017, "Accurate, Large Minibatch SGD"; the notes' "learning rate warmup
... improve convergence", Sun 2019): for a global batch ``k`` times the reference batch,
use ``k * lr``, reached linearly from ``lr`` over the first steps
(:func:`large_batch_lr`).

Batch-norm statistics are per replica unless the model is converted to
``torch.nn.SyncBatchNorm`` (notes 002: "use torch.nn.SyncBatchNorm to estimate batch
statistics" in multi-GPU training); ``sync_batchnorm=True`` in :func:`wrap_model`.
Files (logs, checkpoints, weights) are written by rank 0 only; the epoch metrics are
averaged over ranks (:class:`DistributedCallback`). Backends: gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from descend._validation import check_bool, check_choice, check_int, check_range
from descend.callbacks import Callback

__all__ = ["DistributedCallback", "cleanup", "is_distributed", "is_main_process", "large_batch_lr", "prepare_fit", "relaunch",
           "launched_by_torchrun", "rank", "setup", "shard_loader", "world_size", "wrap_model"]


def launched_by_torchrun() -> bool:
    """True when the environment has torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``.

    >>> launched_by_torchrun()    # a plain python process
    False
    """
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_distributed() -> bool:
    """True inside an initialised process group.

    >>> is_distributed()
    False
    """
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group).

    >>> rank()
    0
    """
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group).

    >>> world_size()
    1
    """
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or no process group): the only process that writes files.

    >>> is_main_process()
    True
    """
    return rank() == 0


def setup(backend: str | None = None, device: str | None = None) -> torch.device:
    """Join the process group described by torchrun's environment; return this rank's device.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available and
            ``device`` is not ``"cpu"``, else gloo.
        device: ``"cpu"`` or ``"cuda"``; default CUDA when available. On CUDA the rank
            uses ``cuda:LOCAL_RANK``.

    Raises:
        RuntimeError: not launched by torchrun (no ``RANK`` / ``WORLD_SIZE`` /
            ``LOCAL_RANK``), naming the command to use.

    >>> setup()                   # a plain python process
    Traceback (most recent call last):
        ...
    RuntimeError: data-parallel training needs torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): ...
    """
    if not launched_by_torchrun():
        raise RuntimeError("data-parallel training needs torchrun's environment (RANK, WORLD_SIZE, "
                           "LOCAL_RANK): start it with `torchrun --nproc_per_node N ...` or "
                           "`descend train --nproc N ...`")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if device is not None:
        check_choice("device", device.split(":")[0], ["cpu", "cuda"])
    backend = backend or ("nccl" if use_cuda else "gloo")
    check_choice("backend", backend, ["gloo", "nccl"])
    local = int(os.environ["LOCAL_RANK"])
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not is_distributed():
        dist.init_process_group(backend=backend)
    return dev


def cleanup() -> None:
    """Leave the process group (no-op outside one).

    Every rank first waits at a barrier, so that no rank tears its connections down
    while a peer is still finishing (saving results, say). On an oversubscribed CPU a
    gloo rank was still seen to abort rarely ("terminate called without an active
    exception"); see docs/distributed.md.

    >>> cleanup(); is_distributed()
    False
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, device: torch.device | str = "cpu", *,
               sync_batchnorm: bool = False, **ddp_kwargs: Any) -> torch.nn.Module:
    """Move ``model`` to ``device``, optionally convert BatchNorm to SyncBatchNorm, wrap in DDP.

    Outside a process group the model is returned moved (and converted), unwrapped.
    The optimizer must be built on the returned module's parameters.

    Args:
        model: the module.
        device: this rank's device (from :func:`setup`).
        sync_batchnorm: replace every ``BatchNorm*d`` by ``SyncBatchNorm`` (default False).
        **ddp_kwargs: passed to ``DistributedDataParallel``.

    Example:
        >>> m = wrap_model(torch.nn.Sequential(torch.nn.BatchNorm1d(3)), sync_batchnorm=True)
        >>> type(m[0]).__name__
        'SyncBatchNorm'
    """
    check_bool("sync_batchnorm", sync_batchnorm)
    device = torch.device(device)
    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **ddp_kwargs)


def shard_loader(data, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, num_replicas: int | None = None,
                 rank_: int | None = None) -> DataLoader:
    """A ``DataLoader`` over this rank's shard: ``batch_size`` examples per rank per step.

    The permutation is drawn from ``seed + epoch`` (``DistributedSampler``); call
    ``loader.sampler.set_epoch(epoch)`` every epoch (:class:`DistributedCallback`
    does) so that each epoch is reshuffled, identically on every rank. When the data
    size is not a multiple of the world size the sampler repeats a few examples so all
    ranks take the same number of steps (``drop_last=True`` drops them instead).

    Args:
        data: a ``Dataset`` or an ``(x, y)`` pair of tensors.
        batch_size: per-rank batch size (global batch = world size * batch_size).
        seed, shuffle, drop_last: as ``DistributedSampler`` / ``DataLoader``.
        num_replicas, rank_: override the process group's (for tests / single process).

    >>> x, y = torch.arange(10.0), torch.arange(10)
    >>> r0 = shard_loader((x, y), 2, num_replicas=2, rank_=0)
    >>> r1 = shard_loader((x, y), 2, num_replicas=2, rank_=1)
    >>> [len(b) for b, _ in r0], sorted(list(r0.sampler) + list(r1.sampler)) == list(range(10))
    ([2, 2, 1], True)
    """
    check_int("batch_size", batch_size, ge=1)
    if isinstance(data, (tuple, list)):
        data = TensorDataset(*data)
    sampler = DistributedSampler(data, num_replicas=num_replicas or world_size(),
                                 rank=rank() if rank_ is None else rank_, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=drop_last)


def large_batch_lr(lr: float, batch_size: int, *, base_batch_size: int = 256, warmup_steps: int = 0,
                   then: Any = None):
    """Linear scaling rule with gradual warmup, as a ``descend.schedules`` schedule.

    ``k = batch_size / base_batch_size``; the target is ``k * lr`` (times ``then(t)`` if
    given, a schedule of relative factors, e.g. a decay). For ``t < warmup_steps``:
    ``lr_t = lr + (k lr - lr) t / warmup_steps`` (Goyal et al. 2017, section 2.2:
    start from the small-batch LR, reach ``k lr`` after about 5 epochs).

    Args:
        lr: the learning rate tuned for ``base_batch_size``.
        batch_size: the global batch size (world size x per-rank batch).
        base_batch_size: the reference batch (default 256, as in the paper).
        warmup_steps: ramp length in steps (default 0: no warmup).
        then: optional schedule of factors applied after the warmup (default 1).

    Example:
        >>> s = large_batch_lr(0.1, 1024, warmup_steps=4)
        >>> [round(s(t), 3) for t in range(6)]
        [0.1, 0.175, 0.25, 0.325, 0.4, 0.4]
    """
    from descend import schedules as S

    check_range("lr", lr, ge=0)
    check_int("batch_size", batch_size, ge=1)
    check_int("base_batch_size", base_batch_size, ge=1)
    check_int("warmup_steps", warmup_steps, ge=0)
    k = batch_size / base_batch_size
    target = S.constant(k * lr) if then is None else _scaled(S._as_schedule("then", then), k * lr)
    if warmup_steps == 0:
        return target
    return S.warmup(target, steps=warmup_steps, start=lr)


def _scaled(s, c):
    """``c * s(t)`` as a ``descend.schedules.Schedule``."""
    from descend.schedules import Schedule

    class Scaled(Schedule):
        def __init__(self):
            self._args = {"factor": c, "schedule": s}

        def value(self, t):
            return c * s(t)

    return Scaled()


class DistributedCallback(Callback):
    """Per-epoch reshuffling and cross-rank metrics for a data-parallel fit.

    ``on_epoch_begin``: ``sampler.set_epoch(trainer.epoch)`` on the loader's
    ``DistributedSampler`` (a new permutation every epoch, the same on all ranks; an
    exact resume redraws the same one). ``on_epoch_end``: every numeric ``train_*`` log
    is averaged over ranks (all shards have the same size, so this is the global mean)
    and written back to the logs and the trainer's history. Put it first in the
    callback list so that the callbacks after it see global values.

    Args:
        loader: the training ``DataLoader`` from :func:`shard_loader`.

    Example:
        >>> import types
        >>> loader = shard_loader((torch.arange(8.0), torch.arange(8)), 2, num_replicas=2, rank_=0)
        >>> DistributedCallback(loader).on_epoch_begin(types.SimpleNamespace(epoch=3))
        >>> loader.sampler.epoch
        3
    """

    def __init__(self, loader: DataLoader):
        self.sampler = getattr(loader, "sampler", None)

    def on_epoch_begin(self, trainer) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(trainer.epoch)

    def on_epoch_end(self, trainer, logs) -> None:
        if not is_distributed():
            return
        keys = [k for k, v in logs.items() if k.startswith("train_") and isinstance(v, (int, float))]
        if not keys:
            return
        dev = next(_unwrap(trainer.model).parameters()).device
        t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= world_size()
        for k, v in zip(keys, t.tolist()):
            logs[k] = v
            col = trainer.history.epochs.get(k)
            if col:
                col[-1] = v


def _unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def prepare_fit(trainer, train_data, *, checkpoint_dir=None, resume: bool = False,
                sync_batchnorm: bool = False, seed: int = 0):
    """Ready ``trainer`` for a (possibly data-parallel, possibly resumed) fit; return its data.

    Inside a process group: wrap the model in DDP (SyncBatchNorm on request), shard
    ``train_data`` with :func:`shard_loader` (the trainer's ``batch_size`` per process)
    and put a :class:`DistributedCallback` first. With ``resume``: restore the newest
    checkpoint in ``checkpoint_dir`` if there is one (the fit then runs
    ``epochs - trainer.epoch`` more epochs). Used by ``descend train``.

    >>> import tempfile
    >>> from descend.train import Trainer
    >>> from descend.train.checkpoint import save_checkpoint
    >>> data, d = (torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), tempfile.mkdtemp()
    >>> m = torch.nn.Linear(2, 2); t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1))
    >>> _ = t.fit(data, epochs=2); _ = save_checkpoint(t, d)
    >>> m2 = torch.nn.Linear(2, 2); t2 = Trainer(m2, torch.optim.SGD(m2.parameters(), lr=0.1))
    >>> prepare_fit(t2, data, checkpoint_dir=d, resume=True) is None    # one process: no loader
    True
    >>> t2.epoch, torch.equal(m2.weight, m.weight)                      # resumed after epoch 2
    (2, True)
    """
    from descend.train.checkpoint import latest_checkpoint, restore

    data = None
    if is_distributed():
        if callable(trainer.batch_size):
            raise ValueError("`batch_size` must be a number with data parallel (a batch-size schedule "
                             f"is not supported). Received: batch_size={trainer.batch_size!r}")
        if sync_batchnorm and trainer.device.type == "cpu":
            raise ValueError("`sync_batchnorm` needs CUDA devices (torch's SyncBatchNorm does not run "
                             "on CPU tensors). Received: sync_batchnorm=True on cpu")
        trainer.model = wrap_model(trainer.model, trainer.device, sync_batchnorm=sync_batchnorm)
        data = shard_loader(train_data, trainer.batch_size, seed=seed, drop_last=trainer.drop_last)
        trainer.callbacks.insert(0, DistributedCallback(data))
    elif sync_batchnorm:
        raise ValueError("`sync_batchnorm` needs data parallel (torchrun or --nproc). Received: sync_batchnorm=True")
    if resume:
        if checkpoint_dir is None:
            raise ValueError("`resume` needs a checkpoint folder. Received: checkpoint_dir=None")
        path = latest_checkpoint(checkpoint_dir)
        if path is not None:
            restore(trainer, path)
    return data


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run ``descend ARGV`` in ``nproc`` processes with ``torch.distributed.run``; its exit code.

    ``--nproc N`` / ``--nproc=N`` is removed from ``argv`` (the workers see torchrun's
    environment instead). Single node; for several machines call ``torchrun`` yourself
    with ``--nnodes`` and a rendezvous endpoint, and run ``descend train`` without
    ``--nproc``.
    """
    import subprocess
    import sys

    check_int("nproc", nproc, ge=1)
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "descend", *rest]
    return subprocess.call(cmd)
