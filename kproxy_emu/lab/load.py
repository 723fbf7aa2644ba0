"""Load a node's rules into the lab's node namespace and time it.

iptables: the node's full tables state (``render(dp.tables)``: kube-proxy's restore payload
plus the built-in chain jumps it ensures with ``iptables -I``), after creating the nfacct
objects its rules name (``-m nfacct`` fails to load without them). nftables:
``load_nftables`` feeds ``nft -f``; the payload must be in ``nft -f`` order (tables, then
sets/maps/chains, then rules, then elements), which a knftables dump is not.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .topology import Lab

_NFACCT = re.compile(r"--nfacct-name\s+(\"[^\"]+\"|\S+)")
RESTORE = {"nft": "iptables-restore", "legacy": "iptables-legacy-restore"}


@dataclass
class LoadResult:
    tool: str
    seconds: float  # wall time of the tool, process start included
    lines: int
    user: float = 0.0  # the tool's CPU time (rusage of the child)
    sys: float = 0.0


def nfacct_names(text: str) -> list[str]:
    """Accounting objects the rules match on, in first-use order."""
    seen: dict[str, None] = {}
    for m in _NFACCT.finditer(text):
        seen.setdefault(m.group(1).strip('"'), None)
    return list(seen)


def ensure_nfacct(lab: Lab, names: list[str]) -> None:
    """nfacct objects are per network namespace; create the missing ones."""
    if not names:
        return
    listing = lab.run("node", ["nfacct", "list"], check=False).stdout
    have = set(re.findall(r"\}\s*=\s*([^\s;]+);", listing))  # "{ pkts = .. } = NAME;"
    for name in names:
        if name not in have:
            lab.run("node", ["nfacct", "add", name])


def _timed(lab: Lab, argv: list[str], text: str, tool: str) -> LoadResult:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    lab.run("node", argv, input=text)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return LoadResult(
        tool,
        seconds,
        text.count("\n"),
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
    )


def load_iptables(
    lab: Lab, text: str, *, noflush: bool = False, backend: str = "nft"
) -> LoadResult:
    """iptables-restore TEXT in the node namespace (``backend`` "nft" is Debian's default
    iptables, "legacy" the x_tables one)."""
    if backend not in RESTORE:
        raise ValueError(f"backend must be one of {sorted(RESTORE)}")
    ensure_nfacct(lab, nfacct_names(text))
    argv = [RESTORE[backend], "-w"] + (["--noflush"] if noflush else [])
    return _timed(lab, argv, text, RESTORE[backend])


def load_nftables(lab: Lab, text: str) -> LoadResult:
    """nft -f TEXT in the node namespace (the nftables mode's payload)."""
    return _timed(lab, ["nft", "-f", "/dev/stdin"], text, "nft")


def flush_iptables(lab: Lab, backend: str = "nft") -> None:
    """Empty the node's nat and filter tables (between calibration loads)."""
    text = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n"
        ":FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    )
    lab.run("node", [RESTORE[backend], "-w"], input=text)


def node_sysctls(features) -> dict[str, str | int]:
    """Conntrack settings the node's features ask for (kube-proxy sets tcp_be_liberal when
    configured; the rest stay at the kernel's defaults)."""
    out: dict[str, str | int] = {}
    if getattr(features, "conntrack_tcp_be_liberal", False):
        out["net.netfilter.nf_conntrack_tcp_be_liberal"] = 1
    return out
