#!/usr/bin/python3
# Copyright: vantio-appliance, Apache-2.0
"""Module of the hardening role: write a set of sysctls to one sysctl.d file and set them in the
running kernel where that is allowed, in one call (the sysctl module takes one call per key)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: hardening_sysctl
short_description: Persist sysctls in a sysctl.d file and set them in the running kernel
description:
  - Writes C(settings) to C(path) (one C(key = value) line each, sorted) and, for the keys
    C(live) allows, writes /proc/sys when the running value differs.
  - Supports check mode and diff mode.
options:
  path:
    description: The sysctl.d file.
    type: path
    required: true
  settings:
    description: Keys and values.
    type: dict
    required: true
  header:
    description: Comment lines at the top of the file.
    type: list
    elements: str
    default: []
  live:
    description:
      - Which keys to set in the running kernel, C(all), C(net) (keys under net. that a
        network namespace owns, not net.core.) or C(none).
    type: str
    default: all
    choices: [all, net, none]
author: vantio-appliance
"""

EXAMPLES = r"""
- name: Network sysctls
  hardening_sysctl:
    path: /etc/sysctl.d/92-vantio-network.conf
    settings:
      net.ipv4.tcp_syncookies: 1
    live: net
"""

RETURN = r"""
set:
  description: Keys set in the running kernel (or that would be, in check mode).
  type: list
  returned: always
not_live:
  description: Keys written to the file only.
  type: list
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule


def proc_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def render(header: list[str], settings: dict[str, object]) -> str:
    lines = ["# " + h for h in header]
    lines += [f"{k} = {settings[k]}" for k in sorted(settings)]
    return "\n".join(lines) + "\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "settings": {"type": "dict", "required": True},
            "header": {"type": "list", "elements": "str", "default": []},
            "live": {"type": "str", "default": "all", "choices": ["all", "net", "none"]},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    settings = {k: str(v) for k, v in module.params["settings"].items()}
    live = module.params["live"]
    changed = False
    diff = {"before": "", "after": "", "before_header": path, "after_header": path}

    content = render(module.params["header"], settings)
    try:
        with open(path, encoding="utf-8") as f:
            before = f.read()
    except FileNotFoundError:
        before = ""
    if before != content:
        changed = True
        diff["before"], diff["after"] = before, content
        if not module.check_mode:
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)

    applied: list[str] = []
    not_live: list[str] = []
    targets: dict[str, str] = {}
    for key, value in sorted(settings.items()):
        is_net = key.startswith("net.") and not key.startswith("net.core.")
        if live == "none" or (live == "net" and not is_net):
            not_live.append(key)
        else:
            targets[key] = " ".join(value.split())
    # Some writes change other keys (net.ipv4.ip_forward=0 sets conf.all.accept_redirects to 1):
    # forwarding first, then passes until the running kernel holds every value.
    order = sorted(targets, key=lambda k: ("forward" not in k, k))
    for attempt in range(4):
        pending = []
        for key in order:
            try:
                with open(proc_path(key), encoding="utf-8") as f:
                    current = " ".join(f.read().split())
            except FileNotFoundError:
                module.fail_json(msg=f"{key}: no such sysctl on this kernel")
            if current != targets[key]:
                pending.append(key)
        if not pending:
            break
        if attempt == 3:
            module.fail_json(msg=f"sysctls do not keep their values: {pending}", set=applied)
        changed = True
        applied.extend(k for k in pending if k not in applied)
        if module.check_mode:
            break
        for key in pending:
            try:
                with open(proc_path(key), "w", encoding="utf-8") as f:
                    f.write(targets[key])
            except OSError as e:
                module.fail_json(msg=f"{key}: cannot set {targets[key]}: {e}", set=applied)
    module.exit_json(changed=changed, set=applied, not_live=not_live, diff=diff)


if __name__ == "__main__":
    main()
