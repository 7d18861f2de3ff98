"""Two-dimensional loss surfaces for the optimizer race, and a safe expression parser.

Each surface is a function ``f(x, y)`` of two torch tensors (broadcasting, so the same
function evaluates one point for an optimizer step and a whole grid for the contours),
with the box it is drawn in, a default start and its known minima.

=================  =====================================================  ==================
name               f(x, y)                                                minima
=================  =====================================================  ==================
``quadratic``      0.5 x^2 + 5 y^2  (ill-conditioned, kappa = 10)        (0, 0)
``rosenbrock``     (1 - x)^2 + 100 (y - x^2)^2                           (1, 1)
``beale``          (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2
                   + (2.625 - x + xy^3)^2                                (3, 0.5)
``saddle``         x^2 - y^2  (unbounded below: no minimum)              none
``himmelblau``     (x^2 + y - 11)^2 + (x + y^2 - 7)^2                    four, f = 0
=================  =====================================================  ==================

A typed expression (``"x**2 + 3*sin(y)"``) is parsed with :func:`parse_expression`,
which walks Python's syntax tree and accepts only numbers, ``x``, ``y``, ``pi``, ``e``,
``+ - * / **``, unary minus and a fixed list of functions; anything else (attribute
access, names, calls of other functions, comprehensions, ...) is rejected with a message
naming the offending piece. Nothing is passed to ``eval``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from descend._validation import fail

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Surface:
    """A 2-D test surface: ``fn(x, y)``, drawing box, default start and minima.

    Example:
        >>> s = SURFACES["rosenbrock"]
        >>> float(s.fn(torch.tensor(1.0), torch.tensor(1.0)))
        0.0
    """

    name: str
    fn: Fn
    bounds: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    formula: str = ""


def _quadratic(x, y):
    return 0.5 * x**2 + 5.0 * y**2


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _saddle(x, y):
    return x**2 - y**2


def _himmelblau(x, y):
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


SURFACES: dict[str, Surface] = {
    s.name: s
    for s in [
        Surface("quadratic", _quadratic, (-4.0, 4.0, -2.0, 2.0), (-3.5, 1.5), ((0.0, 0.0),),
                "0.5 x^2 + 5 y^2"),
        Surface("rosenbrock", _rosenbrock, (-2.0, 2.0, -1.0, 3.0), (-1.5, 2.0), ((1.0, 1.0),),
                "(1 - x)^2 + 100 (y - x^2)^2"),
        Surface("beale", _beale, (-4.5, 4.5, -4.5, 4.5), (1.0, 1.4), ((3.0, 0.5),),
                "(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2"),
        Surface("saddle", _saddle, (-2.0, 2.0, -2.0, 2.0), (-1.8, 0.01), (),
                "x^2 - y^2"),
        Surface("himmelblau", _himmelblau, (-5.0, 5.0, -5.0, 5.0), (0.0, 0.0),
                ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186),
                 (3.584428, -1.848126)),
                "(x^2 + y - 11)^2 + (x + y^2 - 7)^2"),
    ]
}

# ---------------------------------------------------------------- safe expressions

_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "exp": torch.exp,
    "log": torch.log, "sqrt": torch.sqrt, "abs": torch.abs, "tanh": torch.tanh,
    "sinh": torch.sinh, "cosh": torch.cosh, "atan": torch.atan, "sigmoid": torch.sigmoid,
}
_CONSTS = {"pi": math.pi, "e": math.e}
_BINOPS = {
    ast.Add: torch.add, ast.Sub: torch.sub, ast.Mult: torch.mul,
    ast.Div: torch.div, ast.Pow: torch.pow,
}
MAX_EXPRESSION_CHARS = 300
MAX_EXPRESSION_NODES = 200


def parse_expression(text: str) -> Fn:
    """Compile a formula in ``x`` and ``y`` into ``f(x, y)`` on tensors, safely.

    Grammar: numbers, ``x``, ``y``, ``pi``, ``e``, ``+ - * / **`` (``^`` is read as
    ``**``), unary ``+``/``-``, parentheses, and the functions
    sin, cos, tan, exp, log, sqrt, abs, tanh, sinh, cosh, atan, sigmoid (one argument).
    The text is parsed with :mod:`ast` and every node is checked against this list;
    nothing is evaluated by Python, the tree is turned into torch operations.

    Args:
        text: the formula, at most 300 characters.

    Raises:
        ValueError: "`expression` must be ... Received: expression='...'" naming what
        is not allowed (a syntax error, an unknown name or function, too long).

    Example:
        >>> f = parse_expression("x^2 + 3*sin(y)")
        >>> float(f(torch.tensor(2.0), torch.tensor(0.0)))
        4.0
    """
    if not isinstance(text, str):
        fail("expression", "a string", text, TypeError)
    if not text.strip():
        fail("expression", "a non-empty formula in x and y", text)
    if len(text) > MAX_EXPRESSION_CHARS:
        fail("expression", f"at most {MAX_EXPRESSION_CHARS} characters", text)
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        fail("expression", f"a valid formula (syntax error at column {e.offset})", text)
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_EXPRESSION_NODES:
        fail("expression", f"a formula of at most {MAX_EXPRESSION_NODES} syntax nodes", text)
    fn = _compile(tree.body, text)
    if not any(isinstance(n, ast.Name) and n.id in ("x", "y") for n in nodes):
        fail("expression", "a formula that uses x or y", text)
    return fn


def _compile(node: ast.AST, text: str) -> Fn:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        c = float(node.value)
        return lambda x, y: torch.full_like(x, c) if x.dim() else x.new_tensor(c)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return lambda x, y: x
        if node.id == "y":
            return lambda x, y: y
        if node.id in _CONSTS:
            c = _CONSTS[node.id]
            return lambda x, y: torch.full_like(x, c) if x.dim() else x.new_tensor(c)
        fail("expression", f"a formula in x and y only (unknown name {node.id!r})", text)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        op, a, b = _BINOPS[type(node.op)], _compile(node.left, text), _compile(node.right, text)
        return lambda x, y: op(a(x, y), b(x, y))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        a = _compile(node.operand, text)
        if isinstance(node.op, ast.USub):
            return lambda x, y: -a(x, y)
        return a
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _FUNCS and len(node.args) == 1 and not node.keywords:
        f, a = _FUNCS[node.func.id], _compile(node.args[0], text)
        return lambda x, y: f(a(x, y))
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else ast.dump(node.func)[:40]
        allowed = ", ".join(sorted(_FUNCS))
        fail("expression", f"a formula calling only {allowed} with one argument "
                           f"(got {name!r})", text)
    what = type(node).__name__
    if isinstance(node, ast.BinOp):
        what = type(node.op).__name__
    fail("expression", f"a formula of numbers, x, y, + - * / ** and functions "
                       f"(not allowed: {what})", text)
    raise AssertionError  # unreachable: fail raises
