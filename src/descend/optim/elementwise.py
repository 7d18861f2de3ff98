"""The per-element math of the transforms, written once, and its evaluation on tensors.

An elementwise transform states its update of one element as a Python function of
element values (``u`` the incoming update, ``w`` the parameter, the state ``s`` and the
hyperparameters ``h``) written with ordinary operators and the functions of this module
(:func:`sqrt`, :func:`maximum`, :func:`where`...). Run once on symbolic values
(:func:`trace`), the function becomes a :class:`Program`: a list of operations on
element values and on scalars (hyperparameters, step counts, per-tensor flags). Every
path is generated from that program:

- the reference path evaluates it with torch's multi-tensor operations
  (:func:`evaluate`), one operation per node;
- the backends (:mod:`descend.optim.backends`) evaluate it on tiles, or generate a CPU
  kernel (numba) or a GPU kernel (Triton) from it.

Control flow on options is static: ``if h["weight_decay"]:`` asks whether the option is
on (a number is on when it is not 0; booleans, strings and ``None`` are themselves), so
the program is traced once per *structure* of the parameter group (:func:`structure`),
and changing a number (the learning rate) never traces or compiles again. Values that
vary per element or per step (``s.step``, the state, ``where``) are data.

Arithmetic: every node is one correctly rounded IEEE operation in the element dtype
(scalars are rounded to it first, as torch does); no operation is fused or reordered.
So every path computes the same numbers as the reference (float32 and float64). One
exception is made explicit: torch's CPU ``sqrt`` is not correctly rounded (it differs
from IEEE in about 1 of 7 float32 values on the measured machine), so the reference
computes ``sqrt`` correctly rounded (float32 through float64; float64 through numpy).

Scalars (hyperparameters, ``step`` and what is computed from them only, such as the
bias corrections ``1 - beta ** t``) are evaluated apart, once per step: on the host as
Python floats ("host" mode), or as 0-d tensors on the parameters' device ("device"
mode: tensor hyperparameters on a GPU, ``capturable=True``, or inside ``torch.compile``),
so that a step needs no host synchronisation and a new learning rate is data.

Example:
    >>> import torch
    >>> def rms(u, w, s, h):                       # RMSProp's preconditioner, once
    ...     s.square_avg = h["alpha"] * s.square_avg + (1 - h["alpha"]) * u * u
    ...     return u / (sqrt(s.square_avg) + h["eps"])
    >>> prog = trace(rms, {"alpha": 0.9, "eps": 1e-8}, {"square_avg": 0.0})
    >>> state = [{}]
    >>> evaluate(prog, [torch.tensor([2.0])], [torch.zeros(1)], state, {"alpha": 0.9, "eps": 1e-8})
    [tensor([3.1623])]
    >>> state[0]["square_avg"]
    tensor([0.4000])
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["Node", "Program", "trace", "structure", "evaluate", "scalars", "sqrt", "maximum",
           "minimum", "where", "sign", "clamp", "randn", "group_norm", "shared_norms", "per_tensor",
           "scalar_mode", "correct_sqrt"]

_BINARY = {"add", "sub", "mul", "div", "max", "min", "gt", "lt", "ge", "le", "eq", "ne",
           "and", "or", "pow"}
_UNARY = {"neg", "sqrt", "abs", "sign", "not"}
_BOOL = {"gt", "lt", "ge", "le", "eq", "ne", "and", "or", "not"}

_tracing: list["_Tracer"] = []


class Node:
    """A value of the per-element math while it is traced: an element (``kind == "e"``:
    one per element of a tensor) or a scalar (``"s"``: one per tensor, or per group)."""

    __slots__ = ("op", "args", "kind", "index", "static", "tracer")

    def __init__(self, tracer, op, args, kind, static=None):
        self.tracer, self.op, self.args, self.kind, self.static = tracer, op, args, kind, static
        self.index = len(tracer.nodes)
        tracer.nodes.append(self)

    # arithmetic builds nodes
    def _bin(self, op, other, swap=False):
        a, b = (_lift(other, self.tracer), self) if swap else (self, _lift(other, self.tracer))
        return self.tracer.op(op, a, b)

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __truediv__(self, o): return self._bin("div", o)
    def __rtruediv__(self, o): return self._bin("div", o, True)
    def __pow__(self, o): return self._bin("pow", o)
    def __rpow__(self, o): return self._bin("pow", o, True)
    def __gt__(self, o): return self._bin("gt", o)
    def __lt__(self, o): return self._bin("lt", o)
    def __ge__(self, o): return self._bin("ge", o)
    def __le__(self, o): return self._bin("le", o)
    def __and__(self, o): return self._bin("and", o)
    def __or__(self, o): return self._bin("or", o)
    def __neg__(self): return self.tracer.op("neg", self)
    def __abs__(self): return self.tracer.op("abs", self)
    def __invert__(self): return self.tracer.op("not", self)

    def __bool__(self):
        if self.static is None:
            raise TypeError("the per-element math cannot branch on a value; use where(), or "
                            "branch on whether an option is on (h['name'])")
        return bool(self.static)

    __hash__ = object.__hash__

    def __repr__(self):
        return f"Node({self.op}, {self.kind})"


def _lift(x, tracer) -> Node:
    if isinstance(x, Node):
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"the per-element math takes numbers and its own values; got {x!r}")
    return tracer.const(float(x))


class _Tracer:
    def __init__(self):
        self.nodes: list[Node] = []
        self.inputs: dict[tuple, Node] = {}
        self.per_tensor: dict[str, Callable[[Tensor], float]] = {}

    def input(self, key: tuple, kind: str, static=None) -> Node:
        node = self.inputs.get(key)
        if node is None:
            node = self.inputs[key] = Node(self, key[0], key[1:], kind, static)
        return node

    def const(self, value: float) -> Node:
        return self.input(("const", value), "s", value != 0)

    def op(self, op: str, *args: Node) -> Node:
        kind = "e" if any(a.kind == "e" for a in args) else "s"
        return Node(self, op, tuple(a.index for a in args), kind)


def _current() -> _Tracer:
    if not _tracing:
        raise RuntimeError("the functions of descend.optim.elementwise build the per-element "
                           "math while it is traced; see trace()")
    return _tracing[-1]


def _node(x) -> Node:
    return _lift(x, _current())


def sqrt(x):
    """Square root (correctly rounded) of an element or scalar value."""
    return _current().op("sqrt", _node(x))


def maximum(a, b):
    """The larger of two values (NaN if either is NaN, as ``torch.maximum``)."""
    return _current().op("max", _node(a), _node(b))


def minimum(a, b):
    """The smaller of two values (NaN if either is NaN, as ``torch.minimum``)."""
    return _current().op("min", _node(a), _node(b))


def clamp(x, lo=None, hi=None):
    """``x`` limited to ``[lo, hi]`` (either bound may be None)."""
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x


def where(cond, a, b):
    """``a`` where ``cond`` holds, else ``b`` (per element, or per tensor for a scalar)."""
    t = _current()
    return t.op("where", _node(cond), _node(a), _node(b))


def sign(x):
    """-1, 0 or 1 (0 for NaN)."""
    return _current().op("sign", _node(x))


def randn():
    """A standard normal number per element, drawn by torch (``randn_like`` per tensor,
    in the order of the tensors) before the step: the same numbers on every path."""
    t = _current()
    return t.input(("randn", len([k for k in t.inputs if k[0] == "randn"])), "e")


def group_norm(x, p: float, scope: str = "group"):
    """The ``p``-norm of ``x`` over every element of every tensor of the group (a scalar),
    computed by torch before the step from the element values ``x`` (which must not
    depend on the state). ``scope="global"``: over every tensor of every group of the
    optimizer that has such a norm, when the optimizer computed it before the groups
    ran (:func:`shared_norms`); over the group otherwise."""
    t = _current()
    if scope not in ("group", "global"):
        raise ValueError(f"`scope` must be 'group' or 'global'. Received: scope={scope!r}")
    return Node(t, "norm", (_node(x).index, float(p), scope), "s")


#: The norms over all groups of the step being run (see :func:`shared_norms`): a plain
#: holder, which ``torch.compile`` traces (a ContextVar it does not).
_SHARED_NORMS: list = [None]


@contextlib.contextmanager
def shared_norms(norms: Mapping[float, Any] | None):
    """While inside, a ``group_norm(..., scope="global")`` of order ``p`` takes the value
    ``norms[p]`` (the norm over all groups, computed once per step by the optimizer)
    instead of the norm over its own group.

    >>> prog = trace(lambda u, w, s, h: u / group_norm(u, 2.0, "global"), {}, {})
    >>> with shared_norms({2.0: torch.tensor(10.0)}):
    ...     evaluate(prog, [torch.tensor([3.0, 4.0])], [torch.zeros(2)], [{}], {})
    [tensor([0.3000, 0.4000])]
    """
    saved = _SHARED_NORMS[0]
    _SHARED_NORMS[0] = dict(norms) if norms else None
    try:
        yield
    finally:
        _SHARED_NORMS[0] = saved


def per_tensor(name: str, fn: Callable[[Tensor], float]):
    """A scalar per tensor computed from the parameter by ``fn`` (e.g. whether it has more
    than one dimension), once per set of parameters."""
    t = _current()
    t.per_tensor[name] = fn
    return t.input(("tensor", name), "s")


# -- the hyperparameters and the state as seen by the math ------------------------------
def _static(v) -> Any:
    """What decides the code: bools, strings and None themselves, a number whether it is
    not 0, a tensor "tensor" (always on: its value is never read to choose code)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if torch.is_tensor(v):
        return "tensor"
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (tuple, list)):
        return tuple(_static(x) for x in v)
    return type(v).__name__


