"""The hardening role's real effect on a converged container (testinfra, podman:// host).

What a container cannot have is asserted as such, so the limits stay visible:
- kernel-wide sysctls (kernel.*, fs.*, net.core.*) belong to the host kernel: only their
  sysctl.d files are checked; the network sysctls are in effect (the container's own namespace);
- the kernel's audit subsystem is the host's: the rules are generated (augenrules --check), not
  loaded, and auditctl is refused;
- the clock is the host's: chrony is configured and enabled, its unit's CAP_SYS_TIME condition
  keeps it from starting;
- the mount table is the runtime's: /tmp has nodev,nosuid but not noexec;
- process accounting needs CAP_SYS_PACCT and USBGuard a USB bus: both units are enabled and
  skipped by their condition.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ADMIN = "vantio-admin"


def run(host, cmd: str):  # type: ignore[no-untyped-def]
    return host.run(cmd)


# --- kernel ------------------------------------------------------------------------------

NETWORK = {
    "net.ipv4.ip_forward": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.default.send_redirects": 0,
    "net.ipv4.conf.all.accept_redirects": 0,
    "net.ipv6.conf.all.accept_redirects": 0,
    "net.ipv4.conf.all.secure_redirects": 0,
    "net.ipv4.conf.all.accept_source_route": 0,
    "net.ipv6.conf.all.accept_source_route": 0,
    "net.ipv4.conf.all.rp_filter": 1,
    "net.ipv4.conf.all.log_martians": 1,
    "net.ipv4.icmp_echo_ignore_broadcasts": 1,
    "net.ipv4.icmp_ignore_bogus_error_responses": 1,
    "net.ipv4.tcp_syncookies": 1,
    "net.ipv6.conf.all.accept_ra": 0,
    "net.ipv6.conf.default.accept_ra": 0,
}


@pytest.mark.parametrize("key,value", sorted(NETWORK.items()))
def test_network_sysctl_in_effect(host, key: str, value: int) -> None:
    assert host.sysctl(key) == value


@pytest.mark.parametrize(
    "path,line",
    [
        ("/etc/sysctl.d/90-vantio-kernel.conf", "kernel.kptr_restrict = 2"),
        ("/etc/sysctl.d/90-vantio-kernel.conf", "kernel.dmesg_restrict = 1"),
        ("/etc/sysctl.d/90-vantio-kernel.conf", "kernel.unprivileged_bpf_disabled = 1"),
        ("/etc/sysctl.d/90-vantio-kernel.conf", "kernel.yama.ptrace_scope = 2"),
        ("/etc/sysctl.d/90-vantio-kernel.conf", "net.core.bpf_jit_harden = 2"),
        ("/etc/sysctl.d/91-vantio-fs.conf", "fs.suid_dumpable = 0"),
        ("/etc/sysctl.d/91-vantio-fs.conf", "fs.protected_symlinks = 1"),
        ("/etc/sysctl.d/92-vantio-network.conf", "net.ipv4.conf.all.rp_filter = 1"),
    ],
)
def test_sysctl_persisted(host, path: str, line: str) -> None:
    # Kernel-wide keys cannot be set from a container (they would be the host's): the file is
    # what the host applies at boot.
    assert line in host.file(path).content_string.splitlines()


def test_kernel_wide_sysctls_left_to_the_host(host) -> None:
    # /proc/sys outside net/ is read-only in the container: the role must not have tried.
    assert not run(host, "test -w /proc/sys/kernel/kptr_restrict").succeeded


@pytest.mark.parametrize("module", ["cramfs", "udf", "dccp", "sctp", "tipc"])
def test_module_cannot_load(host, module: str) -> None:
    out = host.check_output(f"modprobe -n -v {module} 2>&1 || true")
    assert "install /bin/false" in out


@pytest.mark.parametrize("module", ["usb-storage", "uas"])
def test_usb_storage_stays_loadable(host, module: str) -> None:
    # the anchor role exports checkpoints on removable media
    out = host.check_output(f"modprobe -n -v {module} 2>&1 || true")
    assert "/bin/false" not in out


def test_no_core_dumps(host) -> None:
    assert "* hard core 0" in host.file("/etc/security/limits.d/90-vantio-core.conf").content_string
    # podman exec opens no PAM session (no pam_limits): the login shell sets the limit itself,
    # soft and hard, and a shell of the user cannot raise it again
    assert host.check_output("bash -l -c 'ulimit -S -c; ulimit -H -c'").split() == ["0", "0"]
    assert host.run(f"runuser -u {ADMIN} -- bash -l -c 'ulimit -c unlimited'").rc != 0


# --- minimise ------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["telnet", "rsync", "netcat-traditional"])
def test_package_removed(host, package: str) -> None:
    # the image carries these on purpose (scripts/molecule-image)
    assert not host.package(package).is_installed


@pytest.mark.parametrize("unit", ["ctrl-alt-del.target", "debug-shell.service"])
def test_unit_masked(host, unit: str) -> None:
    assert host.check_output(f"systemctl is-enabled {unit} || true") == "masked"


def test_compilers_root_only(host) -> None:
    """Overrides registered for the compilers, which this image lacks: installing gcc applies
    them (dpkg reads the overrides when it unpacks)."""
    arch = host.check_output("uname -m")
    overrides = host.check_output("dpkg-statoverride --list")
    for name in ("gcc-12", "g++-12", "as"):
        assert f"root root 750 /usr/bin/{arch}-linux-gnu-{name}" in overrides


# --- ssh -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(host) -> dict[str, str]:
    out = host.check_output(f"sshd -T -C user={ADMIN},host=localhost,addr=127.0.0.1")
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key, value)
    return settings


@pytest.mark.parametrize(
    "key,value",
    [
        ("permitrootlogin", "no"),
        ("passwordauthentication", "no"),
        ("kbdinteractiveauthentication", "no"),
        ("pubkeyauthentication", "yes"),
        ("permitemptypasswords", "no"),
        ("hostbasedauthentication", "no"),
        ("ignorerhosts", "yes"),
        ("x11forwarding", "no"),
        ("allowtcpforwarding", "no"),
        ("disableforwarding", "yes"),
        ("permituserenvironment", "no"),
        ("maxauthtries", "3"),
        ("maxsessions", "2"),
        ("logingracetime", "60"),
        ("loglevel", "VERBOSE"),
        ("allowgroups", "vantio-admin"),
        ("usepam", "yes"),
        ("banner", "/etc/issue.net"),
        (
            "ciphers",
            "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
            "aes256-ctr,aes192-ctr,aes128-ctr",
        ),
        (
            "macs",
            "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
        ),
    ],
)
def test_sshd_effective_config(sshd: dict[str, str], key: str, value: str) -> None:
    assert sshd[key] == value


def test_sshd_config_file(host) -> None:
    f = host.file("/etc/ssh/sshd_config")
    assert (f.user, f.group, f.mode) == ("root", "root", 0o600)
    assert not any(line.startswith("Include") for line in f.content_string.splitlines())
    assert host.service("ssh").is_running


def test_no_guard_leftovers(host) -> None:
    assert host.check_output("ls -d /etc/ssh/vantio-sshd.* 2>/dev/null || true") == ""
    assert not run(host, "ss -ltn | grep -q ':2222 '").succeeded


@pytest.fixture(scope="module")
def admin_key(host):  # type: ignore[no-untyped-def]
    """The scenario's admin private key, inside the container for the test only."""
    key = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "admin_key").read_text()
    host.run_expect([0], f"umask 077 && printf %s {shlex.quote(key)} > /root/.molecule_admin_key")
    yield "/root/.molecule_admin_key"
    host.run("rm -f /root/.molecule_admin_key")


