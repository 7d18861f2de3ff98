"""Time to 94% test accuracy on MNIST-1D with a small CNN, all data on the device.

The CNN of the MNIST-1D paper (Greydanus 2024): three 1-D convolutions of 25 channels
(stride 2) and a linear classifier, about 5k parameters, trained with Adam
(lr 1e-2, batch 100) on the 4000 training signals. Every ``--eval-every`` steps the
test accuracy is computed on the device; the clock stops at the first evaluation at
or above the target (evaluation time included). Reports seconds and steps to target
and training steps/s (the per-step host overhead of a model this small), for
``descend.optim.Adam`` (backend auto) and ``torch.optim.Adam`` (its default and fused).

    python benchmarks/time_to_accuracy.py --device cpu    # writes results/time_to_accuracy_cpu.*
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import descend.optim as do  # noqa: E402
from descend.data import load  # noqa: E402


def cnn(channels=25):
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(channels * 5, 10))


OPTIMIZERS = {
    "descend Adam (auto)": lambda p: do.Adam(p, lr=1e-2),
    "torch Adam (default)": lambda p: torch.optim.Adam(p, lr=1e-2),
    "torch Adam (fused)": lambda p: torch.optim.Adam(p, lr=1e-2, fused=True),
}


def run(make_opt, data, dev, target, max_steps, eval_every, batch_size, seed):
    x, y, xt, yt = data
    torch.manual_seed(seed)
    model = cnn().to(dev)
    opt = make_opt(model.parameters())
    gen = torch.Generator(device=dev).manual_seed(seed)
    n = x.shape[0]
    perm, pos = torch.randperm(n, generator=gen, device=dev), 0
    train_time, acc, reached = 0.0, 0.0, None
    common.sync(dev)
    t0 = time.perf_counter()
    step = 0
    while step < max_steps:
        common.sync(dev)
        t = time.perf_counter()
        for _ in range(eval_every):
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=gen, device=dev), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        common.sync(dev)
        train_time += time.perf_counter() - t
        step += eval_every
        with torch.no_grad():
            acc = float((model(xt).argmax(1) == yt).float().mean())
        if acc >= target:
            reached = time.perf_counter() - t0
            break
    return {"steps": step, "reached_s": reached, "final_test_acc": acc,
            "steps_per_s": step / train_time,
            "params": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=0.94)
    p.add_argument("--seeds", type=int, default=None)
    args = p.parse_args(argv)
    dev = common.device_of(args.device)
    d = load("mnist1d", val_fraction=0.0)
    data = tuple(t.to(dev) for t in (*d.train.tensors, *d.test.tensors))
    max_steps, eval_every = (40, 20) if args.quick else (12000, 100)
    seeds = args.seeds or (1 if args.quick else 3)
    rows = []
    for seed in range(seeds):
        for name, make in OPTIMIZERS.items():
            r = run(make, data, dev, args.target, max_steps, eval_every, 100, seed)
            rows.append({"optimizer": name, "seed": seed, **r})
            print(name, seed, r, flush=True)
    payload = {"device": dev.type, "machine": common.machine(dev), "target": args.target,
               "train_size": int(data[0].shape[0]), "quick": args.quick, "rows": rows}
    md = (f"# Time to {args.target:.0%} test accuracy, MNIST-1D CNN, {dev.type}\n\n"
          f"{common.machine(dev)}\n\nThe paper's CNN ({rows[0]['params']:,} parameters), Adam lr "
          f"1e-2, batch 100, {data[0].shape[0]} training signals, test accuracy every "
          f"{eval_every} steps (up to {max_steps}); data resident on the device. "
          "`reached` is wall time to the first evaluation at or above the target "
          "(empty: not reached).\n\n")
    md += common.table(rows, [("optimizer", "optimizer", ""), ("seed", "seed", ""),
                              ("reached_s", "reached (s)", ".2f"), ("steps", "steps", ""),
                              ("final_test_acc", "test acc", ".3f"),
                              ("steps_per_s", "train steps/s", ",.0f")])
    j, m = common.write(args.out, f"time_to_accuracy_{dev.type}{'_quick' if args.quick else ''}",
                        payload, md)
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
