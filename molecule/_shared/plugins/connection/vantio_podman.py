# vantio-appliance, Apache-2.0
"""Connection plugin for the Molecule scenarios and bench/converge.sh: `podman exec` into a
local container, with pipelining.

containers.podman.podman runs five `podman exec` per module (home, mkdir, chmod, run, rm) and a
`podman mount` per task, because it never passes stdin; about one second per module here. With
`podman exec -i` the module goes in on stdin (pipelining): one exec per module. Root in the
container only (no become), which is how the scenarios connect.
"""

from __future__ import annotations

import shlex
import subprocess

from ansible.errors import AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: vantio_podman
short_description: Run commands in a local podman container, with pipelining
description:
  - Runs every command with C(podman exec -i), passing pipelined modules on stdin.
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
"""


class Connection(ConnectionBase):
    transport = "vantio_podman"
    has_pipelining = True

    def _connect(self) -> Connection:
        self._connected = True
        return self

    def _exec(
        self, argv: list[str], stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        podman = self.get_option("podman_executable")
        container = self.get_option("remote_addr")
        return subprocess.run(
            [podman, "exec", "-i", container, *argv],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            check=False,
        )

    def exec_command(  # type: ignore[override]
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        p = self._exec(shlex.split(cmd), in_data)
        return p.returncode, p.stdout, p.stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as f:
            data = f.read()
        p = self._exec(["/bin/sh", "-c", f"cat > {shlex.quote(out_path)}"], data)
        if p.returncode != 0:
            raise AnsibleError(f"copy to {out_path} failed: {p.stderr.decode(errors='replace')}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        p = self._exec(["cat", in_path])
        if p.returncode != 0:
            raise AnsibleError(f"copy from {in_path} failed: {p.stderr.decode(errors='replace')}")
        with open(out_path, "wb") as f:
            f.write(p.stdout)

    def close(self) -> None:
        self._connected = False
