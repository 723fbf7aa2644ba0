"""Turn a kube-proxy fixture's fake-proxier environment into --config / --node-config files."""

import json

import yaml

from kproxy_emu.model import Cluster
from kproxy_emu.model.config import load_kube_proxy_config, load_node_config
from kproxy_emu.proxy import ProxyOptions, ProxyView
from tests.helpers.fixtures import FIXTURES, as_manifests, require_fixtures


def fixture(name):
    require_fixtures()
    return json.loads((FIXTURES / name).read_text())


def config_files(env, tmp_path, masquerade_all=None, detector=True):
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": env.get("mode", "iptables"),
        "iptables": {
            "masqueradeAll": env["masqueradeAll"] if masquerade_all is None else masquerade_all,
            "localhostNodePorts": env["localhostNodePorts"],
        },
    }
    if detector:
        config["clusterCIDR"] = env["localDetector"]["cidr"]
        config["detectLocalMode"] = env["localDetector"]["mode"]
    if env.get("nodePortAddresses"):
        config["nodePortAddresses"] = env["nodePortAddresses"]
    interfaces = env["networkInterfaces"]
    ips = [env["nodeIP"]] + [
        a.split("/")[0]
        for addrs in interfaces.values()
        for a in addrs
        if not a.startswith(("127.", "::1")) and a.split("/")[0] != env["nodeIP"]
    ]
    node = {
        "name": env["nodeName"],
        "ips": ips,
        "interfaces": interfaces,
        "features": {
            "iptablesRandomFully": env["iptablesHasRandomFully"],
            "nfacct": all(env["nfacctCounters"].values()),
            "conntrackTCPBeLiberal": env["conntrackTCPLiberal"],
        },
    }
    cfg_path, node_path = tmp_path / "kube-proxy.yaml", tmp_path / "node.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    node_path.write_text(yaml.safe_dump(node))
    return cfg_path, node_path


def view_for(env, services, slices, tmp_path, **kw):
    cfg_path, node_path = config_files(env, tmp_path, **kw)
    options = ProxyOptions.build(
        load_node_config(node_path),
        load_kube_proxy_config(cfg_path),
        mark_text=env["masqueradeMark"],
    )
    cluster = Cluster.from_dicts(as_manifests(services, slices))
    return ProxyView(cluster, options)