SSH = (
    "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no "
    "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
)


def test_admin_logs_in_with_key_and_uses_sudo(host, admin_key: str) -> None:
    out = host.run(f"{SSH} -i {admin_key} {ADMIN}@127.0.0.1 sudo -n id -u")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_root_cannot_log_in(host, admin_key: str) -> None:
    host.run_expect(
        [0],
        f"install -d -m700 /root/.ssh && ssh-keygen -y -f {admin_key} > /root/.ssh/authorized_keys",
    )
    try:
        out = host.run(f"{SSH} -i {admin_key} root@127.0.0.1 true")
        assert out.rc == 255 and "Permission denied" in out.stderr
    finally:
        host.run("rm -f /root/.ssh/authorized_keys")


def test_server_offers_publickey_only(host) -> None:
    out = host.run(
        f"{SSH} -o PreferredAuthentications=password,keyboard-interactive {ADMIN}@127.0.0.1 true"
    )
    assert "Permission denied (publickey)" in out.stderr


def test_sudoers(host) -> None:
    f = host.file("/etc/sudoers.d/vantio-admin")
    assert (f.user, f.mode) == ("root", 0o440)
    assert "Defaults use_pty" in f.content_string
    host.run_expect([0], "visudo -c")


# --- auditd ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        "-w /var/log/vantio -p wa -k vantio-ledger",
        "-w /var/log/vantio/keys -p rwa -k vantio-keys",
        "-w /etc/vantio -p wa -k vantio-policy",
        "-a always,exit -F arch=b64 -S ioctl -F dir=/var/log/vantio -F a1=0x40086602"
        " -k vantio-ledger-flags",
        "-w /etc/shadow -p wa -k identity",
        "-w /etc/sudoers.d -p wa -k scope",
        "-e 2",
    ],
)
def test_audit_rule_generated(host, rule: str) -> None:
    # /etc/audit/audit.rules is what auditd loads at boot (augenrules output)
    assert rule in host.file("/etc/audit/audit.rules").content_string.splitlines()


