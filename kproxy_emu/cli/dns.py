"""``kproxy-emu dns``: ask the cluster DNS (CoreDNS's kubernetes plugin, emulated) one
question, or serve it to real DNS clients (``kproxy-emu dns serve``).

The main CLI registers it with ``add_parser(subparsers)``. Text output is laid out as
``dig`` prints a response; ``--json`` prints the response as data:
``{"qname", "qtype", "rcode", "authoritative", "truncated", "zone", "answer": [...],
"authority": [...], "additional": [...]}`` with each record as ``{"name", "ttl", "class",
"type", "data", <the type's fields>}``, plus ``"search"`` (the stub resolver's queries)
with ``--from-pod``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from ..errors import InputError

TYPES = ("A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "ANY", "CNAME", "MX")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dns",
        help="answer a DNS question as the cluster's CoreDNS would (or 'dns serve FILE...' "
        "to serve it over UDP and TCP)",
        description="Ask the emulated cluster DNS (CoreDNS's kubernetes plugin) one question: "
        "kproxy-emu dns FILE... --query NAME [--type T]. Or serve it to real DNS clients: "
        "kproxy-emu dns serve FILE... --listen 127.0.0.1:5353 (runs until SIGINT/SIGTERM).",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="manifest files or directories (first word 'serve': run a DNS server)",
    )
    p.add_argument("--query", metavar="NAME", help="the name to ask for")
    p.add_argument("--type", type=str.upper, default="A", choices=TYPES, help="the query type (A)")
    p.add_argument(
        "--from-pod",
        metavar="NS/NAME",
        help="ask as that pod's stub resolver would: its search path and ndots:5, every "
        "query it sends until one answers",
    )
    p.add_argument("--corefile", metavar="FILE", help="read the kubernetes block of a Corefile")
    p.add_argument(
        "--zone",
        action="append",
        metavar="ZONE",
        help="a cluster zone (repeatable; default cluster.local)",
    )
    p.add_argument(
        "--pods",
        choices=("disabled", "insecure", "verified"),
        help="pod records (disabled)",
    )
    p.add_argument("--ttl", type=int, help="answer TTL in seconds, 0-3600 (5)")
    p.add_argument(
        "--not-synced",
        action="store_true",
        help="as before CoreDNS's API cache has synced: SERVFAIL instead of NXDOMAIN",
    )
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    p.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        help="dns serve: where to answer, UDP and TCP (port 0: any free port)",
    )
    p.set_defaults(func=cmd_dns)


def _resolver(args: argparse.Namespace, cluster: Any) -> Any:
    from ..dns import Resolver
    from ..dns.corefile import kubernetes_config

    flags = {"--zone": args.zone, "--pods": args.pods, "--ttl": args.ttl}
    kwargs: dict[str, Any] = {}
    if args.corefile:
        used = [f for f, v in flags.items() if v is not None]
        if used:
            raise InputError("give --corefile or the zone flags, not both", field=used[0])
        from . import read_text

        cfg = kubernetes_config(read_text(args.corefile), args.corefile)
        kwargs = cfg.resolver_kwargs()
    else:
        if args.zone:
            kwargs["zones"] = args.zone
        if args.pods:
            kwargs["pods"] = args.pods
        if args.ttl is not None:
            if not 0 <= args.ttl <= 3600:
                raise InputError("must be between 0 and 3600", field="--ttl", value=args.ttl)
            kwargs["ttl"] = args.ttl
    try:
        return Resolver(cluster, synced=not args.not_synced, **kwargs)
    except InputError as exc:
        flag = {"zones": "--zone", "pods": "--pods", "ttl": "--ttl"}.get(exc.field or "")
        if flag and not args.corefile:
            raise InputError(exc.message, field=flag, value=exc.value) from None
        raise


def cmd_dns(args: argparse.Namespace) -> int:
    from ..model import Cluster

    serve = args.files[0] == "serve"
    files = args.files[1:] if serve else args.files
    if not files:
        raise InputError("give manifest files", field="FILE")
    if serve:
        for flag, value in (("--query", args.query), ("--from-pod", args.from_pod)):
            if value:
                raise InputError("applies to a single question, not to dns serve", field=flag)
        if args.json:
            raise InputError("applies to a single question, not to dns serve", field="--json")
        if not args.listen:
            raise InputError("dns serve needs --listen ADDR:PORT", field="--listen")
    else:
        if args.listen:
            raise InputError("applies to dns serve only", field="--listen", value=args.listen)
        if not args.query:
            raise InputError("give the name to ask for", field="--query")
    cluster = Cluster.from_files(files)
    resolver = _resolver(args, cluster)
    if serve:
        return _serve(args, resolver)
    return _ask(args, resolver, cluster)


def _ask(args: argparse.Namespace, resolver: Any, cluster: Any) -> int:
    from ..dns.search import pod_search_path, stub_resolve

    search = None
    if args.from_pod:
        ns, sep, name = args.from_pod.partition("/")
        if not sep or not ns or not name:
            raise InputError("expected NAMESPACE/NAME", field="--from-pod", value=args.from_pod)
        if (ns, name) not in cluster.pods:
            raise InputError(
                "no such Pod in the manifests", field="--from-pod", value=args.from_pod
            )
        zone = resolver.primary_zone
        search = stub_resolve(
            resolver.query, args.query, args.type, pod_search_path(ns, zone), ndots=5
        )
        resp = search.response
        assert resp is not None  # candidates() is never empty
    else:
        resp = resolver.query(args.query, args.type)
    if args.json:
        doc = resp.to_dict()
        if search is not None:
            doc["search"] = search.to_dict()
        sys.stdout.write(json.dumps(doc) + "\n")
        return 0
    lines = []
    if search is not None:
        lines.append(
            f";; pod {args.from_pod}: search {' '.join(search.search)}; "
            f"options ndots:{search.ndots}"
        )
        for i, t in enumerate(search.tries, 1):
            what = (
                "passed on (upstream, not modelled)"
                if t.get("passed_on")
                else f"{t['rcode']}, {t['answers']} answer(s)"
            )
            mark = "  <- answered" if t["qname"] == search.answered else ""
            lines.append(f";; query {i}: {t['qname']} {search.qtype} -> {what}{mark}")
        lines.append(f";; {search.queries} quer{'y' if search.queries == 1 else 'ies'}, "
                     f"result: {search.status}")  # fmt: skip
        lines.append("")
    lines.extend(dig_text(resp))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def dig_text(resp: Any) -> list[str]:
    """The response laid out as dig prints one."""
    flags = ["qr"] + (["aa"] if resp.authoritative else []) + (["tc"] if resp.truncated else [])
    flags.append("rd")
    out = [
        f";; ->>HEADER<<- opcode: QUERY, status: {resp.rcode}",
        f";; flags: {' '.join(flags)}; QUERY: 1, ANSWER: {len(resp.answer)}, "
        f"AUTHORITY: {len(resp.authority)}, ADDITIONAL: {len(resp.additional)}",
    ]
    if resp.note:
        out.append(f";; {resp.note}")
    out += ["", ";; QUESTION SECTION:", f";{resp.qname}\t\tIN\t{resp.qtype}"]
    for title, records in (
        ("ANSWER", resp.answer),
        ("AUTHORITY", resp.authority),
        ("ADDITIONAL", resp.additional),
    ):
        if records:
            out += ["", f";; {title} SECTION:"] + [r.text() for r in records]
    return out


def _serve(args: argparse.Namespace, resolver: Any) -> int:
    from ..dns.server import DnsServer, parse_listen

    host, port = parse_listen(args.listen)
    try:
        server = DnsServer(resolver.query, host, port)
    except OSError as exc:
        raise InputError(
            f"cannot listen ({exc.strerror})", field="--listen", value=args.listen
        ) from None
    stop = threading.Event()
    with server.running():
        print(
            f"kproxy-emu dns: serving {' '.join(resolver.zones)} on {server.host} port "
            f"{server.port} (udp, tcp)",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(1.0):  # SIGINT/SIGTERM raise Interrupted here; running() stops
            pass
    return 0
