"""descend's GPU kernels: the chain's per-element math as one Triton launch per group.

From the chain's program (:mod:`descend.optim.elementwise`) this backend writes the
source of a Triton kernel that runs the whole update of a parameter group in one launch:
the tensors come as a table of addresses and sizes, each program instance takes one
block of one tensor (a table of blocks), loads its parameter, gradient and state once,
computes the update in registers in float32 (float64 for float64 parameters), and
stores the new state and parameter once, each in its own dtype (float32, bfloat16 or
float16 parameters; state of any of those). The scalars (hyperparameters, bias
corrections...) come as a table computed once per step, on the host or, with tensor
hyperparameters or ``capturable=True``, on the device, so changing the learning rate
never compiles again and the step can be captured in a CUDA graph.

Arithmetic: the operations of the program, in its order; float32 square roots and
divisions correctly rounded (``tl.sqrt_rn``, ``tl.div_rn``), and no contraction into
fused multiply-adds (``enable_fp_fusion=False``), so a GPU kernel computes what the
reference path computes on the same device. Under Triton's interpreter (CPU tensors,
as in the tests) every operation is numpy's IEEE one: equal to the reference path
bitwise for float32 and float64 parameters.

Needs Triton (``pip install descend[gpu]``). On CPU tensors the kernels run under
Triton's interpreter (slow: for tests). The source of each kernel is kept in memory and
given to Python's ``linecache`` (Triton reads a kernel's source).
"""

from __future__ import annotations

import linecache
import threading
from typing import Any

import torch
from torch import Tensor

from descend.optim.backends.generated import Step, kernel_roles, evaluate_elements, prepare, split

__all__ = ["available", "source", "run", "compile_for", "BLOCK", "DTYPES"]

#: Elements per program instance.
BLOCK = 1024

#: Parameter dtypes the kernels take.
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)

_TL = {torch.float32: "tl.float32", torch.float64: "tl.float64", torch.bfloat16: "tl.bfloat16",
       torch.float16: "tl.float16"}
_KERNELS: dict[Any, Any] = {}
_LOCK = threading.Lock()


