"""Node environments for the nftables tests: kube-proxy's nftables fake proxier (fixture
``environment``) as --config / --node-config files, and views and proxiers built on it."""

import yaml

from kproxy_emu.model import Cluster
from kproxy_emu.model.config import load_kube_proxy_config, load_node_config
from kproxy_emu.proxy import ProxyOptions, ProxyView
from tests.helpers.fixtures import as_manifests
from tests.helpers.iptables_env import fixture

SERVICE_CIDRS = ["172.30.0.0/16"]  # the nftables fake proxier's serviceCIDRs
__all__ = ["SERVICE_CIDRS", "fixture", "nft_env", "options_for", "view_of"]


def nft_env():
    return fixture("nftables-overall.json")["environment"]


def options_for(env, tmp_path, masquerade_all=False, detector=True, node_port_addresses=None):
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "iptables": {"masqueradeAll": masquerade_all},
    }
    if detector:
        config["clusterCIDR"] = env["localDetector"]["cidr"]
        config["detectLocalMode"] = env["localDetector"]["mode"]
    npa = env.get("nodePortAddresses") if node_port_addresses is None else node_port_addresses
    if npa:
        config["nodePortAddresses"] = npa
    interfaces = env["networkInterfaces"]
    ips = [env["nodeIP"]] + [
        a.split("/")[0]
        for addrs in interfaces.values()
        for a in addrs
        if not a.startswith(("127.", "::1")) and a.split("/")[0] != env["nodeIP"]
    ]
    node = {"name": env["nodeName"], "ips": ips, "interfaces": interfaces}
    cfg_path, node_path = tmp_path / "kube-proxy.yaml", tmp_path / "node.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    node_path.write_text(yaml.safe_dump(node))
    return ProxyOptions.build(
        load_node_config(node_path),
        load_kube_proxy_config(cfg_path),
        mark_text=env["masqueradeMark"],
        masquerade_all=masquerade_all,
    )


def view_of(options, services, slices):
    return ProxyView(Cluster.from_dicts(as_manifests(services, slices)), options)


def shared_flow_steps(name, tmp_path):
    """kube-proxy's iptables packet-flow fixtures whose cases hold for nftables too: for
    each case, (table, options, packet tests) after its sync, and again after its
    EndpointSlices are deleted when the case has ``afterEndpointSliceDeleted``."""
    from kproxy_emu.modes.nftables import NftProxier

    fx = fixture(name)
    env = dict(nft_env(), nodeName=fx["environment"]["nodeName"])
    options = options_for(env, tmp_path)
    for test in fx["tests"]:
        for case in test.get("cases", [test]):
            services, slices = case["input"]["services"], case["input"]["endpointSlices"]
            proxier = NftProxier(options, SERVICE_CIDRS)
            assert proxier.sync(view_of(options, services, slices)).ok
            yield proxier.table, options, case["packetTests"]
            if "afterEndpointSliceDeleted" in case:
                assert proxier.sync(
                    view_of(options, services, []),
                    {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services},
                ).ok
                yield proxier.table, options, case["afterEndpointSliceDeleted"]
