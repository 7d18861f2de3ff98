"""Shared helpers of the benchmarks: device handling, timing, copy bandwidth, results files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    p.add_argument("--out", default=str(RESULTS), help="folder of the results files")
    return p


def device_of(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return dev


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timeit(fn, dev: torch.device, n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls (one synchronisation at each end)."""
    sync(dev)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    return (time.perf_counter() - t) / n


def copy_bandwidth(dev: torch.device, nbytes: int, repeats: int = 5) -> float:
    """Measured device copy bandwidth in GB/s: bytes read + written by ``dst.copy_(src)``."""
    n = max(1, nbytes // 4)
    src = torch.randn(n, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(timeit(lambda: dst.copy_(src), dev, 3) for _ in range(repeats))
    return 2 * n * 4 / best / 1e9


def machine(dev: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS does not report it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def load_line(load: dict) -> str:
    """A sentence on how loaded the machine was while the benchmark ran."""
    return (f"Load average (1 min) at start / end: {load['before']} / {load['after']} on "
            f"{os.cpu_count()} CPUs (other processes share the machine: ratios within one run "
            "are the figures to read).")


def write(out: str, stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    j, m = folder / f"{stem}.json", folder / f"{stem}.md"
    j.write_text(json.dumps(payload, indent=1) + "\n")
    m.write_text(markdown)
    return j, m


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """A markdown table; ``cols`` are (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in cols) + " |\n"
    head += "| " + " | ".join("---" for _ in cols) + " |\n"
    body = ""
    for r in rows:
        cells = []
        for k, _, f in cols:
            v = r.get(k)
            cells.append("" if v is None else (format(v, f) if f else str(v)))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body
