"""The nftables mode as the lab needs it, while ``Dataplane`` has no "nftables" mode yet.

``NftNode`` offers the part of Dataplane's interface the lab uses (``mode``, ``cluster``,
``options``, ``render()`` giving ``nft -f`` input, ``trace(packet, origin)`` with the same
``outcomes``/``steps`` shape), built from the nftables compiler (modes/nftables.py) and its
reference evaluator (dataplane/nft_reference.py). ``lab_dataplane`` returns a real
Dataplane whenever it supports the mode, so this adapter drops out once it does.
"""
from __future__ import annotations

from ..dataplane.reference import Flow
from ..errors import InputError
from ..packets import ORIGIN_NAMES, PROTO_NAMES, parse, u32_to_ip


class NftNode:
    mode = "nftables"

    def __init__(self, cluster, node: str | None = None, *, node_config=None, node_ips=None,
                 config=None, cluster_cidr: str | None = None, masquerade_all=None,
                 mark_text: str | None = None, service_cidrs: list[str] | None = None,
                 seed: int = 0):
        from ..dataplane.dataplane import resolve_node
        from ..modes.nftables import compile_nftables, service_cidrs_for
        from ..proxy import ProxyOptions, ProxyView
        self.cluster = cluster
        self.seed = seed
        node_cfg = resolve_node(cluster, node, node_config, node_ips)
        self.options = ProxyOptions.build(node_cfg, config, cluster_cidr=cluster_cidr,
                                          masquerade_all=masquerade_all, mark_text=mark_text)
        self.view = ProxyView(cluster, self.options)
        self.service_cidrs = service_cidrs_for(cluster, override=service_cidrs)
        self.table = compile_nftables(self.view, service_cidrs=self.service_cidrs)
        self._evaluator = None

    def render(self) -> str:
        """``nft -f`` input in a loadable order."""
        from ..netfilter.nft_text import render_nft_file
        return render_nft_file(self.table)

    def trace(self, packet: str, origin: str | None = None) -> dict:
        from ..dataplane.nft_reference import NftEvaluator, evaluate_nft_flow
        from ..packets import resolve_origins
        row = parse(packet, origin=origin)
        if origin is None:
            pods = [self.options.detect_local_value] if self.options.detect_local_value else []
            row = resolve_origins(row, pods, [ip for ip in self.options.node.local_ips
                                              if ":" not in ip])
        r = row[0]
        flow = Flow(str(u32_to_ip(int(r["src_ip"]))), str(u32_to_ip(int(r["dst_ip"]))),
                    PROTO_NAMES[int(r["proto"])].lower(), int(r["src_port"]),
                    int(r["dst_port"]), ORIGIN_NAMES[int(r["origin"])])
        if self._evaluator is None:
            self._evaluator = NftEvaluator(self.table, self.options.node.local_ips)
        outcome = evaluate_nft_flow(self._evaluator, flow)
        steps = [{"table": t, "chain": c, "rule": i, "text": text, "matched": m}
                 for b in outcome.branches for t, c, i, text, m in b.steps]
        return {
            "packet": packet, "from": flow.origin,
            "outcomes": [{"probability": b.prob, "verdict": b.verdict or "ACCEPT",
                          "dnat": b.dnat, "masquerade": b.snat} for b in outcome.branches],
            "candidates": [{"endpoint": ep, "probability": p, "masquerade": m}
                           for ep, p, m in outcome.candidates],
            "steps": steps,
            "cost": {"rules_evaluated": max((b.rules_evaluated for b in outcome.branches),
                                            default=0), "lookups": 0},
        }


def lab_dataplane(cluster, mode: str = "iptables", node: str | None = None, **options):
    """A Dataplane for ``mode``, or the NftNode adapter when Dataplane lacks nftables."""
    from ..dataplane.dataplane import MODES, Dataplane
    if mode in MODES:
        return Dataplane(cluster, mode, node=node, **options)
    if mode == "nftables":
        options.pop("conntrack", None)
        return NftNode(cluster, node, **options)
    raise InputError("the lab runs iptables or nftables", field="mode", value=mode)
