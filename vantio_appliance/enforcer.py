"""The enforcer daemon: loads bpf/enforcer.c, keeps the policy maps, records every decision.

I/O edge: bcc (through _internal.bpfkit), cgroup v2 directories, bpffs pins,
the ingest API client. The decisions themselves are made in the kernel from
maps that policy.compile_maps fills; this module only moves data.

Survival: programs are attached to the agents' slice and pinned under the pin
directory, so a crashed or killed daemon leaves enforcement in place. The ring
buffer is pinned too and is the only queue: a record leaves it once the ledger
has acknowledged it, so events a killed daemon held are sent by the next one
(at least once). When it is full, enforce-mode connects are refused and counted
in the pinned loss counters (no unrecorded permit); whichever daemon runs next
reports the counts it finds not yet recorded as gap records.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import json
import logging
import mmap
import os
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from . import client, hostcheck, policy
from ._internal import bpfkit

log = logging.getLogger("vantio.enforcer")

CGROUP2: Final = hostcheck.cgroup2_root(Path("/proc/self/mounts").read_text())
#: Where systemd puts vantio-agents.slice (a dash in a slice's name nests it: the parent is
#: vantio.slice); the enforcer makes the same directories itself where systemd is not PID 1.
DEFAULT_ROOT: Final = CGROUP2 / policy.PARENT_SLICE / policy.SLICE
DEFAULT_PINS: Final = Path("/sys/fs/bpf/vantio")
DEFAULT_STATE: Final = Path("/run/vantio-enforcer")  # its own: /run/vantio is the ledger's
BPF_SOURCE: Final = Path(__file__).resolve().parent / "bpf" / "enforcer.c"  # package data
PROGRAMS: Final = ("connect4", "connect6", "sendmsg4", "sendmsg6", "egress")
MAPS: Final = ("config", "agents", "quarantined", "hosts4", "hosts6", "rules4", "rules6",
               "lost", "recorded", "events")
#: Pinned at the first start and reopened by path by every later daemon (bpf/enforcer.c).
KEPT_MAPS: Final = ("quarantined", "lost", "recorded", "events")
STAGES: Final = ("connect4", "connect6", "sendmsg4", "sendmsg6", "exec")
ACTIONS: Final = ("permit", "block", "quarantine")
SYSCALL: Final = ("connect", "connect", "sendmsg", "sendmsg", "execve")
F_MONITOR: Final = 1
F_UNKNOWN: Final = 4  # a cgroup below the agents root that the live policy lacks: blocked
RINGBUF_PAGES: Final = 1024  # 4 MiB: about 43,000 events
BATCH: Final = 1000
POLL_S: Final = 0.005  # the ring buffer is read this often when it is not busy
#: batches in the ledger's hands at once: while one waits for its fdatasync, the service
#: parses the next (one at a time left it idle then: about 1.3x fewer records/s)
IN_FLIGHT: Final = 3
# map_recorded slots (bpf/enforcer.c): kernel losses recorded, daemon losses by action,
# daemon losses recorded by action, the start of the next gap's window.
_DAEMON_LOST: Final = 2 * len(STAGES)
_DAEMON_RECORDED: Final = _DAEMON_LOST + len(ACTIONS)
_WINDOW: Final = _DAEMON_RECORDED + len(ACTIONS)
RECORDED_SLOTS: Final = _WINDOW + 1

_AGENT_KEY: Final = struct.Struct("<QII")
_AGENT_VAL: Final = struct.Struct("<IBBBx")  # idx, enforce, default, nets
_RULES_HEAD: Final = struct.Struct("<II")
_RANGE: Final = struct.Struct("<HHI")
_LPM4: Final = struct.Struct("<III4s")
_LPM6: Final = struct.Struct("<III16s")
_HOST4: Final = struct.Struct("<II4s")
_HOST6: Final = struct.Struct("<II16s")
_NETS: Final = {4: 1, 6: 2}  # agent_val.nets bits: the agent has wider prefixes there
_EVENT: Final = struct.Struct("<QIIII16sHBBBBBx16s")  # struct event, 64 bytes
_EXEC_TAIL: Final = struct.Struct("<II128s")
_CAP_BPF: Final = 39


class EnforcerError(RuntimeError):
    """The enforcer cannot run (fully armed) here; the message says what is missing."""


# -- start-up checks -------------------------------------------------------------------


def lockdown() -> str:
    """The kernel's lockdown level (none, integrity, confidentiality), or 'unknown'."""
    with contextlib.suppress(OSError):
        return hostcheck.lockdown_level((hostcheck.SECURITYFS / "lockdown").read_text())
    return "unknown"


def missing_features(pins: Path, root: Path) -> list[str]:
    """Everything the enforcer needs and this host lacks; empty when fully armed."""
    return hostcheck.missing(hostcheck.probe(CGROUP2, root), pins, CGROUP2)


