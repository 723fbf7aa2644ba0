"""NetworkPolicy in the packet pipeline (Dataplane(policy_engine=...)): both compiled
forms decide every new flow exactly as ``kproxy_emu.policy.allowed`` (random clusters and
policies), the e2e truth tables hold through traces via each Service, established flows
and replies pass, drops are counted, and nothing changes without a policy engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu import Dataplane
from kproxy_emu.model import Cluster
from kproxy_emu.packets import Action, Origin, empty_packets, ip_to_u32
from kproxy_emu.policy import allowed, compile_policies, service_frontend

from . import refdata
from .pipeline_helpers import NODE, with_slices
from .test_matrix_property import PORTS, PROTOCOLS, clusters

ENGINES = ("chains", "identity")
PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}
OUTSIDE = ("203.0.113.7", "10.0.1.200", "10.0.2.3")  # outside, and inside generated blocks
E2E = list(refdata.e2e_steps())


def make_packets(**fields) -> np.ndarray:
    n = len(fields["src_ip"])
    out = empty_packets(n)
    out["family"] = 4
    for name, value in fields.items():
        out[name] = value
    out["tcp_flags"] = np.where(out["proto"] == 6, 2, 0)  # SYN: a TCP flow's first packet
    return out


def _batch(rows: list[tuple[str, str, int, str]]) -> np.ndarray:
    """One packet per (src, dst, port, protocol), each its own flow (distinct ports)."""
    n = len(rows)
    return make_packets(
        src_ip=np.array([ip_to_u32(r[0]) for r in rows], dtype=np.uint32),
        dst_ip=np.array([ip_to_u32(r[1]) for r in rows], dtype=np.uint32),
        src_port=np.arange(n, dtype=np.uint16) + 20000,
        dst_port=np.array([r[2] for r in rows], dtype=np.uint16),
        proto=np.array([PROTO[r[3]] for r in rows], dtype=np.uint8),
        origin=np.full(n, Origin.POD, dtype=np.uint8),
        ts=np.linspace(1.0, 2.0, n) if n else np.zeros(0),
    )


@settings(max_examples=120, deadline=None)
@given(
    cluster=clusters(),
    port=st.sampled_from(PORTS + (90, 100)),
    protocol=st.sampled_from(PROTOCOLS),
)
def test_both_forms_decide_as_allowed(cluster, port, protocol):
    compiled = compile_policies(cluster.network_policies.values())
    ips = sorted({p.pod_ips[0] for p in cluster.pods.values()}) + list(OUTSIDE)
    rows = [(a, b, port, protocol) for a in ips for b in ips]
    expected = np.array(
        [allowed(cluster, a, b, port, protocol, policies=compiled).allowed for a, b, *_ in rows]
    )
    plain = Dataplane(cluster, "iptables", node_config=NODE).process(_batch(rows))
    assert (plain["action"] != Action.DROP).all()
    for engine in ENGINES:
        dp = Dataplane(cluster, "iptables", node_config=NODE, policy_engine=engine)
        out = dp.process(_batch(rows))
        got = out["action"] != Action.DROP
        bad = [(rows[k], engine) for k in np.flatnonzero(got != expected)]
        assert bad == [], bad
        drops = dp.policy_drops
        assert drops["checked"] == len(rows)
        assert drops["egress"] + drops["ingress"] == int((~expected).sum())


@settings(max_examples=60, deadline=None)
@given(cluster=clusters(), port=st.sampled_from(PORTS), protocol=st.sampled_from(PROTOCOLS))
def test_traces_name_the_decision(cluster, port, protocol):
    """The trace's policy section: the selecting policies are allowed()'s, the rule the
    dataplane matched is one allowed() names, and both forms agree on the rest."""
    compiled = compile_policies(cluster.network_policies.values())
    ips = sorted({p.pod_ips[0] for p in cluster.pods.values()})[:4] + [OUTSIDE[0]]
    dps = [Dataplane(cluster, "iptables", node_config=NODE, policy_engine=e) for e in ENGINES]
    for a in ips:
        for b in ips:
            d = allowed(cluster, a, b, port, protocol, policies=compiled)
            packet = f"{protocol.lower()} {a}:30000 -> {b}:{port}"
            sections = []
            for dp in dps:
                r = dp.trace(packet, "pod", all_rules=False)
                pol = r["policy"]
                assert pol is not None and pol["evaluated"]
                assert pol["allowed"] == d.allowed == (r["verdict"] != "DROP")
                for side, want in (("egress", d.egress), ("ingress", d.ingress)):
                    got = pol[side]
                    if got is None:  # egress denied: ingress not looked at
                        assert side == "ingress" and not d.egress.allowed
                        continue
                    assert got["pod"] == want.pod
                    assert got["policies"] == list(want.policies)
                    assert got["allowed"] == want.allowed
                    if got["allowed_by"] is not None:
                        assert got["allowed_by"] in {str(x) for x in want.allowed_by}
                    else:
                        assert not want.isolated or not want.allowed
                sections.append(
                    {
                        k: ({**v, "allowed_by": None, "text": None} if isinstance(v, dict) else v)
                        for k, v in pol.items()
                    }
                )
                assert dp.policy_drops["checked"] == 0  # traces leave the counters
            sections[0]["engine"] = sections[1]["engine"]
            assert sections[0] == sections[1]


def _e2e_rows(cluster, probe):
    for a, row in probe["expected"].items():
        for b, exp in row.items():
            if a == b:
                continue
            src = cluster.pods[tuple(a.split("/"))]
            dst = cluster.pods[tuple(b.split("/"))]
            svc, sp = service_frontend(cluster, dst, probe["port"], probe["protocol"])
            yield (
                a,
                b,
                exp,
                f"{probe['protocol'].lower()} {src.pod_ips[0]}:40000 -> "
                + (f"{svc.cluster_ip}:{sp.port}"),
                dst,
            )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ident, case, manifests, probe", E2E, ids=[e[0] for e in E2E])
def test_e2e_matrix_through_the_service(engine, ident, case, manifests, probe):
    """The e2e tests probe each pod's Service ClusterIP: kube-proxy DNATs to the pod, then
    the policy decides on the pod's address and port."""
    cluster = Cluster.from_dicts(with_slices(manifests))
    dp = Dataplane(cluster, "iptables", node_config=NODE, policy_engine=engine)
    wrong = []
    for a, b, exp, packet, dst in _e2e_rows(cluster, probe):
        r = dp.trace(packet, "pod", all_rules=False)
        assert r["dnat"] == f"{dst.pod_ips[0]}:{probe['port']}"
        if (r["verdict"] != "DROP") != exp:
            wrong.append((a, b, exp, r["policy"]))
    assert wrong == []


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs", "ebpf"])
@pytest.mark.parametrize("engine", ENGINES)
def test_every_mode_runs_the_stage(mode, engine):
    """The stage is the pipeline's, not a mode's: an e2e case's matrix holds through each
    mode's Service handling."""
    manifests, probe = next(e[2:] for e in E2E if "006" in e[0])
    cluster = Cluster.from_dicts(with_slices(manifests))
    dp = Dataplane(cluster, mode, node_config=NODE, policy_engine=engine)
    for a, b, exp, packet, _ in _e2e_rows(cluster, probe):
        got = dp.trace(packet, "pod")["verdict"] != "DROP"
        assert got == exp, (mode, a, b)


