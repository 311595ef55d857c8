"""The index's writer lock: ``embed.lock`` in the index directory, held with ``flock(2)``.

One process at a time writes an index: ``embed`` and ``index repair`` hold the lock for their
whole run (``IndexStore.create_or_open`` takes it, ``close`` releases it), and a reader that found
stale FAISS files takes it only while saving the ones it rebuilt (when it cannot, it keeps them in
memory). The kernel drops a ``flock`` when its holder dies, even by ``kill -9``, so a lock is
never left stuck; the file's content (``"<pid> <role>"``) only names the holder in messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from avsearch.errors import AvsearchError, IndexBusyError

LOCK_FILE = "embed.lock"
WRITERS = ("embed", "repair")  # roles that hold the lock for a whole run
GRACE_SECONDS = 1.0  # a writer retries this long (a reader may be probing the lock)
READER_WAIT_SECONDS = 60.0  # and this long while a reader saves a rebuilt vector index


class WriterLock:
    """A held writer lock. Release with ``release()`` or by leaving the ``with`` block."""

    def __init__(self, root: Path, fd: int, role: str) -> None:
        self.root = root
        self.role = role
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, root: Path, role: str) -> WriterLock | None:
        """The lock if nobody holds it, else None (also None when the directory is read-only)."""
        try:
            fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)
        except OSError:
            pass  # the name in a message is a courtesy; the flock is the lock
        return cls(root, fd, role)

    @classmethod
    def acquire(cls, root: Path, role: str = "embed") -> WriterLock:
        """The lock, or IndexBusyError when another writer holds it.

        A holder that is a reader saving a rebuilt vector index is waited for (that is short);
        a whole-run writer (another embed or repair) is not: the caller is told who it is."""
        start = time.monotonic()
        while True:
            lock = cls.try_acquire(root, role)
            if lock is not None:
                return lock
            if not (root / LOCK_FILE).exists() and not os.access(root, os.W_OK):
                raise AvsearchError(
                    f"cannot write to the index at {root} (permission denied)",
                    hint="pass --index DIR with a folder you can write to",
                )
            pid, holder_role = holder(root)
            waited = time.monotonic() - start
            limit = READER_WAIT_SECONDS if holder_role not in WRITERS else GRACE_SECONDS
            if waited >= limit:
                who = f"avsearch {holder_role or 'process'}"
                pid_text = f"pid {pid}" if pid else "pid unknown"
                raise IndexBusyError(
                    f"another {who} ({pid_text}) is writing to {root}; wait for it or stop it",
                    hint=f"the lock is {root / LOCK_FILE}; it is released when that process "
                    "exits, however it exits",
                )
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(root: Path) -> tuple[int | None, str | None]:
    """(pid, role) written by the current or last holder, as far as the file says."""
    try:
        text = (root / LOCK_FILE).read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return None, None
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid, (text[1] if len(text) > 1 else None)


def writer_active(root: Path) -> bool:
    """Whether some process holds the writer lock right now (a shared, non-blocking probe)."""
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
