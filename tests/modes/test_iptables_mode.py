"""The iptables compiler: names, probabilities, options, consistency, CLI."""

import pytest

from kproxy_emu import Dataplane, synth
from kproxy_emu.model import Cluster
from kproxy_emu.modes.iptables import (
    compile_ruleset,
    endpoint_chain,
    probability,
    service_chain_hash,
)
from kproxy_emu.netfilter.iptables_text import render, render_sorted
from tests.helpers.iptables_env import fixture


def test_chain_name_hashes_match_kube_proxy():
    assert service_chain_hash("ns1/svc1:p80", "tcp") == "XPGD46QRK7WJZT7O"
    assert endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"


@pytest.mark.parametrize(
    "n,text",
    [
        (1, "1.0000000000"),
        (2, "0.5000000000"),
        (3, "0.3333333333"),
        (10, "0.1000000000"),
        (100000, "0.0000100000"),
        (100001, "0.0000099999"),
    ],
)
def test_probability_formatting(n, text):
    assert probability(n) == text


BUILTIN_TARGETS = {"ACCEPT", "DROP", "REJECT", "RETURN", "MARK", "DNAT", "SNAT", "MASQUERADE"}
TOP_LEVEL = {
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-PROXY-FIREWALL",
    "KUBE-FIREWALL",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
}


def check_jumps(ruleset):
    """kube-proxy's checkIPTablesRuleJumps: targets declared, declared chains used, and
    jumped-to chains non-empty (except KUBE-NODEPORTS)."""
    for table in ruleset.tables.values():
        jumped = {r.target for r in table.rules if r.target and r.target not in BUILTIN_TARGETS}
        with_rules = {r.chain for r in table.rules}
        assert jumped <= set(table.chains), jumped - set(table.chains)
        assert set(table.chains) - TOP_LEVEL <= jumped, set(table.chains) - TOP_LEVEL - jumped
        assert jumped - {"KUBE-NODEPORTS"} <= with_rules


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_clusters_are_consistent(seed):
    cluster = synth.cluster(300, endpoints="uniform:0-6", nodes=3, seed=seed)
    check_jumps(Dataplane(cluster, cluster_cidr="10.0.0.0/8").ruleset)


def test_every_fixture_input_is_consistent(tmp_path):
    from tests.helpers.fixtures import fixture_inputs
    from tests.helpers.iptables_env import view_for

    env = fixture("iptables-overall.json")["environment"]
    for where, services, slices in fixture_inputs():
        if where.startswith("iptables"):
            check_jumps(compile_ruleset(view_for(env, services, slices, tmp_path)))


def _cluster(svc_spec, endpoints, name="svc", ns="ns"):
    return Cluster.from_dicts(
        [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "node-a"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": svc_spec,
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-1",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
            },
        ]
    )


def test_default_mark_is_kube_proxys_8_digit_form_and_random_fully_follows_the_node():
    cluster = _cluster(
        {"clusterIP": "172.30.0.1", "ports": [{"name": "p", "port": 80}]},
        [{"addresses": ["10.0.0.1"]}],
    )
    text = Dataplane(cluster).render()
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000\n" in text
    assert "-m mark ! --mark 0x00004000/0x00004000 -j RETURN" in text
    assert "-j MASQUERADE --random-fully\n" in text  # node default: random-fully available
    # no clusterCIDR anywhere: kube-proxy's no-op detector writes no masquerade rule
    assert "KUBE-MARK-MASQ" not in next(
        l for l in text.splitlines() if "KUBE-SVC-" in l and l.startswith("-A KUBE-SVC")
    )
    with_cidr = Dataplane(cluster, cluster_cidr="10.0.0.0/8").render()
    assert "! -s 10.0.0.0/8 -j KUBE-MARK-MASQ" in with_cidr
    assert (
        "-d 172.30.0.1 --dport 80 -j KUBE-MARK-MASQ"
        in Dataplane(cluster, masquerade_all=True).render()
    )


def test_session_affinity_rules():
    cluster = _cluster(
        {
            "clusterIP": "172.30.0.1",
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "ports": [{"name": "p", "port": 80}],
        },
        [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
    )
    text = Dataplane(cluster).render()
    sep = endpoint_chain("ns/svc:p", "tcp", "10.0.0.1:8080")
    assert (
        f'-m comment --comment "ns/svc:p -> 10.0.0.1:8080" -m recent --name {sep} --rcheck '
        f"--seconds 600 --reap -j {sep}"
    ) in text
    assert (
        f"-A {sep} -m comment --comment ns/svc:p -m recent --name {sep} --set -m tcp -p tcp "
        "-j DNAT --to-destination 10.0.0.1:8080"
    ) in text


def test_terminating_fallback_and_not_ready_endpoints():
    eps = [
        {
            "addresses": ["10.0.0.1"],
            "conditions": {"ready": False, "serving": True, "terminating": True},
        },
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "serving": False}},
    ]
    text = Dataplane(
        _cluster({"clusterIP": "172.30.0.1", "ports": [{"name": "p", "port": 80}]}, eps)
    ).render()
    assert "--to-destination 10.0.0.1:8080" in text
    assert "10.0.0.2:8080" not in text
    none_usable = [eps[1]]
    text = Dataplane(
        _cluster({"clusterIP": "172.30.0.1", "ports": [{"name": "p", "port": 80}]}, none_usable)
    ).render()
    assert '"ns/svc:p has no endpoints" -m tcp -p tcp -d 172.30.0.1 --dport 80 -j REJECT' in text


