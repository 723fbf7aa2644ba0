"""The userspace mode end to end: Dataplane(mode="userspace"), process, trace, render,
the CLI. The proxy hop (dataplane/userspace_backend.py) after the portal rules."""

from __future__ import annotations

import numpy as np
import pytest

from kproxy_emu import Dataplane, packets
from kproxy_emu.dataplane import MODES
from kproxy_emu.dataplane.backend import UserspaceOptions
from kproxy_emu.errors import InputError
from kproxy_emu.model import Cluster
from kproxy_emu.packets import Action, ip_to_u32
from tests.modes.test_userspace_proxier import A_EPS, B_EPS, NODE, A, B, C, port, slice_, svc

NODE_IP = ip_to_u32("192.168.0.2")
C_EPS = slice_("c", ["10.180.0.5", "10.180.0.6"], [("", 53, "UDP")])


def dataplane(*objects, seed=1, **kw):
    objects = objects or (A, A_EPS, B, B_EPS, C, C_EPS)
    return Dataplane(
        Cluster.from_dicts(list(objects)), "userspace", node_config=NODE, seed=seed, **kw
    )


def one(dp, text, origin, ts):
    out = dp.process(packets.parse(text, origin=origin, ts=ts))
    v = out[0]
    ep = int(v["endpoint"])
    return v, (dp.endpoints[ep] if ep >= 0 else None)


def test_registered():
    assert "userspace" in MODES
    dp = dataplane()
    assert dp.mode == "userspace"
    assert dp.render() == dp.syncs[-1].text
    assert dp.render(format="save").startswith("*filter")
    with pytest.raises(InputError, match="--format"):
        dp.render(format="ipvsadm-save")
    with pytest.raises(InputError, match="port_range"):
        UserspaceOptions(port_range="9-1")
    with pytest.raises(InputError, match="udp_idle_timeout"):
        UserspaceOptions(udp_idle_timeout=0)


def test_new_connections_round_robin_from_the_node():
    dp = dataplane()
    lb = dp.backend.proxier.load_balancer
    order = lb.endpoints("ns1/a:p80")
    got = []
    for i in range(4):
        v, ep = one(dp, f"tcp 10.244.1.{i + 1}:4000 -> 172.30.0.41:80", "pod", 1.0 + i)
        assert v["action"] == Action.DNAT and not v["ct_hit"]
        # the endpoint sees the node's address: the second connection's source
        assert v["snat_ip"] == NODE_IP and v["snat_port"] % 2 == 0
        assert f"{packets.u32_to_ip(int(v['dnat_ip']))}:{int(v['dnat_port'])}" == ep
        got.append(ep)
    assert got == [order[0], order[1], order[0], order[1]]


def test_known_connection_keeps_its_endpoint():
    dp = dataplane()
    proxy_port = dp.backend.proxier.services["ns1/a:p80"].proxy_port
    v1, ep1 = one(dp, "tcp 10.244.1.1:4000 -> 172.30.0.41:80", "pod", 1.0)
    # the proxy socket answers (REDIRECT's reply, un-NATed by conntrack)
    one(dp, f"tcp 192.168.0.2:{proxy_port} -> 10.244.1.1:4000 flags=SA", "host", 1.1)
    v2, ep2 = one(dp, "tcp 10.244.1.1:4000 -> 172.30.0.41:80 flags=A", "pod", 1.2)
    assert v2["ct_hit"] and ep2 == ep1 and v2["snat_port"] == v1["snat_port"]
    _, ep3 = one(dp, "tcp 10.244.1.2:4000 -> 172.30.0.41:80", "pod", 1.3)
    assert ep3 != ep1  # the round robin moved on once, for the new connection
    stats = dp.backend.proxy_stats
    assert stats["connections"] == 2 and stats["relayed"] == 3 and stats["no_endpoint"] == 0
    assert stats["relay_rules"] > 0
    dp.reset_state()
    assert dp.backend.proxy_stats["connections"] == 0


def test_udp_sessions_and_idle_timeout():
    dp = dataplane()
    _, first = one(dp, "udp 10.244.1.9:5353 -> 172.30.0.43:53", "pod", 1.0)
    _, again = one(dp, "udp 10.244.1.9:5353 -> 172.30.0.43:53", "pod", 1.2)
    assert again == first  # within the 250 ms idle timeout: the same session
    _, later = one(dp, "udp 10.244.1.9:5353 -> 172.30.0.43:53", "pod", 2.0)
    assert later != first  # the session expired: the next endpoint of the round robin
    dp2 = Dataplane(
        Cluster.from_dicts([C, C_EPS]),
        UserspaceOptions(udp_idle_timeout=5.0),
        node_config=NODE,
        seed=1,
    )
    _, a = one(dp2, "udp 10.244.1.9:5353 -> 172.30.0.43:53", "pod", 1.0)
    _, b = one(dp2, "udp 10.244.1.9:5353 -> 172.30.0.43:53", "pod", 2.0)
    assert a == b


