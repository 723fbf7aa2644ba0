"""The bad-input corpus of issue 18: every case exits 2 with one line naming where (file
and line, or object and field) and the bad value, never a traceback; and the
iptables-save parser refuses exactly what iptables-restore 1.8.9 refuses (recorded with
the real tool in a throwaway network namespace)."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from kproxy_emu import packets
from kproxy_emu.cli import main
from kproxy_emu.errors import InputError
from kproxy_emu.netfilter.iptables_parse import parse
from kproxy_emu.netfilter.nft_text import parse_dump

PACKET = "tcp 10.0.0.5:1234 -> 172.16.0.1:80"
DUMP = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 172.16.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A {rule}
COMMIT
"""
RULE_LINE = 9


def run(argv, capsys):
    """(exit code, stderr) of the CLI run in process; a traceback fails the test."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("usage:")), err
    assert lines[-1].startswith("kproxy-emu: error: "), err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, err)


# ------------------------------------------------------------------ items 1 and 2

TRACE_CASES = [
    # item 1: were tracebacks in the single-packet trace path
    ("-s 300.0.0.1/32 -j ACCEPT", "-s", "300.0.0.1"),
    ("-d 10.0.0.0/99 -j ACCEPT", "invalid mask", "10.0.0.0/99"),
    ("-p tcp -j DNAT --to-destination not-an-address", "--to-destination", "not-an-address"),
    ("-m mark --mark 0xZZ -j ACCEPT", "--mark", "0xZZ"),
    ("-j MARK --set-xmark zz", "--set-xmark", "zz"),
    ("-m statistic --mode random --probability abc -j ACCEPT", "--probability", "abc"),
    ("-m statistic --mode nth --every 0 -j ACCEPT", "--every", "'0'"),
    ("-p tcp --dport abc -j ACCEPT", "--dport", "abc"),
    ("-p tcp -m multiport --dports 1:2:3 -j ACCEPT", "--dports", "2:3"),
    # item 2: traced and exit 0 before, refused by iptables-restore
    ("-j KUBE-NOPE", "does not exist", "KUBE-NOPE"),
    ("-g KUBE-NOPE", "does not exist", "KUBE-NOPE"),
    ("-p tcp --dport 99999 -j ACCEPT", "--dport", "99999"),
    ("-p foo -j ACCEPT", "unknown protocol", "foo"),
    ("-m statistic --mode random --probability 2.5 -j ACCEPT", "--probability", "2.5"),
    ("-m conntrack --ctstate BOGUS -j ACCEPT", "--ctstate", "BOGUS"),
    ("-i " + "a" * 40 + " -j ACCEPT", "-i", "a" * 40),
    ("-s fd00::1 -j ACCEPT", "IPv6 address in an IPv4 ruleset", "fd00::1"),
    ("-j SNAT --to-source garbage", "--to-source", "garbage"),
    # values iptables takes but the engine cannot evaluate: refused when tracing
    ("-p tcp --dport http -j ACCEPT", "service names are not supported", "http"),
    ("-s localhost -j ACCEPT", "not supported", "localhost"),
    ("-p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.3:80", "not supported", "10.0.0.1-"),
    ("-m conntrack --ctstate est -j ACCEPT", "upper-case", "est"),
    ("-p tcp -p 6 -j ACCEPT", "multiple -p", "-p"),
    ("-p 6 -j ACCEPT", "protocol numbers are not supported", "6"),
]


@pytest.mark.parametrize("case", TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
def test_trace_iptables_save_refuses_bad_rules_naming_the_line(tmp_path, capsys, case):
    rule, *fragments = case
    dump = tmp_path / "node.dump"
    dump.write_text(DUMP.format(rule=rule))
    for n_packets in (1, 2):  # one packet: the reference evaluator; two: the chain VM
        code, err = run(
            ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1"]
            + ["--packet", PACKET] * n_packets,
            capsys,
        )
        assert_one_line_error(code, err, f"{dump}:{RULE_LINE}:", *fragments)


def test_rule_on_an_undeclared_chain(tmp_path, capsys):
    dump = tmp_path / "node.dump"
    dump.write_text(DUMP.format(rule="-j ACCEPT").replace("-A KUBE-SVC-A", "-A KUBE-SVC-B"))
    code, err = run(
        ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1", "--packet", PACKET], capsys
    )
    assert_one_line_error(code, err, f"{dump}:{RULE_LINE}:", "KUBE-SVC-B", "does not exist")


def test_jump_to_a_chain_declared_only_after_the_rule(tmp_path, capsys):
    # iptables-restore refuses it too: the jump is resolved before the later chain exists
    dump = tmp_path / "node.dump"
    dump.write_text(
        DUMP.format(rule="-j KUBE-LATE").replace("COMMIT", ":KUBE-LATE - [0:0]\nCOMMIT")
    )
    code, err = run(
        ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1", "--packet", PACKET], capsys
    )
    assert_one_line_error(code, err, f"{dump}:{RULE_LINE}:", "KUBE-LATE")


def test_ipv6_node_dump_family_comes_from_the_node_ip(tmp_path, capsys):
    dump = tmp_path / "node.dump"
    dump.write_text(DUMP.format(rule="-s 10.0.0.0/8 -j ACCEPT"))
    code, err = run(
        ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1", "--packet", PACKET], capsys
    )
    assert code == 0, err


@pytest.mark.parametrize(("rule", "dnat"), [("-f", False), ("! -f", True)])
def test_fragment_match_is_traced(tmp_path, capsys, rule, dnat):
    """-f matches second and later fragments; packets here are whole (conntrack's defrag
    reassembles before the tables), so -f never matches and ! -f always does: in the
    trace (reference evaluator) and in process (the engine) alike."""
    from kproxy_emu import Dataplane
    from kproxy_emu.dataplane import IptablesOptions
    from kproxy_emu.model import Cluster
    from kproxy_emu.model.config import NodeConfig

    text = DUMP.format(rule=f"-p tcp {rule} -j DNAT --to-destination 10.0.0.9:8080")
    dump = tmp_path / "node.dump"
    dump.write_text(text)
    argv = ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1", "--packet", PACKET]
    code = main([str(a) for a in [*argv, "--json"]])
    out, err = capsys.readouterr()
    assert code == 0, err
    traced = json.loads(out)
    assert (traced["dnat"] == "10.0.0.9:8080") == dnat
    dp = Dataplane(
        Cluster(),
        IptablesOptions(tables=parse(text, evaluable=True)),
        node_config=NodeConfig.from_node("node", ["10.1.1.1"]),
    )
    verdict = dp.process(packets.from_strings([PACKET]))[0]
    assert (verdict["action"] == packets.Action.DNAT) == dnat
    assert (packets.dnat_text(verdict) == "10.0.0.9:8080") == dnat


def test_binary_dump(tmp_path, capsys):
    dump = tmp_path / "node.dump"
    dump.write_bytes(b"\xff\xfe*nat\n")
    code, err = run(
        ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1", "--packet", PACKET], capsys
    )
    assert_one_line_error(code, err, str(dump), "not UTF-8", "0xff")


# What iptables-restore 1.8.9 (nf_tables) says of each rule (in DUMP, with --test, or
# committed for the chain checks), recorded in a network namespace: True = accepted.
REAL_TOOL = [
    ("-j ACCEPT", True),
    ("-p tcp --dport 99999 -j ACCEPT", False),
    ("-p foo -j ACCEPT", False),
    ("-m statistic --mode random --probability 2.5 -j ACCEPT", False),
    ("-m conntrack --ctstate BOGUS -j ACCEPT", False),
    ("-i " + "a" * 40 + " -j ACCEPT", False),
    ("-i " + "a" * 15 + " -j ACCEPT", True),
    ("-i " + "a" * 16 + " -j ACCEPT", False),
    ("-s fd00::1 -j ACCEPT", False),
    ("-j SNAT --to-source garbage", False),
    ("-s 300.0.0.1/32 -j ACCEPT", False),
    ("-d 10.0.0.0/99 -j ACCEPT", False),
    ("-j DNAT --to-destination not-an-address", False),
    ("-m mark --mark 0xZZ -j ACCEPT", False),
    ("-j MARK --set-xmark zz", False),
    ("-m statistic --mode random --probability abc -j ACCEPT", False),
    ("-m statistic --mode nth --every 0 -j ACCEPT", False),
    ("-p tcp --dport abc -j ACCEPT", False),
    ("-p tcp -m multiport --dports 1:2:3 -j ACCEPT", False),
    ("-f -j ACCEPT", True),
    ("-p tcp --dport http -j ACCEPT", True),
    ("-s 10.0.0.1/255.255.0.0 -j ACCEPT", True),
    ("-s 10.0.0.1/255.0.255.0 -j ACCEPT", True),
    ("-s localhost -j ACCEPT", True),
    ("-s 10.1 -j ACCEPT", True),
    ("-s 10.0.0.1/32/8 -j ACCEPT", False),
    ("-s 10.0.0.1/ -j ACCEPT", False),
    ("-s 10.0.0.0/0x10 -j ACCEPT", True),
    ("-s 10.0.0.0/08 -j ACCEPT", False),
    ("-s 10.0.0.0/255.255.0.x -j ACCEPT", False),
    ("-d 10.0.0.1,10.0.0.2 -j ACCEPT", True),
    ("-d 10.0.0.1,fd00::1 -j ACCEPT", False),
    ("-m statistic --mode nth --every 3 --packet 3 -j ACCEPT", False),
    ("-m statistic --mode random --probability -0.1 -j ACCEPT", False),
    ("-m statistic --mode random --probability 1e-1 -j ACCEPT", True),
    ("-m statistic --mode random --probability inf -j ACCEPT", False),
    ("-m statistic --mode bogus -j ACCEPT", False),
    ("-m statistic --mode random -j ACCEPT", False),
    ("-m statistic --probability 0.5 -j ACCEPT", False),
    ("-j DNAT --to-destination 10.0.0.1:99999", False),
    ("-j DNAT --to-destination 10.0.0.1:80", False),  # a port needs -p
    ("-p tcp -j DNAT --to-destination 10.0.0.1:80", True),
    ("-p tcp -j DNAT --to-destination 10.0.0.1:0", True),
    ("-p tcp -j DNAT --to-destination 10.0.0.1:http", True),
    ("-j DNAT", False),
    ("-j SNAT --to-source 10.0.0.1", True),
    ("-j SNAT --to-source 10.0.0.1:80", False),
    ("-m mark --mark 0x1/0x100000000 -j ACCEPT", False),
    ("-m mark --mark 4294967296 -j ACCEPT", False),
    ("-m mark --mark 010 -j ACCEPT", True),
    ("-m mark --mark 0X10 -j ACCEPT", True),
    ("-m mark --mark -1 -j ACCEPT", False),
    ("-m mark --mark /0x4000 -j ACCEPT", False),
    ("-j MARK --set-xmark 0x4000/0x4000", True),
    ("-j MARK --or-mark 0x4000/0x4000", False),
    ("-m conntrack --ctstate new -j ACCEPT", True),
    ("-m conntrack --ctstate est,rel -j ACCEPT", True),
    ("-m conntrack --ctstate NEW,,ESTABLISHED -j ACCEPT", False),
    ("-m state --state SNAT -j ACCEPT", False),
    ("-m addrtype --dst-type LOCAL,bogus -j ACCEPT", False),
    ("-m addrtype --dst-type loc -j ACCEPT", True),
    ("-p tcp --dport 80:70 -j ACCEPT", False),
    ("-p tcp --dport :70 -j ACCEPT", True),
    ("-p tcp --dport 70: -j ACCEPT", True),
    ("-p tcp --dport -1 -j ACCEPT", False),
    ("-p tcp --dport 0x50 -j ACCEPT", True),
    ("-p tcp -m multiport --dports " + ",".join(map(str, range(1, 16))) + " -j ACCEPT", True),
    ("-p tcp -m multiport --dports " + ",".join(map(str, range(1, 17))) + " -j ACCEPT", False),
    ("-m multiport --dports 80 -j ACCEPT", False),
    ("-p tcp -m multiport --dports 80, -j ACCEPT", False),
    ("-p 300 -j ACCEPT", False),
    ("-p TCP --dport 80 -j ACCEPT", True),
    ("-j MASQUERADE --to-ports 80", False),
    ("-p tcp -j MASQUERADE --to-ports 80", True),
    ("-p tcp -j MASQUERADE --to-ports 80-70", False),
    ("-m recent --name foo --rcheck --seconds abc -j ACCEPT", False),
    ("-m recent --name foo --rcheck --seconds 10800 --reap -j ACCEPT", True),
    ("-m recent --name a --set --name b -j ACCEPT", False),
    ('-m comment --comment "x" --comment "y" -j ACCEPT', False),
    ("-p tcp --dport 80 --dport 81 -j ACCEPT", False),
    ("-j REJECT --reject-with bogus", False),
    ("-j REJECT --reject-with icmp-port-unreachable", True),
    ("-j REJECT --reject-with icmp-host-prohib", True),
    ("-m ipvs --vproto bogus -j ACCEPT", False),
    ("-m ipvs --vaddr fd00::1 -j ACCEPT", False),
    ("-j KUBE-NOPE", False),
    ("-g KUBE-NOPE", False),
    # a jump loop: --test passes it, the commit fails at this line ("RULE_APPEND failed
    # (Too many links)", the kernel's ELOOP)
    ("-j KUBE-SERVICES", False),
    ("-p tcp -p 6 -j ACCEPT", False),
    ("-s 1.1.1.1 --source 2.2.2.2 -j ACCEPT", False),
]


@pytest.mark.parametrize("rule, accepted", REAL_TOOL)
def test_parser_agrees_with_iptables_restore(rule, accepted):
    text = DUMP.format(rule=rule)
    if accepted:
        parse(text, complete=True)
    else:
        with pytest.raises(InputError, match=f"line {RULE_LINE}:"):
            parse(text, complete=True)


def test_partial_restore_text_may_use_chains_it_does_not_declare():
    # kube-proxy's partial syncs: applied with --noflush on top of the node's chains
    parse("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-X\nCOMMIT\n")


# ------------------------------------------------------------------ item 3 (input side)

NODE = """apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
"""
SERVICE = """apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec: {clusterIP: 172.16.0.1, ports: [{port: 80, targetPort: %s, name: %s}]}
"""


def service(name="s1", namespace="default", target_port="8080", port_name="p"):
    return SERVICE % (name, namespace, target_port, port_name)


def test_rendered_flags_are_checked(tmp_path, capsys):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(service() + "---\n" + NODE)
    for flags, fragments in (
        (["--mark-text", "zzz"], ("--mark-text", "zzz")),
        (["--mark-text", "0x8000"], ("--mark-text", "0x8000")),
        (["--node-ip", "fd00::5"], ("--node-ip", "fd00::5", "IPv4")),
        (["--node-ip", "fd00::5", "--mode", "ipvs"], ("--node-ip", "fd00::5")),
    ):
        code, err = run(["render", manifest, *flags], capsys)
        assert_one_line_error(code, err, *fragments)
    for flags in (["--mark-text", "0x4000"], ["--node-ip", "10.0.0.1", "--node-ip", "fd00::5"]):
        code, err = run(["render", manifest, *flags], capsys)
        assert code == 0, err


# ------------------------------------------------------------------ items 3 and 5: manifests

MANIFEST_CASES = [
    (service(name='"a\\nb"'), "Service", "metadata.name", "a\\nb"),
    (service(name="'a\"b'"), "Service", "metadata.name", 'a"b'),
    (service(name="Upper"), "Service", "metadata.name", "Upper"),
    (service(port_name='"p\\n1"'), "Service default/s1", "spec.ports[0].name", "p\\n1"),
    (service(namespace="0"), "Service s1", "metadata.namespace", "0"),
    (service(namespace="false"), "Service s1", "metadata.namespace", "False"),
    (service(namespace="Bad_NS"), "Service s1", "metadata.namespace", "Bad_NS"),
    (service(target_port="false"), "Service default/s1", "spec.ports[0].targetPort", "False"),
    (
        """apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s1-1, namespace: default, labels: {kubernetes.io/service-name: s1}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1], conditions: {ready: %s}}]