def structure(hyper: Mapping[str, Any], names) -> tuple:
    """The structure of ``hyper`` for the names a transform reads: a hashable summary of
    what decides the code (see :func:`_static`).

    >>> structure({"lr": 0.1, "nesterov": False, "betas": (0.9, 0.0)}, ["lr", "nesterov", "betas"])
    (('lr', True), ('nesterov', False), ('betas', (True, False)))
    """
    return tuple((k, _static(hyper.get(k))) for k in names)


class _Hyper:
    def __init__(self, tracer, hyper, exact):
        self._t, self._h, self._exact = tracer, hyper, set(exact)

    def __getitem__(self, name):
        v = self._h[name]
        if name in self._exact or v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (tuple, list)):
            return tuple(self._t.input(("hyper", name, i), "s", _static(x))
                         for i, x in enumerate(v))
        return self._t.input(("hyper", name, None), "s", _static(v))

    __getattr__ = __getitem__

    def __contains__(self, name):
        return name in self._h


class _State:
    def __init__(self, tracer, names):
        object.__setattr__(self, "_t", tracer)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_values", {})

    def __getattr__(self, name):
        if name == "step":
            return self._t.input(("step",), "s")
        if name not in self._names:
            raise AttributeError(f"state {name!r} is not declared by the transform")
        v = self._values.get(name)
        return v if v is not None else self._t.input(("state", name), "e")

    def __setattr__(self, name, value):
        if name not in self._names:
            raise AttributeError(f"state {name!r} is not declared by the transform")
        self._values[name] = _node(value)

    def fresh(self, name):
        """1 for a tensor whose ``name`` state is made at this step, else 0 (a scalar)."""
        return self._t.input(("fresh", name), "s")