def test_client_ip_affinity():
    sticky = svc("s", "172.30.0.60", [port("p", 80)], aff=60)
    eps = slice_("s", ["10.180.1.1", "10.180.1.2", "10.180.1.3"], [("p", 80, "TCP")])
    dp = dataplane(sticky, eps)
    eps_seen = {
        one(dp, f"tcp 10.244.2.1:{4000 + i} -> 172.30.0.60:80", "pod", 1.0 + i)[1] for i in range(5)
    }
    assert len(eps_seen) == 1
    t = dp.trace("tcp 10.244.2.1:4999 -> 172.30.0.60:80", origin="pod", time=9.0)
    assert any("ClientIP affinity" in s["text"] for s in t["steps"])


def test_node_port_and_host_traffic():
    dp = dataplane()
    lb = dp.backend.proxier.load_balancer
    v, ep = one(dp, "tcp 203.0.113.5:5000 -> 192.168.0.2:3001", "external", 1.0)
    assert ep == lb.endpoints("ns1/b:p80")[0] and v["snat_ip"] == NODE_IP
    v, ep = one(dp, "tcp 192.168.0.2:5000 -> 172.30.0.42:80", "host", 2.0)
    assert ep == "10.180.0.3:80"
    t = dp.trace("tcp 192.168.0.2:5001 -> 172.30.0.42:80", origin="host", time=3.0)
    assert any(s["chain"] == "KUBE-PORTALS-HOST" and s["matched"] for s in t["steps"])


def test_no_endpoints_is_accepted_by_the_proxy():
    lonely = svc("l", "172.30.0.61", [port("p", 80)])
    dp = dataplane(lonely)
    v, ep = one(dp, "tcp 10.244.1.1:4000 -> 172.30.0.61:80", "pod", 1.0)
    assert v["action"] == Action.ACCEPT and ep is None
    t = dp.trace("tcp 10.244.1.1:4001 -> 172.30.0.61:80", origin="pod", time=2.0)
    assert t["verdict"] == "ACCEPT" and "no endpoints" in t["steps"][-1]["text"]


def test_trace_predicts_process_and_leaves_state():
    dp = dataplane()
    for i in range(6):
        text = f"tcp 10.244.3.{i}:4000 -> 172.30.0.41:80"
        t1 = dp.trace(text, origin="pod", time=1.0 + i)
        t2 = dp.trace(text, origin="pod", time=1.0 + i)
        assert t1 == t2  # an uncommitted trace changes nothing
        v, ep = one(dp, text, "pod", 1.0 + i)
        assert t1["endpoint"] == ep
        assert t1["cost"]["rules_evaluated"] == int(v["rules"])
        assert t1["candidates"] == [
            {"endpoint": ep, "probability": 1.0, "fraction": "1", "masquerade": True}
        ]
    committed = dp.trace(
        "tcp 10.244.4.1:4000 -> 172.30.0.41:80", origin="pod", time=10, commit=True
    )
    v, ep = one(dp, "tcp 10.244.4.2:4000 -> 172.30.0.41:80", "pod", 11)
    assert ep != committed["endpoint"]


def test_same_seed_same_verdicts_and_reset():
    batch = np.concatenate(
        [
            packets.parse(f"tcp 10.244.5.{i}:4000 -> 172.30.0.41:80", origin="pod", ts=float(i))
            for i in range(8)
        ]
    )
    a, b = dataplane(seed=3), dataplane(seed=3)
    ra, rb = a.process(batch), b.process(batch)
    assert (ra == rb).all()
    a.reset_state()
    assert (a.process(batch) == ra).all()


def test_update_restarts_changed_ports():
    dp = dataplane(A, A_EPS)
    before = dp.backend.proxier.services["ns1/a:p80"].proxy_port
    a2 = svc("a", "172.30.0.41", [port("p80", 8080)])
    result = dp.update(Cluster.from_dicts([a2, A_EPS]))
    assert not result.full
    after = dp.backend.proxier.services["ns1/a:p80"].proxy_port
    assert after != before and f"--to-ports {after}" in dp.render()
    _, ep = one(dp, "tcp 10.244.1.1:4000 -> 172.30.0.41:8080", "pod", 1.0)
    assert ep in ("10.180.0.1:80", "10.180.0.2:80")


