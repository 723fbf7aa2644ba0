"""The ``kproxy-emu`` command line.

Exit codes: 0 success, 1 a check found a disagreement, 2 bad input or usage, 128 + the
signal's number when SIGINT, SIGTERM or SIGHUP stopped it (130, 143, 129). Errors are one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from .. import signals
from ..errors import InputError, KproxyError

if TYPE_CHECKING:
    from ..dataplane.backend import ModeOptions
    from ..netfilter.ruleset import Ruleset

PROG = "kproxy-emu"
_MODES = ("iptables", "nftables", "ipvs", "userspace", "ebpf")  # dataplane.MODES (imported lazily)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own usage errors: exit 2, one line
        raise SystemExit(_fail(f"{message} (see {self.prog} --help)"))


def _flagged(exc: InputError, flags: dict[str, str]) -> InputError:
    """An error of a library argument named as the flag the user typed (``type_mix.Foo``
    → ``--type-mix Foo``); other errors unchanged."""
    m = re.fullmatch(r"([a-z_]+)\.?(.*)", exc.field or "")
    if exc.file is not None or m is None:
        return exc
    if exc.field in flags:
        field = flags[exc.field]
    elif m.group(1) in flags:
        field = flags[m.group(1)] + (f" {m.group(2)}" if m.group(2) else "")
    else:
        return exc
    return InputError(exc.message, obj=exc.obj, field=field, value=exc.value)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            mix[key.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=SHARE,..., got {text!r}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=SHARE,..., got {text!r}")
    return mix


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Packet-level emulator of the Kubernetes service "
        "dataplane (kube-proxy iptables, IPVS and nftables modes).",
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("synth", help="generate a synthetic cluster (seeded, deterministic)")
    p.add_argument("--services", type=int, default=1000, help="number of services (1000)")
    p.add_argument(
        "--endpoints",
        default="10",
        help="endpoints per service: K, fixed:K, uniform:A-B or poisson:MEAN (10)",
    )
    p.add_argument("--nodes", type=int, default=10, help="number of nodes (10)")
    p.add_argument(
        "--namespaces",
        type=int,
        default=0,
        help="number of namespaces (default: one per 50 services, at most 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument(
        "--type-mix",
        type=_mix,
        metavar="TYPE=SHARE,...",
        help="service type shares, e.g. ClusterIP=0.7,NodePort=0.1,LoadBalancer=0.1,"
        "ExternalName=0.05,Headless=0.05",
    )
    p.add_argument(
        "--protocol-mix",
        type=_mix,
        metavar="PROTO=SHARE,...",
        help="port protocol shares, e.g. TCP=0.9,UDP=0.1",
    )
    p.add_argument("--pods", action="store_true", help="also write a Pod for every endpoint")
    p.add_argument(
        "--policies",
        type=int,
        default=0,
        metavar="N",
        help="NetworkPolicies to generate (0); namespaces then carry team/env labels and "
        "pods their container ports (use with --pods)",
    )
    p.add_argument(
        "--policy-mix",
        type=_mix,
        metavar="KIND=SHARE,...",
        help="policy kind shares (default-deny=0.2,allow-from-namespace=0.3,"
        "allow-from-app=0.3,ipblock-egress=0.2)",
    )
    p.add_argument("--service-cidr", help="service ClusterIP range (172.16.0.0/12)")
    p.add_argument("--cluster-cidr", help="pod range, split into node pod CIDRs (10.0.0.0/8)")
    p.add_argument(
        "-o",
        "--output",
        default="-",
        help="output file: .json writes a kubectl List (fastest), anything else "
        "multi-document YAML; - for stdout (YAML); an existing file is kept unless --force",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("render", help="print the rules a mode installs on one node")
    p.add_argument("files", nargs="+", metavar="FILE", help="manifest files or directories")
    _node_options(p)
    p.add_argument(
        "--sorted", action="store_true", help="the normalised order kube-proxy's unit tests compare"
    )
    p.add_argument(
        "--format",
        choices=(
            "restore",
            "save",
            "ipvsadm-save",
            "ipvsadm-list",
            "ipset-save",
            "iptables-restore",
            "json",
        ),
        default="restore",
        help="restore: what kube-proxy loads (iptables-restore input, an nft -f "
        "script, ipvsadm -Sn; default); save: what the node lists afterwards "
        "(iptables-save with the built-in chain jumps, nft list ruleset, "
        "ipvsadm -Ln), to diff against a real node; ipvs mode also: "
        "ipvsadm-save, ipvsadm-list, ipset-save, iptables-restore; ebpf mode: restore is "
        "Cilium's dump of the LB maps, save bpftool map dump of each, json the maps as data",
    )
    _policy_option(
        p,
        "print the policy stage's text instead of the mode's: chains: the ipset "
        "restore lines and the iptables-restore input of its filter chains; "
        "identity: identities, ipcache and policy maps",
    )
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("trace", help="follow one packet through a node's rules")
    p.add_argument("files", nargs="*", metavar="FILE", help="manifest files or directories")
    p.add_argument(
        "--iptables-save",
        metavar="DUMP",
        help="trace through a node's own iptables-save output instead of rules "
        "compiled from manifests (give the node with --node-config or --node-ip)",
    )
    _node_options(p)
    p.add_argument(
        "--packet",
        action="append",
        metavar='"tcp SRC:SPORT -> DST:DPORT"',
        help="the packet: tcp, udp or sctp SRC:SPORT -> DST:DPORT, or icmp SRC -> DST; "
        "then optionally flags=LETTERS (tcp flags from F S R P A, or none; default S) "
        "and from=pod|external|host (where it enters, as --from), e.g. "
        '"tcp 10.0.1.5:40000 -> 172.16.0.1:80 flags=A from=pod". Repeat it to trace a '
        "sequence, each packet going through the node's state left by the ones before "
        "(conntrack, affinity)",
    )
    p.add_argument(
        "--time",
        type=float,
        action="append",
        metavar="T",
        help="emulated time of the packet in seconds (one per --packet, or one "
        "for all; default 0, then 1 s apart)",
    )
    p.add_argument(
        "--from",
        dest="origin",
        choices=("pod", "external", "host"),
        help="where it enters (default: from its source address)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the node's random stream (0)")
    p.add_argument(
        "--all-rules",
        action="store_true",
        help="show every rule the packet is tested against (default: the matched path)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _policy_option(
        p,
        "enforce the manifests' NetworkPolicies on new flows after the DNAT, "
        "as a CNI does; the trace shows the egress and ingress decisions",
    )
    from . import e2e_trace as e2e_cli

    e2e_cli.add_options(p)  # --from-pod/--to: the end-to-end trace over the cluster
    p.set_defaults(func=_cmd_trace)

    p = sub.add_parser(
        "bench-policy",
        help="NetworkPolicy stage cost: pods x policies x form (none, chains, identity)",
    )
    p.add_argument("--pods", default="1000", help="pod counts, N,N,... (1000)")
    p.add_argument("--policies", default="0,100,500", help="policy counts, N,N,... (0,100,500)")
    p.add_argument(
        "--policy-engines",
        default="none,chains,identity",
        metavar="LIST",
        help="forms to measure (none,chains,identity)",
    )
    p.add_argument("--packets", type=int, default=50_000, help="new flows per cell (50000)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell, best kept (3)")
    p.add_argument("--seed", type=int, default=0, help="seed for clusters and flows (0)")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON (- stdout)")
    p.set_defaults(func=_cmd_bench_policy)

    p = sub.add_parser("bench", help="compare the proxy modes' per-packet cost at scale")
    p.add_argument(
        "--services",
        type=_int_list,
        default=None,
        metavar="N,N,...",
        help="cluster sizes (default 1000,3000,10000)",
    )
    p.add_argument("--endpoints", type=int, default=10, help="endpoints per service (10)")
    p.add_argument(
        "--modes",
        type=_name_list,
        default=None,
        metavar="MODE,...",
        help="modes to compare: iptables,nftables,ipvs,userspace,ebpf (default: all five)",
    )
    p.add_argument(
        "--packets", type=int, default=100_000, help="packets per measured batch (100000)"
    )
    p.add_argument(
        "--new-flow-share",
        type=float,
        default=1.0,
        help="share of the new-flow batch that opens flows (1.0)",
    )
    p.add_argument(
        "--popularity",
        choices=("uniform", "zipf"),
        default="uniform",
        help="how services are picked (uniform)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for clusters and traffic (0)")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats per figure (3)")
    p.add_argument(
        "--ipvs-conn-tab-bits",
        type=_conn_tab_bits,
        metavar="N",
        help="the ip_vs module's conn_tab_bits for the ipvs cells, 8-20 (12)",
    )
    p.add_argument(
        "--userspace-payload-bytes",
        type=int,
        default=1448,
        metavar="N",
        help="userspace: bytes each relayed packet carries, for the bytes copied through "
        "the proxy (the packets have no length; 1448: a full segment at MTU 1500)",
    )
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="kernel costs from `kproxy-emu calibrate` (default: "
        "~/.cache/kproxy-emu/calibration.json when present)",
    )
    p.add_argument(
        "--pcap",
        metavar="CAPTURE",
        help="replay a real capture (pcap/pcapng) through each mode instead of synthetic "
        "traffic; needs --manifests (the cluster it was taken on)",
    )
    p.add_argument(
        "--manifests",
        nargs="+",
        metavar="FILE",
        help="with --pcap: the cluster's manifests or kubectl dumps",
    )
    p.add_argument("--node", metavar="NAME", help="with --pcap: the node it was taken on")
    p.add_argument(
        "--cluster-cidr",
        metavar="CIDR",
        default="10.0.0.0/8",
        help="with --pcap: the pod range (local-traffic detection and the capture's pod "
        "sources; default 10.0.0.0/8)",
    )
    p.add_argument(
        "--disruption",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the flows that move when an endpoint is removed or added (on; ~1 s)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="where each mode's time goes per packet: one more pass of each flow kind with "
        "the pipeline's stage counters on (conntrack, lookups, policy, NAT, verdict)",
    )
    p.add_argument("--json", metavar="OUT", help="write the records as JSON")
    p.add_argument("--csv", metavar="OUT", help="write the records as CSV")
    p.add_argument("--plot", metavar="OUT.png", help="draw latency, rules and sync cost plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "check",
        help="load and validate manifests, print what they hold and warn of what will not work",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="manifest files or directories")
    p.add_argument("--config", metavar="FILE", help="the KubeProxyConfiguration YAML to check with")
    p.add_argument(
        "--cluster-cidr",
        metavar="CIDR",
        help="pod CIDR for local-traffic detection (overrides clusterCIDR)",
    )
    p.set_defaults(func=_cmd_check)
    from . import dns as dns_cli
    from . import ipam as ipam_cli
    from . import lab as lab_cli
    from . import process as process_cli
    from . import reach as reach_cli
    from . import sweep as sweep_cli

    lab_cli.add_parsers(sub)  # verify, calibrate (the real-kernel lab)
    reach_cli.add_parser(sub)  # reach (NetworkPolicy)
    dns_cli.add_parser(sub)  # dns, dns serve (cluster DNS: CoreDNS's kubernetes plugin)
    ipam_cli.add_parser(sub)  # ipam (pod and service ranges: utilisation, overlaps)
    process_cli.add_parser(sub)  # process (a pcap through a node)
    sweep_cli.add_parser(sub)  # sweep (bench cells on Dask)
    # the lab has no IPVS (nor the userspace mode): its verify takes the node flags without
    # those modes' own (they stay accepted, and refused with "applies to ... mode only")
    verify = sub.choices.get("verify")
    if verify is not None:
        for action in verify._actions:
            hidden = {"--scheduler", "--ipvs-conn-tab-bits", "--proxy-port-range", *_EBPF_FLAGS}
            if hidden & set(action.option_strings):
                action.help = argparse.SUPPRESS
    return parser


def _policy_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--policy-engine",
        choices=("chains", "identity"),
        default=None,
        help=f"NetworkPolicy stage (chains: iptables chains and ipsets, Calico / kube-router "
        f"style; identity: Cilium's identities and policy maps): {what}",
    )


def _node_options(p: argparse.ArgumentParser, modes: tuple[str, ...] = _MODES) -> None:
    """--mode and the emulated node's flags (every mode's own flags among them; a flag of
    another mode than the one chosen is refused when the options are built)."""
    p.add_argument(
        "--mode",
        default=None,
        choices=modes,
        help="proxy mode (default: the --config mode, else iptables)",
    )
    p.add_argument("--config", metavar="FILE", help="a KubeProxyConfiguration YAML")
    p.add_argument(
        "--node",
        metavar="NAME",
        help="node to emulate (a Node in the manifests; default: the first)",
    )
    p.add_argument("--node-config", metavar="FILE", help="the emulated node's file")
    p.add_argument(
        "--node-ip",
        action="append",
        metavar="IP",
        help="node IP (repeat; primary first); overrides the node's addresses",
    )
    p.add_argument(
        "--cluster-cidr",
        metavar="CIDR",
        help="pod CIDR for local-traffic detection (overrides clusterCIDR)",
    )
    p.add_argument(
        "--masquerade-all", action="store_true", default=None, help="masquerade all service traffic"
    )
    p.add_argument(
        "--mark-text",
        metavar="TEXT",
        help="masquerade mark as written in rules (default: kube-proxy's "
        "0x00004000 form of 1<<masqueradeBit; the unit tests use 0x4000)",
    )
    p.add_argument(
        "--service-cidr",
        action="append",
        metavar="CIDR",
        help="service CIDR (repeat; nftables mode; default: the ServiceCIDR "
        "objects in the manifests)",
    )
    p.add_argument(
        "--scheduler",
        metavar="NAME",
        help="IPVS scheduler (ipvs mode; default: the --config ipvs.scheduler, else rr)",
    )
    p.add_argument(
        "--ipvs-conn-tab-bits",
        type=_conn_tab_bits,
        metavar="N",
        help="the ip_vs module's conn_tab_bits, 8-20 (ipvs mode; default 12, the "
        "kernel's 4,096 connection buckets)",
    )
    p.add_argument(
        "--proxy-port-range",
        metavar="RANGE",
        help="the proxy's ports, A-B, A+N or N (userspace mode; default: the kernel's "
        "ephemeral ports)",
    )
    p.add_argument(
        "--lb-algorithm",
        metavar="NAME",
        help="backend selection, random or maglev (ebpf mode; Cilium's --bpf-lb-algorithm; "
        "default random)",
    )
    p.add_argument(
        "--maglev-table-size",
        type=int,
        metavar="M",
        help="Maglev table size, one of Cilium's primes 251 ... 131071 (ebpf mode; 16381)",
    )
    p.add_argument(
        "--maglev-hash-seed",
        metavar="SEED",
        help="Maglev hash seed, 12 bytes base64 (ebpf mode; Cilium's default JLfvgnHc2kaSUFaI)",
    )
    p.add_argument(
        "--bpf-lb-mode",
        metavar="MODE",
        help="how NodePort/LoadBalancer traffic reaches a remote backend: snat, dsr or hybrid "
        "(DSR for TCP) (ebpf mode; default snat)",
    )
    p.add_argument(
        "--bpf-lb-map-max",
        type=int,
        metavar="N",
        help="entries of the services, backends and reverse-NAT maps (ebpf mode; Cilium's "
        "default 65536)",
    )
    p.add_argument(
        "--bpf-lb-external-clusterip",
        action="store_true",
        default=None,
        help="ClusterIPs answer traffic from outside the cluster (ebpf mode)",
    )


def _dataplane(args: argparse.Namespace):
    from ..dataplane import Dataplane
    from ..model import Cluster
    from ..model.config import load_kube_proxy_config, load_node_config

    config = load_kube_proxy_config(args.config) if args.config else None
    node_config = load_node_config(args.node_config) if args.node_config else None
    mode = args.mode or (config.mode if config else "iptables")
    dump = getattr(args, "iptables_save", None)
    tables = None
    if dump:
        from ..netfilter.iptables_parse import parse

        text = read_text(dump)
        if node_config is None and args.node_ip:
            from ..model.config import NodeConfig

            node_config = NodeConfig.from_node(args.node or "node", args.node_ip)
        # the node's primary IP says which table this is (an IPv6 address in it is an error)
        family = None
        if node_config is not None and node_config.ips:
            family = "IPv6" if ":" in node_config.ips[0] else "IPv4"
        tables = parse(text, file=dump, family=family, complete=True, evaluable=True)
    elif not args.files:
        raise InputError("give manifest files (or --iptables-save DUMP)", field="FILE")
    _check_node_flags(args, config, node_config, mode)
    cluster = Cluster.from_files(args.files) if args.files else Cluster()
    if getattr(args, "seed", 0) < 0:
        raise InputError("must be a non-negative integer", field="--seed", value=args.seed)
    return Dataplane(
        cluster,
        _mode_options(mode, args, tables),
        node=args.node,
        node_config=node_config,
        node_ips=None if dump else args.node_ip,
        config=config,
        cluster_cidr=args.cluster_cidr,
        masquerade_all=args.masquerade_all,
        mark_text=args.mark_text,
        seed=getattr(args, "seed", 0) or 0,
        policy_engine=getattr(args, "policy_engine", None),
    )


def _check_node_flags(args: argparse.Namespace, config, node_config, mode: str) -> None:
    """--mark-text and the node's primary IP family, checked before any rule is written."""
    if args.mark_text is not None:
        from ..model.config import KubeProxyConfig, format_mark

        bit = (config or KubeProxyConfig()).masquerade_bit
        text = args.mark_text
        # how iptables reads a mark (strtoul): hex or decimal, no sign, spaces or "_"
        number = re.fullmatch(r"0[xX][0-9a-fA-F]+|[1-9][0-9]*", text) and int(
            text, 0 if "x" in text.lower() else 10
        )
        if number != 1 << bit:
            raise InputError(
                f"must be the masquerade mark 1<<{bit} as a number, e.g. {format_mark(bit)} "
                f"or {1 << bit:#x}",
                field="--mark-text",
                value=args.mark_text,
            )
    primary, field = None, None
    if args.node_ip:
        primary, field = args.node_ip[0], "--node-ip"
    elif node_config is not None and node_config.ips:
        primary, field = node_config.ips[0], f"{args.node_config}: ips[0]"
    if primary is not None and ":" in primary and mode in ("iptables", "ipvs", "userspace", "ebpf"):
        # kube-proxy with an IPv6 primary node IP programs ip6tables / IPv6 IPVS services,
        # which are not emulated: the IPv4 tables would be written with IPv6 addresses
        raise InputError(
            f"the primary node IP must be IPv4 in {mode} mode (the IPv6 dataplane is not "
            "emulated; give the IPv4 address first for a dual-stack node)",
            field=field,
            value=primary,
        )


