"""More CoreDNS plugin/kubernetes suites (coredns/coredns @ 4b26cced, Apache-2.0),
transcribed from handler_pod_insecure_test.go, handler_pod_verified_test.go,
handler_case_test.go, handler_ignore_emptyservice_test.go, kubernetes_apex_test.go and
reverse_test.go; compared as SortAndCheck compares (SOA: MNAME only)."""

from __future__ import annotations

import pytest

from kproxy_emu.dns import Resolver

from .conftest import check, cname_order, reverse_cluster, serve_namespace_exists


def _rr(text: str) -> dict:
    name, ttl, _cls, rtype, *data = text.split()
    out = {"name": name, "ttl": int(ttl), "type": rtype}
    if rtype in ("A", "AAAA"):
        out["address"] = data[0]
    elif rtype in ("CNAME", "PTR", "NS"):
        out["target"] = data[0]
    elif rtype == "SRV":
        out.update(priority=int(data[0]), weight=int(data[1]), port=int(data[2]), target=data[3])
    elif rtype == "SOA":
        out["mname"] = data[0]
    return out


def case(qname, qtype, rcode, answer=(), ns=(), extra=()):
    return {
        "qname": qname,
        "qtype": qtype,
        "rcode": rcode,
        "answer": [_rr(t) for t in answer],
        "ns": [_rr(t) for t in ns],
        "extra": [_rr(t) for t in extra],
    }


SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"

INSECURE = [
    case("10-240-0-1.podns.pod.cluster.local.", "A", "NOERROR",
         ["10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1"]),
    case("172-0-0-2.podns.pod.cluster.local.", "A", "NOERROR",
         ["172-0-0-2.podns.pod.cluster.local. 5 IN A 172.0.0.2"]),
    case("blah.podns.pod.cluster.local.", "A", "NXDOMAIN", ns=[SOA]),
    case("blah.podns.pod.cluster.local.", "AAAA", "NXDOMAIN", ns=[SOA]),
    case("blah.podns.pod.cluster.local.", "HINFO", "NXDOMAIN", ns=[SOA]),
    case("blah.pod-nons.pod.cluster.local.", "A", "NXDOMAIN", ns=[SOA]),
    case("podns.pod.cluster.local.", "A", "NOERROR", ns=[SOA]),
]  # fmt: skip

VERIFIED = [
    case("10-240-0-1.podns.pod.cluster.local.", "A", "NOERROR",
         ["10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1"]),
    case("podns.pod.cluster.local.", "A", "NOERROR", ns=[SOA]),
    case("svcns.svc.cluster.local.", "A", "NOERROR", ns=[SOA]),
    case("pod-nons.pod.cluster.local.", "A", "NXDOMAIN", ns=[SOA]),
    case("172-0-0-2.podns.pod.cluster.local.", "A", "NXDOMAIN", ns=[SOA]),
]  # fmt: skip

PRESERVE_CASE = [
    case("not-a-service.testns.svc.ClUsTeR.lOcAl.", "A", "NXDOMAIN",
         ns=["ClUsTeR.lOcAl. 5 IN SOA ns.dns.ClUsTeR.lOcAl. h. 1 2 3 4 5"]),
    case("SvC1.TeStNs.SvC.cLuStEr.LoCaL.", "A", "NOERROR",
         ["SvC1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN A 10.0.0.1"]),
    case("_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL.", "SRV", "NOERROR",
         ["_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL."],
         extra=["svc1.testns.svc.cLuStEr.LoCaL. 5 IN A 10.0.0.1"]),
    case("Cluster.local.", "SOA", "NOERROR",
         ["Cluster.local. 5 IN SOA ns.dns.Cluster.local. h. 1 2 3 4 5"]),
]  # fmt: skip

EMPTY_SERVICE = [
    case("svcempty.testns.svc.cluster.local.", "A", "NXDOMAIN", ns=[SOA]),
    case("external.testns.svc.cluster.local.", "CNAME", "NOERROR",
         ["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."]),
]  # fmt: skip

