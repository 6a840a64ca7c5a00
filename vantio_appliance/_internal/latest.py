"""A file kept replaced with the latest bytes handed to it, by a thread of its own.

Why a thread: replacing a file by rename costs about a millisecond on ext4 (a
rename over an existing file starts the writeback of the new one, the
auto_da_alloc heuristic), several under load, and the ledger's committer
publishes a checkpoint every 100 ms: it should spend that time committing.
Only the latest bytes matter: a put that arrives while an older one still
waits replaces it, and puts are written in order, so the file never goes back.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from . import osutil

log = logging.getLogger(__name__)


class LatestFile:
    def __init__(self, path: Path, mode: int = 0o644) -> None:
        self.path, self.mode = path, mode
        self._cv = threading.Condition()
        self._next: bytes | None = None
        self._put = 0  # generation of the latest put
        self._done = 0  # generation of the latest write attempt
        self._failed = False  # that attempt failed
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="vantio-latest", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        """The latest write failed (disk full...): the caller should put again later."""
        return self._failed

    def put(self, data: bytes, *, wait: bool = False) -> bool:
        """Hand ``data`` over. With ``wait``, return once it is in place: False if that
        write failed (logged). Without, return at once (True)."""
        with self._cv:
            if self._closing:
                raise RuntimeError(f"{self.path}: closed")
            self._put += 1
            gen, self._next = self._put, data
            self._cv.notify_all()
            while wait and self._done < gen:
                self._cv.wait()
            return not (wait and self._failed)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._next is None and not self._closing:
                    self._cv.wait()
                if self._next is None:
                    return
                data, gen, self._next = self._next, self._put, None
            try:
                osutil.replace_file(self.path, data, self.mode)
                failed = False
            except OSError as exc:
                log.warning("%s not replaced (%s); it will be next time", self.path, exc.strerror)
                failed = True
            with self._cv:
                self._done, self._failed = gen, failed
                self._cv.notify_all()

    def close(self) -> None:
        """Write what is pending, then stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
