"""Two-dimensional test functions for optimizers, and a safe expression parser.

Each test function maps a 2-vector ``w = (x, y)`` (a torch tensor, or two broadcasting
tensors through :meth:`TestFunction.grid`) to a scalar, and carries its drawing box,
a default start and its known minima:

==================  ===============================================  =================
name                f(x, y)                                          minima (f = 0)
==================  ===============================================  =================
``quadratic``       0.5 (x^2 + kappa y^2), kappa = 20 (ill-cond.)    (0, 0)
``rosenbrock``      (1 - x)^2 + 100 (y - x^2)^2                      (1, 1)
``beale``           (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2
                    + (2.625 - x + xy^3)^2                           (3, 0.5)
``saddle``          x^2 - y^2 (saddle point at 0, no minimum)        none
``himmelblau``      (x^2 + y - 11)^2 + (x + y^2 - 7)^2               (3, 2), (-2.805118, 3.131312),
                                                                     (-3.779310, -3.283186),
                                                                     (3.584428, -1.848126)
==================  ===============================================  =================

:func:`parse_expression` turns a typed surface such as ``"x**2 + 3*sin(y)"`` into the
same kind of callable. It walks Python's syntax tree and accepts only numbers, ``x``,
``y``, ``pi``, ``e``, ``+ - * / **``, unary minus/plus and the functions ``sin cos exp
log sqrt abs tanh``; anything else is rejected with a message naming the offending
piece. Nothing is passed to ``eval``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from descend._registry import Registry
from descend._validation import fail

TEST_FUNCTIONS = Registry("test_function")


@dataclass(frozen=True)
class TestFunction:
    """A 2-D test function ``fn(x, y)`` with its drawing box, default start and minima.

    Calling the object with a 2-vector returns ``fn(w[0], w[1])``.

    Example:
        >>> f = TEST_FUNCTIONS.create("rosenbrock")
        >>> float(f(torch.tensor([1.0, 1.0])))
        0.0
    """

    __test__ = False  # not a pytest class

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    bounds: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    formula: str = ""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        if w.shape[-1] != 2:
            fail("w", "a tensor whose last dimension is 2", tuple(w.shape))
        return self.fn(w[..., 0], w[..., 1])

    def grid(self, n: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(X, Y, Z)`` on an ``n x n`` grid over :attr:`bounds` (float64), for contours."""
        x0, x1, y0, y1 = self.bounds
        xs = torch.linspace(x0, x1, n, dtype=torch.float64)
        ys = torch.linspace(y0, y1, n, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        return X, Y, self.fn(X, Y)


def _register(name, fn, bounds, start, minima, formula):
    def factory():
        return TestFunction(name, fn, bounds, start, minima, formula)

    factory.__doc__ = f"{formula}"
    TEST_FUNCTIONS.register(name, factory)


QUADRATIC_KAPPA = 20.0

_register("quadratic", lambda x, y: 0.5 * (x**2 + QUADRATIC_KAPPA * y**2),
          (-4.0, 4.0, -2.0, 2.0), (-3.5, 1.5), ((0.0, 0.0),),
          "0.5 (x^2 + 20 y^2): ill-conditioned quadratic, condition number 20")
_register("rosenbrock", lambda x, y: (1 - x) ** 2 + 100 * (y - x**2) ** 2,
          (-2.0, 2.0, -1.0, 3.0), (-1.5, 2.5), ((1.0, 1.0),),
          "(1 - x)^2 + 100 (y - x^2)^2: curved valley, minimum (1, 1)")
_register("beale",
          lambda x, y: (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2
          + (2.625 - x + x * y**3) ** 2,
          (-4.5, 4.5, -4.5, 4.5), (1.0, 1.5), ((3.0, 0.5),),
          "(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2: minimum (3, 0.5)")
_register("saddle", lambda x, y: x**2 - y**2,
          (-2.0, 2.0, -2.0, 2.0), (-1.5, 1e-3), (),
          "x^2 - y^2: saddle point at the origin, unbounded below")
_register("himmelblau", lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
          (-5.0, 5.0, -5.0, 5.0), (0.0, 0.0),
          ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)),
          "(x^2 + y - 11)^2 + (x + y^2 - 7)^2: four minima with f = 0")