# -- capabilities ------------------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities(keep: Sequence[int] = (_CAP_BPF,)) -> None:
    """Keep only ``keep`` (CAP_BPF: policy map updates on reload, release, quarantine).

    Called before any thread starts: capabilities are per thread. The bounding
    set is emptied too where the process may (CAP_SETPCAP, as plain root has);
    the unit gives no CAP_SETPCAP, and its NoNewPrivileges= keeps anything exec'd
    from gaining back what the bounding set still lists.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        if cap not in keep:
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    data = (_CapData * 2)()
    for cap in keep:
        data[cap // 32].effective |= 1 << (cap % 32)
        data[cap // 32].permitted |= 1 << (cap % 32)
    if libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
        err = ctypes.get_errno()
        raise EnforcerError(f"cannot drop capabilities: {os.strerror(err)}")


# -- cgroups ----------------------------------------------------------------------------


def cgroup_id(path: Path) -> int:
    """A cgroup v2 directory's id is its inode number (what bpf_get_current_cgroup_id says)."""
    return os.stat(path).st_ino


def set_frozen(path: Path, frozen: bool) -> None:
    (path / "cgroup.freeze").write_text("1" if frozen else "0")


def is_frozen(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return (path / "cgroup.freeze").read_text().strip() == "1"
    return False


def enroll(cgroup: Path, pid: int) -> None:
    """Move a process into an agent's cgroup."""
    (cgroup / "cgroup.procs").write_text(str(pid))


# -- records -----------------------------------------------------------------------------


@dataclass
class Decision:
    stage: int
    action: int
    flags: int
    pid: int
    tgid: int
    uid: int
    gid: int
    comm: str
    cgid: int
    family: int
    addr: bytes
    port: int
    proto: int
    path: str = ""


def decode_event(raw: bytes) -> Decision:
    (cgid, pid, tgid, uid, gid, addr, port, stage, action, flags, proto, family,
     comm) = _EVENT.unpack_from(raw)
    d = Decision(stage, action, flags, pid, tgid, uid, gid,
                 comm.split(b"\0", 1)[0].decode(errors="replace"), cgid, family, addr, port,
                 proto)
    if stage == 4 and len(raw) >= _EVENT.size + _EXEC_TAIL.size:
        _old, _pad, path = _EXEC_TAIL.unpack_from(raw, _EVENT.size)
        d.path = path.split(b"\0", 1)[0].decode(errors="replace")
    return d


def _address(family: int, addr: bytes) -> tuple[str, str]:
    if family == 4:
        return "inet", socket.inet_ntop(socket.AF_INET, addr[:4])
    return "inet6", socket.inet_ntop(socket.AF_INET6, addr)


def event_record(d: Decision, cgroups: Callable[[int], tuple[str, list[int]] | None]
                 ) -> dict[str, Any]:
    """One decision as the event fields FORMATS.md section 1 allows (nothing else).

    Convention: ``syscall.args.flags`` bit 0 set means monitor mode (the
    action is what enforce would have done; the call was permitted).
    """
    proc: dict[str, Any] = {"pid": d.pid, "tgid": d.tgid, "uid": d.uid, "gid": d.gid}
    if d.comm:
        proc["comm"] = d.comm[:16]
    where = cgroups(d.cgid)
    if where:
        proc["cgroup"], proc["cgroup_ancestry"] = where
    rec: dict[str, Any] = {"action": ACTIONS[d.action] if d.action < 3 else "block",
                           "proc": proc}
    if d.stage == 4:
        args: dict[str, Any] = {"flags": d.flags}
        if d.path:
            args["path"] = d.path[:4096]
        rec["syscall"] = {"name": "execve", "args": args}
        return rec
    fam, host = _address(d.family, d.addr)
    rec["syscall"] = {"name": SYSCALL[d.stage], "args": {
        "family": fam, "address": host, "port": d.port,
        "proto": "udp" if d.proto == 2 else "tcp", "flags": d.flags}}
    rec["target_host"] = f"[{host}]:{d.port}" if fam == "inet6" else f"{host}:{d.port}"
    return rec


class EventEncoder:
    """Ring buffer records to the JSON that ``event_record`` makes, at ring buffer speed.

    A record's JSON is two parts: the process (from cgroup id, pid, tgid, uid,
    gid, comm) and the decision (action, syscall, target: from stage, action,
    flags, protocol, family, address, port). An agent repeats both, so each is
    built once by ``event_record`` and then looked up by its raw bytes: a few
    slices and two dict lookups per event instead of a decode and a JSON encode.
    Exec records (they carry a path) always take the slow path.
    """

    MAX_CACHED: Final = 65536

    def __init__(self, cgroups: Callable[[int], tuple[str, list[int]] | None]) -> None:
        self._cgroups = cgroups
        self._procs: dict[bytes, bytes] = {}
        self._decisions: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes) -> tuple[bytes, int]:
        """The record's JSON and its action (an index into ACTIONS)."""
        # struct event: cgid 0, pid tgid uid gid 8-24, addr 24, port 40, stage 42,
        # action 43, flags 44, proto 45, family 46, comm 48-64
        action = min(raw[43], 2)
        if raw[42] == 4:  # exec lineage
            return _json(event_record(decode_event(raw), self._cgroups)), action
        pkey = raw[0:24] + raw[48:64]
        dkey = raw[24:47]
        proc = self._procs.get(pkey)
        decision = self._decisions.get(dkey)
        if proc is None or decision is None:
            rec = event_record(decode_event(raw), self._cgroups)
            if len(self._procs) >= self.MAX_CACHED or len(self._decisions) >= self.MAX_CACHED:
                self._procs.clear()
                self._decisions.clear()
            proc = self._procs[pkey] = _json(rec.pop("proc"))
            decision = self._decisions[dkey] = _json(rec)[:-1]
        return decision + b',"proc":' + proc + b"}", action


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def gap_record(stage: str, action: str, lost: int, window: tuple[int, int]
               ) -> dict[str, Any]:
    """A count of decisions that could not be recorded (a ``gap`` record, FORMATS.md).

    ``action`` is what happened to them: ``block`` for enforce-mode decisions
    (refused because they could not be recorded), ``permit`` for monitor mode
    and exec lineage (let through unrecorded); ``daemon`` gaps (read from the
    ring buffer, refused by the ledger) carry the decisions' own action.
    """
    return {"kind": "gap", "stage": stage, "lost": lost, "action": action,
            "window": {"start_ns": window[0], "end_ns": window[1]}}


