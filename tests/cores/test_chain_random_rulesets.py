"""Hypothesis: random iptables rulesets (matches, marks, jumps, RETURN, statistic branches,
DNAT, MASQUERADE, filter verdicts) and random packets; the chain VM's verdict must be one
of the outcomes the reference evaluator lists for that packet."""

from hypothesis import given
from hypothesis import strategies as st

from kproxy_emu import Dataplane, IptablesOptions, packets
from kproxy_emu.model.cluster import Cluster
from kproxy_emu.model.config import NodeConfig
from kproxy_emu.netfilter.iptables_parse import parse

NODE = NodeConfig.from_node("node-a", ["192.168.0.2"])
SOURCES = ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.2/32", "203.0.113.0/24"]
DESTS = ["172.30.0.1/32", "172.30.0.0/16", "192.168.0.2/32", "8.8.8.0/24"]
PORTS = ["80", "443", "8000:8100", "30000"]
CLIENTS = [
    ("10.1.2.3", "pod"),
    ("10.200.0.1", "pod"),
    ("192.168.0.2", "host"),
    ("203.0.113.5", "external"),
]
TARGET_IPS = ["172.30.0.1", "172.30.5.5", "192.168.0.2", "8.8.8.8"]

bang = st.sampled_from(["", "! "])


@st.composite
def matches(draw):
    parts = []
    if draw(st.booleans()):
        parts.append(f"{draw(bang)}-s {draw(st.sampled_from(SOURCES))}")
    if draw(st.booleans()):
        parts.append(f"{draw(bang)}-d {draw(st.sampled_from(DESTS))}")
    proto = draw(st.sampled_from(["", "tcp", "udp"]))
    if proto:
        parts.append(f"-p {proto}")
        kind = draw(st.sampled_from(["", "port", "multi"]))
        if kind == "port":
            parts.append(f"-m {proto} {draw(bang)}--dport {draw(st.sampled_from(PORTS))}")
        elif kind == "multi":
            ports = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True))
            parts.append(f"-m multiport {draw(bang)}--dports {','.join(ports)}")
    if draw(st.integers(0, 4)) == 0:
        parts.append(f"-m mark {draw(bang)}--mark 0x4000/0x4000")
    if draw(st.integers(0, 4)) == 0:
        parts.append(f"-m addrtype {draw(bang)}--dst-type LOCAL")
    if draw(st.integers(0, 3)) == 0:
        p = draw(st.sampled_from(["0.25000000000", "0.50000000000", "0.33333333349"]))
        parts.append(f"-m statistic --mode random --probability {p}")
    return " ".join(parts)


def _rule(draw, chain, targets):
    target = draw(st.sampled_from(targets))
    m = draw(matches())
    if "DNAT" in target and "-p " not in m:
        m = f"-p tcp {m}"  # iptables-restore refuses a DNAT port without -p
    return f"-A {chain} {m} {target}".replace("  ", " ").rstrip() + "\n"


@st.composite
def rulesets(draw):
    """nat: PREROUTING/OUTPUT reach DNAT chains D0, D1; POSTROUTING reaches P0 (MASQUERADE
    allowed); filter: INPUT/FORWARD/OUTPUT reach F0, F1. Chains only jump forward: no loops."""
    dnat = [f"-j DNAT --to-destination 10.2.0.{k}:8080" for k in range(1, 4)]
    mark = ["-j MARK --or-mark 0x4000", "-j MARK --xor-mark 0x4000"]
    nat, filt = [], []
    for chain, extra in (
        ("D1", []),
        ("D0", ["-j D1"]),
        ("PREROUTING", ["-j D0", "-j D1"]),
        ("OUTPUT", ["-j D0"]),
    ):
        pool = dnat + mark + ["-j RETURN", "-j ACCEPT", ""] + extra
        nat += [_rule(draw, chain, pool) for _ in range(draw(st.integers(0, 5)))]
    for chain, extra in (("P0", []), ("POSTROUTING", ["-j P0"])):
        pool = ["-j MASQUERADE", "-j RETURN", "-j ACCEPT", ""] + mark + extra
        nat += [_rule(draw, chain, pool) for _ in range(draw(st.integers(0, 4)))]
    for chain, extra in (
        ("F1", []),
        ("F0", ["-j F1"]),
        ("INPUT", ["-j F0"]),
        ("FORWARD", ["-j F0", "-j F1"]),
        ("OUTPUT", ["-j F1"]),
    ):
        pool = ["-j ACCEPT", "-j DROP", "-j REJECT", "-j RETURN", ""] + mark + extra
        filt += [_rule(draw, chain, pool) for _ in range(draw(st.integers(0, 4)))]
    policy = draw(st.sampled_from(["ACCEPT", "DROP"]))
    return (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ":POSTROUTING ACCEPT [0:0]\n:D0 - [0:0]\n:D1 - [0:0]\n:P0 - [0:0]\n"
        + "".join(nat)
        + "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n"
        f":FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n:F0 - [0:0]\n:F1 - [0:0]\n"
        + "".join(filt)
        + "COMMIT\n"
    )


packet_lines = st.lists(
    st.tuples(
        st.sampled_from(CLIENTS),
        st.sampled_from(TARGET_IPS),
        st.sampled_from(["tcp", "udp"]),
        st.sampled_from([80, 443, 8050, 30000]),
    ),
    min_size=1,
    max_size=8,
)


@given(dump=rulesets(), flows=packet_lines, seed=st.integers(0, 2**32 - 1))
def test_vm_verdicts_are_reference_outcomes(dump, flows, seed):
    tables = parse(dump)
    vm = Dataplane(
        Cluster(),
        IptablesOptions(tables=tables),
        node_config=NODE,
        cluster_cidr="10.0.0.0/8",
        conntrack=False,
        seed=seed,
    )
    ref = Dataplane(
        Cluster(),
        IptablesOptions(tables=parse(dump)),
        node_config=NODE,
        cluster_cidr="10.0.0.0/8",
        conntrack=False,
    )
    lines = [f"{proto} {src}:40000 -> {dst}:{port}" for (src, _), dst, proto, port in flows]
    batch = packets.from_strings(lines)
    batch["origin"] = [packets.ORIGIN_NAMES.index(origin) for (_, origin), *_ in flows]
    out = vm.process(batch)
    for line, ((_, origin), *_), v in zip(lines, flows, out):
        t = ref.trace(line, origin=origin)
        allowed = set()
        for o in t["outcomes"]:
            verdict = (
                o["verdict"]
                if o["verdict"] in ("DROP", "REJECT")
                else ("DNAT" if o["dnat"] else "ACCEPT")
            )
            allowed.add(
                (
                    verdict,
                    o["dnat"] if verdict == "DNAT" else None,
                    bool(o["masquerade"]) if verdict in ("DNAT", "ACCEPT") else False,
                )
            )
        verdict = packets.Action(int(v["action"])).name
        dnat = packets.dnat_text(v) if verdict == "DNAT" else None
        got = (verdict, dnat, bool(v["snat_ip"]) if verdict in ("DNAT", "ACCEPT") else False)
        assert got in allowed, (line, origin, got, allowed, dump)