def test_audit_rules_up_to_date(host) -> None:
    out = host.run("augenrules --check")
    assert out.rc == 0 and "No change" in out.stdout + out.stderr


def test_audit_rules_not_loadable_in_a_container(host) -> None:
    # The kernel's audit is the host's: without CAP_AUDIT_CONTROL the container cannot list or
    # load rules, and auditd does not run. The rules are only proven loaded on a real host.
    assert not host.run("auditctl -l").succeeded
    assert not host.service("auditd").is_running
    assert host.service("auditd").is_enabled


def test_auditd_conf(host) -> None:
    conf = host.file("/etc/audit/auditd.conf").content_string
    assert "max_log_file_action = KEEP_LOGS" in conf
    assert "disk_full_action = SINGLE" in conf


@pytest.mark.parametrize("path", ["/var/log/vantio", "/var/log/vantio/keys", "/etc/vantio"])
def test_watched_dirs_exist(host, path: str) -> None:
    assert host.file(path).is_directory


# --- nftables --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ruleset(host) -> dict[str, dict[str, str]]:
    data = json.loads(host.check_output("nft -j list ruleset"))
    return {
        item["chain"]["name"]: item["chain"]
        for item in data["nftables"]
        if "chain" in item and item["chain"]["table"] == "vantio_filter"
    }


@pytest.mark.parametrize("chain", ["input", "forward", "output"])
def test_default_deny(ruleset: dict[str, dict[str, str]], chain: str) -> None:
    assert ruleset[chain]["policy"] == "drop"


def test_nftables_service(host) -> None:
    assert host.service("nftables").is_enabled
    assert host.check_output("systemctl is-active nftables") == "active"
    assert (
        host.check_output("systemctl is-active vantio-nftables-rollback.timer || true")
        == "inactive"
    )


@pytest.fixture(scope="module")
def route(host):  # type: ignore[no-untyped-def]
    """A route into the documentation network, so that egress really reaches the firewall."""
    # a veth pair (built into this kernel; the dummy driver is a module the container may not load)
    host.run_expect(
        [0],
        "ip link add vantio-t0 type veth peer name vantio-t1"
        " && ip addr add 192.0.2.1/24 dev vantio-t0"
        " && ip -6 addr add 2001:db8::1/64 dev vantio-t0 nodad"
        " && ip link set vantio-t1 up && ip link set vantio-t0 up",
    )
    yield
    host.run("ip link del vantio-t0")


CONNECT = """python3 - <<'EOF'
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM if sys.argv[3] == 'udp' else socket.SOCK_STREAM)
s.settimeout(1)
try:
    if sys.argv[3] == 'udp':
        s.sendto(b'x', (sys.argv[1], int(sys.argv[2]))); print('sent')
    else:
        s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')
except PermissionError:
    print('denied')
except OSError as e:
    print('left-host', type(e).__name__)
EOF"""


