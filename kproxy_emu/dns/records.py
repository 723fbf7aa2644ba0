"""DNS records and responses as plain data (no wire format here: kproxy_emu.dns.wire)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record. ``name`` keeps the case it is written with (CoreDNS answers with
    the query's own spelling of the owner name); the type's fields use the reference JSON's
    names (address, target, priority/weight/port, txt, mname/rname/serial/...)."""

    name: str
    ttl: int
    type: str
    address: str = ""  # A, AAAA
    target: str = ""  # CNAME, PTR, NS, SRV
    priority: int = 0  # SRV
    weight: int = 0  # SRV
    port: int = 0  # SRV
    txt: str = ""  # TXT
    mname: str = ""  # SOA
    rname: str = ""
    serial: int = 0
    refresh: int = 0
    retry: int = 0
    expire: int = 0
    minttl: int = 0
    rclass: str = "IN"

    @property
    def data(self) -> str:
        """The record data in presentation format (as dig prints it)."""
        t = self.type
        if t in ("A", "AAAA"):
            return self.address
        if t in ("CNAME", "PTR", "NS"):
            return self.target
        if t == "SRV":
            return f"{self.priority} {self.weight} {self.port} {self.target}"
        if t == "TXT":
            return '"' + self.txt.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if t == "SOA":
            return (
                f"{self.mname} {self.rname} {self.serial} {self.refresh} {self.retry} "
                f"{self.expire} {self.minttl}"
            )
        raise ValueError(f"no presentation for record type {t}")

    def text(self) -> str:
        """The record as one zone-file line (dig's layout: tab-separated)."""
        return f"{self.name}\t{self.ttl}\t{self.rclass}\t{self.type}\t{self.data}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "ttl": self.ttl,
            "class": self.rclass,
            "type": self.type,
            "data": self.data,
        }
        t = self.type
        if t in ("A", "AAAA"):
            out["address"] = self.address
        elif t in ("CNAME", "PTR", "NS"):
            out["target"] = self.target
        elif t == "SRV":
            out.update(
                priority=self.priority, weight=self.weight, port=self.port, target=self.target
            )
        elif t == "TXT":
            out["txt"] = self.txt
        elif t == "SOA":
            out.update(
                mname=self.mname,
                rname=self.rname,
                serial=self.serial,
                refresh=self.refresh,
                retry=self.retry,
                expire=self.expire,
                minttl=self.minttl,
            )
        return out


@dataclass(slots=True)
class Response:
    """What the kubernetes plugin answers for one question.

    ``rcode`` is the DNS response code by name (NOERROR, NXDOMAIN, SERVFAIL, REFUSED).
    ``authoritative`` is the AA bit (set on every answer the plugin writes itself);
    ``truncated`` the TC bit an upstream answer carried (an ExternalName target resolved
    upstream); the server sets TC itself when an answer does not fit the UDP size.
    ``passed_on`` is set when CoreDNS would hand the query to the next plugin (a name
    outside the plugin's zones, or ``fallthrough``): the emulator has no next plugin and
    answers REFUSED, ``note`` says why."""

    qname: str
    qtype: str
    rcode: str
    answer: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)
    authoritative: bool = True
    truncated: bool = False
    zone: str = ""
    passed_on: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "qname": self.qname,
            "qtype": self.qtype,
            "rcode": self.rcode,
            "authoritative": self.authoritative,
            "truncated": self.truncated,
            "zone": self.zone,
            "answer": [r.to_dict() for r in self.answer],
            "authority": [r.to_dict() for r in self.authority],
            "additional": [r.to_dict() for r in self.additional],
        }
        if self.passed_on:
            out["passed_on"] = True
        if self.note:
            out["note"] = self.note
        return out