def test_large_cluster_drops_per_endpoint_comments():
    small = Dataplane(synth.cluster(20, endpoints=10, seed=1, type_mix={"ClusterIP": 1}))
    big = Dataplane(synth.cluster(120, endpoints=10, seed=1, type_mix={"ClusterIP": 1}))
    assert small.view.total_endpoints <= 1000 < big.view.total_endpoints
    assert any(" -> " in (r.comment or "") for r in small.ruleset.tables["nat"].rules)
    nat = big.ruleset.tables["nat"]
    assert not any(" -> " in (r.comment or "") for r in nat.rules)
    assert not any(r.comment for r in nat.rules if r.chain.startswith("KUBE-SEP-"))


def test_node_port_addresses_give_one_dispatch_rule_per_matching_ip(tmp_path):
    cluster = _cluster(
        {
            "clusterIP": "172.30.0.1",
            "type": "NodePort",
            "ports": [{"name": "p", "port": 80, "nodePort": 30001}],
        },
        [{"addresses": ["10.0.0.1"]}],
    )
    from kproxy_emu.model.config import KubeProxyConfig

    config = KubeProxyConfig.from_dict(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "nodePortAddresses": ["192.168.0.0/24"],
        }
    )
    text = Dataplane(cluster, config=config).render()
    assert (
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this '
        'must be the last rule in this chain" -d 192.168.0.2 -j KUBE-NODEPORTS'
    ) in text
    assert "127.0.0.0/8" not in text  # localhost nodeports off: no loopback in the list


def test_render_sorted_and_raw_hold_the_same_lines():
    dp = Dataplane(synth.cluster(200, seed=3), cluster_cidr="10.0.0.0/8")
    assert sorted(dp.render().splitlines()) == sorted(dp.render(sorted=True).splitlines())
    assert render(dp.ruleset) == dp.render() and render_sorted(dp.ruleset) == dp.render(sorted=True)


@pytest.mark.slow
def test_synthetic_10k_cluster_renders_parses_back_and_renders_identically():
    from kproxy_emu.netfilter.iptables_parse import parse

    dp = Dataplane(
        synth.cluster(10_000, endpoints="uniform:0-12", seed=11), cluster_cidr="10.0.0.0/8"
    )
    text = dp.render()
    assert render(parse(text)) == text
    sorted_text = dp.render(sorted=True)
    assert render(parse(sorted_text)) == sorted_text


def test_save_format_is_the_node_state_and_parses_back(cli, tmp_path):
    from kproxy_emu.netfilter.iptables_live import render_live
    from kproxy_emu.netfilter.iptables_parse import parse

    path = tmp_path / "c.yaml"
    synth.cluster(50, seed=2).dump(path)
    proc = cli("render", "--format", "save", "--cluster-cidr", "10.0.0.0/8", str(path))
    assert proc.returncode == 0, proc.stderr
    save = proc.stdout
    # built-in chains carry kube-proxy's jumps, in the order its prepends leave them
    assert (
        "-A INPUT -j KUBE-FIREWALL\n-A INPUT -m conntrack --ctstate NEW -m comment "
        '--comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL\n'
    ) in save
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n" in save
    assert render_live(parse(save)) == save


def test_update_partial_sync_rewrites_only_changed_services():
    cluster = synth.cluster(200, endpoints=3, seed=5, type_mix={"ClusterIP": 1})
    dp = Dataplane(cluster, cluster_cidr="10.0.0.0/8")
    full_lines = dp.syncs[-1].lines
    changed = synth.cluster(200, endpoints=3, seed=5, type_mix={"ClusterIP": 1})
    key, svc = next(iter(changed.services.items()))
    svc.ports[0].port += 1
    result = dp.update(changed)
    assert result.ok and not result.full and result.changed == {key}
    assert result.lines < full_lines / 10
    assert dp.update(changed).changed == set()  # nothing changed since
    assert dp.render() == Dataplane(changed, cluster_cidr="10.0.0.0/8").render()