@pytest.mark.parametrize("engine", ENGINES)
def test_userspace_mode_the_proxy_connects_from_the_node(engine):
    """The userspace proxy opens the endpoint connection itself, from the node: the
    destination's ingress policy sees the node's address, so a rule allowing only pods of
    namespace y denies y/a's connection through the Service (as on real clusters)."""
    manifests, _probe = next(e[2:] for e in E2E if "006" in e[0])
    cluster = Cluster.from_dicts(with_slices(manifests))
    dp = Dataplane(cluster, "userspace", node_config=NODE, policy_engine=engine)
    assert dp.trace("tcp 10.244.1.10:40000 -> 10.96.0.10:80", "pod")["verdict"] == "DROP"
    iptables = Dataplane(cluster, "iptables", node_config=NODE, policy_engine=engine)
    assert iptables.trace("tcp 10.244.1.10:40000 -> 10.96.0.10:80", "pod")["verdict"] == "DNAT"


def test_established_flows_and_replies_pass():
    """Policy sees a flow's first packet only: a reply (which ingress policy of the
    client would deny as a new flow) and the flow's later packets pass; a denied flow's
    retries are denied again (no conntrack entry)."""
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": n, "namespace": "x", "labels": {"app": n}},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": ip},
        }
        for n, ip in (("client", "10.0.0.1"), ("server", "10.0.0.2"))
    ]
    docs.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-in", "namespace": "x"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
            },
        }
    )
    cluster = Cluster.from_dicts(docs)
    for engine in ENGINES:
        dp = Dataplane(cluster, "iptables", node_config=NODE, policy_engine=engine)
        rows = [
            ("10.0.0.1", 5000, "10.0.0.2", 80),  # new: allowed
            ("10.0.0.2", 80, "10.0.0.1", 5000),  # its reply: passes
            ("10.0.0.1", 5000, "10.0.0.2", 80),  # established
            ("10.0.0.2", 6000, "10.0.0.1", 80),  # server -> client, new: denied
            ("10.0.0.2", 6000, "10.0.0.1", 80),  # again: still new, denied
        ]
        batch = make_packets(
            src_ip=np.array([ip_to_u32(r[0]) for r in rows], dtype=np.uint32),
            src_port=np.array([r[1] for r in rows], dtype=np.uint16),
            dst_ip=np.array([ip_to_u32(r[2]) for r in rows], dtype=np.uint32),
            dst_port=np.array([r[3] for r in rows], dtype=np.uint16),
            proto=np.full(len(rows), 6, dtype=np.uint8),
            origin=np.full(len(rows), Origin.POD, dtype=np.uint8),
            ts=np.arange(len(rows), dtype=np.float64) + 1.0,
        )
        out = dp.process(batch)
        assert (out["action"] == Action.DROP).tolist() == [False, False, False, True, True]
        assert out["ct_hit"].tolist() == [False, True, True, False, False]
        assert dp.policy_drops == {"checked": 3, "egress": 0, "ingress": 2}
        r = dp.trace("tcp 10.0.0.2:80 -> 10.0.0.1:5000", "pod")
        assert r["conntrack"] == "reply" and r["policy"]["evaluated"] is False
        dp.reset_state()
        assert dp.policy_drops == {"checked": 0, "egress": 0, "ingress": 0}