def loss_slots() -> list[tuple[str, str]]:
    """(stage, action of the lost decisions) of each kernel loss counter, in map order."""
    return [(st, "block" if enforce and st != "exec" else "permit")
            for st in STAGES for enforce in (False, True)]


def loss_names(counts: Sequence[int], daemon: Sequence[int]) -> dict[str, int]:
    """Loss counters by name, as `vantio enforcer status` shows them."""
    out = {f"{STAGES[i // 2]}/{'enforce' if i % 2 else 'monitor'}": n
           for i, n in enumerate(counts)}
    out.update({f"daemon/{a}": n for a, n in zip(ACTIONS, daemon, strict=True)})
    return out


# -- the daemon --------------------------------------------------------------------------


@dataclass
class Options:
    policy_file: Path
    socket: Path | None
    api_key: str | None
    root: Path = DEFAULT_ROOT
    pins: Path = DEFAULT_PINS
    state: Path = DEFAULT_STATE
    ringbuf_pages: int = RINGBUF_PAGES
    drop_caps: bool = True
    resolver: policy.Resolver = field(default=lambda name: sorted(
        {str(ai[4][0]) for ai in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}))


@dataclass(frozen=True)
class _InFlight:
    """A batch sent to the ledger: its answer, where it ends in the ring, its actions."""

    done: Future[bool | None]
    end: int
    by_action: list[int]


