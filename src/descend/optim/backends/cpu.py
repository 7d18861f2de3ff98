"""descend's CPU kernels: the chain's per-element math compiled to one pass over memory.

From the chain's program (:mod:`descend.optim.elementwise`) this backend writes the
source of a loop over the elements of every tensor of a group (numba, ``njit``): each
element's parameter, gradient and state are loaded once, the whole update is computed in
registers, and the new state and parameter are stored once. One call runs the whole
group: the tensors are given as a table of addresses and sizes (no copy, no flat
buffer), and the scalars (hyperparameters, bias corrections...) as a table computed
once per step, so a new learning rate is data and never compiles again. A kernel is
compiled once per program and dtypes, in the process (numba's JIT, about a second; no
C compiler is needed), and kept for every optimizer with the same math.

Arithmetic: the operations of the program, in its order, each correctly rounded in the
parameters' dtype (float32 or float64), with no contraction into fused multiply-adds
and no reordering (numba without ``fastmath``; ``error_model="numpy"`` so divisions
follow IEEE and the loop vectorises): the results equal the reference path's bitwise.

Needs numba (``pip install descend[cpu]``); float32 and float64 tensors on the CPU that
can be read as flat arrays (others run on the tiles).
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor

from descend.optim.backends.generated import Step, kernel_roles, dense_like, evaluate_elements, prepare, split

__all__ = ["available", "source", "run", "DTYPES"]

#: Parameter dtypes the kernels compute in.
DTYPES = (torch.float32, torch.float64)

_KERNELS: dict[Any, Any] = {}
_LOCK = threading.Lock()
_NP = {torch.float32: "float32", torch.float64: "float64"}


def available() -> bool:
    """Whether numba is installed."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _emit(op, a, ctype):
    if op == "add": return f"{a[0]} + {a[1]}"
    if op == "sub": return f"{a[0]} - {a[1]}"
    if op == "mul": return f"{a[0]} * {a[1]}"
    if op == "div": return f"{a[0]} / {a[1]}"
    if op == "neg": return f"-{a[0]}"
    if op == "sqrt": return f"np.sqrt({a[0]})"
    if op == "abs": return f"abs({a[0]})"
    if op == "sign": return (f"{ctype}(1.0) if {a[0]} > 0 else ({ctype}(-1.0) if {a[0]} < 0 "
                             f"else {ctype}(0.0))")
    if op == "max": return (f"{a[0]} if ({a[0]} != {a[0]}) else ({a[1]} if ({a[1]} != {a[1]}) "
                            f"else ({a[0]} if {a[0]} > {a[1]} else {a[1]}))")
    if op == "min": return (f"{a[0]} if ({a[0]} != {a[0]}) else ({a[1]} if ({a[1]} != {a[1]}) "
                            f"else ({a[0]} if {a[0]} < {a[1]} else {a[1]}))")
    cmp = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}
    if op in cmp: return f"{a[0]} {cmp[op]} {a[1]}"
    if op == "and": return f"({a[0]}) and ({a[1]})"
    if op == "or": return f"({a[0]}) or ({a[1]})"
    if op == "not": return f"not ({a[0]})"
    if op == "where": return f"{a[1]} if ({a[0]}) else {a[2]}"
    raise ValueError(f"no CPU kernel for the operation {op!r}")


def source(step_prog, cols: list[int], roles: list[tuple], ctype: str) -> str:
    """The kernel's Python source for a program: ``roles`` are the arrays per tensor
    (("grad",), ("param",), ("state", name), ("randn", k)) in the order of the address
    table, ``cols`` the scalar nodes in the order of the scalar table."""
    prog = step_prog
    kinds = [k for _, _, k in prog.nodes]
    lines = ["def kernel(sizes, ptrs, scal, t0, t1):",
             "    for t in range(t0, t1):",
             "        n = sizes[t]"]
    for r, role in enumerate(roles):
        lines.append(f"        a{r} = numba.carray(_ptr{r}(ptrs[t, {r}]), (n,))")
    names = {}
    for c_i, c in enumerate(cols):
        lines.append(f"        c{c} = {ctype}(scal[t, {c_i}])")
        names[c] = f"c{c}"
    lines.append("        for i in range(n):")
    role_index = {role: r for r, role in enumerate(roles)}
    for j, (op, args, kind) in enumerate(prog.nodes):
        if kind != "e":
            continue
        if op == "grad":
            expr = f"{ctype}(a{role_index[('grad',)]}[i])"
        elif op == "param":
            expr = f"{ctype}(a{role_index[('param',)]}[i])"
        elif op == "state":
            expr = f"{ctype}(a{role_index[('state', args[0])]}[i])"
        elif op == "randn":
            expr = f"{ctype}(a{role_index[('randn', args[0])]}[i])"
        else:
            a = [names[x] for x in args]
            if op == "where" and kinds[args[0]] == "s":
                a[0] = f"{a[0]} != 0"
            elif op in ("and", "or", "not"):
                a = [f"{x} != 0" if kinds[y] == "s" else x for x, y in zip(a, args)]
            expr = _emit(op, a, ctype)
        lines.append(f"            v{j} = {expr}")
        names[j] = f"v{j}"
    for name, j in prog.writes.items():
        lines.append(f"            a{role_index[('state', name)]}[i] = {names[j]}")
    p = role_index[("param",)]
    out = names[prog.out]
    lines.append(f"            a{p}[i] = {ctype}(a{p}[i]) + {out}")
    return "\n".join(lines) + "\n"


