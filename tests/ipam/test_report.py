"""The ipam report and CLI: hand-made clusters (examples/ipam), synthetic ones, bad input."""

import json
from pathlib import Path

import pytest

from kproxy_emu import synth
from kproxy_emu.ipam.report import report
from kproxy_emu.model import Cluster

DATA = Path(__file__).resolve().parents[2] / "examples" / "ipam"
CLEAN, BROKEN = str(DATA / "clean.yaml"), str(DATA / "broken.yaml")


def _warnings(rep, needle):
    return [w for w in rep.warnings if needle in w]


def test_clean_cluster_has_no_warnings():
    rep = report(Cluster.from_files(CLEAN), cluster_cidrs=["10.244.0.0/16"])
    assert rep.warnings == []
    assert rep.pod[0]["capacity"] == 256 and rep.pod[0]["allocated"] == 2
    assert rep.assigned == {"node-c": ["10.244.2.0/24"]}
    assert rep.nodes_left == 253
    svc = rep.services[0]
    assert (svc["capacity"], svc["allocated"]) == (65534, 3)
    assert svc["static"] == {"first": "10.96.0.1", "last": "10.96.1.0", "size": 256, "allocated": 2}
    assert svc["dynamic"]["allocated"] == 1
    assert rep.services_left == {"IPv4": 65531}
    sources = {(r.kind, str(r.cidr)): r.source for r in rep.ranges}
    assert sources[("service", "10.96.0.0/16")] == "ServiceCIDR kubernetes"
    assert sources[("pod", "10.244.0.0/16")] == "--cluster-cidr"
    assert sources[("node", "192.168.10.0/24")].startswith("inferred")


def test_inferred_cluster_cidr_and_mask():
    rep = report(Cluster.from_files(CLEAN))
    assert [str(r.cidr) for r in rep.ranges if r.kind == "pod"] == ["10.244.0.0/23"]
    assert rep.node_mask_sizes["10.244.0.0/23"] == (24, "inferred: the nodes' podCIDRs")
    # the covering /23 has room for the two nodes only: node-c would get none
    assert rep.assigned == {"node-c": ["none (CIDRNotAvailable)"]}
    assert _warnings(rep, "pod range 10.244.0.0/23 is exhausted")


def test_broken_cluster_conflicts_and_overlaps():
    rep = report(
        Cluster.from_files(BROKEN), cluster_cidrs=["10.244.0.0/16"], externals=["192.168.0.0/16"]
    )
    expect = [
        "Node node-a: podCIDR 10.244.0.0/23 is not a /24 node CIDR",
        "Node node-c: podCIDR 10.99.0.0/24 is outside the cluster CIDR 10.244.0.0/16",
        "Nodes node-a and node-b have overlapping podCIDRs 10.244.0.0/23 and 10.244.1.0/24",
        "Services shop/api and shop/api-copy have the same clusterIP 10.244.130.5",
        "Service shop/stray: clusterIP 172.20.0.9 is outside every service range",
        "pod range 10.244.0.0/16 (--cluster-cidr) overlaps service range 10.244.128.0/20",
        "pod range 10.244.0.0/16 (--cluster-cidr) overlaps node network 10.244.1.0/24",
        "overlaps external range 192.168.0.0/16 (--external)",
        "Node node-a: InternalIP 10.244.1.77 is inside Node node-b's podCIDR 10.244.1.0/24",
    ]
    for needle in expect:
        assert _warnings(rep, needle), needle
    # filterOutServiceRange: the /20 service range keeps 16 /24s out of the pod range
    assert rep.pod[0]["service_filtered"] == 16
    assert "10.244.128.1" in rep.reserved  # default/kubernetes, absent from the files


def test_node_podcidr_in_service_range():
    objs = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.96.3.0/24"]},
        }
    ]
    rep = report(
        Cluster.from_dicts(objs), cluster_cidrs=["10.96.0.0/16"], service_cidrs=["10.96.0.0/20"]
    )
    assert _warnings(rep, "Node n1: podCIDR 10.96.3.0/24 overlaps service range 10.96.0.0/20")


def test_dual_stack_and_ipv6():
    objs = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s", "namespace": "d"},
            "spec": {
                "clusterIP": "10.96.0.20",
                "clusterIPs": ["10.96.0.20", "fd00:10:96::20"],
                "ipFamilies": ["IPv4", "IPv6"],
                "ports": [{"port": 80}],
            },
        },
    ]
    rep = report(
        Cluster.from_dicts(objs),
        cluster_cidrs=["10.244.0.0/16", "fd00:10:244::/56"],
        service_cidrs=["10.96.0.0/16", "fd00:10:96::/108"],
    )
    assert rep.warnings == []
    assert [p["capacity"] for p in rep.pod] == [256, 256]
    assert rep.nodes_left == 255
    assert rep.services_left == {"IPv4": 65532, "IPv6": 2**20 - 3}


