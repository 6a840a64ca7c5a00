"""`vantio serve`: the ledger service on a unix socket, served by granian.

granian (HTTP in Rust, one Python worker process, uvloop) measured ~35k
requests/s on this machine's unix socket against ~25k for uvicorn+httptools
(trivial ASGI app), and its native RSGI interface 1.3-1.6x its ASGI on the same
trivial app: the headroom the ingest path needs (bench/ingest.py). One worker only:
the service is the ledger's one writer. Settings reach the worker, where the
app opens the ledger, through the environment.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from granian import Granian
from granian.constants import Interfaces, Loops

from . import front
from .layout import DEFAULT_SOCKET

WORKER_KILL_TIMEOUT_S = 30


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
    sock.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    _clear_stale(sock)
    os.environ.update({"VANTIO_LEDGER_DIR": str(root), "VANTIO_SOCKET": str(sock),
                       "VANTIO_NO_FLAGS": "0" if use_flags else "1",
                       "VANTIO_SOCKET_GROUP": group or ""})
    if sealing is not None:  # read by ingest.App.start in the worker
        os.environ.update({"VANTIO_SEGMENT_BYTES": str(sealing.segment_bytes),
                           "VANTIO_SEGMENT_AGE": str(sealing.segment_age_s),
                           "VANTIO_EPOCH_SECONDS": str(sealing.epoch_seconds)})
    if helpers is not None:  # read by ingest.App.start; unset: ingest.default_helpers()
        os.environ["VANTIO_BATCH_HELPERS"] = str(helpers)
    tcp = front.spawn(tls.listen, tls.cert, tls.key, sock, log_level) if tls else None
    try:  # uvloop: +25-70% requests/s over asyncio in bench/ingest.py --granian-matrix
        Granian("vantio_appliance.ingest:app", interface=Interfaces.RSGI, uds=sock,
                uds_permissions=mode, workers=1, loop=Loops.uvloop,
                log_level=log_level,  # type: ignore[arg-type]
                log_access=False, backlog=1024,
                # a stop that reaches the worker before its loop runs is dropped (uvloop):
                # past this, the worker is killed; the ledger is crash-safe by design
                workers_kill_timeout=WORKER_KILL_TIMEOUT_S).serve()
    except SystemExit as exc:  # granian exits 1 when the worker could not start
        if exc.code not in (0, None):
            raise RuntimeError("the ledger service stopped: its worker failed (see above)"
                               ) from None
    finally:
        if tcp is not None:
            tcp.terminate()
            tcp.wait(timeout=10)