def _compile(key, src: str, dtypes: list[torch.dtype]):
    import numba
    import numpy as np
    from numba import types
    from numba.extending import intrinsic

    def caster(nbtype):
        @intrinsic
        def cast(typingctx, addr):
            sig = types.CPointer(nbtype)(types.int64)

            def codegen(context, builder, signature, args):
                return builder.inttoptr(args[0], context.get_value_type(types.CPointer(nbtype)))
            return sig, codegen
        return cast

    ns: dict[str, Any] = {"numba": numba, "np": np, "float32": np.float32,
                          "float64": np.float64}
    for r, dt in enumerate(dtypes):
        ns[f"_ptr{r}"] = caster(getattr(types, _NP[dt]))
    exec(compile(src, f"<descend cpu kernel {abs(hash(key))}>", "exec"), ns)
    return numba.njit("void(int64[::1], int64[:, ::1], float64[:, ::1], int64, int64)",
                      nogil=True, error_model="numpy", boundscheck=False)(ns["kernel"])


def kernel_for(step: Step, idx: list[int]):
    """The compiled kernel for the tensors ``idx`` of ``step`` and its roles and columns."""
    prog = step.prog
    roles = kernel_roles(prog)
    i0 = idx[0]
    dtypes = [step.tensor(role, i0).dtype for role in roles]
    ctype = "float64" if step.params[i0].dtype == torch.float64 else "float32"
    cols = step.element_scalars()
    key = (prog.key, tuple(map(str, dtypes)), ctype, tuple(cols))
    with _LOCK:
        fn = _KERNELS.get(key)
        if fn is None:
            src = source(prog, cols, roles, ctype)
            fn = _KERNELS[key] = _compile(key, src, dtypes)
    return fn, roles, cols


def supported(params: list[Tensor]) -> bool:
    """Whether the kernels take these parameters (their device and dtype)."""
    return all(p.device.type == "cpu" and p.dtype in DTYPES for p in params)


class _Plan:
    """For a group's tensors: which run in the kernel, one call per combination of dtypes,
    each with its compiled kernel and its table of addresses (the gradients' column is
    filled at every step: a backward may give new gradient tensors). Kept while the
    parameters and state tensors are the same objects (it holds them)."""

    def __init__(self, step: Step, ok: list[int], rest: list[int], key):
        self.key = key
        self.rest = rest
        self.calls = []
        self.refs = (list(step.params), [list(st.values()) for st in step.state])
        by_dtype: dict[tuple, list[int]] = {}
        for i in ok:
            dkey = tuple(step.tensor(r, i).dtype for r in kernel_roles(step.prog))
            by_dtype.setdefault(dkey, []).append(i)
        for idx in by_dtype.values():
            fn, roles, cols = kernel_for(step, idx)
            sizes = torch.tensor([step.params[i].numel() for i in idx], dtype=torch.int64)
            ptrs = torch.zeros(len(idx), len(roles), dtype=torch.int64)
            for r, role in enumerate(roles):
                if role[0] in ("param", "state"):
                    ptrs[:, r] = torch.tensor([step.tensor(role, i).data_ptr() for i in idx],
                                              dtype=torch.int64)
            per_step = [r for r, role in enumerate(roles) if role[0] in ("grad", "randn")]
            self.calls.append((idx, fn, roles, cols, sizes, ptrs, per_step))


def _plan_key(step: Step) -> tuple:
    return (step.prog.key, tuple(map(id, step.params)),
            tuple(id(st[k]) for st in step.state for k in step.prog.state))


def run(opt, group: dict, params: list[Tensor], grads: list[Tensor], state: list[dict]) -> None:
    """One step of ``opt.transform`` on ``group`` with the generated CPU kernel."""
    step = prepare(opt, group, params, grads, state)
    cache = opt.__dict__.setdefault("_descend_cpu_plans", {})
    key = _plan_key(step)
    plan = cache.get(id(group))
    if plan is None or plan.key != key:
        ok, rest = split(step)
        plan = cache[id(group)] = _Plan(step, ok, rest, key)
    rest = list(plan.rest)
    calls = plan.calls
    # a gradient laid out unlike its parameter this step: that call runs on the tiles
    bad = [i for idx, *_ in calls for i in idx
           if not (grads[i].is_contiguous() and params[i].is_contiguous())
           and not dense_like(grads[i], params[i])]
    if bad:
        ok, rest = split(step)
        calls = _Plan(step, ok, rest, key).calls
    if rest:
        evaluate_elements(step, rest)
    for idx, fn, roles, cols, sizes, ptrs, per_step in calls:
        for r in per_step:
            ptrs[:, r] = torch.tensor([step.tensor(roles[r], i).data_ptr() for i in idx],
                                      dtype=torch.int64)
        table = step.table(cols, "cpu", idx=idx)
        fn(sizes.numpy(), ptrs.numpy(), table.numpy(), 0, len(idx))