def read_text(path: str) -> str:
    """A text input file: unreadable or not UTF-8 text is an InputError."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", file=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
            file=path,
        ) from None


# ebpf mode's flags: the argparse attribute and the EbpfOptions field each sets
_EBPF_FLAGS = {
    "--lb-algorithm": ("lb_algorithm", "lb_algorithm"),
    "--maglev-table-size": ("maglev_table_size", "maglev_table_size"),
    "--maglev-hash-seed": ("maglev_hash_seed", "maglev_hash_seed"),
    "--bpf-lb-mode": ("bpf_lb_mode", "lb_mode"),
    "--bpf-lb-map-max": ("bpf_lb_map_max", "lb_map_max"),
    "--bpf-lb-external-clusterip": ("bpf_lb_external_clusterip", "external_clusterip"),
}


def _ebpf_options(mode: str, args: argparse.Namespace) -> ModeOptions | None:
    """EbpfOptions from the ebpf mode's flags (None in another mode, whose use of one of
    them is an error)."""
    given = {
        flag: (option, value)
        for flag, (attr, option) in _EBPF_FLAGS.items()
        if (value := getattr(args, attr, None)) is not None
    }
    if mode != "ebpf":
        for flag, (_, value) in given.items():
            raise InputError("applies to ebpf mode only", field=flag, value=value)
        return None
    from ..dataplane.backend import EbpfOptions

    try:
        return EbpfOptions(**dict(given.values()))
    except InputError as exc:
        flags = {f"EbpfOptions.{option}": flag for flag, (_, option) in _EBPF_FLAGS.items()}
        if exc.field in flags:
            raise InputError(exc.message, field=flags[exc.field], value=exc.value) from None
        raise


def _mode_options(mode: str, args: argparse.Namespace, tables: Ruleset | None) -> ModeOptions:
    """The mode's options object from the flags; a flag of another mode is an error."""
    from ..dataplane.backend import (
        CONN_TAB_BITS,
        IptablesOptions,
        IpvsOptions,
        NftablesOptions,
        mode_options,
    )

    scheduler = getattr(args, "scheduler", None)
    bits = getattr(args, "ipvs_conn_tab_bits", None)
    service_cidrs = getattr(args, "service_cidr", None)
    if tables is not None and mode != "iptables":
        raise InputError(
            "a node's own iptables dump runs in iptables mode only", field="mode", value=mode
        )
    if scheduler is not None and mode != "ipvs":
        raise InputError("applies to ipvs mode only", field="--scheduler", value=scheduler)
    if bits is not None and mode != "ipvs":
        raise InputError("applies to ipvs mode only", field="--ipvs-conn-tab-bits", value=bits)
    if mode == "ipvs":
        try:
            return IpvsOptions(scheduler=scheduler, conn_tab_bits=bits or CONN_TAB_BITS)
        except InputError as exc:
            raise _flagged(exc, {"ipvs.scheduler": "--scheduler"} if scheduler else {}) from None
    port_range = getattr(args, "proxy_port_range", None)
    if port_range is not None and mode != "userspace":
        raise InputError(
            "applies to userspace mode only", field="--proxy-port-range", value=port_range
        )
    if mode == "userspace":
        from ..dataplane.backend import UserspaceOptions

        try:
            return UserspaceOptions(port_range=port_range or "")
        except InputError as exc:
            raise InputError(exc.message, field="--proxy-port-range", value=port_range) from None
    ebpf = _ebpf_options(mode, args)
    if ebpf is not None:
        return ebpf
    if mode == "nftables" and service_cidrs is not None:
        return NftablesOptions(service_cidrs=tuple(service_cidrs))
    if mode == "iptables":
        return IptablesOptions(tables=tables)
    return mode_options(mode)


