"""``kproxy-emu verify`` and ``kproxy-emu calibrate`` (real kernel; root).

The main CLI registers them with ``add_parsers(subparsers)``. Exit codes follow the CLI's:
0 agreement, 1 a disagreement, 2 bad input, not root, a missing tool or a lab failure (a
flow the lab lost: LabUnavailable and LabError are KproxyErrors, which the main CLI turns
into one line and exit 2), 128 + the signal's number when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import InputError

DEFAULT_CALIBRATION = Path.home() / ".cache" / "kproxy-emu" / "calibration.json"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,N,..., got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive counts, got {text!r}")
    return values


def add_parsers(sub) -> None:
    from . import _node_options

    p = sub.add_parser(
        "verify",
        help="load a node's rules into a real kernel (network "
        "namespaces, root) and compare its verdicts with the emulator's",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="manifest files or directories")
    _node_options(p, modes=("iptables", "nftables"))
    if "--service-cidr" not in p._option_string_actions:  # older main CLIs lack it
        p.add_argument(
            "--service-cidr",
            action="append",
            metavar="CIDR",
            help="service ClusterIP range for the nftables mode (repeat; "
            "default: the manifests' ServiceCIDR objects)",
        )
    p.add_argument(
        "--packets",
        type=int,
        default=2000,
        help="new flows sent at the node's service frontends (2000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for flows and choices (0)")
    p.add_argument(
        "--distribution-classes",
        type=int,
        default=4,
        help="flow classes with a random endpoint choice tested for their distribution (4)",
    )
    p.add_argument(
        "--distribution-flows",
        type=int,
        default=300,
        help="flows per distribution class, at least (300)",
    )
    p.add_argument(
        "--policies",
        action="store_true",
        help="NetworkPolicy: also load the policy stage's chains form (ipsets and filter "
        "chains) and compare pod-pod, pod-service, external-pod and host-pod connections "
        "with the emulator (policy_engine chains) and with allowed() (docs/networkpolicy.md)",
    )
    p.add_argument(
        "--pod-pairs",
        type=int,
        default=2000,
        metavar="N",
        help="--policies: pod-to-pod flows sampled from pairs x probed ports (2000)",
    )
    p.add_argument(
        "--service-flows",
        type=int,
        default=1000,
        metavar="N",
        help="--policies: flows at Service frontends (1000)",
    )
    p.add_argument(
        "--nodes",
        choices=("routes", "vxlan"),
        help="the multi-node lab: one namespace per Node joined by this CNI model, "
        "--packets flows against ClusterDataplane (docs/cluster.md)",
    )
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "calibrate",
        help="measure kernel costs in a lab (root): load time "
        "and first-packet latency per rule, written as JSON for bench",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help=f"output JSON (default {DEFAULT_CALIBRATION}; - for stdout)",
    )
    p.add_argument(
        "--services",
        type=_int_list,
        default=[100, 1000, 5000, 10000, 20000],
        metavar="LIST",
        help="service counts (100,1000,5000,10000,20000)",
    )
    p.add_argument(
        "--samples", type=int, default=200, help="timed connections per rule position (200)"
    )
    p.add_argument(
        "--positions", type=int, default=5, help="rule positions probed per service count (5)"
    )
    p.add_argument(
        "--modes",
        default="iptables,nftables",
        metavar="LIST",
        help="modes to calibrate (iptables,nftables; userspace: a real userspace TCP "
        "relay's per-connection and per-byte overhead, opt-in)",
    )
    p.add_argument(
        "--relay-bytes",
        type=int,
        default=64 << 20,
        metavar="N",
        help="userspace: bytes per bulk upload through the relay and direct (64 MiB)",
    )
    p.add_argument(
        "--relay-repeats",
        type=int,
        default=5,
        metavar="N",
        help="userspace: bulk uploads per path, median reported (5)",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the other modes' entries of an existing --out file (e.g. add userspace "
        "to a kernel calibration)",
    )
    p.add_argument(
        "--backend",
        choices=("nft", "legacy"),
        default="nft",
        help="iptables backend: nft (Debian's default) or legacy (x_tables)",
    )
    p.add_argument(
        "--syncs",
        action="store_true",
        help="measure the kernel's programming time of syncs instead: full loads and "
        "single-change syncs (an endpoint added or removed, a service added or deleted) "
        "at --services, fitted into the calibration's sync_model (what SyncResult and "
        "the step API predict with)",
    )
    p.add_argument(
        "--validate",
        type=_int_list,
        default=[],
        metavar="LIST",
        help="with --syncs: service counts measured after the fit and not used by it; "
        "each prediction's error is printed and kept (sync_validation)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="with --syncs: syncs of each change per service count (3)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the clusters (0)")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..lab.compare import verify
    from ..lab.env import check

    if args.packets < 0:
        raise InputError("must be >= 0", field="--packets", value=args.packets)
    if getattr(args, "policies", False):
        return _verify_policies(args)
    if getattr(args, "nodes", None):
        from ..cluster_net import ClusterDataplane
        from ..lab.multinode import verify_nodes
        from ..model import Cluster

        cdp = ClusterDataplane(Cluster.from_files(args.files), "iptables", cni=args.nodes,
                               seed=args.seed, cluster_cidr=args.cluster_cidr)  # fmt: skip
        rep = verify_nodes(cdp, cluster_cidr=args.cluster_cidr, flows=args.packets, seed=args.seed)
        print(rep.table())
        return 0 if rep.ok and not rep.unexplained else 1
    dp = _lab_dataplane(args)
    check(dp.mode)
    report = verify(
        dp.cluster,
        dataplane=dp,
        packets=args.packets,
        seed=args.seed,
        distribution_classes=args.distribution_classes,
        distribution_flows=args.distribution_flows,
    )
    print(report.table())
    return 0 if report.ok else 1


def _verify_policies(args: argparse.Namespace) -> int:
    from ..lab.env import check
    from ..lab.policy import twin_without_policy, verify_policies

    for name in ("pod_pairs", "service_flows"):
        if getattr(args, name) < 0:
            raise InputError(
                "must be >= 0", field="--" + name.replace("_", "-"), value=getattr(args, name)
            )
    args.policy_engine = "chains"
    dp = _lab_dataplane(args)
    check(dp.mode)
    report = verify_policies(
        dp.cluster,
        dataplane=dp,
        reference=twin_without_policy(dp),
        seed=args.seed,
        pod_pairs=args.pod_pairs,
        service_flows=args.service_flows,
    )
    print(report.table())
    return 0 if report.ok else 1


def _lab_dataplane(args: argparse.Namespace):
    """The main CLI's Dataplane for these options, in a mode the lab can run."""
    from ..lab.node import LAB_MODES
    from ..model.config import load_kube_proxy_config
    from . import _dataplane

    config = load_kube_proxy_config(args.config) if args.config else None
    mode = args.mode or (config.mode if config else "iptables")
    if mode not in LAB_MODES:
        raise InputError(
            "the lab runs iptables or nftables (this kernel has no IPVS)",
            field="--mode",
            value=mode,
        )
    return _dataplane(args)


