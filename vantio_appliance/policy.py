"""The enforcer's policy: a YAML file, validated, compiled to BPF map entries (pure).

The operator has only the error message to go on, so every error names the
file, the line and the field (``policy.yaml:7: agents[0].egress[1].ports[2]:
70000 is not a port (1-65535)``). The YAML is walked as composed nodes, not
loaded, because only nodes keep their line numbers and only they show
duplicate keys (a loader silently keeps the last one).

Host names are resolved here, once, through an injected resolver (the I/O
edge passes getaddrinfo): the kernel decides on addresses, and the compiled
policy records which address each name stood for at load time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Mode = Literal["monitor", "enforce"]
Default = Literal["block", "quarantine"]
Proto = Literal["tcp", "udp", "any"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Sequence[str]]

SLICE: Final = "vantio-agents.slice"
PARENT_SLICE: Final = "vantio.slice"  # systemd nests SLICE here (the dash in its name)
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
HOST_RE: Final = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")
UNIT_RE: Final = re.compile(r"[A-Za-z0-9:_.\\-]{1,247}\.(service|scope)")
SLICE_RE: Final = re.compile(r"vantio-agents-[A-Za-z0-9:_.\\-]{1,240}\.slice")
PROTO_BITS: Final = {"tcp": 1, "udp": 2, "any": 3}
#: Port ranges one (agent, prefix) entry can hold: the BPF program loops over them.
MAX_RANGES: Final = 16
ALL_PORTS: Final = (0, 65535)


class PolicyError(ValueError):
    """A policy that cannot be used; the message names file, line and field."""

    def __init__(self, source: str, line: int | None, where: str, reason: str) -> None:
        at = f"{source}:{line}" if line is not None else source
        super().__init__(f"{at}: {where + ': ' if where else ''}{reason}")
        self.line, self.where, self.reason = line, where, reason


@dataclass(frozen=True)
class Rule:
    """One egress allow rule: a network, port ranges, protocols (bit 1 tcp, 2 udp)."""

    network: Network
    ports: tuple[tuple[int, int], ...]
    protos: int
    line: int
    host: str | None = None  # the name it was resolved from


@dataclass(frozen=True)
class Agent:
    name: str
    mode: Mode
    default: Default
    cgroup: str  # directory name directly under vantio-agents.slice
    rules: tuple[Rule, ...]
    line: int


@dataclass(frozen=True)
class Policy:
    agents: tuple[Agent, ...]
    source: str
    digest: str  # SHA-256 of the file's bytes
    resolutions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def agent(self, name: str) -> Agent:
        for a in self.agents:
            if a.name == name:
                return a
        raise KeyError(name)

    def summary(self) -> dict[str, object]:
        """What `vantio enforcer status` shows about the loaded policy."""
        return {"source": self.source, "sha256": self.digest,
                "resolutions": {k: list(v) for k, v in self.resolutions.items()},
                "agents": [{"name": a.name, "mode": a.mode, "default": a.default,
                            "cgroup": f"{SLICE}/{a.cgroup}", "rules": len(a.rules)}
                           for a in self.agents]}


# -- parsing -------------------------------------------------------------------------


class _Walk:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Node | None, where: str, reason: str) -> PolicyError:
        line = node.start_mark.line + 1 if node is not None else None
        return PolicyError(self.source, line, where, reason)

    def mapping(self, node: Node, where: str, allowed: Iterable[str],
                required: Iterable[str] = ()) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, where, f"expected a mapping, got {_kind(node)}")
        allowed = set(allowed)
        out: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode) or key.tag != "tag:yaml.org,2002:str":
                raise self.fail(key, where, "keys must be plain strings")
            name = key.value
            if name in out:
                raise self.fail(key, where, f"duplicate key {name!r} (first on line "
                                f"{out[name][0].start_mark.line + 1})")
            if name not in allowed:
                raise self.fail(key, where, f"unknown key {name!r} (allowed: "
                                f"{', '.join(sorted(allowed))})")
            out[name] = (key, value)
        for name in required:
            if name not in out:
                raise self.fail(node, where, f"missing required key {name!r}")
        return out

    def sequence(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, where, f"expected a list, got {_kind(node)}")
        return list(node.value)

    def string(self, node: Node, where: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            raise self.fail(node, where, f"expected a string, got {_kind(node)}")
        return str(node.value)

    def choice(self, node: Node, where: str, choices: Sequence[str]) -> str:
        value = self.string(node, where)
        if value not in choices:
            raise self.fail(node, where, f"{value!r} is not one of {', '.join(choices)}")
        return value


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    return f"{tag} {node.value!r}" if node.value != "" else "nothing"


def _ports(w: _Walk, node: Node, where: str) -> tuple[tuple[int, int], ...]:
    """``[443, 8000-8080]``: ports and inclusive ranges, 1 to 65535."""
    items = w.sequence(node, where)
    if not items:
        raise w.fail(node, where, "an empty list allows nothing; leave ports out for all ports")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, ScalarNode):
            raise w.fail(item, at, f"expected a port or a range, got {_kind(item)}")
        text = str(item.value)
        m = re.fullmatch(r"([0-9]{1,5})(?:\s*-\s*([0-9]{1,5}))?", text)
        if item.tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:str") or not m:
            raise w.fail(item, at, f"{text!r} is not a port (1-65535) or a range like 8000-8080")
        lo = int(m[1])
        hi = int(m[2]) if m[2] else lo
        for p in (lo, hi):
            if not 1 <= p <= 65535:
                raise w.fail(item, at, f"{p} is not a port (1-65535)")
        if hi < lo:
            raise w.fail(item, at, f"range {lo}-{hi} runs backwards")
        out.append((lo, hi))
    return tuple(out)


def _target(w: _Walk, node: Node, where: str, resolver: Resolver,
            resolutions: dict[str, tuple[str, ...]]) -> list[tuple[Network, str | None]]:
    text = w.string(node, where).strip()
    try:
        return [(ipaddress.ip_network(text, strict=True), None)]
    except ValueError as exc:
        if "/" in text or re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*", text):
            raise w.fail(node, where, f"{text!r} is not a valid address or CIDR ({exc})") from None
    if not HOST_RE.fullmatch(text):
        raise w.fail(node, where, f"{text!r} is neither an address, a CIDR nor a host name")
    if text not in resolutions:
        try:
            addrs = tuple(sorted(set(resolver(text))))
        except OSError as exc:
            raise w.fail(node, where, f"cannot resolve host name {text!r}: {exc}") from None
        if not addrs:
            raise w.fail(node, where, f"host name {text!r} resolves to no address")
        resolutions[text] = addrs
    return [(ipaddress.ip_network(a), text) for a in resolutions[text]]


def _cgroup(w: _Walk, fields: dict[str, tuple[Node, Node]], name: str, where: str) -> str:
    given = [k for k in ("unit", "slice", "cgroup") if k in fields]
    if len(given) > 1:
        raise w.fail(fields[given[1]][0], where, f"give one of unit, slice, cgroup (not "
                     f"{' and '.join(given)})")
    if not given:
        return name
    key = given[0]
    node = fields[key][1]
    value = w.string(node, f"{where}.{key}")
    if key == "unit" and not UNIT_RE.fullmatch(value):
        raise w.fail(node, f"{where}.unit", f"{value!r} is not a .service or .scope unit name")
    if key == "slice" and not SLICE_RE.fullmatch(value):
        raise w.fail(node, f"{where}.slice", f"{value!r} is not a slice inside {SLICE} "
                     "(vantio-agents-NAME.slice)")
    if key == "cgroup":
        parts = [p for p in value.split("/") if p]
        if len(parts) != 2 or parts[0] != SLICE or parts[1] in (".", ".."):
            raise w.fail(node, f"{where}.cgroup", f"{value!r} must be a cgroup directly under "
                         f"/{SLICE}/ (e.g. /{SLICE}/my-agent)")
        value = parts[1]
    return value


def parse(text: str | bytes, source: str, resolver: Resolver) -> Policy:
    """Validate a policy file's text and resolve its host names; raises PolicyError."""
    data = text.encode() if isinstance(text, str) else text
    w = _Walk(source)
    try:
        root = yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PolicyError(source, mark.line + 1 if mark else None, "",
                          f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, None, "", f"not valid YAML: {exc}") from None
    if root is None:
        raise PolicyError(source, None, "", "empty policy (it needs an 'agents' list)")
    top = w.mapping(root, "", {"agents"}, {"agents"})
    agents: list[Agent] = []
    resolutions: dict[str, tuple[str, ...]] = {}
    seen: dict[str, int] = {}
    cgroups: dict[str, str] = {}
    for i, node in enumerate(w.sequence(top["agents"][1], "agents")):
        where = f"agents[{i}]"
        f = w.mapping(node, where, {"name", "mode", "default", "egress", "unit", "slice",
                                    "cgroup"}, {"name"})
        name_node = f["name"][1]
        name = w.string(name_node, f"{where}.name")
        if not NAME_RE.fullmatch(name):
            raise w.fail(name_node, f"{where}.name", f"{name!r} is not an agent name "
                         "([a-z0-9][a-z0-9_-]{0,62})")
        line = name_node.start_mark.line + 1
        if name in seen:
            raise w.fail(name_node, f"{where}.name", f"duplicate agent {name!r} (first on "
                         f"line {seen[name]})")
        seen[name] = line
        mode = w.choice(f["mode"][1], f"{where}.mode", ("monitor", "enforce")) \
            if "mode" in f else "enforce"
        default = w.choice(f["default"][1], f"{where}.default", ("block", "quarantine")) \
            if "default" in f else "block"
        cgroup = _cgroup(w, f, name, where)
        if cgroup in cgroups:
            raise w.fail(name_node, where, f"cgroup {cgroup!r} is already agent "
                         f"{cgroups[cgroup]!r}'s")
        cgroups[cgroup] = name
        rules: list[Rule] = []
        egress = w.sequence(f["egress"][1], f"{where}.egress") if "egress" in f else []
        for j, rnode in enumerate(egress):
            rw = f"{where}.egress[{j}]"
            r = w.mapping(rnode, rw, {"to", "ports", "proto"}, {"to"})
            ports = _ports(w, r["ports"][1], f"{rw}.ports") if "ports" in r else (ALL_PORTS,)
            proto = w.choice(r["proto"][1], f"{rw}.proto", ("tcp", "udp", "any")) \
                if "proto" in r else "any"
            rline = rnode.start_mark.line + 1
            for net, host in _target(w, r["to"][1], f"{rw}.to", resolver, resolutions):
                rules.append(Rule(net, ports, PROTO_BITS[proto], rline, host))
        agents.append(Agent(name, mode, default, cgroup, tuple(rules), line))  # type: ignore[arg-type]
    digest = hashlib.sha256(data).hexdigest()
    policy = Policy(tuple(agents), source, digest, resolutions)
    compile_maps(policy, 0)  # a policy the kernel maps cannot hold is refused here
    return policy


