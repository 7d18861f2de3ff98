"""Shared argument checks: one message shape everywhere.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type / unknown
keyword) with the message ``"`name` must be <condition>. Received: name=<value>"``,
so that a user always sees which argument was wrong and what was passed.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Iterable, Mapping


def short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to about ``limit`` characters, so that an error message stays one
    short line whatever was passed (a list of a million numbers, a 1 MB string).

    >>> short_repr(list(range(100)))
    '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, ...]'
    >>> short_repr("x" * 1000, limit=12)
    "'xx...xxx'"
    """
    import reprlib
    r = reprlib.Repr()
    r.maxlist = r.maxdict = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 20
    r.maxstring = r.maxother = r.maxlong = limit
    r.maxlevel = 3
    if isinstance(value, str):
        r.maxstring = max(limit - 2, 7)
    text = r.repr(value)
    return text if len(text) <= limit + 10 else text[:limit] + " ..."


def _fmt(name: str, value: Any) -> str:
    return f"Received: {name}={short_repr(value)}"


def fail(name: str, condition: str, value: Any, exc: type[Exception] = ValueError):
    """Raise ``exc`` with the project's message shape.

    >>> fail("lr", "> 0", -1.0)
    Traceback (most recent call last):
        ...
    ValueError: `lr` must be > 0. Received: lr=-1.0
    """
    raise exc(f"`{name}` must be {condition}. {_fmt(name, value)}")