class Program:
    """A traced per-element update: ``nodes`` (op, args, kind) in order, the state it
    writes (``writes``: name -> node index), its result (``out``), the state it reads
    (``reads``), the fill value of each state it keeps (``fills``) and the per-tensor
    functions it needs. ``key`` identifies it (equal keys, equal math)."""

    def __init__(self, tracer: _Tracer, out: Node, writes: dict[str, Node],
                 fills: Mapping[str, Any]):
        keep = set()
        stack = [out.index] + [n.index for n in writes.values()]
        while stack:
            i = stack.pop()
            if i in keep:
                continue
            keep.add(i)
            node = tracer.nodes[i]
            if node.op == "norm":
                stack.append(node.args[0])
            elif node.op not in ("const", "hyper", "state", "step", "fresh", "tensor", "randn"):
                stack.extend(node.args)
        order = sorted(keep)
        remap = {old: new for new, old in enumerate(order)}
        self.nodes: list[tuple] = []
        for old in order:
            n = tracer.nodes[old]
            if n.op == "norm":
                args = (remap[n.args[0]], *n.args[1:])
            elif n.op in ("const", "hyper", "state", "step", "fresh", "tensor", "randn"):
                args = n.args
            else:
                args = tuple(remap[a] for a in n.args)
            self.nodes.append((n.op, args, n.kind))
        self.out = remap[out.index]
        self.writes = {k: remap[n.index] for k, n in writes.items()}
        self.reads = sorted({n[1][0] for n in self.nodes if n[0] == "state"})
        self.state = sorted(set(self.reads) | set(self.writes))
        self.fills = {k: fills.get(k, 0.0) for k in self.state}
        self.fresh = sorted({n[1][0] for n in self.nodes if n[0] == "fresh"})
        self.per_tensor = {k: tracer.per_tensor[k] for k in
                           sorted({n[1][0] for n in self.nodes if n[0] == "tensor"})}
        self.randn = sum(1 for n in self.nodes if n[0] == "randn")
        self.uses_step = any(n[0] == "step" for n in self.nodes)
        self.key = (tuple(self.nodes), self.out, tuple(sorted(self.writes.items())))
        # a scalar node depends on the tensor (step, fresh flags, per-tensor values)?
        self.per_tensor_scalar = []
        for op, args, kind in self.nodes:
            dep = op in ("step", "fresh", "tensor") or (
                op not in ("const", "hyper", "norm", "state", "randn")
                and any(self.per_tensor_scalar[a] for a in args))
            self.per_tensor_scalar.append(dep and kind == "s")

    def __repr__(self):
        lines = [f"  %{i} = {op}{args} [{kind}]" for i, (op, args, kind) in enumerate(self.nodes)]
        return ("Program(\n" + "\n".join(lines) + f"\n  out %{self.out}, writes "
                + ", ".join(f"{k}=%{v}" for k, v in self.writes.items()) + ")")


