"""The example inventories satisfy the argument specs of the roles their playbooks run, so the
examples cannot drift from the roles' contracts (ansible-core checks the same at run time). A
misspelt variable fails too: the specs admit no unknown `<role>_*` name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = sorted(p.parent for p in ROOT.glob("inventories/*/hosts.yml"))
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))

PLAYBOOK = """
- hosts: all
  gather_facts: false
  connection: local
  tasks:
    - name: Validate {{ role }} variables
      ansible.builtin.validate_argument_spec:
        argument_spec: "{{ (lookup('file', spec) | from_yaml).argument_specs.main.options }}"
        provided_arguments: >-
          {{ hostvars[inventory_hostname] | dict2items
             | selectattr('key', 'match', '^' ~ role ~ '_') | items2dict }}
"""


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
@pytest.mark.parametrize("inventory", INVENTORIES, ids=[i.name for i in INVENTORIES])
def test_inventory_matches_role_specs(tmp_path: Path, inventory: Path, role: Path) -> None:
    playbook = tmp_path / "validate.yml"
    playbook.write_text(PLAYBOOK)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(inventory),
            "-e", f"role={role.name}",
            "-e", f"spec={role / 'meta' / 'argument_specs.yml'}",
            str(playbook),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]

