"""What the backends generated from a chain's per-element math share: the step's
preparation (counters, missing state, pre-passes, scalars) and the split of a group into
the tensors a kernel can run and the rest.

A step of a generated backend ("tiled", "kernel", "triton"):

1. count the step (``step += 1`` where the chain keeps one);
2. make missing state with the values the transforms declare, noting which is new
   (the ``fresh`` flags of the math);
3. pre-passes: ``group_norm`` values (the norm over the group of the element values it
   reads, computed by torch exactly as on the reference path) and ``randn`` numbers
   (``randn_like`` per tensor, in order: the reference path's draws);
4. the scalars: every scalar node, per tensor, as floats on the host or as 0-d tensors
   on the device (:func:`descend.optim.elementwise.scalars`);
5. the elements, by the backend.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from descend.optim import elementwise as ew
from descend.optim.core import scalar_dtype

__all__ = ["Step", "prepare", "dense_like", "split"]


def kernel_roles(prog) -> list[tuple]:
    """The tensors a generated kernel reads and writes, in its argument order: the
    gradient, the parameter, each state and each random draw of ``prog``."""
    return [("grad",), ("param",)] + [("state", k) for k in prog.state] + \
        [("randn", k) for k in range(prog.randn)]


class Step:
    """Everything a generated backend needs for one group's step."""

    def __init__(self, prog, group, params, grads, state, scal, randn, mode):
        self.prog, self.group, self.params, self.grads, self.state = prog, group, params, grads, state
        self.scal, self.randn, self.mode = scal, randn, mode

    def tensor(self, role: tuple, i: int) -> Tensor:
        """The tensor of parameter ``i`` that plays ``role`` (one of :func:`kernel_roles`)."""
        if role[0] == "grad":
            return self.grads[i]
        if role[0] == "param":
            return self.params[i]
        if role[0] == "state":
            return self.state[i][role[1]]
        return self.randn[role[1]][i]

    def element_scalars(self) -> list[int]:
        """The scalar nodes element nodes read (the columns of a kernel's scalar table)."""
        kinds = [k for _, _, k in self.prog.nodes]
        cols = []
        for op, args, kind in self.prog.nodes:
            if kind == "e" and op not in ("grad", "param", "state", "randn"):
                cols.extend(a for a in args if kinds[a] == "s" and a not in cols)
        cols += [j for j in [self.prog.out, *self.prog.writes.values()] if kinds[j] == "s"]
        return sorted(set(cols))

    def table(self, cols: list[int], device, dtype=torch.float64, idx=None) -> Tensor:
        """The scalar table: one row per tensor (of ``idx``), one column per scalar node."""
        n_all = len(self.params)
        idx = list(range(n_all)) if idx is None else idx
        n = len(idx)
        if self.mode == "host":
            import numpy as np
            out = np.empty((n, max(1, len(cols))), dtype=np.float64)
            for j, c in enumerate(cols):
                v = self.scal[c]
                out[:, j] = [float(v[i]) for i in idx] if isinstance(v, list) else float(v)
            t = torch.from_numpy(out)
            return t.to(device, non_blocking=True) if torch.device(device).type != "cpu" else t
        columns = []
        for c in cols:
            v = self.scal[c]
            if isinstance(v, list):
                col = torch.stack([torch.as_tensor(v[i], dtype=dtype, device=device).reshape(())
                                   for i in idx])
            else:
                col = torch.as_tensor(v, dtype=dtype, device=device).reshape(()).expand(n)
            columns.append(col)
        if not columns:
            return torch.zeros(n, 1, dtype=dtype, device=device)
        return torch.stack(columns, 1).contiguous()


def count_steps(chain, group, state, params) -> list[Tensor]:
    """``step += 1`` for every parameter when the chain keeps a counter (made at 0 first,
    on the parameters' device with ``capturable``); returns the counters."""
    if not chain.uses_step(group):
        return []
    capturable = bool(group.get("capturable", False))
    steps = []
    for st, p in zip(state, params):
        s = st.get("step")
        if s is None:
            s = st["step"] = torch.tensor(0.0, dtype=scalar_dtype(),
                                          device=p.device if capturable else None)
        steps.append(s)
    torch._foreach_add_(steps, 1)
    return steps