def trace(math_fn: Callable, hyper: Mapping[str, Any], state_fills: Mapping[str, Any],
          exact: Sequence[str] = ()) -> Program:
    """Trace ``math_fn(u, w, s, h)`` into a :class:`Program` under the structure of
    ``hyper``. ``state_fills``: the state names it may use, each with the value a new
    state starts at (a number, or the name of a hyperparameter). ``exact``: names whose
    value (not only whether it is on) decides the code (e.g. a norm's order)."""
    tracer = _Tracer()
    _tracing.append(tracer)
    try:
        s = _State(tracer, set(state_fills))
        out = math_fn(tracer.input(("grad",), "e"), tracer.input(("param",), "e"), s,
                      _Hyper(tracer, hyper, exact))
        out = _lift(out, tracer)
    finally:
        _tracing.pop()
    return Program(tracer, out, s._values, state_fills)


def chain_math(transforms) -> Callable:
    """The per-element math of transforms run one after the other."""
    def fn(u, w, s, h):
        for t in transforms:
            u = t.math(u, w, s, h)
        return u
    return fn


# -- scalars: once per step, on the host or on the device --------------------------------
def scalar_mode(hyper: Mapping[str, Any], steps: Sequence[Any], device: torch.device) -> str:
    """"device" when the scalars must stay tensors (compiling, ``capturable``, tensor
    hyperparameters or step counters off the CPU), else "host" (Python floats)."""
    if hyper.get("capturable", False) or torch.compiler.is_compiling():
        return "device"
    for v in list(hyper.values()) + list(steps):
        if torch.is_tensor(v) and v.device.type != "cpu":
            return "device"
    return "host"


def _host(v):
    return float(v) if torch.is_tensor(v) else v