@pytest.mark.parametrize(
    "address,port,proto,allowed",
    [
        ("192.0.2.10", 123, "udp", True),  # time source
        ("192.0.2.53", 53, "udp", True),  # resolver
        ("192.0.2.53", 53, "tcp", True),
        ("192.0.2.80", 443, "tcp", True),  # allow-listed repository
        ("2001:db8::80", 80, "tcp", True),  # allow-listed, IPv6
        ("192.0.2.99", 443, "tcp", False),  # anything else
        ("192.0.2.10", 124, "udp", False),
        ("2001:db8::99", 80, "tcp", False),
    ],
)
def test_egress(host, route: None, address: str, port: int, proto: str, allowed: bool) -> None:
    # A packet that passes the output chain leaves through vantio-t0 (first the ARP or
    # neighbour solicitation for it) and arrives on the peer vantio-t1; a dropped one never does.
    # UDP sees the drop as EPERM at once; TCP just retries its SYN, hence the counter.
    rx = "cat /sys/class/net/vantio-t1/statistics/rx_packets"
    host.run("ip neigh flush dev vantio-t0")
    before = int(host.check_output(rx))
    out = host.check_output(CONNECT.replace("python3 -", f"python3 - {address} {port} {proto}"))
    after = int(host.check_output(rx))
    if allowed:
        assert after > before, out
        assert out != "denied"
    else:
        assert after == before, out
        if proto == "udp":
            assert out == "denied"


def test_loopback_allowed(host) -> None:
    assert (
        host.check_output(CONNECT.replace("python3 -", "python3 - 127.0.0.1 22 tcp")) == "connected"
    )


# --- chrony ----------------------------------------------------------------------------------


def test_chrony_enclave_sources_only(host) -> None:
    conf = host.file("/etc/chrony/chrony.conf").content_string
    servers = [line.split()[1] for line in conf.splitlines() if line.startswith("server ")]
    assert servers == ["192.0.2.10", "192.0.2.11"]
    assert not any(
        line.split()[:1] in (["pool"], ["sourcedir"], ["confdir"]) for line in conf.splitlines()
    )
    parsed = host.check_output("chronyd -p -f /etc/chrony/chrony.conf")
    assert "server 192.0.2.10 iburst" in parsed


def test_chrony_enabled_clock_is_the_hosts(host) -> None:
    assert host.service("chrony").is_enabled
    # ConditionCapability=CAP_SYS_TIME: a container may not set the host's clock
    assert host.check_output("systemctl show -p ConditionResult chrony") == "ConditionResult=no"


# --- mounts and permissions -----------------------------------------------------------------


def test_dev_shm_options(host) -> None:
    options = host.mount_point("/dev/shm").options
    assert {"nodev", "nosuid", "noexec"} <= set(options)


def test_tmp_options(host) -> None:
    options = set(host.mount_point("/tmp").options)
    assert {"nodev", "nosuid"} <= options
    # noexec on /tmp needs a remount the container may not do (its runtime owns /tmp)
    assert host.file("/etc/apt/apt.conf.d/50vantio-tempdir").contains(
        "APT::ExtractTemplates::TempDir"
    )


@pytest.mark.parametrize(
    "path,user,group,mode",
    [
        ("/etc/shadow", "root", "shadow", 0o640),
        ("/etc/gshadow", "root", "shadow", 0o640),
        ("/etc/passwd", "root", "root", 0o644),
        ("/etc/group", "root", "root", 0o644),
        ("/etc/cron.d", "root", "root", 0o700),
        ("/etc/sudoers", "root", "root", 0o440),
        ("/etc/ssh/ssh_host_ed25519_key", "root", "root", 0o600),
        ("/var/log/audit", "root", "adm", 0o750),
    ],
)
def test_permissions(host, path: str, user: str, group: str, mode: int) -> None:
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (user, group, mode)


def test_login_defs(host) -> None:
    content = host.file("/etc/login.defs").content_string.splitlines()
    active = {
        line.split()[0]: line.split()[1]
        for line in content
        if line and not line.startswith("#") and len(line.split()) >= 2
    }
    assert active["UMASK"] == "027"
    assert active["PASS_MAX_DAYS"] == "365"
    assert active["ENCRYPT_METHOD"] == "YESCRYPT"


def test_banners(host) -> None:
    assert "Authorised access only" in host.file("/etc/issue.net").content_string


def test_login_shells(host) -> None:
    out = host.check_output(f"su - {ADMIN} -c 'umask; echo $TMOUT'").split()
    assert out == ["0027", "900"]
    home = host.file(f"/home/{ADMIN}")
    assert (home.user, home.mode) == (ADMIN, 0o750)


# --- pam -------------------------------------------------------------------------------------


def test_pwquality_in_the_password_stack(host) -> None:
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string