def _cmd_calibrate(args: argparse.Namespace) -> int:

    from ..lab.calibrate import calibrate
    from ..lab.env import check

    if args.samples <= 0 or args.positions < 2:
        raise InputError(
            "need --samples >= 1 and --positions >= 2",
            field="--samples/--positions",
            value=(args.samples, args.positions),
        )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("iptables", "nftables", "userspace")]
    if bad or not modes:
        raise InputError(
            "modes are iptables, nftables and userspace", field="--modes", value=args.modes
        )
    if args.relay_bytes < 2 or args.relay_repeats <= 0:
        raise InputError(
            "need --relay-bytes >= 2 and --relay-repeats >= 1",
            field="--relay-bytes/--relay-repeats",
            value=(args.relay_bytes, args.relay_repeats),
        )
    if args.merge and args.out == "-":
        raise InputError("--merge needs a file", field="--out", value=args.out)
    for mode in modes:
        check(None if mode == "userspace" else mode, args.backend)
    if args.syncs:
        return _calibrate_syncs(args, modes)
    if args.validate:
        raise InputError("only with --syncs", field="--validate", value=args.validate)

    def progress(run, seconds):
        if not hasattr(run, "services"):  # the userspace relay
            print(
                f"userspace relay: {run.ns_per_connection / 1000:.1f} us per connection "
                f"(direct {run.direct_connect_ns / 1000:.1f} us, relay "
                f"{run.relay_connect_ns / 1000:.1f} us), {run.ns_per_byte:.3f} ns per byte "
                f"(direct {run.direct_ns_per_byte:.3f}, relay {run.relay_ns_per_byte:.3f}); "
                f"the endpoint saw {run.server_saw} [{seconds:.1f} s]",
                file=sys.stderr,
            )
            return
        print(
            f"{run.mode:>8} {run.services:>6} services: load {run.load_seconds:.3f} s "
            f"({run.lines} lines), {run.ns_per_step:.1f} ns per "
            + ("rule" if run.mode == "iptables" else "map position")
            + "; medians "
            + ", ".join(f"#{p.position}: {p.median_us:.1f} us" for p in run.positions)
            + f" [{seconds:.1f} s]",
            file=sys.stderr,
        )

    result = calibrate(
        args.services,
        samples=args.samples,
        positions=args.positions,
        seed=args.seed,
        backend=args.backend,
        modes=modes,
        progress=progress,
        relay_bytes=args.relay_bytes,
        relay_repeats=args.relay_repeats,
    )
    out = _write_calibration(args, result)
    if out is None:
        return 0
    for mode, entry in result["modes"].items():
        if mode == "userspace":
            print(
                f"{mode}: {entry['ns_per_connection'] / 1000:.1f} us per connection, "
                f"{entry['ns_per_byte']:.3f} ns per byte",
                file=sys.stderr,
            )
            continue
        per = (
            f"{entry['ns_per_rule']:.1f} ns per rule"
            if "ns_per_rule" in entry
            else f"{entry['ns_per_lookup']:.1f} ns per lookup"
        )
        print(f"{mode}: {per}, base {entry['base_ns'] / 1000:.1f} us", file=sys.stderr)
    print(f"written to {out}", file=sys.stderr)
    return 0


