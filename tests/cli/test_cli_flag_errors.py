"""Errors name what the user typed (issue 18 item 7): the flag (``--time``,
``--scheduler``, synth's and bench's flags), the dump file and line of a jump loop or a
missing ipset; argparse's own errors are one line."""

from __future__ import annotations

import pytest

from kproxy_emu.cli import main
from kproxy_emu.errors import InputError
from kproxy_emu.netfilter.iptables_parse import parse

PACKET = "tcp 10.0.0.5:1234 -> 172.16.0.1:80"
DUMP = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 172.16.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
{rule}
COMMIT
"""


def error_line(argv, capsys) -> str:
    """The one stderr line of a run that must fail with exit 2."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kproxy-emu: error: "), err
    return lines[0].removeprefix("kproxy-emu: error: ")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "c.yaml"
    assert main(["synth", "--services", "4", "--nodes", "2", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--services", "-1"], "--services: must be a non-negative integer: -1"),
        (["--nodes", "0"], "--nodes: at least one node is needed: 0"),
        (["--seed", "-3"], "--seed: must be a non-negative integer: -3"),
        (["--namespaces", "-2"], "--namespaces: must be a non-negative integer: -2"),
        (["--endpoints", "x"], "--endpoints: must be a count K"),
        (["--type-mix", "ClusterIP=-1"], "--type-mix ClusterIP: must be a non-negative share"),
        (["--protocol-mix", "ICMP=1"], "--protocol-mix ICMP: must be one of TCP, UDP, SCTP"),
        (["--service-cidr", "1.2.3.4/99"], "--service-cidr: invalid CIDR: '1.2.3.4/99'"),
        (["--cluster-cidr", "bogus"], "--cluster-cidr: invalid CIDR: 'bogus'"),
    ],
)
def test_synth_errors_name_the_flag(capsys, flags, expected):
    assert error_line(["synth", *flags], capsys).startswith(expected)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_trace_time_errors_name_the_flag(manifests, capsys, value):
    line = error_line(["trace", manifests, "--packet", PACKET, f"--time={value}"], capsys)
    assert line.startswith("--time: must be finite seconds >= 0"), line


def test_trace_times_must_not_go_back(manifests, capsys):
    argv = ["trace", manifests, "--packet", PACKET, "--packet", PACKET]
    line = error_line([*argv, "--time", "3", "--time", "1"], capsys)
    assert line.startswith("--time: ") and line.endswith(": 1.0"), line


def test_scheduler_and_seed_errors_name_the_flag(manifests, capsys):
    line = error_line(["render", manifests, "--mode", "ipvs", "--scheduler", "fastest"], capsys)
    assert line.startswith("--scheduler: unknown IPVS scheduler") and "'fastest'" in line
    line = error_line(["trace", manifests, "--packet", PACKET, "--seed", "-1"], capsys)
    assert line == "--seed: must be a non-negative integer: -1"
    line = error_line(["bench", "--seed", "-1", "--no-progress"], capsys)
    assert line == "--seed: must be a non-negative integer: -1"


def test_argparse_errors_are_one_line(capsys):
    line = error_line(["render"], capsys)
    assert "FILE" in line and "kproxy-emu render --help" in line
    line = error_line(["synth", "--services", "many"], capsys)
    assert "--services" in line and "'many'" in line


def test_jump_loop_names_the_file_and_line(tmp_path, capsys):
    # iptables-restore 1.8.9: "line 9: RULE_APPEND failed (Too many links)" (ELOOP)
    dump = tmp_path / "node.dump"
    dump.write_text(DUMP.format(rule="-A KUBE-SVC-A -j KUBE-SERVICES"))
    line = error_line(
        ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1", "--packet", PACKET], capsys
    )
    assert line.startswith(f"{dump}:9: jump loop KUBE-SERVICES -> KUBE-SVC-A -> KUBE-SERVICES")


def test_a_loop_through_a_goto_or_a_self_jump_is_refused():
    with pytest.raises(InputError, match=r"^line 9: jump loop KUBE-SVC-A -> KUBE-SVC-A"):
        parse(DUMP.format(rule="-A KUBE-SVC-A -g KUBE-SVC-A"))
    # rules inserted, deleted or flushed: the table as it ends up decides (named at COMMIT)
    text = DUMP.format(rule="-A KUBE-SVC-A -j KUBE-SERVICES\n-D KUBE-SVC-A 1")
    parse(text)
    text = DUMP.format(rule="-I KUBE-SVC-A -j KUBE-SERVICES\n-R KUBE-SVC-A 1 -j ACCEPT")
    parse(text)
    with pytest.raises(InputError, match=r"^line 11: jump loop"):
        parse(DUMP.format(rule="-A KUBE-SVC-A -j ACCEPT\n-R KUBE-SVC-A 1 -j KUBE-SERVICES"))


def test_missing_ipset_names_the_file_and_line(tmp_path, capsys):
    # iptables-restore 1.8.9: "Set KUBE-NOPE doesn't exist. Error occurred at line: 9"
    dump = tmp_path / "node.dump"
    dump.write_text(DUMP.format(rule="-A KUBE-SVC-A -m set --match-set KUBE-NOPE dst -j ACCEPT"))
    line = error_line(
        ["trace", "--iptables-save", dump, "--node-ip", "10.1.1.1", "--packet", PACKET], capsys
    )
    assert line.startswith(f"{dump}:9: --match-set: ipset KUBE-NOPE does not exist"), line
