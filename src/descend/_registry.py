"""A small name -> component registry, shared by optimizers, schedules, initializers,
losses, regularizers, callbacks and models, so that recipes can name any of them and an
unknown name always gets the same clear error.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator


class Registry:
    """Map lower-case names to factories.

    >>> models = Registry("model")
    >>> @models.register("double")
    ... def double(x=1):
    ...     return 2 * x
    >>> models.create("double", x=3)
    6
    >>> models.create("tripple")
    Traceback (most recent call last):
    ValueError: `model` must be one of 'double'. Received: model='tripple'
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, doc: str | None = None):
        """Register ``factory`` under ``name``; usable as a decorator."""
        key = name.lower()

        def deco(f):
            if key in self._entries and self._entries[key] is not f:
                raise KeyError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = f
            first = (doc or (f.__doc__ or "")).strip().splitlines()
            self._docs[key] = first[0] if first else ""
            return f

        return deco(factory) if factory is not None else deco

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under ``name`` (case-insensitive)."""
        if not isinstance(name, str) or name.lower() not in self._entries:
            choices = ", ".join(repr(n) for n in self.names())
            hint = ""
            if isinstance(name, str):
                close = difflib.get_close_matches(name.lower(), self.names(), n=1)
                if close:
                    hint = f" Did you mean {close[0]!r}?"
            raise ValueError(
                f"`{self.kind}` must be one of {choices}. Received: {self.kind}={name!r}{hint}"
            )
        return self._entries[name.lower()]

    def create(self, name: str, *args, **kwargs):
        """Call the factory registered under ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name -> first docstring line, for `--help` and docs."""
        return {n: self._docs[n] for n in self.names()}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
