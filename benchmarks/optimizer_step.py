"""Time one optimizer step: descend (reference, auto and each backend) vs torch.optim
(single-tensor, foreach, fused, torch.compile), on a GPT-2-shaped and a ResNet-50-shaped
set of parameters, in one run.

Every round times every implementation once, in a new shuffled order (interleaved, so
that other work on the machine disturbs all of them alike). Reports, per implementation,
the median ms/step, the bytes an ideal one-pass step moves per second (GB/s) and that as
a % of the copy bandwidth measured in the same rounds, and the paired ratio to torch's
fastest implementation of the same algorithm: in each round the time over the fastest
torch time of that round, then the median over the rounds (and its 10%-90% range).

    python benchmarks/optimizer_step.py --device cpu          # 28M GPT-shaped + ResNet-50 (25.6M)
    python benchmarks/optimizer_step.py --device cuda         # GPT-2 small (124M), fp32 and bf16
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import descend.optim as do  # noqa: E402
from descend.optim import backends  # noqa: E402

# name: (descend class, torch class, kwargs, bytes moved per parameter in fp32 by one pass)
ALGORITHMS = {
    "sgd": ("SGD", "SGD", dict(lr=1e-3), 12),                           # r p g, w p
    "sgd_momentum": ("SGD", "SGD", dict(lr=1e-3, momentum=0.9), 20),   # r p g b, w p b
    "adagrad": ("Adagrad", "Adagrad", dict(lr=1e-3), 20),               # r p g s, w p s
    "rmsprop": ("RMSprop", "RMSprop", dict(lr=1e-4), 20),               # r p g v, w p v
    "rmsprop_centered": ("RMSprop", "RMSprop", dict(lr=1e-4, centered=True), 28),
    "adadelta": ("Adadelta", "Adadelta", dict(lr=1.0), 28),             # r p g v a, w p v a
    "adam": ("Adam", "Adam", dict(lr=1e-4), 28),                        # r p g m v, w p m v
    "adamw": ("AdamW", "AdamW", dict(lr=1e-4), 28),
}
TORCH_FUSED = {"cpu": {"SGD", "Adagrad", "Adam", "AdamW"}, "cuda": {"SGD", "Adam", "AdamW"}}


def gpt2_shapes(layers=12, width=768, vocab=50257, context=1024):
    """GPT-2's parameter shapes (tied embeddings): 124M and 148 tensors at the defaults."""
    shapes = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (width, 3 * width), (3 * width,), (width, width), (width,),
                   (width,), (width,), (width, 4 * width), (4 * width,), (4 * width, width), (width,)]
    return shapes + [(width,), (width,)]


def resnet50_shapes(width=64, classes=1000):
    """ResNet-50's conv, batch-norm and fc shapes: 25.6M and 161 tensors at width 64."""
    shapes = [(width, 3, 7, 7), (width,), (width,)]
    cin = width
    for stage, blocks in enumerate([3, 4, 6, 3]):
        mid = width * 2 ** stage
        for b in range(blocks):
            for co, ci, k in [(mid, cin, 1), (mid, mid, 3), (4 * mid, mid, 1)]:
                shapes += [(co, ci, k, k), (co,), (co,)]
            if b == 0:
                shapes += [(4 * mid, cin, 1, 1), (4 * mid,), (4 * mid,)]
            cin = 4 * mid
    return shapes + [(classes, cin), (classes,)]


def parameter_sets(dev, quick):
    if quick:
        return {"gpt2_tiny": gpt2_shapes(2, 32, 512, 64), "resnet_tiny": resnet50_shapes(4, 10)}
    if dev.type == "cuda":
        return {"gpt2_small_124M": gpt2_shapes(), "resnet50_25M": resnet50_shapes()}
    # 12 layers of width 384, a 16k vocabulary: 27.9M parameters in 148 tensors
    return {"gpt_28M": gpt2_shapes(12, 384, 16384, 1024), "resnet50_25M": resnet50_shapes()}


def implementations(algo, dev, compile_torch, only_auto=False):
    """(label, factory(params) -> step callable) for every implementation of ``algo``
    (``only_auto``: torch's and descend's automatic choice only)."""
    dcls, tcls, kw, _ = ALGORITHMS[algo]
    T, D = getattr(torch.optim, tcls), getattr(do, dcls)
    impls = [("torch single", lambda p: T(p, foreach=False, **kw).step),
             ("torch foreach", lambda p: T(p, foreach=True, **kw).step)]
    if tcls in TORCH_FUSED.get(dev.type, ()):
        impls.append(("torch fused", lambda p: T(p, fused=True, **kw).step))
    if compile_torch:
        def compiled(p):
            opt = T(p, foreach=True, **kw)
            return torch.compile(opt.step)
        impls.append(("torch compiled", compiled))
    if only_auto:
        impls.append(("descend auto", lambda p: D(p, **kw).step))
        return impls
    impls.append(("descend reference", lambda p: D(p, backend="reference", **kw).step))
    probe = D([torch.nn.Parameter(torch.zeros(2, device=dev))], **kw)
    for backend in ("tiled", "kernel", "triton", "foreach", "fused"):
        if backend == "triton" and dev.type != "cuda":
            continue   # the interpreter: correct, not fast
        if backend == "tiled" and dev.type == "cuda":
            continue
        group = dict(probe.param_groups[0], backend=backend)
        if backends.choose(probe.transform, group, probe.param_groups[0]["params"])[0]:
            impls.append((f"descend {backend}", lambda p, b=backend: D(p, backend=b, **kw).step))
    impls.append(("descend auto", lambda p: D(p, **kw).step))
    return impls