# ----------------------------------------------------------------------------- parser

_FUNCS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin, "cos": torch.cos, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "abs": torch.abs, "tanh": torch.tanh,
}
_CONSTS = {"pi": math.pi, "e": math.e}
_BINOPS = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b,
}
MAX_EXPRESSION_LENGTH = 500


def _compile(node: ast.AST, text: str):
    """Turn a whitelisted syntax node into a function of ``(x, y)``."""
    piece = ast.get_source_segment(text, node) or type(node).__name__
    if isinstance(node, ast.Expression):
        return _compile(node.body, text)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ValueError(f"`expression` may contain only real numbers as constants. "
                             f"Received: {piece!r}")
        v = float(node.value)
        return lambda x, y: v
    if isinstance(node, ast.Name):
        if node.id == "x":
            return lambda x, y: x
        if node.id == "y":
            return lambda x, y: y
        if node.id in _CONSTS:
            c = _CONSTS[node.id]
            return lambda x, y: c
        raise ValueError(f"`expression` may use only the variables x, y and the constants pi, e. "
                         f"Received: unknown name {node.id!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        op, a, b = _BINOPS[type(node.op)], _compile(node.left, text), _compile(node.right, text)
        return lambda x, y: op(a(x, y), b(x, y))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        a = _compile(node.operand, text)
        if isinstance(node.op, ast.USub):
            return lambda x, y: -a(x, y)
        return a
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            raise ValueError(f"`expression` may call only {', '.join(sorted(_FUNCS))}. "
                             f"Received: {piece!r}")
        if len(node.args) != 1 or node.keywords:
            raise ValueError(f"`expression`: {node.func.id} takes exactly one argument. "
                             f"Received: {piece!r}")
        f, a = _FUNCS[node.func.id], _compile(node.args[0], text)

        def call(x, y):
            v = a(x, y)
            return f(v if torch.is_tensor(v) else torch.as_tensor(v, dtype=torch.float64))

        return call
    raise ValueError(f"`expression` may contain only numbers, x, y, + - * / **, unary minus "
                     f"and the functions {', '.join(sorted(_FUNCS))}. Received: {piece!r} "
                     f"({type(node).__name__})")


def parse_expression(expression: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Parse a user-typed surface ``f(x, y)`` into a torch function, safely.

    Only numbers, ``x``, ``y``, ``pi``, ``e``, ``+ - * / **``, unary ``-``/``+`` and the
    functions ``sin cos exp log sqrt abs tanh`` are accepted (an AST whitelist); no code
    is evaluated. Constant sub-expressions still return tensors when ``x`` is a tensor.

    Args:
        expression: the formula, at most 500 characters.

    Returns:
        ``f(x, y)`` broadcasting over tensors, differentiable by autograd.

    Example:
        >>> f = parse_expression("x**2 + 3*sin(y)")
        >>> float(f(torch.tensor(2.0), torch.tensor(0.0)))
        4.0
        >>> parse_expression("__import__('os')")
        Traceback (most recent call last):
        ValueError: `expression` may call only abs, cos, exp, log, sin, sqrt, tanh. Received: "__import__('os')"
    """
    if not isinstance(expression, str):
        fail("expression", "a string", expression, TypeError)
    if not expression.strip():
        fail("expression", "a non-empty formula in x and y", expression)
    if len(expression) > MAX_EXPRESSION_LENGTH:
        fail("expression", f"at most {MAX_EXPRESSION_LENGTH} characters long",
             expression[:40] + "...")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"`expression` is not a valid formula ({err.msg}). "
                         f"Received: expression={expression!r}") from None
    inner = _compile(tree, expression.strip())

    def f(x, y):
        out = inner(x, y)
        if not torch.is_tensor(out):
            out = torch.full_like(x, float(out)) if torch.is_tensor(x) else torch.tensor(float(out))
        return out

    f.__doc__ = f"f(x, y) = {expression.strip()}"
    return f
