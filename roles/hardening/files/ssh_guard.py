#!/usr/bin/python3
"""Lock-out guard for the hardening role: prove, before sshd is reloaded with a candidate
sshd_config, that every admin user can still log in with an SSH key under it.

1. static: `sshd -T -C user=...` of the candidate says publickey authentication is on for the
   user and the user is not refused by AllowUsers/AllowGroups/DenyUsers/DenyGroups; the user
   has at least one key in the AuthorizedKeysFile the candidate names, whose type the candidate
   accepts;
2. live: a second sshd runs the candidate on 127.0.0.1:<port>, and an ephemeral key (offered
   through an extra AuthorizedKeysFile entry under the work directory, so no user file is
   touched) logs in as each user and runs `true`.

Prints one line per finding; exit 0 only when every user passed both. Runs on the target with
the system python3 (standard library only).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

KEY_FAMILIES = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "sk-ssh-ed25519@openssh.com": ("sk-ssh-ed25519@openssh.com",),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("sk-ecdsa-sha2-nistp256@openssh.com",),
}


def effective(sshd: str, config: str, user: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [sshd, "-T", "-f", config, "-C", f"user={user},host=localhost,addr=127.0.0.1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key.lower(), []).append(value)
    return settings


def static_check(sshd: str, config: str, user: str) -> str | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"{user}: no such user"
    s = effective(sshd, config, user)
    if s.get("pubkeyauthentication", ["no"])[0] != "yes":
        return f"{user}: PubkeyAuthentication is off"
    if entry.pw_uid == 0 and s.get("permitrootlogin", ["no"])[0] not in (
        "yes",
        "prohibit-password",
        "without-password",
    ):
        return f"{user}: PermitRootLogin {s.get('permitrootlogin', ['no'])[0]} refuses it"
    groups = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    groups.add(grp.getgrgid(entry.pw_gid).gr_name)
    allow_users = " ".join(s.get("allowusers", [])).split()
    allow_groups = " ".join(s.get("allowgroups", [])).split()
    if allow_users and not any(u.split("@")[0] in (user, "*") for u in allow_users):
        return f"{user}: not in AllowUsers"
    if allow_groups and not groups & set(allow_groups):
        return f"{user}: in none of AllowGroups {allow_groups}"
    if user in " ".join(s.get("denyusers", [])).split():
        return f"{user}: in DenyUsers"
    if groups & set(" ".join(s.get("denygroups", [])).split()):
        return f"{user}: in DenyGroups"
    accepted = set(",".join(s.get("pubkeyacceptedalgorithms", [""])).split(","))
    key_types: list[str] = []
    for pattern in " ".join(s.get("authorizedkeysfile", [".ssh/authorized_keys"])).split():
        path = pattern.replace("%h", entry.pw_dir).replace("%u", user).replace("%%", "%")
        if not path.startswith("/"):
            path = os.path.join(entry.pw_dir, path)
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            for field in line.split():
                if field in KEY_FAMILIES:
                    key_types.append(field)
                    break
    if not key_types:
        return f"{user}: no public key in the AuthorizedKeysFile of the candidate"
    if accepted != {""} and not any(set(KEY_FAMILIES[t]) & accepted for t in key_types):
        return f"{user}: none of the key types {sorted(set(key_types))} is accepted"
    return None


def live_check(args: argparse.Namespace) -> list[str]:
    work = Path(args.workdir)
    key = work / "guard_key"
    keys_dir = work / "keys"
    keys_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(work, 0o755)  # sshd reads the extra key file as the user it checks
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vantio-ssh-guard", "-f", str(key)],
        check=True,
    )
    (keys_dir / "authorized_keys").write_text(
        'from="127.0.0.1,::1",restrict ' + (work / "guard_key.pub").read_text()
    )
    os.chmod(keys_dir / "authorized_keys", 0o644)
    configured = " ".join(
        effective(args.sshd, args.config, "root").get(
            "authorizedkeysfile", [".ssh/authorized_keys"]
        )
    )
    pidfile = work / "sshd.pid"
    failures: list[str] = []
    subprocess.run(
        [
            args.sshd,
            "-f",
            args.config,
            "-p",
            str(args.port),
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            f"PidFile={pidfile}",
            "-o",
            f"AuthorizedKeysFile={configured} {keys_dir}/authorized_keys",
        ],
        check=True,
    )
    try:
        for user in args.user:
            deadline = time.monotonic() + args.timeout
            while True:
                r = subprocess.run(
                    [
                        "ssh",
                        "-F",
                        "/dev/null",
                        "-i",
                        str(key),
                        "-p",
                        str(args.port),
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "IdentitiesOnly=yes",
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        "-o",
                        "LogLevel=ERROR",
                        "-o",
                        "ConnectTimeout=5",
                        f"{user}@127.0.0.1",
                        "true",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=args.timeout + 5,
                )
                if r.returncode == 0:
                    print(f"{user}: key login under the candidate works")
                    break
                if time.monotonic() > deadline:
                    failures.append(
                        f"{user}: key login under the candidate failed: {r.stderr.strip()[-200:]}"
                    )
                    break
                time.sleep(0.2)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
    return failures


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sshd", default="/usr/sbin/sshd")
    p.add_argument("--config", required=True)
    p.add_argument("--port", type=int, default=2222)
    p.add_argument("--timeout", type=float, default=15)
    p.add_argument("--workdir", required=True)
    p.add_argument("--user", action="append", default=[])
    args = p.parse_args()
    if not args.user:
        print("guard: no admin user to prove a key login for (hardening_admin_users is empty)")
        return 1
    failures = [f for f in (static_check(args.sshd, args.config, u) for u in args.user) if f]
    if not failures:
        failures = live_check(args)
    for f in failures:
        print(f)
    print("guard: proven" if not failures else "guard: NOT proven: " + "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