@pytest.mark.parametrize(
    "password,accepted",
    [
        ("Xq7#vLm2@Rt9pZw4", True),  # 16 characters, 4 classes
        ("Xq7#vLm2@Rt9", False),  # 12 characters: below minlen 14
        ("xq7vlm2rt9pzw4kd", False),  # 2 classes: below minclass 4
        ("Password123456!!", False),  # a dictionary word
    ],
)
def test_pwquality_policy(host, password: str, accepted: bool) -> None:
    # pwscore applies the same pwquality.conf(.d) as pam_pwquality
    out = host.run(f"echo {shlex.quote(password)} | pwscore")
    assert (out.rc == 0) == accepted, out.stdout + out.stderr


def test_session_tmpdir(host) -> None:
    uid = host.user(ADMIN).uid
    assert host.check_output(f"su - {ADMIN} -c 'echo $TMPDIR'") == f"/tmp/user/{uid}"
    private = host.file(f"/tmp/user/{uid}")
    assert (private.user, private.mode) == (ADMIN, 0o700)


# --- integrity -------------------------------------------------------------------------------

AIDE = "aide --config /etc/aide/aide.conf"


def aide_check(host) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    """The AIDE check: its exit code and the paths it reports (added, removed, changed)."""
    out = host.run(f"{AIDE} --check")
    paths = [
        line.split(": ", 1)[1]
        for line in out.stdout.splitlines()
        if line[:1] in "fdl" and ": /" in line
    ]
    return out.rc, paths


def test_aide_baseline_matches_the_converged_host(host) -> None:
    # The baseline was taken at the end of the first converge; the idempotent second run and
    # the tests since changed no system file (logs and apt's caches may move, /tmp is excluded,
    # /etc/ssh's own times move with the sshd_config staging directory).
    db = host.file("/var/lib/aide/aide.db")
    assert (db.user, db.mode) == ("_aide", 0o600)
    _, paths = aide_check(host)
    system = [p for p in paths if p.split("/")[1] in ("etc", "usr", "boot") or p.startswith("/tmp")]
    assert system == []


def test_aide_detects_a_change_to_the_policy(host) -> None:
    try:
        host.run_expect([0], "echo planted > /etc/vantio/planted")
        rc, paths = aide_check(host)
        assert rc & 1 and "/etc/vantio/planted" in paths  # bit 0: files were added
    finally:
        host.run("rm -f /etc/vantio/planted")


@pytest.mark.parametrize("path", ["/usr/sbin/auditctl", "/usr/sbin/augenrules", "/etc/vantio/x"])
def test_aide_rule_hashes_with_sha512(host, path: str) -> None:
    # the rule AIDE applies to the path (CIS 6.3.3 for the audit tools)
    out = host.check_output(f"{AIDE} --path-check f:{path}")
    assert out.startswith("[X]") and "sha512" in out and "90_aide_vantio" in out


def test_aide_daily_check(host) -> None:
    assert host.service("dailyaidecheck.timer").is_enabled
    assert host.service("dailyaidecheck.timer").is_running


def test_package_files_intact(host) -> None:
    # debsums: every package file (conffiles aside) matches its package's checksum
    out = host.run("debsums -s")
    assert out.rc == 0, out.stdout + out.stderr


def test_checkrestart_finds_no_stale_process(host) -> None:
    # checkrestart (debian-goodies) lists processes that still map replaced files; needrestart
    # is not there, since it would bring binutils (an assembler and a linker)
    assert not host.package("needrestart").is_installed
    assert not host.exists("as")
    out = host.run("checkrestart")
    assert out.rc == 0 and "Found 0 processes" in out.stdout, out.stdout + out.stderr


# --- auditd: process accounting ----------------------------------------------------------------


def test_process_accounting_enabled_skipped_without_the_capability(host) -> None:
    assert host.service("acct").is_enabled
    assert host.package("acct").is_installed
    # ConditionCapability=CAP_SYS_PACCT: the container has not got it (the handler's restart
    # was skipped by the condition)
    assert host.check_output("systemctl show -p ConditionResult acct") == "ConditionResult=no"


# --- usb -------------------------------------------------------------------------------------