# -- compiling to map entries -----------------------------------------------------------

Ranges = tuple[tuple[int, int, int], ...]  # (low port, high port, protocol bits)


@dataclass(frozen=True)
class MapEntries:
    """What the BPF maps hold for one generation of a policy (see bpf/enforcer.c).

    ``agents``: agent index -> (enforce, default is quarantine); ``v4``/``v6``:
    (agent index, prefix length, network address as int) -> port ranges.
    Each prefix's ranges include those of every rule whose network covers it,
    because an LPM trie answers with the longest match only.
    """

    gen: int
    agents: tuple[tuple[int, bool, bool], ...]
    v4: dict[tuple[int, int, int], Ranges]
    v6: dict[tuple[int, int, int], Ranges]


def merge_ranges(ranges: Iterable[tuple[int, int, int]]) -> Ranges:
    """Per protocol bit, merge overlapping and adjacent ranges; then pair tcp/udp equals."""
    by_bit: dict[int, list[tuple[int, int]]] = {1: [], 2: []}
    for lo, hi, bits in ranges:
        for bit in (1, 2):
            if bits & bit:
                by_bit[bit].append((lo, hi))
    merged: dict[int, list[tuple[int, int]]] = {}
    for bit, items in by_bit.items():
        out: list[tuple[int, int]] = []
        for lo, hi in sorted(items):
            if out and lo <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        merged[bit] = out
    both = set(merged[1]) & set(merged[2])
    result = [(lo, hi, 3) for lo, hi in both]
    result += [(lo, hi, bit) for bit in (1, 2) for lo, hi in merged[bit] if (lo, hi) not in both]
    return tuple(sorted(result))


