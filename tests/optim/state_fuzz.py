"""Fuzz of loaded optimizer states: every registry optimizer, on every backend the
dispatcher offers it, is given mutated state dicts (wrong shapes and dtypes, missing,
extra and unknown names, non-tensor values, NaN, huge and strided tensors, aliased
memory, bad step counters, bad groups and hyperparameters, parameters in another
order) and must either refuse them with an error, leaving its state as it was, or
accept them and keep stepping. The cases run in a child process, so that a crash of
the process (a segmentation fault, a corrupted heap) is seen and counted.

    python tests/optim/state_fuzz.py --cases 20000          # the full run
    python tests/optim/state_fuzz.py --cases 300 --seconds 30   # what the test suite runs

Prints one JSON line: cases run, refused at load, accepted, raised at step, crashes,
refusals that changed the optimizer, and the time taken.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

SHAPES = [(100, 100), (4, 3), (3,), ()]   # the first is sliced by the tiled/kernel paths


def _params(seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]


def _step(opt, params, t):
    def closure():
        opt.zero_grad()
        loss = sum(((p.double() - 0.1 * t) ** 2).sum() + 0.1 * (p.double() ** 4).sum()
                   for p in params)
        loss.backward()
        return loss
    opt.step(closure)


def combos():
    """(registry name, kwargs, backend) for every registry optimizer and every backend the
    dispatcher gives it ("auto" and "reference" included)."""
    import descend.optim as do
    from descend.optim import backends as fused
    from descend.optim.backends import BACKENDS
    out = []
    for name in do.OPTIMIZERS.names():
        kw = {"lr": 0.01} if name != "adadelta" else {}
        probe = [torch.nn.Parameter(torch.zeros(2))]
        opt = do.create(name, probe, **kw)
        if not hasattr(opt, "transform"):   # not a chain, one path only: its own state
            continue                        # tests are in test_structured_registry.py
        for backend in BACKENDS:
            if fused.choose(opt.transform, {**opt.param_groups[0], "backend": backend}, probe)[0]:
                out.append((name, kw, backend))
    return out


# -- mutations ------------------------------------------------------------------------
def _tensor_entries(sd):
    return [(pid, k) for pid, st in sd["state"].items() if isinstance(st, dict)
            for k, v in st.items() if torch.is_tensor(v)]


def _pick(rng, seq):
    return seq[rng.randrange(len(seq))] if seq else None


def mutate(sd, rng: random.Random) -> tuple[dict, str]:
    """One random mutation of the state dict ``sd`` (a deep copy is changed)."""
    sd = copy.deepcopy(sd)
    entries = _tensor_entries(sd)
    kind = rng.choice([
        "other_shape", "bigger_shape", "same_numel_other_shape", "huge", "expanded_huge",
        "empty", "scalar", "dtype", "non_tensor", "nan", "inf", "strided", "expanded",
        "alias", "alias_between_params", "step_bad", "missing_key", "extra_key",
        "unknown_index", "state_not_mapping", "groups_drop", "groups_extra",
        "group_params_short", "group_params_dup", "group_params_str", "hyper_bad",
        "permuted_params", "swap_two_params", "not_a_dict", "no_state_key",
        "groups_not_list", "meta", "empty_state", "noncontig_step", "offset_view"])
    pid, key = _pick(rng, entries) or (None, None)
    st = sd["state"].get(pid) if pid is not None else None
    if kind == "other_shape" and st is not None:
        st[key] = torch.randn(_pick(rng, [(4, 3), (3, 4), (100, 100), (3,), (7, 7), (1,)]))
    elif kind == "bigger_shape" and st is not None:
        shape = list(st[key].shape) or [1]
        shape[rng.randrange(len(shape))] += rng.choice([1, 17, 1000])
        st[key] = torch.randn(shape)
    elif kind == "same_numel_other_shape" and st is not None:
        st[key] = st[key].reshape(-1).clone() if st[key].dim() != 1 else st[key].reshape(1, -1).clone()
    elif kind == "huge" and st is not None:
        st[key] = torch.zeros(rng.choice([4_000_000, 1_000_003]))
    elif kind == "expanded_huge" and st is not None:
        st[key] = torch.zeros(()).expand(10 ** 6, 10 ** 6)
    elif kind == "empty" and st is not None:
        st[key] = torch.zeros(0)
    elif kind == "scalar" and st is not None:
        st[key] = torch.tensor(1.0)
    elif kind == "dtype" and st is not None:
        dt = rng.choice([torch.int64, torch.int8, torch.bool, torch.float16, torch.bfloat16,
                         torch.float64, torch.complex64, torch.uint8])
        st[key] = st[key].to(dt) if not (dt.is_complex and key == "step") else st[key].to(dt)
    elif kind == "non_tensor" and st is not None:
        st[key] = rng.choice([3.0, "abc", [1, 2], {"a": 1}, object(), b"xy", -7, True])
    elif kind == "nan" and st is not None:
        st[key] = torch.full_like(st[key], float("nan"))
    elif kind == "inf" and st is not None:
        st[key] = torch.full_like(st[key], float("inf") * rng.choice([1, -1]))
    elif kind == "strided" and st is not None:
        v = st[key]
        if v.dim() >= 2:
            st[key] = v.t().contiguous().t()
        elif v.dim() == 1:
            st[key] = torch.stack([v, v], 1)[:, 0]
    elif kind == "expanded" and st is not None:
        v = st[key]
        st[key] = v.reshape(-1)[:1].reshape([1] * v.dim()).expand(v.shape) if v.numel() else v
    elif kind == "offset_view" and st is not None:
        v = st[key]
        st[key] = torch.cat([torch.zeros(5), v.reshape(-1)])[5:].reshape(v.shape)
    elif kind == "alias" and st is not None:
        others = [k for k, v in st.items() if torch.is_tensor(v) and k != key
                  and v.shape == st[key].shape]
        if others:
            st[rng.choice(others)] = st[key]
    elif kind == "alias_between_params":
        same = [(a, b) for a in sd["state"] for b in sd["state"] if a != b]
        if same:
            a, b = rng.choice(same)
            for k in sd["state"][a]:
                if k in sd["state"][b] and torch.is_tensor(sd["state"][a][k]) \
                        and sd["state"][a][k].shape == sd["state"][b][k].shape:
                    sd["state"][b][k] = sd["state"][a][k]
    elif kind == "step_bad":
        sts = [s for s in sd["state"].values() if "step" in s]
        if sts:
            rng.choice(sts)["step"] = rng.choice([
                torch.tensor([1.0, 2.0]), torch.tensor(float("nan")), torch.tensor(-1.0),
                torch.tensor(1e30), "x", True, 2.5, torch.tensor(3, dtype=torch.int64),
                torch.tensor(2.0, dtype=torch.float16), torch.zeros(0), None, float("inf"),
                torch.tensor(1 + 1j)])
    elif kind == "noncontig_step":
        sts = [s for s in sd["state"].values() if "step" in s]
        if sts:
            rng.choice(sts)["step"] = torch.tensor([5.0, 6.0])[1:].reshape(())
    elif kind == "missing_key" and st is not None:
        del st[rng.choice(list(st))]
    elif kind == "extra_key" and st is not None:
        st[rng.choice(["bogus", "exp_avg", "sum", "momentum_buffer", "velocity", "grad_avg"])] = \
            torch.zeros_like(st[key]) if rng.random() < 0.5 else torch.zeros(5)
    elif kind == "unknown_index":
        sd["state"][rng.choice([99, -1, "a", 3.0, None, 4])] = {"step": torch.tensor(1.0)}
    elif kind == "state_not_mapping" and pid is not None:
        sd["state"][pid] = rng.choice([[1, 2], torch.zeros(3), "x", None])
    elif kind == "groups_drop":
        sd["param_groups"] = sd["param_groups"][:0]
    elif kind == "groups_extra":
        sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0]))
    elif kind == "group_params_short":
        sd["param_groups"][0]["params"] = sd["param_groups"][0]["params"][:-1]
    elif kind == "group_params_dup":
        ps = sd["param_groups"][0]["params"]
        ps[-1] = ps[0]
    elif kind == "group_params_str":
        sd["param_groups"][0]["params"] = [str(i) for i in sd["param_groups"][0]["params"]]
    elif kind == "hyper_bad":
        g = sd["param_groups"][0]
        k, v = rng.choice([("lr", -1.0), ("lr", "x"), ("lr", float("nan")), ("betas", (2.0, 0.0)),
                           ("momentum", 5.0), ("backend", "bogus"), ("momentum_form", "x"),
                           ("eps", None), ("centered", "yes"), ("alpha", 7.0), ("rho", -1.0),
                           ("lr", torch.zeros(3)), ("weight_decay", float("inf")),
                           ("clip_norm", -1.0), ("nesterov", True), ("amsgrad", 1)])
        g[k] = v
    elif kind == "permuted_params":
        ids = list(sd["state"])
        vals = [sd["state"][i] for i in ids]
        rng.shuffle(vals)
        sd["state"] = dict(zip(ids, vals))
    elif kind == "swap_two_params":
        ps = sd["param_groups"][0]["params"]
        if len(ps) > 1:
            i, j = rng.sample(range(len(ps)), 2)
            ps[i], ps[j] = ps[j], ps[i]
    elif kind == "not_a_dict":
        return rng.choice([[1, 2], "state", None, 3]), kind
    elif kind == "no_state_key":
        del sd[rng.choice(["state", "param_groups"])]
    elif kind == "groups_not_list":
        sd["param_groups"] = rng.choice(["x", {"params": [0]}, [1, 2], None])
    elif kind == "meta" and st is not None:
        st[key] = torch.empty(st[key].shape, device="meta")
    elif kind == "empty_state":
        sd["state"] = {}
    return sd, kind


def canonical(x):
    """A comparable copy of a state dict: tensors as (dtype, shape, bytes), bitwise."""
    if torch.is_tensor(x):
        return ("tensor", str(x.dtype), tuple(x.shape), str(x.device),
                x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                if x.numel() else b"")
    if isinstance(x, dict):
        return ("dict", sorted((repr(k), canonical(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [canonical(v) for v in x])
    return ("value", repr(x))


def _snapshot(opt):
    return canonical(opt.state_dict())


def run_cases(n: int, seed: int, seconds: float, out) -> dict:
    """The child's loop: prints ``case i`` before each case, a JSON summary at the end."""
    import descend.optim as do
    torch.set_num_threads(1)
    rng = random.Random(seed)
    table = combos()
    counts = {"cases": 0, "refused": 0, "refused_other_error": 0, "accepted": 0,
              "raised_at_step": 0, "changed_by_refusal": 0, "combos": len(table)}
    kinds: dict[str, int] = {}
    start = time.monotonic()
    for i in range(n):
        if time.monotonic() - start > seconds:
            break
        name, kw, backend = table[i % len(table)]
        case_rng = random.Random(rng.random())
        print(f"case {i} {name} {backend}", file=out, flush=True)
        params = _params(i)
        opt = do.create(name, params, backend=backend, **kw)
        for t in range(2):
            _step(opt, params, t)
        sd = opt.state_dict()
        try:
            mutated, kind = mutate(sd, case_rng)
        except (RuntimeError, TypeError, KeyError, AttributeError):   # a mutation that
            continue                                                   # does not apply
        for _ in range(case_rng.randrange(2)):   # sometimes a second mutation
            if (isinstance(mutated, dict) and isinstance(mutated.get("state"), dict)
                    and isinstance(mutated.get("param_groups"), list)
                    and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                            for g in mutated["param_groups"]) and mutated["param_groups"]):
                try:
                    mutated, k2 = mutate(mutated, case_rng)
                    kind += "+" + k2
                except (RuntimeError, TypeError, KeyError, AttributeError):
                    # e.g. filling an expanded 10**12-element tensor
                    pass
        kinds[kind] = kinds.get(kind, 0) + 1
        print(f"  mutation {kind}", file=out, flush=True)
        target = opt if case_rng.random() < 0.5 else do.create(name, params, backend=backend, **kw)
        before = _snapshot(target)
        try:
            target.load_state_dict(mutated)
        except Exception as e:  # noqa: BLE001 - counted: only ValueError/TypeError are clear
            counts["refused"] += 1
            if not isinstance(e, (ValueError, TypeError)):
                counts["refused_other_error"] += 1
                print(f"  refused with {type(e).__name__}: {e}", file=out, flush=True)
            if _snapshot(target) != before:
                counts["changed_by_refusal"] += 1
                print(f"  changed by refusal: {e}", file=out, flush=True)
            continue
        counts["accepted"] += 1
        try:
            for t in range(2, 4):
                _step(target, params, t)
        except Exception as e:  # noqa: BLE001 - counted and reported
            counts["raised_at_step"] += 1
            print(f"  raised at step: {name} {backend} {kind}: {type(e).__name__}: {e}",
                  file=out, flush=True)
        counts["cases"] = i + 1
    counts["cases"] = counts["refused"] + counts["accepted"]
    counts["seconds"] = round(time.monotonic() - start, 1)
    counts["mutations"] = len(kinds)
    return counts


def run(n: int = 300, seed: int = 0, seconds: float = 60.0) -> dict:
    """Run the cases in a child process; the summary, with ``crashes`` (0 or 1: the child
    stops at a crash) and the last case started when it crashed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve())
    proc = subprocess.run([sys.executable, src, "--child", "--cases", str(n), "--seed", str(seed),
                           "--seconds", str(seconds)], capture_output=True, text=True, env=env,
                          timeout=None if seconds == float("inf") else seconds * 3 + 120)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        last = [ln for ln in lines if ln.startswith("case") or ln.startswith("  mutation")][-2:]
        return {"crashes": 1, "returncode": proc.returncode, "last_case": last,
                "stderr": proc.stderr[-2000:]}
    summary = json.loads(lines[-1])
    summary["crashes"] = 0
    summary["log"] = [ln for ln in lines if ln.startswith(("  raised", "  changed", "  refused"))]
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=3600.0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        summary = run_cases(args.cases, args.seed, args.seconds, sys.stdout)
        print(json.dumps(summary), flush=True)
        return 0
    summary = run(args.cases, args.seed, args.seconds)
    print(json.dumps(summary))
    return 0 if summary["crashes"] == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    raise SystemExit(main())
