"""A minimal sd_notify(3) client: tell systemd how the ledger service is doing.

vantio-ledger.service is ``Type=notify``: systemd starts the units ordered after
it (the enforcer, which connects to the ingest socket) only once the service
says ``READY=1``, i.e. once the socket is bound and the ledger is open, not
merely when the process has been forked. ``STATUS=`` lines show up in
``systemctl status``; ``STOPPING=1`` tells systemd that a SIGTERM is being
honoured (the queue is draining) rather than ignored.

The protocol is one datagram of newline-separated ``KEY=VALUE`` fields sent to
the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (an abstract name when it
starts with ``@``). systemd sets that variable only for units with
``Type=notify`` (or ``NotifyAccess=``), so outside systemd (tests, a shell,
``vantio serve`` run by hand) every call here is a no-op returning False.

READY=1 comes from the main process, the one that serves (``NotifyAccess=main``
in the unit).
"""

from __future__ import annotations

import os
import socket
from typing import Final

ENV_VAR: Final = "NOTIFY_SOCKET"


def _address(raw: str) -> str | bytes:
    """The sockaddr for ``$NOTIFY_SOCKET``: a path, or an abstract name (leading NUL)."""
    if raw.startswith("@"):
        if len(raw) < 2:
            raise ValueError(f"{ENV_VAR}={raw!r}: empty abstract socket name")
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    raise ValueError(f"{ENV_VAR}={raw!r}: neither an absolute path nor an abstract name")


def notify(*fields: str) -> bool:
    """Send ``fields`` (each one ``KEY=VALUE`` line) to systemd as one datagram.

    Returns False, sending nothing, when ``$NOTIFY_SOCKET`` is unset or empty
    (not started by systemd as a notify service); True once the datagram is
    sent. A field without ``=`` or with a newline raises ValueError (it would
    corrupt the message); a socket error (systemd gone, bad address) raises
    OSError, for the caller to log: readiness that silently never arrives
    would only surface as a start timeout.
    """
    for field in fields:
        if "\n" in field or "=" not in field:
            raise ValueError(f"sd_notify field must be one KEY=VALUE line: {field!r}")
    if not fields:
        raise ValueError("sd_notify needs at least one field")
    raw = os.environ.get(ENV_VAR, "")
    if not raw:
        return False
    address = _address(raw)
    message = "\n".join(fields).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message)
    return True


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def ready(status: str) -> bool:
    """READY=1 with a STATUS line: send once the socket is bound and the ledger open."""
    return notify("READY=1", f"STATUS={_one_line(status)}")


def stopping() -> bool:
    """STOPPING=1: shutdown has begun (on SIGTERM, before draining the queue)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A free-form STATUS line for ``systemctl status``; newlines become spaces."""
    return notify(f"STATUS={_one_line(text)}")
