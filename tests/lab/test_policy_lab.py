"""NetworkPolicy in the real kernel (``verify_policies``, ``verify --policies``): the chains
form loaded beside the proxy rules decides every probed connection as the emulator, its
compiled engine and ``allowed()`` do, on the e2e truth tables and on a seeded random
cluster; the lab notices a rendered text that a kernel reads differently.
Needs root, network namespaces, iptables-nft, nft and ipset; skips without them."""

import re

import pytest

from kproxy_emu import synth
from kproxy_emu.model import Cluster
from tests.lab.conftest import skip_or_fail
from tests.policy import refdata
from tests.policy.pipeline_helpers import NODE, with_slices

pytestmark = [
    pytest.mark.lab,
    pytest.mark.usefixtures("no_leftovers"),
]


@pytest.fixture(autouse=True)
def lab_available():
    from kproxy_emu.lab.env import missing_tools, unavailable_reason

    reason = unavailable_reason() or unavailable_reason("nftables")
    if reason is None and missing_tools({"ipset": "ipset"}):
        reason = "ipset not installed"
    skip_or_fail(reason)


def _e2e_steps():
    """One entry per (case, step): its manifests and probes."""
    out = {}
    for ident, _case, manifests, probe in refdata.e2e_steps():
        key = ident.rsplit("-", 1)[0]
        out.setdefault(key, (manifests, []))[1].append(probe)
    return sorted(out.items())


def _random_cluster(seed=7, policies=30):
    return synth.cluster(
        20,
        endpoints=3,
        nodes=2,
        namespaces=4,
        pods=True,
        policies=policies,
        seed=seed,
        type_mix={"ClusterIP": 0.7, "NodePort": 0.2, "LoadBalancer": 0.1},
        protocol_mix={"TCP": 0.8, "UDP": 0.2},
    )


def test_e2e_matrices_in_the_kernel():
    """Every step of the e2e sample: all pod pairs on the step's ports, every Service,
    external and node clients; the kernel's pod-to-pod matrix is upstream's too."""
    from kproxy_emu.lab.policy import verify_policies

    flows = 0
    for key, (manifests, probes) in _e2e_steps():
        ports = [(p["protocol"].lower(), p["port"]) for p in probes if p["protocol"] != "SCTP"]
        if not ports:
            continue
        cluster = Cluster.from_dicts(with_slices(manifests))
        report = verify_policies(
            cluster,
            "iptables",
            node_config=NODE,
            ports=ports,
            pod_pairs=None,
            service_flows=None,
            external_flows=None,
            host_flows=None,
        )
        assert report.ok, f"{key}\n{report.table()}"
        assert report.reference[0] == report.reference[1] == report.flows
        assert report.engine[0] == report.engine[1] == report.flows
        names = {p.pod_ips[0]: f"{p.namespace}/{p.name}" for p in cluster.pods.values()}
        for probe in probes:
            if probe["protocol"] == "SCTP":
                continue
            proto, port = probe["protocol"].lower(), probe["port"]
            for kind, r in report.results:
                p = r.probe
                if kind != "pod-pod" or (p.proto, p.dport) != (proto, port) or p.src == p.dst:
                    continue
                want = probe["expected"][names[p.src]][names[p.dst]]
                assert (r.verdict == "ACCEPT") == want, f"{key} {p.packet()}: kernel {r.verdict}"
        flows += report.flows
    assert flows > 2500  # 2,574 at the time of writing


def test_random_cluster_iptables():
    from kproxy_emu.lab.policy import verify_policies

    cluster = _random_cluster()
    report = verify_policies(cluster, "iptables", seed=7)
    assert report.pods >= 50 and report.policies >= 30
    assert report.ok, report.table()
    assert report.flows == report.reference[1] == report.engine[1] == 3300
    kinds = report.by_kind
    # both verdicts seen for each kind of flow, and masqueraded flows among the allowed
    assert all(kinds[k]["allowed"] and kinds[k]["denied"] for k in kinds)
    assert kinds["pod-service"]["masquerade"] > 0


def test_random_cluster_nftables_cli(tmp_path, capsys):
    from kproxy_emu.cli import main

    path = tmp_path / "cluster.json"
    _random_cluster(seed=11).dump(str(path))
    rc = main(
        [
            "verify",
            "--policies",
            "--mode",
            "nftables",
            "--seed",
            "11",
            "--pod-pairs",
            "400",
            "--service-flows",
            "200",
            str(path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "proxy rules + allowed() agree" in out and out.rstrip().endswith("AGREE")


def test_the_lab_notices_a_text_the_kernel_reads_otherwise(monkeypatch):
    """A full-word accept mark (what the chains form set before the lab) wipes kube-proxy's
    masquerade bit in a real kernel: with masqueradeAll, allowed Service flows lose their
    SNAT and the lab reports it."""
    from kproxy_emu.lab import policy as lp

    real = lp.kernel_policy_text
    monkeypatch.setattr(
        lp,
        "kernel_policy_text",
        lambda text: re.sub(r"(--set-xmark 0x8\w{7})/0xffff0000", r"\1/0xffffffff", real(text)),
    )
    report = lp.verify_policies(
        _random_cluster(),
        "iptables",
        seed=7,
        masquerade_all=True,
        pod_pairs=0,
        service_flows=300,
        external_flows=0,
        host_flows=0,
    )
    assert not report.ok
    assert any(d.kind == "reference" for d in report.disagreements)
