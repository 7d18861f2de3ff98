"""Data-parallel scaling efficiency: throughput of W processes vs one.

Weak scaling (the per-process batch is fixed, the global batch grows with W):

    efficiency(W) = throughput(W) / (W * throughput(1))

where throughput is training examples per second over the timed steps (after warm-up
steps), measured on rank 0 between two barriers. Each configuration is launched with
``torch.distributed.run`` (gloo on CPU, NCCL on GPU) and given one thread per process.

    python benchmarks/ddp_scaling.py                 # 1 and 2 processes, writes results/ddp_scaling.md
    python benchmarks/ddp_scaling.py --nprocs 1 2 4  # on a machine with more cores / GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    from descend.train.distributed import cleanup, rank, setup, world_size, wrap_model

    torch.set_num_threads(1)
    dev = setup(device=args.device)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(args.features, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, 10))
    model = wrap_model(model, dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, args.features, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    dist.barrier()
    seconds = time.perf_counter() - t0
    if rank() == 0:
        n = args.steps * args.batch * world_size()
        print("RESULT " + json.dumps({"world": world_size(), "seconds": seconds, "examples_per_s": n / seconds}))
    cleanup()


def launch(nproc: int, args) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, "--worker", f"--steps={args.steps}", f"--warmup={args.warmup}",
           f"--batch={args.batch}", f"--features={args.features}", f"--hidden={args.hidden}",
           f"--device={args.device}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=128, help="per-process batch")
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=3, help="best of this many launches per W")
    p.add_argument("--out", default=str(HERE / "results" / "ddp_scaling.md"))
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for w in args.nprocs:
        best = max((launch(w, args) for _ in range(args.repeats)), key=lambda r: r["examples_per_s"])
        rows.append(best)
        print(f"W={w}: {best['examples_per_s']:.0f} examples/s", flush=True)
    base = rows[0]["examples_per_s"] / rows[0]["world"]
    import torch

    lines = [
        "# Data-parallel scaling (DDP)",
        "",
        f"`python benchmarks/ddp_scaling.py --device {args.device}` — MLP {args.features}-{args.hidden}-"
        f"{args.hidden}-10, SGD with momentum, per-process batch {args.batch}, {args.steps} timed steps "
        f"after {args.warmup} warm-up steps, one thread per process, best of {args.repeats} launches.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"backend {'nccl' if args.device == 'cuda' else 'gloo'}; 1-minute load average when the "
        f"benchmark started: {load_before:.1f} (a load above the core count means other work "
        f"shared the cores, and W processes could not each get one).",
        "",
        "Weak scaling: efficiency(W) = throughput(W) / (W x throughput(1)).",
        "",
        "| processes | global batch | examples/s | speed-up | efficiency |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        w = r["world"]
        speed = r["examples_per_s"] / (base * rows[0]["world"])
        lines.append(f"| {w} | {w * args.batch} | {r['examples_per_s']:.0f} | {speed:.2f}x | "
                     f"{r['examples_per_s'] / (w * base):.0%} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
