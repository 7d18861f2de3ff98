"""A small data-parallel job for the tests: ``torchrun --nproc_per_node 2 ddp_job.py OUT``.

Each rank records every file it writes (through ``descend.io.atomic_write``, the one
path for checkpoints and weights) in ``OUT/writes-<rank>.json``; rank 0 saves the final
weights and history to ``OUT/result.pt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import descend.io
from descend.train import Trainer
from descend.train.checkpoint import CheckpointCallback
from descend.train.distributed import (DistributedCallback, cleanup, rank, setup, shard_loader,
                                       wrap_model)

PER_RANK_BATCH = 8
EPOCHS = 3


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    return x, y


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 2))


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    writes = []
    real = descend.io.atomic_write

    def recording(path, *a, **k):
        writes.append(str(path))
        return real(path, *a, **k)

    descend.io.atomic_write = recording
    dev = setup()
    m = wrap_model(model(), dev)
    loader = shard_loader(data(), PER_RANK_BATCH, seed=5)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    cbs = [DistributedCallback(loader), CheckpointCallback(out / "ckpt", handle_signals=False)]
    t = Trainer(m, opt, callbacks=cbs, progress=False, device=dev)
    t.fit(loader, epochs=EPOCHS)
    if rank() == 0:
        torch.save({"weights": {k: v.clone() for k, v in m.module.state_dict().items()},
                    "train_loss": t.history.epochs["train_loss"]}, out / "result.pt")
    (out / f"writes-{rank()}.json").write_text(json.dumps(writes))
    cleanup()
