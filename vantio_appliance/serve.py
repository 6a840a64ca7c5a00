"""`vantio serve`: the ledger service on a unix socket, in one process on one event loop.

The process is the ledger's one writer: uvloop runs the HTTP server
(``_internal/http1.py``), the app (``ingest.App``) and the group commit; batch
helpers (child processes) take large batches' parsing; the optional TLS
listener is a front process of its own (``front``) that holds no keys.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvloop

from . import front, ingest
from ._internal import http1, notify
from .layout import DEFAULT_SOCKET

log = logging.getLogger(__name__)

#: SIGTERM: requests already with the app get this long to be committed and answered
DRAIN_TIMEOUT_S: Final = 30.0


def _clear_stale(path: Path) -> None:
    """Remove a socket file left by a crash; refuse if a server still answers on it."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise RuntimeError(f"a server is already listening on {path}")


@dataclass(frozen=True)
class TLS:
    """The optional TCP listener: address and the certificate files."""

    listen: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class Sealing:
    """When the writer seals the active segment (bytes, seconds) and rotates the epoch key."""

    segment_bytes: int
    segment_age_s: float
    epoch_seconds: float


def serve(root: Path, sock: Path = DEFAULT_SOCKET, *, mode: int = 0o660,
          group: str | None = None, use_flags: bool = True, log_level: str = "info",
          tls: TLS | None = None, sealing: Sealing | None = None, helpers: int | None = None
          ) -> None:
    """Serve until SIGTERM/SIGINT; the queue is drained and the ledger closed on the way out."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    sock.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    _clear_stale(sock)
    if sealing is not None:  # read by ingest.App.start
        os.environ.update({"VANTIO_SEGMENT_BYTES": str(sealing.segment_bytes),
                           "VANTIO_SEGMENT_AGE": str(sealing.segment_age_s),
                           "VANTIO_EPOCH_SECONDS": str(sealing.epoch_seconds)})
    if helpers is not None:  # read by ingest.App.start; unset: ingest.default_helpers()
        os.environ["VANTIO_BATCH_HELPERS"] = str(helpers)
    tcp = front.spawn(tls.listen, tls.cert, tls.key, sock, log_level) if tls else None
    try:  # uvloop: +25-70% requests/s over asyncio (bench/ingest.py, November)
        uvloop.run(_serve(root, sock, mode, group, use_flags))
    finally:
        sock.unlink(missing_ok=True)
        if tcp is not None:
            tcp.terminate()
            tcp.wait(timeout=10)


async def _serve(root: Path, sock: Path, mode: int, group: str | None, use_flags: bool
                 ) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # set first: a stop while the ledger opens
        loop.add_signal_handler(sig, stop.set)   # is acted on as soon as it is open
    app = ingest.App()
    try:
        app.start(root, use_flags, loop)
    except Exception as exc:
        app.stop()
        raise RuntimeError(f"the ledger service could not start: {exc}") from None
    server = http1.Server(app.handle, max_body=ingest.MAX_BATCH_BODY)
    try:
        await server.listen_unix(sock, mode)
        if group:  # the socket is 0660: its group is who may submit
            os.chown(sock, -1, grp.getgrnam(group).gr_gid)
        _notify(notify.ready, f"serving {root}: {app.index.size if app.index else 0} records")
        await stop.wait()
        _notify(notify.stopping)
        await server.close(timeout=DRAIN_TIMEOUT_S)
    finally:
        app.stop()  # commits everything accepted, stops the helpers, closes the ledger


def _notify(send: Callable[..., bool], *args: str) -> None:
    try:
        send(*args)
    except OSError as exc:  # readiness is for systemd; serving does not depend on it
        log.warning("sd_notify failed: %s", exc)
