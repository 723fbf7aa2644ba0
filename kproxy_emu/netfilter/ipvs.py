"""The IPVS mode's rule model: virtual servers with their real servers, ipsets, and the
state one IPVS proxier sync gives (with its iptables payload, a netfilter.ruleset).

The IPVS proxier (modes/ipvs.py) produces it, the texts (netfilter/ipvs_text.py) print it
and the emulated kernel table (dataplane/ipvs_kernel.py) is programmed from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ruleset import Ruleset

# pkg/proxy/ipvs/util: VirtualServer flags
FLAG_PERSISTENT = 0x1
FLAG_HASHED = 0x2
FLAG_SOURCE_HASH = 0x10  # IP_VS_SVC_F_SCHED2: mh-port (hash source IP and port)

# utilipset types and defaults (pkg/proxy/ipvs/ipset/types.go)
HASH_IP = "hash:ip"
HASH_IP_PORT = "hash:ip,port"
HASH_IP_PORT_IP = "hash:ip,port,ip"
HASH_IP_PORT_NET = "hash:ip,port,net"
BITMAP_PORT = "bitmap:port"
DEFAULT_HASH_SIZE = 1024
DEFAULT_MAX_ELEM = 65536
DEFAULT_PORT_RANGE = "0-65535"


@dataclass(slots=True)
class RealServer:
    address: str
    port: int
    weight: int = 1
    endpoint: int = -1  # index in IpvsState.endpoints

    def __str__(self) -> str:
        """RealServer.String(): net.JoinHostPort(address, port)."""
        return join_host_port(self.address, self.port)


@dataclass(slots=True)
class VirtualServer:
    address: str
    protocol: str  # TCP, UDP, SCTP
    port: int
    scheduler: str
    flags: int = 0
    timeout: int = 0
    kind: str = "cluster-ip"  # cluster-ip, external-ip, load-balancer, node-port
    service: str = ""  # ServicePortName string
    bound: bool = False  # address bound to kube-ipvs0
    real_servers: list[RealServer] = field(default_factory=list)
    # several service ports claim this address:port/protocol (kube-proxy's syncService
    # and syncEndpoint run once per claim, in its order): each claim's own virtual server,
    # in that order. The fields above are the last claim's, as the kernel ends up.
    claims: tuple[VirtualServer, ...] = ()

    def __str__(self) -> str:
        """VirtualServer.String(): "ip:port/PROTO" (the key of activeIPVSServices)."""
        return f"{join_host_port(self.address, self.port)}/{self.protocol}"


@dataclass(slots=True)
class IPSet:
    name: str
    set_type: str
    comment: str
    family: str = "inet"  # ipset's "family" (inet, inet6)
    entries: set[str] = field(default_factory=set)
    hash_size: int = DEFAULT_HASH_SIZE
    max_elem: int = DEFAULT_MAX_ELEM
    port_range: str = DEFAULT_PORT_RANGE


@dataclass(slots=True)
class IpvsState:
    """One sync's state. ``virtual_servers`` holds one entry per address:port/protocol
    (a shared one carries its ``claims``), in the order kube-proxy first adds them."""

    family: str
    scheduler: str
    virtual_servers: list[VirtualServer]
    bound_addresses: list[str]  # kube-ipvs0, first-bound order
    ipsets: dict[str, IPSet]  # by IPv4 name (IPSET_INFO order); .name has the family's name
    ruleset: Ruleset  # the iptables-restore payload (nat, then filter)
    endpoints: list[str]  # endpoint table: RealServer.endpoint indexes it
    no_local_internal: set[str] = field(default_factory=set)  # services counted by the
    no_local_external: set[str] = field(default_factory=set)  # no-local-endpoints metric

    def ipset(self, name: str) -> IPSet:
        return self.ipsets[name]


def join_host_port(ip: str, port: int) -> str:
    """net.JoinHostPort."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def ipset_name(name: str, family: str) -> str:
    """NewIPSet: IPv6 sets use the prefix KUBE-6- (truncated to ipset's 31 characters)."""
    if family == "IPv6" and name.startswith("KUBE-"):
        name = name.replace("KUBE-", "KUBE-6-", 1)[:31]
    return name
