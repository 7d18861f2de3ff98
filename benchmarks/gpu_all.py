"""Every GPU check and benchmark of descend in one call, for a machine lent with a GPU for
minutes: run it from the repository root, it installs nothing, needs no network, and
stops each part at its time limit so the whole run stays within about 8 minutes.

    python benchmarks/gpu_all.py                 # writes benchmarks/results/gpu_*.md/.json

Parts (each in its own process, with its own time limit):
1. the environment (torch, Triton, GPU) and the copy bandwidth;
2. correctness on CUDA: every registry optimizer on every backend the dispatcher offers
   ("triton", "fused", "foreach", "tiled") against the reference path on the GPU, in
   float32 (the largest difference, and whether "triton" is bitwise equal) and bfloat16;
   ``capturable=True`` (a CUDA-graph capture of the step); a changing tensor learning rate
   (Triton compiles nothing again);
3. the test suite's GPU tests (``pytest -m gpu``), when pytest is installed;
4. ``optimizer_step.py --device cuda`` (124M-parameter GPT-2 set and ResNet-50 set, float32
   and bfloat16, interleaved rounds), ``trainer_overhead.py`` and ``time_to_accuracy.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUDGET_S = 470


def _run(cmd, timeout, env=None):
    t = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})
        return {"cmd": " ".join(cmd), "rc": p.returncode, "seconds": round(time.monotonic() - t, 1),
                "tail": (p.stdout + p.stderr)[-3000:]}
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"cmd": " ".join(cmd), "rc": "timeout", "seconds": timeout, "tail": out[-3000:]}


CHECK = r'''
import json, sys, time, torch
sys.path.insert(0, "src")
import descend.optim as do
from descend.optim import backends
assert torch.cuda.is_available(), "no CUDA"
dev = torch.device("cuda")
out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
try:
    import triton; out["triton"] = triton.__version__
except ImportError:
    out["triton"] = None
n = 1 << 26
a = torch.randn(n, device=dev); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): b.copy_(a)
torch.cuda.synchronize()
out["copy_gb_s"] = 2 * n * 4 * 20 / (time.perf_counter() - t) / 1e9
def run(name, backend, dtype, steps=8, **kw):
    g = torch.Generator(device="cpu").manual_seed(0)
    shapes = [(257, 129), (1000,), (64, 3, 3, 3), (), (0,)]
    ps = [torch.nn.Parameter(torch.randn(s, generator=g).to(dev, dtype)) for s in shapes]
    opt = do.create(name, ps, backend=backend, lr=0.01 if name != "adadelta" else 1.0, **kw)
    for t in range(steps):
        for p in ps:
            p.grad = torch.sin(p.detach().float() * (1 + t) + 0.3).to(dtype)
        opt.step()
        for grp in opt.param_groups: grp["lr"] = grp["lr"] * 0.9
    return torch.cat([p.detach().float().reshape(-1) for p in ps]), opt.last_backend
rows = []
for name in do.OPTIMIZERS.names():
    if name == "nesterov_lookahead":
        continue
    for dtype in (torch.float32, torch.bfloat16):
        ref, _ = run(name, "reference", dtype)
        probe = do.create(name, [torch.nn.Parameter(torch.zeros(2, device=dev, dtype=dtype))], lr=0.01)
        for backend in ("auto", "triton", "fused", "foreach", "tiled"):
            if backend != "auto" and not backends.choose(probe.transform, {**probe.param_groups[0], "backend": backend}, probe.param_groups[0]["params"])[0]:
                continue
            try:
                got, used = run(name, backend, dtype)
                rows.append({"optimizer": name, "dtype": str(dtype)[6:], "backend": backend, "ran": used,
                             "max_abs_diff": float((got - ref).abs().max()), "bitwise": bool(torch.equal(got, ref))})
            except Exception as e:
                rows.append({"optimizer": name, "dtype": str(dtype)[6:], "backend": backend, "error": f"{type(e).__name__}: {e}"[:200]})
out["rows"] = rows
# capturable: one step captured in a CUDA graph and replayed with a new tensor lr
try:
    ps = [torch.nn.Parameter(torch.randn(1000, device=dev))]
    for p in ps: p.grad = torch.randn_like(p)
    lr = torch.tensor(0.01, device=dev)
    opt = do.Adam(ps, lr=lr, capturable=True, backend="triton")
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): opt.step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    before = ps[0].detach().clone(); lr.fill_(0.001); graph.replay(); torch.cuda.synchronize()
    out["capturable_graph"] = {"replayed": True, "moved": float((ps[0] - before).abs().max())}
except Exception as e:
    out["capturable_graph"] = {"error": f"{type(e).__name__}: {e}"[:300]}
# a changing lr compiles no new Triton kernel
from descend.optim.backends import triton_kernels
k0 = len(triton_kernels._KERNELS)
run("adam", "triton", torch.float32, steps=5)
out["triton_kernels_after_lr_changes"] = len(triton_kernels._KERNELS) - k0
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
'''


def main() -> int:
    start = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = []
    check = RESULTS / "gpu_correctness.json"
    parts.append(("correctness", _run([sys.executable, "-c", CHECK, str(check)], 150)))
    try:
        import pytest  # noqa: F401
        parts.append(("pytest -m gpu", _run([sys.executable, "-m", "pytest", "-q", "-m", "gpu",
                                            "-x", "tests/optim", "tests/train"], 100)))
    except ImportError:
        parts.append(("pytest -m gpu", {"rc": "skipped: pytest is not installed"}))
    left = BUDGET_S - (time.monotonic() - start)
    parts.append(("optimizer_step", _run([sys.executable, "benchmarks/optimizer_step.py",
                                          "--device", "cuda", "--no-compile", "--repeats", "10"],
                                         max(60, int(left * 0.7)))))
    for bench in ("trainer_overhead", "time_to_accuracy"):
        left = BUDGET_S - (time.monotonic() - start)
        if left < 20:
            parts.append((bench, {"rc": "skipped: out of time"}))
            continue
        parts.append((bench, _run([sys.executable, f"benchmarks/{bench}.py", "--device", "cuda"],
                                  int(left / 2))))
    total = round(time.monotonic() - start, 1)
    summary = {"seconds": total, "parts": [{"part": n, **r} for n, r in parts]}
    (RESULTS / "gpu_all.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# All GPU checks and benchmarks ({total} s)\n",
             "| part | exit | seconds |", "| --- | --- | --- |"]
    lines += [f"| {n} | {r.get('rc')} | {r.get('seconds', '')} |" for n, r in parts]
    if check.exists():
        c = json.loads(check.read_text())
        lines += ["", f"torch {c.get('torch')}, Triton {c.get('triton')}, {c.get('gpu')}, copy "
                  f"{c.get('copy_gb_s', 0):.0f} GB/s", "",
                  "| optimizer | dtype | backend | ran | max abs diff to reference | bitwise |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['optimizer']} | {r['dtype']} | {r['backend']} | {r.get('ran', r.get('error'))} "
                  f"| {r.get('max_abs_diff', '')} | {r.get('bitwise', '')} |" for r in c["rows"]]
        lines += ["", f"capturable: {c.get('capturable_graph')}",
                  f"Triton kernels compiled by lr changes: {c.get('triton_kernels_after_lr_changes')}"]
    (RESULTS / "gpu_all.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:4 + len(parts)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