class Enforcer:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.policy = self._load_policy()
        self.gen = 0
        self.keys: dict[int, list[tuple[str, bytes]]] = {}
        self.agent_cgids: dict[str, int] = {}
        self.agent_vals: dict[str, bytes] = {}  # map_agents values of the live generation
        self.ring: bpfkit.RingReader | None = None
        self.encode = EventEncoder(self.cgroup_of)
        self.sent = 0
        self.stop = threading.Event()
        self.give_up = threading.Event()  # set 5 s after stop: sending ends
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.cg_cache: dict[int, tuple[str, list[int]]] = {}
        self.prog: bpfkit.Program | None = None
        self.fds: dict[str, int] = {}
        self.maps: dict[str, int] = {}
        self.api = client.Client(opts.api_key, opts.socket) if opts.socket and opts.api_key \
            else None
        #: the pump's senders: IN_FLIGHT batches at once, each thread on a connection of its own
        self.senders = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="vantio-send") \
            if self.api is not None else None
        self._own = threading.local()
        self._own_clients: list[client.Client] = []
        self.started = time.time()
        self.hup = threading.Event()

    def _load_policy(self) -> policy.Policy:
        try:
            text = self.opts.policy_file.read_bytes()
        except OSError as exc:
            raise EnforcerError(f"cannot read policy {self.opts.policy_file}: "
                                f"{exc.strerror}") from None
        return policy.parse(text, str(self.opts.policy_file), self.opts.resolver)

    # -- loading ---------------------------------------------------------------------

    def arm(self) -> None:
        """Compile, load, fill the maps, attach (replacing an earlier daemon's), pin."""
        host = hostcheck.probe(CGROUP2, self.opts.root)
        missing = hostcheck.missing(host, self.opts.pins, CGROUP2)
        if missing:
            raise EnforcerError("refusing to run half-armed; missing: " + "; ".join(missing))
        level = hostcheck.lockdown_level(host.lockdown)
        root = self.opts.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.opts.pins.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise EnforcerError(f"cannot create {exc.filename}: {exc.strerror}") from None
        depth = len(root.relative_to(CGROUP2).parts) + 1
        # A ring buffer pinned by an earlier daemon is kept (it holds what the ledger has
        # not acknowledged yet): bcc's own is then a placeholder, one page.
        pages = 1 if (self.opts.pins / "map_events").exists() else self.opts.ringbuf_pages
        cflags = [f"-DAGENT_LEVEL={depth}", f"-DROOT_CGID={cgroup_id(root)}ULL",
                  f"-DRINGBUF_PAGES={pages}", f"-DMAX_RANGES={policy.MAX_RANGES}", "-w"]
        if not hostcheck.kernel_reads_allowed(host.lockdown):
            cflags.append("-DNO_KERNEL_READ")  # exec records then carry no path
            log.warning("lockdown %s: programs built without kernel memory reads; exec "
                        "records carry no path", level)
        log.info("lockdown %s; compiling %s (agent level %d)", level, BPF_SOURCE, depth)
        self.prog = bpfkit.Program(BPF_SOURCE, cflags)
        self._keep_maps(self.prog)
        for name in (*PROGRAMS, "on_exec"):
            self.fds[name] = self.prog.load(name)
        for name in MAPS:
            self.maps[name] = self.prog.map_fd(name)
        self._restore_quarantine()
        self._install(self.policy)
        self.prog.attach_tracepoint("sched:sched_process_exec", "on_exec")
        self.ring = bpfkit.RingReader(self.maps["events"])
        if self._recorded()[_WINDOW] == 0:  # new pins: losses can only start now
            self._set_recorded(_WINDOW, time.time_ns())
        self._attach_and_pin(root)
        log.info("armed: %d agents, generation %d", len(self.policy.agents), self.gen)

    def _keep_maps(self, prog: bpfkit.Program) -> None:
        """The maps that outlive a daemon: an earlier daemon's, reopened by path (so no
        by-id lookup, which would need CAP_SYS_ADMIN), or else this one's, pinned now."""
        for name in KEPT_MAPS:
            pin = self.opts.pins / f"map_{name}"
            if not pin.exists():
                bpfkit.pin(prog.map_fd(name), pin)
                continue
            fd = bpfkit.obj_get(pin)
            mine, kept = bpfkit.map_shape(prog.map_fd(name)), bpfkit.map_shape(fd)
            if name == "events":  # its size is the first daemon's (see arm)
                mine = replace(mine, max_entries=kept.max_entries)
                if kept.max_entries != self.opts.ringbuf_pages * mmap.PAGESIZE:
                    log.warning("the pinned ring buffer keeps its size, %d pages "
                                "(`vantio enforcer uninstall` to change it)",
                                kept.max_entries // mmap.PAGESIZE)
            if mine != kept:
                os.close(fd)
                raise EnforcerError(f"the pinned map {pin} is not the one this version "
                                    f"builds ({kept} != {mine}); `vantio enforcer uninstall` "
                                    "removes the pins (enforcement ends until the next start)")
            prog.reuse(name, fd)

    def _attach_and_pin(self, root: Path) -> None:
        pins = self.opts.pins
        cg = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in PROGRAMS:
                # The new program runs beside the old one (ALLOW_MULTI: both must permit),
                # then the old one goes: never a moment without enforcement.
                bpfkit.attach(self.fds[name], cg, bpfkit.ATTACH[name])
                old = pins / f"prog_{name}"
                if old.exists():
                    with contextlib.suppress(OSError):
                        fd = bpfkit.obj_get(old)
                        bpfkit.detach(fd, cg, bpfkit.ATTACH[name])
                        os.close(fd)
                bpfkit.pin(self.fds[name], old)
            for name in MAPS:
                if name not in KEPT_MAPS:
                    bpfkit.pin(self.maps[name], pins / f"map_{name}")
        finally:
            os.close(cg)

    def _restore_quarantine(self) -> None:
        """Agents left frozen by an earlier daemon stay quarantined."""
        for agent in self.policy.agents:
            path = self.opts.root / agent.cgroup
            if is_frozen(path) and self.severed(cgroup_id(path)) is None:
                bpfkit.update(self.maps["quarantined"], cgroup_id(path).to_bytes(8, "little"),
                              bytes(8))
        self._flag_quarantine()

    def _flag_quarantine(self) -> None:
        """config[1]: whether the programs must look agents up in ``quarantined`` at all.

        Cleared only when the map is empty, and set again if the kernel quarantined
        an agent meanwhile (it inserts, then sets the flag)."""
        one = (1).to_bytes(4, "little")
        if bpfkit.empty(self.maps["quarantined"], 8):
            bpfkit.update(self.maps["config"], one, bytes(4))
            if bpfkit.empty(self.maps["quarantined"], 8):
                return
        bpfkit.update(self.maps["config"], one, one)

    def _install(self, pol: policy.Policy) -> None:
        """Write generation gen+1, flip config[0] to it, then delete the old generation."""
        new = self.gen + 1
        entries = policy.compile_maps(pol, new)
        written: list[tuple[str, bytes]] = []
        cgids: dict[str, int] = {}
        vals: dict[str, bytes] = {}
        nets = [0] * len(entries.agents)  # an agent's lookups skip the tries it has nothing in
        for version, width, host, lpm in ((4, 32, _HOST4, _LPM4), (6, 128, _HOST6, _LPM6)):
            for (idx, plen, addr), ranges in (entries.v4 if version == 4 else entries.v6).items():
                raw = addr.to_bytes(width // 8, "big")
                if plen == width:
                    table, key = f"hosts{version}", host.pack(new, idx, raw)
                else:
                    table, key = f"rules{version}", lpm.pack(64 + plen, new, idx, raw)
                    nets[idx] |= _NETS[version]
                value = _RULES_HEAD.pack(len(ranges), 0) + b"".join(
                    _RANGE.pack(lo, hi, bits) for lo, hi, bits in ranges)
                value += bytes(_RANGE.size * (policy.MAX_RANGES - len(ranges)))
                bpfkit.update(self.maps[table], key, value)
                written.append((table, key))
        # Agents after their rules: which tries each has entries in is known then.
        for (idx, enforce, quarantine), agent in zip(entries.agents, pol.agents, strict=True):
            path = self.opts.root / agent.cgroup
            path.mkdir(exist_ok=True)
            cgids[agent.name] = cgid = cgroup_id(path)
            key = _AGENT_KEY.pack(cgid, new, 0)
            vals[agent.name] = val = _AGENT_VAL.pack(idx, int(enforce), 2 if quarantine else 1,
                                                     nets[idx])
            bpfkit.update(self.maps["agents"], key, val)
            written.append(("agents", key))
        bpfkit.update(self.maps["config"], bytes(4), new.to_bytes(4, "little"))
        for table, key in self.keys.pop(self.gen, []):
            bpfkit.delete(self.maps[table], key)
        self.keys[new] = written
        self.gen, self.policy, self.agent_cgids, self.agent_vals = new, pol, cgids, vals

    def rekey(self) -> None:
        """Give agents whose cgroup was made anew (a unit restarted by systemd: same path,
        new id) their policy under the new id, and record it.

        Until then the kernel blocks the new cgroup (fail closed). One map update
        installs the new key, so the agent goes from blocked to its policy at once; a
        quarantine follows it to the new cgroup (frozen on the next tick). The record's
        ``proc`` names the new cgroup and id (FORMATS.md has no field for the old one: it
        is the id of the agent's earlier records).
        """
        done: list[tuple[str, int, int, int | None]] = []
        with self.lock:
            keys = self.keys.get(self.gen, [])
            for agent in self.policy.agents:
                old = self.agent_cgids.get(agent.name)
                try:
                    cgid = cgroup_id(self.opts.root / agent.cgroup)
                except OSError:
                    continue  # stopped: the old key stays until a new cgroup appears
                if cgid == old or old is None:
                    continue
                new_key = _AGENT_KEY.pack(cgid, self.gen, 0)
                bpfkit.update(self.maps["agents"], new_key, self.agent_vals[agent.name])
                keys.append(("agents", new_key))
                old_key = _AGENT_KEY.pack(old, self.gen, 0)
                with contextlib.suppress(ValueError):
                    keys.remove(("agents", old_key))
                bpfkit.delete(self.maps["agents"], old_key)
                severed = self.severed(old)
                if severed is not None:
                    bpfkit.update(self.maps["quarantined"], cgid.to_bytes(8, "little"),
                                  severed.to_bytes(8, "little"))
                    bpfkit.delete(self.maps["quarantined"], old.to_bytes(8, "little"))
                self.agent_cgids[agent.name] = cgid
                done.append((agent.name, old, cgid, severed))
        for name, old, cgid, severed in done:
            rec = self._agent_record(name, "permit" if severed is None else "quarantine",
                                     "vantio_rekey", severed or 0)
            self._send([_json(rec)])
            log.warning("agent %s re-keyed: cgroup id %d -> %d", name, old, cgid)

    def reload(self) -> None:
        try:
            pol = self._load_policy()
        except (EnforcerError, policy.PolicyError) as exc:
            log.error("reload refused, the loaded policy stays: %s", exc)
            return
        with self.lock:
            self._install(pol)
        log.info("reloaded %s: generation %d", self.opts.policy_file, self.gen)

    # -- events ----------------------------------------------------------------------

    def cgroup_of(self, cgid: int) -> tuple[str, list[int]] | None:
        hit = self.cg_cache.get(cgid)
        if hit is None:
            for dirpath, _dirs, _files in os.walk(self.opts.root):
                p = Path(dirpath)
                if cgroup_id(p) == cgid:
                    rel = p.relative_to(CGROUP2)
                    ids = [1] + [cgroup_id(CGROUP2.joinpath(*rel.parts[:i + 1]))
                                 for i in range(len(rel.parts))]
                    hit = self.cg_cache[cgid] = ("/" + str(rel), ids[-64:])
                    break
        return hit

    def _send(self, records: list[bytes]) -> bool | None:
        """Submit; True when durable, False when the ledger refused it for good, None when
        the daemon stops first. 429, 503 and an unreachable ledger are waited out: the
        ring buffer holds the rest meanwhile. One request at a time (one connection)."""
        if self.api is None:
            return True
        with self.send_lock:
            return self._send_locked(self.api, records)

    def _send_locked(self, api: client.Client, records: list[bytes]) -> bool | None:
        attempt = 0
        while not self.give_up.is_set():
            attempt += 1
            try:
                api.submit_batch(records)
                return True
            except client.ApiError as exc:
                if exc.status not in (429, 503):
                    log.error("ledger refused a batch: %s", exc)
                    return False
                self.give_up.wait(exc.retry_after or min(0.05 * attempt, 1.0))
            except (OSError, http.client.HTTPException) as exc:
                if attempt == 1:
                    log.warning("ledger unreachable: %s", exc)
                self.give_up.wait(0.2)
        return None

    def pump(self) -> int:
        """Send what the ring buffer holds, IN_FLIGHT batches at a time; a batch leaves the
        ring only once the ledger has it and every batch before it (or refused it for good:
        then it is counted as the daemon's loss, in the pinned map, first). The number of
        records read."""
        assert self.ring is not None
        total, pos = 0, self.ring.consumed
        flight: deque[_InFlight] = deque()
        while not self.give_up.is_set():
            raws, end = self.ring.read(BATCH, pos)
            if raws:
                flight.append(self._submit(raws, end))
                total += len(raws)
            elif not flight:
                self.ring.release(end)  # only discarded records, if any
                return total
            pos = end
            while flight and (not raws or len(flight) >= IN_FLIGHT or flight[0].done.done()):
                if not self._settle(flight.popleft()):
                    return total  # stopping: the next daemon sends the rest
        return total

    def _submit(self, raws: list[bytes], end: int) -> _InFlight:
        """Encode a batch and hand it to a sender thread (or settle it at once without a
        ledger)."""
        batch: list[bytes] = []
        by_action = [0] * len(ACTIONS)
        encode = self.encode
        for raw in raws:
            line, action = encode(raw)
            batch.append(line)
            by_action[action] += 1
        if by_action[2]:
            self.hup.set()  # a quarantine verdict: freeze without waiting for the tick
        if any(raw[44] & F_UNKNOWN for raw in raws):
            self.hup.set()  # a new cgroup was blocked: re-key without waiting for the tick
        done: Future[bool | None] = Future()
        if self.senders is None:
            done.set_result(True)
        else:
            done = self.senders.submit(self._send_own, batch)
        return _InFlight(done, end, by_action)

    def _send_own(self, records: list[bytes]) -> bool | None:
        """In a sender thread, on that thread's own connection (``_send`` on the shared one
        serves the daemon's other records)."""
        api = getattr(self._own, "api", None)
        if api is None:
            assert self.opts.api_key and self.opts.socket  # senders exist only then
            api = self._own.api = client.Client(self.opts.api_key, self.opts.socket)
            self._own_clients.append(api)
        return self._send_locked(api, records)

    def _settle(self, batch: _InFlight) -> bool:
        """After its batch's answer: count it, release the ring up to it; False when the
        daemon stops before the ledger had it."""
        done = batch.done.result()
        if done is None:
            return False
        if done:
            self.sent += sum(batch.by_action)
        else:
            rec = self._recorded()
            for i, n in enumerate(batch.by_action):
                self._set_recorded(_DAEMON_LOST + i, rec[_DAEMON_LOST + i] + n)
        assert self.ring is not None
        self.ring.release(batch.end)
        return True

    def _recorded(self) -> list[int]:
        fd = self.maps["recorded"]
        return [int.from_bytes(bpfkit.lookup(fd, i.to_bytes(4, "little"), 8) or bytes(8),
                               "little") for i in range(RECORDED_SLOTS)]

    def _set_recorded(self, slot: int, value: int) -> None:
        bpfkit.update(self.maps["recorded"], slot.to_bytes(4, "little"),
                      value.to_bytes(8, "little"))

    def report_gaps(self) -> None:
        """Turn losses not yet in the ledger (kernel per stage and mode, daemon per action,
        this daemon's or an earlier one's) into gap records; then mark them recorded."""
        counts = bpfkit.percpu_u64_sums(self.maps["lost"], len(STAGES) * 2)
        rec = self._recorded()
        now = time.time_ns()
        window = (rec[_WINDOW], now)
        gaps: list[tuple[int, int, dict[str, Any]]] = []
        for i, ((stage, action), n) in enumerate(zip(loss_slots(), counts, strict=True)):
            if n > rec[i]:
                gaps.append((i, n, gap_record(stage, action, n - rec[i], window)))
        for i, action in enumerate(ACTIONS):
            n, done = rec[_DAEMON_LOST + i], rec[_DAEMON_RECORDED + i]
            if n > done:
                gaps.append((_DAEMON_RECORDED + i, n,
                             gap_record("daemon", action, n - done, window)))
        if not gaps:
            return
        body = [json.dumps(g, separators=(",", ":")).encode() for _, _, g in gaps]
        if self._send(body):
            for slot, total, g in gaps:
                self._set_recorded(slot, total)
                log.warning("gap recorded: %s %s lost %d", g["stage"], g["action"], g["lost"])
            self._set_recorded(_WINDOW, now)

    def loss_counters(self) -> dict[str, int]:
        counts = bpfkit.percpu_u64_sums(self.maps["lost"], len(STAGES) * 2)
        return loss_names(counts, self._recorded()[_DAEMON_LOST:_DAEMON_RECORDED])

    # -- quarantine ------------------------------------------------------------------

    def severed(self, cgid: int) -> int | None:
        raw = bpfkit.lookup(self.maps["quarantined"], cgid.to_bytes(8, "little"), 8)
        return None if raw is None else int.from_bytes(raw, "little")

    def _agent_record(self, name: str, action: str, syscall: str, severed: int
                      ) -> dict[str, Any]:
        path = self.opts.root / self.policy.agent(name).cgroup
        rec: dict[str, Any] = {"action": action, "syscall": {"name": syscall},
                               "bytes_severed": severed,
                               "proc": {"pid": os.getpid(), "comm": "vantio-enforcer"}}
        where = self.cgroup_of(cgroup_id(path))
        if where:
            rec["proc"]["cgroup"], rec["proc"]["cgroup_ancestry"] = where
        return rec

    def freeze_quarantined(self) -> None:
        for agent in self.policy.agents:
            path = self.opts.root / agent.cgroup
            cgid = self.agent_cgids.get(agent.name)
            if cgid is not None and self.severed(cgid) is not None and not is_frozen(path):
                set_frozen(path, True)
                self._send([json.dumps(self._agent_record(
                    agent.name, "quarantine", "vantio_quarantine", 0)).encode()])
                log.warning("agent %s quarantined: frozen, egress severed", agent.name)

    def quarantine(self, name: str) -> dict[str, Any]:
        cgid = self.agent_cgids[name]
        with self.lock:
            if self.severed(cgid) is None:
                bpfkit.update(self.maps["quarantined"], cgid.to_bytes(8, "little"), bytes(8))
                self._flag_quarantine()
        self.freeze_quarantined()
        return {"agent": name, "quarantined": True}

    def release(self, name: str) -> dict[str, Any]:
        cgid = self.agent_cgids[name]
        severed = self.severed(cgid) or 0
        bpfkit.delete(self.maps["quarantined"], cgid.to_bytes(8, "little"))
        self._flag_quarantine()
        set_frozen(self.opts.root / self.policy.agent(name).cgroup, False)
        self._send([json.dumps(self._agent_record(name, "permit", "vantio_release",
                                                  severed)).encode()])
        log.warning("agent %s released; %d bytes were severed", name, severed)
        return {"agent": name, "released": True, "bytes_severed": severed}

    # -- status and control ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        agents = []
        for a in self.policy.agents:
            cgid = self.agent_cgids.get(a.name, 0)
            sev = self.severed(cgid)
            agents.append({"name": a.name, "mode": a.mode, "default": a.default,
                           "cgroup": str(self.opts.root / a.cgroup), "cgroup_id": cgid,
                           "quarantined": sev is not None, "bytes_severed": sev or 0,
                           "frozen": is_frozen(self.opts.root / a.cgroup)})
        return {"pid": os.getpid(), "started": int(self.started), "generation": self.gen,
                "lockdown": lockdown(), "pins": str(self.opts.pins),
                "policy": self.policy.summary(), "agents": agents,
                "lost": self.loss_counters(), "recorded": self.sent,
                "pending_bytes": self.ring.pending() if self.ring else 0}

    def write_status(self) -> None:
        tmp = self.opts.state / "status.json.tmp"
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, self.opts.state / "status.json")

    def _control(self, sock: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    req = json.loads(conn.makefile("rb").readline())
                    op, name = req.get("op"), req.get("agent", "")
                    if name not in self.agent_cgids:
                        reply: dict[str, Any] = {"error": f"no agent {name!r} in the policy"}
                    elif op == "release":
                        reply = self.release(name)
                    elif op == "quarantine":
                        reply = self.quarantine(name)
                    else:
                        reply = {"error": f"unknown operation {op!r}"}
                except (ValueError, OSError) as exc:
                    reply = {"error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def _pumper(self) -> None:
        while not self.stop.is_set():
            if self.pump() < BATCH:
                self.stop.wait(POLL_S)

    def run(self) -> None:
        """Arm, drop capabilities, then pump events until SIGTERM/SIGINT; SIGHUP reloads."""
        self.arm()
        self.opts.state.mkdir(parents=True, exist_ok=True, mode=0o750)
        ctl_path = self.opts.state / "control.sock"
        ctl_path.unlink(missing_ok=True)
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl.bind(str(ctl_path))
        os.chmod(ctl_path, 0o600)
        ctl.listen(8)
        ctl.settimeout(0.2)
        if self.opts.drop_caps:
            drop_capabilities()
        reload_wanted = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            (reload_wanted if signum == signal.SIGHUP else self.stop).set()
            self.hup.set()

        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        threads = [threading.Thread(target=self._pumper, daemon=True),
                   threading.Thread(target=self._control, args=(ctl,), daemon=True)]
        for t in threads:
            t.start()
        self.write_status()
        print(f"vantio enforcer: armed, generation {self.gen}, pinned in {self.opts.pins}",
              flush=True)
        last_tick = 0.0
        while not self.stop.is_set():
            self.hup.wait(0.2)
            self.hup.clear()
            if reload_wanted.is_set():
                reload_wanted.clear()
                self.reload()
            self.rekey()
            self.freeze_quarantined()
            if time.monotonic() - last_tick >= 0.5:
                last_tick = time.monotonic()
                self.report_gaps()
                self.write_status()
        # A last flush, bounded: what is left stays in the pinned ring for the next daemon.
        timer = threading.Timer(5, self.give_up.set)
        timer.daemon = True
        timer.start()
        for t in threads:
            t.join(10)
        if not threads[0].is_alive():  # never two pumps: each releases the ring as it goes
            self.pump()
        self.report_gaps()
        self.write_status()
        if self.senders is not None:
            self.senders.shutdown()
            for api in self._own_clients:
                api.close()
        ctl.close()
        ctl_path.unlink(missing_ok=True)
        log.info("stopped; programs stay attached and pinned in %s", self.opts.pins)


# -- outside the daemon --------------------------------------------------------------------


def control(state: Path, op: str, agent: str) -> dict[str, Any]:
    """Ask the running daemon to release or quarantine an agent."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(str(state / "control.sock"))
    except OSError as exc:
        s.close()
        raise EnforcerError(f"the enforcer is not running ({state / 'control.sock'}: "
                            f"{exc.strerror})") from None
    with s:
        s.sendall(json.dumps({"op": op, "agent": agent}).encode() + b"\n")
        reply: dict[str, Any] = json.loads(s.makefile("rb").readline() or b"{}")
    if "error" in reply:
        raise EnforcerError(reply["error"])
    return reply


def read_status(state: Path, pins: Path) -> dict[str, Any]:
    try:
        status: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError) as exc:
        raise EnforcerError(f"no enforcer status in {state} ({exc})") from None
    try:
        os.kill(status["pid"], 0)
        status["running"] = True
    except OSError as exc:
        status["running"] = exc.errno == errno.EPERM
    status["pinned"] = sorted(p.name for p in pins.iterdir()) if pins.is_dir() else []
    if (pins / "map_lost").exists() and (pins / "map_recorded").exists():
        with contextlib.suppress(OSError):  # the pinned counters, even with no daemon
            fd = bpfkit.obj_get(pins / "map_lost")
            counts = bpfkit.percpu_u64_sums(fd, len(STAGES) * 2)
            os.close(fd)
            fd = bpfkit.obj_get(pins / "map_recorded")
            daemon = [int.from_bytes(bpfkit.lookup(fd, i.to_bytes(4, "little"), 8) or bytes(8),
                                     "little") for i in range(_DAEMON_LOST, _DAEMON_RECORDED)]
            os.close(fd)
            status["lost_now"] = loss_names(counts, daemon)
    return status


def uninstall(pins: Path, root: Path) -> list[str]:
    """Detach the pinned programs from ``root`` and remove the pins (enforcement ends)."""
    done: list[str] = []
    if not pins.is_dir():
        return done
    cg = os.open(root, os.O_RDONLY | os.O_DIRECTORY) if root.is_dir() else -1
    try:
        for name in PROGRAMS:
            pin = pins / f"prog_{name}"
            if pin.exists():
                if cg >= 0:
                    fd = bpfkit.obj_get(pin)
                    if bpfkit.detach(fd, cg, bpfkit.ATTACH[name]):
                        done.append(f"detached {name}")
                    os.close(fd)
                pin.unlink()
        for p in pins.iterdir():
            p.unlink()
        pins.rmdir()
    finally:
        if cg >= 0:
            os.close(cg)
    return done
