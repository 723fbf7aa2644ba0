"""``check`` warns of what loads but will not work (issue 18 item 14): EndpointSlices no
Service owns, Services without endpoints, and no cluster CIDR (kube-proxy then writes no
ClusterIP masquerade rules)."""

from __future__ import annotations

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: %s, namespace: default}
spec: {clusterIP: %s, ports: [{port: 80, targetPort: 8080}]}
---
"""
SLICE = """apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s, namespace: default%s}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.0.0.5], conditions: {ready: %s}}]
---
"""
LABEL = ", labels: {kubernetes.io/service-name: %s}"


def _manifests(write):
    text = (
        SERVICE % ("web", "172.16.0.1")
        + SLICE % ("web-1", LABEL % "web", "true")
        + SERVICE % ("lonely", "172.16.0.2")
        + SERVICE % ("sleepy", "172.16.0.3")
        + SLICE % ("sleepy-1", LABEL % "sleepy", "false")
        + SERVICE % ("headless", "None")
        + SLICE % ("gone-1", LABEL % "gone", "true")
        + SLICE % ("nolabel-1", "", "true")
    )
    return write("c.yaml", text)


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("kproxy-emu: warning: ")]


def test_check_warns_of_orphans_and_services_without_endpoints(cli, write):
    res = cli("check", _manifests(write), "--cluster-cidr", "10.0.0.0/8")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("4 services, 4 endpoint slices")
    warned = _warnings(res.stderr)
    assert len(warned) == 4, res.stderr
    assert any(
        "1 EndpointSlice(s) without a kubernetes.io/service-name label" in w
        and "default/nolabel-1" in w
        for w in warned
    )
    assert any(
        "1 EndpointSlice(s) of a Service that does not exist" in w
        and "default/gone-1 (Service default/gone)" in w
        for w in warned
    )
    assert any(
        "1 Service(s) with no endpoints" in w and w.endswith(": default/lonely") for w in warned
    )
    assert any(
        "1 Service(s) with no ready or serving endpoint" in w and w.endswith(": default/sleepy")
        for w in warned
    )
    assert not any("headless" in w for w in warned)


def test_check_warns_without_a_cluster_cidr(cli, write):
    path = _manifests(write)
    res = cli("check", path)
    assert res.returncode == 0
    assert any(
        "no cluster CIDR" in w and "no ClusterIP masquerade rules" in w
        for w in _warnings(res.stderr)
    )
    config = write(
        "kp.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "clusterCIDR: 10.0.0.0/8\n",
    )
    assert "no cluster CIDR" not in cli("check", path, "--config", config).stderr
    masq = write(
        "masq.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "iptables: {masqueradeAll: true}\n",
    )
    assert "no cluster CIDR" not in cli("check", path, "--config", masq).stderr
    res = cli("check", path, "--cluster-cidr", "bogus")
    assert res.returncode == 2 and "--cluster-cidr: invalid CIDR: 'bogus'" in res.stderr


def test_a_clean_cluster_has_no_warnings(cli, write):
    text = SERVICE % ("web", "172.16.0.1") + SLICE % ("web-1", LABEL % "web", "true")
    res = cli("check", write("ok.yaml", text), "--cluster-cidr", "10.0.0.0/8")
    assert res.returncode == 0 and res.stderr == ""
