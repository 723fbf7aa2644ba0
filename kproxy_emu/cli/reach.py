"""``kproxy-emu reach``: the pod-to-pod NetworkPolicy reachability matrix.

The main CLI registers it with ``add_parser(subparsers)``. Text output is the Kubernetes
e2e tests' truth-table printout (test/e2e/network/netpol/truthtable.go PrettyPrint): a
header row ``-`` then the destination pods, one row per source pod, ``.`` allowed, ``X``
denied, tab-separated. ``--json`` prints exactly
``{"pods": [...], "port": P, "protocol": "TCP", "allowed": [[...], ...]}`` (rows: source).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from ..errors import InputError


class NoServiceWarning(UserWarning):
    """--via-service: a destination pod no Service reaches on the probed port."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reach",
        help="print the pod-to-pod NetworkPolicy reachability matrix (. allowed, X denied)",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="manifest files or directories")
    p.add_argument("--port", type=int, default=80, help="destination port to probe (80)")
    p.add_argument(
        "--protocol",
        type=str.upper,
        default="TCP",
        choices=("TCP", "UDP", "SCTP"),
        help="protocol to probe (TCP)",
    )
    p.add_argument(
        "--via-service",
        action="store_true",
        help="probe each destination through a Service selecting it (its ClusterIP and the "
        "port whose targetPort is --port on that pod), as the e2e tests do; a destination "
        "no Service reaches is denied, with a warning",
    )
    p.add_argument("--json", action="store_true", help="print the matrix as JSON")
    p.set_defaults(func=cmd_reach)


def cmd_reach(args: argparse.Namespace) -> int:
    from ..model import Cluster
    from ..policy import compile_policies, probe_pods, reachability, service_frontends

    if not 1 <= args.port <= 65535:
        raise InputError("must be between 1 and 65535", field="--port", value=args.port)
    cluster = Cluster.from_files(args.files)
    policies = compile_policies(cluster.network_policies.values())
    pods = probe_pods(cluster, None)
    if not pods:
        raise InputError("no pod with an IP to probe in the manifests", field="FILE")
    names, allowed = reachability(cluster, args.port, args.protocol, pods, policies=policies)
    if args.via_service:
        frontends = service_frontends(cluster, pods, args.port, args.protocol)
        missing = [n for n, f in zip(names, frontends) if f is None]
        for j, f in enumerate(frontends):
            if f is None:
                allowed[:, j] = False
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            warnings.warn(
                NoServiceWarning(
                    f"no Service reaches {len(missing)} pod(s) on {args.port}/{args.protocol} "
                    f"(denied in the matrix): {', '.join(missing[:5])}{more}"
                ),
                stacklevel=1,
            )
    if args.json:
        doc = {
            "pods": names,
            "port": args.port,
            "protocol": args.protocol,
            "allowed": allowed.tolist(),
        }
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    lines = ["\t".join(["-", *names])]
    for name, row in zip(names, allowed.tolist()):
        lines.append("\t".join([name, *("." if v else "X" for v in row)]))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