def test_synthetic_cluster_exhaustion_and_overlap():
    c = synth.cluster(300, endpoints=1, nodes=20, seed=2, service_cidr="10.0.0.0/23")
    rep = report(c, externals=["10.0.0.0/8"])
    # the service range /23 (510 addresses) holds 300 sequential ClusterIPs, minus the
    # ExternalName and headless services, and overlaps the synthetic pod range 10.0.0.0/8;
    # the pod blocks start past it (filterOutServiceRange)
    assert rep.services[0]["capacity"] == 510
    assert _warnings(rep, "overlaps service range 10.0.0.0/23")
    assert _warnings(rep, "overlaps external range 10.0.0.0/8")
    full = synth.cluster(253, endpoints=1, nodes=3, seed=2, service_cidr="172.16.0.0/24")
    rep = report(full)
    assert _warnings(rep, "IPv4 service ranges are") and rep.services_left["IPv4"] < 25


def test_synthetic_apiserver_allocation_report():
    c = synth.cluster(
        400,
        endpoints=1,
        nodes=30,
        seed=5,
        ip_allocation="apiserver",
        node_cidr_mask_size=24,
        service_cidr="172.16.0.0/22",
    )
    rep = report(c, cluster_cidrs=["10.0.0.0/8"])
    assert rep.warnings == []
    assert rep.pod[0]["capacity"] == 65536 and rep.pod[0]["allocated"] == 30
    s = rep.services[0]
    assert s["static"]["allocated"] == 1  # only default/kubernetes in the static band
    assert rep.reserved == ["172.16.0.1"]


def test_cli_text_and_warnings(cli):
    run = cli("ipam", BROKEN, "--cluster-cidr", "10.244.0.0/16", "--external", "192.168.0.0/16")
    assert run.returncode == 0
    assert "pod      10.244.0.0/16" in run.stdout
    assert "10.244.0.0/16 in /24: 18/256 node CIDRs used (7.0%), 238 free" in run.stdout
    lines = run.stderr.splitlines()
    assert len(lines) == 10 and all(line.startswith("kproxy-emu: warning: ") for line in lines)


def test_cli_json(cli):
    run = cli("ipam", CLEAN, "--cluster-cidr", "10.244.0.0/16", "--json")
    assert run.returncode == 0 and run.stderr == ""
    doc = json.loads(run.stdout)
    assert doc["nodes_left"] == 253 and doc["services_left"] == {"IPv4": 65531}
    assert doc["ranges"][0] == {"kind": "pod", "cidr": "10.244.0.0/16", "source": "--cluster-cidr"}


def test_cli_dual_stack_flags(cli):
    run = cli(
        "ipam",
        CLEAN,
        "--cluster-cidr",
        "10.244.0.0/16,fd00::/48",
        "--node-cidr-mask-size-ipv6",
        "56",
        "--json",
    )
    doc = json.loads(run.stdout)
    assert [(p["cidr"], p["node_mask_size"]) for p in doc["pod"]] == [
        ("10.244.0.0/16", 24),
        ("fd00::/48", 56),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cluster-cidr", "10.244.0.0/33"], "--cluster-cidr: invalid CIDR: '10.244.0.0/33'"),
        (["--service-cidr", "nope"], "--service-cidr: invalid CIDR: 'nope'"),
        (["--external", "1.2.3/8"], "--external: invalid CIDR"),
        (
            ["--cluster-cidr", "10.0.0.0/8,fd00::/48", "--node-cidr-mask-size", "24"],
            "not allowed with dual-stack",
        ),
        (["--cluster-cidr", "10.244.0.0/16", "--node-cidr-mask-size", "12"], "less than or equal"),
        (
            ["--cluster-cidr", "fd00::/32", "--node-cidr-mask-size-ipv6", "64"],
            "clusterSubnetMaxDiff",
        ),
        (["--service-cidr", "fd00::/48"], "--service-cidr: shortest allowed prefix length"),
        (["--allocator", "nope"], "invalid choice"),
    ],
)
def test_cli_bad_input_one_line_exit_2(cli, args, message):
    run = cli("ipam", CLEAN, *args)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
