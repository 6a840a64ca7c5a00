# vantio-appliance, Apache-2.0
"""Connection plugin for the Molecule scenarios and bench/converge.sh: commands in a local podman
container, with pipelining, over one persistent `podman exec` per container.

containers.podman.podman runs five `podman exec` per module (home, mkdir, chmod, run, rm) and a
`podman mount` per task, because it never passes stdin; about one second per module here. With
stdin passed, the module goes in on stdin (pipelining): one command per module. A `podman exec`
still costs about 0.1 s of its own (conmon, the runtime, a new process tree), and a converge of
site.yml runs some 300 commands. So, as ssh's ControlMaster does, the first task starts a relay
on the controller (a process of its own, outliving the task) that keeps one `podman exec -i
python3` agent in the container and passes each command to it over a Unix socket; the agent runs
it as a child of its own with the same environment and answers with the exit code and output.
The relay leaves after `persist` idle seconds, when the container goes away, or on
`meta: reset_connection`. Without python3 in the container (or if the relay cannot start) each
command falls back to a `podman exec` of its own. Root in the container only (no become of its
own: a play's become runs sudo inside, as over SSH).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import time

from ansible.errors import AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: vantio_podman
short_description: Run commands in a local podman container, with pipelining
description:
  - Runs every command in the container through one persistent C(podman exec -i) agent per
    container (or a C(podman exec -i) of its own when the agent cannot start), passing pipelined
    modules on stdin.
  - Copies files through stdin as well. For test containers, as root.
author: vantio-appliance
options:
  remote_addr:
    description: Name or id of the container.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
  podman_executable:
    description: The podman command.
    default: podman
    vars:
      - name: ansible_podman_executable
  persist:
    description: Seconds the relay to a container stays after its last command (0 disables it).
    type: int
    default: 60
    vars:
      - name: ansible_vantio_podman_persist
    env:
      - name: VANTIO_PODMAN_PERSIST
"""

# Frames on every hop: 8-byte big-endian length, then the bytes. A request is two frames (the
# argv as JSON, stdin), an answer three (exit code, stdout, stderr). An argv of JSON null asks the
# relay to leave.
_AGENT = r"""
import json, struct, subprocess, sys
r, w = sys.stdin.buffer, sys.stdout.buffer
def read():
    head = r.read(8)
    if len(head) < 8:
        sys.exit(0)
    return r.read(struct.unpack(">Q", head)[0])
def write(data):
    w.write(struct.pack(">Q", len(data)) + data)
write(b"ready")
w.flush()
while True:
    argv = json.loads(read())
    data = read()
    try:
        p = subprocess.run(argv, input=data, capture_output=True, check=False)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except OSError as e:
        rc, out, err = 127, b"", str(e).encode()
    write(str(rc).encode())
    write(out)
    write(err)
    w.flush()
"""

_RELAY = r"""
import os, select, socket, struct, subprocess, sys
podman, container, path, persist, agent_code = sys.argv[1:6]
agent = subprocess.Popen([podman, "exec", "-i", container, "/usr/bin/python3", "-c", agent_code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
def read(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    data = f.read(struct.unpack(">Q", head)[0])
    return data
def recv(conn):
    head = b""
    while len(head) < 8:
        chunk = conn.recv(8 - len(head))
        if not chunk:
            raise EOFError
        head += chunk
    n = struct.unpack(">Q", head)[0]
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)
def frame(data):
    return struct.pack(">Q", len(data)) + data
try:
    if read(agent.stdout) != b"ready":
        raise EOFError
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = "%s.%d" % (path, os.getpid())
    srv.bind(tmp)
    srv.listen(16)
    os.rename(tmp, path)
    ino = os.stat(path).st_ino
    while True:
        ready, _, _ = select.select([srv, agent.stdout], [], [], float(persist))
        if not ready or agent.stdout in ready:
            break  # idle, or the agent is gone (container stopped or removed)
        conn, _ = srv.accept()
        with conn:
            try:
                argv = recv(conn)
                if argv == b"null":
                    break
                data = recv(conn)
            except EOFError:
                continue
            agent.stdin.write(frame(argv) + frame(data))
            agent.stdin.flush()
            answer = b"".join(frame(read(agent.stdout)) for _ in range(3))
            try:
                conn.sendall(answer)
            except OSError:
                pass
except (EOFError, OSError):
    pass
finally:
    try:
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    except (NameError, OSError):
        pass
    try:
        agent.stdin.close()
        agent.wait(timeout=5)
    except Exception:
        agent.kill()
"""


