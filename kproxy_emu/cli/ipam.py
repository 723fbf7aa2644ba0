"""``kproxy-emu ipam``: the IP address management report (docs/ipam.md).

The main CLI registers it with ``add_parser(subparsers)``. Text on stdout: each range and
where it came from, utilisation of the pod and service ranges, nodes and Services left
before exhaustion. What a planner must act on (overlaps, conflicts, exhaustion) are
warnings on stderr, one line each (``kproxy-emu: warning: ...``); exit 0 with warnings, 2
on bad input. ``--json`` prints the report as one JSON object (warnings included).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any


class IpamWarning(UserWarning):
    """An overlap, conflict or exhaustion the IPAM report found."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ipam",
        help="report pod and service range utilisation, what is left, and overlaps",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="manifest files or directories")
    p.add_argument(
        "--cluster-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="pod range kube-controller-manager splits into node podCIDRs (repeat, or "
        "comma-separate, for dual-stack); default: covering the nodes' podCIDRs",
    )
    p.add_argument(
        "--service-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="service ClusterIP range (repeatable); default: the ServiceCIDR objects",
    )
    p.add_argument("--node-cidr-mask-size", type=int, metavar="N", help="node podCIDR size")
    p.add_argument("--node-cidr-mask-size-ipv4", type=int, metavar="N", help="(24)")
    p.add_argument("--node-cidr-mask-size-ipv6", type=int, metavar="N", help="(64)")
    p.add_argument(
        "--node-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="network of the nodes' addresses (repeatable); default: the /24 (/64) of each "
        "node's InternalIP",
    )
    p.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="CIDR",
        help="a range outside the cluster the cluster must reach (VPN, office, peered "
        "VPC; repeatable)",
    )
    p.add_argument(
        "--allocator",
        choices=("ipaddress", "bitmap"),
        default="ipaddress",
        help="ClusterIP allocator: ipaddress (ServiceCIDR objects, the default since "
        "Kubernetes 1.33) or bitmap (the older --service-cluster-ip-range one, IPv6 capped "
        "at 65536 addresses)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_ipam)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def cmd_ipam(args: argparse.Namespace) -> int:
    from ..ipam.report import report
    from ..model import Cluster

    cluster = Cluster.from_files(args.files)
    rep = report(
        cluster,
        cluster_cidrs=_split(args.cluster_cidr),
        service_cidrs=_split(args.service_cidr),
        node_cidr_mask_size=args.node_cidr_mask_size,
        node_cidr_mask_size_ipv4=args.node_cidr_mask_size_ipv4,
        node_cidr_mask_size_ipv6=args.node_cidr_mask_size_ipv6,
        node_networks=_split(args.node_network),
        externals=_split(args.external),
        allocator=args.allocator,
    )
    if args.json:
        sys.stdout.write(json.dumps(rep.to_dict()) + "\n")
    else:
        sys.stdout.write(rep.text())
    sys.stdout.flush()
    for line in rep.warnings:
        warnings.warn(IpamWarning(line), stacklevel=1)
    return 0
