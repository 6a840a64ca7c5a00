"""The policy schema: what is accepted, what is refused (by line), and what it compiles to."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vantio_appliance import policy
from vantio_appliance.policy import PolicyError

EXAMPLE = """\
agents:
  - name: research-agent        # cgroup created under vantio-agents.slice
    mode: enforce               # or monitor
    default: block              # or quarantine
    egress:
      - to: 10.20.0.0/16        # CIDR, address or host name
        ports: [443, 8443]      # optional; all ports when absent
        proto: tcp              # tcp, udp or any (default any)
"""


def no_dns(name: str) -> Sequence[str]:
    raise OSError(f"no resolver in this test ({name})")


def fake_dns(name: str) -> Sequence[str]:
    return {"api.example.com": ["192.0.2.7", "2001:db8::7"]}.get(name, [])


def load(text: str, resolver: policy.Resolver = no_dns) -> policy.Policy:
    return policy.parse(text, "p.yaml", resolver)


def refused(text: str, resolver: policy.Resolver = no_dns) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load(text, resolver)
    return info.value


def test_the_issue_example() -> None:
    p = load(EXAMPLE)
    (a,) = p.agents
    assert (a.name, a.mode, a.default, a.cgroup) == ("research-agent", "enforce", "block",
                                                      "research-agent")
    (r,) = a.rules
    assert r.network == ipaddress.ip_network("10.20.0.0/16")
    assert r.ports == ((443, 443), (8443, 8443)) and r.protos == 1 and r.line == 6
    m = policy.compile_maps(p, 1)
    assert m.agents == ((0, True, False),)
    assert m.v4 == {(0, 16, int(ipaddress.IPv4Address("10.20.0.0"))):
                    ((443, 443, 1), (8443, 8443, 1))}


def test_defaults_and_ranges() -> None:
    p = load("agents:\n  - name: a\n    egress:\n      - to: ::1\n"
             "        ports: [1-1024, '8000 - 8080']\n")
    a = p.agents[0]
    assert (a.mode, a.default) == ("enforce", "block")
    assert a.rules[0].ports == ((1, 1024), (8000, 8080)) and a.rules[0].protos == 3


def test_host_names_are_resolved_and_recorded() -> None:
    p = load("agents:\n  - name: a\n    egress:\n      - to: api.example.com\n", fake_dns)
    assert p.resolutions == {"api.example.com": ("192.0.2.7", "2001:db8::7")}
    assert {str(r.network) for r in p.agents[0].rules} == {"192.0.2.7/32", "2001:db8::7/128"}
    assert all(r.host == "api.example.com" for r in p.agents[0].rules)


@pytest.mark.parametrize(("text", "line", "words"), [
    ("agents:\n  - name: a\n    colour: red\n", 3, "unknown key 'colour'"),
    ("agents:\n  - name: a\n  - name: a\n", 3, "duplicate agent 'a' (first on line 2)"),
    ("agents:\n  - name: a\n    mode: enforce\n    mode: monitor\n", 4, "duplicate key 'mode'"),
    ("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.0/33\n", 4, "not a valid address"),
    ("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.1/8\n", 4, "host bits set"),
    ("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.1\n        ports: [70000]\n", 5,
     "70000 is not a port"),
    ("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.1\n        ports: [0]\n", 5,
     "0 is not a port"),
    ("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.1\n        ports: [9-2]\n", 5,
     "runs backwards"),
    ("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.1\n        proto: sctp\n", 5,
     "'sctp' is not one of tcp, udp, any"),
    ("agents:\n  - name: a\n    mode: audit\n", 3, "'audit' is not one of monitor, enforce"),
    ("agents:\n  - name: a\n    default: allow\n", 3, "not one of block, quarantine"),
    ("agents:\n  - name: A B\n", 2, "not an agent name"),
    ("agents:\n  - name: a\n    egress:\n      - ports: [1]\n", 4, "missing required key 'to'"),
    ("agents:\n  - name: a\n    egress:\n      - to: nowhere.invalid\n", 4, "cannot resolve"),
    ("agents:\n  - name: a\n    cgroup: /elsewhere/a\n", 3, "directly under"),
    ("agents:\n  - name: a\n    unit: a.service\n    cgroup: /vantio-agents.slice/a\n", 4,
     "give one of"),
    ("agents: [\n", 2, "not valid YAML"),
    ("agent: []\n", 1, "unknown key 'agent'"),
])
def test_refused_with_line(text: str, line: int, words: str) -> None:
    err = refused(text)
    assert err.line == line, str(err)
    assert words in str(err), str(err)
    assert str(err).startswith(f"p.yaml:{line}: "), str(err)


def test_too_many_port_ranges_is_refused_at_load() -> None:
    ports = ", ".join(str(p) for p in range(1000, 1040, 2))
    err = refused("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.1\n"
                  f"        ports: [{ports}]\n")
    assert err.line == 4 and "at most 16" in str(err)


def test_covering_prefixes_are_folded_in() -> None:
    p = load("agents:\n  - name: a\n    egress:\n      - to: 10.0.0.0/8\n        ports: [80]\n"
             "      - to: 10.1.2.3\n        ports: [443]\n        proto: udp\n")
    m = policy.compile_maps(p, 0)
    assert m.v4[(0, 32, int(ipaddress.IPv4Address("10.1.2.3")))] == ((80, 80, 3), (443, 443, 2))


def test_unit_and_slice_agents() -> None:
    p = load("agents:\n  - name: a\n    unit: a.service\n  - name: b\n"
             "    slice: vantio-agents-b.slice\n  - name: c\n    cgroup: /vantio-agents.slice/c\n")
    assert [a.cgroup for a in p.agents] == ["a.service", "vantio-agents-b.slice", "c"]


@given(st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 200), st.sampled_from([1, 2, 3])),
                max_size=30))
def test_merge_ranges_keeps_exactly_the_same_ports(items: list[tuple[int, int, int]]) -> None:
    ranges = [(lo, min(lo + w, 65535), bits) for lo, w, bits in items]
    merged = policy.merge_ranges(ranges)

    def allowed(rs: Sequence[tuple[int, int, int]], port: int, bit: int) -> bool:
        return any(lo <= port <= hi and b & bit for lo, hi, b in rs)

    probes = {p for lo, hi, _ in ranges for p in (lo - 1, lo, hi, hi + 1)} | {1, 65535}
    for port in probes:
        for bit in (1, 2):
            assert allowed(ranges, port, bit) == allowed(merged, port, bit)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32), st.integers(1, 65535)),
                min_size=1, max_size=12),
       st.integers(0, 2**32 - 1), st.integers(1, 65535))
def test_longest_match_with_folding_equals_the_rule_list(
        rules: list[tuple[int, int, int]], probe: int, port: int) -> None:
    """What the kernel does (longest prefix, folded ranges) = 'any rule allows it'."""
    lines = ["agents:", "  - name: a", "    egress:"]
    for addr, plen, p in rules:
        net = ipaddress.ip_network((addr, plen), strict=False)
        lines += [f"      - to: {net}", f"        ports: [{p}]", "        proto: tcp"]
    pol = load("\n".join(lines) + "\n")
    m = policy.compile_maps(pol, 0)
    best = None
    for (_, plen, base), ranges in m.v4.items():
        covers = plen == 0 or (probe >> (32 - plen)) == (base >> (32 - plen))
        if covers and (best is None or plen > best[0]):
            best = (plen, ranges)
    kernel = "permit" if best and any(lo <= port <= hi and b & 1 for lo, hi, b in best[1]) \
        else "block"
    assert kernel == policy.decide(pol, "a", str(ipaddress.IPv4Address(probe)), port, "tcp")
