"""torch.compile of ``opt.step`` for every registry optimizer: graphs per step with
``fullgraph=True`` (0 graph breaks), recompiles while a tensor learning rate changes
between steps, and graph breaks against torch.optim's with the same settings.

    python benchmarks/compile_check.py          # writes results/compile_check_cpu.md/.json

Counted with a counting compiler backend (graphs are traced, not lowered).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import descend.optim as do  # noqa: E402

TORCH = {"sgd": ("SGD", {}), "momentum": ("SGD", {"momentum": 0.9}),
         "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}), "adagrad": ("Adagrad", {}),
         "rmsprop": ("RMSprop", {}), "adadelta": ("Adadelta", {}), "adam": ("Adam", {}),
         "adamw": ("AdamW", {})}


class Counter:
    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def run(make, fullgraph, tensor_lr, warm, steps=6, closure=False):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8, 4, generator=g)),
              torch.nn.Parameter(torch.randn(4, generator=g))]
    opt = make(params, torch.tensor(0.01) if tensor_lr else 0.01)

    def loss():
        opt.zero_grad()
        out = sum((p ** 2).sum() for p in params)
        out.backward()
        return out

    for _ in range(warm):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step(loss) if closure else opt.step()
    counter = Counter()
    step = torch.compile(opt.step, backend=counter, fullgraph=fullgraph)
    graphs = []
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn_like(p)
        step(loss) if closure else step()
        graphs.append(counter.graphs)
        for grp in opt.param_groups:
            if torch.is_tensor(grp["lr"]):
                grp["lr"].fill_(float(grp["lr"]) * 0.9)
            else:
                grp["lr"] *= 0.9
    return graphs


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rows = []
    load = {"before": common.load_average()}
    for name in do.OPTIMIZERS.names():
        closure = name == "nesterov_lookahead"
        row = {"optimizer": name}
        t0 = time.perf_counter()
        for label, kw in [("fullgraph_tensor_lr_warm", dict(fullgraph=True, tensor_lr=True, warm=1)),
                          ("tensor_lr_cold", dict(fullgraph=False, tensor_lr=True, warm=0)),
                          ("float_lr_warm", dict(fullgraph=False, tensor_lr=False, warm=1))]:
            try:
                g = run(lambda ps, lr: do.create(name, ps, lr=lr), closure=closure, **kw)
                row[label] = "graphs after each step " + ",".join(map(str, g))
            except Exception as e:  # noqa: BLE001 - reported
                row[label] = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        if name in TORCH:
            cls, tkw = TORCH[name]
            g = run(lambda ps, lr: getattr(torch.optim, cls)(ps, lr=lr, **tkw), False, True, 0)
            row["torch_tensor_lr_cold"] = "graphs after each step " + ",".join(map(str, g))
            try:
                run(lambda ps, lr: getattr(torch.optim, cls)(ps, lr=lr, **tkw), True, True, 1)
                row["torch_fullgraph"] = "compiles"
            except Exception as e:  # noqa: BLE001
                row["torch_fullgraph"] = f"fails: {type(e).__name__}"
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(row, flush=True)
    load["after"] = common.load_average()
    cols = [("optimizer", "optimizer", ""), ("fullgraph_tensor_lr_warm", "fullgraph, tensor lr, after an eager step", ""),
            ("tensor_lr_cold", "tensor lr, from the first step", ""),
            ("float_lr_warm", "float lr, after an eager step", ""),
            ("torch_tensor_lr_cold", "torch.optim, tensor lr, from the first step", ""),
            ("torch_fullgraph", "torch.optim fullgraph", "")]
    md = (f"# torch.compile of opt.step, cpu\n\n{common.machine(torch.device('cpu'))}\n\n"
          f"{common.load_line(load)}\n\nGraphs compiled so far after each of 6 compiled steps "
          "(a counting backend), the learning rate changed between steps. A count that stays "
          "flat compiles nothing again; two graphs in one step is a graph break.\n\n"
          + common.table(rows, cols))
    j, m = common.write(args.out, "compile_check_cpu", {"load_average_1min": load, "rows": rows}, md)
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