def prepare(opt, group, params, grads, state) -> Step:
    """Steps 1-4 of a generated backend's step (see the module's docstring)."""
    chain = opt.transform
    prog = chain.program(group)
    steps = count_steps(chain, group, state, params)
    fresh = ew.ensure_state(prog, state, params, group)
    mode = ew.scalar_mode(group, steps, params[0].device)
    norms = {}
    if any(op == "norm" for op, _, _ in prog.nodes):
        # the element values a norm reads depend on the gradients and parameters only
        vals = _prefix_values(prog, group, params, grads, state, fresh, steps, mode)
        norms = ew.group_norms(prog, vals)
    randn = [[torch.randn_like(g) for g in grads] for _ in range(prog.randn)]
    scal = ew.scalars(prog, group, [st["step"] for st in state] if prog.uses_step else [],
                      fresh, params, norms, mode)
    return Step(prog, group, params, grads, state, scal, randn, mode)


def _prefix_values(prog, group, params, grads, state, fresh, steps, mode):
    """The element values the ``group_norm`` nodes read, by the torch evaluator."""
    need = set()
    stack = [args[0] for op, args, _ in prog.nodes if op == "norm"]
    while stack:
        i = stack.pop()
        if i in need:
            continue
        need.add(i)
        op, args, kind = prog.nodes[i]
        if op not in ("const", "hyper", "state", "step", "fresh", "tensor", "randn", "grad",
                      "param", "norm"):
            stack.extend(args)
    sub = [(i, prog.nodes[i]) for i in sorted(need)]
    ev = ew._Scalars(prog, group, [st.get("step") for st in state] if prog.uses_step else [],
                     fresh, params, mode)
    vals = {}
    kinds = [k for _, _, k in prog.nodes]
    for i, (op, args, kind) in sub:
        if kind == "s":
            ev.node(i)
        elif op == "grad":
            vals[i] = list(grads)
        elif op == "param":
            vals[i] = list(params)
        else:
            argv = [vals[a] if kinds[a] == "e" else ev.out[a] for a in args]
            vals[i] = list(ew._elementwise(op, argv, [kinds[a] for a in args], len(params)))
    return vals


def _dense(p: Tensor) -> bool:
    if p.is_contiguous():
        return True
    dims = sorted((st, sz) for st, sz in zip(p.stride(), p.shape) if sz != 1)
    expect = 1
    for st, sz in dims:
        if st != expect:
            return False
        expect *= sz
    return True


def dense_like(t: Tensor, p: Tensor) -> bool:
    """Whether ``t`` lies in memory element for element as ``p`` does, with no gaps (so
    both can be read as flat arrays in storage order)."""
    if t.numel() <= 1:
        return t.shape == p.shape
    if t.is_contiguous() and p.is_contiguous():
        return t.shape == p.shape
    return t.shape == p.shape and t.stride() == p.stride() and _dense(p)


def split(step: Step) -> tuple[list[int], list[int]]:
    """Indices of the tensors a kernel can read as flat arrays, and of the rest."""
    ok, rest = [], []
    for i, (p, g, st) in enumerate(zip(step.params, step.grads, step.state)):
        tensors = [g] + [st[k] for k in step.prog.state] + [r[i] for r in step.randn]
        (ok if all(dense_like(t, p) for t in tensors) else rest).append(i)
    return ok, rest


def evaluate_elements(step: Step, idx: list[int], slicer=None) -> None:
    """The element nodes with the torch evaluator on the tensors ``idx`` (or on views of
    them given by ``slicer(tensor, i)``), writing the state and the parameters."""
    prog = step.prog
    kinds = [k for _, _, k in prog.nodes]
    take = (lambda t, i: t) if slicer is None else slicer
    params = [take(step.params[i], i) for i in idx]
    n = len(idx)
    vals: dict[int, Any] = {}

    def scal(a):
        v = step.scal[a]
        return [v[i] for i in idx] if isinstance(v, list) else v

    for j, (op, args, kind) in enumerate(prog.nodes):
        if kind == "s":
            continue
        if op == "grad":
            vals[j] = [take(step.grads[i], i) for i in idx]
        elif op == "param":
            vals[j] = params
        elif op == "state":
            vals[j] = [take(step.state[i][args[0]], i) for i in idx]
        elif op == "randn":
            vals[j] = [take(step.randn[args[0]][i], i) for i in idx]
        else:
            argv = [vals[a] if kinds[a] == "e" else scal(a) for a in args]
            vals[j] = list(ew._elementwise(op, argv, [kinds[a] for a in args], n))
    for name, j in prog.writes.items():
        targets = [take(step.state[i][name], i) for i in idx]
        value = vals[j] if kinds[j] == "e" else [ew._full(v, t) for v, t in
                                                  zip(ew._as_list(scal(j), n), targets)]
        torch._foreach_copy_(targets, value)
    out = vals[prog.out] if kinds[prog.out] == "e" else [
        ew._full(v, p) for v, p in zip(ew._as_list(scal(prog.out), n), params)]
    torch._foreach_add_(params, out)
