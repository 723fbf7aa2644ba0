"""What one kube-proxy instance knows about itself: node, family, detector, masquerade."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import InputError
from ..ipaddr import canonical_cidr
from ..model.config import KubeProxyConfig, NodeConfig, format_mark

DETECT_LOCAL_MODES = ("ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix", "")


@dataclass(slots=True)
class ProxyOptions:
    node: NodeConfig
    family: str = "IPv4"
    detect_local_mode: str = "ClusterCIDR"  # "" : no detector (kube-proxy's no-op detector)
    detect_local_value: str = ""  # the CIDR, bridge name or interface prefix
    masquerade_all: bool = False
    masquerade_bit: int = 14
    mark_text: str = ""  # "" : real kube-proxy's %#08x form of 1 << masquerade_bit
    node_port_addresses: tuple[str, ...] = ()  # CIDRs or ("primary",); () = all addresses
    localhost_node_ports: bool = True

    @classmethod
    def build(
        cls,
        node: NodeConfig,
        config: KubeProxyConfig | None = None,
        *,
        cluster_cidr: str | None = None,
        masquerade_all: bool | None = None,
        mark_text: str | None = None,
    ) -> ProxyOptions:
        """Options from a KubeProxyConfiguration (defaults when None); flags override."""
        config = config or KubeProxyConfig()
        family = node.primary_family
        mode = config.detect_local_mode
        value = ""
        if mode == "ClusterCIDR":
            if cluster_cidr is not None:
                try:
                    cidr = canonical_cidr(cluster_cidr)
                except ValueError:
                    raise InputError(
                        "invalid CIDR", field="--cluster-cidr", value=cluster_cidr
                    ) from None
                value = cidr if (":" in cidr) == (family == "IPv6") else ""
            else:
                value = config.cluster_cidr_for(family) or ""
            if not value:
                mode = ""  # kube-proxy: no cluster CIDR for this family -> no-op detector
        elif mode == "NodeCIDR":
            value = node.pod_cidr_for(family) or ""
            if not value:
                raise InputError(
                    "detectLocalMode NodeCIDR needs the node's pod CIDR "
                    "(podCIDRs in --node-config or the Node object)",
                    field="detectLocalMode",
                    value=mode,
                )
        elif mode == "BridgeInterface":
            value = config.detect_local.bridge_interface
        elif mode == "InterfaceNamePrefix":
            value = config.detect_local.interface_name_prefix
        node_port_addresses = config.effective_node_port_addresses
        return cls(
            node=node,
            family=family,
            detect_local_mode=mode,
            detect_local_value=value,
            masquerade_all=config.masquerade_all if masquerade_all is None else masquerade_all,
            masquerade_bit=config.masquerade_bit,
            mark_text=mark_text or "",
            node_port_addresses=node_port_addresses,
            localhost_node_ports=config.localhost_node_ports
            and _allows_localhost(node_port_addresses, node),
        )

    @property
    def mark(self) -> str:
        return self.mark_text or format_mark(self.masquerade_bit)

    @property
    def ipv4(self) -> bool:
        return self.family == "IPv4"

    def node_port_ips(self) -> list[str] | None:
        """Node addresses NodePorts answer on; None for "every local address"."""
        if not self.node_port_addresses:
            return None
        if self.node_port_addresses == ("primary",):
            ips = [ip for ip in self.node.ips if (":" in ip) == (self.family == "IPv6")][:1]
        else:
            nets = [ipaddress.ip_network(c) for c in self.node_port_addresses]
            ips = [
                ip for ip in self.node.local_ips if any(ipaddress.ip_address(ip) in n for n in nets)
            ]
        return [ip for ip in ips if (":" in ip) == (self.family == "IPv6")]


def _allows_localhost(node_port_addresses: tuple[str, ...], node: NodeConfig) -> bool:
    """localhostNodePorts only applies when nodePortAddresses is unset or has IPv4 loopback."""
    if not node_port_addresses:
        return True
    if node_port_addresses == ("primary",):
        return False
    loopback = ipaddress.ip_address("127.0.0.1")
    return any(loopback in ipaddress.ip_network(c) for c in node_port_addresses if ":" not in c)
