"""``kproxy-emu process``: a capture of real traffic through one node's dataplane.

The main CLI registers it with ``add_parser(subparsers)``. It reads the capture
(``--pcap``, pcap or pcapng: kproxy_emu.pcap), runs its IPv4 TCP / UDP / SCTP packets
through the node built from the manifests (the node flags of ``trace``), prints the
verdict counts and the packets skipped by reason, and with ``--out`` writes the
translated packets as a pcap (what the node would emit; dropped ones left out).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InputError


def add_parser(sub: Any) -> None:
    from . import _node_options, _policy_option

    p = sub.add_parser(
        "process",
        help="run a pcap/pcapng capture through a node and count the verdicts",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="manifest files or directories")
    p.add_argument(
        "--pcap",
        required=True,
        metavar="IN.pcap",
        help="the capture (pcap or pcapng; Ethernet, Linux cooked SLL/SLL2 or raw IP)",
    )
    _node_options(p)
    p.add_argument(
        "--pod-cidr",
        action="append",
        metavar="CIDR",
        help="sources in it enter from a pod (repeat); with --node-ip (the node's own "
        "addresses: the host) this classifies the capture's packets; without either, "
        "the node classifies them (its cluster CIDR, its addresses)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the node's random stream (0)")
    p.add_argument("--out", metavar="OUT.pcap", help="write the translated packets as a pcap")
    p.add_argument(
        "--absolute-time",
        action="store_true",
        help="emulated time is the capture's epoch time (default: from its first packet)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _policy_option(p, "enforce the manifests' NetworkPolicies on new flows after the DNAT")
    p.set_defaults(func=cmd_process)


def cmd_process(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import pcap
    from ..packets import Action
    from . import _dataplane

    capture = pcap.read(
        args.pcap,
        node_ips=args.node_ip or (),
        pod_cidrs=args.pod_cidr or (),
        relative=not args.absolute_time,
    )
    if not args.files and not getattr(args, "iptables_save", None):
        raise InputError("give manifest files", field="FILE")
    dp = _dataplane(args)
    verdicts = dp.process(capture.packets)
    counts = {a.name: int(np.count_nonzero(verdicts["action"] == a)) for a in Action}
    written = pcap.write(args.out, capture, verdicts) if args.out else None
    result = {
        "pcap": args.pcap,
        "mode": dp.mode,
        "packets_read": capture.total,
        "packets": len(capture.packets),
        "skipped": capture.skipped,
        "reordered": capture.reordered,
        "origins": pcap.origins_named(capture),
        "verdicts": counts,
        "ct_hit": int(np.count_nonzero(verdicts["ct_hit"])),
        "out": args.out,
        "written": written,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(capture.summary())
    print(
        "verdicts: "
        + ", ".join(f"{name} {n}" for name, n in counts.items())
        + f" ({result['ct_hit']} conntrack hits)"
    )
    if args.out:
        print(f"wrote {written} translated packets to {args.out}")
    return 0
