"""NetworkPolicy compiled to iptables chains and ipsets, as kube-router and Calico write
them, then lowered (dataplane/lowering.py) and walked by the chain VM
(``kproxy_emu._cext.chains.ChainPolicy``).

The filter table::

    KUBE-NWPLCY-MAIN         the chain a node hooks (FORWARD, INPUT, OUTPUT): conntrack
                             RELATED,ESTABLISHED ACCEPT, -j KUBE-NWPLCY-EGRESS,
                             -j KUBE-NWPLCY-INGRESS; it ends without a verdict (a flow it
                             lets through meets the rest of the hook)
    KUBE-NWPLCY-EGRESS       one rule per pod isolated for egress: -s POD_IP -g KUBE-POD-EG-<hash>
    KUBE-NWPLCY-INGRESS      the same per pod isolated for ingress: -d POD_IP -g KUBE-POD-IN-<hash>
    KUBE-POD-EG/IN-<hash>    per pod: clear the policy mark bits, then -j the chain of each
                             policy selecting it, each followed by "-m mark --mark
                             ACCEPT/ACCEPT -j RETURN"; last "-j DROP". (RETURN, not ACCEPT:
                             an ACCEPT would end the hook chain and skip the ingress side;
                             the goto makes the RETURN go back to KUBE-NWPLCY-MAIN.)
    KUBE-NWPLCY-<hash>       per policy and direction: per rule, one line per peer (a pod
                             selector peer: -m set --match-set KUBE-PEER-<hash> src|dst, an
                             ipBlock: -s|-d CIDR, through KUBE-NWBLCK-<hash> when it has
                             excepts, which RETURNs them first; no peers: one line) jumping to
                             the rule's ports chain, or marking when the rule has no ports;
                             after each rule "-m mark --mark ACCEPT/ACCEPT -j RETURN"
    KUBE-NWPORT-<hash>       per rule with ports: one line per port entry (-p P, --dport
                             N[:M]; a named port: -m set --match-set KUBE-NAMED-<hash> dst
                             --dport N per number it resolves to on some pod) that marks

An allowing line sets the accept bit 0x80000000 and the rule's number in bits 16-30
(``--set-xmark 0x8NNN0000/0xffff0000``; numbers from 0x7fff up are carried as 0x7fff, which
names no rule), leaving kube-proxy's mark bits (14, 15: masquerade, drop) alone: a real
kernel masquerades in POSTROUTING on the mark the filter chains left. Calico sets an accept
bit the same way; the number lets a trace name the rule. Sets: KUBE-PEER-<hash> (hash:ip)
the addresses of the pods a selector peer matches; KUBE-NAMED-<hash> (hash:ip) the pods
whose named port resolves to one number. The walk costs what iptables' would: every rule up
to the verdict, the dispatch chains linear in the isolated pods. The kernel lab loads this
text as it is (``kproxy_emu.lab.policy``).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from ..model import Cluster
from ..model.netpol import Peer, Rule
from ..packets import u32_to_ip
from ..policy.selectors import matches, namespace_labels
from .policy_stage import PolicyProgram, ipv4_block

ACCEPT_MARK = 0x80000000
MARK_MASK = 0xFFFF0000  # the policy's mark bits: accept (31) and the rule number (16-30)
RULE_SHIFT = 16
RULE_NONE = 0x7FFF  # a rule number too large for the mark
MAIN_CHAIN = "KUBE-NWPLCY-MAIN"
EGRESS_CHAIN = "KUBE-NWPLCY-EGRESS"
INGRESS_CHAIN = "KUBE-NWPLCY-INGRESS"


def _hash(prefix: str, text: str) -> str:
    """kube-proxy's and kube-router's chain-name hash: the first 16 base32 characters of
    the SHA-256 of the text."""
    digest = hashlib.sha256(text.encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


class ChainsProgram(PolicyProgram):
    kind = "chains"

    def __init__(self, cluster: Cluster):
        super().__init__(cluster)
        self.sets: dict[str, list[str]] = {}  # name -> addresses (hash:ip)
        self.chains: dict[str, list[str]] = {}  # name -> rule lines (without "-A NAME")
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._build()
        self.text = self._render_rules()
        self._lower()

    # ---------------------------------------------------------------- build
    def _chain(self, name: str) -> list[str]:
        return self.chains.setdefault(name, [])

    def _mark(self, rid: int) -> str:
        value = ACCEPT_MARK | (min(rid, RULE_NONE) << RULE_SHIFT)
        return f"-j MARK --set-xmark 0x{value:08x}/0x{MARK_MASK:08x}"

    def _peer_set(self, peer: Peer, policy_ns: str) -> str:
        """The hash:ip set of the pod addresses a selector peer matches."""
        key = f"{policy_ns}|{peer.namespace_selector!r}|{peer.pod_selector!r}"
        name = _hash("KUBE-PEER-", key)
        if name not in self.sets:
            members = []
            for ip, i in sorted(self.pod_of_ip.items()):
                pod = self.pods[i]
                if peer.namespace_selector is not None:
                    labels = self._ns_labels.get(pod.namespace)
                    if labels is None:
                        labels = self._ns_labels[pod.namespace] = namespace_labels(
                            self.cluster, pod.namespace
                        )
                    ns_ok = matches(peer.namespace_selector, labels)
                else:
                    ns_ok = pod.namespace == policy_ns
                if ns_ok and (peer.pod_selector is None or matches(peer.pod_selector, pod.labels)):
                    members.append(u32_to_ip(ip))
            self.sets[name] = members
        return name

    def _named_sets(self, name: str, protocol: str) -> list[tuple[int, str]]:
        """(port number, set of the pods whose ``name``/``protocol`` port is that number)."""
        by_port: dict[int, list[str]] = {}
        for ip, i in sorted(self.pod_of_ip.items()):
            for c in self.pods[i].container_ports:
                if c.name == name and c.protocol == protocol:
                    addr = u32_to_ip(ip)
                    members = by_port.setdefault(c.container_port, [])
                    if addr not in members:
                        members.append(addr)
        out = []
        for port in sorted(by_port):
            set_name = _hash("KUBE-NAMED-", f"{name}|{protocol}|{port}")
            self.sets[set_name] = by_port[port]
            out.append((port, set_name))
        return out

    def _ports_chain(self, rule: Rule, rid: int, tag: str) -> str:
        name = _hash("KUBE-NWPORT-", f"{tag}|{rid}")
        lines = self._chain(name)
        mark = self._mark(rid)
        for e in rule.ports:
            proto = e.protocol.lower()
            if e.port is None:
                lines.append(f"-p {proto} {mark}")
            elif isinstance(e.port, int):
                end = e.end_port if e.end_port is not None else e.port
                ports = str(e.port) if end == e.port else f"{e.port}:{end}"
                lines.append(f"-p {proto} -m {proto} --dport {ports} {mark}")
            else:
                for port, set_name in self._named_sets(e.port, e.protocol):
                    lines.append(
                        f"-p {proto} -m set --match-set {set_name} dst -m {proto} --dport {port} "
                        f"-m comment --comment {_quote(f'named port {e.port}')} {mark}"
                    )
        return name

    def _policy_chain(self, k: int, direction: str) -> str:
        pol = self.policies[k]
        tag = f"{pol.key}|{direction}"
        name = _hash("KUBE-NWPLCY-", tag)
        if name in self.chains:
            return name
        lines = self._chain(name)
        peer_dir, addr_flag = ("dst", "-d") if direction == "Egress" else ("src", "-s")
        for i, rule in enumerate(pol.rules(direction)):
            rid = self.rule_number[(k, direction, i)]
            comment = f"-m comment --comment {_quote(f'{pol.key} {direction.lower()}[{i}]')}"
            target = f"-j {self._ports_chain(rule, rid, tag)}" if rule.ports else self._mark(rid)
            if not rule.peers:
                lines.append(f"{comment} {target}")
            for peer in rule.peers:
                if peer.ip_block is None:
                    set_name = self._peer_set(peer, pol.namespace)
                    lines.append(f"-m set --match-set {set_name} {peer_dir} {comment} {target}")
                    continue
                parts = ipv4_block(peer.ip_block)
                if parts is None:
                    continue  # IPv6: no IPv4 address is in it
                cidr = peer.ip_block.cidr
                if not peer.ip_block.excepts:
                    lines.append(f"{addr_flag} {cidr} {comment} {target}")
                    continue
                block = _hash("KUBE-NWBLCK-", f"{tag}|{rid}|{peer.ip_block!r}")
                blines = self._chain(block)
                if not blines:
                    for e in peer.ip_block.excepts:
                        blines.append(f"{addr_flag} {e} -j RETURN")
                    blines.append(f"{addr_flag} {cidr} {target}")
                lines.append(f"{addr_flag} {cidr} {comment} -j {block}")
            lines.append(f"-m mark --mark 0x{ACCEPT_MARK:08x}/0x{ACCEPT_MARK:08x} -j RETURN")
        return name

    def _build(self) -> None:
        main = self._chain(MAIN_CHAIN)
        egress = self._chain(EGRESS_CHAIN)
        ingress = self._chain(INGRESS_CHAIN)
        main.append("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        main.append(f"-j {EGRESS_CHAIN}")
        main.append(f"-j {INGRESS_CHAIN}")
        addrs: dict[int, list[int]] = {}
        for ip, i in sorted(self.pod_of_ip.items()):
            addrs.setdefault(i, []).append(ip)
        allowed = f"-m mark --mark 0x{ACCEPT_MARK:08x}/0x{ACCEPT_MARK:08x} -j RETURN"
        clear = f"-j MARK --set-xmark 0x0/0x{MARK_MASK:08x}"
        for i in range(len(self.pods)):
            pod = self.pod_name(i)
            for direction, dispatch, prefix, flag in (
                ("Egress", egress, "KUBE-POD-EG-", "-s"),
                ("Ingress", ingress, "KUBE-POD-IN-", "-d"),
            ):
                selecting = self.selecting[direction][i]
                if not selecting or i not in addrs:
                    continue
                chain = _hash(prefix, pod)
                lines = self._chain(chain)
                lines.append(clear)  # the egress side's bits must not allow the ingress side
                for k in selecting:
                    pol_chain = self._policy_chain(k, direction)
                    lines.append(
                        f"-m comment --comment {_quote(f'policy {self.policies[k].key}')} "
                        f"-j {pol_chain}"
                    )
                    lines.append(allowed)
                lines.append(
                    f"-m comment --comment {_quote(f'no policy allows {pod} {direction.lower()}')}"
                    " -j DROP"
                )
                for ip in addrs[i]:
                    dispatch.append(
                        f"{flag} {u32_to_ip(ip)}/32 -m comment --comment "
                        f"{_quote(f'{pod} {direction.lower()}')} -g {chain}"
                    )

    # ---------------------------------------------------------------- text
    def _render_rules(self) -> str:
        out = ["*filter"]
        out += [f":{name} - [0:0]" for name in self.chains]
        for name, lines in self.chains.items():
            out += [f"-A {name} {line}" for line in lines]
        out.append("COMMIT")
        return "\n".join(out) + "\n"

    def render_sets(self) -> str:
        out = []
        for name, members in self.sets.items():
            out.append(f"create {name} hash:ip family inet hashsize 1024 maxelem 65536")
            out += [f"add {name} {m}" for m in members]
        return "\n".join(out) + ("\n" if out else "")

    def render(self) -> str:
        return self.render_sets() + self.text

    # ---------------------------------------------------------------- engine
    def _lower(self) -> None:
        from .._cext.chains import ChainPolicy
        from .._cext.vstable import IPSet
        from ..netfilter.iptables_parse import parse
        from .lowering import lower

        self.ruleset = parse(self.text, family="IPv4", complete=True)  # sets: ours
        low = lower(self.ruleset)
        self.lowered = low
        index = {name: k for k, name in enumerate(low.chain_names)}
        sets = [IPSet(name, "hash:ip", self.sets[name]) for name in low.set_names]
        self.stage = ChainPolicy(
            low.rules,
            low.hot,
            low.chains,
            low.port_ranges,
            sets,
            index[("filter", EGRESS_CHAIN)],
            index[("filter", INGRESS_CHAIN)],
        )
        self._rows: list[tuple[str, int, str]] | None = None

    def rule_at(self, row: int) -> tuple[str, int, str]:
        """(chain, position, text) of a lowered row (traces)."""
        if self._rows is None:
            from ..netfilter.iptables_text import render_rule

            rows: list[tuple[str, int, str]] = []
            low = self.lowered
            by_chain: dict[str, list[Any]] = {}
            for rule in self.ruleset.tables["filter"].rules:
                by_chain.setdefault(rule.chain, []).append(rule)
            for _, cname in low.chain_names:
                for k, rule in enumerate(by_chain.get(cname, [])):
                    rows.append((cname, k, render_rule(rule)))
            self._rows = rows
        return self._rows[row]
