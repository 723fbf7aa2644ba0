"""Corefile reading (a real kubeadm Corefile, errors naming file:line) and the pod search
path as glibc's res_nsearch walks it."""

from __future__ import annotations

import pytest

from kproxy_emu.dns import Resolver
from kproxy_emu.dns.corefile import CorefileWarning, kubernetes_config, parse_corefile
from kproxy_emu.dns.search import candidates, parse_resolv_conf, resolv_conf, stub_resolve
from kproxy_emu.errors import InputError
from kproxy_emu.model import Cluster

from .conftest import serve_cluster, serve_namespace_exists
from .test_dns_cli_serve import KUBEADM_COREFILE


def test_kubeadm_corefile():
    with pytest.warns(CorefileWarning, match="forward"):
        cfg = kubernetes_config(KUBEADM_COREFILE, "Corefile")
    assert cfg.zones == ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]
    assert cfg.pods == "insecure" and cfg.ttl == 30
    assert cfg.fallthrough == ["in-addr.arpa.", "ip6.arpa."]
    assert cfg.server_keys == [".:53"]
    assert "cache" in cfg.ignored and "loadbalance" in cfg.ignored


def test_corefile_server_block_zones_and_options():
    text = (
        "cluster.local:53 example.org {\n  kubernetes {\n    namespaces a b\n"
        "    endpoint_pod_names\n    ignore empty_service\n  }\n}\n"
    )
    cfg = kubernetes_config(text)
    assert cfg.zones == ["cluster.local.", "example.org."]
    assert cfg.namespaces == ["a", "b"] and cfg.endpoint_pod_names and cfg.ignore_empty_service


def test_corefile_cidr_zone():
    cfg = kubernetes_config(".:53 {\n kubernetes cluster.local 10.0.0.0/8 172.16.0.0/15\n}\n")
    assert cfg.zones == [
        "cluster.local.",
        "10.in-addr.arpa.",
        "16.172.in-addr.arpa.",
        "17.172.in-addr.arpa.",
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (".:53 {\n kubernetes cluster.local {\n  ttl 9999\n }\n}\n", 3),
        (".:53 {\n kubernetes cluster.local {\n  bogus 1\n }\n}\n", 3),
        (".:53 {\n kubernetes cluster.local {\n  pods\n }\n}\n", 3),
        (".:53 {\n kubernetes cluster.local {\n  ignore nothing\n }\n}\n", 3),
        (".:53 {\n kubernetes cluster.local\n", 1),
        (".:53 {\n kubernetes 10.in-addr.arpa\n}\n", 2),
        (".:53 {\n kubernetes\n kubernetes\n}\n", 3),
        ("}\n", 1),
        ('.:53 {\n kubernetes "cluster.local\n}\n', 2),
    ],
)
def test_corefile_errors_name_file_and_line(text, line):
    with pytest.raises(InputError) as exc:
        kubernetes_config(text, "Corefile")
    assert str(exc.value).startswith(f"Corefile:{line}:")
    assert "\n" not in str(exc.value)


def test_corefile_without_kubernetes():
    with pytest.raises(InputError, match="no kubernetes plugin"):
        kubernetes_config(".:53 {\n forward . 8.8.8.8\n}\n", "Corefile")


def test_corefile_comments_and_quotes():
    blocks = parse_corefile('# top\n.:53 { # c\n  kubernetes "cluster.local" # k\n}\n')
    assert blocks[0].directives[0].args[0].text == "cluster.local"


def test_corefile_resolver_kwargs():
    cfg = kubernetes_config(".:53 {\n kubernetes cluster.local {\n  pods verified\n }\n}\n")
    r = Resolver(serve_cluster(), namespace_exists=serve_namespace_exists, **cfg.resolver_kwargs())
    assert r.query("10-240-0-1.podns.pod.cluster.local", "A").answer[0].address == "10.240.0.1"


# ------------------------------------------------------------------ search path

SEARCH = ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def test_resolv_conf_as_kubelet_writes_it():
    assert parse_resolv_conf(resolv_conf("shop")) == (SEARCH, 5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web", ["web.shop.svc.cluster.local.", "web.svc.cluster.local.",
                 "web.cluster.local.", "web."]),
        ("web.shop.svc.cluster.local", ["web.shop.svc.cluster.local.shop.svc.cluster.local.",
                                        "web.shop.svc.cluster.local.svc.cluster.local.",
                                        "web.shop.svc.cluster.local.cluster.local.",
                                        "web.shop.svc.cluster.local."]),
        ("a.b.c.d.e.f", ["a.b.c.d.e.f.", "a.b.c.d.e.f.shop.svc.cluster.local.",
                         "a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local."]),
        ("web.shop.svc.cluster.local.", ["web.shop.svc.cluster.local."]),
    ],
)  # fmt: skip
def test_candidates_glibc_order(name, expected):
    assert candidates(name, SEARCH, 5) == expected


def _demo() -> Resolver:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]},
    }
    return Resolver(Cluster.from_dicts([svc]))


@pytest.mark.parametrize(
    ("name", "answered", "queries", "status"),
    [
        ("web", "web.shop.svc.cluster.local.", 1, "answered"),
        ("web.shop", "web.shop.svc.cluster.local.", 2, "answered"),
        ("web.shop.svc", "web.shop.svc.cluster.local.", 3, "answered"),
        ("web.shop.svc.cluster.local", "web.shop.svc.cluster.local.", 4, "answered"),
        ("web.shop.svc.cluster.local.", "web.shop.svc.cluster.local.", 1, "answered"),
        ("example.com", "example.com.", 4, "upstream"),
        ("nope", "nope.", 4, "upstream"),
        ("nope.shop.svc.cluster.local.", None, 1, "NXDOMAIN"),
    ],
)
def test_stub_resolve(name, answered, queries, status):
    result = stub_resolve(_demo().query, name, "A", SEARCH, 5)
    assert (result.answered, result.queries, result.status) == (answered, queries, status)


def test_stub_resolve_nodata_moves_on():
    result = stub_resolve(_demo().query, "web", "AAAA", SEARCH, 5)
    assert result.tries[0]["rcode"] == "NOERROR" and result.tries[0]["answers"] == 0
    assert result.queries == 4 and result.status == "upstream"  # web. goes upstream
