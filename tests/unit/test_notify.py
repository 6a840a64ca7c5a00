"""sd_notify client: the exact datagram a real AF_UNIX socket receives."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vantio_appliance._internal import notify


def _bound(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket on a file-system path, named in $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    with _bound(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in the abstract namespace, named ``@...`` in $NOTIFY_SOCKET."""
    name = f"vantio-test-notify/{os.getpid()}/{os.urandom(6).hex()}"
    with _bound(b"\0" + name.encode()) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def _nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_path_socket_gets_one_datagram(path_socket: socket.socket) -> None:
    assert notify.notify("READY=1", "STATUS=listening") is True
    assert path_socket.recv(4096) == b"READY=1\nSTATUS=listening"
    assert _nothing_waiting(path_socket)


def test_abstract_socket_gets_one_datagram(abstract_socket: socket.socket) -> None:
    assert notify.notify("READY=1", "STATUS=listening") is True
    assert abstract_socket.recv(4096) == b"READY=1\nSTATUS=listening"
    assert _nothing_waiting(abstract_socket)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: notify.ready("ledger open, 12 records"),
         b"READY=1\nSTATUS=ledger open, 12 records"),
        (notify.stopping, b"STOPPING=1"),
        (lambda: notify.status("draining 3 records"), b"STATUS=draining 3 records"),
        (lambda: notify.status("two\nlines"), b"STATUS=two lines"),
        (lambda: notify.status("caf\u00e9"), "STATUS=caf\u00e9".encode()),
    ],
)
def test_helpers(path_socket: socket.socket, call: Callable[[], bool], expected: bytes) -> None:
    assert call() is True
    assert path_socket.recv(4096) == expected


@pytest.mark.parametrize("value", [None, ""])
def test_unset_sends_nothing(
    value: str | None, path_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # path_socket is bound and would receive anything sent; the variable no longer names it.
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET")
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert notify.notify("READY=1") is False
    assert notify.ready("up") is False
    assert notify.stopping() is False
    assert notify.status("x") is False
    assert _nothing_waiting(path_socket)


@pytest.mark.parametrize("field", ["READY=1\nSTATUS=x", "READY", ""])
def test_malformed_field_rejected(field: str, path_socket: socket.socket) -> None:
    with pytest.raises(ValueError, match="KEY=VALUE"):
        notify.notify(field)
    assert _nothing_waiting(path_socket)


def test_no_fields_rejected(path_socket: socket.socket) -> None:
    with pytest.raises(ValueError, match="at least one"):
        notify.notify()


@pytest.mark.parametrize("value", ["relative/notify.sock", "@"])
def test_bad_address_rejected(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        notify.notify("READY=1")


def test_missing_socket_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent.sock"))
    with pytest.raises(FileNotFoundError):
        notify.notify("READY=1")
