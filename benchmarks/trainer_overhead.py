"""The Trainer against a hand-written PyTorch loop on the same model, data and optimizer.

Samples per second of: a hand-written loop (on-device shuffling, zero_grad, forward,
cross-entropy, backward, step), ``Trainer`` with monitors off (no metrics, no gradient
norm) and ``Trainer`` with its defaults (accuracy and the per-step gradient norm).
Each repeat runs every variant for the same epochs from the same initial weights,
interleaved in a shuffled order; the best repeat of each is kept. Data is resident on
the device.

    python benchmarks/trainer_overhead.py --device cpu     # writes results/trainer_overhead_cpu.*
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import descend.optim as do  # noqa: E402
from descend.train import Trainer  # noqa: E402


def model_and_data(dev, quick, width):
    gen = torch.Generator().manual_seed(0)
    n, d, classes = (256, 40, 10) if quick else (8192, 40, 10)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, classes, generator=gen)
    y = (x @ w).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, classes)).to(dev)
    return model, x.to(dev), y.to(dev)


def hand_loop(model, opt, x, y, batch_size, epochs, dev):
    gen = torch.Generator(device=dev).manual_seed(0)
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen, device=dev)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()


def run_variant(kind, init, make_model, x, y, batch_size, epochs, dev):
    model = make_model()
    model.load_state_dict(init)
    opt = do.Adam(model.parameters(), lr=1e-3)
    common.sync(dev)
    t = time.perf_counter()
    if kind == "hand-written loop":
        hand_loop(model, opt, x, y, batch_size, epochs, dev)
    else:
        kw = dict(metrics=(), grad_norm=False) if kind == "Trainer, monitors off" else {}
        Trainer(model, opt, batch_size=batch_size, device=dev, progress=False, **kw).fit(
            (x, y), epochs=epochs)
    common.sync(dev)
    return x.shape[0] * epochs / (time.perf_counter() - t)


KINDS = ("hand-written loop", "Trainer, monitors off", "Trainer, defaults")


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    dev = common.device_of(args.device)
    repeats = args.repeats or (1 if args.quick else 7)
    epochs = 1 if args.quick else 3
    load_before = common.load_average()
    rows = []
    for width, batch_size in ([(32, 64)] if args.quick else [(256, 128), (1024, 256)]):
        model, x, y = model_and_data(dev, args.quick, width)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        make = lambda: model_and_data(dev, args.quick, width)[0]  # noqa: E731
        n_params = sum(q.numel() for q in model.parameters())
        best = {k: 0.0 for k in KINDS}
        order, kinds = random.Random(0), list(KINDS)
        for _ in range(repeats):
            order.shuffle(kinds)  # no variant always runs first
            for kind in kinds:
                best[kind] = max(best[kind], run_variant(kind, init, make, x, y, batch_size,
                                                         epochs, dev))
        for kind in KINDS:
            rows.append({"model": f"MLP 40-{width}-{width}-10", "params": n_params,
                         "batch_size": batch_size, "variant": kind, "samples_s": best[kind],
                         "vs_hand": best[kind] / best["hand-written loop"]})
        print(", ".join(f"{k}: {v:,.0f}/s" for k, v in best.items()), flush=True)
    load = {"before": load_before, "after": common.load_average()}
    payload = {"device": dev.type, "machine": common.machine(dev), "load_average_1min": load,
               "repeats": repeats, "epochs": epochs, "quick": args.quick, "rows": rows}
    md = (f"# Trainer overhead, {dev.type}\n\n{common.machine(dev)}\n\n"
          f"{common.load_line(load)}\n\n"
          f"Samples/s (best of {repeats} interleaved repeats, each in a shuffled order, of "
          f"{epochs} epochs, Adam, data "
          "on the device). Targets: >= 0.97x the hand-written loop with monitors off, "
          ">= 0.90x with the default monitors (accuracy, gradient norm).\n\n")
    md += common.table(rows, [("model", "model", ""), ("params", "params", ","),
                              ("batch_size", "batch", ""), ("variant", "variant", ""),
                              ("samples_s", "samples/s", ",.0f"), ("vs_hand", "vs hand", ".3f")])
    j, m = common.write(args.out, f"trainer_overhead_{dev.type}{'_quick' if args.quick else ''}",
                        payload, md)
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
