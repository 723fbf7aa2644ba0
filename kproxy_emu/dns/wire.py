"""DNS wire format (dnspython): parse a query, answer it with a Resolver, and fit the
answer to the transport (UDP: 512 bytes, or the EDNS0 payload size the client advertised;
TC set when the answer does not fit; TCP: the whole answer up to 65535 bytes)."""

from __future__ import annotations

from collections.abc import Callable

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .records import Record, Response

OUR_PAYLOAD = 1232  # the EDNS0 UDP size this server advertises (DNS flag day 2020)
MAX_UDP = 65535 - 28


def _rrset(r: Record) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(
        dns.name.from_text(r.name), dns.rdataclass.IN, dns.rdatatype.from_text(r.type)
    )
    rrset.update_ttl(r.ttl)
    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(r.type), r.data))
    return rrset


def _fill(msg: dns.message.Message, resp: Response, n_answer: int, extra: bool) -> None:
    # one RRset per record keeps CoreDNS's multiplicity and order (no merging by dnspython)
    msg.answer = [_rrset(r) for r in resp.answer[:n_answer]]
    msg.authority = [_rrset(r) for r in resp.authority] if n_answer == len(resp.answer) else []
    msg.additional = [_rrset(r) for r in resp.additional] if extra else []


def build_response(query: dns.message.Message, resp: Response, max_size: int = 65535) -> bytes:
    """The wire answer to ``query`` carrying ``resp``, no larger than ``max_size``: the
    Additional section goes first (no TC), then Answer records from the end (TC set), as
    miekg/dns's Msg.Truncate does."""
    msg = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
    msg.set_rcode(dns.rcode.from_text(resp.rcode))
    if resp.authoritative:
        msg.flags |= dns.flags.AA
    if resp.truncated:
        msg.flags |= dns.flags.TC
    _fill(msg, resp, len(resp.answer), True)
    try:
        return msg.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        pass
    _fill(msg, resp, len(resp.answer), False)
    try:
        return msg.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        pass
    msg.flags |= dns.flags.TC
    lo, hi = 0, len(resp.answer)  # the largest answer prefix that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        _fill(msg, resp, mid, False)
        try:
            msg.to_wire(max_size=max_size)
            lo = mid
        except dns.exception.TooBig:
            hi = mid - 1
    _fill(msg, resp, lo, False)
    return msg.to_wire(max_size=max_size)


def _error(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A header-only error answer for a query dnspython could not parse (None: no header)."""
    if len(wire) < 12:
        return None
    qid = int.from_bytes(wire[:2], "big")
    flags = int.from_bytes(wire[2:4], "big")
    out = dns.message.Message(id=qid)
    out.flags = dns.flags.QR | (flags & dns.flags.RD)
    out.set_opcode(dns.opcode.from_flags(flags))
    out.set_rcode(rcode)
    return out.to_wire()


def answer(
    query_fn: Callable[[str, str], Response], wire: bytes, transport: str = "udp"
) -> bytes | None:
    """Answer one DNS message from the network (None: nothing to send back)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.message.BadEDNS:
        return _error(wire, dns.rcode.FORMERR)
    except (dns.exception.DNSException, ValueError):
        return _error(wire, dns.rcode.FORMERR)
    if query.flags & dns.flags.QR:
        return None  # a response, not a query: never answer it
    if query.opcode() != dns.opcode.QUERY:
        out = dns.message.make_response(query)
        out.set_rcode(dns.rcode.NOTIMP)
        return out.to_wire()
    if len(query.question) != 1:
        return _error(wire, dns.rcode.FORMERR)
    if query.edns > 0:
        out = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        out.use_edns(0, 0, OUR_PAYLOAD)
        out.set_rcode(dns.rcode.BADVERS)
        return out.to_wire()
    q = query.question[0]
    if q.rdclass != dns.rdataclass.IN:
        out = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        out.set_rcode(dns.rcode.REFUSED)
        return out.to_wire()
    resp = query_fn(q.name.to_text(), dns.rdatatype.to_text(q.rdtype))
    if transport == "tcp":
        limit = 65535
    elif query.edns >= 0:
        limit = min(max(512, query.payload), MAX_UDP)
    else:
        limit = 512
    return build_response(query, resp, limit)
