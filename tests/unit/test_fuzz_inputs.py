"""Fuzz every parser and loader of user input: each input either loads or raises an
InputError (a KproxyError, which the CLI prints as one line); nothing else, ever.

The default budget is small (CI). A longer run:

    KPROXY_FUZZ_EXAMPLES=20000 python3 -m pytest -q tests/unit/test_fuzz_inputs.py
"""

from __future__ import annotations

import json
import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kproxy_emu import packets
from kproxy_emu.errors import KproxyError
from kproxy_emu.model import Cluster
from kproxy_emu.model.config import load_kube_proxy_config, load_node_config
from kproxy_emu.netfilter.iptables_parse import parse as parse_iptables
from kproxy_emu.netfilter.nft_text import parse_dump, parse_list

EXAMPLES = int(os.environ.get("KPROXY_FUZZ_EXAMPLES", "150"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def only_input_errors(call, *args, **kwargs):
    try:
        with warnings.catch_warnings():  # warnings (a skipped kind) are fine here
            warnings.simplefilter("ignore")
            call(*args, **kwargs)
    except KproxyError as exc:
        message = str(exc)
        assert "\n" not in message.rstrip("\n") or "\\n" in repr(message), message


# ------------------------------------------------------------------ iptables-save

IPT_WORDS = [
    "-A",
    "-I",
    "-D",
    "-N",
    "-X",
    "-F",
    "-P",
    "-E",
    "-j",
    "-g",
    "-m",
    "-p",
    "-s",
    "-d",
    "-i",
    "-o",
    "-f",
    "!",
    "--dport",
    "--sport",
    "--dports",
    "tcp",
    "udp",
    "multiport",
    "mark",
    "--mark",
    "MARK",
    "--set-xmark",
    "--or-mark",
    "DNAT",
    "SNAT",
    "--to-destination",
    "--to-source",
    "MASQUERADE",
    "--to-ports",
    "statistic",
    "--mode",
    "random",
    "nth",
    "--probability",
    "--every",
    "--packet",
    "conntrack",
    "--ctstate",
    "NEW",
    "ESTABLISHED",
    "comment",
    "--comment",
    '"a b"',
    "addrtype",
    "--dst-type",
    "LOCAL",
    "recent",
    "--name",
    "--set",
    "--rcheck",
    "--seconds",
    "set",
    "--match-set",
    "src,dst",
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "KUBE-SVC-A",
    "KUBE-SEP-B",
    "KUBE-SERVICES",
    "PREROUTING",
    "10.0.0.1",
    "10.0.0.0/8",
    "300.1.1.1",
    "fd00::1",
    "10.0.0.1:80",
    "0x4000/0x4000",
    "80",
    "99999",
    "1:2:3",
    "0.5",
    "2.5",
    "0",
    "-1",
    "abc",
    "eth0",
    "x" * 40,
    '"',
    "\\",
]
ipt_line = st.lists(st.sampled_from(IPT_WORDS), max_size=12).map(" ".join)
ipt_text = st.builds(
    lambda table, chains, lines: (
        f"*{table}\n"
        + "".join(f":{c} - [0:0]\n" for c in chains)
        + "".join(line + "\n" for line in lines)
        + "COMMIT\n"
    ),
    st.sampled_from(["nat", "filter", "mangle", "bogus"]),
    st.lists(st.sampled_from(["KUBE-SVC-A", "KUBE-SEP-B", "KUBE-SERVICES", "-X"]), max_size=3),
    st.lists(ipt_line, max_size=6),
)


@fuzz
@given(text=st.one_of(ipt_text, st.text(max_size=300)), strict=st.booleans())
def test_iptables_save_parser(text, strict):
    only_input_errors(parse_iptables, text, file="dump", complete=strict, evaluable=strict)


# ------------------------------------------------------------------ nftables

NFT_WORDS = [
    "add",
    "table",
    "chain",
    "set",
    "map",
    "rule",
    "element",
    "ip",
    "ip6",
    "kube-proxy",
    "{",
    "}",
    ";",
    "type",
    "nat",
    "filter",
    "hook",
    "prerouting",
    "priority",
    "dstnat",
    "-",
    "+",
    "10",
    "timeout",
    "3h",
    "1x",
    "flags",
    "interval",
    "comment",
    '"c"',
    "ipv4_addr",
    ":",
    ".",
    "jump",
    "goto",
    "services",
    "ip daddr",
    "10.0.0.1",
    "policy",
    "accept",
    "elements",
    "=",
]
nft_line = st.lists(st.sampled_from(NFT_WORDS), max_size=14).map(" ".join)
nft_text = st.lists(nft_line, max_size=6).map(
    lambda lines: "add table ip kube-proxy\n" + "\n".join(lines) + "\n"
)


@fuzz
@given(text=st.one_of(nft_text, st.text(max_size=300)))
def test_nft_dump_parser(text):
    only_input_errors(parse_dump, text, "dump")


@fuzz
@given(
    text=st.one_of(
        st.lists(nft_line, max_size=8).map(
            lambda lines: "table ip kube-proxy {\n" + "\n".join(lines) + "\n}\n"
        ),
        st.text(max_size=300),
    )
)
def test_nft_list_parser(text):
    only_input_errors(parse_list, text)


# ------------------------------------------------------------------ manifests and config

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["TCP", "UDP", "10.0.0.1", "fd00::1", "ClusterIP", "NodePort", "default"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "metadata",
                    "name",
                    "namespace",
                    "spec",
                    "ports",
                    "port",
                    "targetPort",
                    "protocol",
                    "clusterIP",
                    "clusterIPs",
                    "type",
                    "selector",
                    "endpoints",
                    "addresses",
                    "conditions",
                    "ready",
                    "labels",
                    "kubernetes.io/service-name",
                    "addressType",
                    "nodePort",
                    "ipFamilies",
                    "items",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)
objects = st.builds(
    lambda kind, api, body: (
        dict(body, kind=kind, apiVersion=api) if isinstance(body, dict) else body
    ),
    st.sampled_from(["Service", "EndpointSlice", "Node", "Pod", "List", "Namespace", "Foo"]),
    st.sampled_from(["v1", "discovery.k8s.io/v1", "v2"]),
    json_values,
)


@fuzz
@given(doc=objects, as_json=st.booleans())
def test_manifest_loader(tmp_path_factory, doc, as_json):
    path = tmp_path_factory.mktemp("m") / ("m.json" if as_json else "m.yaml")
    path.write_text(json.dumps(doc) if as_json else json.dumps(doc, indent=1))
    only_input_errors(Cluster.from_files, [str(path)])


@fuzz
@given(text=st.text(max_size=400))
def test_manifest_loader_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("m") / "m.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    only_input_errors(Cluster.from_files, [str(path)])


config_docs = st.builds(
    lambda body: (
        dict(body, kind="KubeProxyConfiguration", apiVersion="kubeproxy.config.k8s.io/v1alpha1")
        if isinstance(body, dict)
        else body
    ),
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(
                [
                    "mode",
                    "clusterCIDR",
                    "iptables",
                    "ipvs",
                    "nftables",
                    "conntrack",
                    "nodePortAddresses",
                    "masqueradeAll",
                    "masqueradeBit",
                    "featureGates",
                    "detectLocalMode",
                    "detectLocal",
                    "syncPeriod",
                    "bindAddress",
                ]
            ),
            json_values,
            max_size=4,
        ),
    ),
)
node_docs = st.dictionaries(
    st.sampled_from(["name", "ips", "interfaces", "zone", "podCIDRs", "features"]),
    json_values,
    max_size=5,
)