def _scalar_op(op, args, host):
    if op == "add": return args[0] + args[1]
    if op == "sub": return args[0] - args[1]
    if op == "mul": return args[0] * args[1]
    if op == "div":
        a, b = args
        if torch.is_tensor(a) or torch.is_tensor(b):
            return torch.div(torch.as_tensor(a, device=b.device if torch.is_tensor(b) else None)
                             if not torch.is_tensor(a) else a, b)
        return a / b if b != 0 else (math.copysign(math.inf, a) * math.copysign(1, b)
                                     if a != 0 and a == a else math.nan)
    if op == "pow":
        a, b = args
        if torch.is_tensor(a) or torch.is_tensor(b):
            return torch.pow(a, b)
        return a ** b
    if op == "neg": return -args[0]
    if op == "sqrt":
        a = args[0]
        return torch.sqrt(a) if torch.is_tensor(a) else (math.sqrt(a) if a >= 0 else math.nan)
    if op == "abs": return abs(args[0])
    if op in ("max", "min"):
        a, b = args
        if torch.is_tensor(a) or torch.is_tensor(b):
            a, b = (torch.as_tensor(x, device=(b if torch.is_tensor(b) else a).device)
                    for x in (a, b))
            return torch.maximum(a, b) if op == "max" else torch.minimum(a, b)
        if a != a or b != b:
            return math.nan
        return max(a, b) if op == "max" else min(a, b)
    if op == "sign":
        a = args[0]
        return torch.sign(a) if torch.is_tensor(a) else float((a > 0) - (a < 0))
    if op in _BOOL:
        a = args
        if op == "not": return ~a[0] if torch.is_tensor(a[0]) else not a[0]
        if op == "and": return a[0] & a[1] if torch.is_tensor(a[0]) else (a[0] and a[1])
        if op == "or": return a[0] | a[1] if torch.is_tensor(a[0]) else (a[0] or a[1])
        return {"gt": a[0] > a[1], "lt": a[0] < a[1], "ge": a[0] >= a[1], "le": a[0] <= a[1],
                "eq": a[0] == a[1], "ne": a[0] != a[1]}[op]
    if op == "where":
        c, a, b = args
        if torch.is_tensor(c):
            return torch.where(c, torch.as_tensor(a), torch.as_tensor(b))
        return a if c else b
    raise ValueError(op)


class _Scalars:
    """Evaluates the scalar nodes of a program, node by node, in program order."""

    def __init__(self, prog, hyper, steps, fresh, params, mode):
        self.prog, self.hyper, self.steps, self.fresh = prog, hyper, steps, fresh
        self.params, self.host, self.n = params, mode == "host", len(params)
        self.per_tensor = {k: [float(fn(p)) for p in params] for k, fn in prog.per_tensor.items()}
        self.out: dict[int, Any] = {}

    def node(self, i, norm=None):
        op, args, kind = self.prog.nodes[i]
        host = self.host
        if op == "const":
            v = args[0]
        elif op == "hyper":
            name, j = args
            v = self.hyper[name] if j is None else self.hyper[name][j]
            v = _host(v) if host else v
        elif op == "step":
            v = [_host(s) for s in self.steps] if host else list(self.steps)
            if host and v and all(x == v[0] for x in v):
                v = v[0]   # the usual case: one count for the whole group
        elif op == "fresh":
            v = [float(f) for f in self.fresh[args[0]]]
            if v and all(x == v[0] for x in v):
                v = v[0]
        elif op == "tensor":
            v = self.per_tensor[args[0]]
        elif op == "norm":
            v = norm
        else:
            vals = [self.out[a] for a in args]
            if any(isinstance(x, list) for x in vals):
                v = [_scalar_op(op, [x[k] if isinstance(x, list) else x for x in vals], host)
                     for k in range(self.n)]
            else:
                v = _scalar_op(op, vals, host)
        self.out[i] = v
        return v


def scalars(prog: Program, hyper: Mapping[str, Any], steps: Sequence[Any],
            fresh: Mapping[str, Sequence[bool]], params: Sequence[Tensor],
            norms: Mapping[int, Any], mode: str) -> dict[int, Any]:
    """The value of every scalar node: a number (or 0-d tensor) for a node of the group,
    a list with one per tensor for a node that depends on the tensor. ``norms``: the
    value of each ``group_norm`` node, computed before."""
    ev = _Scalars(prog, hyper, steps, fresh, params, mode)
    for i, (op, args, kind) in enumerate(prog.nodes):
        if kind == "s":
            ev.node(i, norms.get(i))
    return ev.out


def group_norms(prog: Program, values: Mapping[int, list[Tensor]], only: int | None = None
                ) -> dict[int, Tensor]:
    """The ``group_norm`` nodes of ``prog`` (or only node ``only``) computed from the
    element values they read (torch's ``_foreach_norm``, then the norm of the norms)."""
    out = {}
    shared = _SHARED_NORMS[0]
    for i, (op, args, kind) in enumerate(prog.nodes):
        if op == "norm" and (only is None or i == only):
            if shared is not None and args[2] == "global" and args[1] in shared:
                out[i] = shared[args[1]]
                continue
            x, p = values[args[0]], args[1]
            per = torch._foreach_norm(x, p)
            out[i] = torch.linalg.vector_norm(torch.stack([t.to(per[0].device) for t in per]), p)
    return out


