#!/usr/bin/python3
# Copyright: vantio-appliance, Apache-2.0
"""Module of the hardening role: owner, group and mode of many paths in one call, skipping the
ones that do not exist (the file module takes one call per path and fails on a missing one)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: hardening_file_modes
short_description: Set owner, group and mode of existing paths
description:
  - For each entry whose path exists, sets owner, group and mode when they differ.
    Missing paths are reported, not created. Symbolic links are not followed.
  - Supports check mode.
options:
  paths:
    description: Entries with C(path), C(owner), C(group) and C(mode) (an octal string).
    type: list
    elements: dict
    required: true
author: vantio-appliance
"""

EXAMPLES = r"""
- name: Shadow is not world-readable
  hardening_file_modes:
    paths:
      - {path: /etc/shadow, owner: root, group: shadow, mode: "0640"}
"""

RETURN = r"""
fixed:
  description: Paths changed (or that would be, in check mode), with what was changed.
  type: list
  returned: always
missing:
  description: Paths that do not exist.
  type: list
  returned: always
"""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={"paths": {"type": "list", "elements": "dict", "required": True}},
        supports_check_mode=True,
    )
    fixed: list[str] = []
    missing: list[str] = []
    for entry in module.params["paths"]:
        path = entry["path"]
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            missing.append(path)
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        try:
            uid = pwd.getpwnam(entry["owner"]).pw_uid
            gid = grp.getgrnam(entry["group"]).gr_gid
        except KeyError as e:
            module.fail_json(msg=f"{path}: unknown owner or group {e}")
        mode = int(str(entry["mode"]), 8)
        what = []
        if (st.st_uid, st.st_gid) != (uid, gid):
            what.append(f"owner {st.st_uid}:{st.st_gid} -> {entry['owner']}:{entry['group']}")
        if stat.S_IMODE(st.st_mode) != mode:
            what.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
        if not what:
            continue
        fixed.append(f"{path}: " + ", ".join(what))
        if not module.check_mode:
            os.chown(path, uid, gid, follow_symlinks=False)
            os.chmod(path, mode)
    module.exit_json(changed=bool(fixed), fixed=fixed, missing=missing)


if __name__ == "__main__":
    main()
