"""``kproxy-emu trace --from-pod NS/NAME --to NAME:PORT FILES...``: the end-to-end trace
over the whole cluster (kproxy_emu.cluster_net.e2e), every step in order, as text or
``--json``. The main CLI adds the options to ``trace`` with ``add_options`` and hands the
command here when ``--to`` is given."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InputError


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("end-to-end over the cluster (instead of --packet)")
    g.add_argument(
        "--to",
        metavar="DEST:PORT",
        help="trace a connection over every node: a DNS name (resolved as the pod's "
        "resolver does), an IP, a pod NAMESPACE/NAME or (with --from-external) a node name",
    )
    g.add_argument("--from-pod", metavar="NS/NAME", help="the client pod")
    g.add_argument(
        "--from-external",
        metavar="IP",
        nargs="?",
        const="203.0.113.7",
        help="an outside client (default 203.0.113.7) entering at --via-node",
    )
    g.add_argument("--via-node", metavar="NODE", help="where an outside client enters")
    g.add_argument(
        "--cni",
        choices=("routes", "vxlan"),
        default="routes",
        help="how nodes are joined: flat host routes (Calico BGP, kubenet) or a VXLAN "
        "overlay (Flannel: MTU 1450) (routes)",
    )
    g.add_argument("--protocol", choices=("tcp", "udp", "sctp"), default="tcp", help="(tcp)")
    g.add_argument(
        "--length",
        type=int,
        default=None,
        metavar="BYTES",
        help="IP packet length, checked against each link's MTU (default 60)",
    )


def wanted(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k, None) is not None for k in ("to", "from_pod", "from_external", "via_node")
    )


def cmd(args: argparse.Namespace) -> int:
    from ..cluster_net import ClusterDataplane
    from ..cluster_net.e2e import end_to_end
    from ..cluster_net.network import DEFAULT_LENGTH
    from ..model import Cluster
    from ..model.config import load_kube_proxy_config

    if args.packet:
        raise InputError("give --packet (one node) or --to (the cluster), not both", field="--to")
    if not args.to:
        raise InputError("give the destination", field="--to")
    for flag, value in (
        ("--iptables-save", args.iptables_save),
        ("--node", args.node),
        ("--node-config", args.node_config),
        ("--node-ip", args.node_ip),
        ("--time", args.time),
        ("--from", args.origin),
    ):
        if value:
            raise InputError("applies to a one-node --packet trace, not to --to", field=flag)
    if not args.files:
        raise InputError("give manifest files", field="FILE")
    if args.seed < 0:
        raise InputError("must be a non-negative integer", field="--seed", value=args.seed)
    length = DEFAULT_LENGTH if args.length is None else args.length
    if not 20 <= length <= 65535:
        raise InputError("must be 20-65535 bytes", field="--length", value=length)
    config = load_kube_proxy_config(args.config) if args.config else None
    mode = args.mode or (config.mode if config else "iptables")
    cluster = Cluster.from_files(args.files)
    from . import _mode_options

    cdp = ClusterDataplane(
        cluster,
        _mode_options(mode, args, None),
        cni=args.cni,
        seed=args.seed,
        policy_engine=args.policy_engine,
        config=config,
        cluster_cidr=args.cluster_cidr,
        masquerade_all=args.masquerade_all,
    )
    result = end_to_end(
        cdp,
        to=args.to,
        from_pod=args.from_pod,
        from_external=args.from_external,
        via_node=args.via_node,
        protocol=args.protocol,
        length=length,
        all_rules=args.all_rules,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(format_e2e(result)))
    return 0 if result["failed"] is None else 1


def _indent(lines: list[str], pad: str = "     ") -> list[str]:
    return [pad + line for line in lines]


def _cluster_steps(steps: list[dict[str, Any]], n: int, out: list[str]) -> int:
    from .trace_text import format_trace

    for s in steps:
        kind = s["step"]
        if kind == "proxy":
            tr = s["trace"]
            n += 1
            out.append(f"{n}. proxy on {s['node']}: {s['packet']}")
            detail = f"conntrack {tr['conntrack']}, verdict {tr['verdict']}"
            if tr["dnat"]:
                detail += f", DNAT to {tr['dnat']}"
            if tr.get("snat"):
                detail += f", source becomes {tr['snat']}"
                if tr["masquerade"]:
                    detail += " (masquerade)"
            out.append(f"     {detail}")
            out.extend(_indent(format_trace(tr), "       "))
        elif kind == "policy":
            n += 1
            pol = s["policy"]
            out.append(
                f"{n}. NetworkPolicy on {s['node']} ({pol['engine']}): "
                f"{'allowed' if pol['allowed'] else 'DENIED'}"
            )
            for side in ("egress", "ingress"):
                if pol.get(side):
                    out.append(f"     {side}: {pol[side]['text']}")
        elif kind == "route":
            n += 1
            mtu = f" [MTU {s['mtu']}]" if s.get("mtu") else ""
            out.append(f"{n}. route: {s['text']}{mtu}{'' if s['ok'] else ': FAILED'}")
        elif kind == "deliver":
            n += 1
            out.append(f"{n}. deliver on {s['node']}: {s['text']}")
    return n


def format_e2e(result: dict[str, Any]) -> list[str]:
    out: list[str] = []
    src = result["from"] or {}
    who = src.get("pod") or src.get("ip")
    out.append(
        f"end-to-end: {who} ({src.get('kind')}, on {src.get('node')}) -> {result['to']}"
        f"  [mode {result['mode']}, cni {result['cni']}]"
    )
    n = 0
    for s in result["steps"]:
        if s["step"] == "dns":
            n += 1
            out.append(
                f"{n}. dns: resolve {s['name']} (search {' '.join(s['search'])}, "
                f"ndots:{s['ndots']})"
            )
            for q in s["tries"]:
                out.append(f"     query A {q['qname']}: {q['rcode']}, {q['answers']} answers")
            if s["answer"]:
                out.append(f"     answer: {', '.join(s['answer'])} (from {s['answered']})")
            else:
                out.append(f"     no answer: {s['status']}")
            q = s.get("query_packet")
            if q is None:
                out.append(f"     ({s.get('note', 'the query packet is not traced')})")
            else:
                out.append(
                    f"     the query packet: {q['packet']}: {q['outcome']} "
                    f"(path {q['path']}, at {q['node']} {q['delivered_to'] or ''})"
                )
                sub: list[str] = []
                _cluster_steps(q["steps"], 0, sub)
                out.extend(_indent(sub, "       "))
        elif s["step"] == "reply":
            rep = s["trace"]
            n += 1
            out.append(f"{n}. reply: {s['packet']} (enters {rep['entry']})")
            sub = []
            _cluster_steps(rep["steps"], 0, sub)
            out.extend(_indent(sub, "     "))
            if s.get("text"):
                out.append(f"     {s['text']}")
        else:
            n = _cluster_steps([s], n, out)
    if result["failed"]:
        f = result["failed"]
        out.append(f"FAILED at {f['step']}: {f['reason']}")
    else:
        d = result.get("delivered") or {}
        pod = f" (pod {d['pod']})" if d.get("pod") else ""
        out.append(
            f"result: {result['outcome']} to {d.get('address')}{pod} on {d.get('node')} "
            f"via {result.get('path')}, seen from {d.get('source_seen')}; the reply came back"
        )
    return out