@fuzz
@given(doc=st.one_of(config_docs, json_values), raw=st.text(max_size=200), use_raw=st.booleans())
def test_kube_proxy_config_loader(tmp_path_factory, doc, raw, use_raw):
    path = tmp_path_factory.mktemp("c") / "c.yaml"
    path.write_text(raw if use_raw else json.dumps(doc, indent=1), errors="surrogatepass")
    only_input_errors(load_kube_proxy_config, str(path))


@fuzz
@given(doc=st.one_of(node_docs, json_values), raw=st.text(max_size=200), use_raw=st.booleans())
def test_node_config_loader(tmp_path_factory, doc, raw, use_raw):
    path = tmp_path_factory.mktemp("n") / "n.yaml"
    path.write_text(raw if use_raw else json.dumps(doc, indent=1), errors="surrogatepass")
    only_input_errors(load_node_config, str(path))


# ------------------------------------------------------------------ packet strings

PKT_WORDS = [
    "tcp",
    "udp",
    "sctp",
    "icmp",
    "10.0.0.1:80",
    "1.2.3.4",
    "->",
    "from=pod",
    "from=x",
    "flags=S",
    "flags=ZZ",
    ":",
    "300.1.1.1:1",
    "10.0.0.1:99999",
    "\ud800",
    "\x00",
]
pkt_line = st.one_of(
    st.lists(st.sampled_from(PKT_WORDS), max_size=6).map(" ".join), st.text(max_size=40)
)


@fuzz
@given(lines=st.lists(pkt_line, max_size=4))
def test_packet_strings(lines):
    only_input_errors(packets.from_strings, lines)
    only_input_errors(packets.from_text, "\n".join(lines), file="p.txt")
    for line in lines:
        only_input_errors(packets.parse, line)


@pytest.mark.parametrize("bad", [None, b"tcp", 7, ["tcp 1.2.3.4:1 -> 5.6.7.8:2", None]])
def test_packet_strings_of_the_wrong_type(bad):
    only_input_errors(packets.from_strings, bad)