def compile_maps(policy: Policy, gen: int) -> MapEntries:
    """The map entries of ``policy`` for generation ``gen``; PolicyError if they do not fit."""
    agents = []
    tables: dict[int, dict[tuple[int, int, int], Ranges]] = {4: {}, 6: {}}
    for idx, agent in enumerate(policy.agents):
        agents.append((idx, agent.mode == "enforce", agent.default == "quarantine"))
        own: dict[Network, list[Rule]] = {}
        for rule in agent.rules:
            own.setdefault(rule.network, []).append(rule)
        for net, rules in own.items():
            covering: list[tuple[int, int, int]] = []
            for plen in range(net.prefixlen, -1, -1):
                for r in own.get(net.supernet(new_prefix=plen), ()):
                    covering += [(lo, hi, r.protos) for lo, hi in r.ports]
            ranges = merge_ranges(covering)
            if len(ranges) > MAX_RANGES:
                raise PolicyError(policy.source, rules[0].line, f"agent {agent.name}",
                                  f"{net} is allowed on {len(ranges)} port ranges; the "
                                  f"kernel map holds at most {MAX_RANGES} per address")
            tables[net.version][(idx, net.prefixlen, int(net.network_address))] = ranges
    return MapEntries(gen, tuple(agents), tables[4], tables[6])


def decide(policy: Policy, agent: str, address: str, port: int, proto: str) -> str:
    """The action the kernel takes for one connect (a reference model for tests)."""
    a = policy.agent(agent)
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bit = PROTO_BITS[proto]
    for r in a.rules:
        if ip in r.network and r.protos & bit and any(lo <= port <= hi for lo, hi in r.ports):
            return "permit"
    return a.default