def _calibrate_syncs(args: argparse.Namespace, modes: list[str]) -> int:
    """``calibrate --syncs``: sync timings, the fitted model and its validation."""

    from ..lab.calibrate import calibrate_syncs

    if "userspace" in modes:
        raise InputError(
            "--syncs measures iptables and nftables", field="--modes", value=args.modes
        )
    if args.repeats <= 0 or min(args.services + args.validate, default=1) < 1:
        raise InputError(
            "need --repeats >= 1 and service counts >= 1",
            field="--repeats/--services",
            value=(args.repeats, args.services),
        )

    def progress(mode, n, timings, seconds):
        full = next(t for t in timings if t.kind == "full")
        updates = sorted(t.seconds for t in timings if t.kind != "full")
        print(
            f"{mode:>8} {n:>6} services: full {full.seconds:.3f} s ({full.lines} lines), "
            f"updates {updates[0] * 1e3:.1f}-{updates[-1] * 1e3:.1f} ms [{seconds:.1f} s]",
            file=sys.stderr,
        )

    result = calibrate_syncs(
        args.services,
        args.validate,
        modes=modes,
        repeats=args.repeats,
        seed=args.seed,
        backend=args.backend,
        progress=progress,
    )
    for row in result["sync_validation"]:
        print(
            f"{row['mode']:>8} {row['services']:>6} {row['kind']:<17} measured "
            f"{row['measured_s']:.4f} s, predicted {row['predicted_s']:.4f} s, "
            f"error {row['error']:+.0%}",
            file=sys.stderr,
        )
    out = _write_calibration(args, result)
    if out is not None:
        print(f"written to {out}", file=sys.stderr)
    return 0


def _write_calibration(args: argparse.Namespace, result: dict) -> Path | None:
    """``--out``: the JSON on stdout ("-": None), else the file (merged into the one
    there with ``--merge``); its path."""
    import json

    from ..lab.calibrate import merge, write

    if args.out == "-":
        print(json.dumps(result, indent=2))
        return None
    out = Path(args.out) if args.out else DEFAULT_CALIBRATION
    os.makedirs(out.parent, exist_ok=True)
    if args.merge and out.exists():
        result = merge(json.loads(out.read_text(encoding="utf-8")), result)
    write(result, str(out))
    return out