def _cmd_render(args: argparse.Namespace) -> int:
    if args.sorted and args.format not in ("restore", "iptables-restore"):
        raise InputError(
            "--sorted applies to --format restore (or iptables-restore) only", field="--sorted"
        )
    dp = _dataplane(args)
    if args.policy_engine is not None:
        sys.stdout.write(dp.render_policy())
        return 0
    sys.stdout.write(dp.render(sorted=args.sorted, format=args.format))
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    import json

    from . import e2e_trace as e2e_cli
    from .trace_text import format_trace

    if e2e_cli.wanted(args):
        return e2e_cli.cmd(args)
    if not args.packet:
        raise InputError(
            "give --packet (or --from-pod/--from-external with --to)", field="--packet"
        )
    dp = _dataplane(args)  # seeded: the node's random stream starts from --seed
    times = args.time or []
    if len(times) not in (0, 1, len(args.packet)):
        raise InputError(
            "give one --time per --packet, or one for all", field="--time", value=len(times)
        )
    for k, t in enumerate(times):
        # emulated time starts at 0 and only moves forward (Dataplane.clock)
        if not (t >= 0 and t != float("inf")) or (k and t < times[k - 1]):
            raise InputError(
                "must be finite seconds >= 0, not decreasing from one --packet to the next",
                field="--time",
                value=t,
            )
    if len(times) <= 1:
        start = times[0] if times else 0.0
        times = [start + k for k in range(len(args.packet))]
    sequence = len(args.packet) > 1
    results = [
        dp.trace(pkt, origin=args.origin, time=t, commit=sequence, all_rules=args.all_rules)
        for pkt, t in zip(args.packet, times)
    ]
    if args.json:
        print(json.dumps(results if sequence else results[0], indent=2))
        return 0
    for k, result in enumerate(results):
        if sequence:
            print(
                f"{'' if k == 0 else chr(10)}packet {k + 1} at t={result['time']:g}: "
                f"{result['packet']}"
            )
        print("\n".join(format_trace(result)))
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,N,..., got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected N,N,..., got {text!r}")
    return values


