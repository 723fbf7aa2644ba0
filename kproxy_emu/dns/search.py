"""A pod's resolv.conf (as kubelet writes it) and what glibc's stub resolver does with it.

kubelet (``pkg/kubelet/network/dns``, dnsPolicy ClusterFirst) writes
``nameserver <cluster DNS IP>``, ``search <ns>.svc.<zone> svc.<zone> <zone>`` (then the
node's own search domains, which the emulator does not know) and ``options ndots:5``.
glibc's ``res_nsearch`` (resolv/res_query.c) then tries, for a name with fewer dots than
ndots, each search domain appended, then the name as typed; with at least ndots dots the
name as typed first, then the search list; a trailing dot means only the name as typed.
NXDOMAIN, NODATA and SERVFAIL move on to the next candidate; any other failure (REFUSED,
...) ends the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .records import Response


def pod_search_path(namespace: str, zone: str = "cluster.local") -> list[str]:
    zone = zone.rstrip(".")
    return [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]


def resolv_conf(
    namespace: str, zone: str = "cluster.local", nameserver: str = "10.96.0.10", ndots: int = 5
) -> str:
    """The resolv.conf kubelet writes into a ClusterFirst pod."""
    return (
        f"search {' '.join(pod_search_path(namespace, zone))}\n"
        f"nameserver {nameserver}\n"
        f"options ndots:{ndots}\n"
    )


def parse_resolv_conf(text: str, path: str = "resolv.conf") -> tuple[list[str], int]:
    """(search list, ndots) of a resolv.conf; the last ``search``/``domain`` line wins, as
    in glibc; ndots is capped at 15."""
    search: list[str] = []
    ndots = 1
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not line:
            continue
        if line[0] in ("search", "domain"):
            search = line[1:] if line[0] == "search" else line[1:2]
        elif line[0] == "options":
            for opt in line[1:]:
                if opt.startswith("ndots:"):
                    try:
                        ndots = min(int(opt[6:]), 15)
                    except ValueError:
                        raise InputError("bad ndots option", file=path, line=n, value=opt) from None
    return search, ndots


def candidates(name: str, search: Sequence[str], ndots: int = 5) -> list[str]:
    """Every query glibc would send for ``name``, in order, if none answered."""
    dots = name.count(".")
    if name.endswith("."):
        return [name]
    out: list[str] = []
    tried_as_is = False
    if dots >= ndots:
        out.append(name + ".")
        tried_as_is = True
    root_on_list = False
    for domain in search:
        if domain in (".", ""):
            root_on_list = True
        d = domain.rstrip(".")
        out.append(f"{name}.{d}." if d else f"{name}.")
    if not (tried_as_is or root_on_list):
        out.append(name + ".")
    return out


@dataclass
class SearchResult:
    """What a pod's stub resolver did: every query sent (name, rcode, answers), the one
    that answered (or None) and the final status."""

    name: str
    qtype: str
    search: list[str]
    ndots: int
    tries: list[dict[str, Any]] = field(default_factory=list)
    answered: str | None = None
    status: str = ""  # "answered", "upstream", "NXDOMAIN", "NODATA", "SERVFAIL", "REFUSED"
    response: Response | None = None

    @property
    def queries(self) -> int:
        return len(self.tries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "qtype": self.qtype,
            "search": self.search,
            "ndots": self.ndots,
            "tries": self.tries,
            "queries": self.queries,
            "answered": self.answered,
            "status": self.status,
        }


def stub_resolve(
    query: Callable[[str, str], Response],
    name: str,
    qtype: str,
    search: Sequence[str],
    ndots: int = 5,
) -> SearchResult:
    """glibc res_nsearch over ``query`` (a Resolver's query): stops at the first answer."""
    result = SearchResult(name, qtype, list(search), ndots)
    got_nodata = got_servfail = False
    first_status = ""  # glibc reports the as-is query's failure when it went first
    as_is_first = name.count(".") >= ndots and not name.endswith(".")
    for qname in candidates(name, search, ndots):
        resp = query(qname, qtype)
        result.tries.append({"qname": qname, "rcode": resp.rcode, "answers": len(resp.answer)})
        result.response = resp
        if resp.passed_on:
            result.tries[-1]["passed_on"] = True
            result.answered = qname
            result.status = "upstream"
            return result
        if resp.rcode == "NOERROR" and resp.answer:
            result.answered = qname
            result.status = "answered"
            return result
        if resp.rcode == "NOERROR":
            got_nodata = True
        elif resp.rcode == "SERVFAIL":
            got_servfail = True
        elif resp.rcode != "NXDOMAIN":
            result.status = resp.rcode
            return result
        if not first_status:
            first_status = "NODATA" if resp.rcode == "NOERROR" else resp.rcode
        if name.endswith("."):
            break
    if as_is_first and first_status:
        result.status = first_status
    else:
        result.status = "NODATA" if got_nodata else ("SERVFAIL" if got_servfail else "NXDOMAIN")
    return result