def check_real(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Check that ``value`` is a finite real number (bool excluded).

    >>> check_real("lr", 0.1)
    0.1
    >>> check_real("lr", float("nan"))
    Traceback (most recent call last):
        ...
    ValueError: `lr` must be finite. Received: lr=nan
    """
    if value is None and allow_none:
        return value
    # A 0-d tensor (e.g. a tensor LR) is accepted as a real number.
    if hasattr(value, "dim") and hasattr(value, "item") and value.dim() == 0:
        v = float(value.item())
    elif isinstance(value, Real) and not isinstance(value, bool):
        v = float(value)
    else:
        fail(name, "a real number", value, TypeError)
    if math.isnan(v) or math.isinf(v):
        fail(name, "finite", value)
    return value


def check_range(
    name: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    allow_none: bool = False,
) -> Any:
    """Check ``value`` is a finite real within the given bounds.

    >>> check_range("lr", 0.1, ge=0)
    0.1
    >>> check_range("lr", -1, ge=0)
    Traceback (most recent call last):
    ValueError: `lr` must be >= 0. Received: lr=-1
    """
    if value is None and allow_none:
        return value
    check_real(name, value)
    v = float(value.item()) if hasattr(value, "item") else float(value)
    conds = []
    if ge is not None:
        conds.append((v >= ge, f">= {ge}"))
    if gt is not None:
        conds.append((v > gt, f"> {gt}"))
    if le is not None:
        conds.append((v <= le, f"<= {le}"))
    if lt is not None:
        conds.append((v < lt, f"< {lt}"))
    if not all(ok for ok, _ in conds):
        fail(name, " and ".join(c for _, c in conds), value)
    return value


def check_int(name: str, value: Any, *, ge: int | None = None, le: int | None = None,
              allow_none: bool = False) -> Any:
    """Check ``value`` is an int (bool excluded) within bounds.

    >>> check_int("epochs", 3, ge=1)
    3
    >>> check_int("epochs", True)
    Traceback (most recent call last):
        ...
    TypeError: ...
    """
    if value is None and allow_none:
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        fail(name, "an integer", value, TypeError)
    conds = []
    if ge is not None:
        conds.append((value >= ge, f">= {ge}"))
    if le is not None:
        conds.append((value <= le, f"<= {le}"))
    if not all(ok for ok, _ in conds):
        fail(name, "an integer " + " and ".join(c for _, c in conds), value)
    return value


def check_bool(name: str, value: Any) -> bool:
    """Check ``value`` is a bool.

    >>> check_bool("nesterov", False)
    False
    """
    if not isinstance(value, bool):
        fail(name, "a bool", value, TypeError)
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Check ``value`` is one of ``choices``.

    >>> check_choice("mode", "max", ["min", "max"])
    'max'
    """
    choices = list(choices)
    if value not in choices:
        fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_pair(name: str, value: Any, *, ge: float = 0.0, lt: float = 1.0) -> tuple:
    """Check a pair such as ``betas``: two reals, each in ``[ge, lt)``.

    >>> check_pair("betas", (0.9, 0.999))
    (0.9, 0.999)
    """
    try:
        a, b = value
    except (TypeError, ValueError):
        fail(name, "a pair of two numbers", value, TypeError)
    for i, x in enumerate((a, b)):
        check_real(f"{name}[{i}]", x)
        xv = float(x.item()) if hasattr(x, "item") else float(x)
        if not (ge <= xv < lt):
            fail(name, f"a pair with each entry in [{ge}, {lt})", value)
    return (a, b)


def check_no_unknown(where: str, kwargs: Mapping[str, Any], known=None) -> None:
    """Reject unknown keyword arguments, naming them (and the closest of ``known``).

    >>> check_no_unknown("sgd", {})
    >>> check_no_unknown("sgd", {"lrate": 0.1})
    Traceback (most recent call last):
        ...
    TypeError: ...lrate...
    >>> check_no_unknown("Adam", {"lrr": 0.1}, known=["lr", "betas"])
    Traceback (most recent call last):
        ...
    TypeError: Adam got unexpected keyword argument(s): lrr (did you mean 'lr'?). Received: lrr=0.1
    """
    if kwargs:
        names = ", ".join(sorted(kwargs))
        if known:
            import difflib
            hints = [f"{k!r}" for k in sorted(kwargs) for k in
                     difflib.get_close_matches(k, list(known), n=1, cutoff=0.6)]
            if hints:
                names += f" (did you mean {', '.join(hints)}?)"
        raise TypeError(
            f"{where} got unexpected keyword argument(s): {names}. "
            f"Received: {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}"
        )


def check_file_name(name: str, value: Any) -> str:
    """Check that ``value`` can be used as one file or folder name inside a chosen folder.

    Refused: a non-string, the empty string, ``.`` and anything containing ``..``, a path
    separator (``/``, ``\\``), a NUL or another control character: so a name from a
    recipe can never point outside the folder it is joined to.

    >>> check_file_name("variant", "adam-lr=0.1")
    'adam-lr=0.1'
    >>> check_file_name("variant", "../../x")
    Traceback (most recent call last):
        ...
    ValueError: `variant` must be a plain file name (not empty, no '/', '\\', '..' or control characters). Received: variant='../../x'
    """
    cond = "a plain file name (not empty, no '/', '\\', '..' or control characters)"
    if not isinstance(value, str):
        fail(name, cond, value, TypeError)
    if (not value or value == "." or ".." in value or "/" in value or "\\" in value
            or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        fail(name, cond, value)
    return value


def check_relative_path(name: str, value: Any) -> str:
    """Check that ``value`` is a relative path whose every part passes :func:`check_file_name`.

    >>> check_relative_path("directory", "checkpoints/run1")
    'checkpoints/run1'
    >>> check_relative_path("directory", "/etc")
    Traceback (most recent call last):
        ...
    ValueError: `directory` must be a relative path inside the output folder (parts without '..', control characters or a leading '/'). Received: directory='/etc'
    """
    cond = "a relative path inside the output folder (parts without '..', control characters or a leading '/')"
    if not isinstance(value, str):
        fail(name, cond, value, TypeError)
    parts = value.replace("\\", "/").split("/")
    if not value or value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        fail(name, cond, value)
    for part in parts:
        if part in ("", "."):
            continue
        try:
            check_file_name(name, part)
        except ValueError:
            fail(name, cond, value)
    return value