class _RelayGone(Exception):
    """The relay did not answer: the caller runs the command with a `podman exec` of its own."""


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise _RelayGone("relay closed the connection")
        buf += chunk
    return bytes(buf)


def _recv_frame(conn: socket.socket) -> bytes:
    return _recv_exactly(conn, struct.unpack(">Q", _recv_exactly(conn, 8))[0])


def _frame(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


class Connection(ConnectionBase):
    transport = "vantio_podman"
    has_pipelining = True

    def _relay_path(self) -> str:
        key = f"{self.get_option('podman_executable')}\0{self.get_option('remote_addr')}"
        directory = os.path.expanduser("~/.ansible/cp")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return os.path.join(directory, f"vantio-podman-{digest}")

    def _connect(self) -> Connection:
        self._connected = True
        return self

    def _start_relay(self, path: str) -> None:
        """Start the relay unless another task did it meanwhile (the socket directory is the
        lock: no lock file is left behind)."""
        lock = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._relay_answers(path):
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            relay = subprocess.Popen(
                [sys.executable, "-c", _RELAY, self.get_option("podman_executable"),
                 self.get_option("remote_addr"), path, str(self.get_option("persist")), _AGENT],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True,
            )
            deadline = time.monotonic() + 15
            while not os.path.exists(path):
                if relay.poll() is not None or time.monotonic() > deadline:
                    raise _RelayGone("relay did not start")
                time.sleep(0.01)
        finally:
            os.close(lock)

    @staticmethod
    def _relay_answers(path: str) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
        except OSError:
            return False
        return True

    def _via_relay(self, argv: list[str] | None, stdin: bytes) -> tuple[int, bytes, bytes]:
        path = self._relay_path()
        for attempt in range(2):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(path)
                    s.sendall(_frame(json.dumps(argv).encode()) + (_frame(stdin) if argv else b""))
                    if argv is None:
                        return 0, b"", b""
                    rc = int(_recv_frame(s))
                    return rc, _recv_frame(s), _recv_frame(s)
            except (FileNotFoundError, ConnectionRefusedError):
                if argv is None or attempt:
                    raise _RelayGone("no relay") from None
                self._start_relay(path)
            except (OSError, ValueError) as e:
                raise _RelayGone(str(e)) from e
        raise _RelayGone("no relay")

    def _exec(self, argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        data = stdin if stdin is not None else b""
        if int(self.get_option("persist")) > 0:
            with contextlib.suppress(_RelayGone):
                return self._via_relay(argv, data)
        podman, container = self.get_option("podman_executable"), self.get_option("remote_addr")
        p = subprocess.run(
            [podman, "exec", "-i", container, *argv],
            input=data,
            capture_output=True,
            check=False,
        )
        return p.returncode, p.stdout, p.stderr

    def exec_command(  # type: ignore[override]
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return self._exec(shlex.split(cmd), in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as f:
            data = f.read()
        rc, _, err = self._exec(["/bin/sh", "-c", f"cat > {shlex.quote(out_path)}"], data)
        if rc != 0:
            raise AnsibleError(f"copy to {out_path} failed: {err.decode(errors='replace')}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        rc, out, err = self._exec(["cat", in_path])
        if rc != 0:
            raise AnsibleError(f"copy from {in_path} failed: {err.decode(errors='replace')}")
        with open(out_path, "wb") as f:
            f.write(out)

    def reset(self) -> None:
        """`meta: reset_connection`: the relay leaves, the next command starts a new one."""
        with contextlib.suppress(_RelayGone, OSError):
            self._via_relay(None, b"")
        self._connected = False

    def close(self) -> None:
        self._connected = False