def test_without_a_policy_engine_nothing_changes():
    manifests = E2E[0][2]
    cluster = Cluster.from_dicts(with_slices(manifests))
    plain = Dataplane(cluster, "iptables", node_config=NODE)
    assert plain.policy is None and plain.policy_drops["checked"] == 0
    rows = [(p.pod_ips[0], "10.96.0.10", 80, "TCP") for p in cluster.pods.values()]
    out = plain.process(_batch(rows))
    assert (out["action"] == Action.DNAT).all()
    r = plain.trace("tcp 10.244.1.10:40000 -> 10.96.0.10:80", "pod")
    assert r["policy"] is None
    assert not any(s["table"] == "policy" for s in r["steps"])


def test_update_rebuilds_the_stage():
    manifests = next(e[2] for e in E2E if "001" in e[0])
    cluster = Cluster.from_dicts(with_slices(manifests))
    for engine in ENGINES:
        dp = Dataplane(cluster, "iptables", node_config=NODE, policy_engine=engine)
        packet = "tcp 10.244.1.10:40000 -> 10.96.0.10:80"
        denied = dp.trace(packet, "pod")["verdict"] == "DROP"
        bare = Cluster.from_dicts(
            [d for d in with_slices(manifests) if d["kind"] != "NetworkPolicy"]
        )
        dp.update(bare)
        assert dp.trace(packet, "pod")["verdict"] == "DNAT"
        assert denied


def test_render_policy():
    manifests, _probe = next(e[2:] for e in E2E if "006" in e[0])
    cluster = Cluster.from_dicts(with_slices(manifests))
    text = Dataplane(cluster, "iptables", node_config=NODE, policy_engine="chains").render_policy()
    assert "*filter" in text and "COMMIT" in text and "create KUBE-PEER-" in text
    text = Dataplane(
        cluster, "iptables", node_config=NODE, policy_engine="identity"
    ).render_policy()
    assert "# identities" in text and "reserved:world" in text
    with pytest.raises(Exception, match="no policy stage"):
        Dataplane(cluster, "iptables", node_config=NODE).render_policy()


def test_cli_trace_and_render(cli, tmp_path):
    import json

    manifests = next(e[2] for e in E2E if "006" in e[0])
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]},
    }
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"kind": "List", "apiVersion": "v1", "items": [*with_slices(manifests), node]})
    )
    packet = "tcp 10.244.2.10:4000 -> 10.96.0.10:80"
    for engine in ENGINES:
        r = cli(
            "trace", path, "--packet", packet, "--from", "pod", "--policy-engine", engine, "--json"
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        doc = doc[0] if isinstance(doc, list) else doc
        assert doc["verdict"] == "DROP" and doc["policy"]["ingress"]["allowed"] is False
        r = cli("trace", path, "--packet", packet, "--from", "pod", "--policy-engine", engine)
        assert f"policy ({engine}) ingress: x/a: isolated by" in r.stdout
    r = cli("render", path, "--policy-engine", "chains")
    assert r.returncode == 0 and "-A KUBE-NWPLCY-INGRESS" in r.stdout
