"""Steps to a target validation accuracy on MNIST-1D with descend's CNN: K-FAC and Shampoo
against Adam, each with its learning rate tuned with the same small budget.

The protocol is fixed here, before any run:

- data: ``descend.data.load("mnist1d", val_fraction=0.1)``: 3600 training, 400 validation
  and 1000 test signals (the package's reference set, ``data_seed=42``);
- model: ``descend.nn.MODELS.create("cnn", input_shape=(40,), num_classes=10)`` (two
  Conv1d stages of 16 and 32 channels with max pooling, a linear head: 4,842 parameters);
- training: minibatches of 100 in a seeded order, ``optimizer.step(closure)``, at most
  ``--max-steps`` (1200) steps; validation accuracy every 50 steps; a run stops at the first
  evaluation at or above the target (``--target`` 0.85), or when its loss is not finite;
- tuning budget, the same for every method: 6 learning rates on a half-decade log grid
  placed on the method's scale (below), 3 seeds (0, 1, 2); the score of a rate is the
  median over seeds of the steps to the target (not reached: infinite), ties broken by the
  mean final validation accuracy; every other hyperparameter stays fixed (below);
- confirmation: the selected rate of each method on 3 new seeds (3, 4, 5): steps to the
  target (validation) and the test accuracy when the run stops.

Fixed settings: Adam (betas 0.9, 0.999); K-FAC (momentum 0.9, damping 1e-3, stat_decay
0.95, inverses every 10 steps, KL clip 1e-3: its defaults); Shampoo (AdaGrad grafting,
momentum 0.9, roots every 10 steps, eps 1e-6). Threads: 1.

    OMP_NUM_THREADS=1 python benchmarks/second_order_mnist1d.py   # writes results/second_order_mnist1d_cpu.*
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import descend.optim as do  # noqa: E402
from descend.data import load  # noqa: E402
from descend.nn import MODELS  # noqa: E402

GRID = {
    "adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "kfac": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "shampoo": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
}
FIXED = {
    "adam": {},
    "kfac": {},
    "shampoo": {"momentum": 0.9, "update_interval": 10, "graft": "adagrad"},
}
EVAL_EVERY = 50
BATCH = 100


def run(name, lr, seed, data, target, max_steps):
    (x, y), (xv, yv), (xt, yt) = data
    torch.manual_seed(seed)
    model = MODELS.create("cnn", input_shape=(40,), num_classes=10)
    opt = do.create(name, model.parameters(), lr=lr, **FIXED[name])
    gen = torch.Generator().manual_seed(seed)
    order, steps, reached, curve = torch.randperm(len(x), generator=gen), 0, None, []
    pos, t0, val_acc, diverged = 0, time.perf_counter(), 0.0, False
    while steps < max_steps:
        model.train()
        for _ in range(EVAL_EVERY):
            if pos + BATCH > len(x):
                order, pos = torch.randperm(len(x), generator=gen), 0
            idx = order[pos:pos + BATCH]
            pos += BATCH

            def closure():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                return loss
            loss = float(opt.step(closure).detach())
            steps += 1
            if not math.isfinite(loss):
                diverged = True
                break
        if diverged:
            break
        model.eval()
        with torch.no_grad():
            val_acc = float((model(xv).argmax(1) == yv).float().mean())
        curve.append((steps, round(val_acc, 4)))
        if val_acc >= target:
            reached = steps
            break
    with torch.no_grad():
        model.eval()
        test_acc = float((model(xt).argmax(1) == yt).float().mean()) if not diverged else None
    return {"optimizer": name, "lr": lr, "seed": seed, "steps_to_target": reached,
            "steps": steps, "final_val_acc": val_acc, "test_acc": test_acc, "diverged": diverged,
            "seconds": round(time.perf_counter() - t0, 2), "curve": curve}


def score(rows):
    """(median steps to target, -mean final validation accuracy): lower is better."""
    steps = [r["steps_to_target"] if r["steps_to_target"] is not None else math.inf for r in rows]
    return statistics.median(steps), -statistics.fmean(r["final_val_acc"] for r in rows)


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=0.85)
    p.add_argument("--max-steps", type=int, default=1200)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    d = load("mnist1d", val_fraction=0.1)
    data = (d.train.tensors, d.val.tensors, d.test.tensors)
    grid = {k: v[2:4] for k, v in GRID.items()} if args.quick else GRID
    tune_seeds, confirm_seeds = ((0,), (1,)) if args.quick else ((0, 1, 2), (3, 4, 5))
    max_steps = 100 if args.quick else args.max_steps
    load_info = {"before": common.load_average()}
    tuning, chosen = [], {}
    for name, lrs in grid.items():
        best = None
        for lr in lrs:
            rows = [run(name, lr, s, data, args.target, max_steps) for s in tune_seeds]
            for r in rows:
                print({k: v for k, v in r.items() if k != "curve"}, flush=True)
            tuning += rows
            sc = score(rows)
            if best is None or sc < best[0]:
                best = (sc, lr)
        chosen[name] = best[1]
    confirm = []
    for seed in confirm_seeds:          # interleaved: the methods alternate seed by seed
        for name in grid:
            r = run(name, chosen[name], seed, data, args.target, max_steps)
            print("confirm", {k: v for k, v in r.items() if k != "curve"}, flush=True)
            confirm.append(r)
    load_info["after"] = common.load_average()
    payload = {"machine": common.machine(torch.device("cpu")), "load": load_info,
               "target": args.target, "max_steps": max_steps, "grid": grid, "fixed": FIXED,
               "chosen_lr": chosen, "tuning": tuning, "confirm": confirm, "quick": args.quick}
    md = [f"# Steps to {args.target:.0%} validation accuracy, MNIST-1D CNN, K-FAC and Shampoo vs Adam\n",
          f"{common.machine(torch.device('cpu'))}\n", common.load_line(load_info) + "\n",
          f"Protocol (fixed before the runs; see the script's docstring): batch {BATCH}, at most "
          f"{max_steps} steps, validation accuracy every {EVAL_EVERY} steps; per method "
          f"{len(next(iter(grid.values())))} learning rates x {len(tune_seeds)} seeds for tuning "
          f"(score: median steps to the "
          f"target), then the chosen rate on {len(confirm_seeds)} new seeds.\n",
          "## Tuning (median steps to target over the tuning seeds; inf: not reached)\n",
          "| optimizer | lr | steps to target per seed | median | mean final val acc |",
          "| --- | --- | --- | --- | --- |"]
    for name, lrs in grid.items():
        for lr in lrs:
            rows = [r for r in tuning if r["optimizer"] == name and r["lr"] == lr]
            med, neg_acc = score(rows)
            per = ", ".join(str(r["steps_to_target"]) if r["steps_to_target"] else
                            ("div" if r["diverged"] else "-") for r in rows)
            mark = " **chosen**" if chosen[name] == lr else ""
            md.append(f"| {name} | {lr:g}{mark} | {per} | {med} | {-neg_acc:.3f} |")
    md += ["", "## Confirmation (chosen lr, new seeds)\n",
           "| optimizer | lr | seed | steps to target | val acc at stop | test acc at stop | seconds |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in confirm:
        md.append(f"| {r['optimizer']} | {r['lr']:g} | {r['seed']} | {r['steps_to_target'] or '-'} | "
                  f"{r['final_val_acc']:.3f} | {r['test_acc'] if r['test_acc'] is None else round(r['test_acc'], 3)} | "
                  f"{r['seconds']} |")
    med = {name: score([r for r in confirm if r["optimizer"] == name])[0] for name in grid}
    md += ["", "Median steps to the target on the confirmation seeds: " +
           ", ".join(f"{k} {v}" for k, v in med.items()) + ".\n"]
    j, m = common.write(args.out, f"second_order_mnist1d_cpu{'_quick' if args.quick else ''}",
                        payload, "\n".join(md) + "\n")
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
