"""Dataplane(cluster, mode=..., node=...): compile a cluster for one node and mode.

render() works now; packet processing (process, trace) arrives with the engines.
"""
from __future__ import annotations

from ..errors import InputError
from ..model.cluster import Cluster, paused_gc
from ..model.config import KubeProxyConfig, NodeConfig
from ..proxy import ProxyOptions, ProxyView

MODES = ("iptables",)


def resolve_node(cluster: Cluster, node: str | None = None,
                 node_config: NodeConfig | None = None,
                 node_ips: list[str] | None = None) -> NodeConfig:
    """The emulated node: a Node object of the cluster when there is one by that name (or
    the first Node when no name is given), else the node file; ``node_ips`` overrides IPs."""
    if node_config is not None and (node is None or node == node_config.name):
        chosen = node_config
    elif node is not None or cluster.nodes:
        obj = cluster.node(node) if node is not None else next(iter(cluster.nodes.values()))
        if not obj.ips:
            raise InputError("node has no InternalIP or ExternalIP address", obj=obj.ref,
                             field="status.addresses")
        chosen = NodeConfig.from_node(obj.name, obj.ips, zone=obj.zone or None,
                                      pod_cidrs=obj.pod_cidrs)
    else:
        raise InputError("no node to emulate: the manifests hold no Node object; "
                         "give --node-config FILE (or --node NAME with Node objects)")
    if node_ips:
        try:
            chosen = NodeConfig.from_node(chosen.name, node_ips, zone=chosen.zone,
                                          pod_cidrs=chosen.pod_cidrs)
        except InputError as exc:
            raise InputError(exc.message, field="--node-ip", value=exc.value) from None
    return chosen


class Dataplane:
    def __init__(self, cluster: Cluster, mode: str = "iptables", *, node: str | None = None,
                 node_config: NodeConfig | None = None, node_ips: list[str] | None = None,
                 config: KubeProxyConfig | None = None, cluster_cidr: str | None = None,
                 masquerade_all: bool | None = None, mark_text: str | None = None,
                 seed: int = 0):
        if mode not in MODES:
            raise InputError(f"unsupported mode (available: {', '.join(MODES)})",
                             field="mode", value=mode)
        self.cluster = cluster
        self.mode = mode
        self.seed = seed
        node_cfg = resolve_node(cluster, node, node_config, node_ips)
        self.options = ProxyOptions.build(node_cfg, config, cluster_cidr=cluster_cidr,
                                          masquerade_all=masquerade_all, mark_text=mark_text)
        with paused_gc():  # a 100k-service view is millions of small objects
            self.view = ProxyView(cluster, self.options)
        from ..modes.iptables import compile_ruleset
        self.ruleset = compile_ruleset(self.view)

    def render(self, *, sorted: bool = False) -> str:
        """iptables-restore input as kube-proxy writes it (``sorted``: the unit-test form)."""
        from ..netfilter.iptables_text import render, render_sorted
        return render_sorted(self.ruleset) if sorted else render(self.ruleset)
