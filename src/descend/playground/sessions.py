"""Training runs keyed by an id, so that two browser tabs train independently.

Each entry holds its own lock: requests for the same run are served one after the
other, requests for different runs in parallel. The store keeps at most
``max_sessions`` runs; creating one more drops the one used least recently (a tab
left open and forgotten), and a request for a dropped id gets a clear 404 message.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Callable


class UnknownSession(KeyError):
    """Raised for an id the store does not hold (never created, or dropped)."""


class Session:
    """A run plus its lock and the time it was last used."""

    def __init__(self, sid: str, run: Any):
        self.id = sid
        self.run = run
        self.lock = threading.Lock()
        self.last_used = time.monotonic()


class SessionStore:
    """A bounded, thread-safe map ``id -> Session``.

    Args:
        max_sessions: how many runs are kept at once (default 16).

    Example:
        >>> store = SessionStore(max_sessions=2)
        >>> sid = store.create(lambda: "run")
        >>> with store.use(sid) as s:
        ...     s.run
        'run'
    """

    def __init__(self, max_sessions: int = 16):
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, factory: Callable[[], Any]) -> str:
        """Build a run with ``factory()`` (outside the store lock) and return its id."""
        run = factory()
        sid = secrets.token_hex(8)
        with self._lock:
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
            self._sessions[sid] = Session(sid, run)
        return sid

    def replace(self, sid: str, run: Any) -> None:
        """Swap the run of ``sid`` (a reset); the caller holds the session's lock."""
        with self._lock:
            if sid not in self._sessions:
                raise UnknownSession(sid)
            self._sessions[sid].run = run

    def delete(self, sid: str) -> None:
        with self._lock:
            if self._sessions.pop(sid, None) is None:
                raise UnknownSession(sid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def use(self, sid: str) -> "_Use":
        """Context manager: look ``sid`` up, mark it used and hold its lock."""
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                raise UnknownSession(sid)
            self._sessions.move_to_end(sid)
            s.last_used = time.monotonic()
        return _Use(s)


class _Use:
    def __init__(self, session: Session):
        self.session = session

    def __enter__(self) -> Session:
        self.session.lock.acquire()
        return self.session

    def __exit__(self, *exc) -> None:
        self.session.lock.release()
