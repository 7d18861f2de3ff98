"""Step-time overhead of the second-order, Kronecker-factored, large-batch and SAM
optimizers against Adam, measured in the same run, interleaved and repeated.

A step is what a training loop pays: ``optimizer.step(closure)`` with the closure doing
zero_grad, forward, loss and backward on a minibatch of 100 MNIST-1D signals (so a method
that evaluates the closure twice, as SAM, or several times, as L-BFGS with a line search
or Hessian-free, pays for it). Two models: descend's MNIST-1D CNN (4,842 parameters) for
the layer-wise methods, and logistic regression (410 parameters) for the methods with an
n x n matrix (Newton, BFGS) and the other full-vector methods (CG, L-BFGS). In each
round every optimizer runs ``--block`` steps in turn (the order rotates between rounds);
the figure is the median over rounds of (seconds per step) / (Adam's seconds per step in
the same round), with the interquartile range. Threads: 1.

    OMP_NUM_THREADS=1 python benchmarks/second_order_step.py   # writes results/second_order_step_cpu.*
"""

from __future__ import annotations

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

CNN = {
    "adam": ("adam", {"lr": 3e-3}),
    "kfac": ("kfac", {"lr": 0.01}),
    "shampoo (roots every 10)": ("shampoo", {"lr": 0.03, "momentum": 0.9, "update_interval": 10}),
    "shampoo (roots every step)": ("shampoo", {"lr": 0.03, "momentum": 0.9}),
    "lars": ("lars", {"lr": 1.0}),
    "lamb": ("lamb", {"lr": 1e-2}),
    "sam (base adam)": ("sam", {"base": "adam", "lr": 3e-3}),
    "lbfgs (max_iter=1)": ("lbfgs", {"max_iter": 1}),
    "hessian_free (cg_max_iter=10)": ("hessian_free", {"cg_max_iter": 10}),
}
LOGISTIC = {
    "adam": ("adam", {"lr": 1e-2}),
    "newton": ("newton", {"damping": 1e-2}),
    "bfgs": ("bfgs", {}),
    "cg": ("cg", {}),
    "lbfgs (max_iter=1)": ("lbfgs", {"max_iter": 1}),
}


def make(model_name, name, kwargs, seed=0):
    torch.manual_seed(seed)
    model = MODELS.create(model_name, input_shape=(40,), num_classes=10)
    return model, do.create(name, model.parameters(), **kwargs)


def steps(model, opt, x, y, start, n):
    for i in range(start, start + n):
        lo = (i * 100) % (len(x) - 100)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[lo:lo + 100]), y[lo:lo + 100])
            loss.backward()
            return loss
        opt.step(closure)


def measure(model_name, table, x, y, rounds, block, warmup):
    runs = {label: make(model_name, name, kw) for label, (name, kw) in table.items()}
    for model, opt in runs.values():
        steps(model, opt, x, y, 0, warmup)
    labels = list(table)
    per_round = []
    for r in range(rounds):
        times = {}
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            model, opt = runs[label]
            t = time.perf_counter()
            steps(model, opt, x, y, warmup + r * block, block)
            times[label] = (time.perf_counter() - t) / block
        per_round.append(times)
    rows = []
    for label in labels:
        ratios = [t[label] / t["adam"] for t in per_round]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        rows.append({"model": model_name, "optimizer": label,
                     "ms_per_step": 1000 * statistics.median(t[label] for t in per_round),
                     "ratio_to_adam": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2],
                     "params": sum(p.numel() for p in runs[label][0].parameters())})
    return rows


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    d = load("mnist1d", val_fraction=0.1)
    x, y = d.train.tensors
    rounds, block, warmup = (2, 3, 2) if args.quick else (args.rounds, args.block, 10)
    load_info = {"before": common.load_average()}
    rows = measure("cnn", CNN, x, y, rounds, block, warmup)
    rows += measure("logistic", LOGISTIC, x, y, rounds, block, warmup)
    load_info["after"] = common.load_average()
    for r in rows:
        print(r, flush=True)
    payload = {"machine": common.machine(torch.device("cpu")), "load": load_info, "rounds": rounds,
               "block": block, "rows": rows, "quick": args.quick}
    md = ("# Step time against Adam: second-order, Kronecker-factored, large-batch, SAM (cpu)\n\n"
          f"{common.machine(torch.device('cpu'))}\n\n{common.load_line(load_info)}\n\n"
          f"One step = step(closure) with forward + backward on 100 MNIST-1D signals. {rounds} "
          f"rounds of {block} steps per optimizer, interleaved; ratio = median over rounds of "
          "the step time over Adam's in the same round (IQR in brackets).\n\n")
    rows_md = [{**r, "iqr": f"[{r['ratio_q1']:.2f}, {r['ratio_q3']:.2f}]"} for r in rows]
    md += common.table(rows_md, [("model", "model", ""), ("params", "params", ","),
                                 ("optimizer", "optimizer", ""), ("ms_per_step", "ms / step", ".2f"),
                                 ("ratio_to_adam", "x Adam", ".2f"), ("iqr", "IQR", "")])
    j, m = common.write(args.out, f"second_order_step_cpu{'_quick' if args.quick else ''}", payload, md)
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
