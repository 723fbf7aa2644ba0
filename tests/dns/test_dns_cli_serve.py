"""The CLI (dns --json against the reference; bad input) and dns serve against real DNS
clients (dnspython, dig) on loopback, including truncation and the TCP retry."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from kproxy_emu.cli import main
from kproxy_emu.dns import Resolver
from kproxy_emu.dns.server import DnsServer
from kproxy_emu.model import Cluster

from .conftest import REFERENCE, check, serve_cluster

KUBEADM_COREFILE = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("dns") / "cluster.json"
    serve_cluster().dump(path)
    return path


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


SAMPLE = [
    (s, c)
    for s in REFERENCE["suites"]
    if s["test"] == "TestServeDNS"
    for c in s["cases"]
    if "upstreamStub" not in c
][::3]


@pytest.mark.parametrize(("suite", "case"), SAMPLE, ids=lambda x: x.get("qname", ""))
def test_cli_json_matches_reference(suite, case, manifests, capsys):
    # the dump has no Namespace objects: testns exists as the namespace of its objects
    code, out, _ = _run(
        capsys, ["dns", str(manifests), "--query", case["qname"], "--type", case["qtype"], "--json"]
    )
    assert code == 0
    doc = json.loads(out)
    if case["qname"].startswith("svc0.svc-nons") and case["rcode"] == "NameError":
        assert doc["rcode"] == "NXDOMAIN"
        return
    check(doc, case)


def test_cli_text_is_dig_like(manifests, capsys):
    code, out, _ = _run(capsys, ["dns", str(manifests), "--query", "svc1.testns.svc.cluster.local"])
    assert code == 0
    assert ";; ->>HEADER<<- opcode: QUERY, status: NOERROR" in out
    assert "svc1.testns.svc.cluster.local.\t5\tIN\tA\t10.0.0.1" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--query", "x", "--ttl", "4000"], "--ttl"),
        (["--query", "x", "--from-pod", "nope"], "--from-pod"),
        (["--query", "x", "--from-pod", "a/b"], "no such Pod"),
        ([], "--query"),
        (["--query", "x", "--listen", "127.0.0.1:0"], "--listen"),
        (["--query", "x", "--corefile", "/nonexistent/Corefile"], "/nonexistent/Corefile"),
        (["--query", "x", "--corefile", "CF", "--zone", "a"], "--zone"),
    ],
)
def test_cli_bad_input(argv, needle, manifests, capsys, tmp_path):
    cf = tmp_path / "Corefile"
    cf.write_text(KUBEADM_COREFILE)
    argv = [str(cf) if a == "CF" else a for a in argv]
    code, out, err = _run(capsys, ["dns", str(manifests), *argv])
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_cli_bad_corefile_names_line(manifests, capsys, tmp_path):
    cf = tmp_path / "Corefile"
    cf.write_text(".:53 {\n    kubernetes cluster.local {\n        pods sometimes\n    }\n}\n")
    code, _out, err = _run(capsys, ["dns", str(manifests), "--query", "x", "--corefile", str(cf)])
    assert code == 2
    assert f"{cf}:3:" in err and "sometimes" in err and len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("always::kproxy_emu.dns.corefile.CorefileWarning")
def test_cli_corefile_warns_and_applies(manifests, capsys, tmp_path):
    cf = tmp_path / "Corefile"
    cf.write_text(KUBEADM_COREFILE)
    code, out, err = _run(
        capsys,
        ["dns", str(manifests), "--query", "svc1.testns.svc.cluster.local", "--json",
         "--corefile", str(cf)],
    )  # fmt: skip
    assert code == 0
    assert "warning" in err and "forward" in err
    assert json.loads(out)["answer"][0]["ttl"] == 30


# ------------------------------------------------------------------ dns serve


def _headless_cluster(n: int) -> Cluster:
    docs = [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "big", "namespace": "default"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "big-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "big"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [f"10.1.{i // 250}.{i % 250 + 1}"]} for i in range(n)],
         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    ]  # fmt: skip
    return Cluster.from_dicts(docs)


def _count(section) -> int:
    """Records in a section (dnspython merges one owner's records into one RRset)."""
    return sum(len(rrset) for rrset in section)


@contextlib.contextmanager
def _server(resolver: Resolver):
    server = DnsServer(resolver.query, "127.0.0.1", 0)
    with server.running():
        yield server


def test_serve_dnspython_reference_sample():
    resolver = Resolver(serve_cluster(), namespaces=["testns"])
    with _server(resolver) as srv:
        for _suite, case in SAMPLE:
            if "svc-nons" in case["qname"]:
                continue
            q = dns.message.make_query(case["qname"], case["qtype"], use_edns=0)
            r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5)
            assert (
                dns.rcode.to_text(r.rcode())
                == {"Success": "NOERROR", "NameError": "NXDOMAIN"}[case["rcode"]]
            )
            assert _count(r.answer) == len(case["answer"]) and _count(r.authority) == len(
                case["ns"]
            )
            assert r.flags & dns.flags.AA


def test_serve_resolver_api_and_truncation_tcp_fallback():
    resolver = Resolver(_headless_cluster(100))
    with _server(resolver) as srv:
        # plain UDP without EDNS: 512 bytes, TC set, fewer answers
        q = dns.message.make_query("big.default.svc.cluster.local", "A")
        r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5)
        assert r.flags & dns.flags.TC and _count(r.answer) < 100
        # TCP: the whole answer
        r = dns.query.tcp(q, "127.0.0.1", port=srv.port, timeout=5)
        assert not r.flags & dns.flags.TC and _count(r.answer) == 100
        # EDNS0: the OPT is echoed and the advertised size honoured
        q = dns.message.make_query("big.default.svc.cluster.local", "A", use_edns=0, payload=4096)
        r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=5)
        assert r.edns == 0 and not r.flags & dns.flags.TC and _count(r.answer) == 100
        # the stub resolver retries over TCP by itself
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = srv.port
        res.use_edns(-1)
        res.lifetime = 10
        ans = res.resolve("big.default.svc.cluster.local.", "A")
        assert len(ans) == 100
        with pytest.raises(dns.resolver.NXDOMAIN):
            res.resolve("nope.default.svc.cluster.local.", "A")


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
def test_serve_cli_with_dig(manifests, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "kproxy_emu", "dns", "serve", str(manifests), "--listen",
         "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        assert "serving" in line, line
        port = line.split(" port ")[1].split()[0]
        dig = ["dig", "@127.0.0.1", "-p", port, "+time=5", "+tries=1"]
        out = subprocess.run(
            [*dig, "svc1.testns.svc.cluster.local", "A"], capture_output=True, text=True, timeout=30
        ).stdout
        assert "status: NOERROR" in out and "10.0.0.1" in out
        out = subprocess.run(
            [*dig, "+tcp", "_http._tcp.hdls1.testns.svc.cluster.local", "SRV"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        assert "ANSWER: 5" in out and "ADDITIONAL: 7" in out  # 6 addresses + OPT
        out = subprocess.run(
            [*dig, "svc0.testns.svc.cluster.local", "A"], capture_output=True, text=True, timeout=30
        ).stdout
        assert "status: NXDOMAIN" in out and "ns.dns.cluster.local." in out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    proc.stderr.close()


def test_serve_needs_listen(manifests, capsys):
    code = main(["dns", "serve", str(manifests)])
    _out, err = capsys.readouterr()
    assert code == 2 and "--listen" in err
    assert os.path.exists(manifests)