def _conn_tab_bits(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        bits = -1
    if not 8 <= bits <= 20:
        raise argparse.ArgumentTypeError(f"expected 8..20 (ip_vs conn_tab_bits), got {text!r}")
    return bits


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _cmd_bench_policy(args: argparse.Namespace) -> int:
    import json

    from ..bench import policy

    def counts(text: str, flag: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise InputError("expected N,N,...", field=flag, value=text) from None
        if not values or any(v < 0 for v in values):
            raise InputError("expected non-negative counts", field=flag, value=text)
        return values

    engines = [e.strip() for e in args.policy_engines.split(",") if e.strip()]
    if not engines or any(e not in policy.ENGINES for e in engines):
        raise InputError(
            "forms are none, chains and identity",
            field="--policy-engines",
            value=args.policy_engines,
        )
    if args.packets <= 0 or args.repeats <= 0 or args.seed < 0:
        raise InputError(
            "need --packets >= 1, --repeats >= 1, --seed >= 0",
            field="--packets/--repeats/--seed",
            value=(args.packets, args.repeats, args.seed),
        )
    records = policy.sweep(
        counts(args.pods, "--pods"),
        counts(args.policies, "--policies"),
        engines,
        packets=args.packets,
        repeats=args.repeats,
        seed=args.seed,
        progress=lambda r: print(
            f"{r['pods']} pods, {r['policies']} policies, {r['engine']}: "
            f"{r['ns_per_packet']:.0f} ns/packet",
            file=sys.stderr,
        ),
    )
    print(policy.table(records))
    if args.json:
        text = json.dumps({"kind": "bench-policy", "records": records}, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import report, sweep

    spec = sweep.BenchSpec(
        endpoints=args.endpoints,
        packets=args.packets,
        new_flow_share=args.new_flow_share,
        popularity=args.popularity,
        seed=args.seed,
        repeat=args.repeat,
        calibration=args.calibration,
        ipvs_conn_tab_bits=args.ipvs_conn_tab_bits,
        userspace_payload_bytes=args.userspace_payload_bytes,
        disruption=args.disruption,
        profile=args.profile,
        pcap=args.pcap,
        files=tuple(args.manifests or ()),
        node=args.node,
        cluster_cidr=args.cluster_cidr,
    )
    if args.manifests and not args.pcap:
        raise InputError("applies with --pcap only", field="--manifests", value=args.manifests[0])
    if args.services:
        spec.services = args.services
    if args.modes:
        spec.modes = args.modes
    spec.validate()
    sweep.load_calibration(spec.calibration)  # a bad file fails before the sweep, not after
    if args.plot:
        report.check_plotting(args.plot)  # before minutes of sweep, not after
    start = time.perf_counter()
    result = sweep.run(spec, progress=not args.no_progress)
    sys.stdout.write(report.table(result))
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        report.write_json(result, args.json)
    if args.csv:
        report.write_csv(result, args.csv)
    if args.plot:
        report.plot(result, args.plot)
    return 0


_SYNTH_ARGS = (
    "services",
    "endpoints",
    "nodes",
    "namespaces",
    "seed",
    "type_mix",
    "protocol_mix",
    "service_cidr",
    "cluster_cidr",
    "policies",
    "policy_mix",
)


def _cmd_synth(args: argparse.Namespace) -> int:
    from .. import synth

    options = {}
    for name in ("type_mix", "protocol_mix", "service_cidr", "cluster_cidr", "policy_mix"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.output != "-" and not args.force:
        from ..model.files import refuse_existing

        refuse_existing(args.output)  # before generating: minutes at 100,000 services
    start = time.perf_counter()
    try:
        cluster = synth.cluster(
            args.services,
            endpoints=args.endpoints,
            nodes=args.nodes,
            namespaces=args.namespaces,
            seed=args.seed,
            pods=args.pods,
            policies=args.policies,
            **options,
        )
    except InputError as exc:
        raise _flagged(exc, {k: "--" + k.replace("_", "-") for k in _SYNTH_ARGS}) from None
    generated = time.perf_counter()
    cluster.dump(args.output, overwrite=args.force)
    written = time.perf_counter()
    where = "stdout" if args.output == "-" else args.output
    print(
        f"{cluster.summary()}; generated in {generated - start:.2f} s, written to {where} "
        f"in {written - generated:.2f} s",
        file=sys.stderr,
    )
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ..ipaddr import canonical_cidr
    from ..model import Cluster
    from ..model.config import load_kube_proxy_config

    config = load_kube_proxy_config(args.config) if args.config else None
    if args.cluster_cidr is not None:
        try:
            canonical_cidr(args.cluster_cidr)
        except ValueError:
            raise InputError(
                "invalid CIDR", field="--cluster-cidr", value=args.cluster_cidr
            ) from None
    start = time.perf_counter()
    cluster = Cluster.from_files(args.files)
    print(f"{cluster.summary()} (loaded in {time.perf_counter() - start:.2f} s)")
    problems = cluster.lint()
    detect = config.detect_local_mode if config else "ClusterCIDR"
    masquerade_all = config.masquerade_all if config else False
    no_cidr = not args.cluster_cidr and not (config and config.cluster_cidrs)
    if detect == "ClusterCIDR" and no_cidr and not masquerade_all:
        problems.append(
            "no cluster CIDR (--cluster-cidr, or clusterCIDR in --config): like kube-proxy, "
            "render, trace and process write no ClusterIP masquerade rules (traffic to a "
            "ClusterIP from outside the pod network is not masqueraded)"
        )
    for problem in problems:
        warnings.warn(problem, stacklevel=1)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. ``argv`` None (the console script, ``python -m``):
    the process is the command, and after it SIGINT, SIGTERM and SIGHUP take their default
    action (kproxy_emu.signals.handled)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        # SIGINT, SIGTERM and SIGHUP end the command as one exception (the lab defers it
        # past its setup and cleanup). argv None: this process is the command and exits
        # next, so a signal after the command takes the default action (never lost)
        with signals.handled(then=signal.SIG_DFL if argv is None else None):
            return args.func(args)
    except KproxyError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt as exc:
        code = exc.exit_code if isinstance(exc, signals.Interrupted) else 130
        name = f" ({exc})" if isinstance(exc, signals.Interrupted) else ""
        print(f"{PROG}: interrupted{name}", file=sys.stderr)
        return code
    except BrokenPipeError:
        return 0
