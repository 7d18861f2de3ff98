"""Advisory locks on files, released by the operating system when their process dies.

A run folder or a checkpoint folder is owned by one process at a time: the owner holds
an exclusive ``flock`` (``msvcrt.locking`` on Windows) on a lock file that also holds its
pid, for the information of whoever finds it taken. The kernel drops the lock when the
owner exits, however it exits (SIGKILL included), so a lock of a dead process is never
"stale": the next process simply takes it. Removing a held lock file is safe: a process
that opened the old file before it was removed notices that the path no longer names
the file it locked, and tries again. A forked child (a DataLoader worker, say) closes
its copy of the lock's file at once: the lock stays its parent's, and is released when
the parent dies even while such children live on.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    try:
        import msvcrt
    except ImportError:
        msvcrt = None


class FolderInUseError(RuntimeError):
    """A folder is owned by another live process (the message names it and the pid)."""


class FileLock:
    """An exclusive, non-blocking lock on ``path`` (created if missing), holding our pid.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> a, b = FileLock(d / ".lock"), FileLock(d / ".lock")
        >>> a.acquire(), b.acquire()        # b is another open file: refused while a holds it
        (True, False)
        >>> b.holder() == str(os.getpid())
        True
        >>> a.release(); b.acquire()
        True
        >>> b.release()
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if it is free; return whether this object now holds it."""
        if self._fd is not None:
            return True
        for _ in range(100):  # the file may be removed and recreated between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _lock(fd):
                    os.close(fd)
                    return False
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the owner removed it after we opened it: try the new one
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            _HELD.add(self)
            return True
        return False  # pragma: no cover - only under a storm of lock removals

    def holder(self) -> str | None:
        """The pid written in the lock file (None when unreadable or empty)."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return None
        return text or None

    def release(self) -> None:
        """Give the lock up and remove the lock file (no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        try:
            if fcntl is not None:  # removing first: a waiter sees the path change and retries
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)

    def __getstate__(self):  # a copy (pickle, deepcopy) names the file but holds nothing
        return {"path": self.path, "_fd": None}

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.release()
        except Exception:
            pass


_HELD: "weakref.WeakSet[FileLock]" = weakref.WeakSet()


def _forget_in_child() -> None:
    """After a fork, in the child: close the inherited lock files (their locks are the
    parent's). Otherwise a DataLoader worker outliving a killed trainer for a few seconds
    would keep the trainer's folders locked."""
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover
                pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        return True
    if msvcrt is not None:  # pragma: no cover - Windows
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    return True  # pragma: no cover - no locking available: single-process use only
