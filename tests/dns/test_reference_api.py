"""Every case of the CoreDNS reference (tests/data/coredns), through the Python API,
compared as upstream's SortAndCheck compares (howToCompare)."""

from __future__ import annotations

import pytest

from kproxy_emu.dns import Resolver, parse_request

from .conftest import REFERENCE, StubUpstream, check, cname_order, suite_resolver

CASES = [
    pytest.param(suite, case, id=f"{suite['test']}-{case['var']}-{case['index']}")
    for suite in REFERENCE["suites"]
    for case in suite["cases"]
]


@pytest.mark.parametrize(("suite", "case"), CASES)
def test_reference_case(suite, case, serve_fixture):
    if suite["test"] == "TestMultiClusterServeDNS" and case["var"] != "commonDnsTestCases":
        pytest.skip("multicluster (ServiceImport) names are not modelled (docs/dns.md)")
    upstream = StubUpstream(case["upstreamStub"]) if "upstreamStub" in case else None
    resolver = suite_resolver(suite, serve_fixture, upstream=upstream)
    resp = resolver.query(case["qname"], case["qtype"])
    check(resp, case)
    if "CNAMEOrder" in suite["checks"]:
        cname_order(resp.to_dict())
    if suite["test"] == "TestServeDNS":
        assert resp.truncated == case["expectTruncated"]


@pytest.mark.parametrize("row", REFERENCE["parseRequest"]["valid"], ids=lambda r: r["query"])
def test_parse_request_valid(row):
    r = parse_request(row["query"], row["zone"], row["multicluster"], row["zonalOption"])
    assert str(r) == row["expectedRecordRequestString"]
    assert r.zone == row["expectedZoneLabel"]


@pytest.mark.parametrize(
    "row", REFERENCE["parseRequest"]["invalidWithoutZonal"], ids=lambda r: r["query"]
)
def test_parse_request_invalid(row):
    with pytest.raises(ValueError):
        parse_request(row["query"], "inter.webs.tests.", False, False)


def test_resolver_defaults(serve_fixture):
    r = Resolver(serve_fixture)
    assert r.zones == ["cluster.local."] and r.pods == "disabled" and r.ttl == 5