def bench_set(name, shapes, dev, algos, repeats, steps, compile_torch, dtype=torch.float32,
              only_auto=False):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dev, dtype)) for s in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(dev, dtype)
    n = sum(p.numel() for p in params)
    src = torch.randn(n, generator=gen).to(dev)  # copy bandwidth on the set's own size
    dst = torch.empty_like(src)
    rows = []
    for algo in algos:
        impls = implementations(algo, dev, compile_torch, only_auto)
        steps_fns = []
        for label, make in impls:
            fn = make(params)
            for _ in range(3):  # state, compilation
                fn()
            steps_fns.append((label, fn))
        times: dict[str, list[float]] = {label: [] for label, _ in impls}
        copies = []
        order = random.Random(0)
        for _ in range(repeats):  # interleaved: each round times every implementation,
            copies.append(common.timeit(lambda: dst.copy_(src), dev, steps))
            order.shuffle(steps_fns)  # in a new order (no implementation always runs first)
            for label, fn in steps_fns:
                times[label].append(common.timeit(fn, dev, steps))
        median = {label: statistics.median(t) for label, t in times.items()}
        # torch's fastest implementation: the one with the smallest median; each round's
        # time of every implementation is then divided by its time in the same round
        torch_best = min((k for k in times if k.startswith("torch")), key=median.get)
        fastest = times[torch_best]
        bandwidth = 2 * src.numel() * 4 / statistics.median(copies) / 1e9
        auto = getattr(do, ALGORITHMS[algo][0])([torch.nn.Parameter(params[0].detach().clone())],
                                               **ALGORITHMS[algo][2])
        del steps_fns
        gc.collect()
        picked = backends.choose(auto.transform, auto.param_groups[0], params)[0]
        nbytes = ALGORITHMS[algo][3] * n * (params[0].element_size() / 4 if dtype != torch.float32
                                            else 1)
        for label, t in times.items():
            ratios = sorted(x / f for x, f in zip(t, fastest))
            gbs = nbytes / median[label] / 1e9
            rows.append({"set": name, "params": n, "tensors": len(shapes), "algorithm": algo,
                         "torch_fastest": torch_best,
                         "dtype": str(dtype).replace("torch.", ""), "copy_gb_s": bandwidth,
                         "implementation": label + (f" ({picked})" if label == "descend auto" else ""),
                         "ms": median[label] * 1e3, "gb_s": gbs, "pct_copy": 100 * gbs / bandwidth,
                         "vs_torch_fastest": statistics.median(ratios),
                         "ratio_p10": ratios[len(ratios) // 10],
                         "ratio_p90": ratios[min(len(ratios) - 1, (9 * len(ratios)) // 10)],
                         "rounds": repeats})
        print(f"{name} {algo} (copy {bandwidth:.1f} GB/s): "
              + ", ".join(f"{r['implementation']} {r['ms']:.2f}ms x{r['vs_torch_fastest']:.2f}"
                          for r in rows if r["set"] == name and r["algorithm"] == algo),
              flush=True)
    return rows


def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile'd torch.optim")
    p.add_argument("--only-auto", action="store_true",
                   help="time torch's implementations and descend's automatic choice only")
    p.add_argument("--algorithms", default=None,
                   help=f"comma-separated, of {','.join(ALGORITHMS)} (default all; --quick: adam,rmsprop)")
    args = p.parse_args(argv)
    dev = common.device_of(args.device)
    sets = parameter_sets(dev, args.quick)
    repeats = args.repeats or (1 if args.quick else 20)
    steps = 1
    compile_torch = not (args.quick or args.no_compile)
    load_before = common.load_average()
    rows = []
    dtypes = [torch.float32] + ([torch.bfloat16] if dev.type == "cuda" and not args.quick else [])
    for dtype in dtypes:
        for name, shapes in sets.items():
            algos = args.algorithms or ("adam,rmsprop" if args.quick else ",".join(ALGORITHMS))
            rows += bench_set(name, shapes, dev, algos.split(","), repeats, steps,
                              compile_torch, dtype, args.only_auto)
    load = {"before": load_before, "after": common.load_average()}
    payload = {"device": dev.type, "machine": common.machine(dev), "load_average_1min": load,
               "repeats": repeats, "steps_per_repeat": steps, "quick": args.quick, "rows": rows}
    md = (f"# Optimizer step, {dev.type}\n\n{common.machine(dev)}\n\n"
          f"{common.load_line(load)}\n\n"
          "Copy bandwidth (`dst.copy_(src)` of one fp32 tensor as large as the set) is "
          "measured in the same rounds, interleaved with the steps. Each of the "
          f"{repeats} rounds times one step of every implementation, in a shuffled order. "
          "`ms/step` is the median over the rounds; GB/s counts the bytes an ideal one-pass "
          "step moves (Adam: 28 per fp32 parameter). `vs torch` is the paired median: torch's "
          "fastest implementation is the one with the smallest median; in each round an "
          "implementation's time is divided by that one's time in the same round, and the "
          "median of the ratios is reported (<= 1 is faster or equal); `p10-p90` its spread. "
          "`descend auto` shows the backend it chose.\n\n")
    md += common.table(rows, [("set", "set", ""), ("dtype", "dtype", ""),
                              ("algorithm", "algorithm", ""),
                              ("implementation", "implementation", ""), ("ms", "ms/step", ".2f"),
                              ("gb_s", "GB/s", ".1f"), ("copy_gb_s", "copy GB/s", ".1f"),
                              ("pct_copy", "% copy BW", ".0f"),
                              ("vs_torch_fastest", "vs torch (paired median)", ".2f"),
                              ("ratio_p10", "p10", ".2f"), ("ratio_p90", "p90", ".2f")])
    j, m = common.write(args.out, f"optimizer_step_{dev.type}{'_quick' if args.quick else ''}",
                        payload, md)
    print(f"wrote {j} and {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