def available() -> bool:
    """Whether Triton is installed."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def _emit(op, a, f64):
    div = (lambda x, y: f"({x} / {y})") if f64 else (lambda x, y: f"tl.div_rn({x}, {y})")
    sq = "tl.sqrt" if f64 else "tl.sqrt_rn"
    if op == "add": return f"({a[0]} + {a[1]})"
    if op == "sub": return f"({a[0]} - {a[1]})"
    if op == "mul": return f"({a[0]} * {a[1]})"
    if op == "div": return div(a[0], a[1])
    if op == "neg": return f"(-{a[0]})"
    if op == "sqrt": return f"{sq}({a[0]})"
    if op == "abs": return f"tl.abs({a[0]})"
    if op == "sign": return f"tl.where({a[0]} > 0, 1.0, tl.where({a[0]} < 0, -1.0, 0.0))"
    if op == "max": return f"tl.maximum({a[0]}, {a[1]}, propagate_nan=tl.PropagateNan.ALL)"
    if op == "min": return f"tl.minimum({a[0]}, {a[1]}, propagate_nan=tl.PropagateNan.ALL)"
    cmp = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}
    if op in cmp: return f"({a[0]} {cmp[op]} {a[1]})"
    if op == "and": return f"(({a[0]}) & ({a[1]}))"
    if op == "or": return f"(({a[0]}) | ({a[1]}))"
    if op == "not": return f"(({a[0]}) == 0)"
    if op == "where": return f"tl.where({a[0]}, {a[1]}, {a[2]})"
    raise ValueError(f"no Triton kernel for the operation {op!r}")


def source(prog, cols: list[int], roles: list[tuple], dtypes: list[torch.dtype],
           compute: torch.dtype, name: str) -> str:
    """The kernel's source: ``roles`` the tensors per row of the address table (with their
    ``dtypes``), ``cols`` the scalar nodes per column of the scalar table."""
    kinds = [k for _, _, k in prog.nodes]
    f64 = compute == torch.float64
    ct = _TL[compute]
    R, K = len(roles), max(1, len(cols))
    lines = [f"def {name}(sizes, ptrs, scal, blk_t, blk_s, BLOCK: tl.constexpr):",
             "    pid = tl.program_id(0)",
             "    t = tl.load(blk_t + pid).to(tl.int64)",
             "    start = tl.load(blk_s + pid)",
             "    n = tl.load(sizes + t)",
             "    offs = start + tl.arange(0, BLOCK)",
             "    m = offs < n"]
    for r, dt in enumerate(dtypes):
        lines.append(f"    A{r} = tl.load(ptrs + t * {R} + {r}).to(tl.pointer_type({_TL[dt]}))")
    names = {}
    for c_i, c in enumerate(cols):
        lines.append(f"    c{c} = tl.load(scal + t * {K} + {c_i}).to({ct})")
        names[c] = f"c{c}"
    role_index = {role: r for r, role in enumerate(roles)}
    p = role_index[("param",)]
    lines.append(f"    w_ = tl.load(A{p} + offs, mask=m).to({ct})")
    for j, (op, args, kind) in enumerate(prog.nodes):
        if kind != "e":
            continue
        if op in ("grad", "param", "state", "randn"):
            role = (op,) if op in ("grad", "param") else (op, args[0])
            expr = "w_" if op == "param" else \
                f"tl.load(A{role_index[role]} + offs, mask=m).to({ct})"
        else:
            a = [names[x] for x in args]
            if op == "where" and kinds[args[0]] == "s":
                a[0] = f"({a[0]} != 0)"
            expr = _emit(op, a, f64)
            if op in ("sign",):
                expr = f"({expr}).to({ct})"
        lines.append(f"    v{j} = {expr}")
        names[j] = f"v{j}"
    for nm, j in prog.writes.items():
        r = role_index[("state", nm)]
        val = names[j] if kinds[j] == "e" else f"(w_ * 0 + {names[j]})"
        lines.append(f"    tl.store(A{r} + offs, ({val}).to(A{r}.dtype.element_ty), mask=m)")
    out = names[prog.out] if kinds[prog.out] == "e" else f"(w_ * 0 + {names[prog.out]})"
    lines.append(f"    tl.store(A{p} + offs, (w_ + {out}).to(A{p}.dtype.element_ty), mask=m)")
    return "\n".join(lines) + "\n"


def _jit(key, src: str, name: str, interpret: bool):
    import triton
    import triton.language as tl
    filename = f"<descend triton kernel {name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns: dict[str, Any] = {"tl": tl, "triton": triton}
    exec(compile(src, filename, "exec"), ns)
    fn = ns[name]
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction
        return InterpretedFunction(fn)
    return triton.jit(fn)


def kernel_source(prog, cols, dtypes, compute):
    """``(name, source)`` of the kernel for a program and the dtypes of its roles."""
    import hashlib
    roles = kernel_roles(prog)
    draft = source(prog, cols, roles, dtypes, compute, "kernel")
    name = "descend_" + hashlib.sha1(draft.encode()).hexdigest()[:16]
    return name, source(prog, cols, roles, dtypes, compute, name)


def kernel_for(step: Step, idx: list[int], interpret: bool):
    """The kernel (compiled, or interpreted for CPU tensors) for the tensors ``idx`` of
    ``step``, with its roles and scalar columns."""
    prog = step.prog
    roles = kernel_roles(prog)
    i0 = idx[0]
    dtypes = [step.tensor(role, i0).dtype for role in roles]
    compute = torch.float64 if step.params[i0].dtype == torch.float64 else torch.float32
    cols = step.element_scalars()
    name, src = kernel_source(prog, cols, dtypes, compute)
    key = (name, interpret)
    with _LOCK:
        fn = _KERNELS.get(key)
        if fn is None:
            fn = _KERNELS[key] = _jit(key, src, name, interpret)
    return fn, roles, cols


def supported(params: list[Tensor]) -> bool:
    """Whether the kernels take these parameters (their device and dtype)."""
    return all(p.dtype in DTYPES for p in params)


class _Plan:
    """The block table of a set of tensors (built once per group and sizes)."""

    def __init__(self, sizes: list[int], device):
        blk_t, blk_s = [], []
        for t, n in enumerate(sizes):
            for s in range(0, n, BLOCK):
                blk_t.append(t)
                blk_s.append(s)
        self.blocks = len(blk_t)
        self.blk_t = torch.tensor(blk_t, dtype=torch.int32, device=device)
        self.blk_s = torch.tensor(blk_s, dtype=torch.int64, device=device)
        self.sizes = torch.tensor(sizes, dtype=torch.int64, device=device)


def run(opt, group: dict, params: list[Tensor], grads: list[Tensor], state: list[dict]) -> None:
    """One step of ``opt.transform`` on ``group``: one Triton launch per combination of
    dtypes (one launch for a group of one dtype)."""
    step = prepare(opt, group, params, grads, state)
    ok, rest = split(step)
    if rest:
        evaluate_elements(step, rest)
    by_dtype: dict[tuple, list[int]] = {}
    for i in ok:
        if step.params[i].numel() == 0:
            continue
        key = tuple(step.tensor(r, i).dtype for r in kernel_roles(step.prog))
        by_dtype.setdefault(key, []).append(i)
    if not by_dtype:
        return
    device = params[0].device
    interpret = device.type == "cpu"
    cache = opt.__dict__.setdefault("_descend_triton_plans", {})
    full = step.table(step.element_scalars(), device)
    for idx in by_dtype.values():
        fn, roles, cols = kernel_for(step, idx, interpret)
        sizes = [step.params[i].numel() for i in idx]
        pkey = (id(group), tuple(sizes), tuple(idx))
        plan = cache.get(pkey)
        if plan is None:
            plan = cache[pkey] = _Plan(sizes, device)
        ptrs = torch.tensor([[step.tensor(role, i).data_ptr() for role in roles] for i in idx],
                            dtype=torch.int64).to(device, non_blocking=True)
        table = full[idx].contiguous() if len(idx) != len(params) else full.contiguous()
        if table.shape[1] == 0:
            table = torch.zeros(len(idx), 1, dtype=torch.float64, device=device)
        kwargs = {} if interpret else {"enable_fp_fusion": False}
        fn[(plan.blocks,)](plan.sizes, ptrs, table, plan.blk_t, plan.blk_s, BLOCK=BLOCK, **kwargs)


def compile_for(prog, dtypes_of_param: torch.dtype, target=("cuda", 90, 32), state_dtype=None):
    """Compile the kernel of ``prog`` for a GPU target without a GPU (``triton.compile``
    with ``GPUTarget``): returns the compiled kernel (``.asm`` holds its PTX and cubin)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    roles = kernel_roles(prog)
    dtypes = []
    for role in roles:
        if role[0] == "state":
            dtypes.append(state_dtype or dtypes_of_param)
        elif role[0] == "randn":
            dtypes.append(dtypes_of_param)
        else:
            dtypes.append(dtypes_of_param)
    compute = torch.float64 if dtypes_of_param == torch.float64 else torch.float32
    cols = _element_scalars(prog)
    name, src = kernel_source(prog, cols, dtypes, compute)
    fn = _jit(("compile", name), src, name, False)
    sig = {"sizes": "*i64", "ptrs": "*i64", "scal": "*fp64", "blk_t": "*i32", "blk_s": "*i64",
           "BLOCK": "constexpr"}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs={"BLOCK": BLOCK}),
                          target=GPUTarget(*target), options={"enable_fp_fusion": False})


def _element_scalars(prog) -> list[int]:
    return Step(prog, {}, [], [], [], {}, [], "host").element_scalars()