APEX = [
    case("cluster.local.", "SOA", "NOERROR", [SOA]),
    case("cluster.local.", "HINFO", "NOERROR", ns=[SOA]),
    case("cluster.local.", "NS", "NOERROR", ["cluster.local. 5 IN NS ns.dns.cluster.local."],
         extra=["ns.dns.cluster.local. 5 IN A 127.0.0.1"]),
    case("cluster.local.", "A", "NOERROR", ns=[SOA]),
    case("cluster.local.", "AAAA", "NOERROR", ns=[SOA]),
    case("cluster.local.", "SRV", "NOERROR", ns=[SOA]),
]  # fmt: skip

REV_SOA = "0.10.in-addr.arpa. 5 IN SOA ns.dns.0.10.in-addr.arpa. h. 1 2 3 4 5"
REVERSE = [
    case("100.0.0.10.in-addr.arpa.", "PTR", "NOERROR",
         ["100.0.0.10.in-addr.arpa. 5 IN PTR ep1a.svc1.testns.svc.cluster.local."]),
    case("100.1.168.192.in-addr.arpa.", "PTR", "NOERROR",
         ["100.1.168.192.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."]),
    case("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.", "PTR", "NOERROR",
         ["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa. 5 IN PTR ep1b.svc1.testns.svc.cluster.local."]),
    case("a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa.", "PTR", "NOERROR",
         ["a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa. 5 IN PTR ip6svc1ex.svc1.testns.svc.cluster.local."]),
    case("6.a.b.9.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa.", "PTR", "NOERROR",
         ["6.a.b.9.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa. 5 IN PTR ip6svc1in.svc1.testns.svc.cluster.local."]),
    case("101.0.0.10.in-addr.arpa.", "PTR", "NXDOMAIN", ns=[REV_SOA]),
    case("example.org.cluster.local.", "PTR", "NXDOMAIN", ns=[SOA]),
    case("svc1.testns.svc.cluster.local.", "PTR", "NOERROR", ns=[SOA]),
    case("svc1.testns.svc.0.10.in-addr.arpa.", "A", "NXDOMAIN", ns=[REV_SOA]),
    case("100.0.0.10.cluster.local.", "PTR", "NXDOMAIN", ns=[SOA]),
    case("99.0.0.10.in-addr.arpa.", "PTR", "NOERROR",
         ["99.0.0.10.in-addr.arpa. 5 IN PTR double-ep.svc1.testns.svc.cluster.local.",
          "99.0.0.10.in-addr.arpa. 5 IN PTR double-ep.svc2.testns.svc.cluster.local."]),
]  # fmt: skip


def _serve(serve_fixture, **kw):
    return Resolver(
        serve_fixture, ["cluster.local."], namespace_exists=serve_namespace_exists, **kw
    )


@pytest.mark.parametrize("c", INSECURE, ids=lambda c: f"{c['qname']}-{c['qtype']}")
def test_pods_insecure(c, serve_fixture):
    check(_serve(serve_fixture, pods="insecure").query(c["qname"], c["qtype"]), c)


@pytest.mark.parametrize("c", VERIFIED, ids=lambda c: f"{c['qname']}-{c['qtype']}")
def test_pods_verified(c, serve_fixture):
    check(_serve(serve_fixture, pods="verified").query(c["qname"], c["qtype"]), c)


@pytest.mark.parametrize("c", PRESERVE_CASE, ids=lambda c: f"{c['qname']}-{c['qtype']}")
def test_preserve_case(c, serve_fixture):
    check(_serve(serve_fixture, ignore_empty_service=True).query(c["qname"], c["qtype"]), c)


@pytest.mark.parametrize("c", EMPTY_SERVICE, ids=lambda c: f"{c['qname']}-{c['qtype']}")
def test_ignore_empty_service(c, serve_fixture):
    resp = _serve(serve_fixture, ignore_empty_service=True).query(c["qname"], c["qtype"])
    cname_order(resp.to_dict())
    check(resp, c)


@pytest.mark.parametrize("c", APEX, ids=lambda c: f"{c['qname']}-{c['qtype']}")
def test_apex(c, serve_fixture):
    check(_serve(serve_fixture, local_ips=["127.0.0.1"]).query(c["qname"], c["qtype"]), c)


@pytest.mark.parametrize("c", REVERSE, ids=lambda c: c["qname"][:40])
def test_reverse(c):
    zones = [
        "cluster.local.",
        "0.10.in-addr.arpa.",
        "168.192.in-addr.arpa.",
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.",
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa.",
    ]
    check(Resolver(reverse_cluster(), zones).query(c["qname"], c["qtype"]), c)
