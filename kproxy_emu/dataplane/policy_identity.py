"""NetworkPolicy compiled as Cilium compiles it: security identities and per-endpoint
policy maps (run by ``kproxy_emu._cext.netpolicy.IdentityPolicy``; see its docstring).

An identity is a label set. A pod's: its namespace, its labels, the ipBlocks (of any
policy) holding its address, and the named container ports policies name (the last two
are Cilium's ``cidr:`` labels and kproxy-emu's refinement so that an egress rule's named
port, which resolves on the destination pod, is a function of the peer's identity). Pods
with the same set share one identity. Addresses outside the pods fall into intervals cut
by every ipBlock's boundaries; each interval's "world" identity is the blocks holding it.

Per endpoint (pod) and direction, for each policy selecting it (in policy order) and each
rule: the rule's peers as identities (none: identity 0, any peer) times its ports as keys
(none: any protocol; a port: an exact key; a range: the aligned prefixes covering it; a
named port: resolved on the destination, the endpoint itself for ingress and each peer
identity for egress), each key naming the first rule that made it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Cluster, Pod
from ..model.netpol import IPBlock, Rule
from ..packets import u32_to_ip
from ..policy.selectors import matches, namespace_labels
from .policy_stage import PolicyProgram, in_block, ipv4_block, port_prefixes

PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}
ANY_PROTO_BIT = 17


class _Identity:
    __slots__ = ("blocks", "labels", "named", "namespace", "ns_labels", "number", "pod")

    def __init__(
        self,
        number: int,
        pod: bool,
        namespace: str | None,
        labels: dict[str, str],
        ns_labels: dict[str, str],
        blocks: frozenset[int],
        named: dict[tuple[str, str], tuple[int, ...]],
    ):
        self.number = number
        self.pod = pod
        self.namespace = namespace
        self.labels = labels
        self.ns_labels = ns_labels
        self.blocks = blocks  # indices into IdentityProgram.blocks
        self.named = named  # (port name, protocol) -> its container port numbers

    def text(self, blocks: list[IPBlock]) -> str:
        parts = []
        if self.pod:
            parts.append(f"k8s:io.kubernetes.pod.namespace={self.namespace}")
            parts += [f"k8s:{k}={v}" for k, v in sorted(self.labels.items())]
        else:
            parts.append("reserved:world")
        for b in sorted(self.blocks):
            blk = blocks[b]
            parts.append(f"cidr:{blk.cidr}" + "".join(f"!{e}" for e in blk.excepts))
        for (name, proto), ports in sorted(self.named.items()):
            parts.append(f"port:{name}/{proto}={','.join(map(str, ports))}")
        return " ".join(parts)


class IdentityProgram(PolicyProgram):
    kind = "identity"

    def __init__(self, cluster: Cluster):
        super().__init__(cluster)
        from .._cext.netpolicy import IdentityPolicy

        # every IPv4 ipBlock peer, once
        self.blocks: list[IPBlock] = []
        block_index: dict[IPBlock, int] = {}
        named: set[tuple[str, str]] = set()
        for pol in self.policies:
            for rule in pol.spec.ingress + pol.spec.egress:
                for peer in rule.peers:
                    b = peer.ip_block
                    if b is not None and b not in block_index and ipv4_block(b) is not None:
                        block_index[b] = len(self.blocks)
                        self.blocks.append(b)
                for e in rule.ports:
                    if isinstance(e.port, str):
                        named.add((e.port, e.protocol))
        self.block_index = block_index
        parts = [ipv4_block(b) for b in self.blocks]
        self.identities: list[_Identity] = [
            _Identity(0, False, None, {}, {}, frozenset(), {})
        ]  # 0: any peer (a wildcard key, never an address's)
        by_sig: dict[Any, _Identity] = {}

        def identity(sig: Any, make: Any) -> _Identity:
            found = by_sig.get(sig)
            if found is None:
                found = make(len(self.identities))
                by_sig[sig] = found
                self.identities.append(found)
            return found

        ns_cache: dict[str, dict[str, str]] = {}

        def ns_labels(ns: str) -> dict[str, str]:
            got = ns_cache.get(ns)
            if got is None:
                got = ns_cache[ns] = namespace_labels(cluster, ns)
            return got

        addr_ip, addr_ep, addr_id = [], [], []
        for ip, i in sorted(self.pod_of_ip.items()):
            pod = self.pods[i]
            blocks = frozenset(b for b, p in enumerate(parts) if p is not None and in_block(ip, p))
            pod_named: dict[tuple[str, str], tuple[int, ...]] = {}
            for c in pod.container_ports:
                if (c.name, c.protocol) in named:
                    pod_named[(c.name, c.protocol)] = pod_named.get((c.name, c.protocol), ()) + (
                        c.container_port,
                    )
            sig = (
                "pod",
                pod.namespace,
                tuple(sorted(pod.labels.items())),
                blocks,
                tuple(sorted(pod_named.items())),
            )
            ident = identity(
                sig,
                lambda n, pod=pod, blocks=blocks, pod_named=pod_named: _Identity(
                    n,
                    True,
                    pod.namespace,
                    dict(pod.labels),
                    ns_labels(pod.namespace),
                    blocks,
                    pod_named,
                ),
            )
            addr_ip.append(ip)
            addr_ep.append(i)
            addr_id.append(ident.number)
        # the world: intervals between every block's and except's boundaries
        cuts = {0}
        for p in parts:
            assert p is not None
            for net, mask in [(p[0], p[1]), *p[2]]:
                cuts.add(net)
                end = net + ((~mask) & 0xFFFFFFFF) + 1
                if end <= 0xFFFFFFFF:
                    cuts.add(end)
        world_lo = sorted(cuts)
        world_id = []
        for lo in world_lo:
            blocks = frozenset(b for b, p in enumerate(parts) if p is not None and in_block(lo, p))
            ident = identity(
                ("world", blocks),
                lambda n, blocks=blocks: _Identity(n, False, None, {}, {}, blocks, {}),
            )
            world_id.append(ident.number)
        self.world = list(zip(world_lo, world_id))

        # the policy maps
        peer_cache: dict[tuple[int, str, int], list[_Identity] | None] = {}
        m_ep: list[int] = []
        m_id: list[int] = []
        m_pw: list[int] = []
        m_rule: list[int] = []
        flags = np.zeros(len(self.pods), dtype=np.uint8)
        plens = np.zeros(2 * len(self.pods), dtype=np.uint32)
        pod_idents = [x for x in self.identities if x.pod]
        for ep, pod in enumerate(self.pods):
            for d, direction in enumerate(("Egress", "Ingress")):
                selecting = self.selecting[direction][ep]
                if not selecting:
                    continue
                flags[ep] |= 1 << d
                bits = 0
                for k in selecting:
                    pol = self.policies[k]
                    for i, rule in enumerate(pol.rules(direction)):
                        rid = self.rule_number[(k, direction, i)]
                        key = (k, direction, i)
                        if key not in peer_cache:
                            peer_cache[key] = self._peers(rule, pol.namespace)
                        peers = peer_cache[key]
                        for number, plen, proto, port in self._keys(
                            rule, d, pod, peers, pod_idents
                        ):
                            m_ep.append(ep)
                            m_id.append(number)
                            if proto == 0:
                                m_pw.append(d << 31)
                                bits |= 1 << ANY_PROTO_BIT
                            else:
                                mask = (0xFFFF << (16 - plen)) & 0xFFFF
                                m_pw.append(
                                    (d << 31) | (plen << 24) | (proto << 16) | (port & mask)
                                )
                                bits |= 1 << plen
                            m_rule.append(rid)
                plens[2 * ep + d] = bits
        self.map = (m_ep, m_id, m_pw, m_rule)
        self.stage = IdentityPolicy(
            np.array(addr_ip, dtype=np.uint32),
            np.array(addr_ep, dtype=np.int32),
            np.array(addr_id, dtype=np.uint32),
            np.array(world_lo, dtype=np.uint32),
            np.array(world_id, dtype=np.uint32),
            flags,
            plens,
            np.array(m_ep, dtype=np.uint32),
            np.array(m_id, dtype=np.uint32),
            np.array(m_pw, dtype=np.uint32),
            np.array(m_rule, dtype=np.int32),
        )

    def _peers(self, rule: Rule, policy_ns: str) -> list[_Identity] | None:
        """The identities a rule's peers match; None: any peer (no from/to)."""
        if not rule.peers:
            return None
        out: dict[int, _Identity] = {}
        for peer in rule.peers:
            if peer.ip_block is not None:
                b = self.block_index.get(peer.ip_block)
                if b is None:
                    continue  # IPv6: no IPv4 address is in it
                for x in self.identities[1:]:
                    if b in x.blocks:
                        out[x.number] = x
                continue
            for x in self.identities[1:]:
                if not x.pod:
                    continue
                if peer.namespace_selector is not None:
                    ns_ok = matches(peer.namespace_selector, x.ns_labels)
                else:
                    ns_ok = x.namespace == policy_ns
                if ns_ok and (peer.pod_selector is None or matches(peer.pod_selector, x.labels)):
                    out[x.number] = x
        return [out[n] for n in sorted(out)]

    def _keys(
        self,
        rule: Rule,
        d: int,
        pod: Pod,
        peers: list[_Identity] | None,
        pod_idents: list[_Identity],
    ) -> list[tuple[int, int, int, int]]:
        """(identity, prefix length, protocol, port) keys of one rule at one endpoint."""
        who = [0] if peers is None else [x.number for x in peers]
        keys: list[tuple[int, int, int, int]] = []
        if not rule.ports:
            return [(i, 0, 0, 0) for i in who]
        for e in rule.ports:
            proto = PROTO[e.protocol]
            if e.port is None:
                keys += [(i, 0, proto, 0) for i in who]
            elif isinstance(e.port, int):
                end = e.end_port if e.end_port is not None else e.port
                for plen, first in port_prefixes(e.port, end):
                    keys += [(i, plen, proto, first) for i in who]
            elif d == 1:  # ingress: the endpoint's own container port
                for c in pod.container_ports:
                    if c.name == e.port and c.protocol == e.protocol:
                        keys += [(i, 16, proto, c.container_port) for i in who]
            else:  # egress: the destination's, a function of its identity
                for x in pod_idents if peers is None else peers:
                    for port in x.named.get((e.port, e.protocol), ()):
                        keys.append((x.number, 16, proto, port))
        return keys

    def render(self) -> str:
        """The identities, the ipcache and every endpoint's policy map, in the spirit of
        ``cilium identity list``, ``cilium bpf ipcache list`` and ``cilium bpf policy
        get``."""
        lines = ["# identities"]
        for x in self.identities[1:]:
            lines.append(f"{x.number}\t{x.text(self.blocks)}")
        lines.append("# ipcache")
        for ip, e in sorted(self.pod_of_ip.items()):
            _, ident = self.stage.address_of(ip)
            lines.append(f"{u32_to_ip(ip)}/32\tidentity={ident} endpoint={self.pod_name(e)}")
        for k, (lo, ident) in enumerate(self.world):
            hi = self.world[k + 1][0] - 1 if k + 1 < len(self.world) else 0xFFFFFFFF
            lines.append(f"{u32_to_ip(lo)}-{u32_to_ip(hi)}\tidentity={ident}")
        m_ep, m_id, m_pw, m_rule = self.map
        by_ep: dict[int, list[str]] = {}
        seen: set[tuple[int, int, int]] = set()
        for e, ident, pw, rid in zip(m_ep, m_id, m_pw, m_rule):
            if (e, ident, pw) in seen:
                continue
            seen.add((e, ident, pw))
            d = "Ingress" if pw >> 31 else "Egress"
            plen, proto, port = (pw >> 24) & 0x7F, (pw >> 16) & 0xFF, pw & 0xFFFF
            proto_name = {6: "TCP", 17: "UDP", 132: "SCTP"}.get(proto, "ANY")
            if proto == 0:
                port_text = "ANY"
            elif plen == 0:
                port_text = f"{proto_name}/ANY"
            elif plen == 16:
                port_text = f"{proto_name}/{port}"
            else:
                port_text = f"{proto_name}/{port}/{plen}"
            who = "ANY" if ident == 0 else str(ident)
            by_ep.setdefault(e, []).append(f"{d}\t{who}\t{port_text}\t{self.rules[rid].ref}")
        for e in range(len(self.pods)):
            isolated = [d for d in ("Egress", "Ingress") if self.selecting[d][e]]
            if not isolated:
                continue
            lines.append(f"# policy map of {self.pod_name(e)} (isolated for {', '.join(isolated)})")
            lines.append("direction\tidentity\tport\trule")
            lines += by_ep.get(e, [])
        return "\n".join(lines) + "\n"