def test_usbguard_policy(host) -> None:
    conf = host.file("/etc/usbguard/usbguard-daemon.conf")
    assert (conf.user, conf.mode) == ("root", 0o600)
    lines = [line for line in conf.content_string.splitlines() if line and line[0] != "#"]
    settings = dict(line.split("=", 1) for line in lines)
    assert settings["ImplicitPolicyTarget"] == "block"
    for key in ("PresentDevicePolicy", "PresentControllerPolicy", "InsertedDevicePolicy"):
        assert settings[key] == "apply-policy"
    assert settings["IPCAllowedGroups"] == "root"
    rules = host.file("/etc/usbguard/rules.conf").content_string.splitlines()
    assert "allow with-interface equals { 08:*:* }" in rules  # anchor media, nothing else inside
    assert "allow with-interface equals { 09:*:* }" in rules


def test_usbguard_enabled_skipped_without_a_usb_bus(host) -> None:
    assert host.service("usbguard").is_enabled
    assert not host.file("/sys/bus/usb/devices").exists
    # ConditionPathIsDirectory=/sys/bus/usb/devices (the handler's restart was skipped)
    assert host.check_output("systemctl show -p ConditionResult usbguard") == "ConditionResult=no"
    assert host.check_output("systemctl is-enabled usbguard-dbus || true") == "masked"


@pytest.fixture()
def scratch_user(host):  # type: ignore[no-untyped-def]
    """A throw-away local account, removed afterwards."""
    host.run_expect([0], "useradd --no-create-home vantio-scratch")
    yield "vantio-scratch"
    host.run("userdel vantio-scratch")


def test_password_hash_costs(host, scratch_user: str) -> None:
    # login.defs decides what shadow's own hashing computes (chpasswd -c, newusers): yescrypt
    # at cost 8 ("jCT"; Debian's default 5 is "j9T"), 65536 rounds for SHA-512. passwd and a
    # plain chpasswd hash through PAM (pam_unix), which login.defs does not set.
    host.run_expect([0], f"echo '{scratch_user}:Xq7#vLm2@Rt9pZw4' | chpasswd -c YESCRYPT")
    yescrypt = host.check_output(f"getent shadow {scratch_user} | cut -d: -f2")
    assert yescrypt.startswith("$y$jCT$")
    host.run_expect([0], f"echo '{scratch_user}:Xq7#vLm2@Rt9pZw4' | chpasswd -c SHA512")
    sha = host.check_output(f"getent shadow {scratch_user} | cut -d: -f2")
    assert sha.startswith("$6$rounds=65536$")


GUARD_PLAYBOOK = """
- hosts: all
  gather_facts: true
  gather_subset: ["!all", min, virtual]
  roles:
    - role: hardening
      vars:
        hardening_admin_users:
          - {name: vantio-admin, authorized_keys: [%(key)s]}
          - {name: vantio-nokey, authorized_keys: []}
        hardening_ssh_max_auth_tries: 2
"""


def test_guard_holds_back_an_unprovable_sshd_config(host, tmp_path: Path) -> None:
    """A candidate sshd_config under which one admin cannot log in with a key is not installed,
    sshd keeps its config, and the run fails saying what it held back."""
    project = Path(__file__).resolve().parents[3]
    key = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "admin_key.pub").read_text().strip()
    playbook = tmp_path / "guard.yml"
    playbook.write_text(GUARD_PLAYBOOK % {"key": json.dumps(key)})
    before = host.check_output("sha256sum /etc/ssh/sshd_config")
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(project / "roles"),
        "ANSIBLE_CONNECTION_PLUGINS": str(project / "molecule/_shared/plugins/connection"),
        "ANSIBLE_PIPELINING": "true",
        "ANSIBLE_NOCOLOR": "1",
    }
    try:
        run_ = subprocess.run(
            [
                "ansible-playbook", "-i", f"{host.backend.name},", "-c", "vantio_podman",
                "-e", "ansible_python_interpreter=/usr/bin/python3", "--tags", "ssh", str(playbook),
            ],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        out = run_.stdout + run_.stderr
        assert run_.returncode != 0, out[-2000:]
        assert "Held back" in out
        assert "vantio-nokey: no public key" in out
        assert host.check_output("sha256sum /etc/ssh/sshd_config") == before
        assert "maxauthtries 3" in host.check_output("sshd -T")
        assert host.check_output("ls -d /etc/ssh/vantio-sshd.* 2>/dev/null || true") == ""
    finally:
        host.run("userdel -r vantio-nokey")
