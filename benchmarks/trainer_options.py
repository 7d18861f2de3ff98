"""The Trainer's precision=, accumulate= and compile= options against its float32 default.

Samples per second of ``Trainer.fit`` on an MLP with data on the device, for:
``precision="32"`` (the peer every ratio is against), ``"bf16-mixed"``, ``"16-mixed"``
(where the device has a GradScaler), ``accumulate=4`` with a quarter of the batch (the
same examples per optimizer step) and ``compile=True``. Each variant's trainer first fits
one warm-up epoch (compilation, autocast caches), then the timed epochs; the variants run
interleaved in a shuffled order, repeated, and the best repeat of each is kept.

    OMP_NUM_THREADS=1 python benchmarks/trainer_options.py --device cpu   # writes results/trainer_options_cpu.*
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

from descend.train import Trainer  # noqa: E402

VARIANTS = {
    "32": {},
    "bf16-mixed": {"precision": "bf16-mixed"},
    "16-mixed": {"precision": "16-mixed"},
    "accumulate=4 (batch/4)": {"accumulate": 4},
    "compile=True": {"compile": True},
}


def data(dev, n, d=40, classes=10):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen)
    y = (x @ torch.randn(d, classes, generator=gen)).argmax(1)
    return x.to(dev), y.to(dev)


def make_model(dev, width, d=40, classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, classes)).to(dev)


def build(kind, dev, width, batch_size):
    kw = dict(VARIANTS[kind])
    bs = batch_size // kw.get("accumulate", 1)
    model = make_model(dev, width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Trainer(model, opt, batch_size=bs, device=dev, progress=False, metrics=(), **kw)


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024],
                   help="MLP widths (batch 128 for 256, 256 for wider; default 256 1024)")
    args = p.parse_args(argv)
    dev = common.device_of(args.device)
    repeats = args.repeats or (1 if args.quick else 5)
    epochs, n = (1, 512) if args.quick else (2, 8192)
    kinds = list(VARIANTS)
    try:
        torch.amp.GradScaler(dev.type)
    except Exception:  # noqa: BLE001 - a torch without a GradScaler for this device
        kinds.remove("16-mixed")
    load_before = common.load_average()
    rows = []
    sizes = [(w, 128 if w <= 256 else 256) for w in args.widths]
    for width, batch_size in ([(32, 64)] if args.quick else sizes):
        x, y = data(dev, n)
        trainers = {}
        for kind in kinds:
            trainers[kind] = build(kind, dev, width, batch_size)
            trainers[kind].fit((x, y), epochs=1)  # warm-up: compilation, first-call costs
        best = {k: 0.0 for k in kinds}
        order = random.Random(0)
        for _ in range(repeats):
            order.shuffle(kinds)
            for kind in kinds:
                common.sync(dev)
                t = time.perf_counter()
                trainers[kind].fit((x, y), epochs=epochs)
                common.sync(dev)
                best[kind] = max(best[kind], n * epochs / (time.perf_counter() - t))
        for kind in VARIANTS:
            if kind in best:
                rows.append({"model": f"MLP 40-{width}-{width}-10", "batch_size": batch_size,
                             "variant": kind, "samples_s": best[kind], "vs_32": best[kind] / best["32"]})
        print(", ".join(f"{k}: {v:,.0f}/s" for k, v in best.items()), flush=True)
    load = {"before": load_before, "after": common.load_average()}
    payload = {"device": dev.type, "machine": common.machine(dev), "load_average_1min": load,
               "repeats": repeats, "epochs": epochs, "examples": n, "quick": args.quick, "rows": rows}
    md = (f"# Trainer precision / accumulate / compile, {dev.type}\n\n{common.machine(dev)}\n\n"
          f"{common.load_line(load)}\n\n"
          f"Samples/s of Trainer.fit (best of {repeats} interleaved repeats, each in a shuffled "
          f"order, of {epochs} epochs of {n} examples after one warm-up epoch; Adam, no metrics, "
          "data on the device), and the ratio to precision='32' in the same run. No target: "
          "the figures say what each option costs on this device.\n\n")
    md += common.table(rows, [("model", "model", ""), ("batch_size", "batch", ""),
                              ("variant", "variant", ""), ("samples_s", "samples/s", ",.0f"),
                              ("vs_32", "vs 32", ".3f")])
    j, m = common.write(args.out, f"trainer_options_{dev.type}{'_quick' if args.quick else ''}",
                        payload, md)
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