""",
        "EndpointSlice default/s1-1",
        "endpoints[0].conditions.ready",
        None,
    ),
    (
        """apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s1-1, namespace: default, labels: {kubernetes.io/service-name: "a b"}}
addressType: IPv4
endpoints: []
""",
        "EndpointSlice default/s1-1",
        "kubernetes.io/service-name",
        "a b",
    ),
    ('{"kind": "List", "apiVersion": "v1", "items": false}', "List", "items", "False"),
]


@pytest.mark.parametrize("text, obj, field, value", MANIFEST_CASES)
def test_manifests_as_strict_as_the_api_server(tmp_path, capsys, text, obj, field, value):
    for ready in ("1", "0", "2", "'true'") if "%s" in text else (None,):
        path = tmp_path / "m.yaml"
        path.write_text(text % ready if ready else text)
        code, err = run(["check", path], capsys)
        assert_one_line_error(code, err, str(path), obj, field, value or ready)


# ------------------------------------------------------------------ item 4


def _bomb(levels=9):
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        text += f"{name}: &{name} [" + ",".join(f"*{prev}" for _ in range(9)) + "]\n"
        prev = name
    return text


@pytest.mark.parametrize(
    "flag, head",
    [
        (
            "--config",
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
        ),
        ("--node-config", "name: n1\nips: [10.0.0.1]\n"),
    ],
)
def test_yaml_alias_bomb_is_quick(tmp_path, capsys, flag, head):
    config = tmp_path / "c.yaml"
    config.write_text(head + _bomb())
    manifest = tmp_path / "m.json"
    manifest.write_text('{"kind": "List", "apiVersion": "v1", "items": []}')
    start = time.perf_counter()
    code, err = run(["render", manifest, flag, config], capsys)
    assert time.perf_counter() - start < 5  # was 14 s and 1.2 GB
    assert_one_line_error(code, err, f"{config}:3", "unknown field")


@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper"),
        ("block.yaml", "- " * 300 + "x\n", "nested deeper"),
    ],
)
def test_deep_nesting(tmp_path, capsys, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    code, err = run(["check", path], capsys)
    assert_one_line_error(code, err, str(path), fragment)
    config = tmp_path / ("c-" + name)
    config.write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "x: " + "[" * 100_000 + "]" * 100_000 + "\n"
    )
    code, err = run(["render", path, "--config", config], capsys)  # a segfault before
    assert_one_line_error(code, err, f"{config}:3", "nested deeper")


def test_lone_surrogate_in_packet_strings():
    with pytest.raises(InputError, match=r"line 2, column 1.*surrogate"):
        packets.from_strings(["tcp 1.2.3.4:1 -> 5.6.7.8:80", "\ud800"])
    with pytest.raises(InputError, match=r"p\.txt:1.*surrogate"):
        packets.from_text("tcp 1.2.3.4:1 -> 5.6.7.8:80 \ud800", file="p.txt")
    with pytest.raises(InputError, match="list of packet strings"):
        packets.from_strings(None)


def test_nft_dump_parser_reads_valid_nft_syntax():
    rs = parse_dump(
        "add table ip kube-proxy\n"
        "add chain ip kube-proxy c { type nat hook prerouting priority dstnat ; }\n"
        "add chain ip kube-proxy d { type nat hook postrouting priority srcnat - 10 ; "
        "policy accept ; }\n"
        "add set ip kube-proxy s { type ipv4_addr ; timeout 3h ; }\n"
    )
    assert rs.chains["c"].priority == -100
    assert rs.chains["d"].priority == 90
    assert rs.sets["s"].timeout == 3 * 3600
    for bad in (
        "add chain ip kube-proxy c { type nat hook prerouting ; }",  # nft: priority needed
        "add chain ip kube-proxy c { type nat hook prerouting priority soon ; }",
        "add set ip kube-proxy s { type ipv4_addr ; timeout 3x ; }",
    ):
        with pytest.raises(InputError, match="dump:2"):
            parse_dump("add table ip kube-proxy\n" + bad + "\n", "dump")


# ------------------------------------------------------------------ item 8


def test_synth_output_is_not_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "c.json"
    out.write_text("keep")
    code, err = run(["synth", "--services", "3", "-o", out], capsys)
    assert_one_line_error(code, err, str(out), "--force")
    assert out.read_text() == "keep"
    code, err = run(["synth", "--services", "3", "-o", out, "--force"], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["kind"] == "List"


def test_synth_replaces_a_symlink_not_its_target(tmp_path, capsys):
    target = tmp_path / "target.txt"
    target.write_text("keep")
    link = tmp_path / "c.yaml"
    link.symlink_to(target)
    code, err = run(["synth", "--services", "3", "-o", link], capsys)
    assert_one_line_error(code, err, str(link), "exists")
    dangling = tmp_path / "d.yaml"
    dangling.symlink_to(tmp_path / "nowhere")
    code, err = run(["synth", "--services", "3", "-o", dangling], capsys)
    assert_one_line_error(code, err, str(dangling), "exists")
    code, err = run(["synth", "--services", "3", "-o", link, "--force"], capsys)
    assert code == 0, err
    assert target.read_text() == "keep"
    assert not link.is_symlink()


def test_synth_write_failure_leaves_the_old_file_and_no_partial_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "c.json"
    out.write_text("keep")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    code, err = run(["synth", "--services", "3", "-o", out, "--force"], capsys)
    assert_one_line_error(code, err, str(out), "No space left")
    assert out.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]
    new = tmp_path / "new.json"
    code, err = run(["synth", "--services", "3", "-o", new], capsys)
    assert code == 2 and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_a_rendered_node_dump_traces_as_a_whole_dump(tmp_path, capsys):
    # what kube-proxy writes (and a node lists) passes the whole-dump checks
    manifests = tmp_path / "c.json"
    assert run(["synth", "--services", "40", "--seed", "3", "-o", manifests], capsys)[0] == 0
    for fmt in ("restore", "save"):
        assert main(["render", str(manifests), "--format", fmt]) == 0
        dump = tmp_path / f"{fmt}.dump"
        dump.write_text(capsys.readouterr().out)
        parse(dump.read_text(), complete=True, evaluable=True)
    code, err = run(
        ["trace", "--iptables-save", dump, "--node-ip", "192.168.0.1", "--packet", PACKET],
        capsys,
    )
    assert code == 0, err


def test_a_goto_loop_built_without_the_parser_is_refused_at_lowering():
    """The parser refuses jump loops with the dump's line; tables built in code skip it,
    and the chain VM would spin for ever on a goto loop (no stack grows): lowering
    refuses them too."""
    from kproxy_emu.dataplane.lowering import lower
    from kproxy_emu.netfilter.ruleset import Opt, Ruleset

    tables = Ruleset()
    nat = tables.table("nat")
    nat.declare("PREROUTING", "ACCEPT")
    nat.declare("KUBE-X")
    nat.append("PREROUTING", Opt("-j", ("KUBE-X",)))
    nat.append("KUBE-X", Opt("-s", ("10.0.0.0/8",)), Opt("-g", ("KUBE-X",)))
    with pytest.raises(InputError, match="ELOOP") as err:
        lower(tables)
    assert "KUBE-X -> KUBE-X" in str(err.value)