# -- evaluation with torch (the reference path) ------------------------------------------
def is_dtensor(t) -> bool:
    """Whether ``t`` is a DTensor (FSDP2's sharded parameters and their state)."""
    return type(t).__name__ == "DTensor" and type(t).__module__.startswith("torch.distributed")


def foreach_copy_(targets: list[Tensor], values: list[Tensor]) -> None:
    """``torch._foreach_copy_``, one ``copy_`` per tensor for DTensors (which have no
    sharding rule for the multi-tensor copy)."""
    if targets and any(is_dtensor(t) for t in targets):
        for t, v in zip(targets, values):
            t.copy_(v)
    else:
        torch._foreach_copy_(targets, values)


def correct_sqrt(x: Tensor) -> Tensor:
    """Correctly rounded square root (torch's CPU ``sqrt`` is not, on some builds)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.sqrt(x)
    if x.dtype == torch.float32:
        return torch.sqrt(x.double()).float()
    if x.dtype == torch.float64 and not x.requires_grad:
        import numpy as np
        return torch.from_numpy(np.asarray(np.sqrt(x.contiguous().numpy())).reshape(x.shape))
    return torch.sqrt(x)


def _as_list(v, n):
    return v if isinstance(v, list) else [v] * n


def _full(v, like: Tensor) -> Tensor:
    return v.to(like.dtype).expand_as(like) if torch.is_tensor(v) else torch.full_like(like, v)


def _elementwise(op, vals, kinds, n):
    """One node on lists of tensors (elements) and scalars (numbers, 0-d tensors, lists)."""
    a = vals[0]
    if op in ("add", "mul"):
        x, y = vals
        if kinds[0] != "e":
            x, y = y, x
        if kinds[0] == kinds[1] == "e":
            return torch._foreach_add(x, y) if op == "add" else torch._foreach_mul(x, y)
        return _scalar_call(torch._foreach_add if op == "add" else torch._foreach_mul, x, y, n)
    if op == "sub":
        x, y = vals
        if kinds == ["e", "e"]:
            return torch._foreach_sub(x, y)
        if kinds[0] == "e":
            return _scalar_call(torch._foreach_sub, x, y, n)
        return _scalar_call(torch._foreach_add, torch._foreach_neg(y), x, n)
    if op == "div":
        x, y = vals
        if kinds == ["e", "e"]:
            return torch._foreach_div(x, y)
        if kinds[0] == "e":
            return _scalar_call(torch._foreach_div, x, y, n)
        return torch._foreach_div([_full(v, t) for v, t in zip(_as_list(x, n), y)], y)
    if op == "neg":
        return torch._foreach_neg(a)
    if op == "sqrt":
        return [correct_sqrt(t) for t in a]
    if op == "abs":
        return torch._foreach_abs(a)
    if op == "sign":
        return [torch.sign(t).nan_to_num_(0.0) if t.is_floating_point() else torch.sign(t)
                for t in a]
    if op in ("max", "min"):
        x, y = vals
        if kinds[0] != "e":
            x, y = y, x
        if kinds == ["e", "e"]:
            return torch._foreach_maximum(x, y) if op == "max" else torch._foreach_minimum(x, y)
        fn = torch.maximum if op == "max" else torch.minimum
        return [fn(t, _full(v, t)) for t, v in zip(x, _as_list(y, n))]
    if op in _BOOL:
        if op == "not":
            return [~t for t in a]
        fn = {"gt": torch.gt, "lt": torch.lt, "ge": torch.ge, "le": torch.le, "eq": torch.eq,
              "ne": torch.ne, "and": torch.logical_and, "or": torch.logical_or}[op]
        x, y = (v if k == "e" else _as_list(v, n) for v, k in zip(vals, kinds))
        return [fn(p, q) for p, q in zip(x, y)]
    if op == "where":
        c, x, y = vals
        like = next(v for v, k in zip(vals[1:], kinds[1:]) if k == "e") if "e" in kinds[1:] \
            else None
        out = []
        for i in range(n):
            ci = c[i] if isinstance(c, list) else c
            xi = x[i] if isinstance(x, list) else x
            yi = y[i] if isinstance(y, list) else y
            ref = like[i] if like is not None else (ci if torch.is_tensor(ci) else None)
            if not torch.is_tensor(ci) or (ci.dim() == 0 and ci.device.type == "cpu"
                                            and not torch.compiler.is_compiling()):
                pick = xi if bool(ci) else yi
                out.append(pick if torch.is_tensor(pick) and pick.dim() > 0 else _full(pick, ref))
            else:
                out.append(torch.where(ci, _full(xi, ref) if not torch.is_tensor(xi) else xi,
                                       _full(yi, ref) if not torch.is_tensor(yi) else yi))
        return out
    raise ValueError(op)


def _scalar_call(fn, tensors, scalar, n):
    if isinstance(scalar, list):
        if scalar and torch.is_tensor(scalar[0]):
            return fn(tensors, [s.to(t.device) for s, t in zip(scalar, tensors)])
        if all(s == scalar[0] for s in scalar):
            return fn(tensors, scalar[0])
        return fn(tensors, scalar)
    return fn(tensors, scalar)


def fill_value(fill, hyper):
    """The value a new state starts at: a number, or the hyperparameter it names.

    >>> fill_value("initial_accumulator_value", {"initial_accumulator_value": 0.1}), fill_value(0.0, {})
    (0.1, 0.0)
    """
    return hyper[fill] if isinstance(fill, str) else fill


def ensure_state(prog: Program, state: list[dict], params: Sequence[Tensor],
                 hyper: Mapping[str, Any], dtype: torch.dtype | None = None
                 ) -> dict[str, list[bool]]:
    """Make the state ``prog`` uses where it is missing (filled as declared); returns, per
    name, which tensors got a new one (the ``fresh`` flags of the math)."""
    fresh = {}
    for name in prog.state:
        flags = []
        fill = fill_value(prog.fills[name], hyper)
        for st, p in zip(state, params):
            new = st.get(name) is None
            if new:
                st[name] = torch.full_like(p, float(fill), memory_format=torch.preserve_format,
                                           dtype=dtype or p.dtype)
            flags.append(new)
        fresh[name] = flags
    return fresh


def evaluate(prog: Program, updates: list[Tensor], params: list[Tensor], state: list[dict],
             hyper: Mapping[str, Any], *, fresh: Mapping[str, list[bool]] | None = None,
             mode: str | None = None) -> list[Tensor]:
    """Run ``prog`` with torch's multi-tensor operations: returns the new updates and
    writes the new state (in place into the existing state tensors)."""
    n = len(params)
    made = ensure_state(prog, state, params, hyper)
    fresh = {k: [a or b for a, b in zip(made.get(k, [False] * n), (fresh or {}).get(k, [False] * n))]
             for k in set(made) | set(fresh or {})}
    steps = [st.get("step", 0.0) for st in state] if prog.uses_step else []
    mode = mode or scalar_mode(hyper, steps, params[0].device if params else torch.device("cpu"))
    vals: dict[int, Any] = {}
    kinds = [k for _, _, k in prog.nodes]
    ev = _Scalars(prog, hyper, steps, fresh, params, mode)
    scal = ev.out
    for i, (op, args, kind) in enumerate(prog.nodes):
        if kind == "s":
            norm = None
            if op == "norm":
                norm = group_norms(prog, {args[0]: vals[args[0]]}, only=i)[i]
            ev.node(i, norm)
        elif op == "grad":
            vals[i] = list(updates)
        elif op == "param":
            vals[i] = list(params)
        elif op == "state":
            vals[i] = [st[args[0]] for st in state]
        elif op == "randn":
            vals[i] = [torch.randn_like(u) for u in updates]
        else:
            argv = [vals[a] if kinds[a] == "e" else scal[a] for a in args]
            vals[i] = list(_elementwise(op, argv, [kinds[a] for a in args], n))
    for name, i in prog.writes.items():
        value = vals[i] if kinds[i] == "e" else [_full(v, p) for v, p in
                                                  zip(_as_list(scal[i], n), params)]
        targets = [st[name] for st in state]
        foreach_copy_(targets, value)
    out = vals[prog.out] if kinds[prog.out] == "e" else [
        _full(v, u) for v, u in zip(_as_list(scal[prog.out], n), updates)]
    return list(out)


