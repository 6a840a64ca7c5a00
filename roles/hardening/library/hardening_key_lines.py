#!/usr/bin/python3
# Copyright: vantio-appliance, Apache-2.0
"""Module of the hardening role: set `KEY<separator>VALUE` lines of a key-value configuration
file (login.defs) in one call, where a lineinfile loop takes one module run per key."""

from __future__ import annotations

DOCUMENTATION = r"""
module: hardening_key_lines
short_description: Set KEY VALUE lines of a key-value configuration file in one call
description:
  - For each key of C(settings), every line that sets the key (C(^KEY) followed by white space)
    becomes C(KEY<separator>VALUE); a key without such a line is appended at the end.
  - Comments and other lines are kept as they are. The file's owner and mode are kept.
  - Supports check mode and diff mode.
options:
  path:
    description: The file (it must exist).
    type: path
    required: true
  settings:
    description: Keys and values.
    type: dict
    required: true
  separator:
    description: What goes between a key and its value in the lines written.
    type: str
    default: "\t"
author: vantio-appliance
"""

EXAMPLES = r"""
- name: Password ageing
  hardening_key_lines:
    path: /etc/login.defs
    settings:
      PASS_MAX_DAYS: 365
"""

RETURN = r"""
keys:
  description: Keys whose lines were changed or added (or would be, in check mode).
  type: list
  returned: always
"""

import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule


def apply(text: str, settings: dict[str, str], separator: str) -> tuple[str, list[str]]:
    """The new text and the keys it changes."""
    lines = text.splitlines()
    changed: list[str] = []
    for key, value in settings.items():
        wanted = f"{key}{separator}{value}"
        pattern = re.compile(rf"^{re.escape(key)}\s")
        found = False
        for i, line in enumerate(lines):
            if pattern.match(line):
                found = True
                if line != wanted:
                    lines[i] = wanted
                    if key not in changed:
                        changed.append(key)
        if not found:
            lines.append(wanted)
            changed.append(key)
    return "\n".join(lines) + "\n", changed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "settings": {"type": "dict", "required": True},
            "separator": {"type": "str", "default": "\t"},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    settings = {str(k): str(v) for k, v in module.params["settings"].items()}
    try:
        with open(path, encoding="utf-8") as f:
            before = f.read()
    except OSError as e:
        module.fail_json(msg=f"{path}: {e}")
    after, keys = apply(before, settings, module.params["separator"])
    changed = after != before
    if changed and not module.check_mode:
        st = os.stat(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".vantio-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(after)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
            os.replace(tmp, path)
        except OSError as e:
            os.unlink(tmp)
            module.fail_json(msg=f"{path}: {e}")
    diff = {"before": before, "after": after, "before_header": path, "after_header": path}
    module.exit_json(changed=changed, keys=keys, diff=diff if changed else {})


if __name__ == "__main__":
    main()