def test_cli_render_and_trace(cli, tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump_all([A, A_EPS, B, B_EPS]))
    node = tmp_path / "node.yaml"
    node.write_text(yaml.safe_dump({"name": "node1", "ips": ["192.168.0.2"]}))
    proc = cli("render", path, "--mode", "userspace", "--node-config", node)
    assert proc.returncode == 0, proc.stderr
    assert "-A KUBE-PORTALS-CONTAINER -m comment --comment ns1/a:p80" in proc.stdout
    proc = cli(
        "trace",
        path,
        "--mode",
        "userspace",
        "--node-config",
        node,
        "--packet",
        "tcp 10.244.1.1:4000 -> 172.30.0.41:80 from=pod",
    )
    assert proc.returncode == 0, proc.stderr
    assert "=> userspace proxy ns1/a:p80 on 192.168.0.2:" in proc.stdout
    assert "=> userspace the proxy's packet 192.168.0.2:" in proc.stdout
    proc = cli("render", path, "--mode", "userspace", "--node-ip", "fd00::2")
    assert proc.returncode == 2 and "IPv4" in proc.stderr
    proc = cli(
        "render",
        path,
        "--mode",
        "userspace",
        "--node-config",
        node,
        "--proxy-port-range",
        "40000+9",
    )
    assert proc.returncode == 0 and "--to-ports 400" in proc.stdout
    assert "--to-ports 3" not in proc.stdout and "--to-ports 5" not in proc.stdout
    proc = cli("render", path, "--mode", "userspace", "--proxy-port-range", "9-1")
    assert proc.returncode == 2 and "--proxy-port-range" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("render", path, "--mode", "iptables", "--proxy-port-range", "1-9")
    assert proc.returncode == 2 and "applies to userspace mode only" in proc.stderr


# ---- trace == process on random sequences ------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

STICKY = svc("s", "172.30.0.60", [port("p", 80)], aff=3)
STICKY_EPS = slice_("s", ["10.180.1.1", "10.180.1.2", "10.180.1.3"], [("p", 80, "TCP")])
LONELY = svc("l", "172.30.0.61", [port("p", 80)])
TARGETS = [
    ("tcp", "172.30.0.41:80"),
    ("tcp", "172.30.0.42:80"),
    ("tcp", "192.168.99.11:80"),
    ("tcp", "1.2.3.4:80"),
    ("tcp", "192.168.0.2:3001"),
    ("udp", "172.30.0.43:53"),
    ("tcp", "172.30.0.60:80"),
    ("tcp", "172.30.0.61:80"),
    ("tcp", "10.180.0.1:80"),
]
SOURCES = {"pod": "10.244.1.{}", "external": "203.0.113.{}", "host": "192.168.0.{}"}

packet_steps = st.lists(
    st.tuples(
        st.sampled_from(range(len(TARGETS))),
        st.sampled_from(sorted(SOURCES)),
        st.integers(1, 3),  # client address
        st.integers(4000, 4002),  # client port
        st.sampled_from(["S", "A"]),
        st.sampled_from([0.0, 0.1, 0.3, 5.0]),  # time since the packet before
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None)
@given(steps=packet_steps, seed=st.integers(0, 3))
def test_trace_equals_process_random_sequences(steps, seed):
    dp = dataplane(A, A_EPS, B, B_EPS, C, C_EPS, STICKY, STICKY_EPS, LONELY, seed=seed)
    ts = 1.0
    for target, origin, client, cport, flags, dt in steps:
        ts += dt
        proto, dst = TARGETS[target]
        src = SOURCES[origin].format(client + (1 if origin == "host" else 0))
        text = f"{proto} {src}:{cport} -> {dst}" + (f" flags={flags}" if proto == "tcp" else "")
        t = dp.trace(text, origin=origin, time=ts)
        v, ep = one(dp, text, origin, ts)
        assert t["verdict"] == Action(int(v["action"])).name, text
        assert t["endpoint"] == ep, text
        assert t["dnat"] == packets.dnat_text(v), text
        assert t["cost"]["rules_evaluated"] == int(v["rules"]), text
        assert t["masquerade"] == (bool(v["snat_ip"]) and t["conntrack"] != "reply"), text
        if v["action"] == Action.DNAT and t["conntrack"] != "reply":
            # whatever reached an endpoint came from the node (the source-IP loss); a
            # DROP can still name the proxy: one client ip:port sent to two addresses
            # REDIRECTed to one proxy port is a conntrack clash, as in the kernel
            assert v["snat_ip"] == NODE_IP, text
            lb = dp.backend.proxier.load_balancer
            assert t["endpoint"] in {e for n in lb.services() for e in lb.endpoints(n)}, text


# ---- against iptables mode: the same service wherever the modes agree -------------------

from kproxy_emu import synth  # noqa: E402

PROTO_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP"}


def _frontends(dp):
    out = {}
    local = [ip for ip in dp.options.node.local_ips if ":" not in ip]
    for sp in dp.view.service_ports:
        for ip in [sp.cluster_ip, *sp.external_ips, *sp.lb_ips]:
            out[(ip, sp.port, sp.protocol)] = (sp, ip in sp.external_ips)
        if sp.node_port:
            for ip in local:
                out[(ip, sp.node_port, sp.protocol)] = (sp, False)
    return out


@settings(max_examples=8, deadline=None)
@given(cluster_seed=st.integers(0, 10_000), traffic_seed=st.integers(0, 10_000))
def test_against_iptables_mode(cluster_seed, traffic_seed):
    """New flows of synthetic traffic through both modes. Where iptables mode reaches an
    endpoint, userspace mode reaches one of the same service port (another one: the
    balancer is not iptables' random pick), always from the node's address. Each way they
    differ is a known difference of the userspace proxier, asserted as such."""
    cluster = synth.cluster(40, seed=cluster_seed)
    ipt = Dataplane(cluster, "iptables", seed=1, cluster_cidr="10.0.0.0/8")
    us = Dataplane(cluster, "userspace", seed=1, cluster_cidr="10.0.0.0/8")
    batch = packets.synth(ipt, 200, seed=traffic_seed, new_flow_share=1.0)
    ri, ru = ipt.process(batch), us.process(batch)
    fronts = _frontends(us)
    node_ip = ip_to_u32(us.options.node.primary_ip)
    for p, a, b in zip(batch, ri, ru):
        key = (
            packets.u32_to_ip(int(p["dst_ip"])),
            int(p["dst_port"]),
            PROTO_NAMES[int(p["proto"])],
        )
        sp, external_ip = fronts.get(key, (None, False))
        ready = {e.string for e in sp.endpoints if e.ready} if sp else set()
        ia, ua = Action(int(a["action"])), Action(int(b["action"]))
        if ua == Action.DNAT:
            assert us.endpoints[int(b["endpoint"])] in ready, key
            assert b["snat_ip"] == node_ip, key
        if sp is None:
            assert ia == ua, key  # not a service: neither mode touches it
        elif ia == Action.DNAT and ua != Action.DNAT:
            # SCTP has no userspace proxy; a pod's or the node's packet to a (non-local)
            # externalIP misses the portal rules (from containers: ! --physdev-is-in or
            # --dst-type LOCAL; from the host: --dst-type LOCAL); iptables' terminating
            # fallback has no userspace twin
            assert (
                sp.protocol == "SCTP"
                or (external_ip and int(p["origin"]) != packets.Origin.EXTERNAL)
                or not ready
            ), key
        elif ia in (Action.DROP, Action.REJECT) and ua == Action.DNAT:
            # policies the userspace proxier never knew: traffic policies Local,
            # loadBalancerSourceRanges
            assert sp.external_policy_local or sp.internal_policy_local or sp.source_ranges, key
        elif ia == Action.REJECT:
            # no endpoints: iptables rejects, the proxy accepts and closes
            assert ua == Action.ACCEPT and int(b["endpoint"]) == -1 and not ready, key


_HASH_SEED_SCRIPT = """
import dataclasses, hashlib
from kproxy_emu import Dataplane, packets, synth
cl = synth.cluster(30, seed=5)
dp = Dataplane(cl, "userspace", seed=2, cluster_cidr="10.0.0.0/8")
new = dataclasses.replace(cl, services=dict(cl.services), endpoint_slices=dict(cl.endpoint_slices))
for key in list(new.endpoint_slices)[20:]:
    sl = new.endpoint_slices[key]
    if len(sl.endpoints) > 1:
        new.endpoint_slices[key] = dataclasses.replace(sl, endpoints=sl.endpoints[:-1])
dp.update(new)
out = dp.process(packets.synth(dp, 300, seed=1, new_flow_share=1.0))
lb = dp.backend.proxier.load_balancer
state = repr([(s, lb.endpoints(s)) for s in lb.services()]) + repr(dp.endpoints)
h = hashlib.sha256(dp.render().encode() + out.tobytes() + state.encode())
print(h.hexdigest())
"""


def test_same_seed_same_result_whatever_the_hash_seed():
    """Determinism across processes: no order of a set or dict of strings (whose hash
    changes with PYTHONHASHSEED) reaches the rules, the ports or the balancer."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    digests = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        proc = subprocess.run(
            [sys.executable, "-c", _HASH_SEED_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            check=True,
        )
        digests.add(proc.stdout.strip())
    assert len(digests) == 1
